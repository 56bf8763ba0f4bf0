import type { ConsumerInfo, JetStreamManager } from "@nats-io/jetstream";
import type { Names } from "../../shared/names.ts";
import { PRIORITIES, type Priority } from "../../shared/priority.ts";
import type { QueueConfig, QueueConfigs } from "../../shared/queues.ts";

/**
 * One type's queue as `GET /v1/queues` shows it. An object per type, so more fields (scheduled,
 * retrying, dead counts) can join without breaking clients.
 */
export type QueueView = {
  type: string;
  config: QueueConfig;
  /** Tasks in the tasks stream (waiting to be dispatched, including those the dispatcher holds). */
  depth: { total: number; byPriority: Record<Priority, number> };
  /** Of those, pulled and held by the dispatcher leader, not yet dispatched. */
  held: number;
  /** Dispatched and not finished: in the work stream or with a worker. */
  inFlight: number;
  /** Of those, delivered to a worker and not yet acked (running, or storing their result). */
  running: number;
};

/**
 * Every known queue: configured, with consumers (a worker or the dispatcher prepared the type), or
 * with tasks waiting. Three requests whatever the number of types: stream info of the tasks stream by
 * subject, and the consumer lists of both streams (which carry each consumer's counts).
 */
export async function listQueueViews(
  jsm: JetStreamManager,
  n: Names,
  configs: QueueConfigs,
): Promise<QueueView[]> {
  const [subjects, tasksConsumers, workConsumers] = await Promise.all([
    subjectCounts(jsm, n.tasksStream, `${n.prefix}.tasks.>`),
    collect(jsm.consumers.list(n.tasksStream)),
    collect(jsm.consumers.list(n.workStream)),
  ]);
  const views = new Map<string, QueueView>();
  const view = (type: string) => {
    const v = views.get(type) ?? emptyView(type, configs.get(type));
    views.set(type, v);
    return v;
  };
  for (const t of configs.types()) view(t);
  const tasksPrefix = `${n.prefix}.tasks.`;
  for (const [subject, count] of Object.entries(subjects)) {
    const pt = splitTasksSubject(subject, tasksPrefix);
    if (pt) addDepth(view(pt.type), pt.priority, count);
  }
  for (const ci of tasksConsumers) {
    const pt = splitTasksSubject(ci.config.filter_subject ?? "", tasksPrefix);
    if (pt) view(pt.type).held += ci.num_ack_pending;
  }
  const workPrefix = `${n.prefix}.work.`;
  for (const ci of workConsumers) {
    const f = ci.config.filter_subject ?? "";
    if (!f.startsWith(workPrefix)) continue;
    const v = view(f.slice(workPrefix.length));
    v.inFlight += ci.num_pending + ci.num_ack_pending;
    v.running += ci.num_ack_pending;
  }
  return [...views.values()].sort((a, b) => (a.type < b.type ? -1 : a.type > b.type ? 1 : 0));
}

/** One type's queue: stream info by subject plus its six consumers' counts (missing ones count 0). */
export async function queueView(
  jsm: JetStreamManager,
  n: Names,
  type: string,
  config: QueueConfig,
): Promise<QueueView> {
  const [subjects, tasksInfos, workInfo] = await Promise.all([
    subjectCounts(jsm, n.tasksStream, `${n.prefix}.tasks.*.${type}`),
    Promise.all(PRIORITIES.map((p) => consumerInfo(jsm, n.tasksStream, n.tasksConsumer(p, type)))),
    consumerInfo(jsm, n.workStream, n.workConsumer(type)),
  ]);
  const v = emptyView(type, config);
  for (const p of PRIORITIES) addDepth(v, p, subjects[n.tasksSubject(p, type)] ?? 0);
  for (const ci of tasksInfos) v.held += ci?.num_ack_pending ?? 0;
  v.inFlight = (workInfo?.num_pending ?? 0) + (workInfo?.num_ack_pending ?? 0);
  v.running = workInfo?.num_ack_pending ?? 0;
  return v;
}

/** Tasks of a type in the tasks stream, all priorities (one stream-info request). */
export async function typeDepth(jsm: JetStreamManager, n: Names, type: string): Promise<number> {
  let total = 0;
  for (const c of Object.values(await subjectCounts(jsm, n.tasksStream, `${n.prefix}.tasks.*.${type}`)))
    total += c;
  return total;
}

function emptyView(type: string, config: QueueConfig): QueueView {
  const byPriority = Object.fromEntries(PRIORITIES.map((p) => [p, 0])) as Record<Priority, number>;
  return { type, config, depth: { total: 0, byPriority }, held: 0, inFlight: 0, running: 0 };
}

function addDepth(v: QueueView, p: Priority, n: number): void {
  v.depth.byPriority[p] += n;
  v.depth.total += n;
}

/** `<prefix>.tasks.<priority>.<type>` → its parts; undefined for any other subject. */
function splitTasksSubject(
  subject: string,
  prefix: string,
): { priority: Priority; type: string } | undefined {
  if (!subject.startsWith(prefix)) return undefined;
  const rest = subject.slice(prefix.length);
  const dot = rest.indexOf(".");
  const priority = rest.slice(0, dot) as Priority;
  if (dot < 0 || !PRIORITIES.includes(priority)) return undefined;
  return { priority, type: rest.slice(dot + 1) };
}

/** Messages per subject of a stream under a filter (the client follows the server's paging). */
async function subjectCounts(
  jsm: JetStreamManager,
  stream: string,
  filter: string,
): Promise<Record<string, number>> {
  const si = await jsm.streams.info(stream, { subjects_filter: filter });
  return si.state.subjects ?? {};
}

async function consumerInfo(
  jsm: JetStreamManager,
  stream: string,
  name: string,
): Promise<ConsumerInfo | undefined> {
  try {
    return await jsm.consumers.info(stream, name);
  } catch (err) {
    if (/not found/i.test(String((err as Error).message))) return undefined;
    throw err;
  }
}

async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}
