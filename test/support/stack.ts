import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { TaskState, TaskStatus } from "../../shared/task.ts";
import { startTestNats, type TestNats } from "./nats.ts";
import { type ServiceProcess, spawnService, waitFor } from "./processes.ts";

/** The fixture task module the pipeline tests' workers load. */
export const FIXTURE_TASKS = fileURLToPath(new URL("../fixtures/tasks.ts", import.meta.url));

/** One line of the fixture tasks' run log. */
export type RunRecord = { id: string; attempt: number; pid: number; at: number; tag?: string; n?: number };

/**
 * A whole Sluice as production runs it: a nats-server and the three services as separate processes,
 * so tests can SIGKILL and restart any of them.
 */
export type Stack = {
  nats: TestNats;
  enqueue: ServiceProcess;
  /** Base URL of the gateway. */
  url: string;
  /** Env every service of this stack gets (NATS_URL, run log). */
  env: Record<string, string>;
  runLog: string;
  /** Start a dispatcher (tests may run several). */
  dispatcher(env?: Record<string, string>): Promise<ServiceProcess>;
  /** Start a worker serving the fixture tasks (plus `env`). */
  worker(env?: Record<string, string>): Promise<ServiceProcess>;
  /** POST /v1/tasks; returns status and body. */
  post(body: unknown): Promise<{ status: number; body: Record<string, unknown> }>;
  /** Any JSON request to the gateway; returns status and parsed body. */
  call(
    method: string,
    path: string,
    body?: unknown,
  ): Promise<{ status: number; body: Record<string, unknown> }>;
  /** GET /v1/tasks/:id (undefined on 404). */
  get(id: string): Promise<TaskState | undefined>;
  /** Wait until a task reaches one of `statuses`. */
  waitForStatus(id: string, statuses: TaskStatus[], timeoutMs?: number): Promise<TaskState>;
  /** Lines of the run log. */
  runs(): RunRecord[];
  cleanup(): Promise<void>;
};

/** Start nats-server and the gateway; dispatchers and workers are started by the test as it needs them. */
export async function startStack(opts: { enqueueEnv?: Record<string, string> } = {}): Promise<Stack> {
  const nats = await startTestNats();
  const dir = mkdtempSync(join(tmpdir(), "sluice-stack-"));
  const runLog = join(dir, "runs.jsonl");
  const env = { NATS_URL: nats.url, SLUICE_TEST_RUN_LOG: runLog };
  const procs: ServiceProcess[] = [];
  // local mode, as under npm start; a test of auth turns it on through enqueueEnv
  const enqueue = spawnService("enqueue", {
    ...env,
    HTTP_HOST: "127.0.0.1",
    HTTP_PORT: "0",
    AUTH_ENABLED: "false",
    ...opts.enqueueEnv,
  });
  procs.push(enqueue);
  const ready = await enqueue.waitForLog((l) => l.msg === "ready");
  const url = `http://127.0.0.1:${ready.port as number}`;
  const stack: Stack = {
    nats,
    enqueue,
    url,
    env,
    runLog,
    async dispatcher(extra = {}) {
      const p = spawnService("dispatcher", { ...env, LEASE_TTL_MS: "2000", LEASE_RENEW_MS: "500", ...extra });
      procs.push(p);
      await p.waitForLog((l) => l.msg === "ready");
      return p;
    },
    async worker(extra = {}) {
      const p = spawnService("worker", {
        ...env,
        WORKER_TASKS_MODULE: FIXTURE_TASKS,
        HEARTBEAT_MS: "500",
        ...extra,
      });
      procs.push(p);
      await p.waitForLog((l) => l.msg === "ready");
      return p;
    },
    async post(body) {
      const res = await fetch(`${url}/v1/tasks`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(body),
      });
      return { status: res.status, body: (await res.json()) as Record<string, unknown> };
    },
    async call(method, path, body) {
      const res = await fetch(`${url}${path}`, {
        method,
        headers: body === undefined ? {} : { "content-type": "application/json" },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      return { status: res.status, body: (await res.json()) as Record<string, unknown> };
    },
    async get(id) {
      const res = await fetch(`${url}/v1/tasks/${encodeURIComponent(id)}`);
      if (res.status === 404) return undefined;
      if (res.status !== 200) throw new Error(`GET ${id}: ${res.status}`);
      return (await res.json()) as TaskState;
    },
    async waitForStatus(id, statuses, timeoutMs = 20_000) {
      return waitFor(async () => {
        const s = await stack.get(id);
        return s && statuses.includes(s.status) ? s : undefined;
      }, timeoutMs);
    },
    runs() {
      try {
        return readFileSync(runLog, "utf8")
          .split("\n")
          .filter(Boolean)
          .map((l) => JSON.parse(l) as RunRecord);
      } catch {
        return [];
      }
    },
    async cleanup() {
      await Promise.all(procs.map((p) => p.stop("SIGKILL")));
      await nats.cleanup();
      rmSync(dir, { recursive: true, force: true });
    },
  };
  return stack;
}
