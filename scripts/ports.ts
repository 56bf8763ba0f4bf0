import { createServer } from "node:net";
import { freePort } from "../shared/nats/local-server.ts";
import { DEFAULT_NATS_PORT } from "./config.ts";

/** True when nothing listens on `port` of `host` (we could bind it ourselves right now). */
export async function isPortFree(port: number, host = "127.0.0.1"): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createServer();
    s.unref();
    s.once("error", () => resolve(false));
    s.listen({ port, host, exclusive: true }, () => s.close(() => resolve(true)));
  });
}

/** Raised when an explicitly requested port is taken. */
export class PortBusyError extends Error {
  override name = "PortBusyError";
  readonly code = "port_busy";
}

/**
 * The port for our nats-server. An explicit NATS_PORT must be free (silently using another would
 * surprise whoever set it); the default 4222 is often taken by a system nats-server, so then any
 * free port will do.
 */
export async function chooseNatsPort(
  requested: number | undefined,
): Promise<{ port: number; fellBackFrom?: number }> {
  if (requested !== undefined) {
    if (await isPortFree(requested)) return { port: requested };
    throw new PortBusyError(`NATS_PORT ${requested} is in use; choose another or unset NATS_PORT`);
  }
  if (await isPortFree(DEFAULT_NATS_PORT)) return { port: DEFAULT_NATS_PORT };
  return { port: await freePort(), fellBackFrom: DEFAULT_NATS_PORT };
}
