import type { SluiceClient } from "../../client/index.ts";
import { PRIORITIES } from "../../shared/priority.ts";
import { type CommandLine, int, rate, str, word } from "./args.ts";
import { Exit, UsageError } from "./exit.ts";
import { duration, type Out, paint, short, table } from "./output.ts";

/** A queue as GET /v1/queues shows it (the fields the CLI uses). */
type QueueView = {
  type: string;
  config: {
    paused?: boolean;
    concurrency?: number;
    rateLimit?: { max: number; intervalMs: number };
    maxDepth?: number;
    keyConcurrency?: number;
    aging?: { afterMs: number };
  };
  depth: { total: number; byPriority: Record<string, number> };
  /** Not yet delivered to the dispatcher (absent from gateways before the direct hand-off). */
  waiting?: { total: number; byPriority: Record<string, number> };
  inFlight: number;
  running: number;
  [more: string]: unknown;
};

/**
 * `sluice stats`: per type, waiting tasks by priority, in flight and running; then worker capacity.
 * (A gateway without `waiting` counted only waiting and held tasks in `depth`: shown as waiting.)
 */
export async function stats(c: CommandLine, client: SluiceClient, out: Out): Promise<number> {
  const [{ queues }, workers] = await Promise.all([
    client.queues.list() as Promise<{ queues: QueueView[] }>,
    client.workers(),
  ]);
  if (c.o.json) {
    out.line(JSON.stringify({ queues, workers: workers.types }));
    return Exit.ok;
  }
  const rows = queues.map((q) => {
    const w = workers.types[q.type];
    return [
      q.config.paused ? `${q.type} ${paint(out, "yellow", "(paused)")}` : q.type,
      ...PRIORITIES.map((p) => String((q.waiting ?? q.depth).byPriority[p] ?? 0)),
      String((q.waiting ?? q.depth).total),
      String(q.running),
      String(q.inFlight),
      w ? `${w.busy}/${w.slots}` : paint(out, "dim", "no workers"),
    ];
  });
  table(
    out,
    ["TYPE", ...PRIORITIES.map((p) => p.toUpperCase()), "WAITING", "RUNNING", "IN FLIGHT", "BUSY/SLOTS"],
    rows,
  );
  const total = queues.reduce((n, q) => n + (q.waiting ?? q.depth).total, 0);
  const slots = Object.values(workers.types).reduce((n, t) => n + t.slots, 0);
  const busy = Object.values(workers.types).reduce((n, t) => n + t.busy, 0);
  out.line();
  const n = workers.workers.length;
  out.line(`${total} waiting · ${n} live worker${n === 1 ? "" : "s"} · ${busy}/${slots} slots busy`);
  return Exit.ok;
}

/** `sluice queues [list] | pause <type> | resume <type> | limit <type> --concurrency … --rate … --max-depth …`. */
export async function queues(c: CommandLine, client: SluiceClient, out: Out): Promise<number> {
  const sub = c.words[1] ?? "list";
  if (sub === "list") {
    const { queues: list } = (await client.queues.list()) as { queues: QueueView[] };
    if (c.o.json) out.line(JSON.stringify({ queues: list }));
    else
      table(
        out,
        ["TYPE", "STATE", "CONCURRENCY", "RATE", "MAX DEPTH", "PER KEY", "AGING"],
        list.map((q) => [
          q.type,
          q.config.paused ? paint(out, "yellow", "paused") : "active",
          q.config.concurrency?.toString() ?? "-",
          q.config.rateLimit ? `${q.config.rateLimit.max}/${duration(q.config.rateLimit.intervalMs)}` : "-",
          q.config.maxDepth?.toString() ?? "-",
          q.config.keyConcurrency?.toString() ?? "-",
          q.config.aging ? `+1 level per ${duration(q.config.aging.afterMs)}` : "strict",
        ]),
      );
    return Exit.ok;
  }
  const type = word(c, 2, "task type");
  let r: unknown;
  if (sub === "pause") r = await client.queues.pause(type);
  else if (sub === "resume") r = await client.queues.resume(type);
  else if (sub === "limit") {
    const patch: Record<string, unknown> = {};
    const conc = int(c.o, "concurrency", 1);
    if (conc !== undefined) patch.concurrency = conc;
    const depth = int(c.o, "max-depth", 0);
    if (depth !== undefined) patch.maxDepth = depth;
    const perKey = int(c.o, "key-concurrency", 1);
    if (perKey !== undefined) patch.keyConcurrency = perKey;
    const r8 = str(c.o, "rate");
    if (r8 !== undefined) patch.rateLimit = rate(r8);
    const fieldNames: Record<string, string> = {
      concurrency: "concurrency",
      rate: "rateLimit",
      "max-depth": "maxDepth",
      "key-concurrency": "keyConcurrency",
      aging: "aging",
    };
    for (const f of (c.o.clear as string[] | undefined) ?? []) {
      const field = fieldNames[f];
      if (!field) throw new UsageError(`--clear takes ${Object.keys(fieldNames).join(", ")}`);
      patch[field] = null;
    }
    if (Object.keys(patch).length === 0) {
      throw new UsageError(
        "give at least one of --concurrency, --rate, --max-depth, --key-concurrency, --clear",
      );
    }
    r = await client.queues.patch(type, patch);
  } else throw new UsageError(`unknown queues command ${sub}: use list, pause, resume or limit`);
  if (c.o.json) out.line(JSON.stringify(r));
  else out.line(`${type}: ${short((r as { config?: unknown }).config ?? r, 200)}`);
  return Exit.ok;
}

/** `sluice workers [--all]`. */
export async function workers(c: CommandLine, client: SluiceClient, out: Out): Promise<number> {
  const w = await client.workers({ all: c.o.all === true });
  if (c.o.json) {
    out.line(JSON.stringify(w));
    return Exit.ok;
  }
  table(
    out,
    ["ID", "HOST", "PID", "VERSION", "STATE", "BUSY/SLOTS", "TYPES", "HEARTBEAT"],
    w.workers.map((x) => [
      x.id,
      x.hostname,
      String(x.pid),
      x.version,
      x.live ? x.state : paint(out, "red", x.state === "draining" ? "draining" : "stale"),
      `${x.busy}/${x.slots}`,
      Object.entries(x.types)
        .map(([t, s]) => `${t} ${s.busy}/${s.slots}`)
        .join(", "),
      `${duration(x.heartbeatAgeMs)} ago`,
    ]),
  );
  return Exit.ok;
}
