import { type ChildProcess, spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { SERVICE_ENV, serviceNodeFlags } from "../../shared/node-flags.ts";
import { track } from "./orphans.ts";

const root = fileURLToPath(new URL("../..", import.meta.url));

/** A service running as its own process, the way production runs it. */
export type ServiceProcess = {
  readonly name: string;
  readonly child: ChildProcess;
  /** Every JSON log line so far. */
  readonly logs: Record<string, unknown>[];
  /** Resolves with the first log line matching `pred` (rejects after `timeoutMs`). */
  waitForLog(
    pred: (l: Record<string, unknown>) => boolean,
    timeoutMs?: number,
  ): Promise<Record<string, unknown>>;
  /** Send a signal and wait for exit; returns the exit code (null when killed by a signal). */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
  readonly exited: Promise<number | null>;
};

/** Start `services/<name>/main.ts` with `env` (merged over a minimal base env). */
export function spawnService(
  name: "enqueue" | "dispatcher" | "worker",
  env: Record<string, string>,
): ServiceProcess {
  const child = spawn(process.execPath, [...serviceNodeFlags(name), `services/${name}/main.ts`], {
    cwd: root,
    // local mode like `npm start`: no API keys unless a test turns AUTH_ENABLED on (only enqueue reads it)
    env: { PATH: process.env.PATH ?? "", LOG_LEVEL: "info", AUTH_ENABLED: "false", ...SERVICE_ENV, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  track(child, `services/${name}/main.ts`);
  const logs: Record<string, unknown>[] = [];
  const waiters: {
    pred: (l: Record<string, unknown>) => boolean;
    resolve: (l: Record<string, unknown>) => void;
  }[] = [];
  const onLine = (line: string) => {
    let l: Record<string, unknown>;
    try {
      l = JSON.parse(line) as Record<string, unknown>;
    } catch {
      l = { msg: line };
    }
    logs.push(l);
    for (let i = waiters.length - 1; i >= 0; i--) {
      const w = waiters[i]!;
      if (w.pred(l)) {
        waiters.splice(i, 1);
        w.resolve(l);
      }
    }
  };
  createInterface({ input: child.stdout! }).on("line", onLine);
  createInterface({ input: child.stderr! }).on("line", onLine);
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  return {
    name,
    child,
    logs,
    exited,
    waitForLog(pred, timeoutMs = 15_000) {
      const found = logs.find(pred);
      if (found) return Promise.resolve(found);
      return new Promise((resolve, reject) => {
        // a process that exits cannot log any more: fail at once instead of at the timeout
        void exited.then((code) =>
          setTimeout(
            () =>
              reject(
                new Error(
                  `${name} exited (${code}) before logging the line; last: ${JSON.stringify(logs.slice(-3))}`,
                ),
              ),
            100,
          ),
        );
        const t = setTimeout(
          () =>
            reject(
              new Error(
                `${name}: no matching log line in ${timeoutMs} ms; last: ${JSON.stringify(logs.slice(-5))}`,
              ),
            ),
          timeoutMs,
        );
        waiters.push({
          pred,
          resolve: (l) => {
            clearTimeout(t);
            resolve(l);
          },
        });
      });
    },
    async stop(signal = "SIGTERM") {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      return exited;
    },
  };
}

/** Poll `fn` until it returns a truthy value or `timeoutMs` passes. */
export async function waitFor<T>(
  fn: () => T | Promise<T>,
  timeoutMs = 10_000,
  intervalMs = 50,
): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const v = await fn();
      if (v) return v as NonNullable<T>;
    } catch (e) {
      last = e;
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
  throw new Error(`waitFor timed out after ${timeoutMs} ms${last ? `: ${String(last)}` : ""}`);
}
