import { resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { exampleTasks } from "./examples/index.ts";
import type { TaskDefinition } from "./sdk.ts";

/**
 * The task definitions a worker serves: the user's module (`WORKER_TASKS_MODULE`: a default export that is
 * an array of definitions, or named exports that are definitions), else the built-in examples; then
 * narrowed to `WORKER_TYPES` if given.
 */
export async function loadDefinitions(opts: {
  modulePath: string | undefined;
  types: string[] | undefined;
  webhookSigningSecret: string;
}): Promise<TaskDefinition[]> {
  let defs: TaskDefinition[];
  if (opts.modulePath) {
    const mod = (await import(pathToFileURL(resolve(opts.modulePath)).href)) as Record<string, unknown>;
    const candidates = Array.isArray(mod.default) ? mod.default : Object.values(mod);
    defs = candidates.filter(isDefinition);
    if (defs.length === 0) throw new Error(`${opts.modulePath} exports no task definitions`);
  } else {
    defs = exampleTasks({ webhookSigningSecret: opts.webhookSigningSecret });
  }
  const seen = new Set<string>();
  for (const d of defs) {
    if (seen.has(d.type)) throw new Error(`task type ${d.type} is defined twice`);
    seen.add(d.type);
  }
  if (opts.types) {
    const missing = opts.types.filter((t) => !seen.has(t));
    if (missing.length > 0) throw new Error(`WORKER_TYPES names undefined types: ${missing.join(", ")}`);
    defs = defs.filter((d) => opts.types!.includes(d.type));
  }
  return defs;
}

function isDefinition(x: unknown): x is TaskDefinition {
  const d = x as TaskDefinition;
  return typeof d === "object" && d !== null && typeof d.type === "string" && typeof d.handler === "function";
}
