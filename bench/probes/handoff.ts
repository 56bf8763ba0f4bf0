/**
 * Design probe: what the work-stream hop costs, measured on minimal pipelines instead of guessed.
 *
 * Sluice stores each task three times (tasks stream, work stream, state record) and raw JetStream once;
 * docs/performance.md puts the "e2e vs raw JetStream" gap there. This probe builds the smallest
 * pipelines that keep Sluice's shape and times them in one run, on one server:
 *
 * - `raw`:     producer → tasks stream → consumer acks: the ceiling. Its figure is within a few percent
 *              of the bench's raw JetStream end to end on the same machine (37,651 against 38,780/s);
 * - `stream`:  producer → tasks stream → middle (publishes to a work stream with a msg id, acks the
 *              task once stored) → consumer (pulls the work stream, puts a state record, acks);
 *              today's Sluice with nothing else;
 * - `memstream`: as `stream`, but the work stream is in memory without msg ids, and the consumer acks
 *              the tasks message too (its ack subject in a header): is it the disk or the messages?
 * - `handoff`: producer → tasks stream → middle (forwards the message over core NATS with its
 *              `$JS.ACK` subject in a header; never acks) → consumer (puts a state record, then acks
 *              the tasks message itself): no work stream.
 *
 * In both middle modes the middle holds at most `--inflight` tasks handed on and not yet finished, and
 * learns of finished ones from batched core notices, as the dispatcher does from `P.slots.<type>`.
 * Producer, middle and consumer are separate processes (this file, run with a role argument).
 *
 *   npm run bench:probe -- [--count=50000] [--runs=3] [--inflight=300] [--modes=raw,stream,memstream,handoff]
 *
 * Prints one JSON line per run and a summary table (tasks/s and CPU µs per task of each process).
 * Loopback only; bounded by its count and a 3-minute deadline.
 */
import { type ChildProcess, fork } from "node:child_process";
import { AckPolicy, jetstream, jetstreamManager, RetentionPolicy, StorageType } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { connect, type NatsConnection, headers as newHeaders } from "@nats-io/transport-node";
import { AckedPublisher } from "../../shared/nats/publisher.ts";
import { killAllNow, register } from "../lib/children.ts";
import { cpuSeconds } from "../lib/sampler.ts";
import { startNats } from "../lib/servers.ts";

type Mode = "raw" | "stream" | "memstream" | "handoff";
type Spec = { url: string; mode: Mode; count: number; inflight: number };

const enc = new TextEncoder();
const dec = new TextDecoder();
const ACK = enc.encode("+ACK");
const BODY = "x".repeat(64);
const ACK_HEADER = "Probe-Ack";

/** CPU seconds (user + system) of a running process; NaN once it is gone. */
const cpuSecondsOf = (pid: number): number => cpuSeconds(pid) ?? Number.NaN;

async function producer(s: Spec): Promise<void> {
  const nc = await connect({ servers: s.url, name: "probe-producer" });
  const pub = new AckedPublisher(nc);
  const startedAt = Date.now();
  let next = 0;
  let acked = 0;
  await new Promise<void>((resolve, reject) => {
    const send = () => {
      while (next < s.count && next - acked < 1000) {
        const i = next++;
        const id = `t${i}`;
        const body = {
          id,
          type: "noop",
          priority: "normal",
          enqueuedAt: Date.now(),
          payload: { i, body: BODY },
        };
        const data = JSON.stringify(body);
        const stored = pub.publish("p.tasks.normal.noop", data, { msgId: id });
        stored.then(() => {
          acked++;
          if (acked === s.count) resolve();
          else send();
        }, reject);
      }
    };
    send();
  });
  const u = process.cpuUsage();
  process.send?.({ startedAt, cpuSeconds: (u.user + u.system) / 1e6 });
  await nc.drain();
}

async function middle(s: Spec): Promise<void> {
  const nc = await connect({ servers: s.url, name: "probe-middle" });
  const pub = new AckedPublisher(nc);
  let inFlight = 0;
  nc.subscribe("p.slots", {
    callback: (_e, m) => {
      inFlight -= Number(dec.decode(m.data));
      pump();
    },
  });
  const js = jetstream(nc);
  const c = await js.consumers.get("P_TASKS", "d");
  const held: { data: Uint8Array; reply: string; seq: number; ack(): void }[] = [];
  const pump = () => {
    while (inFlight < s.inflight && held.length > 0) {
      const m = held.shift()!;
      const task = JSON.parse(dec.decode(m.data)) as { id: string };
      inFlight++;
      if (s.mode === "stream") {
        pub.publish("p.work.noop", m.data, { msgId: `${task.id}:${m.seq}` }).then(
          () => m.ack(),
          (e) => console.error("work publish", e),
        );
      } else if (s.mode === "memstream") {
        // a work stream in memory, no msg id; the tasks message stays unacked until the consumer acks it
        const h = newHeaders();
        h.set(ACK_HEADER, m.reply);
        pub.publish("p.work.noop", m.data, { headers: h }).catch((e) => console.error("work publish", e));
      } else {
        // The ack subject rides in a header: nats-server drops a client's publish whose reply subject
        // starts with `$JS.ACK.` (isReservedReply), so it cannot be the forwarded message's reply.
        const h = newHeaders();
        h.set(ACK_HEADER, m.reply);
        nc.publish("p.run.noop", m.data, { headers: h });
      }
    }
  };
  const messages = await c.consume({ max_messages: 256 });
  process.send?.({ ready: true });
  for await (const m of messages) {
    // JsMsg does not expose its ack subject; the core message it wraps does
    const reply = (m as unknown as { msg: { reply?: string } }).msg.reply ?? "";
    held.push({ data: m.data, reply, seq: m.seq, ack: () => m.ack() });
    pump();
  }
}

async function consumer(s: Spec): Promise<void> {
  const nc: NatsConnection = await connect({ servers: s.url, name: "probe-consumer" });
  const pub = new AckedPublisher(nc);
  let done = 0;
  let freed = 0;
  let noticeScheduled = false;
  const notice = () => {
    freed++;
    if (noticeScheduled) return;
    noticeScheduled = true;
    setImmediate(() => {
      noticeScheduled = false;
      nc.publish("p.slots", String(freed));
      freed = 0;
    });
  };
  const finished = () => {
    done++;
    if (done === s.count) process.send?.({ finishedAt: Date.now() });
  };
  // what a worker does per task: read it, store its final record, then let the message go
  const run = (data: Uint8Array, ack: () => void) => {
    const t = JSON.parse(dec.decode(data)) as { id: string; type: string; enqueuedAt: number };
    const now = Date.now();
    const rec = {
      id: t.id,
      type: t.type,
      status: "completed",
      attempts: 1,
      enqueuedAt: t.enqueuedAt,
      startedAt: now,
      finishedAt: now,
      updatedAt: now,
      result: null,
    };
    pub.publish(`$KV.probe-state.${t.id}`, JSON.stringify(rec)).then(
      () => {
        ack();
        notice();
        finished();
      },
      (e) => console.error("state put", e),
    );
  };
  if (s.mode === "handoff") {
    nc.subscribe("p.run.noop", {
      callback: (_e, m) => {
        const reply = m.headers?.get(ACK_HEADER) ?? "";
        run(m.data, () => nc.publish(reply, ACK));
      },
    });
    process.send?.({ ready: true });
    return;
  }
  const js = jetstream(nc);
  const raw = s.mode === "raw";
  const c = await js.consumers.get(raw ? "P_TASKS" : "P_WORK", raw ? "d" : "w");
  const messages = await c.consume({ max_messages: 100 });
  process.send?.({ ready: true });
  for await (const m of messages) {
    if (s.mode === "raw") {
      m.ack();
      finished();
    } else if (s.mode === "memstream") {
      const tasksAck = m.headers?.get(ACK_HEADER) ?? "";
      run(m.data, () => {
        m.ack();
        nc.publish(tasksAck, ACK);
      });
    } else run(m.data, () => m.ack());
  }
}

type Child = {
  proc: ChildProcess;
  msgs: Record<string, unknown>[];
  wait(key: string): Promise<Record<string, unknown>>;
};

function spawnRole(role: string, s: Spec): Child {
  const proc = fork(new URL(import.meta.url).pathname, [role, JSON.stringify(s)], { stdio: "inherit" });
  register(proc, `probe ${role}`); // killed with the server and the temp dirs on the way out
  const msgs: Record<string, unknown>[] = [];
  const waiters: { key: string; resolve: (m: Record<string, unknown>) => void }[] = [];
  proc.on("message", (m) => {
    const r = m as Record<string, unknown>;
    msgs.push(r);
    for (const w of waiters.filter((w) => w.key in r)) w.resolve(r);
  });
  return {
    proc,
    msgs,
    wait: (key) =>
      new Promise((resolve, reject) => {
        const found = msgs.find((m) => key in m);
        if (found) return resolve(found);
        waiters.push({ key, resolve });
        proc.once("exit", (code) => reject(new Error(`${role} exited (${code}) before "${key}"`)));
      }),
  };
}

async function runOnce(mode: Mode, count: number, inflight: number) {
  const nats = await startNats();
  const nc = await connect({ servers: nats.url });
  const kids: Child[] = [];
  try {
    const jsm = await jetstreamManager(nc);
    const stream = (name: string, subjects: string[]) =>
      jsm.streams.add({
        name,
        subjects,
        retention: RetentionPolicy.Workqueue,
        storage: StorageType.File,
        duplicate_window: 120e9,
      });
    await stream("P_TASKS", ["p.tasks.>"]);
    if (mode === "memstream")
      await jsm.streams.add({
        name: "P_WORK",
        subjects: ["p.work.>"],
        retention: RetentionPolicy.Workqueue,
        storage: StorageType.Memory,
      });
    else await stream("P_WORK", ["p.work.>"]);
    await new Kvm(nc).create("probe-state", { history: 1 });
    const consumer = { ack_policy: AckPolicy.Explicit, ack_wait: 10e9, max_ack_pending: 20_000 };
    await jsm.consumers.add("P_TASKS", {
      ...consumer,
      durable_name: "d",
      filter_subject: "p.tasks.normal.noop",
    });
    await jsm.consumers.add("P_WORK", { ...consumer, durable_name: "w", filter_subject: "p.work.noop" });
    const s: Spec = { url: nats.url, mode, count, inflight };
    const roles = mode === "raw" ? ["consumer"] : ["consumer", "middle"];
    for (const r of roles) kids.push(spawnRole(r, s));
    await Promise.all(kids.map((k) => k.wait("ready")));
    const pids: Record<string, number> = { "nats-server": nats.pid };
    for (const [i, r] of roles.entries()) pids[r] = kids[i]!.proc.pid!;
    const before = Object.fromEntries(Object.entries(pids).map(([k, p]) => [k, cpuSecondsOf(p)]));
    const prod = spawnRole("producer", s);
    kids.push(prod);
    const finished = (await kids[0]!.wait("finishedAt")).finishedAt as number;
    const p = await prod.wait("startedAt");
    const startedAt = p.startedAt as number;
    const perTask = (sec: number) => Math.round((sec / count) * 1e7) / 10;
    const cpu: Record<string, number> = { producer: perTask(p.cpuSeconds as number) };
    for (const [k, pid] of Object.entries(pids))
      if (k !== "producer") cpu[k] = perTask(cpuSecondsOf(pid) - before[k]!);
    return { mode, count, perSec: Math.round(count / ((finished - startedAt) / 1000)), cpuUsPerTask: cpu };
  } finally {
    for (const k of kids) k.proc.kill("SIGKILL");
    await nc.close();
    await nats.stop();
  }
}

async function main(): Promise<void> {
  const arg = (name: string, d: string) =>
    process.argv.find((a) => a.startsWith(`--${name}=`))?.split("=")[1] ?? d;
  const count = Number(arg("count", "50000"));
  const runs = Number(arg("runs", "3"));
  const inflight = Number(arg("inflight", "300"));
  const modes = arg("modes", "raw,stream,handoff").split(",") as Mode[];
  const deadline = setTimeout(() => {
    console.error("probe: deadline passed");
    killAllNow();
    process.exit(3);
  }, 180_000);
  const results: Awaited<ReturnType<typeof runOnce>>[] = [];
  for (let r = 0; r < runs; r++)
    for (const m of modes) {
      const res = await runOnce(m, count, inflight);
      console.log(JSON.stringify(res));
      results.push(res);
    }
  clearTimeout(deadline);
  const median = (m: Mode) => {
    const rs = results
      .filter((r) => r.mode === m)
      .map((r) => r.perSec)
      .sort((a, b) => a - b);
    return rs.length ? rs[rs.length >> 1]! : Number.NaN;
  };
  for (const m of modes) {
    const rs = results.filter((r) => r.mode === m).map((r) => r.perSec);
    console.error(
      `${m.padEnd(8)} ${rs.join(" / ")} tasks/s; median vs raw ${(median(m) / median("raw")).toFixed(2)}`,
    );
  }
}

const role = process.argv[2];
if (role === "producer" || role === "middle" || role === "consumer") {
  const spec = JSON.parse(process.argv[3]!) as Spec;
  const fn = { producer, middle, consumer }[role];
  fn(spec).catch((e) => {
    console.error(role, e);
    process.exit(1);
  });
} else {
  process.once("exit", killAllNow);
  await main();
  process.exit(0);
}
