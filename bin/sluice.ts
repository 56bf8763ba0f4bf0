#!/usr/bin/env node
import { createClient } from "../client/index.ts";
import pkg from "../package.json" with { type: "json" };
import { parseCommandLine } from "./cli/args.ts";
import { describeError, Exit, exitCodeOf, UsageError } from "./cli/exit.ts";
import { dlq, keys, schedules } from "./cli/ops-commands.ts";
import { processOut } from "./cli/output.ts";
import { queues, stats, workers } from "./cli/queue-commands.ts";
import { enqueue, task } from "./cli/task-commands.ts";

/**
 * `sluice`: the command line for a Sluice gateway. `npx sluice --help` lists the commands; exit codes
 * are in bin/cli/exit.ts and docs/api.md.
 */

const HELP = `sluice — talk to a Sluice gateway

Usage: sluice [--url URL] [--api-key KEY] [--json] <command> …

Tasks
  enqueue <type> [payload] [-p priority] [--key idempotency-key] [--delay 30s] [--run-at time]
          [--task-timeout 5m] [--max-attempts n] [--concurrency-key k] [--wait [--timeout 30s]]
                                 payload: JSON, @file.json, or - for stdin
  task get <id>                  the task's record
  task watch <id> [--timeout 5m] follow it to the end, with a progress bar
  task cancel <id>               cancel (a running task is aborted)
  task retry <id>                run a failed/dead/cancelled/timed-out task again as a new task
  task list [--type t] [--status s] [--limit n] [--cursor c]

Queues and workers
  stats                          waiting tasks per type and priority, running, capacity
  queues [list]                  limits and state per type
  queues pause|resume <type>
  queues limit <type> [--concurrency n] [--rate 15/1m] [--max-depth n] [--key-concurrency n] [--clear field]
  workers [--all]                live workers (--all: stale and draining ones too)

Dead letters and schedules
  dlq list [--type t] [--limit n] [--cursor c]
  dlq replay <id>… | --type t | --all
  dlq purge <id>… | --type t | --all --yes
  schedules [list]
  schedules create --name n (--cron "0 */5 * * * *" [--tz Europe/Berlin] | --every 5m) --type t [--payload json]
  schedules pause|resume|delete <name>

Keys
  keys new --name n --scopes enqueue+read   a new API key and its SLUICE_API_KEYS entry (offline)

Options
  --url URL        gateway (default $SLUICE_URL or http://127.0.0.1:8080)
  --api-key KEY    API key (default $SLUICE_API_KEY)
  --json           machine-readable output (one JSON document, or one per line for task watch)
  -h, --help       this text;  --version  the version

Exit codes
  0 ok / task completed   1 task failed, timed out, was cancelled or died   2 bad command line
  3 not found   4 key missing, wrong or lacking the scope   5 gateway unreachable or unavailable
  6 request refused (invalid, conflicting, too large, queue full)   7 waiting timed out   10 unexpected
`;

async function main(argv: string[]): Promise<number> {
  let out = processOut({ color: false });
  try {
    const c = parseCommandLine(argv, process.env);
    out = processOut({ color: c.o.color });
    if (c.o.version) {
      out.line(pkg.version);
      return Exit.ok;
    }
    const command = c.words[0];
    if (c.o.help || command === undefined || command === "help") {
      out.line(HELP.trimEnd());
      return command === undefined && !c.o.help ? Exit.usage : Exit.ok;
    }
    if (command === "keys") return keys(c, out);
    const client = createClient({ url: c.o.url, apiKey: c.o.apiKey });
    switch (command) {
      case "enqueue":
        return await enqueue(c, client, out);
      case "task":
      case "tasks":
        return await task(c, client, out);
      case "stats":
        return await stats(c, client, out);
      case "queues":
      case "queue":
        return await queues(c, client, out);
      case "workers":
        return await workers(c, client, out);
      case "dlq":
        return await dlq(c, client, out);
      case "schedules":
      case "schedule":
        return await schedules(c, client, out);
      default:
        throw new UsageError(`unknown command ${command} (sluice --help lists them)`);
    }
  } catch (err) {
    const code = exitCodeOf(err);
    out.error(`sluice: ${describeError(err)}${code === Exit.usage ? " (sluice --help)" : ""}`);
    if (code === Exit.internal && process.env.SLUICE_DEBUG) out.error(String((err as Error)?.stack));
    return code;
  }
}

process.exitCode = await main(process.argv.slice(2));
