import type { ConsumerInfo, JetStreamManager } from "@nats-io/jetstream";
import { type KV, Kvm } from "@nats-io/kv";
import type { Names } from "../../shared/names.ts";
import { PRIORITIES, type Priority } from "../../shared/priority.ts";
import type { QueueConfig, QueueConfigs } from "../../shared/queues.ts";
import { readWorkers } from "./workers.ts";

/** Tasks counted per priority, and all together. */
export type PriorityCounts = { total: number; byPriority: Record<Priority, number> };

/**
 * One type's queue as `GET /v1/queues` shows it. An object per type, so more fields (scheduled,
 * retrying, dead counts) can join without breaking clients.
 *
 * A task's message stays in the tasks stream from its enqueue until the worker that ran it has stored
 * the outcome (the dispatcher hands it to a worker without taking it out), so the stream's messages of
 * a type are the tasks accepted and not finished. The type's five tasks consumers split them: not yet
 * delivered to the dispatcher (`num_pending`), and delivered and not yet acked (`num_ack_pending`),
 * which are held by the dispatcher leader or with a worker; the two cannot be told apart there.
 */
export type QueueView = {
  type: string;
  config: QueueConfig;
  /**
   * Tasks accepted and not finished: the type's messages in the tasks stream, waiting or in flight.
   * What `maxDepth` limits (the gateway's 429 reads the same count).
   */
  depth: PriorityCounts;
  /** Of those, waiting: not yet delivered to the dispatcher (the tasks consumers' `num_pending`). */
  waiting: PriorityCounts;
  /**
   * Of those, in flight: held by the dispatcher leader or handed to a worker and not yet acked
   * (running, or storing its outcome): the tasks consumers' `num_ack_pending`.
   */
  inFlight: number;
  /**
   * Handlers of the type running, as the live workers last reported them (their heartbeats, so up to
   * a heartbeat old); the rest of `inFlight` is held by the dispatcher or storing an outcome.
   */
  running: number;
};

/**
 * Every known queue: configured, with consumers (a worker or the dispatcher prepared the type), or
 * with tasks in the tasks stream. A few requests whatever the number of types: stream info of the
 * tasks stream by subject, the tasks stream's consumer list (which carries each consumer's counts),
 * and the workers bucket.
 */
export async function listQueueViews(
  jsm: JetStreamManager,
  n: Names,
  configs: QueueConfigs,
): Promise<QueueView[]> {
  const [subjects, consumers, busy] = await Promise.all([
    subjectCounts(jsm, n.tasksStream, `${n.prefix}.tasks.>`),
    collect(jsm.consumers.list(n.tasksStream)),
    busyByType(jsm, n),
  ]);
  const views = new Map<string, QueueView>();
  const view = (type: string) => {
    const v = views.get(type) ?? emptyView(type, configs.get(type));
    views.set(type, v);
    return v;
  };
  for (const t of configs.types()) view(t);
  const tasksPrefix = `${n.prefix}.tasks.`;
  const byName = new Map<string, ConsumerInfo>();
  for (const ci of consumers) {
    const pt = dispatcherConsumer(n, ci);
    if (pt) {
      byName.set(ci.name, ci);
      view(pt.type);
    }
  }
  for (const [subject, count] of Object.entries(subjects)) {
    const pt = splitTasksSubject(subject, tasksPrefix);
    if (pt) add(view(pt.type).depth, pt.priority, count);
  }
  for (const v of views.values()) {
    fillFromConsumers(
      v,
      PRIORITIES.map((p) => byName.get(n.tasksConsumer(p, v.type))),
    );
    v.running = busy[v.type] ?? 0;
  }
  return [...views.values()].sort((a, b) => (a.type < b.type ? -1 : a.type > b.type ? 1 : 0));
}

/** One type's queue: stream info by subject, its five consumers' counts and the workers bucket. */
export async function queueView(
  jsm: JetStreamManager,
  n: Names,
  type: string,
  config: QueueConfig,
): Promise<QueueView> {
  const [subjects, infos, busy] = await Promise.all([
    subjectCounts(jsm, n.tasksStream, `${n.prefix}.tasks.*.${type}`),
    Promise.all(PRIORITIES.map((p) => consumerInfo(jsm, n.tasksStream, n.tasksConsumer(p, type)))),
    busyByType(jsm, n),
  ]);
  const v = emptyView(type, config);
  for (const p of PRIORITIES) add(v.depth, p, subjects[n.tasksSubject(p, type)] ?? 0);
  fillFromConsumers(v, infos);
  v.running = busy[type] ?? 0;
  return v;
}

/**
 * Tasks of a type accepted and not finished: its messages in the tasks stream, all priorities (one
 * stream-info request). A task's message stays there until its worker stored the outcome, so this
 * counts the waiting tasks, those the dispatcher holds and those with workers: what `maxDepth` limits.
 * Read from the stream rather than the consumers so a type no worker has prepared yet counts too.
 */
export async function typeDepth(jsm: JetStreamManager, n: Names, type: string): Promise<number> {
  let total = 0;
  for (const c of Object.values(await subjectCounts(jsm, n.tasksStream, `${n.prefix}.tasks.*.${type}`)))
    total += c;
  return total;
}

/**
 * Waiting and in flight from the five tasks consumers (priority order). A priority without its
 * consumer has nothing in flight (nobody reads it): all its messages wait.
 */
function fillFromConsumers(v: QueueView, infos: readonly (ConsumerInfo | undefined)[]): void {
  PRIORITIES.forEach((p, i) => {
    const ci = infos[i];
    add(v.waiting, p, ci ? ci.num_pending : v.depth.byPriority[p]);
    v.inFlight += ci?.num_ack_pending ?? 0;
  });
}

function emptyCounts(): PriorityCounts {
  const byPriority = Object.fromEntries(PRIORITIES.map((p) => [p, 0])) as Record<Priority, number>;
  return { total: 0, byPriority };
}

function emptyView(type: string, config: QueueConfig): QueueView {
  return { type, config, depth: emptyCounts(), waiting: emptyCounts(), inFlight: 0, running: 0 };
}

function add(c: PriorityCounts, p: Priority, n: number): void {
  c.byPriority[p] += n;
  c.total += n;
}

/**
 * The (priority, type) of one of the dispatcher's tasks consumers, named as shared/names.ts names them
 * after their filter subject; undefined for anything else reading the tasks stream.
 */
export function dispatcherConsumer(
  n: Names,
  ci: ConsumerInfo,
): { priority: Priority; type: string } | undefined {
  const pt = splitTasksSubject(ci.config.filter_subject ?? "", `${n.prefix}.tasks.`);
  return pt && ci.name === n.tasksConsumer(pt.priority, pt.type) ? pt : undefined;
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

/** The workers bucket, opened once per connection's manager (a failed open is tried again next time). */
const workerBuckets = new WeakMap<JetStreamManager, Promise<KV>>();

/** Busy slots per type over live workers (`GET /v1/workers`' `types[type].busy`). */
async function busyByType(jsm: JetStreamManager, n: Names): Promise<Record<string, number>> {
  let kv = workerBuckets.get(jsm);
  if (!kv) {
    kv = new Kvm(jsm.jetstream()).open(n.workersBucket);
    workerBuckets.set(jsm, kv);
    kv.catch(() => workerBuckets.delete(jsm));
  }
  const { types } = await readWorkers(await kv);
  return Object.fromEntries(Object.entries(types).map(([t, c]) => [t, c.busy]));
}

async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}
