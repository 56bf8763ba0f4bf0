import { type Logger, pino } from "pino";

export type { Logger };

/**
 * One pino logger per process, with `service` on every line. Task-related lines add `taskId`, `type`
 * and `traceId` through child loggers; payloads are never logged.
 */
export function createLogger(opts: { service: string; level: string; format: "json" | "pretty" }): Logger {
  const base = { service: opts.service };
  if (opts.format === "pretty") {
    return pino({
      level: opts.level,
      base,
      transport: {
        target: "pino-pretty",
        options: { colorize: true, ignore: "pid,hostname", messageFormat: "[{service}] {msg}" },
      },
    });
  }
  return pino({ level: opts.level, base, timestamp: pino.stdTimeFunctions.isoTime });
}
