/**
 * Soak run: steady load with periodic SIGKILLs for as long as you like, RSS of every process sampled
 * and printed. Exits 1 when a task is lost, reruns unexplained, or a process grows past the limit.
 *
 *   npx node test/reliability/soak.ts --duration 10m [--rate 100] [--kill-every 20s-40s]
 *     [--sample 5s] [--growth-limit 32] [--seed 1]
 *
 * (`npx node`: the repo's Node 24, which runs TypeScript; the system node may be older.)
 */
import { parseArgs } from "node:util";
import { parseDurationMs, runSoak } from "./scenarios/soak.ts";

const { values } = parseArgs({
  options: {
    duration: { type: "string", default: "10m" },
    rate: { type: "string", default: "100" },
    "kill-every": { type: "string", default: "20s-40s" },
    sample: { type: "string", default: "5s" },
    "growth-limit": { type: "string", default: "32" },
    seed: { type: "string", default: "1" },
  },
});
const [killMin, killMax] = values["kill-every"].split("-").map(parseDurationMs);
const report = await runSoak({
  durationMs: parseDurationMs(values.duration),
  ratePerS: Number(values.rate),
  killEveryMs: [killMin!, killMax ?? killMin!],
  sampleEveryMs: parseDurationMs(values.sample),
  growthLimitMb: Number(values["growth-limit"]),
  seed: Number(values.seed),
});
const { rss: _rss, ...summary } = report;
console.log(JSON.stringify(summary, null, 1));
console.log(report.problems.length === 0 ? "soak passed" : `soak FAILED:\n${report.problems.join("\n")}`);
process.exit(report.problems.length === 0 ? 0 : 1);
