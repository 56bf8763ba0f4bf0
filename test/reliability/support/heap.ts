import { setTimeout as sleep } from "node:timers/promises";

/** V8 heap figures of one process over a stretch of time, MiB. */
export type HeapFigures = {
  /** The lowest heap in use seen: the low points follow garbage collections, so they track the live heap. */
  floorMb: number;
  /** The heap V8 has reserved (heap total), at the last reading: most of a Node process's RSS. */
  totalMb: number;
};

/** Heap in use and heap total from a Prometheus /metrics URL (prom-client's default metrics), MiB. */
export async function readHeap(metricsUrl: string): Promise<{ usedMb: number; totalMb: number } | undefined> {
  const text = await fetch(metricsUrl, { signal: AbortSignal.timeout(2_000) }).then(
    (r) => r.text(),
    () => "",
  );
  const get = (name: string) => {
    const m = new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)`, "m").exec(text);
    return m ? Math.round(Number(m[1]) / 104_857.6) / 10 : undefined;
  };
  const usedMb = get("nodejs_heap_size_used_bytes");
  const totalMb = get("nodejs_heap_size_total_bytes");
  return usedMb === undefined || totalMb === undefined ? undefined : { usedMb, totalMb };
}

/** Reads the heap of several processes every 250 ms; `take()` hands over the figures since the last call. */
export class HeapWatch {
  readonly #urls: Record<string, string>;
  #figures: Record<string, HeapFigures> = {};
  #running = true;
  readonly #loop: Promise<void>;

  /** `urls`: process name → its /metrics URL. */
  constructor(urls: Record<string, string>) {
    this.#urls = urls;
    this.#loop = this.#run();
  }

  /** The figures since the last call, per process (read now for one not read since); then start over. */
  async take(): Promise<Record<string, HeapFigures>> {
    await Promise.all(
      Object.keys(this.#urls).map((name) => (this.#figures[name] ? undefined : this.#read(name))),
    );
    const f = this.#figures;
    this.#figures = {};
    return f;
  }

  /** Stop reading. */
  async stop(): Promise<void> {
    this.#running = false;
    await this.#loop;
  }

  async #run(): Promise<void> {
    while (this.#running) {
      await Promise.all(Object.keys(this.#urls).map((name) => this.#read(name)));
      await sleep(250);
    }
  }

  async #read(name: string): Promise<void> {
    const h = await readHeap(this.#urls[name]!);
    if (!h) return;
    const f = this.#figures[name];
    this.#figures[name] = { floorMb: Math.min(f?.floorMb ?? h.usedMb, h.usedMb), totalMb: h.totalMb };
  }
}
