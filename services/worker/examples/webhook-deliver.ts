import { createHmac } from "node:crypto";
import { z } from "zod";
import { NonRetryableError } from "../../../shared/errors.ts";
import { defineTask } from "../sdk.ts";

/**
 * HTTP POST of a JSON body to a URL, signed with HMAC-SHA256 over `<timestamp>.<body>` in
 * `X-Sluice-Signature: t=<unix s>,v1=<hex>` (the secret comes from the worker's config, so payloads
 * never carry it). 2xx completes; 4xx other than 408/429 fails without retry (the receiver refused it);
 * 5xx, 408, 429 and network errors fail retryably.
 */
export function makeWebhookDeliver(secret: string) {
  return defineTask({
    type: "webhook.deliver",
    payload: z.strictObject({
      url: z.url({ protocol: /^https?$/ }),
      body: z.json(),
      headers: z.record(z.string(), z.string()).optional(),
      timeoutMs: z.number().int().min(100).max(120_000).default(10_000),
    }),
    concurrency: 20,
    timeoutMs: 130_000,
    handler: async (p, ctx) => {
      const body = JSON.stringify(p.body);
      const t = Math.floor(Date.now() / 1000);
      const sig = createHmac("sha256", secret).update(`${t}.${body}`).digest("hex");
      const signal = AbortSignal.any([ctx.signal, AbortSignal.timeout(p.timeoutMs)]);
      const started = Date.now();
      const res = await fetch(p.url, {
        method: "POST",
        body,
        signal,
        redirect: "manual",
        headers: {
          ...p.headers,
          "content-type": "application/json",
          "user-agent": "sluice-webhook/1",
          "x-sluice-task-id": ctx.id,
          "x-sluice-signature": `t=${t},v1=${sig}`,
        },
      });
      // read (and bound) the body so the connection is reused
      const text = (await res.text()).slice(0, 2048);
      const out = { status: res.status, durationMs: Date.now() - started, response: text };
      if (res.ok) return out;
      const msg = `receiver answered ${res.status}`;
      if (res.status >= 400 && res.status < 500 && res.status !== 408 && res.status !== 429)
        throw new NonRetryableError(msg, { code: "webhook_rejected" });
      throw new Error(msg);
    },
  });
}
