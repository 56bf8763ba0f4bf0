import type { KV, KvWatchEntry } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import type { Logger } from "../logger.ts";

/** Options of {@link watchBucket}. */
export type WatchOptions = {
  /** Every entry (initial values first, then changes, and all current values again after a re-open). */
  onEntry: (e: KvWatchEntry) => void;
  /** After the initial values of each (re-)opened watch were delivered. */
  onLoaded?: () => void;
  log: Logger;
  /**
   * Re-open when no entry arrived for this long while `expectTraffic()` says entries should come (a
   * bucket written on a heartbeat). A watch can stall silently when its stream's leader moves.
   */
  silenceMs?: number;
  expectTraffic?: () => boolean;
};

/**
 * A KV watch that survives what a long-running service meets: a reconnect to another server, the
 * bucket's stream changing leader (the watch's consumer goes with it), the iterator ending. Each
 * re-open delivers the current values again, so the owner's view converges.
 */
export async function watchBucket(nc: NatsConnection, kv: KV, o: WatchOptions): Promise<{ stop(): void }> {
  let stopped = false;
  let current: { stop(): void } | undefined;
  let lastEntryAt = Date.now();
  let opening: Promise<void> | undefined;

  const open = async (): Promise<void> => {
    current?.stop();
    const iter = await kv.watch({ key: ">" });
    current = iter;
    lastEntryAt = Date.now();
    const status = await kv.status();
    let loading = status.values > 0;
    let loaded: () => void = () => undefined;
    const ready = new Promise<void>((r) => {
      loaded = r;
    });
    if (!loading) {
      o.onLoaded?.();
      loaded();
    }
    // nats-server 2.9.10 can report one pending entry too many, so `delta === 0` never comes for the
    // last stored value: an update, or a short wait, also ends the initial load
    const finishLoad = () => {
      if (!loading) return;
      loading = false;
      o.onLoaded?.();
      loaded();
    };
    const loadTimer = setTimeout(finishLoad, 3000);
    loadTimer.unref();
    void (async () => {
      try {
        for await (const e of iter) {
          lastEntryAt = Date.now();
          o.onEntry(e);
          if (loading && (e.delta === 0 || e.isUpdate)) finishLoad();
        }
      } catch (err) {
        o.log.debug({ err: String(err), bucket: status.bucket }, "kv watch ended");
      }
      loaded();
      if (!stopped && current === iter) setTimeout(() => void reopen("ended"), 500).unref();
    })();
    await ready;
  };
  const reopen = (why: string): Promise<void> => {
    if (stopped) return Promise.resolve();
    opening ??= (async () => {
      o.log.debug({ why }, "re-opening kv watch");
      try {
        await open();
      } catch (err) {
        o.log.warn({ err: String(err), why }, "kv watch could not be re-opened; retrying");
        setTimeout(() => void reopen(why), 1000).unref();
      } finally {
        opening = undefined;
      }
    })();
    return opening;
  };

  await open();
  void (async () => {
    for await (const s of nc.status()) {
      if (stopped) break;
      if (s.type === "reconnect") void reopen("reconnect");
    }
  })();
  const silence =
    o.silenceMs !== undefined
      ? setInterval(
          () => {
            if (Date.now() - lastEntryAt > o.silenceMs! && (o.expectTraffic?.() ?? true))
              void reopen("silence");
          },
          Math.max(250, Math.floor(o.silenceMs / 2)),
        )
      : undefined;
  silence?.unref();
  return {
    stop() {
      stopped = true;
      clearInterval(silence);
      current?.stop();
    },
  };
}
