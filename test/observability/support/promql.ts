import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { parse as parseYaml } from "yaml";

/**
 * Metric names used by the dashboards and alert rules, and metric names a live scrape exports: the two
 * sides of the "every metric we query exists" check. The PromQL reading is a small lexer, not a full
 * parser: it drops what cannot hold a metric name (strings, label matchers, ranges, label lists of
 * `by`/`on`/…, Grafana variables), then every remaining identifier that is not a keyword or a function
 * call is a metric name. `{__name__=...}` selectors are refused rather than silently missed.
 */

export const repoRoot = fileURLToPath(new URL("../../..", import.meta.url));

const KEYWORDS = new Set([
  "by",
  "without",
  "on",
  "ignoring",
  "group_left",
  "group_right",
  "bool",
  "and",
  "or",
  "unless",
  "offset",
  "atan2",
  "inf",
  "nan",
  "Inf",
  "NaN",
]);

/** Metric names in one PromQL expression (Grafana variables allowed). */
export function metricNamesIn(expr: string): Set<string> {
  if (/__name__/.test(expr)) throw new Error(`__name__ selectors are not checked; spell the metric: ${expr}`);
  let s = expr
    // Grafana variables: `$__rate_interval`, `${datasource}`, `$type`, `[[type]]`
    .replace(/\$\{[^}]*\}|\$\w+|\[\[\w+\]\]/g, "x")
    // string literals (label values, regexes)
    .replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`/g, '""')
    // label matchers and range / subquery selectors
    .replace(/\{[^}]*\}/g, " ")
    .replace(/\[[^\]]*\]/g, " ")
    // label lists of grouping and vector matching
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, " ");
  s = s.replace(/#[^\n]*/g, " ");
  const out = new Set<string>();
  for (const m of s.matchAll(/(?<![\w.:])([A-Za-z_:][\w:]*)(\s*\()?/g)) {
    const [, name, call] = m;
    if (call || KEYWORDS.has(name!)) continue;
    out.add(name!);
  }
  return out;
}

/** Every PromQL expression of a Grafana dashboard: panel targets (rows included) and query variables. */
export function dashboardExpressions(dashboard: unknown): string[] {
  const out: string[] = [];
  const walk = (v: unknown): void => {
    if (Array.isArray(v)) v.forEach(walk);
    else if (v && typeof v === "object") {
      const o = v as Record<string, unknown>;
      if (typeof o.expr === "string") out.push(o.expr);
      for (const [k, c] of Object.entries(o)) if (k !== "expr") walk(c);
    }
  };
  const d = dashboard as { panels?: unknown; templating?: { list?: { type?: string; query?: unknown }[] } };
  walk(d.panels);
  for (const v of d.templating?.list ?? []) {
    if (v.type !== "query") continue;
    const q = typeof v.query === "string" ? v.query : (v.query as { query?: string } | undefined)?.query;
    if (!q) continue;
    // label_values(metric, label) is Grafana's, not PromQL: the metric is its first argument
    const lv = /^label_values\(\s*([^,)]+)\s*,/.exec(q);
    out.push(lv ? lv[1]! : q);
  }
  return out;
}

/** Every `expr` of a Prometheus rules file. */
export function ruleExpressions(rulesYaml: string): string[] {
  const doc = parseYaml(rulesYaml) as { groups: { rules: { expr: string }[] }[] };
  return doc.groups.flatMap((g) => g.rules.map((r) => String(r.expr)));
}

/** Metric names the deploy/ dashboards and rules use, each with where it is used. */
export function usedMetricNames(): Map<string, string> {
  const used = new Map<string, string>();
  const add = (exprs: string[], where: string) => {
    for (const e of exprs) for (const n of metricNamesIn(e)) if (!used.has(n)) used.set(n, where);
  };
  const dash = JSON.parse(readFileSync(`${repoRoot}/deploy/grafana/dashboards/sluice.json`, "utf8"));
  add(dashboardExpressions(dash), "deploy/grafana/dashboards/sluice.json");
  add(
    ruleExpressions(readFileSync(`${repoRoot}/deploy/prometheus/alerts.yml`, "utf8")),
    "deploy/prometheus/alerts.yml",
  );
  return used;
}

/**
 * Names a Prometheus text exposition makes queryable: every sample name, plus the series names its
 * `# TYPE` lines imply (a histogram with no observation yet still has `_bucket`, `_sum`, `_count`).
 */
export function exportedNames(exposition: string): Set<string> {
  const out = new Set<string>();
  for (const line of exposition.split("\n")) {
    const type = /^# TYPE (\S+) (\w+)/.exec(line);
    if (type) {
      const [, name, kind] = type;
      if (kind === "histogram") for (const s of ["_bucket", "_sum", "_count"]) out.add(name + s);
      else if (kind === "summary") for (const s of ["", "_sum", "_count"]) out.add(name + s);
      else out.add(name!);
      continue;
    }
    const sample = /^([A-Za-z_:][\w:]*)[{ ]/.exec(line);
    if (sample) out.add(sample[1]!);
  }
  return out;
}

/** One sample of a scrape: labels and value. */
export type Sample = { name: string; labels: Record<string, string>; value: number };

/** The samples of a text exposition. */
export function parseSamples(exposition: string): Sample[] {
  const out: Sample[] = [];
  for (const line of exposition.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const m = /^([A-Za-z_:][\w:]*)(?:\{(.*)\})? (\S+)/.exec(line);
    if (!m) continue;
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = l[2]!;
    out.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return out;
}

/** Sum of the samples of `name` whose labels include `match`. */
export function sumOf(samples: Sample[], name: string, match: Record<string, string> = {}): number {
  return samples
    .filter((s) => s.name === name && Object.entries(match).every(([k, v]) => s.labels[k] === v))
    .reduce((a, s) => a + s.value, 0);
}
