/**
 * Human-readable lines for `npm start`: the services log pino JSON (what production collects), and
 * the supervisor turns each line into `time  source  LEVEL  msg key=value…`. Parsing here rather than
 * running the services with LOG_FORMAT=pretty keeps their `ready` line machine-readable.
 */

/** A parsed service log line. */
export type LogRecord = Record<string, unknown> & { msg?: unknown; level?: unknown };

const PINO_LEVELS: Record<number, string> = {
  10: "TRACE",
  20: "DEBUG",
  30: "INFO",
  40: "WARN",
  50: "ERROR",
  60: "FATAL",
};
const NATS_LEVELS: Record<string, string> = {
  TRC: "TRACE",
  DBG: "DEBUG",
  INF: "INFO",
  WRN: "WARN",
  ERR: "ERROR",
  FTL: "FATAL",
};
// Fields every pino line carries that a human does not need repeated on each line.
const HIDDEN = new Set(["level", "time", "pid", "hostname", "service", "msg"]);
// nats-server: `[pid] 2026/01/02 15:04:05.000000 [INF] message`
const NATS_LINE = /^\[\d+\] \S+ \S+ \[([A-Z]{3})\] (.*)$/;

const ANSI = { reset: "\x1b[0m", dim: "\x1b[2m", red: "\x1b[31m", yellow: "\x1b[33m", bold: "\x1b[1m" };
const SOURCE_COLORS = ["\x1b[36m", "\x1b[35m", "\x1b[32m", "\x1b[34m", "\x1b[33m", "\x1b[37m"];

/** Parse a line as a pino JSON record, or undefined when it is not one. */
export function parseJsonLine(line: string): LogRecord | undefined {
  if (!line.startsWith("{")) return undefined;
  try {
    const v: unknown = JSON.parse(line);
    return v && typeof v === "object" && !Array.isArray(v) ? (v as LogRecord) : undefined;
  } catch {
    return undefined;
  }
}

/** Options of {@link createFormatter}. */
export type FormatterOptions = {
  /** ANSI colours (when stdout is a terminal). */
  color: boolean;
  /** Names of every source, to pad them to one width. */
  sources: readonly string[];
  /** Clock, for tests. */
  now?: () => Date;
};

/** Renders lines for humans. */
export type Formatter = {
  /** One output line of `source` (pino JSON, nats-server text, or anything else). */
  line(source: string, line: string): string;
  /** A message of our own. */
  record(source: string, level: "INFO" | "WARN" | "ERROR", text: string): string;
};

/** Build the formatter `npm start` prints every child's output through. */
export function createFormatter(o: FormatterOptions): Formatter {
  const width = Math.max(...o.sources.map((s) => s.length));
  const now = o.now ?? (() => new Date());
  const paint = (code: string, s: string) => (o.color ? `${code}${s}${ANSI.reset}` : s);
  const sourceColor = (s: string) => SOURCE_COLORS[Math.max(0, o.sources.indexOf(s)) % SOURCE_COLORS.length]!;
  const record = (source: string, level: string, text: string) => {
    const lvl = level.padEnd(5);
    const shownLevel =
      level === "ERROR" || level === "FATAL"
        ? paint(ANSI.red + ANSI.bold, lvl)
        : level === "WARN"
          ? paint(ANSI.yellow, lvl)
          : paint(ANSI.dim, lvl);
    return `${paint(ANSI.dim, clock(now()))} ${paint(sourceColor(source), source.padEnd(width))} ${shownLevel} ${text}`;
  };
  return {
    line: (source, line) => {
      const r = render(line);
      return record(source, r.level, r.text);
    },
    record,
  };
}

function render(line: string): { level: string; text: string } {
  const rec = parseJsonLine(line);
  if (rec) {
    const level = typeof rec.level === "number" ? (PINO_LEVELS[rec.level] ?? String(rec.level)) : "INFO";
    const extras = Object.entries(rec)
      .filter(([k]) => !HIDDEN.has(k))
      .map(([k, v]) => `${k}=${showValue(v)}`);
    return { level, text: [String(rec.msg ?? ""), ...extras].join(" ") };
  }
  const m = NATS_LINE.exec(line);
  if (m) return { level: NATS_LEVELS[m[1]!] ?? m[1]!, text: m[2]! };
  return { level: "", text: line };
}

function showValue(v: unknown): string {
  if (typeof v === "string") return /[\s"=]/.test(v) || v === "" ? JSON.stringify(v) : v;
  if (v && typeof v === "object" && "message" in v) {
    // pino serializes errors as {type, message, stack}: the message is what a human needs inline
    const e = v as { type?: unknown; message?: unknown };
    return JSON.stringify(`${e.type ? `${String(e.type)}: ` : ""}${String(e.message)}`);
  }
  return JSON.stringify(v) ?? String(v);
}

function clock(d: Date): string {
  const p = (n: number, w = 2) => String(n).padStart(w, "0");
  return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}`;
}
