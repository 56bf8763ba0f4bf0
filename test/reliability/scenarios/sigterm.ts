import { setTimeout as sleep } from "node:timers/promises";
import { type LoadResult, runLoad } from "../support/load.ts";
import { createRng } from "../support/rng.ts";
import { RELIABLE_TYPE, type StreamCounts, type Svc, System } from "../support/system.ts";
import { auditRuns, type RunAudit } from "../support/verify.ts";

/** Options of {@link runSigtermScenario}. */
export type SigtermOptions = {
  tasks: number;
  ratePerS: number;
  /** Share of tasks (0–1) whose handler runs `longMs` instead of a few ms: work a draining worker must finish. */
  longShare: number;
  longMs: number;
  seed: number;
  finalTimeoutMs: number;
  verbose?: boolean;
};

/** One SIGTERM of the run. */
export type StopEvent = {
  name: string;
  role: Svc["role"];
  atS: number;
  code: number | null;
  /** From the signal to the exit, ms. */
  exitMs: number;
  /** Workers: handlers still running when the signal came, which it let finish. */
  running?: number;
  /** Dispatchers: ms until the standby logged that it leads. */
  handoverMs?: number;
};

/** What a SIGTERM run measured. */
export type SigtermReport = {
  seed: number;
  load: Omit<LoadResult, "accepted"> & { accepted: number };
  stops: StopEvent[];
  audit: RunAudit;
  streams: StreamCounts;
  totalMs: number;
};

/**
 * Under steady load through two gateways, stop each service in turn with SIGTERM (a worker, the leading
 * dispatcher, a gateway, the other worker), replacing each: every stop must be graceful (exit 0, in
 * time), and every accepted task must complete exactly once — a graceful stop never costs a rerun.
 */
export async function runSigtermScenario(o: SigtermOptions): Promise<SigtermReport> {
  const sys = await System.start({ verbose: o.verbose });
  try {
    const gateways = [await sys.gateway(), await sys.gateway()];
    await sys.dispatcher();
    await sys.dispatcher();
    const workers = [await sys.worker(), await sys.worker()];
    const t0 = Date.now();
    const load = runLoad({
      urls: () => gateways.map((g) => sys.url(g)),
      count: o.tasks,
      ratePerS: o.ratePerS,
      retry: true,
      keyPrefix: `sigterm-${o.seed}`,
      body: (i) => {
        const rng = createRng(o.seed * 31 + i);
        return {
          type: RELIABLE_TYPE,
          payload: { n: i, ms: rng.chance(o.longShare) ? o.longMs : rng.int(1, 40) },
          priority: rng.pick(["urgent", "normal", "bulk"] as const),
        };
      },
    });
    const loadMs = (o.tasks / o.ratePerS) * 1000;
    const stops: StopEvent[] = [];
    const at = async (share: number) => {
      const wait = t0 + share * loadMs - Date.now();
      if (wait > 0) await sleep(wait);
    };
    const stop = async (svc: Svc, extra: Partial<StopEvent> = {}) => {
      const atS = Math.round((Date.now() - t0) / 100) / 10;
      const { code, ms } = await sys.terminate(svc);
      sys.note(`SIGTERM ${svc.name}: exit ${code} after ${ms} ms`);
      const e: StopEvent = { name: svc.name, role: svc.role, atS, code, exitMs: ms, ...extra };
      stops.push(e);
      return e;
    };

    await at(0.2);
    await stopWorker(0);
    await at(0.4);
    const leader = sys.leader();
    if (leader) {
      const standby = sys.alive("dispatcher").find((d) => d !== leader)!;
      const led = standby.proc.logs.filter((l) => l.msg === "became leader").length;
      const t = Date.now();
      const e = await stop(leader);
      await standby.proc.waitForLog(
        (l) =>
          l.msg === "became leader" &&
          standby.proc.logs.filter((x) => x.msg === "became leader").length > led,
        15_000,
      );
      e.handoverMs = Date.now() - t;
      await sys.dispatcher();
    }
    await at(0.6);
    const g = gateways[0]!;
    await stop(g);
    gateways[0] = await sys.gateway({}, g.httpPort);
    await at(0.8);
    await stopWorker(1);

    async function stopWorker(k: number): Promise<void> {
      const w = workers[k]!;
      const e = await stop(w);
      // the worker says how many handlers it let finish
      e.running = w.proc.logs.find((x) => x.msg === "worker draining")?.running as number | undefined;
      workers[k] = await sys.worker();
    }

    const l = await load;
    sys.note(`load done: ${l.accepted.length} accepted, ${l.retries} retried`);
    const ids = l.accepted.map((a) => a.id);
    const states = await sys.waitAllFinal(ids, o.finalTimeoutMs);
    const totalMs = Date.now() - t0;
    const streams = await sys.waitStreamsEmpty(10_000);
    await sleep(500);
    const audit = auditRuns({
      ids,
      states,
      runs: sys.runs(),
      killedPids: new Set(),
      finalWrites: sys.finalWrites,
    });
    const { accepted, ...rest } = l;
    return { seed: o.seed, load: { ...rest, accepted: accepted.length }, stops, audit, streams, totalMs };
  } finally {
    await sys.cleanup();
  }
}
