import type { Rate } from "../suites/peer.ts";
import { waitIdle, waitQuiet, watchMachine } from "./machine-load.ts";
import type { Settings, System } from "./settings.ts";
import { ratio, round } from "./stats.ts";

/**
 * The measures the ratios are made of (end to end at full speed, latency at a steady rate) run in
 * rounds. Every system is set up first and stays up, idle, while the others take their turns; in each
 * round every system runs end to end once, then every system runs its latency once, in an order that
 * rotates from round to round. This machine's speed drifts by up to 2× over minutes with nothing else
 * running (docs/performance.md), and one system measured after another folds that drift into the
 * ratios. Within a round the systems are measured seconds apart, so each round gives its own ratios and
 * the bench reports their median. Each turn starts once the machine is idle (at most 5 s later), so no
 * system pays for what the one before it still does after its turn.
 */

/** A system set up for the rounds. Each call is one turn; it keeps its own figures for `finish`. */
export type Contender<R> = {
  e2eRun(round: number): Promise<Rate>;
  latencyRun(round: number): Promise<{ p50Ms: number; p99Ms: number }>;
  /** The measures after the rounds, from the rounds named in `used`; stops everything it started. */
  finish(used: readonly number[]): Promise<R>;
  /** Stops everything it started (after a failure); safe to call after `finish`. */
  close(): Promise<void>;
};

/** One system's turn in a round: a figure, or the error that took it out of the rounds. */
type Turn = {
  perSec?: number;
  p50Ms?: number;
  p99Ms?: number;
  /** Share of the machine other processes used during the turn. */
  otherShare: number;
  /** How long the turn waited for the machine to go idle, and the whole machine's busy share then. */
  idleWaitMs: number;
  busyShareAtStart: number;
  error?: string;
};

/** The longest a turn waits for the previous turn's system to go idle, and what counts as idle. */
const IDLE_WAIT_MS = 5_000;
const IDLE_SHARE = 0.15;

/** One round: each system's two turns, and the ratios of that round alone. */
export type Round = {
  round: number;
  order: System[];
  e2e: Partial<Record<System, Turn>>;
  latency: Partial<Record<System, Turn>>;
  ratios: { e2eVsBullmq: number | null; p99VsBullmq: number | null; e2eVsJetstream: number | null };
  /** Some turn had other processes take more than `noisyShare` of the machine. */
  noisy: boolean;
};

export type RoundsResult = {
  rounds: Round[];
  /** The rounds every figure and ratio is taken from: the quiet ones, or all when none was quiet. */
  used: number[];
  /** Systems that failed during the rounds, with the error. */
  failed: Partial<Record<System, string>>;
};

/**
 * Run `s.rounds` rounds over `contenders` (in their insertion order, rotated by one each round). A
 * noisy round is run again, up to `s.retries` extra rounds in all. A system whose turn throws is
 * closed and leaves the rounds; the others go on.
 */
export async function runRounds(
  contenders: Map<System, Contender<unknown>>,
  s: Settings,
  opts: { cores: number; noisyShare: number; log: (m: string) => void },
): Promise<RoundsResult> {
  const { cores, noisyShare, log } = opts;
  const rounds: Round[] = [];
  const failed: Partial<Record<System, string>> = {};
  const systems = [...contenders.keys()];
  const quiet = () => rounds.filter((r) => !r.noisy).length;
  for (let r = 1; quiet() < s.rounds && r <= s.rounds + s.retries; r++) {
    if (s.waitQuietMs > 0) await waitQuiet(s.waitQuietMs, cores);
    const k = (r - 1) % systems.length;
    const order = [...systems.slice(k), ...systems.slice(0, k)].filter((x) => !(x in failed));
    const e2e: Round["e2e"] = {};
    const latency: Round["latency"] = {};
    const turn = async (
      system: System,
      into: Partial<Record<System, Turn>>,
      what: string,
      run: (c: Contender<unknown>) => Promise<Partial<Turn>>,
    ) => {
      if (system in failed) return;
      const c = contenders.get(system)!;
      const idle = await waitIdle(IDLE_WAIT_MS, cores, IDLE_SHARE);
      if (idle.busyShare >= IDLE_SHARE)
        log(
          `round ${r}: the machine still ${Math.round(idle.busyShare * 100)}% busy before ${system} ${what}`,
        );
      const settled = { idleWaitMs: idle.waitedMs, busyShareAtStart: idle.busyShare };
      const watch = watchMachine(cores);
      try {
        const figures = await run(c);
        into[system] = { ...figures, otherShare: watch.stop().otherShare, ...settled };
        log(`round ${r}: ${system} ${what} ${JSON.stringify(figures)}`);
      } catch (e) {
        const error = e instanceof Error ? e.message : String(e);
        into[system] = { error, otherShare: watch.stop().otherShare, ...settled };
        failed[system] = error;
        log(`round ${r}: ${system} FAILED: ${error}`);
        await c.close().catch(() => undefined);
      }
    };
    for (const system of order)
      await turn(system, e2e, "end to end", async (c) => ({ perSec: (await c.e2eRun(r)).perSec }));
    for (const system of order)
      await turn(system, latency, "latency", async (c) => {
        const l = await c.latencyRun(r);
        return { p50Ms: l.p50Ms, p99Ms: l.p99Ms };
      });
    const turns = [...Object.values(e2e), ...Object.values(latency)];
    const noisy = turns.some((t) => t.otherShare > noisyShare);
    if (noisy) log(`WARNING: other processes took over ${noisyShare * 100}% of the machine in round ${r}`);
    rounds.push({
      round: r,
      order,
      e2e,
      latency,
      ratios: {
        e2eVsBullmq: ratio(e2e.sluice?.perSec, e2e.bullmq?.perSec),
        p99VsBullmq: ratio(latency.sluice?.p99Ms, latency.bullmq?.p99Ms),
        e2eVsJetstream: ratio(e2e.sluice?.perSec, e2e.jetstream?.perSec),
      },
      noisy,
    });
  }
  const quietRounds = rounds.filter((r) => !r.noisy);
  const used = (quietRounds.length > 0 ? quietRounds : rounds).map((r) => r.round);
  return { rounds, used, failed };
}

/** The runs a contender kept, by round, of the `used` rounds; throws when none was measured. */
export function usedRuns<T>(byRound: ReadonlyMap<number, T>, used: readonly number[]): T[] {
  const runs = used.map((r) => byRound.get(r)).filter((r) => r !== undefined);
  if (runs.length === 0) throw new Error("no round was measured");
  return runs;
}

/** The median of the used rounds' values of one ratio (the mean of the middle two for an even count). */
export function medianRatio(
  result: RoundsResult,
  pick: (r: Round["ratios"]) => number | null,
): number | null {
  const v = result.rounds
    .filter((r) => result.used.includes(r.round))
    .map((r) => pick(r.ratios))
    .filter((x): x is number => x !== null)
    .sort((a, b) => a - b);
  if (v.length === 0) return null;
  const m = v.length / 2;
  return round(v.length % 2 ? v[Math.floor(m)]! : (v[m - 1]! + v[m]!) / 2, 2);
}
