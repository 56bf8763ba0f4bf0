import type { ChildProcess } from "node:child_process";
import { rmSync } from "node:fs";

/**
 * Every process and temp dir the bench starts is registered here, so a failure, a timeout or ^C still
 * ends them: the bench must never leave a nats-server, redis-server or service behind.
 */
const children = new Map<ChildProcess, string>();
const dirs = new Set<string>();

/** Track a child until it exits. */
export function register(child: ChildProcess, name: string): void {
  children.set(child, name);
  child.once("exit", () => children.delete(child));
}

/** Remove `dir` (recursively) during cleanup. */
export function registerDir(dir: string): void {
  dirs.add(dir);
}

/** True while the child has neither exited nor been killed by a signal. */
export function alive(child: ChildProcess): boolean {
  return child.exitCode === null && child.signalCode === null;
}

/** SIGTERM `child`, SIGKILL after `graceMs`; resolves once it has exited. */
export async function terminate(child: ChildProcess, graceMs = 5000): Promise<void> {
  if (!alive(child)) return;
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  child.kill("SIGTERM");
  const t = setTimeout(() => {
    if (alive(child)) child.kill("SIGKILL");
  }, graceMs);
  await exited;
  clearTimeout(t);
}

/** Stop every registered child (SIGTERM, then SIGKILL) and remove the temp dirs. */
export async function cleanupAll(graceMs = 5000): Promise<void> {
  await Promise.all([...children.keys()].map((c) => terminate(c, graceMs)));
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
  dirs.clear();
}

/** Last resort from a synchronous `exit` handler: SIGKILL what is left, remove the dirs. */
export function killAllNow(): void {
  for (const c of children.keys()) if (alive(c)) c.kill("SIGKILL");
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
}

/** Names and pids of the children still running, for diagnostics. */
export function running(): { name: string; pid: number | undefined }[] {
  return [...children.entries()].map(([c, name]) => ({ name, pid: c.pid }));
}
