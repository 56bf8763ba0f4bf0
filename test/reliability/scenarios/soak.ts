import { setTimeout as sleep } from "node:timers/promises";
import { type LoadResult, runLoad } from "../support/load.ts";
import { createRng } from "../support/rng.ts";
import { medianMb, peakMb, RssSampler, type RssSeries } from "../support/rss.ts";
import { RELIABLE_TYPE, type Svc, System } from "../support/system.ts";
import { auditRuns, type RunAudit } from "../support/verify.ts";
import type { KillEvent } from "./kills.ts";

/** Options of {@link runSoak}. */
export type SoakOptions = {
  durationMs: number;
  ratePerS: number;
  /** A SIGKILL every this many ms (random in the range): the chaos worker, every third time the leader. */
  killEveryMs: [number, number];
  /** RSS sampling interval, ms. */
  sampleEveryMs: number;
  /** Most a process's RSS may grow from just after warm-up to the end, MiB. */
  growthLimitMb: number;
  seed: number;
  /** Where progress and the RSS table go (default: console.log). */
  print?: (line: string) => void;
};

/** One process's memory over the soak. */
export type RssVerdict = {
  label: string;
  pid: number;
  /** Seconds it was sampled. */
  livedS: number;
  /**
   * Median RSS just after warm-up and over the last tenth of the run (absent when it did not live
   * then), the peak, and the growth between the two, MiB.
   */
  baselineMb?: number;
  finalMb?: number;
  peakMb: number;
  growthMb?: number;
  /** Only processes that lived through the whole measured span are judged. */
  judged: boolean;
};

/** What a soak measured. */
export type SoakReport = {
  seed: number;
  durationMs: number;
  load: Omit<LoadResult, "accepted"> & { accepted: number };
  kills: KillEvent[];
  audit: RunAudit;
  rss: RssVerdict[];
  problems: string[];
};

/** Share of the run before memory is measured (heaps grow to their working size first). */
const WARMUP_SHARE = 0.2;

/**
 * Steady load for `durationMs` with periodic SIGKILLs, RSS of every process sampled throughout and
 * printed as a table. Fails (problems) when a task is lost or reruns unexplained, or when a process
 * that lived through the run grew by more than `growthLimitMb` after warm-up.
 */
export async function runSoak(o: SoakOptions): Promise<SoakReport> {
  const print = o.print ?? ((l: string) => console.log(l));
  const sys = await System.start();
  try {
    const rng = createRng(o.seed);
    const gw = await sys.gateway();
    await sys.dispatcher();
    await sys.dispatcher();
    const stable = await sys.worker({ WORKER_CONCURRENCY: "8" });
    let chaos = await sys.worker({ WORKER_CONCURRENCY: "8" });
    const targets = () => [
      ...sys.alive().map((s: Svc) => ({ label: s.name, pid: s.pid })),
      { label: "nats-server", pid: sys.natsPid },
    ];
    const t0 = Date.now();
    const sampler = new RssSampler(targets, o.sampleEveryMs);
    const table = setInterval(() => {
      const cols = sampler
        .series()
        .filter((s) => s.samples.at(-1)!.atMs >= sampler.now() - o.sampleEveryMs)
        .map((s) => `${s.label} ${s.samples.at(-1)!.mb.toFixed(1)}`);
      print(`t=${Math.round((Date.now() - t0) / 1000)}s rss MiB: ${cols.join(" | ")}`);
    }, o.sampleEveryMs);
    table.unref();

    const load = runLoad({
      urls: () => [sys.url(gw)],
      count: Math.round((o.ratePerS * o.durationMs) / 1000),
      ratePerS: o.ratePerS,
      retry: true,
      keyPrefix: `soak-${o.seed}`,
      body: (i) => ({
        type: RELIABLE_TYPE,
        payload: { n: i, ms: createRng(o.seed * 17 + i).int(1, 20) },
        priority: i % 5 === 0 ? "urgent" : "normal",
      }),
    });
    const kills: KillEvent[] = [];
    let loadDone = false;
    void load.then(() => (loadDone = true));
    for (let k = 1; !loadDone; k++) {
      const next = Date.now() + rng.int(o.killEveryMs[0], o.killEveryMs[1]);
      while (!loadDone && Date.now() < next) await sleep(200);
      if (loadDone || Date.now() - t0 > o.durationMs - 5_000) break;
      const leader = k % 3 === 0 ? sys.leader() : undefined;
      const victim = leader ?? chaos;
      await sys.kill(victim);
      kills.push({
        atS: Math.round((Date.now() - t0) / 100) / 10,
        role: victim.role === "dispatcher" ? "dispatcher" : "worker",
        name: victim.name,
        pid: victim.pid,
        leader: leader !== undefined,
      });
      print(`t=${Math.round((Date.now() - t0) / 1000)}s SIGKILL ${victim.name} (pid ${victim.pid})`);
      if (leader) await sys.dispatcher();
      else chaos = await sys.worker({ WORKER_CONCURRENCY: "8" });
    }
    const l = await load;
    const ids = l.accepted.map((a) => a.id);
    const states = await sys.waitAllFinal(ids, 60_000);
    const series = sampler.stop();
    clearInterval(table);
    const audit = auditRuns({ ids, states, runs: sys.runs(), killedPids: sys.killed.worker });
    const rss = judge(series, o.durationMs, [gw.pid, stable.pid]);
    const problems: string[] = [...audit.violations];
    if (l.accepted.length !== l.sent) problems.push(`${l.sent - l.accepted.length} tasks never accepted`);
    for (const v of rss)
      if (v.judged && (v.growthMb ?? 0) > o.growthLimitMb)
        problems.push(`${v.label} grew ${v.growthMb} MiB after warm-up (limit ${o.growthLimitMb})`);
    print(rssTable(rss));
    const { accepted, ...rest } = l;
    return {
      seed: o.seed,
      durationMs: Date.now() - t0,
      load: { ...rest, accepted: accepted.length },
      kills,
      audit,
      rss,
      problems,
    };
  } finally {
    await sys.cleanup();
  }
}

/** Per process: baseline just after warm-up, final over the last tenth; judged if it lived through both. */
function judge(series: RssSeries[], durationMs: number, alwaysJudged: number[]): RssVerdict[] {
  const from = durationMs * WARMUP_SHARE;
  const tail = durationMs * 0.9;
  return series.map((s) => {
    const first = s.samples[0]!.atMs;
    const last = s.samples.at(-1)!.atMs;
    const baseline = medianMb(s, from, from + durationMs * 0.1);
    const final = medianMb(s, tail, Number.POSITIVE_INFINITY);
    // nats-server is reported, not judged: it caches what it stores, and records are kept 24 h
    const judged =
      s.label !== "nats-server" &&
      baseline !== undefined &&
      final !== undefined &&
      (alwaysJudged.includes(s.pid) || (first <= from && last >= tail));
    const r = (x: number) => Math.round(x * 10) / 10;
    const v: RssVerdict = {
      label: s.label,
      pid: s.pid,
      livedS: Math.round((last - first) / 1000),
      peakMb: r(peakMb(s)),
      judged,
    };
    if (baseline !== undefined) v.baselineMb = r(baseline);
    if (final !== undefined) v.finalMb = r(final);
    if (baseline !== undefined && final !== undefined) v.growthMb = r(final - baseline);
    return v;
  });
}

/** The memory summary as a fixed-width table. */
export function rssTable(rows: RssVerdict[]): string {
  const head = ["process", "pid", "lived s", "after warm-up", "final", "peak", "growth", "judged"];
  const mb = (x: number | undefined) => (x === undefined ? "-" : x.toFixed(1));
  const lines = rows.map((v) => [
    v.label,
    String(v.pid),
    String(v.livedS),
    mb(v.baselineMb),
    mb(v.finalMb),
    mb(v.peakMb),
    mb(v.growthMb),
    v.judged ? "yes" : "no",
  ]);
  const w = head.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i]!.length)));
  const fmt = (cells: string[]) => cells.map((c, i) => c.padEnd(w[i]!)).join("  ");
  return [fmt(head), fmt(w.map((n) => "-".repeat(n))), ...lines.map(fmt)].join("\n");
}

/** `10m`, `90s`, `1h`, `500ms` or plain ms, as ms. */
export function parseDurationMs(v: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(v.trim());
  if (!m) throw new Error(`not a duration: ${v} (try 90s, 10m, 1h)`);
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[m[2] ?? "ms"]!;
  return Math.round(Number(m[1]) * unit);
}
