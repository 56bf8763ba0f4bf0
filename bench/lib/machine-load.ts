import { readdirSync, readFileSync } from "node:fs";
import { loadavg } from "node:os";
import { round } from "./stats.ts";

/**
 * How much of the machine the bench had. On a 2-core box anything else running (a test suite, another
 * benchmark) moves every figure, so each part reports the CPU the whole machine burned beside the CPU
 * the bench and its children burned; the difference is someone else's. Children that live across parts
 * (the systems stay up through the rounds) are read from /proc while running; exited ones are in our
 * cutime/cstime.
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
  /** Share of the machine's capacity used by anyone, the bench included. */
  busyShare: number;
  /** Share of the machine's capacity the hypervisor took (steal time). */
  stealShare: number;
  loadAvg1mAtStart: number;
};

const TICKS_PER_S = 100;

/** The fields of /proc/<pid>/stat after the command name: state is [0], ppid [1], utime [11]. */
function statFields(pid: string): string[] | undefined {
  try {
    const raw = readFileSync(`/proc/${pid}/stat`, "utf8");
    return raw.slice(raw.lastIndexOf(")") + 2).split(" ");
  } catch {
    return undefined; // exited meanwhile
  }
}

/** utime + stime + cutime + cstime, in ticks. */
const ticks = (f: string[]) => Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]);

/** CPU ticks of this process, its reaped children, and every live descendant. */
function treeTicks(): number {
  const self = String(process.pid);
  const byPid = new Map<string, string[]>();
  for (const pid of readdirSync("/proc")) {
    if (!/^\d+$/.test(pid)) continue;
    const f = statFields(pid);
    if (f) byPid.set(pid, f);
  }
  const children = new Map<string, string[]>();
  for (const [pid, f] of byPid) {
    const kids = children.get(f[1]!) ?? [];
    kids.push(pid);
    children.set(f[1]!, kids);
  }
  let total = 0;
  const stack = [self];
  while (stack.length > 0) {
    const pid = stack.pop()!;
    const f = pid === self ? statFields(self) : byPid.get(pid);
    if (f) total += ticks(f);
    stack.push(...(children.get(pid) ?? []));
  }
  return total;
}

function snapshot(): Snapshot {
  const cpu = readFileSync("/proc/stat", "utf8").split("\n", 1)[0]!.trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal. Only user+nice+system compare with the processes'
  // utime+stime: interrupt time (loopback traffic is softirq) is charged to no process.
  const busy = cpu[0]! + cpu[1]! + cpu[2]!;
  return {
    at: Date.now(),
    machineBusyS: busy / TICKS_PER_S,
    stealS: cpu[7]! / TICKS_PER_S,
    benchS: treeTicks() / TICKS_PER_S,
    load1m: loadavg()[0]!,
  };
}

/** Start watching; `stop()` returns the load. */
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
        busyShare: wallS > 0 ? round(machine / (wallS * cores), 2) : 0,
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
  return (await waitUnder("otherShare", maxShare, 1000, maxWaitMs, cores)).share;
}

/**
 * Wait (at most `maxWaitMs`) until the whole machine, the bench's own processes included, uses under
 * `maxShare` of it over 250 ms. The systems stay up through the rounds, and one's broker can still be
 * busy after its turn (Redis rewriting its AOF, nats-server collecting garbage, a worker finishing up);
 * a turn that starts then pays for another system's work. Returns how long it waited and the share
 * last seen.
 */
export async function waitIdle(
  maxWaitMs: number,
  cores: number,
  maxShare = 0.15,
): Promise<{ waitedMs: number; busyShare: number }> {
  const { waitedMs, share } = await waitUnder("busyShare", maxShare, 250, maxWaitMs, cores);
  return { waitedMs, busyShare: share };
}

/** Watch the machine `sampleMs` at a time until `which` share is under `maxShare` or `maxWaitMs` passed. */
async function waitUnder(
  which: "otherShare" | "busyShare",
  maxShare: number,
  sampleMs: number,
  maxWaitMs: number,
  cores: number,
): Promise<{ waitedMs: number; share: number }> {
  const start = Date.now();
  for (;;) {
    const w = watchMachine(cores);
    await new Promise((r) => setTimeout(r, sampleMs));
    const share = w.stop()[which];
    if (share < maxShare || Date.now() - start >= maxWaitMs) return { waitedMs: Date.now() - start, share };
  }
}
