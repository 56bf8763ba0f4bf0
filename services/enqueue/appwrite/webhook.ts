import { createHash, createHmac, timingSafeEqual } from "node:crypto";
import type { Priority } from "../../../shared/priority.ts";
import type { AppwriteRule, AppwriteWebhook } from "./config.ts";

/**
 * Appwrite webhook deliveries: signature check and the tasks a delivery becomes.
 *
 * Appwrite signs `base64(HMAC-SHA1(secret, url + body))` with the URL as entered in its console and
 * the raw body, and sends it as `X-Appwrite-Webhook-Signature`. The body must be checked as received:
 * Appwrite's PHP escapes `/` as `\/`, so a re-serialised body would not verify.
 */

/** The headers of a delivery that matter here (lower-cased, as Node gives them). */
export type DeliveryHeaders = Record<string, string | string[] | undefined>;

/** What a matched delivery enqueues; `payload` is what the handler receives. */
export type AppwriteTask = {
  type: string;
  payload: AppwritePayload;
  priority?: Priority;
  idempotencyKey: string;
};

/** The handler's payload for an Appwrite event. */
export type AppwritePayload = {
  source: "appwrite";
  /** The most specific event name the rule matched. */
  event: string;
  /** Every event name of the delivery, most specific first. */
  events: string[];
  webhook: { id: string | null; name: string; projectId: string | null; userId: string | null };
  /** The resource the event is about (a document, a file, …), as Appwrite sent it. */
  body: unknown;
};

/** True when `signature` is Appwrite's signature of `raw` for this webhook. Constant time in the signature. */
export function verifySignature(w: AppwriteWebhook, raw: Buffer, signature: string | undefined): boolean {
  if (!signature) return false;
  const given = Buffer.from(signature.trim(), "utf8");
  let ok = false;
  // Older Appwrite servers decoded %-escapes in the URL before signing; recent ones sign it as entered.
  for (const url of urlVariants(w.url)) {
    const expected = Buffer.from(
      createHmac("sha1", w.secret).update(url, "utf8").update(raw).digest("base64"),
    );
    if (expected.length === given.length && timingSafeEqual(expected, given)) ok = true;
  }
  return ok;
}

function urlVariants(url: string): string[] {
  try {
    const decoded = decodeURIComponent(url);
    return decoded === url ? [url] : [url, decoded];
  } catch {
    return [url];
  }
}

/** Event names of a delivery (`X-Appwrite-Webhook-Events`, comma-joined). */
export function deliveryEvents(h: DeliveryHeaders): string[] {
  return header(h, "x-appwrite-webhook-events")
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean);
}

/**
 * The tasks a verified delivery becomes: one per rule whose pattern matches any of its events (in the
 * configured order). Each gets an idempotency key derived from the webhook, the rule's type, the event
 * and the body's SHA-256, so a repeated delivery of the same event lands on the same task.
 */
export function tasksForDelivery(
  w: AppwriteWebhook,
  h: DeliveryHeaders,
  raw: Buffer,
  body: unknown,
): AppwriteTask[] {
  const events = deliveryEvents(h);
  const digest = createHash("sha256").update(raw).digest("base64url");
  const tasks: AppwriteTask[] = [];
  for (const rule of w.rules) {
    const event = firstMatch(rule, events);
    if (event === undefined) continue;
    const payload: AppwritePayload = {
      source: "appwrite",
      event,
      events,
      webhook: {
        id: header(h, "x-appwrite-webhook-id") || null,
        name: w.name,
        projectId: header(h, "x-appwrite-webhook-project-id") || null,
        userId: header(h, "x-appwrite-webhook-user-id") || null,
      },
      body,
    };
    const key = createHash("sha256").update(`${w.name}\0${event}\0${digest}`).digest("base64url");
    const task: AppwriteTask = { type: rule.type, payload, idempotencyKey: `appwrite:${key}` };
    if (rule.priority !== undefined) task.priority = rule.priority;
    tasks.push(task);
  }
  return tasks;
}

function firstMatch(rule: AppwriteRule, events: readonly string[]): string | undefined {
  return events.find((e) => rule.matchers.some((m) => m.test(e)));
}

function header(h: DeliveryHeaders, name: string): string {
  const v = h[name];
  return (Array.isArray(v) ? v[0] : v) ?? "";
}
