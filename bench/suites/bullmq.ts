import type { SendRun } from "../lib/drive.ts";
import type { Contender } from "../lib/rounds.ts";
import { type RoleHandle, startRole } from "../lib/rpc.ts";
import { flushRedis, startRedis } from "../lib/servers.ts";
import type { Settings } from "../lib/settings.ts";
import type { BullVariant } from "../roles/bullmq.ts";
import { type PeerResult, peerRounds, rateOf } from "./peer.ts";

/** Jobs per `addBulk` call, and calls kept in flight at once. */
const BULK_CHUNK = 500;
const BULK_WINDOW = 4;
/** Worker concurrency: the same 100 slots the Sluice worker gets. */
const CONCURRENCY = 100;

/**
 * BullMQ against a redis-server of its own. Like-for-like runs Redis with AOF fsync every second;
 * fastest runs it without persistence (see roles/bullmq.ts for the job options of each). Opening it
 * runs the enqueue measure and leaves it set up for the rounds (bench/lib/rounds.ts).
 */
export async function openBullmq(
  s: Settings,
  variant: BullVariant,
  log: (m: string) => void,
): Promise<Contender<PeerResult>> {
  const persistent = variant === "likeForLike";
  const redis = await startRedis(persistent);
  const roles: RoleHandle[] = [];
  const tag = `bullmq ${variant}`;
  let closed = false;
  const close = async () => {
    if (closed) return;
    closed = true;
    for (const r of roles) await r.stop();
    await redis.stop();
  };
  try {
    log(`${tag}: enqueue`);
    const enqProd = await startRole("bullmq.producer", { port: redis.port, queue: "enq", variant });
    roles.push(enqProd);
    const burst = (count: number) => ({ count, chunk: BULK_CHUNK, window: BULK_WINDOW });
    await enqProd.call("burst", burst(s.warmupCount));
    const enq = await enqProd.call<SendRun>("burst", burst(s.enqueueCount));
    await enqProd.stop();
    roles.length = 0;
    await flushRedis(redis.port);

    log(`${tag}: ready for the rounds`);
    const spec = { port: redis.port, queue: "bench", variant };
    const cons = await startRole("bullmq.worker", { ...spec, concurrency: CONCURRENCY });
    roles.push(cons);
    const prod = await startRole("bullmq.producer", spec);
    roles.push(prod);
    const pids = { "redis-server": redis.pid, producer: prod.pid, worker: cons.pid };
    const rounds = await peerRounds(s, prod, cons, pids, burst);
    return {
      e2eRun: rounds.e2eRun,
      latencyRun: rounds.latencyRun,
      close,
      async finish(used) {
        try {
          const failed = await cons.call<number>("failed");
          if (failed > 0) throw new Error(`${tag}: ${failed} jobs failed`);
          return {
            enqueue: rateOf(enq.sent, enq.startedAt, enq.finishedAt),
            ...rounds.figures(used),
            settings: {
              redis: persistent ? "appendonly yes, appendfsync everysec" : "no persistence",
              priorities: persistent ? "1-5, round robin" : "none",
              removeOnComplete: persistent ? { age: 86_400 } : true,
              removeOnFail: persistent ? { age: 604_800 } : "default (kept)",
              concurrency: CONCURRENCY,
              addBulkChunk: BULK_CHUNK,
              addBulkWindow: BULK_WINDOW,
              pacedEnqueue: "queue.add per job",
            },
          };
        } finally {
          await close();
        }
      },
    };
  } catch (e) {
    await close();
    throw e;
  }
}
