/**
 * The human table (stderr). Columns are the systems, rows the measures; a missing figure prints as "–"
 * and a failed system prints its error under the table.
 */

type Cell = number | string | null | undefined;

/** A row label and one value per column. */
export type Row = [label: string, ...cells: Cell[]];

/** Render rows under a header as an aligned text table. */
export function table(header: string[], rows: Row[]): string {
  const text = (c: Cell) =>
    c === null || c === undefined ? "–" : typeof c === "number" ? c.toLocaleString("en-US") : c;
  const cells = [header, ...rows.map((r) => r.map((c, i) => (i === 0 ? String(c) : text(c))))];
  const widths = header.map((_, i) => Math.max(...cells.map((r) => String(r[i] ?? "").length)));
  const line = (r: Cell[]) =>
    r.map((c, i) => (i === 0 ? String(c).padEnd(widths[i]!) : String(c).padStart(widths[i]!))).join("  ");
  const sep = widths.map((w) => "-".repeat(w)).join("  ");
  return [line(cells[0]!), sep, ...cells.slice(1).map(line)].join("\n");
}
