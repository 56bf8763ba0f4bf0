import { availableParallelism, cpus } from "node:os";
import { cleanupAll, killAllNow, running } from "./lib/children.ts";
import { type MachineLoad, waitQuiet, watchMachine } from "./lib/machine-load.ts";
import { type Row, table } from "./lib/report.ts";
import { type Contender, medianRatio, type RoundsResult, runRounds } from "./lib/rounds.ts";
import { brokerVersions } from "./lib/servers.ts";
import { parseArgs, type Settings, type System } from "./lib/settings.ts";
import { openBullmq } from "./suites/bullmq.ts";
import { openJetstream } from "./suites/jetstream.ts";
import type { PeerResult } from "./suites/peer.ts";
import { openSluice, type SluiceResult } from "./suites/sluice.ts";

/**
 * `npm run bench`: Sluice beside BullMQ (like-for-like and fastest) and raw JetStream, in one run on
 * this machine, every broker and role in its own process on loopback. The measures the ratios compare
 * run in rounds that take the systems in turn (bench/lib/rounds.ts); the rest run once per system.
 * `--json` prints one object on stdout; everything else goes to stderr. See docs/performance.md for what each figure means.
 */

type Failed = { error: string };
type Results = {
  jetstream?: PeerResult | Failed;
  bullmq?: PeerResult | Failed;
  bullmqFastest?: PeerResult | Failed;
  sluice?: SluiceResult | Failed;
};

const t0 = Date.now();
/** Above this share of the machine used by other processes, a part's figures are flagged. */
const NOISY_SHARE = 0.1;
const log = (m: string) => process.stderr.write(`[bench +${((Date.now() - t0) / 1000).toFixed(1)}s] ${m}\n`);

let settings: Settings;
try {
  settings = parseArgs(process.argv.slice(2));
} catch (e) {
  process.stderr.write(`${(e as Error).message}\n`);
  process.exit(2);
}

process.on("exit", killAllNow);
for (const sig of ["SIGINT", "SIGTERM"] as const) {
  process.once(sig, () => {
    log(`${sig}: stopping everything the bench started`);
    void cleanupAll(2000).finally(() => process.exit(130));
  });
}
const deadline = setTimeout(() => {
  log(`deadline of ${settings.deadlineMs / 1000} s passed; still running: ${JSON.stringify(running())}`);
  void cleanupAll(2000).finally(() => process.exit(3));
}, settings.deadlineMs);
deadline.unref();

const startedAt = new Date().toISOString();
const results: Results = {};
const openers: Record<System, () => Promise<Contender<PeerResult | SluiceResult>>> = {
  jetstream: () => openJetstream(settings, log),
  bullmq: () => openBullmq(settings, "likeForLike", log),
  bullmqFastest: () => openBullmq(settings, "fastest", log),
  sluice: () => openSluice(settings, log),
};
const cores = availableParallelism();
/** How much of the machine other processes took in each part run outside the rounds. */
const parts: Record<string, MachineLoad> = {};
/** The most any one part or turn of a system had taken by other processes. */
const otherMax: Partial<Record<System, number>> = {};
const noteLoad = (system: System, share: number) => {
  otherMax[system] = Math.max(otherMax[system] ?? 0, share);
  if (share > NOISY_SHARE)
    log(
      `WARNING: other processes used ${Math.round(share * 100)}% of the machine during a part of ${system}`,
    );
};
/** Run `fn` as a part of `system` outside the rounds: wait for a quiet machine, watch it meanwhile. */
async function part<T>(system: System, name: string, fn: () => Promise<T>): Promise<T> {
  if (settings.waitQuietMs > 0) {
    const share = await waitQuiet(settings.waitQuietMs, cores);
    log(`${system}: other processes use ${Math.round(share * 100)}% of the machine at the start`);
  }
  const watch = watchMachine(cores);
  try {
    return await fn();
  } finally {
    const load = watch.stop();
    parts[`${system}: ${name}`] = load;
    noteLoad(system, load.otherShare);
  }
}
const fail = (system: System, e: unknown) => {
  const message = e instanceof Error ? e.message : String(e);
  log(`${system} FAILED: ${message}`);
  (results as Record<string, unknown>)[system] = { error: message };
};

// BullMQ at its fastest is reported beside, in no ratio, so it runs its rounds on its own and does not
// stretch the rounds of the three systems the ratios compare.
let rounds: RoundsResult | undefined;
for (const group of [["bullmqFastest"], ["jetstream", "bullmq", "sluice"]] as System[][]) {
  const contenders = new Map<System, Contender<PeerResult | SluiceResult>>();
  for (const system of group.filter((x) => settings.only.has(x))) {
    try {
      contenders.set(system, await part(system, "set-up and enqueue", openers[system]));
    } catch (e) {
      fail(system, e);
    }
  }
  if (contenders.size === 0) continue;
  log(`rounds of ${[...contenders.keys()].join(", ")}`);
  const rr = await runRounds(contenders, settings, { cores, noisyShare: NOISY_SHARE, log });
  for (const r of rr.rounds)
    for (const turn of [...Object.entries(r.e2e), ...Object.entries(r.latency)])
      noteLoad(turn[0] as System, turn[1].otherShare);
  if (group.includes("sluice")) rounds = rr;
  for (const [system, c] of contenders) {
    const error = rr.failed[system];
    if (error !== undefined) {
      fail(system, new Error(error));
      continue;
    }
    try {
      (results as Record<string, unknown>)[system] = await part(system, "finish", () => c.finish(rr.used));
    } catch (e) {
      fail(system, e);
      await c.close().catch(() => undefined);
    }
  }
}
await cleanupAll();
clearTimeout(deadline);

const ok = <T extends object>(r: T | Failed | undefined): T | undefined =>
  r && !("error" in r) ? (r as T) : undefined;
const sl = ok(results.sluice);
const bq = ok(results.bullmq);
const js = ok(results.jetstream);
const report = {
  sluice: results.sluice ?? null,
  bullmq: results.bullmq ?? null,
  bullmqFastest: results.bullmqFastest ?? null,
  jetstream: results.jetstream ?? null,
  ratios: {
    // the median of the rounds' own ratios (bench/lib/rounds.ts), from systems that finished cleanly
    e2eThroughputVsBullmqLikeForLike: sl && bq && rounds ? medianRatio(rounds, (r) => r.e2eVsBullmq) : null,
    p99LatencyVsBullmqLikeForLike: sl && bq && rounds ? medianRatio(rounds, (r) => r.p99VsBullmq) : null,
    e2eThroughputVsJetstream: sl && js && rounds ? medianRatio(rounds, (r) => r.e2eVsJetstream) : null,
    httpEnqueuePerSec: sl?.httpEnqueue.perSec ?? null,
    // absolute targets, beside the ratios: p99 ≤ 50 ms, and each service below 200 MB
    urgentP99WaitMs: sl?.urgentUnderBacklog.wait.p99Ms ?? null,
    millionBacklogServiceRssMaxMiB: sl ? serviceRssMax(sl) : null,
  },
  machine: {
    cpus: availableParallelism(),
    cpuModel: cpus()[0]?.model ?? "unknown",
    node: process.version,
    ...brokerVersions(),
  },
  rounds: rounds ?? null,
  machineLoad: { parts, otherShareMax: otherMax },
  settings: { ...settings, only: [...settings.only] },
  startedAt,
  durationS: Math.round((Date.now() - t0) / 1000),
};

process.stderr.write(`\n${render(results)}\n\n`);
if (settings.json) process.stdout.write(`${JSON.stringify(report)}\n`);
const failed = Object.values(results).some((r) => r && "error" in r);
process.exitCode = failed ? 1 : 0;

function render(r: Results): string {
  const cols: [string, System][] = [
    ["Sluice", "sluice"],
    ["BullMQ like-for-like", "bullmq"],
    ["BullMQ fastest", "bullmqFastest"],
    ["raw JetStream", "jetstream"],
  ];
  const shown = cols.filter(([, k]) => r[k] !== undefined);
  const val = (f: (x: PeerResult) => number | string | undefined) =>
    shown.map(([, k]) => {
      const v = r[k];
      return v && !("error" in v) ? f(v) : v ? "FAILED" : undefined;
    });
  const rows: Row[] = [
    ["enqueue, pipelined (msgs/s)", ...val((x) => x.enqueue.perSec)],
    [
      `end to end, full speed (tasks/s${settings.rounds > 1 ? ", median of the rounds" : ""})`,
      ...val((x) => x.e2e.perSec),
    ],
    ...(settings.rounds > 1
      ? [
          [
            "  each run",
            ...val((x) => x.e2e.runsPerSec.map((v) => v.toLocaleString("en-US")).join(" / ")),
          ] as Row,
        ]
      : []),
    [`latency p50 at ${settings.latencyRatePerSec}/s, rounds pooled (ms)`, ...val((x) => x.latency.p50Ms)],
    [`latency p99 at ${settings.latencyRatePerSec}/s, rounds pooled (ms)`, ...val((x) => x.latency.p99Ms)],
    ["latency max (ms)", ...val((x) => x.latency.maxMs)],
    [
      "CPU share used by other processes, most in a part",
      ...shown.map(([, k]) => {
        const v = otherMax[k];
        return v === undefined ? undefined : `${Math.round(v * 100)}%`;
      }),
    ],
  ];
  const slOk = ok(r.sluice);
  if (slOk) {
    rows.push(["HTTP enqueue (req/s)", slOk.httpEnqueue.perSec]);
    rows.push(["NATS request/reply enqueue (req/s)", slOk.requestEnqueue.perSec]);
    rows.push(["backlog drain (tasks/s)", slOk.backlogDrain.perSec]);
    const lt = slOk.latency.stages;
    rows.push([
      `latency at ${settings.latencyRatePerSec}/s in legs, p99 (ms)`,
      `dispatched ${lt.toDispatched.p99Ms} / started ${lt.dispatchedToStarted.p99Ms} / stored ${lt.startedToStored.p99Ms} / seen ${lt.storedToSeen.p99Ms}`,
    ]);
    const cpu = slOk.latency.cpuMicrosPerTask;
    rows.push([
      `  CPU per task at ${settings.latencyRatePerSec}/s (µs)`,
      Object.entries(cpu)
        .map(([k, v]) => `${k} ${v}`)
        .join(" / "),
    ]);
    for (const [svc, u] of Object.entries(slOk.services)) {
      rows.push([`RSS ${svc} max / avg (MiB)`, `${u.rssMaxMiB} / ${u.rssAvgMiB}`]);
    }
    const ub = slOk.urgentUnderBacklog;
    rows.push([
      `urgent wait under ${ub.bulk.toLocaleString("en-US")} bulk, p50 / p99 / max (ms)`,
      `${ub.wait.p50Ms} / ${ub.wait.p99Ms} / ${ub.wait.maxMs} (${ub.urgentSent} at ${ub.urgentRatePerSec}/s)`,
    ]);
    const { toDispatched: td, dispatchedToStarted: ds } = ub.stages;
    rows.push(["  of which until dispatched, p50 / p99 (ms)", `${td.p50Ms} / ${td.p99Ms}`]);
    rows.push(["  of which dispatched to started, p50 / p99 (ms)", `${ds.p50Ms} / ${ds.p99Ms}`]);
    rows.push(["  bulk drain meanwhile (tasks/s)", ub.bulkDrain.perSec]);
    const mb = slOk.millionBacklog;
    const backlog = mb.published.toLocaleString("en-US");
    rows.push([
      `backlog of ${backlog}: publish / drain (tasks/s)`,
      `${mb.publishRatePerSec.toLocaleString("en-US")} / ${mb.drainRatePerSec.toLocaleString("en-US")}`,
    ]);
    for (const [svc, u] of Object.entries(mb.rss)) {
      rows.push([
        `  RSS ${svc} max / avg (MiB), ${mb.sampledSeconds} s of drain`,
        `${u.rssMaxMiB} / ${u.rssAvgMiB}`,
      ]);
    }
  }
  let out = table(["measure", ...shown.map(([n]) => n)], rows);
  for (const [name, k] of shown) {
    const v = r[k];
    if (v && "error" in v) out += `\n${name} FAILED: ${v.error}`;
  }
  for (const rd of rounds?.rounds ?? []) {
    const t = rd.ratios;
    const used = rounds!.used.includes(rd.round) ? "" : " (noisy, left out)";
    out += `\nround ${rd.round} (${rd.order.join(", ")})${used}: e2e vs BullMQ ${t.e2eVsBullmq ?? "–"}, p99 vs BullMQ ${t.p99VsBullmq ?? "–"}, e2e vs JetStream ${t.e2eVsJetstream ?? "–"}`;
  }
  const rt = report.ratios;
  out += `\nratios (median of the rounds): e2e vs BullMQ like-for-like ${rt.e2eThroughputVsBullmqLikeForLike ?? "–"}, p99 vs BullMQ like-for-like ${rt.p99LatencyVsBullmqLikeForLike ?? "–"}, e2e vs raw JetStream ${rt.e2eThroughputVsJetstream ?? "–"}`;
  out += `\ntargets: urgent p99 wait under a bulk backlog ${rt.urgentP99WaitMs ?? "–"} ms (≤ 50), largest service RSS with the backlog ${rt.millionBacklogServiceRssMaxMiB ?? "–"} MiB (< 200 MB = 190.7 MiB)`;
  return out;
}

/** The largest RSS of the three services (not the nats-server) during the large backlog's drain, MiB. */
function serviceRssMax(r: SluiceResult): number | null {
  const { enqueue, dispatcher, worker } = r.millionBacklog.rss;
  const all = [enqueue, dispatcher, worker].filter((u) => u !== undefined).map((u) => u.rssMaxMiB);
  return all.length > 0 ? Math.max(...all) : null;
}
