import type { NatsConnection } from "@nats-io/transport-node";
import type { Names } from "../../shared/names.ts";
import type { OutcomeNotice } from "../../shared/outcome-notice.ts";

/** Longest a notice waits, ms. */
const FLUSH_MS = 100;
/** A batch this large goes out at once (≈ 64 KiB of ids), well under any server's max_payload. */
const MAX_IDS = 2_000;

const encoder = new TextEncoder();

/** Batches this worker's outcome notices (see shared/outcome-notice.ts). */
export class OutcomeNotices {
  readonly #nc: NatsConnection;
  readonly #names: Names;
  readonly #pending = new Map<string, OutcomeNotice>();
  #timer: NodeJS.Timeout | undefined;

  constructor(nc: NatsConnection, names: Names) {
    this.#nc = nc;
    this.#names = names;
  }

  /** Note that task `id` of `type` ended with `status`. */
  add(type: string, status: string, id: string): void {
    const subject = this.#names.eventsSubject(type, status);
    let n = this.#pending.get(subject);
    if (!n) {
      n = { type, status, n: 0, ids: [], at: 0 };
      this.#pending.set(subject, n);
    }
    n.ids.push(id);
    if (n.ids.length >= MAX_IDS) this.#send(subject, n);
    else this.#timer ??= setTimeout(() => this.flush(), FLUSH_MS);
  }

  /** Send everything noted so far (also at shutdown, before the connection closes). */
  flush(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    for (const [subject, n] of this.#pending) this.#send(subject, n);
  }

  #send(subject: string, n: OutcomeNotice): void {
    this.#pending.delete(subject);
    if (this.#nc.isClosed()) return;
    n.n = n.ids.length;
    n.at = Date.now();
    try {
      this.#nc.publish(subject, encoder.encode(JSON.stringify(n)));
    } catch {
      // best effort: a notice lost to a closed connection is not counted (KV has the truth)
    }
  }
}
