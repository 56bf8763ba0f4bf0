import { z } from "zod";
import { ConfigError } from "../../../shared/config.ts";
import type { Priority } from "../../../shared/priority.ts";
import { PriorityInput, TaskType } from "../../../shared/task.ts";

/**
 * Configured Appwrite webhooks: for each name (the last segment of `/v1/appwrite/webhooks/:name`) the
 * signing secret Appwrite shows for the webhook, the URL exactly as entered in Appwrite (it is part of
 * what Appwrite signs) and the rules that turn events into tasks.
 */

/** An event-name pattern: dot-separated segments, `*` matching exactly one segment. */
const EventPattern = z
  .string()
  .min(1)
  .max(512)
  .regex(/^(\*|[A-Za-z0-9_$-]+)(\.(\*|[A-Za-z0-9_$-]+))*$/, {
    message: "must be dot-separated segments, each a name or *",
  });

const Rule = z.strictObject({
  /** One pattern or several; the rule applies when any matches any of the delivery's events. */
  events: z.union([EventPattern, z.array(EventPattern).min(1).max(64)]),
  /** Task type to enqueue. */
  type: TaskType,
  /** Priority of the task (default normal). */
  priority: PriorityInput.optional(),
});

const Webhook = z.strictObject({
  secret: z.string().min(8).max(256),
  url: z.url({ protocol: /^https?$/ }),
  rules: z.array(Rule).min(1).max(256),
});

const Webhooks = z.record(z.string().regex(/^[A-Za-z0-9_-]{1,64}$/), Webhook);

/** One rule, compiled. */
export type AppwriteRule = {
  readonly patterns: readonly string[];
  readonly matchers: readonly RegExp[];
  readonly type: string;
  readonly priority: Priority | undefined;
};

/** One configured webhook. */
export type AppwriteWebhook = {
  readonly name: string;
  readonly secret: string;
  readonly url: string;
  readonly rules: readonly AppwriteRule[];
};

/**
 * Parse and merge the webhook sources in order (a later source replaces a webhook of the same name).
 * Throws ConfigError naming the variable and the field, never echoing a secret.
 */
export function parseAppwriteWebhooks(
  sources: [variable: string, json: string | undefined][],
): ReadonlyMap<string, AppwriteWebhook> {
  const out = new Map<string, AppwriteWebhook>();
  for (const [variable, json] of sources) {
    if (json === undefined || json.trim() === "") continue;
    let raw: unknown;
    try {
      raw = JSON.parse(json);
    } catch {
      throw new ConfigError(`invalid configuration:\n  ${variable}: not valid JSON`);
    }
    const r = Webhooks.safeParse(raw);
    if (!r.success) {
      const lines = r.error.issues.slice(0, 5).map((i) => `  ${variable}: ${i.path.join(".")}: ${i.message}`);
      throw new ConfigError(`invalid configuration:\n${lines.join("\n")}`);
    }
    for (const [name, w] of Object.entries(r.data)) {
      out.set(
        name,
        Object.freeze({
          name,
          secret: w.secret,
          url: w.url,
          rules: Object.freeze(
            w.rules.map((rule) => {
              const patterns = typeof rule.events === "string" ? [rule.events] : rule.events;
              return Object.freeze({
                patterns,
                matchers: patterns.map(compilePattern),
                type: rule.type,
                priority: rule.priority,
              });
            }),
          ),
        }),
      );
    }
  }
  return out;
}

/** `databases.*.collections.x.documents.*.create` → a regex where each `*` is one segment. */
export function compilePattern(p: string): RegExp {
  const body = p
    .split(".")
    .map((seg) => (seg === "*" ? "[^.]+" : seg.replace(/[$]/g, "\\$")))
    .join("\\.");
  return new RegExp(`^${body}$`);
}
