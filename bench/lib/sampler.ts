import { readFileSync } from "node:fs";
import { round } from "./stats.ts";

/**
 * Resident memory and CPU time of processes, read from /proc while a phase runs. RSS is VmRSS from
 * /proc/<pid>/status; CPU is utime + stime from /proc/<pid>/stat (clock ticks, 100 per second on Linux).
 */

/** What one process used over the sampled span. */
export type ProcUsage = { rssMaxMiB: number; rssAvgMiB: number; rssLastMiB: number; cpuSeconds: number };

const TICKS_PER_S = 100;

/** VmRSS of `pid` in KiB, or undefined if the process is gone (or this is not Linux). */
export function rssKiB(pid: number): number | undefined {
  try {
    const m = /VmRSS:\s+(\d+)\s+kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

/** utime + stime of `pid` in seconds, or undefined. */
export function cpuSeconds(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // the command name may contain spaces; fields after its closing paren are fixed
    const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return (Number(f[11]) + Number(f[12])) / TICKS_PER_S;
  } catch {
    return undefined;
  }
}

/**
 * A running sampler: `add` starts sampling one more process, `stop` returns each one's usage. Adding a
 * name again (a restarted service) points it at the new process and keeps its figures: RSS samples of
 * both count, and CPU is the sum (the stopped process's last sample, so up to one interval of it is lost).
 * After `stop`, `add` does nothing.
 */
export type Sampler = { add(name: string, pid: number): void; stop(): Record<string, ProcUsage> };

type Acc = {
  max: number;
  sum: number;
  n: number;
  last: number;
  cpu0: number;
  cpuLast: number;
  cpuDone: number;
};

/** Samples named processes every `intervalMs` until `stop()`. */
export function sampleProcesses(initial: Record<string, number>, intervalMs = 250): Sampler {
  const pids: Record<string, number> = {};
  const acc = new Map<string, Acc>();
  const add = (name: string, pid: number) => {
    const cpu0 = cpuSeconds(pid) ?? 0;
    const prev = acc.get(name);
    if (prev) prev.cpuDone += (cpuSeconds(pids[name]!) ?? prev.cpuLast) - prev.cpu0;
    pids[name] = pid;
    if (prev) {
      prev.cpu0 = cpu0;
      prev.cpuLast = cpu0;
    } else acc.set(name, { max: 0, sum: 0, n: 0, last: 0, cpu0, cpuLast: cpu0, cpuDone: 0 });
  };
  for (const [name, pid] of Object.entries(initial)) add(name, pid);
  const tick = () => {
    for (const [name, pid] of Object.entries(pids)) {
      const kib = rssKiB(pid);
      const a = acc.get(name)!;
      if (kib === undefined) continue;
      a.max = Math.max(a.max, kib);
      a.sum += kib;
      a.n++;
      a.last = kib;
      a.cpuLast = cpuSeconds(pid) ?? a.cpuLast;
    }
  };
  tick();
  const timer = setInterval(tick, intervalMs);
  timer.unref();
  let stopped = false;
  return {
    add(name, pid) {
      if (stopped) return;
      add(name, pid);
      tick();
    },
    stop() {
      stopped = true;
      clearInterval(timer);
      tick();
      const out: Record<string, ProcUsage> = {};
      for (const [name, pid] of Object.entries(pids)) {
        const a = acc.get(name)!;
        out[name] = {
          rssMaxMiB: round(a.max / 1024, 1),
          rssAvgMiB: round(a.n ? a.sum / a.n / 1024 : 0, 1),
          rssLastMiB: round(a.last / 1024, 1),
          cpuSeconds: round(a.cpuDone + (cpuSeconds(pid) ?? a.cpuLast) - a.cpu0, 2),
        };
      }
      return out;
    },
  };
}
