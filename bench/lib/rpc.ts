import { fork } from "node:child_process";
import { fileURLToPath } from "node:url";
import { register, terminate } from "./children.ts";

/**
 * Producers, consumers and observers run as their own processes, like a real deployment. Each is a
 * role module (bench/roles/*.ts) driven over the IPC channel: the orchestrator calls a command and
 * awaits its answer. Role output goes to our stderr so `--json` stdout stays one object.
 */

/** Commands a role serves; every answer must be structured-clonable. */
export type Commands = Record<string, (args: never) => Promise<unknown>>;

/** A role module: `create(spec)` sets up (connections, subscriptions) and returns its commands. */
export type RoleModule = { create(spec: never): Promise<Commands> };

type ToChild = { id: number; cmd: string; args: unknown };
type FromChild =
  | { type: "ready" }
  | { type: "fatal"; message: string }
  | { id: number; ok: true; value: unknown }
  | { id: number; ok: false; message: string };

/** The orchestrator's handle on a role process. */
export type RoleHandle = {
  readonly name: string;
  readonly pid: number;
  call<T>(cmd: string, args?: unknown, timeoutMs?: number): Promise<T>;
  /** Ask the role to close, then terminate the process. */
  stop(): Promise<void>;
};

const entry = fileURLToPath(new URL("../role.ts", import.meta.url));

/** Start `role` ("jetstream.producer" → bench/roles/jetstream.ts `producer`) and wait until it is ready. */
export async function startRole(role: string, spec: unknown, readyTimeoutMs = 30_000): Promise<RoleHandle> {
  const child = fork(entry, [role], {
    execPath: process.execPath,
    execArgv: [],
    stdio: ["ignore", 2, 2, "ipc"],
    serialization: "advanced",
  });
  register(child, role);
  const pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  let next = 1;
  let dead: Error | undefined;
  const failAll = (e: Error) => {
    dead = e;
    for (const p of pending.values()) p.reject(e);
    pending.clear();
  };
  const ready = new Promise<void>((resolve, reject) => {
    child.on("message", (raw) => {
      const m = raw as FromChild;
      if ("type" in m) {
        if (m.type === "ready") resolve();
        else {
          const e = new Error(`${role}: ${m.message}`);
          reject(e);
          failAll(e);
        }
        return;
      }
      const p = pending.get(m.id);
      if (!p) return;
      pending.delete(m.id);
      if (m.ok) p.resolve(m.value);
      else p.reject(new Error(`${role}: ${m.message}`));
    });
    // a send to a child that just died surfaces here; without a listener it would crash the bench
    child.on("error", (e) => {
      reject(e);
      failAll(new Error(`${role}: ${e.message}`));
    });
    child.once("exit", (code, signal) => {
      const e = new Error(`${role} exited (code ${code}, signal ${signal})`);
      reject(e);
      failAll(e);
    });
  });
  child.send({ id: 0, cmd: "__init", args: spec } satisfies ToChild);
  await withTimeout(ready, readyTimeoutMs, `${role} did not get ready`);
  return {
    name: role,
    pid: child.pid!,
    call<T>(cmd: string, args?: unknown, timeoutMs = 120_000): Promise<T> {
      if (dead) return Promise.reject(dead);
      const id = next++;
      const p = new Promise<T>((resolve, reject) => {
        pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      });
      child.send({ id, cmd, args } satisfies ToChild);
      return withTimeout(p, timeoutMs, `${role}.${cmd} took over ${timeoutMs} ms`);
    },
    async stop() {
      if (!dead) {
        const id = next++;
        const closed = new Promise<void>((resolve) => {
          pending.set(id, { resolve: () => resolve(), reject: () => resolve() });
        });
        child.send({ id, cmd: "__close", args: undefined } satisfies ToChild);
        await withTimeout(closed, 5000, "close").catch(() => undefined);
      }
      await terminate(child, 3000);
    },
  };
}

/** Child side: load the role module named in argv and serve its commands until closed. */
export async function serveRole(load: (role: string) => Promise<RoleModule>): Promise<void> {
  const role = process.argv[2] ?? "";
  const send = (m: FromChild) => process.send?.(m);
  let commands: Commands | undefined;
  process.on("message", async (raw) => {
    const m = raw as ToChild;
    try {
      if (m.cmd === "__init") {
        const mod = await load(role);
        commands = await mod.create(m.args as never);
        send({ type: "ready" });
        return;
      }
      if (m.cmd === "__close") {
        await commands?.close?.(undefined as never);
        send({ id: m.id, ok: true, value: null });
        process.disconnect?.();
        return;
      }
      const fn = commands?.[m.cmd];
      if (!fn) throw new Error(`unknown command ${m.cmd}`);
      send({ id: m.id, ok: true, value: await fn(m.args as never) });
    } catch (e) {
      const message = e instanceof Error ? e.message : String(e);
      if (m.cmd === "__init") send({ type: "fatal", message });
      else send({ id: m.id, ok: false, message });
    }
  });
  // an orphaned role (the orchestrator died) must not keep running
  process.on("disconnect", () => setTimeout(() => process.exit(0), 200).unref());
}

/** Reject with `message` if `p` has not settled within `ms`. */
export function withTimeout<T>(p: Promise<T>, ms: number, message: string): Promise<T> {
  let t: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    t = setTimeout(() => reject(new Error(message)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(t));
}
