import type { SluiceClient } from "../../client/index.ts";
import { keyEntry, newApiKey, SCOPES, type Scope } from "../../services/enqueue/auth/keys.ts";
import { type CommandLine, int, jsonArg, str, word } from "./args.ts";
import { Exit, UsageError } from "./exit.ts";
import { duration, type Out, paint, short, table } from "./output.ts";

/** `sluice dlq …`, `sluice schedules …` and `sluice keys new`. */

type DeadLetter = {
  id: string;
  type: string;
  attempts: number;
  deadAt: number;
  error: { code: string; message: string };
};

/** `sluice dlq list | replay (<id>… | --type t | --all) | purge (<id>… | --type t | --all --yes)`. */
export async function dlq(c: CommandLine, client: SluiceClient, out: Out): Promise<number> {
  const sub = c.words[1] ?? "list";
  if (sub === "list") {
    const q: { type?: string; limit?: number; cursor?: number } = {};
    const type = str(c.o, "type");
    if (type) q.type = type;
    const limit = int(c.o, "limit", 1, 500);
    if (limit) q.limit = limit;
    const cursor = int(c.o, "cursor", 0);
    if (cursor !== undefined) q.cursor = cursor;
    const r = (await client.dlq.list(q)) as { items: DeadLetter[]; nextCursor?: number };
    if (c.o.json) out.line(JSON.stringify(r));
    else {
      const now = Date.now();
      table(
        out,
        ["ID", "TYPE", "ATTEMPTS", "DIED", "ERROR"],
        r.items.map((d) => [
          d.id,
          d.type,
          String(d.attempts),
          `${duration(now - d.deadAt)} ago`,
          short(`${d.error.code}: ${d.error.message}`, 70),
        ]),
      );
      if (r.nextCursor !== undefined) out.line(paint(out, "dim", `more: --cursor ${r.nextCursor}`));
    }
    return Exit.ok;
  }
  const ids = c.words.slice(2);
  const selector: { ids?: string[]; type?: string; all?: boolean } = {};
  if (ids.length > 0) selector.ids = ids;
  const type = str(c.o, "type");
  if (type) selector.type = type;
  if (c.o.all === true) selector.all = true;
  if (!selector.ids && !selector.type && !selector.all)
    throw new UsageError(`dlq ${sub} needs ids, --type or --all`);
  if (sub === "replay") {
    const r = (await client.dlq.replay(selector)) as { replayed: { id: string; newId: string }[] };
    if (c.o.json) out.line(JSON.stringify(r));
    else {
      for (const x of r.replayed) out.line(`${x.id} → ${x.newId}`);
      out.line(`${r.replayed.length} replayed`);
    }
    return Exit.ok;
  }
  if (sub === "purge") {
    if (selector.all && c.o.yes !== true)
      throw new UsageError("dlq purge --all removes every dead letter: add --yes");
    const r = (await client.dlq.purge(selector)) as { purged: number };
    out.line(c.o.json ? JSON.stringify(r) : `${r.purged} purged`);
    return Exit.ok;
  }
  throw new UsageError(`unknown dlq command ${sub}: use list, replay or purge`);
}

type Schedule = {
  name: string;
  cron?: string;
  every?: number;
  timezone?: string;
  task: { type: string };
  paused: boolean;
  nextRunAt: number;
  lastRunAt?: number;
};

/** `sluice schedules [list] | create --name n (--cron c [--tz z] | --every 5m) --type t [--payload json] | pause|resume|delete <name>`. */
export async function schedules(c: CommandLine, client: SluiceClient, out: Out): Promise<number> {
  const sub = c.words[1] ?? "list";
  if (sub === "list") {
    const r = (await client.schedules.list()) as { schedules: Schedule[] };
    if (c.o.json) out.line(JSON.stringify(r));
    else {
      const now = Date.now();
      table(
        out,
        ["NAME", "SCHEDULE", "TYPE", "STATE", "NEXT", "LAST"],
        r.schedules.map((s) => [
          s.name,
          s.cron ? `${s.cron}${s.timezone ? ` (${s.timezone})` : ""}` : `every ${duration(s.every ?? 0)}`,
          s.task.type,
          s.paused ? paint(out, "yellow", "paused") : "active",
          s.paused ? "-" : `in ${duration(Math.max(0, s.nextRunAt - now))}`,
          s.lastRunAt ? `${duration(now - s.lastRunAt)} ago` : "-",
        ]),
      );
    }
    return Exit.ok;
  }
  if (sub === "create") {
    const name = str(c.o, "name");
    const type = str(c.o, "type");
    if (!name || !type)
      throw new UsageError("schedules create needs --name and --type, and --cron or --every");
    const body: Record<string, unknown> = { name, task: { type } };
    const payload = str(c.o, "payload");
    if (payload !== undefined) (body.task as Record<string, unknown>).payload = jsonArg(payload, "--payload");
    const priority = str(c.o, "priority");
    if (priority !== undefined) (body.task as Record<string, unknown>).priority = priority;
    const cron = str(c.o, "cron");
    if (cron !== undefined) body.cron = cron;
    const every = str(c.o, "every");
    if (every !== undefined) body.every = /^\d+$/.test(every) ? Number(every) : every;
    const tz = str(c.o, "tz");
    if (tz !== undefined) body.timezone = tz;
    const r = (await client.schedules.create(body)) as Schedule;
    out.line(
      c.o.json ? JSON.stringify(r) : `created ${r.name}; next run ${new Date(r.nextRunAt).toISOString()}`,
    );
    return Exit.ok;
  }
  const name = word(c, 2, "schedule name");
  const r =
    sub === "pause"
      ? await client.schedules.pause(name)
      : sub === "resume"
        ? await client.schedules.resume(name)
        : sub === "delete"
          ? await client.schedules.delete(name)
          : undefined;
  if (r === undefined)
    throw new UsageError(`unknown schedules command ${sub}: use list, create, pause, resume or delete`);
  const done = { pause: "paused", resume: "resumed", delete: "deleted" }[sub];
  out.line(c.o.json ? JSON.stringify(r) : `${done} ${name}`);
  return Exit.ok;
}

/** `sluice keys new --name n --scopes enqueue+read`: a fresh key and its SLUICE_API_KEYS entry (offline). */
export function keys(c: CommandLine, out: Out): number {
  const sub = word(c, 1, "keys command: new");
  if (sub !== "new") throw new UsageError(`unknown keys command ${sub}: use new`);
  const name = str(c.o, "name");
  const scopes = (str(c.o, "scopes") ?? "").split(/[+,]/).filter(Boolean);
  if (!name || !/^[A-Za-z0-9_.-]{1,64}$/.test(name))
    throw new UsageError("keys new needs --name (letters, digits, . _ -)");
  if (scopes.length === 0 || scopes.some((s) => !(SCOPES as readonly string[]).includes(s))) {
    throw new UsageError(`--scopes must be one or more of ${SCOPES.join(", ")}, joined with +`);
  }
  const key = newApiKey();
  const entry = keyEntry(name, scopes as Scope[], key);
  if (c.o.json) out.line(JSON.stringify({ name, scopes, key, entry }));
  else {
    out.line(`key    ${key}`);
    out.line(`entry  ${entry}`);
    out.line(
      paint(
        out,
        "dim",
        "Give the key to the caller; add the entry to SLUICE_API_KEYS (the gateway stores only the hash).",
      ),
    );
  }
  return Exit.ok;
}
