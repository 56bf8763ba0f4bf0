import { connect, type NatsConnection } from "@nats-io/transport-node";
import type { CommonConfig } from "../config.ts";
import type { Logger } from "../logger.ts";

export type { NatsConnection };

/**
 * Connect to NATS the way every Sluice process does: reconnect forever (a service outlives a server
 * restart; readiness reports the outage), no async stack traces on the hot path, and one log line per
 * connection state change.
 */
export async function connectNats(
  cfg: Pick<CommonConfig, "natsUrl" | "natsUser" | "natsPass" | "natsToken">,
  opts: { name: string; log?: Logger; waitOnFirstConnect?: boolean },
): Promise<NatsConnection> {
  const nc = await connect({
    servers: cfg.natsUrl,
    name: opts.name,
    user: cfg.natsUser,
    pass: cfg.natsPass,
    token: cfg.natsToken,
    maxReconnectAttempts: -1,
    reconnectTimeWait: 250,
    reconnectJitter: 100,
    pingInterval: 10_000,
    maxPingOut: 3,
    waitOnFirstConnect: opts.waitOnFirstConnect ?? false,
    noAsyncTraces: true,
  });
  if (opts.log) watchStatus(nc, opts.log);
  return nc;
}

/**
 * Whether the connection is up now: false from a disconnect until the client reconnects (or for good
 * once it closes). For readiness probes, which should say 503 while NATS is away, not only once the
 * client gives up.
 */
export function connectedProbe(nc: NatsConnection): () => boolean {
  let up = !nc.isClosed();
  void (async () => {
    for await (const s of nc.status()) {
      if (s.type === "disconnect") up = false;
      else if (s.type === "reconnect") up = true;
    }
    up = false;
  })();
  return () => up && !nc.isClosed();
}

async function watchStatus(nc: NatsConnection, log: Logger): Promise<void> {
  for await (const s of nc.status()) {
    switch (s.type) {
      case "disconnect":
        log.warn({ server: s.server }, "nats disconnected");
        break;
      case "reconnect":
        log.info({ server: s.server }, "nats reconnected");
        break;
      case "error":
        log.error({ err: s.error }, "nats error");
        break;
      default:
        break;
    }
  }
}

/** The server's version as `[major, minor, patch]`, for gating features newer than 2.9. */
export function serverVersion(nc: NatsConnection): [number, number, number] {
  const v = nc.info?.version ?? "0.0.0";
  const [a = 0, b = 0, c = 0] = v.split(/[.-]/).map((x) => Number.parseInt(x, 10) || 0);
  return [a, b, c];
}

/** True when the connected server is at least `major.minor`. */
export function serverAtLeast(nc: NatsConnection, major: number, minor: number): boolean {
  const [a, b] = serverVersion(nc);
  return a > major || (a === major && b >= minor);
}
