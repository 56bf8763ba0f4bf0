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
 * `pause` and `resume` leave spans out (while other systems take their turn in the bench's rounds): no
 * RSS samples and no CPU are counted in between. After `stop`, `add` does nothing.
 */
export type Sampler = {
  add(name: string, pid: number): void;
  pause(): void;
  resume(): void;
  /** Resume, run `fn`, and pause again however it ends: one turn's span. */
  during<T>(fn: () => Promise<T>): Promise<T>;
  stop(): Record<string, ProcUsage>;
};

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
  // set while sampling; unset while paused and after stop
  let timer: NodeJS.Timeout | undefined;
  const add = (name: string, pid: number) => {
    const cpu0 = cpuSeconds(pid) ?? 0;
    const prev = acc.get(name);
    // while paused, the replaced process's CPU since the pause does not count
    const last = timer ? (cpuSeconds(pids[name]!) ?? prev?.cpuLast) : prev?.cpuLast;
    if (prev) prev.cpuDone += last! - prev.cpu0;
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
  timer = setInterval(tick, intervalMs);
  timer.unref();
  let stopped = false;
  const pause = () => {
    if (!timer) return;
    clearInterval(timer);
    timer = undefined;
    tick();
    // bank the CPU so far; it restarts from the process's figure at `resume`
    for (const a of acc.values()) {
      a.cpuDone += a.cpuLast - a.cpu0;
      a.cpu0 = a.cpuLast;
    }
  };
  const sampler: Sampler = {
    add(name, pid) {
      if (stopped) return;
      add(name, pid);
      if (timer) tick();
    },
    pause,
    async during(fn) {
      sampler.resume();
      try {
        return await fn();
      } finally {
        pause();
      }
    },
    resume() {
      if (stopped || timer) return;
      for (const [name, pid] of Object.entries(pids)) {
        const a = acc.get(name)!;
        const now = cpuSeconds(pid);
        if (now !== undefined) a.cpu0 = a.cpuLast = now;
      }
      tick();
      timer = setInterval(tick, intervalMs);
      timer.unref();
    },
    stop() {
      pause();
      stopped = true;
      const out: Record<string, ProcUsage> = {};
      for (const name of Object.keys(pids)) {
        const a = acc.get(name)!;
        out[name] = {
          rssMaxMiB: round(a.max / 1024, 1),
          rssAvgMiB: round(a.n ? a.sum / a.n / 1024 : 0, 1),
          rssLastMiB: round(a.last / 1024, 1),
          cpuSeconds: round(a.cpuDone, 2),
        };
      }
      return out;
    },
  };
  return sampler;
}
