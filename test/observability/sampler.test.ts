import { connect, type NatsConnection } from "@nats-io/transport-node";
import { pino } from "pino";
import { register } from "prom-client";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { setRetryingTasks, setScheduledTasks } from "../../services/dispatcher/metrics.ts";
import {
  DispatcherMetricsSampler,
  type SampledDispatcher,
} from "../../services/dispatcher/metrics-sampler.ts";
import { names as buildNames } from "../../shared/names.ts";
import { ensureTopology, ensureTypeConsumers } from "../../shared/nats/topology.ts";
import type { WorkerRecord } from "../../shared/workers.ts";
import { startTestNats, type TestNats } from "../support/nats.ts";
import { parseSamples, type Sample, sumOf } from "./support/promql.ts";

// The dispatcher's gauge sampler against a real nats-server: queue depth is num_pending of each
// (priority, type) tasks consumer plus what the leader holds, on the leader only.

const names = buildNames("sluice");
const log = pino({ level: "silent" });

function worker(id: string, types: Record<string, number>, heartbeatAt = Date.now()): WorkerRecord {
  return {
    id,
    hostname: "h",
    pid: 1,
    version: "0",
    state: "running",
    startedAt: heartbeatAt,
    heartbeatAt,
    heartbeatMs: 1_000,
    types: Object.fromEntries(Object.entries(types).map(([t, slots]) => [t, { slots, busy: 0 }])),
  };
}

describe("observability - dispatcher metrics sampler", () => {
  let nats: TestNats;
  let nc: NatsConnection;
  let sampler: DispatcherMetricsSampler;
  const fake: { state: string; active: Map<string, { held(): number[] }>; records: WorkerRecord[] } = {
    state: "leading",
    active: new Map(),
    records: [],
  };
  const dispatcher: SampledDispatcher = {
    get state() {
      return fake.state;
    },
    get active() {
      return fake.active;
    },
    registry: { all: () => fake.records },
  };
  const scrape = async (): Promise<Sample[]> => parseSamples(await register.metrics());

  beforeAll(async () => {
    nats = await startTestNats();
    nc = await connect({ servers: nats.url });
    const topo = await ensureTopology(nc, names, { replicas: 1, storage: "memory" });
    await ensureTypeConsumers(topo.jsm, names, "obs.depth");
    // 3 urgent and 5 bulk tasks waiting in their consumers
    for (let i = 0; i < 3; i++) await nc.request(names.tasksSubject("urgent", "obs.depth"), "{}");
    for (let i = 0; i < 5; i++) await nc.request(names.tasksSubject("bulk", "obs.depth"), "{}");
    sampler = new DispatcherMetricsSampler({
      dispatcher,
      jsm: topo.jsm,
      names,
      log,
      taskTypes: ["obs.configured"],
    });
  });

  afterAll(async () => {
    sampler?.stop();
    await nc?.close();
    await nats?.cleanup();
  });

  it("exports depth per priority on the leader: pending in the consumer plus held messages", async () => {
    fake.active.set("obs.depth", { held: () => [2, 0, 1, 0, 0] });
    fake.records = [
      worker("w1", { "obs.depth": 4 }),
      worker("w2", { "obs.depth": 6 }),
      worker("dead", { "obs.depth": 9 }, 0),
    ];
    await sampler.sample();
    const s = await scrape();
    const depth = (priority: string) => sumOf(s, "sluice_queue_depth", { type: "obs.depth", priority });
    expect([depth("urgent"), depth("high"), depth("normal"), depth("low"), depth("bulk")]).toEqual([
      5, 0, 1, 0, 5,
    ]);
    expect(sumOf(s, "sluice_dispatcher_leader")).toBe(1);
    // the dead worker's record (old heartbeat) counts for nothing
    expect(sumOf(s, "sluice_workers_live", { type: "obs.depth" })).toBe(2);
    expect(sumOf(s, "sluice_worker_slots_total", { type: "obs.depth" })).toBe(10);
    // a configured type nobody serves yet is exported at zero, lifecycle series included
    expect(s.find((x) => x.name === "sluice_workers_live" && x.labels.type === "obs.configured")?.value).toBe(
      0,
    );
    expect(
      s.find((x) => x.name === "sluice_dead_letters_total" && x.labels.type === "obs.configured")?.value,
    ).toBe(0);
  });

  it("keeps values the lifecycle code set while priming new types", async () => {
    setScheduledTasks("obs.depth", 7);
    setRetryingTasks("obs.depth", 2);
    await sampler.sample();
    const s = await scrape();
    expect(sumOf(s, "sluice_scheduled_tasks", { type: "obs.depth" })).toBe(7);
    expect(sumOf(s, "sluice_retrying_tasks", { type: "obs.depth" })).toBe(2);
  });

  it("drops depth and zeroes the leader's gauges when the replica stops leading", async () => {
    fake.state = "standby";
    fake.active = new Map();
    await sampler.sample();
    const s = await scrape();
    expect(s.filter((x) => x.name === "sluice_queue_depth")).toEqual([]);
    expect(sumOf(s, "sluice_dispatcher_leader")).toBe(0);
    expect(sumOf(s, "sluice_scheduled_tasks", { type: "obs.depth" })).toBe(0);
    expect(sumOf(s, "sluice_retrying_tasks", { type: "obs.depth" })).toBe(0);
    // the registry is still watched by a standby
    expect(sumOf(s, "sluice_workers_live", { type: "obs.depth" })).toBe(2);
  });
});
