import { InvalidArgumentError, InvalidSubjectError } from "@nats-io/transport-node";
import { PublishError } from "../../shared/nats/publisher.ts";

/**
 * Why a worker's write failed, which decides what happens next:
 * - `transient`: NATS is away or slow (closed or draining connection, no ack in time, no stream
 *   answering: 503). Retried, and the tasks message nak'd if it goes on.
 * - `too_large`: the message is over a size limit: the stream's `max_msg_size` (the state bucket's max
 *   value size) or the server's `max_payload`. The same message is refused every time.
 * - `refused`: any other refusal that sending the same message again cannot change (a JetStream API
 *   error about the message, a value that cannot be serialised).
 */
export type WriteFailure = "transient" | "too_large" | "refused";

/** JetStream `err_code` for a message over the stream's `max_msg_size` (HTTP-like status 400). */
export const MESSAGE_SIZE_EXCEEDED = 10054;

/**
 * Classify an error from an acknowledged publish (shared/nats/publisher.ts) or from building its
 * message. What nats.js v3 and nats-server give, checked against a real server in
 * test/worker/write-errors.test.ts:
 * - a message over the server's `max_payload` is refused by the client before it is sent:
 *   `InvalidArgumentError` "'payload' max_payload size exceeded" (v2's MAX_PAYLOAD_EXCEEDED code);
 * - the stream answers a JSON API error, surfaced as `PublishError` with its `status` and `err_code`
 *   (`apiCode`): 400/10054 "message size exceeds maximum allowed";
 * - a status-only answer (503 no responders) or no answer (408) is a `PublishError` with `apiCode` 0;
 * - a closed or draining connection throws `ClosedConnectionError` / `DrainingConnectionError`.
 * Anything not known to be permanent is transient, as every error was before.
 */
export function classifyWriteError(err: unknown): WriteFailure {
  if (err instanceof PublishError) {
    if (err.apiCode === MESSAGE_SIZE_EXCEEDED) return "too_large";
    // a 4xx API error judges the message itself; 5xx (store failed, JetStream not ready) may pass
    if (err.apiCode !== 0 && err.status >= 400 && err.status < 500 && err.status !== 408) return "refused";
    return "transient";
  }
  if (err instanceof InvalidArgumentError) return /max_payload/.test(err.message) ? "too_large" : "refused";
  if (err instanceof InvalidSubjectError) return "refused";
  // JSON.stringify: a cycle or a BigInt (TypeError); a string over V8's limit or nesting over the stack (RangeError)
  if (err instanceof RangeError) return /string length/i.test(err.message) ? "too_large" : "refused";
  if (err instanceof TypeError) return "refused";
  return "transient";
}
