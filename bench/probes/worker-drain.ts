/**
 * Probe: the worker's CPU per task, alone. Fills the work stream with `--count` noop work messages
 * (what the dispatcher would have published: same subject, msg id and headers), then starts the real
 * worker service (`services/worker/main.ts`, 100 slots) and times it draining them. The full bench
 * shares two cores among five processes, so its per-process figures move ±10% between runs; here only
 * the worker and nats-server run, which makes a change to the worker's hot path visible.
 *
 *   npm run bench:probe-worker -- [--count=100000] [--runs=3]
 *
 * Prints one JSON line per run ({perSec, workerUsPerTask, serverUsPerTask}) and the medians.
 * Loopback only; bounded by its count and a 3-minute deadline.
 */
import { connect, headers as newHeaders } from "@nats-io/transport-node";
import { Headers } from "../../shared/headers.ts";
import { names } from "../../shared/names.ts";
import { AckedPublisher } from "../../shared/nats/publisher.ts";
import { ensureTopology, ensureTypeConsumers, WORK_ACK_WAIT_MS } from "../../shared/nats/topology.ts";
import { cleanupAll, killAllNow } from "../lib/children.ts";
import { until } from "../lib/clock.ts";
import { payloadBytes } from "../lib/payload.ts";
import { cpuSeconds } from "../lib/sampler.ts";
import { startNats } from "../lib/servers.ts";
import { startService, stopService } from "../lib/services.ts";

/** CPU seconds (user + system) of a running process; NaN once it is gone. */
const cpuSecondsOf = (pid: number): number => cpuSeconds(pid) ?? Number.NaN;

const PREFIX = "sluice";
const TYPE = "noop";

async function runOnce(count: number) {
  const nats = await startNats();
  const nc = await connect({ servers: nats.url, name: "probe-worker-drain" });
  try {
    const n = names(PREFIX);
    const { jsm } = await ensureTopology(nc, n, { replicas: 1, storage: "file" });
    await ensureTypeConsumers(jsm, n, TYPE, { workAckWaitMs: WORK_ACK_WAIT_MS });
    const pub = new AckedPublisher(nc);
    const dec = new TextDecoder();
    const enqueuedAt = Date.now();
    for (let i = 0; i < count; i += 1000) {
      const batch = [];
      for (let j = i; j < Math.min(count, i + 1000); j++) {
        const id = `w${j}`;
        const payload = JSON.parse(dec.decode(payloadBytes(j, false)));
        const task = { id, type: TYPE, priority: "normal", payload, enqueuedAt };
        const h = newHeaders();
        h.set(Headers.dispatchedAt, String(Date.now()));
        batch.push(
          pub.publish(n.workSubject(TYPE), JSON.stringify(task), { msgId: `${id}:${j + 1}`, headers: h }),
        );
      }
      await Promise.all(batch);
    }
    const serverBefore = cpuSecondsOf(nats.pid);
    const startedAt = Date.now();
    const worker = await startService("worker", {
      NATS_URL: nats.url,
      SLUICE_PREFIX: PREFIX,
      SLUICE_STORAGE: "file",
      SLUICE_REPLICAS: "1",
      LOG_LEVEL: "info",
      METRICS_PORT: "0",
      WORKER_ID: "probe-worker",
      WORKER_TYPES: TYPE,
      WORKER_CONCURRENCY: "100",
    });
    await until(
      "the work stream to drain",
      async () => (await jsm.streams.info(n.workStream)).state.messages === 0,
      120_000,
      20,
    );
    const seconds = (Date.now() - startedAt) / 1000;
    const workerCpu = cpuSecondsOf(worker.child.pid!);
    const serverCpu = cpuSecondsOf(nats.pid) - serverBefore;
    const stored = (await jsm.streams.info(`KV_${n.stateBucket}`)).state.messages;
    await stopService(worker);
    if (stored !== count) throw new Error(`${stored} state records for ${count} tasks`);
    const us = (s: number) => Math.round((s / count) * 1e7) / 10;
    // the worker's figure includes its start (module loading, ~0.3 s of CPU): compare like with like
    return {
      count,
      perSec: Math.round(count / seconds),
      workerUsPerTask: us(workerCpu),
      serverUsPerTask: us(serverCpu),
    };
  } finally {
    await nc.close();
    await nats.stop();
  }
}

const arg = (name: string, d: string) =>
  process.argv.find((a) => a.startsWith(`--${name}=`))?.split("=")[1] ?? d;
const count = Number(arg("count", "100000"));
const runs = Number(arg("runs", "3"));
process.once("exit", killAllNow);
const deadline = setTimeout(() => {
  console.error("probe: deadline passed");
  process.exit(3);
}, 180_000);
const results = [];
for (let r = 0; r < runs; r++) {
  const res = await runOnce(count);
  console.log(JSON.stringify(res));
  results.push(res);
}
clearTimeout(deadline);
await cleanupAll();
const median = (xs: number[]) => xs.sort((a, b) => a - b)[xs.length >> 1]!;
console.error(
  `worker drain: ${median(results.map((r) => r.perSec))} tasks/s, worker ${median(results.map((r) => r.workerUsPerTask))} µs/task, nats-server ${median(results.map((r) => r.serverUsPerTask))} µs/task (medians of ${runs})`,
);
