import { readFileSync } from "node:fs";

/** Resident set size of a process in MiB (from /proc), or undefined once it is gone. */
export function rssMb(pid: number | undefined): number | undefined {
  if (!pid) return undefined;
  try {
    const m = /VmRSS:\s+(\d+)\s+kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return m ? Number(m[1]) / 1024 : undefined;
  } catch {
    return undefined;
  }
}

/** One sampled process: a label (role and instance) and its pid. */
export type Sampled = { label: string; pid: number | undefined };

/** RSS samples of one process over a run. */
export type RssSeries = { label: string; pid: number; samples: { atMs: number; mb: number }[] };

/**
 * Samples the RSS of a changing set of processes every `intervalMs`: `targets()` is asked at every tick,
 * so processes restarted after a kill are picked up as new series.
 */
export class RssSampler {
  readonly #series = new Map<string, RssSeries>();
  readonly #targets: () => Sampled[];
  readonly #t0 = Date.now();
  #timer: NodeJS.Timeout | undefined;

  constructor(targets: () => Sampled[], intervalMs: number) {
    this.#targets = targets;
    this.sample();
    this.#timer = setInterval(() => this.sample(), intervalMs);
    this.#timer.unref();
  }

  /** Ms since sampling started: the time base of every sample. */
  now(): number {
    return Date.now() - this.#t0;
  }

  /** Take one sample of every target now. */
  sample(): void {
    const at = Date.now() - this.#t0;
    for (const t of this.#targets()) {
      const mb = rssMb(t.pid);
      if (mb === undefined || !t.pid) continue;
      const key = `${t.label}#${t.pid}`;
      let s = this.#series.get(key);
      if (!s) {
        s = { label: t.label, pid: t.pid, samples: [] };
        this.#series.set(key, s);
      }
      s.samples.push({ atMs: at, mb });
    }
  }

  /** Stop sampling; returns every series. */
  stop(): RssSeries[] {
    clearInterval(this.#timer);
    return this.series();
  }

  /** Every series so far. */
  series(): RssSeries[] {
    return [...this.#series.values()];
  }
}

/** Largest sample of a series, MiB. */
export function peakMb(s: RssSeries): number {
  return Math.max(...s.samples.map((x) => x.mb));
}

/** Median of the samples taken in [fromMs, toMs), MiB (undefined when there are none). */
export function medianMb(s: RssSeries, fromMs: number, toMs: number): number | undefined {
  const v = s.samples
    .filter((x) => x.atMs >= fromMs && x.atMs < toMs)
    .map((x) => x.mb)
    .sort((a, b) => a - b);
  return v.length === 0 ? undefined : v[Math.floor(v.length / 2)];
}
