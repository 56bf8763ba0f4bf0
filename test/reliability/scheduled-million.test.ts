import { readFileSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import { type JetStreamManager, jetstreamManager } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { names as buildNames } from "../../shared/names.ts";
import { AckedPublisher } from "../../shared/nats/publisher.ts";
import { scheduleTask } from "../../shared/schedule.ts";
import { initialState, type TaskMessage } from "../../shared/task.ts";
import { type ServiceProcess, waitFor } from "../support/processes.ts";
import { type Stack, startStack } from "../support/stack.ts";

/**
 * A million scheduled tasks against a real nats-server and a real dispatcher process, whose RSS is
 * sampled from /proc: once while it follows the million being published, once after a SIGKILL while a
 * fresh leader loads them back from the delayed stream. A sample of tasks due soon must fire on time
 * in both phases. The million are due ~8 minutes out (inside the dispatcher's 10-minute lookahead, so it
 * holds them all, but after the test ends). Runtime on the 2-core reference machine: about 2–4 minutes,
 * most of it publishing; SCHEDULED_COUNT scales it down for a quick look.
 */
const COUNT = Number(process.env.SCHEDULED_COUNT ?? 1_000_000);
const SAMPLE = 1_000;
const RSS_LIMIT_MB = 200;
const WINDOW = 4_000;
const SAMPLE_TYPE = "test.sample";

describe("reliability - a million scheduled tasks", () => {
  let stack: Stack;
  let nc: NatsConnection;
  let pub: AckedPublisher;
  let jsm: JetStreamManager;
  const names = buildNames("sluice");
  const fired = new Map<string, number>();

  beforeAll(async () => {
    stack = await startStack();
    nc = await connect({ servers: stack.nats.url });
    pub = new AckedPublisher(nc, { timeoutMs: 30_000 });
    jsm = await jetstreamManager(nc);
    // fires of the samples, as they are published to the tasks stream (no worker takes them)
    nc.subscribe(`sluice.tasks.*.${SAMPLE_TYPE}`, {
      callback: (_e, m) => {
        const id = m.json<TaskMessage>().id;
        if (!fired.has(id)) fired.set(id, Date.now());
      },
    });
  });
  afterAll(async () => {
    pub?.close();
    await nc?.close();
    await stack?.cleanup();
  });

  it("holds a million without the dispatcher passing 200 MB, and fires a sample on time, across a restart", async () => {
    const env = { SCHEDULE_LOOKAHEAD_MS: "600000", LOG_LEVEL: "info" };
    let dispatcher = await stack.dispatcher(env);
    await dispatcher.waitForLog((l) => l.msg === "delayed scheduler started");
    let rss = sampleRss(dispatcher);

    // phase 1: the leader follows the million as they are published
    const bigDue = Date.now() + 8 * 60_000;
    const started = Date.now();
    await publishWindowed(COUNT, (i) =>
      scheduleTask(pub, names, task(`m-${i}`, "test.record"), bigDue + (i % 50_000)),
    );
    const publishS = (Date.now() - started) / 1000;
    // the follower reads behind a burst like this one; the sample measures firing, so it waits for it
    await waitFor(() => followerCaughtUp(jsm), 120_000, 250);
    const followS = (Date.now() - started) / 1000;
    const sample1 = await scheduleSample("a", 3_000);
    await waitFor(() => sample1.every((s) => fired.has(s.id)), 20_000);
    const phase1 = rss.stop();

    // phase 2: a new leader loads the million back from the stream
    await dispatcher.stop("SIGKILL");
    dispatcher = await stack.dispatcher(env);
    rss = sampleRss(dispatcher);
    const loadStarted = Date.now();
    const loaded = await dispatcher.waitForLog(
      (l) => l.msg === "delayed bucket loaded" && (l.held as number) >= COUNT,
      180_000,
    );
    const loadS = (Date.now() - loadStarted) / 1000;
    const sample2 = await scheduleSample("b", 2_000);
    await waitFor(() => sample2.every((s) => fired.has(s.id)), 20_000);
    await sleep(1_000);
    const phase2 = rss.stop();
    await dispatcher.stop("SIGKILL");

    const late = (xs: { id: string; due: number }[]) => {
      const l = xs.map((x) => fired.get(x.id)! - x.due).sort((p, q) => p - q);
      return { p50: l[l.length >> 1], max: l.at(-1) };
    };
    console.log(
      JSON.stringify({
        sample1LateMs: late(sample1),
        sample2LateMs: late(sample2),
        count: COUNT,
        publishS,
        followS,
        loadS,
        held: loaded.held,
        phase1MaxMb: phase1,
        phase2MaxMb: phase2,
      }),
    );
    expect(phase1).toBeLessThan(RSS_LIMIT_MB);
    expect(phase2).toBeLessThan(RSS_LIMIT_MB);
    for (const s of [...sample1, ...sample2]) {
      const at = fired.get(s.id)!;
      expect(at).toBeGreaterThanOrEqual(s.due);
      expect(at - s.due).toBeLessThan(1_000);
    }
    expect(fired.size).toBe(2 * SAMPLE);
  });

  /** SAMPLE tasks due over two seconds from `inMs` on, with `scheduled` records as the gateway writes them. */
  async function scheduleSample(tag: string, inMs: number): Promise<{ id: string; due: number }[]> {
    const base = Date.now() + inMs;
    const out = Array.from({ length: SAMPLE }, (_, i) => ({ id: `s-${tag}-${i}`, due: base + 2 * i }));
    await publishWindowed(SAMPLE, async (i) => {
      const { id, due } = out[i]!;
      const msg = { ...task(id, SAMPLE_TYPE), runAt: due };
      await scheduleTask(pub, names, msg, due);
      await pub.publish(`$KV.${names.stateBucket}.${id}`, JSON.stringify(initialState(msg, "scheduled")), {
        expectLastSubjectSeq: 0,
      });
    });
    return out;
  }
});

/** True once the scheduler's follower (the consumer on all delayed subjects) has nothing pending. */
async function followerCaughtUp(jsm: JetStreamManager): Promise<boolean> {
  for await (const c of jsm.consumers.list("SLUICE_DELAYED")) {
    if (c.config.filter_subject === "sluice.delayed.>" && c.num_pending === 0) return true;
  }
  return false;
}

function task(id: string, type: string): TaskMessage {
  return { id, type, priority: "normal", payload: { n: 1 }, enqueuedAt: Date.now() };
}

/** Run `fn(0..n-1)` with at most WINDOW calls in flight. */
async function publishWindowed(n: number, fn: (i: number) => Promise<unknown>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(WINDOW, n) }, async () => {
      while (next < n) await fn(next++);
    }),
  );
}

/** Sample a process's resident set from /proc every 250 ms; `stop()` returns the maximum, MB. */
function sampleRss(p: ServiceProcess): { stop(): number } {
  let max = 0;
  const read = () => {
    try {
      const kb = Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${p.child.pid}/status`, "utf8"))?.[1]);
      if (kb > 0) max = Math.max(max, kb / 1024);
    } catch {
      // exited
    }
  };
  const t = setInterval(read, 250);
  read();
  return {
    stop() {
      clearInterval(t);
      read();
      return Math.round(max);
    },
  };
}
