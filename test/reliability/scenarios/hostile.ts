import { setTimeout as sleep } from "node:timers/promises";
import { jetstream } from "@nats-io/jetstream";
import { type HeapFigures, HeapWatch } from "../support/heap.ts";
import { HTTP_CATEGORIES, type HttpCategory, httpCase, sendHttp } from "../support/hostile-http.ts";
import { directCase, natsRequestCase, sendNats } from "../support/hostile-nats.ts";
import { runLoad } from "../support/load.ts";
import { createRng, type Rng } from "../support/rng.ts";
import { RssSampler, type RssSeries } from "../support/rss.ts";
import { RELIABLE_TYPE, type StreamCounts, System } from "../support/system.ts";

/** Options of {@link runHostileScenario}. */
export type HostileOptions = {
  /** Hostile requests and messages in all (10% of them warm the processes up before the RSS baseline). */
  cases: number;
  seed: number;
  /** Requests in flight at once per lane: fast HTTP, slow HTTP, NATS. */
  concurrency: { http: number; slow: number; nats: number };
  verbose?: boolean;
};

/** RSS of one process across the run, MiB. */
export type RssSummary = { baseline: number; peak: number; after: number };

/** What a hostile run measured and found. */
export type HostileReport = {
  seed: number;
  cases: number;
  /** Per `transport/category`: how many, and their answers (`closed` = connection closed by the server). */
  byCategory: Record<string, { count: number; answers: Record<string, number> }>;
  failures: string[];
  failureCount: number;
  /** Direct publishes stored in the tasks stream, and invalid messages the dispatcher terminated. */
  directPublished: number;
  terminated: number;
  before: StreamCounts & { signals: number; schedules: number };
  after: StreamCounts & { signals: number; schedules: number };
  rss: Record<string, RssSummary>;
  /**
   * After each of the nine rounds that follow the warm-up: RSS of each process, and its V8 heap (the
   * lowest heap in use seen during the round, which tracks the live heap, and the heap V8 has
   * reserved), MiB. RSS moves with V8 sizing its heap; a leak in the heap raises the floor, a leak
   * outside it raises RSS minus the reserved heap.
   */
  rounds: { sent: number; rssMb: Record<string, number>; heap: Record<string, HeapFigures> }[];
  /** Valid tasks sent after the storm, and how many completed. */
  validAfter: { sent: number; completed: number };
  alive: string[];
  durationMs: number;
};

/** The gateway's limits in this scenario: small, so oversized bodies stay cheap to send. */
const MAX_PAYLOAD_BYTES = 64 * 1024;
const BODY_LIMIT_BYTES = MAX_PAYLOAD_BYTES + 64 * 1024;
const REQUEST_TIMEOUT_MS = 1_000;

/** Share of each lane and HTTP category, out of 100. */
const HTTP_WEIGHTS: Record<HttpCategory, number> = {
  "bad-json": 10,
  "deep-nesting": 7,
  huge: 6,
  "wrong-types": 12,
  "unknown-fields": 7,
  "invalid-utf8": 7,
  "content-type": 4,
  framing: 6,
  routes: 13,
  slow: 3,
};
/** The remaining 10: garbage published straight to a priority subject. */
const NATS_REQUEST_WEIGHT = 15;

type Lane = "http" | "slow" | "nats";
type Pick = { lane: Lane; category: HttpCategory | "nats-request" | "direct"; rng: Rng };

/** Case `i`: its own PRNG, so a case is the same whatever order the lanes run in. */
function pickAt(seed: number, i: number): Pick {
  const rng = createRng((seed * 1_000_003 + i * 7_919) | 0);
  let x = rng.next() * 100;
  for (const c of HTTP_CATEGORIES) {
    x -= HTTP_WEIGHTS[c];
    if (x < 0) return { lane: c === "slow" ? "slow" : "http", category: c, rng };
  }
  return { lane: "nats", category: x < NATS_REQUEST_WEIGHT ? "nats-request" : "direct", rng };
}

/**
 * Send `cases` generated hostile HTTP requests and NATS messages to a running Sluice and check that
 * every one was refused cleanly: a 4xx (or, for bodies far over the limit, a closed connection), never
 * a 5xx or a 2xx; nothing stored; direct garbage terminated by the dispatcher; every process alive with
 * flat memory; and valid tasks still complete afterwards.
 */
export async function runHostileScenario(o: HostileOptions): Promise<HostileReport> {
  const sys = await System.start({ verbose: o.verbose });
  try {
    const gw = await sys.gateway({
      MAX_PAYLOAD_BYTES: String(MAX_PAYLOAD_BYTES),
      REQUEST_TIMEOUT_MS: String(REQUEST_TIMEOUT_MS),
    });
    // probe ports, so every process's V8 heap can be read from its /metrics
    const probe = async () => ({ METRICS_PORT: String(await sys.freePort()), METRICS_HOST: "127.0.0.1" });
    const dispatcher = await sys.dispatcher(await probe());
    const worker = await sys.worker(await probe());
    const js = jetstream(sys.nc);
    const port = gw.httpPort!;
    const sampler = new RssSampler(
      () => [gw, dispatcher, worker].map((s) => ({ label: s.role, pid: s.pid })),
      250,
    );
    const extraCounts = async () => {
      const info = async (s: string) => (await sys.jsm.streams.info(s)).state.messages;
      return {
        signals: await info(`KV_${sys.names.signalsBucket}`),
        schedules: await info(`KV_${sys.names.schedulesBucket}`),
      };
    };
    const before = { ...(await sys.streamCounts()), ...(await extraCounts()) };
    const report: HostileReport = {
      seed: o.seed,
      cases: o.cases,
      byCategory: {},
      failures: [],
      failureCount: 0,
      directPublished: 0,
      terminated: 0,
      before,
      after: before,
      rss: {},
      rounds: [],
      validAfter: { sent: 0, completed: 0 },
      alive: [],
      durationMs: 0,
    };
    const t0 = Date.now();
    const tally = (key: string, answer: string, ok: boolean, what: string) => {
      report.byCategory[key] ??= { count: 0, answers: {} };
      const c = report.byCategory[key];
      c.count++;
      c.answers[answer] = (c.answers[answer] ?? 0) + 1;
      if (!ok) {
        report.failureCount++;
        if (report.failures.length < 30) report.failures.push(`${what}: ${answer}`);
      }
    };

    const runOne = async (i: number): Promise<void> => {
      const p = pickAt(o.seed, i);
      if (p.lane === "nats") {
        const c =
          p.category === "direct"
            ? directCase(p.rng, sys.names, RELIABLE_TYPE)
            : natsRequestCase(p.rng, sys.names, { type: RELIABLE_TYPE, maxPayloadBytes: MAX_PAYLOAD_BYTES });
        const r = await sendNats(sys.nc, js, c);
        if (c.kind === "publish") {
          if (r.stored) report.directPublished++;
          tally(
            `nats/direct`,
            r.stored ? "stored" : `failed`,
            r.stored === true,
            `#${i} direct/${c.variant} ${r.failed ?? ""}`,
          );
          return;
        }
        const answer = r.status !== undefined ? String(r.status) : `failed ${r.failed}`;
        const ok = c.expect
          ? r.status === c.expect.status && r.code === c.expect.code
          : r.status !== undefined && r.status >= 400 && r.status < 500;
        tally(
          `nats/${c.category}`,
          answer,
          ok,
          `#${i} ${c.subject} ${c.category}/${c.variant}${c.expect ? ` (code ${r.code}, expected ${c.expect.code})` : ""}`,
        );
        return;
      }
      const c = httpCase(p.rng, p.category as HttpCategory, {
        type: RELIABLE_TYPE,
        maxPayloadBytes: MAX_PAYLOAD_BYTES,
        bodyLimitBytes: BODY_LIMIT_BYTES,
      });
      const r = await sendHttp(port, c, 20_000);
      const answer = r.status !== undefined ? String(r.status) : r.closed ? "closed" : "timeout";
      const ok =
        (r.status !== undefined && r.status >= 400 && r.status < 500) ||
        (r.closed === true && c.mayClose === true);
      tally(`http/${c.category}`, answer, ok, `#${i} http ${c.category}/${c.variant}`);
    };

    // three lanes, each with its own bound on requests in flight
    const lane = (from: number, to: number, l: Lane) => {
      const items: number[] = [];
      for (let i = from; i < to; i++) if (pickAt(o.seed, i).lane === l) items.push(i);
      return pool(items, o.concurrency[l], runOne);
    };
    const fast = (from: number, to: number) => Promise.all([lane(from, to, "http"), lane(from, to, "nats")]);
    const warm = Math.ceil(o.cases / 10);
    await Promise.all([fast(0, warm), lane(0, warm, "slow")]);
    await sleep(1_000);
    const baselineAt = sampler.now();
    sampler.sample();
    sys.note(`warm-up done (${warm} cases); baseline RSS taken`);
    // the rest in nine rounds, memory noted after each: a leak grows round after round, a heap settles.
    // Slow requests (each holds on ~2 s) run beside the rounds rather than ending each of them.
    const slow = lane(warm, o.cases, "slow");
    const heap = new HeapWatch({
      enqueue: `${sys.url(gw)}/metrics`,
      dispatcher: `http://127.0.0.1:${dispatcher.metricsPort}/metrics`,
      worker: `http://127.0.0.1:${worker.metricsPort}/metrics`,
    });
    const step = Math.ceil((o.cases - warm) / 9);
    for (let from = warm; from < o.cases; from += step) {
      await fast(from, Math.min(o.cases, from + step));
      sampler.sample();
      report.rounds.push({
        sent: Math.min(o.cases, from + step),
        rssMb: Object.fromEntries(
          sampler.series().map((x) => [x.label, Math.round(x.samples.at(-1)!.mb * 10) / 10]),
        ),
        heap: await heap.take(),
      });
    }
    await slow;
    sys.note(`all ${o.cases} cases sent in ${Date.now() - t0} ms`);
    await heap.stop();

    // the dispatcher terminates every direct garbage message; then nothing is left behind
    await sys.waitStreamsEmpty(30_000);
    await sleep(2_000);
    sampler.sample();
    const series = sampler.stop();
    report.after = { ...(await sys.streamCounts()), ...(await extraCounts()) };
    report.terminated = sys.procs
      .filter((p) => p.role === "dispatcher")
      .reduce((n, p) => n + p.proc.logs.filter((l) => l.msg === "invalid task message terminated").length, 0);
    report.rss = summarise(series, baselineAt);
    report.alive = sys.alive().map((s) => s.name);
    const health = await fetch(`${sys.url(gw)}/healthz`).then(
      (r) => r.status,
      () => 0,
    );
    if (health !== 200) report.failures.push(`gateway /healthz answered ${health}`);

    // and it still works
    const valid = await runLoad({
      urls: () => [sys.url(gw)],
      count: 20,
      ratePerS: 100,
      retry: false,
      keyPrefix: `after-hostile-${o.seed}`,
      body: (n) => ({ type: RELIABLE_TYPE, payload: { n, ms: 1 }, priority: "normal" }),
    });
    const states = await sys.waitAllFinal(
      valid.accepted.map((a) => a.id),
      30_000,
    );
    report.validAfter = {
      sent: 20,
      completed: [...states.values()].filter((s) => s?.status === "completed").length,
    };
    report.durationMs = Date.now() - t0;
    return report;
  } finally {
    await sys.cleanup();
  }
}

/** Run `work` over `items` with at most `limit` at a time. */
async function pool<T>(items: readonly T[], limit: number, work: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const runners = Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) await work(items[next++]!);
  });
  await Promise.all(runners);
}

/** Baseline (first sample at or after `baselineAt`), peak and last sample of each process. */
function summarise(series: RssSeries[], baselineAt: number): Record<string, RssSummary> {
  const out: Record<string, RssSummary> = {};
  for (const s of series) {
    const base = s.samples.find((x) => x.atMs >= baselineAt) ?? s.samples[0]!;
    out[s.label] = {
      baseline: round(base.mb),
      peak: round(Math.max(...s.samples.map((x) => x.mb))),
      after: round(s.samples.at(-1)!.mb),
    };
  }
  return out;
}

const round = (mb: number) => Math.round(mb * 10) / 10;
