import { setTimeout as sleep } from "node:timers/promises";
import { isFinal } from "../../../shared/task.ts";
import { waitFor } from "../../support/processes.ts";
import { type LoadResult, runLoad } from "../support/load.ts";
import { createRng } from "../support/rng.ts";
import { RELIABLE_TYPE, type StreamCounts, type Svc, System } from "../support/system.ts";
import { auditRuns, type RunAudit } from "../support/verify.ts";

/** Options of {@link runNatsRestartScenario}. */
export type NatsRestartOptions = {
  tasks: number;
  ratePerS: number;
  /** SIGKILL the server once this many tasks were sent (the load is open-loop, so: at this moment). */
  killAfterSent: number;
  /** How long the server stays down, ms. */
  outageMs: number;
  seed: number;
  finalTimeoutMs: number;
  verbose?: boolean;
};

/** Readiness of one service as its probe saw it around the outage. */
export type ReadinessTrace = {
  name: string;
  /** ms from the kill to the first not-ready answer (undefined: never seen not ready). */
  notReadyAfterMs?: number;
  /** ms from the restart to the first ready answer after the outage. */
  readyAgainAfterMs?: number;
  /** Every change of the answer: ms since the kill, and the status (0 = no answer). */
  changes: [number, number][];
};

/** What a NATS restart run measured. */
export type NatsRestartReport = {
  seed: number;
  load: Omit<LoadResult, "accepted"> & { accepted: number };
  outage: { killedAtS: number; downMs: number };
  readiness: ReadinessTrace[];
  /** Accepted tasks with no final state at the end. */
  lost: string[];
  audit: RunAudit;
  /**
   * Messages in the streams at the end: no task. After a SIGKILL of the server the tasks stream (a work
   * queue) may keep messages its consumers had acked (the acks' deletes were not on disk yet); the
   * dispatcher leader purges them (services/dispatcher/leftovers.ts).
   */
  streams: StreamCounts;
  /**
   * Tasks-stream messages a read returns at the end: none may be left. The stream state's own count
   * (`streams.tasks`) may exceed it after the crash (nats-server 2.9.10: docs/reliability.md).
   */
  readableTasks: number;
  /** Acked messages the crash kept that the dispatcher leader removed (from its log). */
  leftoversRemoved: number;
  /** What the tasks consumers still have to deliver or see acked: the real backlog, which must be zero. */
  consumers: { pending: number; ackPending: number };
  /** Services that logged "nats reconnected". */
  reconnected: string[];
  /** Processes that exited (none may: they must ride out the outage). */
  exited: string[];
  totalMs: number;
};

/**
 * Enqueue under load, SIGKILL the single file-store nats-server mid-run, keep it down, start it again on
 * the same port and store: no accepted task may be lost, the services must reconnect by themselves,
 * and every /readyz must say 503 during the outage and 200 after.
 */
export async function runNatsRestartScenario(o: NatsRestartOptions): Promise<NatsRestartReport> {
  const sys = await System.start({ verbose: o.verbose });
  try {
    const probe = async (extra: Record<string, string> = {}) => {
      const port = await sys.freePort();
      return { ...extra, METRICS_PORT: String(port), METRICS_HOST: "127.0.0.1" };
    };
    const gw = await sys.gateway();
    // leftovers a crash keeps in the streams are purged by the leader's sweep: every second here
    const dispatcher = await sys.dispatcher(await probe({ RETENTION_SWEEP_MS: "1000" }));
    const services: Svc[] = [gw, dispatcher, await sys.worker(await probe())];
    services.push(await sys.worker(await probe()));
    const readyUrl = (s: Svc) =>
      s.role === "enqueue" ? `${sys.url(s)}/readyz` : `http://127.0.0.1:${s.metricsPort}/readyz`;

    // poll every probe every 100 ms for the whole run
    let killedAt = 0;
    let restartedAt = 0;
    const traces = services.map((s) => ({
      svc: s,
      last: -1,
      trace: { name: s.name, changes: [] } as ReadinessTrace,
    }));
    let polling = true;
    const poller = (async () => {
      while (polling) {
        await Promise.all(
          traces.map(async (t) => {
            const status = await fetch(readyUrl(t.svc), { signal: AbortSignal.timeout(1000) }).then(
              (r) => r.status,
              () => 0,
            );
            const now = Date.now();
            if (status !== t.last) {
              t.last = status;
              if (killedAt) t.trace.changes.push([now - killedAt, status]);
            }
            if (killedAt && !restartedAt && status !== 200 && t.trace.notReadyAfterMs === undefined)
              t.trace.notReadyAfterMs = now - killedAt;
            if (restartedAt && status === 200 && t.trace.readyAgainAfterMs === undefined)
              t.trace.readyAgainAfterMs = now - restartedAt;
          }),
        );
        await sleep(100);
      }
    })();

    const t0 = Date.now();
    const load = runLoad({
      urls: () => [sys.url(gw)],
      count: o.tasks,
      ratePerS: o.ratePerS,
      retry: true,
      keyPrefix: `nats-${o.seed}`,
      body: (i) => ({
        type: RELIABLE_TYPE,
        payload: { n: i, ms: createRng(o.seed + i).int(1, 30) },
        priority: i % 10 === 0 ? "urgent" : "normal",
      }),
    });
    await sleep(t0 + (o.killAfterSent / o.ratePerS) * 1000 - Date.now());
    killedAt = Date.now();
    await sys.killNats();
    sys.note(`nats-server SIGKILLed`);
    await sleep(o.outageMs);
    await sys.restartNats();
    restartedAt = Date.now();
    sys.note(`nats-server restarted (down ${restartedAt - killedAt} ms)`);

    const l = await load;
    sys.note(`load done: ${l.accepted.length} accepted, ${l.retries} retried`);
    const ids = l.accepted.map((a) => a.id);
    const states = await sys.waitAllFinal(ids, o.finalTimeoutMs);
    if ([...states.values()].some((s) => !s || !isFinal(s.status))) await sys.diagnose();
    const totalMs = Date.now() - t0;
    // readiness must come back everywhere, not only where a task happened to need it
    const until = Date.now() + 15_000;
    while (traces.some((t) => t.last !== 200) && Date.now() < until) await sleep(200);
    polling = false;
    await poller;
    sys.note(`all final; readiness: ${traces.map((t) => `${t.trace.name} ${t.last}`).join(", ")}`);
    // the consumers first: acked messages a crash kept stay in the streams until the leader's next sweep
    const consumers = await waitFor(
      async () => {
        const c = await sys.unfinished();
        return c.pending + c.ackPending === 0 ? c : undefined;
      },
      10_000,
      250,
    ).catch(() => sys.unfinished());
    // and then the tasks stream holds nothing: acked messages the crash kept are purged (leftovers.ts)
    const streams = await sys.waitStreamsEmpty(10_000);
    const readableTasks = streams.tasks > 0 ? await sys.readableTasks() : 0;
    if (readableTasks > 0) {
      // what the sweep saw: per-subject counts and each consumer's delivered and ack floor sequences
      const st = sys.names.tasksStream;
      const si = await sys.jsm.streams.info(st, { subjects_filter: ">" });
      console.log(`stream not empty: ${st} ${JSON.stringify(si.state)}`);
      for await (const ci of sys.jsm.consumers.list(st)) {
        const { delivered, ack_floor, num_pending, num_ack_pending } = ci;
        console.log(`  ${ci.name} ${JSON.stringify({ delivered, ack_floor, num_pending, num_ack_pending })}`);
      }
    }
    // a rerun is the outage's doing when the first run started before the server was back and the
    // next one after it died: a final write or an ack lost with the server (at least once)
    const audit = auditRuns({
      ids,
      states,
      runs: sys.runs(),
      killedPids: new Set(),
      explains: (earlier, next) => earlier.at < restartedAt && next.at > killedAt,
      attemptsGrow: false,
    });
    const { accepted, ...rest } = l;
    return {
      seed: o.seed,
      load: { ...rest, accepted: accepted.length },
      outage: { killedAtS: Math.round((killedAt - t0) / 100) / 10, downMs: restartedAt - killedAt },
      readiness: traces.map((t) => t.trace),
      lost: ids.filter((id) => {
        const s = states.get(id);
        return !s || !["completed", "failed", "timed_out", "dead", "cancelled"].includes(s.status);
      }),
      audit,
      streams,
      readableTasks,
      leftoversRemoved: dispatcher.proc.logs
        .filter((x) => x.msg === "removed acked messages a work-queue stream kept")
        .reduce((n, x) => n + Number(x.removed ?? 0), 0),
      consumers,
      reconnected: services
        .filter((s) => s.proc.logs.some((x) => x.msg === "nats reconnected"))
        .map((s) => s.name),
      exited: sys.procs
        .filter((p) => p.proc.child.exitCode !== null || p.proc.child.signalCode)
        .map((p) => p.name),
      totalMs,
    };
  } finally {
    await sys.cleanup();
  }
}
