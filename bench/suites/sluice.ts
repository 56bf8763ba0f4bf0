import { createHash, randomBytes } from "node:crypto";
import { jetstreamManager } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { names } from "../../shared/names.ts";
import { freePort } from "../../shared/nats/local-server.ts";
import { isFinal, type TaskStatus } from "../../shared/task.ts";
import type { ServiceProcess } from "../../test/support/processes.ts";
import { epochMs } from "../lib/clock.ts";
import type { SendRun } from "../lib/drive.ts";
import { type HttpLoad, httpLoad, probeOnce } from "../lib/http-load.ts";
import { makePayload } from "../lib/payload.ts";
import { type Contender, usedRuns } from "../lib/rounds.ts";
import { type RoleHandle, startRole } from "../lib/rpc.ts";
import { type ProcUsage, sampleProcesses } from "../lib/sampler.ts";
import { startNats } from "../lib/servers.ts";
import { assertServicesExist, problems, startService, stopService } from "../lib/services.ts";
import type { Settings } from "../lib/settings.ts";
import { auditStates, untilEmpty } from "../lib/sluice-checks.ts";
import { type LatencySummary, perSec, summarize } from "../lib/stats.ts";
import { type LatencyResult, median, type Rate, type RepeatedRate, rateOf } from "./peer.ts";
import {
  BACKLOG_IDS,
  type BacklogRig,
  type MillionBacklog,
  millionBacklog,
  type UrgentUnderBacklog,
  urgentUnderBacklog,
} from "./sluice-backlog.ts";

/**
 * Sluice: the three real services as separate processes on a nats-server of their own, driven like a
 * client would. Order: enqueue measures with no worker running (tasks pile up, as in the peers' enqueue
 * measures), then the worker starts and drains that backlog, then the rounds' end-to-end and latency
 * turns (taken in turn with the other systems', bench/lib/rounds.ts), then the two backlog measures
 * (sluice-backlog.ts), each of which stops the worker, queues its backlog and starts a
 * new one. Completion is read from JetStream itself: a task leaves the tasks stream only when its
 * worker acks it, after its final state is stored (docs/architecture.md), so an empty tasks stream
 * means every task is final. Latency uses a KV watch of the state bucket.
 */

const PREFIX = "sluice";
const TYPE = "noop";
const REQUEST_WINDOW = 500;

/** Everything the Sluice part reports. */
export type SluiceResult = {
  /** Direct JetStream publishes of DirectTaskBody to the tasks subjects (the peers' enqueue measure). */
  enqueue: Rate;
  httpEnqueue: HttpLoad;
  requestEnqueue: Rate;
  /** The worker starting on the backlog the enqueue measures left. */
  backlogDrain: Rate;
  e2e: RepeatedRate;
  latency: LatencyResult & {
    sent: number;
    recordP50Ms: number;
    recordP99Ms: number;
    /** The server's store time of the final record − send time (ms resolution): "done" as BullMQ's `completed`. */
    storedP50Ms: number;
    storedP99Ms: number;
    /** Observer's receipt − the server's store time of the final record: the watch's hop. */
    seenAfterStoredP99Ms: number;
    /**
     * The same latency in four legs, each from the stamp the record or the server keeps (whole ms where
     * a service stamped it): send → `dispatchedAt` → `startedAt` → final record stored → seen.
     */
    stages: Record<LatencyStage, LatencySummary>;
    /** CPU each process used per task over the paced run (µs): what one task costs at this rate. */
    cpuMicrosPerTask: Record<string, number>;
  };
  /** How long urgent tasks wait to start while a `bulk` backlog drains (target: p99 ≤ 50 ms). */
  urgentUnderBacklog: UrgentUnderBacklog;
  /** Memory while a backlog of a million tasks drains (target: each service below 200 MB). */
  millionBacklog: MillionBacklog;
  /** Latest status of every task in the state bucket at the end: all must be completed. */
  finalStates: Record<string, number>;
  /** The same for the purged backlog of `millionBacklog`: none may have failed. */
  purgedBacklogStates: Record<string, number>;
  /** RSS and CPU of each service over the whole Sluice part but `millionBacklog` (restarts included). */
  services: Record<string, ProcUsage>;
  /** RSS and CPU of every process during end to end and latency. */
  processes: Record<string, ProcUsage>;
  /** Exit code of every service stopped; a worker stopped between measures is `worker`, `worker#2`, … */
  shutdownExitCodes: Record<string, number | null>;
  warnings: string[];
  settings: Record<string, unknown>;
};

/**
 * Start the Sluice part: its nats-server and services, the enqueue measures and the worker's drain of
 * the backlog they leave. Then it serves the rounds' end-to-end and latency turns (bench/lib/rounds.ts),
 * and `finish` runs the backlog measures and the audit. Throws (no figures) if a service is missing
 * or misbehaves.
 */
export async function openSluice(s: Settings, log: (m: string) => void): Promise<Contender<SluiceResult>> {
  assertServicesExist();
  const n = names(PREFIX);
  const nats = await startNats();
  const services: ServiceProcess[] = [];
  const roles: RoleHandle[] = [];
  const usage = sampleProcesses({ "nats-server": nats.pid });
  const shutdownExitCodes: Record<string, number | null> = {};
  let nc: NatsConnection | undefined;
  const stop = async (svc: ServiceProcess) => {
    let key = svc.name;
    for (let i = 2; key in shutdownExitCodes; i++) key = `${svc.name}#${i}`;
    shutdownExitCodes[key] = await stopService(svc);
  };
  let closed = false;
  const close = async () => {
    if (closed) return;
    closed = true;
    usage.stop();
    for (const r of roles) await r.stop();
    for (const svc of services) await stopService(svc, 10_000);
    await nc?.close();
    await nats.stop();
  };
  try {
    nc = await connect({ servers: nats.url, name: "bench-orchestrator" });
    const common = {
      NATS_URL: nats.url,
      SLUICE_PREFIX: PREFIX,
      SLUICE_STORAGE: "file",
      SLUICE_REPLICAS: "1",
      LOG_LEVEL: "info",
      LOG_FORMAT: "json",
      METRICS_PORT: "0",
    };
    const httpPort = await freePort();
    log("sluice: starting enqueue and dispatcher (no worker yet)");
    // Production runs with API keys on, so the bench pays for the key check too.
    const apiKey = `sk_${randomBytes(32).toString("base64url")}`;
    const enqueue = await startService("enqueue", {
      ...common,
      AUTH_ENABLED: "true",
      SLUICE_API_KEYS: `bench:enqueue:${createHash("sha256").update(apiKey).digest("hex")}`,
      HTTP_HOST: "127.0.0.1",
      HTTP_PORT: String(httpPort),
    });
    services.push(enqueue);
    const dispatcher = await startService("dispatcher", {
      ...common,
      DISPATCHER_ID: "bench-dispatcher",
      TASK_TYPES: TYPE,
    });
    services.push(dispatcher);
    usage.add("enqueue", enqueue.child.pid!);
    usage.add("dispatcher", dispatcher.child.pid!);
    const jsm = await jetstreamManager(nc);
    const spec = { url: nats.url, prefix: PREFIX, type: TYPE };
    const prod = await startRole("sluice.producer", spec);
    roles.push(prod);

    log("sluice: HTTP enqueue");
    const url = `http://127.0.0.1:${httpPort}/v1/tasks`;
    const body = JSON.stringify({ type: TYPE, payload: makePayload(0, false) });
    const headers = { authorization: `Bearer ${apiKey}` };
    const httpWarm = await httpLoad(url, body, headers, s.httpConnections, s.quick ? 1 : 2);
    const http = await httpLoad(url, body, headers, s.httpConnections, s.httpDurationS);
    if (http.ok2xx === 0 || http.non2xx + http.errors > http.requests * 0.01) {
      const sample = await probeOnce(url, body, headers);
      throw new Error(`HTTP enqueue failed: ${JSON.stringify(http)}; one request answers ${sample}`);
    }

    log("sluice: NATS enqueue (direct publish, then request/reply)");
    await prod.call("burst", { count: s.warmupCount, idPrefix: "enqw-" });
    const direct = await prod.call<SendRun>("burst", { count: s.enqueueCount, idPrefix: "enq-" });
    const requestCount = Math.min(s.enqueueCount, s.quick ? 5_000 : 20_000);
    const reqWarm = await prod.call<SendRun>("request", { count: 1000, window: REQUEST_WINDOW });
    const req = await prod.call<SendRun>("request", { count: requestCount, window: REQUEST_WINDOW });

    log("sluice: starting the worker on the backlog");
    const backlog = (await jsm.streams.info(n.tasksStream)).state.messages;
    const startWorker = async () => {
      const w = await startService("worker", {
        ...common,
        WORKER_ID: "bench-worker",
        WORKER_TYPES: TYPE,
        WORKER_CONCURRENCY: "100",
      });
      services.push(w);
      return w;
    };
    let worker = await startWorker();
    usage.add("worker", worker.child.pid!);
    const drainStart = epochMs();
    const drainEnd = await untilEmpty(jsm, n, Math.max(60_000, backlog));
    const backlogDrain = rateOf(backlog, drainStart, drainEnd);

    log("sluice: ready for the rounds");
    await prod.call("burst", { count: s.warmupCount, idPrefix: "e2ew-" });
    await untilEmpty(jsm, n, 60_000);
    // every process during the rounds' turns, the observer of the latency turn included
    const turns = sampleProcesses({
      "nats-server": nats.pid,
      producer: prod.pid,
      enqueue: enqueue.child.pid!,
      dispatcher: dispatcher.child.pid!,
      worker: worker.child.pid!,
    });
    turns.pause();
    const e2eRuns = new Map<number, Rate>();
    const latencyRuns = new Map<number, LatencyRun>();
    let sentInRounds = 0;

    return {
      close,
      e2eRun: (round) =>
        turns.during(async () => {
          sentInRounds += s.e2eCount;
          const run = await prod.call<SendRun>("burst", { count: s.e2eCount, idPrefix: `e2e${round}-` });
          const end = await untilEmpty(jsm, n, Math.max(60_000, s.e2eCount));
          const rate = rateOf(s.e2eCount, run.startedAt, end);
          e2eRuns.set(round, rate);
          return rate;
        }),
      latencyRun: async (round) => {
        // a fresh observer per turn, for this turn's ids; its start-up is not part of the turn's figures
        const idPrefix = `lat${round}-`;
        const obs = await startRole("sluice.observer", { ...spec, idPrefix });
        roles.push(obs);
        try {
          const run = await turns.during(async () => {
            turns.add("observer", obs.pid);
            return measureLatency(s, prod, obs, idPrefix, {
              "nats-server": nats.pid,
              dispatcher: dispatcher.child.pid!,
              worker: worker.child.pid!,
              producer: prod.pid,
              observer: obs.pid,
            });
          });
          sentInRounds += run.sent;
          latencyRuns.set(round, run);
          return summarize(run.lat);
        } finally {
          // its watch would take every state update of the turns after it
          await obs.stop();
        }
      },
      async finish(used) {
        try {
          const e2e = median(usedRuns(e2eRuns, used));
          const latency = latencyFigures(s, usedRuns(latencyRuns, used));
          const processes = turns.stop();

          const rig: BacklogRig = {
            jsm,
            n,
            prod,
            observe: async (idPrefix) => {
              const r = await startRole("sluice.observer", { ...spec, idPrefix });
              roles.push(r);
              return r;
            },
            startWorker: async () => {
              const w = await startWorker();
              usage.add("worker", w.child.pid!); // the whole-part figures, until they are taken
              return w;
            },
            stopWorker: stop,
            pids: { "nats-server": nats.pid, enqueue: enqueue.child.pid!, dispatcher: dispatcher.child.pid! },
          };
          log(`sluice: urgent tasks at ${s.urgentRatePerSec}/s while ${s.urgentBulkCount} bulk tasks drain`);
          await stop(worker);
          const urgent = await urgentUnderBacklog(s, rig);
          worker = urgent.worker;
          const serviceUsage = usage.stop();

          log(`sluice: memory while a backlog of ${s.backlogCount} tasks drains (then purged)`);
          await stop(worker);
          const million = await millionBacklog(s, rig);

          log("sluice: auditing every state record");
          // every round run counts here, the ones left out of the figures too
          const accepted =
            httpWarm.ok2xx +
            http.ok2xx +
            2 * s.warmupCount +
            direct.sent +
            reqWarm.sent +
            req.sent +
            sentInRounds +
            urgent.result.bulk +
            urgent.result.urgentSent;
          const audit = await auditStates(nc!, n.stateBucket, BACKLOG_IDS);
          const finalStates = audit.counts;
          const notCompleted = Object.entries(finalStates).filter(([k]) => k !== "completed");
          if (notCompleted.length > 0 || (finalStates.completed ?? 0) < accepted) {
            throw new Error(
              `of ${accepted} accepted tasks the state bucket holds ${JSON.stringify(finalStates)} after both streams emptied`,
            );
          }
          // the purged backlog may have tasks that never ended, but none that ended otherwise than completed
          const purgedFailed = Object.entries(audit.excluded).filter(
            ([k]) => k !== "completed" && isFinal(k as TaskStatus),
          );
          if (purgedFailed.length > 0) {
            throw new Error(`the purged backlog's records include ${JSON.stringify(audit.excluded)}`);
          }

          log("sluice: stopping the services");
          for (const svc of [dispatcher, enqueue]) await stop(svc);
          return {
            enqueue: rateOf(direct.sent, direct.startedAt, direct.finishedAt),
            httpEnqueue: http,
            requestEnqueue: rateOf(req.sent, req.startedAt, req.finishedAt),
            backlogDrain,
            e2e,
            latency,
            urgentUnderBacklog: urgent.result,
            millionBacklog: million,
            finalStates,
            purgedBacklogStates: audit.excluded,
            services: serviceUsage,
            processes,
            shutdownExitCodes,
            warnings: services.flatMap((svc) => problems(svc)),
            settings: {
              storage: "file",
              workerConcurrency: 100,
              directPublish: "AckedPublisher, window 1000, msg id = task id, priorities cycled over 5",
              requestWindow: REQUEST_WINDOW,
              requestCount,
              httpConnections: s.httpConnections,
            },
          };
        } finally {
          await close();
        }
      },
    };
  } catch (e) {
    await close();
    throw e;
  }
}

/** The legs of the latency measure, in order. */
const STAGES = ["toDispatched", "dispatchedToStarted", "startedToStored", "storedToSeen"] as const;
type LatencyStage = (typeof STAGES)[number];

/** One latency turn's raw figures, kept until `finish` pools the rounds it uses. */
type LatencyRun = {
  sent: number;
  spanMs: number;
  /** Per counted task, ms: as the observer saw it, by the record's own stamps, to the store, the watch's hop. */
  lat: number[];
  rec: number[];
  stored: number[];
  seenAfterStored: number[];
  legs: Record<LatencyStage, number[]>;
  /** CPU each process used over the paced run, seconds. */
  cpuSeconds: Record<string, number>;
};

/** Send at the steady rate with ids `idPrefix<n>`; each counted task's latency, whole and in legs. */
async function measureLatency(
  s: Settings,
  prod: RoleHandle,
  obs: RoleHandle,
  idPrefix: string,
  pids: Record<string, number>,
): Promise<LatencyRun> {
  const cpu = sampleProcesses(pids);
  const run = await prod.call<SendRun & { sentAt: number[] }>(
    "paced",
    {
      ratePerSec: s.latencyRatePerSec,
      durationMs: s.latencyDurationMs,
      warmupMs: s.latencyWarmupMs,
      idPrefix,
    },
    s.latencyDurationMs + 60_000,
  );
  await obs.call("waitFinal", { target: run.sent }, 60_000);
  const used = cpu.stop();
  const seen = await obs.call<{
    observedAt: number[];
    recordMs: number[];
    storedAt: number[];
    startedAt: number[];
    dispatchedAt: number[];
    statuses: Record<string, number>;
  }>("take");
  const first = Math.ceil((s.latencyWarmupMs * s.latencyRatePerSec) / 1000);
  const out: LatencyRun = {
    sent: run.sent,
    spanMs: run.finishedAt - run.startedAt,
    lat: [],
    rec: [],
    stored: [],
    seenAfterStored: [],
    legs: { toDispatched: [], dispatchedToStarted: [], startedToStored: [], storedToSeen: [] },
    cpuSeconds: Object.fromEntries(Object.entries(used).map(([name, u]) => [name, u.cpuSeconds])),
  };
  const { legs } = out;
  for (let i = first; i < run.sent; i++) {
    const at = seen.observedAt[i];
    if (at === undefined) throw new Error(`task ${idPrefix}${i} was never seen final`);
    const sentAt = run.sentAt[i]!;
    out.lat.push(at - sentAt);
    if (seen.recordMs[i] !== undefined) out.rec.push(seen.recordMs[i]!);
    const storedAt = seen.storedAt[i];
    if (storedAt !== undefined) {
      out.stored.push(storedAt - sentAt);
      out.seenAfterStored.push(at - storedAt);
    }
    const dispatchedAt = seen.dispatchedAt[i];
    const startedAt = seen.startedAt[i];
    if (dispatchedAt !== undefined && startedAt !== undefined && storedAt !== undefined) {
      legs.toDispatched.push(dispatchedAt - sentAt);
      legs.dispatchedToStarted.push(startedAt - dispatchedAt);
      legs.startedToStored.push(storedAt - startedAt);
      legs.storedToSeen.push(at - storedAt);
    }
  }
  if (legs.toDispatched.length === 0) throw new Error("no latency task recorded dispatchedAt and startedAt");
  return out;
}

/** The latency figures of the rounds used: every counted task of them, pooled. */
function latencyFigures(s: Settings, runs: LatencyRun[]): SluiceResult["latency"] {
  const all = <T>(pick: (r: LatencyRun) => T[]) => runs.flatMap(pick);
  const sent = runs.reduce((a, r) => a + r.sent, 0);
  const spanMs = runs.reduce((a, r) => a + r.spanMs, 0);
  const stages = Object.fromEntries(STAGES.map((k) => [k, summarize(all((r) => r.legs[k]))])) as Record<
    LatencyStage,
    LatencySummary
  >;
  const cpuS: Record<string, number> = {};
  for (const r of runs) for (const [k, v] of Object.entries(r.cpuSeconds)) cpuS[k] = (cpuS[k] ?? 0) + v;
  const cpuMicrosPerTask = Object.fromEntries(
    Object.entries(cpuS).map(([name, v]) => [name, Math.round((v / sent) * 1e6)]),
  );
  const rec = all((r) => r.rec);
  const stored = all((r) => r.stored);
  const seenAfterStored = all((r) => r.seenAfterStored);
  const recSummary = rec.length > 0 ? summarize(rec) : undefined;
  const storedSummary = stored.length > 0 ? summarize(stored) : undefined;
  const seenSummary = seenAfterStored.length > 0 ? summarize(seenAfterStored) : undefined;
  return {
    ...summarize(all((r) => r.lat)),
    targetRatePerSec: s.latencyRatePerSec,
    achievedRatePerSec: perSec(sent, spanMs),
    recordP50Ms: recSummary?.p50Ms ?? Number.NaN,
    recordP99Ms: recSummary?.p99Ms ?? Number.NaN,
    storedP50Ms: storedSummary?.p50Ms ?? Number.NaN,
    storedP99Ms: storedSummary?.p99Ms ?? Number.NaN,
    seenAfterStoredP99Ms: seenSummary?.p99Ms ?? Number.NaN,
    stages,
    cpuMicrosPerTask,
    sent,
  };
}
