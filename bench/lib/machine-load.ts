import { readFileSync } from "node:fs";
import { loadavg } from "node:os";
import { round } from "./stats.ts";

/**
 * How much of the machine the bench had. On a 2-core box anything else running (a test suite, another
 * benchmark) moves every figure, so each part reports the CPU the whole machine burned beside the CPU
 * the bench and its children burned; the difference is someone else's.
 */

/** CPU seconds at one moment: the whole machine and this process tree. */
type Snapshot = { at: number; machineBusyS: number; stealS: number; benchS: number; load1m: number };

/** What else ran during a part. */
export type MachineLoad = {
  wallS: number;
  machineBusyCpuS: number;
  benchCpuS: number;
  /** CPU seconds used by processes the bench did not start. */
  otherCpuS: number;
  /** Share of the machine's capacity those processes used over the part. */
  otherShare: number;
  /** Share of the machine's capacity the hypervisor took (steal time). */
  stealShare: number;
  loadAvg1mAtStart: number;
};

const TICKS_PER_S = 100;

function snapshot(): Snapshot {
  const cpu = readFileSync("/proc/stat", "utf8").split("\n", 1)[0]!.trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal. Only user+nice+system compare with the processes'
  // utime+stime: interrupt time (loopback traffic is softirq) is charged to no process.
  const busy = cpu[0]! + cpu[1]! + cpu[2]!;
  const self = readFileSync("/proc/self/stat", "utf8");
  const f = self.slice(self.lastIndexOf(")") + 2).split(" ");
  // utime stime cutime cstime: children count once they have exited and been waited for
  const mine = Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]);
  return {
    at: Date.now(),
    machineBusyS: busy / TICKS_PER_S,
    stealS: cpu[7]! / TICKS_PER_S,
    benchS: mine / TICKS_PER_S,
    load1m: loadavg()[0]!,
  };
}

/** Start watching; `stop()` (call after every child of the part has exited) returns the load. */
export function watchMachine(cores: number): { stop(): MachineLoad } {
  const a = snapshot();
  return {
    stop() {
      const b = snapshot();
      const wallS = (b.at - a.at) / 1000;
      const machine = b.machineBusyS - a.machineBusyS;
      const bench = b.benchS - a.benchS;
      const other = Math.max(0, machine - bench);
      return {
        wallS: round(wallS, 1),
        machineBusyCpuS: round(machine, 1),
        benchCpuS: round(bench, 1),
        otherCpuS: round(other, 1),
        otherShare: wallS > 0 ? round(other / (wallS * cores), 2) : 0,
        stealShare: wallS > 0 ? round((b.stealS - a.stealS) / (wallS * cores), 2) : 0,
        loadAvg1mAtStart: round(a.load1m, 2),
      };
    },
  };
}

/**
 * Wait (at most `maxWaitMs`) until the rest of the machine uses under `maxShare` of it over one second,
 * so a part does not start while something else is busy. Returns the share last seen.
 */
export async function waitQuiet(maxWaitMs: number, cores: number, maxShare = 0.1): Promise<number> {
  const deadline = Date.now() + maxWaitMs;
  for (;;) {
    const w = watchMachine(cores);
    await new Promise((r) => setTimeout(r, 1000));
    const share = w.stop().otherShare;
    if (share < maxShare || Date.now() >= deadline) return share;
  }
}
