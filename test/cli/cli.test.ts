import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { keyEntry } from "../../services/enqueue/auth/keys.ts";
import { type Stack, startStack } from "../support/stack.ts";

const root = fileURLToPath(new URL("../..", import.meta.url));
const ADMIN = "sk_cli_admin_key_for_tests";
const READER = "sk_cli_reader_key_for_tests";

let stack: Stack;
beforeAll(async () => {
  stack = await startStack({
    enqueueEnv: {
      AUTH_ENABLED: "true",
      SLUICE_API_KEYS: `${keyEntry("cli-admin", ["admin"], ADMIN)},${keyEntry("cli-reader", ["read"], READER)}`,
    },
  });
  await stack.dispatcher();
  await stack.worker({ WORKER_ID: "cli-worker-1" });
}, 90_000);
afterAll(async () => {
  await stack?.cleanup();
});

type Run = { code: number | null; stdout: string; stderr: string };

/** Start the CLI as a user would: its own process, the gateway and key from the environment. */
function start(args: string[], o: { key?: string; npx?: boolean; timeoutMs?: number } = {}) {
  const env = {
    PATH: process.env.PATH ?? "",
    HOME: process.env.HOME ?? "/tmp",
    SLUICE_URL: stack.url,
    SLUICE_API_KEY: o.key ?? ADMIN,
    NO_COLOR: "1",
  };
  const child = o.npx
    ? spawn("npx", ["--no-install", "sluice", ...args], { cwd: root, env, stdio: ["ignore", "pipe", "pipe"] })
    : spawn(process.execPath, ["bin/sluice.ts", ...args], {
        cwd: root,
        env,
        stdio: ["ignore", "pipe", "pipe"],
      });
  const run: Run = { code: null, stdout: "", stderr: "" };
  child.stdout.on("data", (d) => {
    run.stdout += d;
  });
  child.stderr.on("data", (d) => {
    run.stderr += d;
  });
  const done = new Promise<Run>((resolve, reject) => {
    const t = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`sluice ${args.join(" ")} did not finish: ${run.stdout} ${run.stderr}`));
    }, o.timeoutMs ?? 30_000);
    child.on("close", (code) => {
      clearTimeout(t);
      run.code = code;
      resolve(run);
    });
  });
  return { run, done };
}

/** Run the CLI to its end. */
function sluice(args: string[], o: { key?: string; npx?: boolean; timeoutMs?: number } = {}): Promise<Run> {
  return start(args, o).done;
}

const json = <T>(r: Run): T => JSON.parse(r.stdout) as T;

describe("sluice CLI - against a real stack", () => {
  it("runs through npx with the repository's Node, and explains itself", async () => {
    const version = await sluice(["--version"], { npx: true, timeoutMs: 60_000 });
    expect(version.code).toBe(0);
    expect(version.stdout.trim()).toMatch(/^\d+\.\d+\.\d+$/);
    const help = await sluice(["--help"]);
    expect(help.code).toBe(0);
    expect(help.stdout).toContain("task watch <id>");
    expect(help.stdout).toContain("Exit codes");
    const missing = await sluice(["task", "get", "no-such-task"], { npx: true, timeoutMs: 60_000 });
    expect(missing.code).toBe(3);
  });

  it("enqueues and waits for the result: exit 0 and the final record as JSON", async () => {
    const r = await sluice(["enqueue", "test.record", '{"n":7}', "--priority", "high", "--wait", "--json"]);
    expect(r.code, r.stderr).toBe(0);
    expect(json<{ status: string; result: unknown; priority: string }>(r)).toMatchObject({
      status: "completed",
      result: { n: 7 },
      priority: "high",
    });
  });

  it("watches a task with progress until it completes, as lines or as JSON events", async () => {
    // the queue is paused while the watch starts, so the watch sees the task from its first state on
    expect((await sluice(["queues", "pause", "test.pages"])).code).toBe(0);
    try {
      const q = await sluice(["enqueue", "test.pages", '{"pages":4,"msPerPage":200}', "--json"]);
      expect(q.code).toBe(0);
      const { id } = json<{ id: string }>(q);
      const lines = start(["task", "watch", id]);
      const events = start(["task", "watch", id, "--json"]);
      await expect
        .poll(() => lines.run.stdout.includes("queued") && events.run.stdout.includes('"queued"'), {
          timeout: 20_000,
        })
        .toBe(true);
      expect((await sluice(["queues", "resume", "test.pages"])).code).toBe(0);

      const watch = await lines.done;
      expect(watch.code, watch.stderr).toBe(0);
      // not a terminal: one line per change, with a bar and the handler's message, then the record
      expect(watch.stdout).toMatch(/^queued/);
      expect(watch.stdout).toMatch(/running {2}\[[█░]+\] +\d+% page \d/);
      expect(watch.stdout).toMatch(/status\s+completed/);
      expect(watch.stdout).toMatch(/result\s+\{"resumedFrom":0,"pages":4\}/);

      const json2 = await events.done;
      expect(json2.code).toBe(0);
      const evs = json2.stdout
        .trim()
        .split("\n")
        .map((l) => JSON.parse(l) as { id: number; event: string; task: { progress?: { percent: number } } });
      expect(evs[0]!.event).toBe("queued");
      expect(evs.at(-1)!.event).toBe("completed");
      const percents = evs.flatMap((l) => (l.task.progress ? [l.task.progress.percent] : []));
      expect(percents.length).toBeGreaterThan(0);
      expect([...percents].sort((a, b) => a - b)).toEqual(percents);
      const ids = evs.map((l) => l.id);
      expect([...ids].sort((a, b) => a - b)).toEqual(ids);
    } finally {
      await sluice(["queues", "resume", "test.pages"]);
    }
  });

  it("exits 1 when the task fails, 7 when waiting times out, and shows the record", async () => {
    const failed = await sluice(["enqueue", "test.fail", '{"message":"bad input"}', "--wait"]);
    expect(failed.code).toBe(1);
    expect(failed.stdout).toMatch(/status\s+failed/);
    expect(failed.stdout).toMatch(/error\s+handler_failed: bad input/);
    const slow = await sluice(["enqueue", "test.sleep", '{"ms":5000}', "--wait", "--timeout", "500ms"]);
    expect(slow.code).toBe(7);
    expect(slow.stderr).toMatch(/still (queued|running)/);
  });

  it("maps refusals to exit codes: 2 usage, 3 not found, 4 auth, 5 unreachable, 6 refused", async () => {
    expect((await sluice(["enqueue"])).code).toBe(2);
    expect((await sluice(["task", "frobnicate", "x"])).code).toBe(2);
    expect((await sluice(["enqueue", "t.x", "{bad json"])).code).toBe(2);
    expect((await sluice(["task", "get", "nope"])).code).toBe(3);
    const wrongKey = await sluice(["task", "get", "nope"], { key: "sk_wrong" });
    expect(wrongKey.code).toBe(4);
    expect(wrongKey.stderr).toMatch(/401 unauthorized/);
    const readOnly = await sluice(["enqueue", "test.record", '{"n":1}'], { key: READER });
    expect(readOnly.code).toBe(4);
    expect(readOnly.stderr).toMatch(/403 forbidden/);
    expect((await sluice(["--url", "http://127.0.0.1:9", "workers"])).code).toBe(5);
    const invalid = await sluice(["enqueue", "Not A Type"]);
    expect(invalid.code).toBe(6);
    expect(invalid.stderr).toMatch(/invalid_task_type/);
  });

  it("cancels a waiting task, and refuses to cancel it twice", async () => {
    const q = await sluice(["enqueue", "test.sleep", '{"ms":1}', "--delay", "1h", "--json"]);
    const { id } = json<{ id: string }>(q);
    const c = await sluice(["task", "cancel", id]);
    expect(c.code, c.stderr).toBe(0);
    expect(c.stdout).toMatch(new RegExp(`^cancelled {2}${id}`));
    const again = await sluice(["task", "cancel", id]);
    expect(again.code).toBe(6);
    expect(again.stderr).toMatch(/409/);
    const got = json<{ status: string }>(await sluice(["task", "get", id, "--json"]));
    expect(got.status).toBe("cancelled");
  });

  it("lists workers and stats as tables, or JSON", async () => {
    const w = await sluice(["workers"]);
    expect(w.code).toBe(0);
    expect(w.stdout.split("\n")[0]).toMatch(/^ID +HOST +PID +VERSION +STATE +BUSY\/SLOTS +TYPES +HEARTBEAT/);
    expect(w.stdout).toMatch(/cli-worker-1 .* running .*test\.record 0\/20/);
    const wj = json<{ workers: { id: string }[] }>(await sluice(["workers", "--json"]));
    expect(wj.workers.map((x) => x.id)).toEqual(["cli-worker-1"]);

    await sluice(["enqueue", "test.sleep", '{"ms":1}', "--delay", "1h"]);
    const s = await sluice(["stats"]);
    expect(s.code).toBe(0);
    expect(s.stdout.split("\n")[0]).toMatch(
      /^TYPE +URGENT +HIGH +NORMAL +LOW +BULK +WAITING +RUNNING +IN FLIGHT +BUSY\/SLOTS/,
    );
    expect(s.stdout).toMatch(/1 live worker ·/);
    const sj = json<{ queues: { type: string }[] }>(await sluice(["stats", "--json"]));
    expect(sj.queues.map((q) => q.type)).toContain("test.record");
  });

  it("pauses, limits and resumes a queue", async () => {
    expect((await sluice(["queues", "pause", "test.sleep"])).code).toBe(0);
    const limited = await sluice([
      "queues",
      "limit",
      "test.sleep",
      "--concurrency",
      "2",
      "--rate",
      "15/1m",
      "--json",
    ]);
    expect(limited.code, limited.stderr).toBe(0);
    expect(json<{ config: unknown }>(limited).config).toMatchObject({
      paused: true,
      concurrency: 2,
      rateLimit: { max: 15, intervalMs: 60_000 },
    });
    const list = await sluice(["queues"]);
    expect(list.stdout).toMatch(/test\.sleep +paused +2 +15\/1m\.0s|test\.sleep +paused +2 +15\//);
    const cleared = await sluice(["queues", "limit", "test.sleep", "--clear", "rate", "--json"]);
    expect(json<{ config: { rateLimit?: unknown } }>(cleared).config.rateLimit).toBeUndefined();
    expect((await sluice(["queues", "resume", "test.sleep"])).code).toBe(0);
    expect((await sluice(["queues", "limit", "test.sleep"])).code).toBe(2);
    expect((await sluice(["queues", "limit", "test.sleep", "--rate", "fast"])).code).toBe(2);
  });

  it("lists and replays dead letters, retries a task, and refuses to retry one that keeps no message", async () => {
    const dead = await sluice([
      "enqueue",
      "test.flaky",
      '{"tag":"cli-dead","failTimes":9}',
      "--max-attempts",
      "1",
      "--wait",
    ]);
    expect(dead.code).toBe(1);
    expect(dead.stdout).toMatch(/status\s+dead/);
    const id = /id\s+(\S+)/.exec(dead.stdout)![1]!;
    const list = await sluice(["dlq", "list", "--type", "test.flaky"]);
    expect(list.code).toBe(0);
    expect(list.stdout).toContain(id);
    const retried = await sluice(["task", "retry", id, "--json"]);
    expect(retried.code, retried.stderr).toBe(0);
    expect(json<{ replayOf: string }>(retried).replayOf).toBe(id);

    // a failed task keeps its message, so it can be retried too
    const failed = await sluice(["enqueue", "test.fail", '{"message":"x"}', "--wait", "--json"]);
    const failedId = json<{ id: string }>(failed).id;
    const again = await sluice(["task", "retry", failedId, "--json"]);
    expect(again.code, again.stderr).toBe(0);
    expect(json<{ replayOf: string }>(again).replayOf).toBe(failedId);
    // a task that has not finished cannot be retried (no worker serves this type: it stays queued)
    const waiting = await sluice(["enqueue", "test.unserved", "{}", "--json"]);
    const refused = await sluice(["task", "retry", json<{ id: string }>(waiting).id]);
    expect(refused.code).toBe(6);
    expect(refused.stderr).toMatch(/409 task_not_finished/);
    expect((await sluice(["dlq", "purge", "--all"])).code).toBe(2);
  });

  it("creates, lists and deletes a schedule", async () => {
    const c = await sluice([
      "schedules",
      "create",
      "--name",
      "cli-every",
      "--every",
      "1h",
      "--type",
      "test.record",
      "--payload",
      '{"n":1}',
    ]);
    expect(c.code, c.stderr).toBe(0);
    const l = await sluice(["schedules"]);
    expect(l.stdout).toMatch(/cli-every +every 1h00m +test\.record +active/);
    expect((await sluice(["schedules", "delete", "cli-every"])).code).toBe(0);
    expect((await sluice(["schedules", "delete", "cli-every"])).code).toBe(3);
  });
});
