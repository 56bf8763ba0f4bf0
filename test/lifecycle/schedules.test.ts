import { setTimeout as sleep } from "node:timers/promises";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { waitFor } from "../support/processes.ts";
import { type Stack, startStack } from "../support/stack.ts";

type Res = { status: number; body: Record<string, unknown>; type: string | null };

describe("schedules - /v1/schedules and <prefix>.api.schedules", () => {
  let stack: Stack;
  let nc: NatsConnection;
  const call = async (method: string, path: string, body?: unknown): Promise<Res> => {
    const res = await fetch(`${stack.url}${path}`, {
      method,
      headers: body === undefined ? {} : { "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    return { status: res.status, body: text ? JSON.parse(text) : {}, type: res.headers.get("content-type") };
  };
  const request = async (action: string, body?: unknown) => {
    const m = await nc.request(
      `sluice.api.schedules.${action}`,
      body === undefined ? "" : JSON.stringify(body),
      {
        timeout: 5000,
      },
    );
    return m.json<Record<string, unknown>>();
  };
  /** Runs of the fixture task with payload `n`, each tick's task id once per run. */
  const runsOf = (n: number) => stack.runs().filter((r) => r.n === n);

  beforeAll(async () => {
    stack = await startStack();
    await stack.dispatcher();
    await stack.worker({ WORKER_TYPES: "test.record" });
    nc = await connect({ servers: stack.nats.url });
  });
  afterAll(async () => {
    await nc?.close();
    await stack?.cleanup();
  });

  it("creates, lists, gets and deletes a schedule, and refuses a taken name with 409", async () => {
    const body = { name: "nightly", cron: "0 30 2 * * *", timezone: "Europe/Berlin", task: { type: "noop" } };
    const c = await call("POST", "/v1/schedules", body);
    expect(c.status).toBe(201);
    expect(c.body).toMatchObject({
      name: "nightly",
      paused: false,
      missedPolicy: "once",
      timezone: "Europe/Berlin",
    });
    expect(c.body.nextRunAt as number).toBeGreaterThan(Date.now());
    const dup = await call("POST", "/v1/schedules", body);
    expect(dup.status).toBe(409);
    expect(dup.type).toMatch(/application\/problem\+json/);
    expect(dup.body.code).toBe("schedule_exists");
    expect((await call("GET", "/v1/schedules/nightly")).body).toEqual(c.body);
    const list = await call("GET", "/v1/schedules");
    expect((list.body.schedules as { name: string }[]).map((s) => s.name)).toContain("nightly");
    expect((await call("DELETE", "/v1/schedules/nightly")).status).toBe(204);
    const gone = await call("GET", "/v1/schedules/nightly");
    expect(gone.status).toBe(404);
    expect(gone.body.code).toBe("schedule_not_found");
    expect((await call("DELETE", "/v1/schedules/nightly")).status).toBe(404);
    expect((await call("POST", "/v1/schedules/nightly/pause")).status).toBe(404);
  });

  it("answers invalid schedules with 400 and a stable code", async () => {
    const bad = async (body: unknown) => (await call("POST", "/v1/schedules", body)).body;
    const task = { type: "noop" };
    expect((await bad({ name: "a", cron: "not a cron", task })).code).toBe("invalid_schedule");
    expect((await bad({ name: "a", cron: "0 0 31 2 *", task })).code).toBe("invalid_schedule");
    expect((await bad({ name: "a", cron: "* * * * * *", every: "1s", task })).code).toBe("invalid_schedule");
    expect((await bad({ name: "a", every: "100ms", task })).code).toBe("invalid_schedule");
    expect((await bad({ name: "a", cron: "* * * * *", timezone: "Nowhere/City", task })).code).toBe(
      "invalid_schedule",
    );
    expect((await bad({ name: "has space", every: "1m", task })).code).toBe("invalid_schedule");
    expect((await bad({ name: "a", every: "1m", task: { type: "Bad Type" } })).code).toBe(
      "invalid_task_type",
    );
    expect((await bad({ name: "a", every: "1m", task: { type: "noop", delayMs: 5 } })).code).toBe(
      "invalid_request",
    );
    const r = await call("POST", "/v1/schedules", { name: "a", every: "1m", task, extra: 1 });
    expect(r.status).toBe(400);
    expect(r.type).toMatch(/application\/problem\+json/);
    expect((await call("GET", "/v1/schedules/a")).status).toBe(404);
  });

  it("serves the same operations over NATS request/reply", async () => {
    const created = await request("create", { name: "over-nats", every: "1h", task: { type: "noop" } });
    expect(created).toMatchObject({ name: "over-nats", every: 3_600_000 });
    expect(await request("create", { name: "over-nats", every: "1h", task: { type: "noop" } })).toMatchObject(
      {
        error: { status: 409, code: "schedule_exists" },
      },
    );
    expect(await request("get", { name: "over-nats" })).toMatchObject({ name: "over-nats" });
    expect(await request("pause", { name: "over-nats" })).toMatchObject({ paused: true });
    expect(await request("resume", { name: "over-nats" })).toMatchObject({ paused: false });
    const list = (await request("list")) as { schedules: { name: string }[] };
    expect(list.schedules.map((s) => s.name)).toContain("over-nats");
    expect(await request("delete", { name: "over-nats" })).toEqual({ name: "over-nats", deleted: true });
    expect(await request("get", { name: "over-nats" })).toMatchObject({
      error: { status: 404, code: "schedule_not_found" },
    });
    expect(await request("create", { name: "x", every: "1s" })).toMatchObject({ error: { status: 400 } });
  });

  it("fires an every-second schedule once per tick, stops while paused and after delete", async () => {
    const c = await call("POST", "/v1/schedules", {
      name: "tick",
      every: "1s",
      task: { type: "test.record", payload: { n: 4242 }, priority: "high" },
    });
    expect(c.status).toBe(201);
    await waitFor(() => runsOf(4242).length >= 3, 6_000);
    // A tick under way when the pause landed may still run, however late; none due after it fires.
    // Judged by each run's tick (its idempotency key), not by counting runs against a guessed delay.
    const ticksRun = async () =>
      (await Promise.all(runsOf(4242).map((r) => stack.get(r.id)))).map((s) =>
        Number(String(s?.idempotencyKey).split(":").at(-1)),
      );
    const paused = await call("POST", "/v1/schedules/tick/pause");
    expect(paused.body.paused).toBe(true);
    const pausedAt = Date.now();
    await sleep(2_200);
    expect(Math.max(...(await ticksRun()))).toBeLessThanOrEqual(pausedAt);
    const resumed = await call("POST", "/v1/schedules/tick/resume");
    expect(resumed.body.paused).toBe(false);
    expect(resumed.body.nextRunAt as number).toBeGreaterThan(Date.now() - 100);
    await waitFor(
      async () => ((await ticksRun()).filter((t) => t > pausedAt).length >= 2 ? true : undefined),
      5_000,
    );
    expect((await call("DELETE", "/v1/schedules/tick")).status).toBe(204);
    const deletedAt = Date.now();
    await sleep(1_500);
    expect(Math.max(...(await ticksRun()))).toBeLessThanOrEqual(deletedAt);

    // one run per tick: distinct task ids, one per whole second, never two in the same second
    const runs = runsOf(4242);
    expect(new Set(runs.map((r) => r.id)).size).toBe(runs.length);
    const states = await Promise.all(runs.map((r) => stack.get(r.id)));
    const ticks = states.map((s) => Number(String(s?.idempotencyKey).split(":").at(-1)));
    expect(new Set(ticks).size).toBe(ticks.length);
    for (const s of states)
      expect(s).toMatchObject({ status: "completed", priority: "high", type: "test.record" });
    expect((await call("GET", "/v1/schedules/tick")).status).toBe(404);
  });
});
