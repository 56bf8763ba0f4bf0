import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { parseDuration } from "../../services/enqueue/wait.ts";
import { UsageError } from "./exit.ts";

/**
 * The command line of `sluice`: global options, then a command and its words and options. The
 * environment gives defaults (SLUICE_URL, SLUICE_API_KEY, NO_COLOR); it is read here and nowhere else.
 */

/** Every option any command takes (node's parseArgs is strict: anything else is a usage error). */
const OPTIONS = {
  url: { type: "string" },
  "api-key": { type: "string" },
  json: { type: "boolean" },
  help: { type: "boolean", short: "h" },
  version: { type: "boolean" },
  // enqueue
  priority: { type: "string", short: "p" },
  key: { type: "string" },
  delay: { type: "string" },
  "run-at": { type: "string" },
  "task-timeout": { type: "string" },
  "max-attempts": { type: "string" },
  "concurrency-key": { type: "string" },
  wait: { type: "boolean", short: "w" },
  timeout: { type: "string" },
  // lists and filters
  type: { type: "string" },
  status: { type: "string" },
  limit: { type: "string" },
  cursor: { type: "string" },
  all: { type: "boolean" },
  yes: { type: "boolean", short: "y" },
  // queues limit
  concurrency: { type: "string" },
  rate: { type: "string" },
  "max-depth": { type: "string" },
  "key-concurrency": { type: "string" },
  clear: { type: "string", multiple: true },
  // schedules create, keys
  name: { type: "string" },
  cron: { type: "string" },
  every: { type: "string" },
  tz: { type: "string" },
  payload: { type: "string" },
  scopes: { type: "string" },
} as const;

/** Parsed options (all optional). */
export type Options = {
  url: string;
  apiKey: string | undefined;
  json: boolean;
  help: boolean;
  version: boolean;
  color: boolean;
  [k: string]: unknown;
};

/** A parsed command line: the words (command, subcommand, arguments) and the options. */
export type CommandLine = { words: string[]; o: Options; raw: Record<string, unknown> };

/** Parse argv (without node and the script) with the environment's defaults. */
export function parseCommandLine(argv: string[], env: Record<string, string | undefined>): CommandLine {
  let parsed: ReturnType<typeof parseArgs<{ options: typeof OPTIONS; allowPositionals: true; strict: true }>>;
  try {
    parsed = parseArgs({ args: argv, options: OPTIONS, allowPositionals: true, strict: true });
  } catch (err) {
    throw new UsageError((err as Error).message.replace(/^TypeError \[[A-Z_]+\]: /, ""));
  }
  const v = parsed.values as Record<string, unknown>;
  return {
    words: parsed.positionals,
    raw: v,
    o: {
      ...v,
      url: (v.url as string | undefined) ?? env.SLUICE_URL ?? "http://127.0.0.1:8080",
      apiKey: (v["api-key"] as string | undefined) ?? (env.SLUICE_API_KEY || undefined),
      json: v.json === true,
      help: v.help === true,
      version: v.version === true,
      color: env.NO_COLOR === undefined || env.NO_COLOR === "",
    },
  };
}

/** A string option, or undefined. */
export function str(o: Options, name: string): string | undefined {
  const v = o[name];
  return typeof v === "string" ? v : undefined;
}

/** An integer option within bounds; a usage error otherwise. */
export function int(o: Options, name: string, min = 0, max = Number.MAX_SAFE_INTEGER): number | undefined {
  const v = str(o, name);
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min || n > max)
    throw new UsageError(`--${name} must be an integer ${min}-${max}`);
  return n;
}

/** A duration option (`30s`, `500ms`, `2m`, bare seconds), in ms. */
export function ms(o: Options, name: string): number | undefined {
  const v = str(o, name);
  if (v === undefined) return undefined;
  const d = parseDuration(v);
  if (d === undefined) throw new UsageError(`--${name} must be a duration such as 30s, 500ms or 2m`);
  return d;
}

/** The n-th word, or a usage error naming what is missing. */
export function word(c: CommandLine, i: number, what: string): string {
  const w = c.words[i];
  if (w === undefined || w === "") throw new UsageError(`missing ${what}`);
  return w;
}

/** A JSON argument: inline JSON, `@file.json`, or `-` for stdin. */
export function jsonArg(text: string, what: string): unknown {
  let src = text;
  if (text === "-") src = readFileSync(0, "utf8");
  else if (text.startsWith("@")) {
    try {
      src = readFileSync(text.slice(1), "utf8");
    } catch (err) {
      throw new UsageError(`cannot read ${text.slice(1)}: ${(err as NodeJS.ErrnoException).code ?? err}`);
    }
  }
  try {
    return JSON.parse(src);
  } catch {
    throw new UsageError(`${what} is not valid JSON (use '{"a":1}', @file.json or - for stdin)`);
  }
}

/** `15/1m` → {max: 15, intervalMs: 60000}. */
export function rate(text: string): { max: number; intervalMs: number } {
  const m = /^(\d+)\/(.+)$/.exec(text);
  const intervalMs = m ? parseDuration(m[2]!.replace(/^(?=[a-z])/, "1")) : undefined;
  if (!m || intervalMs === undefined || intervalMs <= 0) {
    throw new UsageError("--rate must look like 15/1m (15 per minute) or 100/1s");
  }
  return { max: Number(m[1]), intervalMs };
}
