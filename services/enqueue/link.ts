import type { JetStreamManager } from "@nats-io/jetstream";
import type { KV } from "@nats-io/kv";
import type { CommonConfig } from "../../shared/config.ts";
import { UnavailableError } from "../../shared/errors.ts";
import type { Logger } from "../../shared/logger.ts";
import type { Names } from "../../shared/names.ts";
import { connectNats, type NatsConnection } from "../../shared/nats/connection.ts";
import { AckedPublisher } from "../../shared/nats/publisher.ts";
import { ensureTopology } from "../../shared/nats/topology.ts";

/** What the gateway needs from NATS for one request. */
export type Session = {
  readonly nc: NatsConnection;
  readonly pub: AckedPublisher;
  readonly jsm: JetStreamManager;
  /** The task state bucket. */
  readonly state: KV;
  /** Control signals for single tasks (cancel, pause). */
  readonly signals: KV;
  /** Worker registrations and heartbeats (GET /v1/workers, the legacy stats). */
  readonly workers: KV;
};

/** Where the gateway gets its session; throws UnavailableError while NATS is not usable. */
export type SessionSource = { session(): Session };

/** Options of {@link NatsLink}. */
export type NatsLinkOptions = {
  cfg: Pick<CommonConfig, "natsUrl" | "natsUser" | "natsPass" | "natsToken" | "replicas" | "storage">;
  names: Names;
  log: Logger;
  /** Ack timeout of publishes, ms (default 5000). */
  publishTimeoutMs?: number;
  /** How often readiness re-checks that the streams exist, ms (default 5000). */
  checkIntervalMs?: number;
};

const RETRY_MS = 1_000;
const DRAIN_TIMEOUT_MS = 5_000;

/**
 * The enqueue service's NATS connection, kept in the background: the HTTP API comes up without it,
 * answers 503 while it is missing, and recovers by itself when NATS appears or comes back.
 *
 * Connection state is tracked from `nc.status()` so a request during an outage fails at once: the
 * client would otherwise buffer the publish and we would only learn of the outage from a timeout.
 */
export class NatsLink implements SessionSource {
  readonly #o: NatsLinkOptions;
  #nc: NatsConnection | undefined;
  #session: Session | undefined;
  #connected = false;
  #streamsPresent = false;
  #closed = false;
  #checking: Promise<void> | undefined;
  #timer: NodeJS.Timeout | undefined;
  #retry: NodeJS.Timeout | undefined;
  readonly #sessionWaiters: ((s: Session) => void)[] = [];

  /** Build a link; nothing happens until {@link NatsLink.start}. */
  constructor(o: NatsLinkOptions) {
    this.#o = o;
  }

  /** Connect in the background, retrying until it works or the link is closed. */
  start(): void {
    void this.#connectLoop();
  }

  /** True when NATS is connected and the streams and state bucket exist: the readiness probe. */
  get ready(): boolean {
    return !this.#closed && this.#connected && this.#streamsPresent && this.#session !== undefined;
  }

  /** The session for a request, or UnavailableError (503) while NATS is disconnected. */
  session(): Session {
    if (this.#closed || !this.#connected || !this.#session)
      throw new UnavailableError("NATS is not connected");
    return this.#session;
  }

  /** Resolves once the first session exists (NATS connected and topology ensured). */
  whenSession(): Promise<Session> {
    if (this.#session) return Promise.resolve(this.#session);
    return new Promise((resolve) => this.#sessionWaiters.push(resolve));
  }

  /** Stop checking, fail pending publishes and drain the connection. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#timer);
    clearTimeout(this.#retry);
    this.#session?.pub.close();
    const nc = this.#nc;
    if (!nc || nc.isClosed()) return;
    try {
      // a drain needs the server; during an outage there is nothing left to flush to, so just close
      if (this.#connected) await withTimeout(nc.drain(), DRAIN_TIMEOUT_MS);
    } catch (err) {
      this.#o.log.warn({ err }, "nats drain failed");
    }
    if (!nc.isClosed()) await nc.close();
  }

  async #connectLoop(): Promise<void> {
    const { cfg, log } = this.#o;
    while (!this.#closed) {
      try {
        // waitOnFirstConnect: keep trying a server that is not up yet instead of failing startup
        const nc = await connectNats(cfg, { name: "sluice-enqueue", log, waitOnFirstConnect: true });
        if (this.#closed) {
          await nc.close();
          return;
        }
        this.#nc = nc;
        this.#connected = !nc.isClosed();
        void this.#watch(nc);
        log.info({ server: nc.getServer() }, "nats connected");
        this.#timer = setInterval(() => void this.#check(), this.#o.checkIntervalMs ?? 5_000);
        this.#timer.unref();
        await this.#check();
        return;
      } catch (err) {
        log.warn({ err }, "nats connect failed; retrying");
        await new Promise((r) => setTimeout(r, RETRY_MS).unref());
      }
    }
  }

  async #watch(nc: NatsConnection): Promise<void> {
    for await (const s of nc.status()) {
      if (s.type === "disconnect" || s.type === "close") {
        this.#connected = false;
        this.#streamsPresent = false;
      } else if (s.type === "reconnect") {
        this.#connected = true;
        void this.#check();
      }
    }
    this.#connected = false;
  }

  /** Confirm the streams and bucket exist (creating them when missing); one check at a time. */
  #check(): Promise<void> {
    this.#checking ??= this.#doCheck().finally(() => {
      this.#checking = undefined;
      // a failed check retries soon rather than at the next interval: readiness should follow a
      // server's return within a second or so
      if (!this.#streamsPresent && this.#connected && !this.#closed) {
        clearTimeout(this.#retry);
        this.#retry = setTimeout(() => void this.#check(), RETRY_MS);
        this.#retry.unref();
      }
    });
    return this.#checking;
  }

  async #doCheck(): Promise<void> {
    const nc = this.#nc;
    if (!nc || this.#closed || !this.#connected) return;
    const { names, cfg, log } = this.#o;
    try {
      if (!this.#session) {
        const topo = await ensureTopology(nc, names, { replicas: cfg.replicas, storage: cfg.storage });
        if (this.#closed) return;
        // coalesce: HTTP requests arrive on many sockets; their writes share one socket write per tick
        const pub = new AckedPublisher(nc, { timeoutMs: this.#o.publishTimeoutMs ?? 5_000, coalesce: true });
        this.#session = {
          nc,
          pub,
          jsm: topo.jsm,
          state: topo.state,
          signals: topo.signals,
          workers: topo.workers,
        };
        this.#streamsPresent = true;
        log.info("nats topology ready");
        for (const w of this.#sessionWaiters.splice(0)) w(this.#session);
        return;
      }
      const { jsm } = this.#session;
      // what every enqueue writes to: the tasks stream and the state bucket (there is no work stream
      // since the direct hand-off: a leftover one of an older version is not ours to check)
      const streams = [names.tasksStream, `KV_${names.stateBucket}`];
      const found = await Promise.all(streams.map((s) => jsm.streams.info(s).then(present, absent)));
      if (found.every(Boolean)) {
        this.#streamsPresent = true;
        return;
      }
      this.#streamsPresent = false;
      log.warn({ streams: streams.filter((_, i) => !found[i]) }, "streams missing; recreating");
      await ensureTopology(nc, names, { replicas: cfg.replicas, storage: cfg.storage });
      this.#streamsPresent = true;
    } catch (err) {
      this.#streamsPresent = false;
      log.warn({ err }, "nats topology check failed");
    }
  }
}

const present = () => true;

function absent(err: unknown): false {
  if (/not found/i.test(String((err as Error)?.message))) return false;
  throw err;
}

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  let t: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    t = setTimeout(() => reject(new Error(`timed out after ${ms} ms`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(t));
}
