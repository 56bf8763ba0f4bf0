import { setTimeout as sleep } from "node:timers/promises";
import type { Priority } from "../../../shared/priority.ts";
import { isFinal } from "../../../shared/task.ts";
import { type LoadResult, runLoad } from "../support/load.ts";
import { createRng } from "../support/rng.ts";
import { RELIABLE_TYPE, type StreamCounts, type Svc, System } from "../support/system.ts";
import { auditRuns, type RunAudit } from "../support/verify.ts";

/** Options of {@link runKillScenario}. */
export type KillOptions = {
  /** Tasks enqueued over HTTP. */
  tasks: number;
  /** Enqueue rate, tasks per second: the load lasts `tasks / ratePerS` seconds. */
  ratePerS: number;
  workers: number;
  /** Dispatcher replicas (one leads, the others stand by). */
  dispatchers: number;
  /** Slots per worker. */
  workerConcurrency: number;
  /** Each task's handler sleeps a random time in this range, ms, so kills land mid-handler. */
  taskMs: [number, number];
  /** Worker SIGKILLs, spread at random over the load. */
  workerKills: number;
  /** Dispatcher SIGKILLs (the leader when one is known). */
  dispatcherKills: number;
  seed: number;
  /**
   * How long the tasks may take to finish after the load, ms (the tasks a killed leader held, and those
   * handed to a killed worker, return after the tasks consumers' ack wait: 5 s, set by the workers).
   */
  finalTimeoutMs: number;
  verbose?: boolean;
};

/** One SIGKILL of the run. */
export type KillEvent = {
  atS: number;
  role: "worker" | "dispatcher";
  name: string;
  pid: number;
  leader: boolean;
};

/** What a kill run measured and found. */
export type KillReport = {
  seed: number;
  load: Omit<LoadResult, "accepted"> & { accepted: number };
  kills: KillEvent[];
  audit: RunAudit;
  streams: StreamCounts;
  /** From the first request to every task final, ms. */
  totalMs: number;
  /** Services that exited without being killed by the test (must be none). */
  unexpectedExits: string[];
};

/**
 * Enqueue `tasks` while SIGKILLing workers and dispatchers at random moments (each is replaced at
 * once), then audit every task: final exactly once, nothing lost, and a handler ran again only where
 * the worker running it was killed.
 */
export async function runKillScenario(o: KillOptions): Promise<KillReport> {
  const sys = await System.start({ verbose: o.verbose });
  try {
    const rng = createRng(o.seed);
    const gw = await sys.gateway();
    const workerEnv = { WORKER_CONCURRENCY: String(o.workerConcurrency) };
    for (let i = 0; i < o.dispatchers; i++) await sys.dispatcher();
    for (let i = 0; i < o.workers; i++) await sys.worker(workerEnv);
    const t0 = Date.now();
    const loadMs = (o.tasks / o.ratePerS) * 1000;

    // kill moments: one per equal slice of the load, at a random point inside it
    const plan: { at: number; role: "worker" | "dispatcher" }[] = [];
    for (const [role, n] of [
      ["worker", o.workerKills],
      ["dispatcher", o.dispatcherKills],
    ] as const) {
      for (let k = 0; k < n; k++) plan.push({ at: ((k + 0.15 + 0.7 * rng.next()) * loadMs) / n, role });
    }
    plan.sort((x, y) => x.at - y.at);

    const priorities: Priority[] = ["urgent", "high", "normal", "low", "bulk"];
    const load = runLoad({
      urls: () => [sys.url(gw)],
      count: o.tasks,
      ratePerS: o.ratePerS,
      retry: true,
      keyPrefix: `kill-${o.seed}`,
      body: (i) => ({
        type: RELIABLE_TYPE,
        // drawn per task, not from the kill schedule's stream: the same seed gives the same tasks
        payload: { n: i, ms: createRng(o.seed * 7919 + i).int(o.taskMs[0], o.taskMs[1]) },
        priority: priorities[i % priorities.length]!,
      }),
    });

    const kills: KillEvent[] = [];
    for (const step of plan) {
      const wait = t0 + step.at - Date.now();
      if (wait > 0) await sleep(wait);
      const leader = step.role === "dispatcher" ? sys.leader() : undefined;
      const victim: Svc | undefined = leader ?? rng.pick(sys.alive(step.role));
      if (!victim) continue;
      await sys.kill(victim);
      kills.push({
        atS: Math.round((Date.now() - t0) / 100) / 10,
        role: step.role,
        name: victim.name,
        pid: victim.pid,
        leader: leader !== undefined,
      });
      sys.note(`SIGKILL ${victim.name} (pid ${victim.pid}${leader ? ", leader" : ""})`);
      if (step.role === "worker") await sys.worker(workerEnv);
      else await sys.dispatcher();
    }

    const l = await load;
    sys.note(`load done: ${l.accepted.length} accepted in ${l.durationMs} ms, ${l.retries} retries`);
    const ids = l.accepted.map((a) => a.id);
    const states = await sys.waitAllFinal(ids, o.finalTimeoutMs);
    if ([...states.values()].some((s) => !s || !isFinal(s.status))) await sys.diagnose();
    const totalMs = Date.now() - t0;
    const streams = await sys.waitStreamsEmpty(10_000);
    // the last final writes may still be on their way to the observer
    await sleep(500);
    const audit = auditRuns({
      ids,
      states,
      runs: sys.runs(),
      killedPids: sys.killed.worker,
      finalWrites: sys.finalWrites,
    });
    const killedAll = new Set([...sys.killed.worker, ...sys.killed.dispatcher]);
    const unexpectedExits = sys.procs
      .filter((p) => !killedAll.has(p.pid) && (p.proc.child.exitCode !== null || p.proc.child.signalCode))
      .map((p) => `${p.name} exited ${p.proc.child.exitCode ?? p.proc.child.signalCode}`);
    const { accepted, ...rest } = l;
    return {
      seed: o.seed,
      load: { ...rest, accepted: accepted.length },
      kills,
      audit,
      streams,
      totalMs,
      unexpectedExits,
    };
  } finally {
    await sys.cleanup();
  }
}
