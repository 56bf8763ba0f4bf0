/**
 * Bench settings from the command line. Every system gets the same counts, rate and payload; `--quick`
 * shrinks them for a ~1 minute run while developing.
 */

/** The systems the bench can measure, in the order they run. */
export const SYSTEMS = ["jetstream", "bullmq", "bullmqFastest", "sluice"] as const;
export type System = (typeof SYSTEMS)[number];

/** Parsed settings; counts are messages, durations ms. */
export type Settings = {
  json: boolean;
  quick: boolean;
  only: ReadonlySet<System>;
  /** Messages in the enqueue measure (after the warm-up). */
  enqueueCount: number;
  /** Tasks in one end-to-end throughput run (after the warm-up). */
  e2eCount: number;
  /** Rounds of the end-to-end and latency measures (bench/lib/rounds.ts); medians are reported. */
  rounds: number;
  /** Messages sent (and consumed) before any measure, not counted. */
  warmupCount: number;
  /** Steady rate of the latency measure. */
  latencyRatePerSec: number;
  /** Length of one round's latency run, of which the first `latencyWarmupMs` are not counted. */
  latencyDurationMs: number;
  latencyWarmupMs: number;
  /** HTTP enqueue load: keep-alive connections and duration. */
  httpConnections: number;
  httpDurationS: number;
  /** Sluice: `bulk` tasks queued with no worker before the urgent-wait measure. */
  urgentBulkCount: number;
  /** Sluice: steady rate of the urgent tasks sent while that bulk backlog drains. */
  urgentRatePerSec: number;
  /** Sluice: tasks queued with no worker for the memory measure (most of them are purged unrun). */
  backlogCount: number;
  /** Sluice: how long the drain of that backlog is sampled, at most. */
  backlogSampleMs: number;
  /** Before each part and round, wait up to this long for the rest of the machine to go quiet (0: don't). */
  waitQuietMs: number;
  /** Extra rounds run at most to replace rounds in which other processes took over 10% of the machine. */
  retries: number;
  /** The whole run is aborted (and cleaned up) after this long. */
  deadlineMs: number;
};

const HELP = `usage: node bench/main.ts [--quick] [--json] [--only=jetstream,bullmq,bullmqFastest,sluice]
                          [--e2e=N] [--rounds=N] [--enqueue=N] [--rate=N]
                          [--latency-seconds=N] [--wait-quiet=S] [--retries=N]
  --quick        smaller counts, one round, ~2 minutes
  --json         print one JSON object on stdout (logs and the table go to stderr)
  --rounds       rounds of end to end and latency, every system in turn (default 3)
  --wait-quiet   before each part and round, wait up to S seconds for other processes to stop using the CPU
  --retries      run up to N extra rounds to replace rounds in which other processes took over 10% of the CPU`;

/** Parse argv (without node and script). Throws with the usage text on anything unknown. */
export function parseArgs(argv: readonly string[]): Settings {
  const flags = new Map<string, string>();
  for (const a of argv) {
    const m = /^--([a-z0-9-]+)(?:=(.*))?$/.exec(a);
    if (!m) throw new Error(`unexpected argument ${a}\n${HELP}`);
    flags.set(m[1]!, m[2] ?? "true");
  }
  const known = new Set([
    "quick",
    "json",
    "only",
    "e2e",
    "rounds",
    "enqueue",
    "rate",
    "latency-seconds",
    "wait-quiet",
    "retries",
    "help",
  ]);
  for (const k of flags.keys()) if (!known.has(k)) throw new Error(`unknown option --${k}\n${HELP}`);
  if (flags.has("help")) throw new Error(HELP);
  const quick = flags.get("quick") === "true";
  const int = (name: string, dflt: number) => {
    const v = flags.get(name);
    if (v === undefined) return dflt;
    const n = Number(v);
    if (!Number.isInteger(n) || n <= 0) throw new Error(`--${name} must be a positive integer`);
    return n;
  };
  const onlyRaw = flags.get("only");
  const only = new Set<System>();
  for (const s of onlyRaw ? onlyRaw.split(",") : SYSTEMS) {
    if (!(SYSTEMS as readonly string[]).includes(s)) throw new Error(`unknown system ${s}\n${HELP}`);
    only.add(s as System);
  }
  const latencyDurationMs = int("latency-seconds", quick ? 6 : 7) * 1000;
  const waitQuietMs = (flags.has("wait-quiet") ? int("wait-quiet", 1) : 0) * 1000;
  const retries = flags.has("retries") ? int("retries", 1) : 0;
  const defaultRounds = quick ? 1 : 3;
  const rounds = int("rounds", defaultRounds);
  // an extra round (all four systems' turns) takes ~55 s in a full run, ~35 s with --quick: budget more
  const roundMs = quick ? 60_000 : 90_000;
  return Object.freeze({
    json: flags.get("json") === "true",
    quick,
    only,
    enqueueCount: int("enqueue", quick ? 20_000 : 100_000),
    e2eCount: int("e2e", quick ? 10_000 : 50_000),
    rounds,
    warmupCount: quick ? 2_000 : 5_000,
    latencyRatePerSec: int("rate", 2_000),
    latencyDurationMs,
    latencyWarmupMs: Math.min(2_000, Math.floor(latencyDurationMs / 3)),
    httpConnections: 64,
    httpDurationS: quick ? 5 : 10,
    urgentBulkCount: quick ? 20_000 : 100_000,
    urgentRatePerSec: 50,
    backlogCount: quick ? 100_000 : 1_000_000,
    backlogSampleMs: quick ? 10_000 : 20_000,
    waitQuietMs,
    retries,
    // each part (two per system) and each round may also wait for a quiet machine
    deadlineMs:
      (quick ? 4 * 60_000 : 12 * 60_000) +
      (Math.max(0, rounds - defaultRounds) + retries) * roundMs +
      (2 * SYSTEMS.length + rounds + retries) * waitQuietMs,
  });
}
