/**
 * Terminal output of `sluice`: aligned tables, key/value blocks, relative times, colour only on a
 * terminal (and never with NO_COLOR), and a progress bar.
 */

/** Where output goes. */
export type Out = {
  /** Print a line on stdout. */
  line(text?: string): void;
  /** Print a line on stderr. */
  error(text: string): void;
  /** Rewrite the current terminal line (progress); plain lines when not a terminal. */
  status(text: string): void;
  readonly tty: boolean;
  readonly color: boolean;
};

/** Output to the process's streams. */
export function processOut(o: { color: boolean }): Out {
  const tty = process.stdout.isTTY === true;
  let statusShown = false;
  const clearStatus = () => {
    if (statusShown) process.stdout.write("\r\x1b[2K");
    statusShown = false;
  };
  return {
    tty,
    color: o.color && tty,
    line(text = "") {
      clearStatus();
      process.stdout.write(`${text}\n`);
    },
    error(text) {
      clearStatus();
      process.stderr.write(`${text}\n`);
    },
    status(text) {
      if (!tty) {
        process.stdout.write(`${text}\n`);
        return;
      }
      process.stdout.write(`\r\x1b[2K${text}`);
      statusShown = true;
    },
  };
}

const CODES: Record<string, [number, number]> = {
  bold: [1, 22],
  dim: [2, 22],
  red: [31, 39],
  green: [32, 39],
  yellow: [33, 39],
  blue: [34, 39],
  cyan: [36, 39],
};

/** Colour a text when the output allows it. */
export function paint(out: Out, style: keyof typeof CODES, text: string): string {
  if (!out.color) return text;
  const [a, b] = CODES[style]!;
  return `\x1b[${a}m${text}\x1b[${b}m`;
}

/** Colour of a status: green done, red failed, yellow waiting, cyan running. */
export function statusText(out: Out, status: string): string {
  const style =
    status === "completed"
      ? "green"
      : ["failed", "timed_out", "dead", "cancelled"].includes(status)
        ? "red"
        : status === "running" || status === "dispatched"
          ? "cyan"
          : "yellow";
  return paint(out, style, status);
}

// biome-ignore lint/suspicious/noControlCharactersInRegex: strips the colour codes this module writes
const ANSI = /\x1b\[[0-9;]*m/g;
const width = (s: string) => s.replace(ANSI, "").length;

/** An aligned table with a header row; cells are strings (already coloured if wanted). */
export function table(out: Out, headers: string[], rows: string[][]): void {
  if (rows.length === 0) {
    out.line(paint(out, "dim", "(none)"));
    return;
  }
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => width(r[i] ?? ""))));
  const fmt = (cells: string[]) =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c + " ".repeat(widths[i]! - width(c))))
      .join("  ")
      .trimEnd();
  out.line(paint(out, "bold", fmt(headers)));
  for (const r of rows) out.line(fmt(r));
}

/** `key  value` lines, keys aligned; undefined values are left out. */
export function fields(out: Out, entries: [string, string | undefined][]): void {
  const shown = entries.filter((e): e is [string, string] => e[1] !== undefined);
  const w = Math.max(...shown.map(([k]) => k.length));
  for (const [k, v] of shown) out.line(`${paint(out, "dim", k.padEnd(w))}  ${v}`);
}

/** `3.2s`, `450ms`, `2m05s`, `1h02m`. */
export function duration(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)}ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)}s`;
  if (ms < 3_600_000)
    return `${Math.floor(ms / 60_000)}m${String(Math.floor((ms % 60_000) / 1000)).padStart(2, "0")}s`;
  return `${Math.floor(ms / 3_600_000)}h${String(Math.floor((ms % 3_600_000) / 60_000)).padStart(2, "0")}m`;
}

/** An epoch-ms time as ISO text with how long ago (or from now) it is. */
export function when(ms: number | undefined, now = Date.now()): string | undefined {
  if (ms === undefined) return undefined;
  const d = now - ms;
  const rel = d >= 0 ? `${duration(d)} ago` : `in ${duration(-d)}`;
  return `${new Date(ms).toISOString()} (${rel})`;
}

/** `[██████░░░░] 60%` */
export function bar(percent: number, cells = 24): string {
  const p = Math.max(0, Math.min(100, percent));
  const full = Math.round((p / 100) * cells);
  return `[${"█".repeat(full)}${"░".repeat(cells - full)}] ${String(Math.round(p)).padStart(3)}%`;
}

/** JSON, shortened for a terminal cell. */
export function short(v: unknown, max = 60): string {
  const s = typeof v === "string" ? v : JSON.stringify(v);
  if (s === undefined) return "";
  return s.length > max ? `${s.slice(0, max - 1)}…` : s;
}
