import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { type ServiceProcess, spawnService } from "../../test/support/processes.ts";
import { register } from "./children.ts";
import { withTimeout } from "./rpc.ts";

/** The Sluice services, started exactly as production starts them: `node services/<svc>/main.ts`. */
export type ServiceName = "enqueue" | "dispatcher" | "worker";

const root = fileURLToPath(new URL("../..", import.meta.url));

/** Fail clearly when a service has not been written yet, rather than measuring nothing. */
export function assertServicesExist(): void {
  const missing = (["enqueue", "dispatcher", "worker"] as const).filter(
    (s) => !existsSync(`${root}services/${s}/main.ts`),
  );
  if (missing.length > 0) {
    throw new Error(`Sluice services missing: ${missing.map((s) => `services/${s}/main.ts`).join(", ")}`);
  }
}

/** Start a service and wait for its `"msg":"ready"` line; on failure the error carries its last log lines. */
export async function startService(
  name: ServiceName,
  env: Record<string, string>,
  timeoutMs = 30_000,
): Promise<ServiceProcess> {
  const svc = spawnService(name, env);
  register(svc.child, name);
  const died = svc.exited.then((code) => {
    throw new Error(`${name} exited with ${code} before it was ready; last output:\n${lastLogs(svc)}`);
  });
  await Promise.race([svc.waitForLog((l) => l.msg === "ready", timeoutMs), died]);
  died.catch(() => undefined);
  return svc;
}

/** SIGTERM a service (it drains) and return its exit code; SIGKILL after `timeoutMs`. */
export async function stopService(svc: ServiceProcess, timeoutMs = 30_000): Promise<number | null> {
  try {
    return await withTimeout(svc.stop("SIGTERM"), timeoutMs, `${svc.name} did not stop`);
  } catch {
    return svc.stop("SIGKILL");
  }
}

/** Warning and error lines a service logged (pino levels ≥ 40), for the report. */
export function problems(svc: ServiceProcess, max = 5): string[] {
  return svc.logs
    .filter((l) => typeof l.level === "number" && l.level >= 40)
    .slice(0, max)
    .map((l) => `${svc.name}: ${String(l.msg)}${l.err ? ` (${JSON.stringify(l.err).slice(0, 200)})` : ""}`);
}

/** The last lines a service wrote: a crash prints a multi-line stack, so keep enough to see its head. */
function lastLogs(svc: ServiceProcess): string {
  return svc.logs
    .slice(-20)
    .map((l) => (typeof l.level === "number" ? JSON.stringify(l) : String(l.msg)))
    .join("\n")
    .slice(-3000);
}
