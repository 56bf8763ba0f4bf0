import { JetStreamApiError, JetStreamError } from "@nats-io/jetstream";
import {
  ClosedConnectionError,
  ConnectionError,
  DrainingConnectionError,
  NoRespondersError,
  RequestError,
  TimeoutError,
} from "@nats-io/transport-node";
import { isSluiceError, UnavailableError } from "../../shared/errors.ts";
import { PublishError } from "../../shared/nats/publisher.ts";

/**
 * NATS failures as the API reports them: a request that reached NATS while it was going away (before
 * the link noticed), timed out, or met a missing stream is a 503 with Retry-After — the caller should
 * come back — never a 500. Anything else is passed through unchanged.
 */
export function asUnavailable(err: unknown): unknown {
  if (isSluiceError(err)) return err;
  const transport =
    err instanceof TimeoutError ||
    err instanceof NoRespondersError ||
    err instanceof RequestError ||
    err instanceof ClosedConnectionError ||
    err instanceof DrainingConnectionError ||
    err instanceof ConnectionError ||
    (err instanceof PublishError && (err.status === 503 || err.status === 408));
  // a stream or consumer that is missing or answering 503 (JetStream restarting, topology re-created)
  const jetstream =
    (err instanceof JetStreamApiError && (err.status === 503 || /not found/i.test(err.message))) ||
    (err instanceof JetStreamError && /timeout|no responders|heartbeat/i.test(err.message));
  if (transport || jetstream) {
    return new UnavailableError(`NATS did not answer: ${(err as Error).message}`, { cause: err });
  }
  return err;
}
