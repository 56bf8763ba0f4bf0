import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { parse as parseYaml } from "yaml";
import {
  dashboardExpressions,
  exportedNames,
  metricNamesIn,
  repoRoot,
  usedMetricNames,
} from "./support/promql.ts";

const dashboard = JSON.parse(readFileSync(`${repoRoot}/deploy/grafana/dashboards/sluice.json`, "utf8")) as {
  uid: string;
  panels: Panel[];
  templating: { list: { name: string; type: string; query?: unknown }[] };
};
/** How panels name the datasource: Grafana's `${datasource}` variable. */
const DS_VAR = ["$", "{datasource}"].join("");

type Panel = {
  id: number;
  type: string;
  title: string;
  gridPos: { x: number; y: number; w: number; h: number };
  datasource?: { uid?: string };
  targets?: { expr?: string; datasource?: { uid?: string } }[];
};

describe("observability - PromQL metric names", () => {
  it("finds the metrics of an expression and nothing else", () => {
    expect([
      ...metricNamesIn(
        'histogram_quantile(0.99, sum by (le, type) (rate(sluice_task_wait_seconds_bucket{type=~"$type", le!="+Inf"}[$__rate_interval])))',
      ),
    ]).toEqual(["sluice_task_wait_seconds_bucket"]);
    expect(
      [
        ...metricNamesIn(
          "sum by (type) (sluice_queue_depth) > 0 unless on (type) max by (type) (sluice_workers_live offset 5m) > 1e3",
        ),
      ].sort(),
    ).toEqual(["sluice_queue_depth", "sluice_workers_live"]);
    expect([...metricNamesIn("deriv(sum by (type) (sluice_queue_depth)[5m:30s]) > 0")]).toEqual([
      "sluice_queue_depth",
    ]);
    expect([...metricNamesIn('(max(up{job="x"}) or vector(0)) < 1')]).toEqual(["up"]);
    expect(
      [...metricNamesIn("sum(a) without (instance) / ignoring(x) group_left(y) b_total")].sort(),
    ).toEqual(["a", "b_total"]);
  });

  it("refuses __name__ selectors instead of missing their metrics", () => {
    expect(() => metricNamesIn('{__name__=~"sluice_.*"}')).toThrow(/__name__/);
  });

  it("reads every series name a scrape makes queryable, histograms without observations included", () => {
    const names = exportedNames(
      [
        "# HELP a_seconds x",
        "# TYPE a_seconds histogram",
        "# TYPE b_total counter",
        'b_total{type="x"} 1',
        "# TYPE c gauge",
        "c 0",
      ].join("\n"),
    );
    expect([...names].sort()).toEqual([
      "a_seconds_bucket",
      "a_seconds_count",
      "a_seconds_sum",
      "b_total",
      "c",
    ]);
  });

  it("the dashboard and the rules query the contract metrics", () => {
    const used = usedMetricNames();
    for (const n of [
      "sluice_queue_depth",
      "sluice_workers_live",
      "sluice_tasks_finished_total",
      "sluice_task_wait_seconds_bucket",
      "sluice_dead_letters_total",
      "sluice_dispatcher_leader",
      "nats_stream_total_messages",
      "nats_consumer_num_pending",
    ])
      expect(used.has(n), n).toBe(true);
  });
});

describe("observability - Grafana dashboard", () => {
  const panels = dashboard.panels;

  it("has unique panel ids and panels that fit the 24-column grid without overlapping", () => {
    const ids = panels.map((p) => p.id);
    expect(new Set(ids).size).toBe(ids.length);
    const cells = new Set<string>();
    for (const p of panels) {
      expect(p.gridPos.x + p.gridPos.w, p.title).toBeLessThanOrEqual(24);
      for (let x = p.gridPos.x; x < p.gridPos.x + p.gridPos.w; x++)
        for (let y = p.gridPos.y; y < p.gridPos.y + p.gridPos.h; y++) {
          const c = `${x},${y}`;
          expect(cells.has(c), `${p.title} overlaps at ${c}`).toBe(false);
          cells.add(c);
        }
    }
  });

  it("queries through the datasource variable in every graph and stat", () => {
    const ds = dashboard.templating.list.find((v) => v.name === "datasource");
    expect(ds?.type).toBe("datasource");
    for (const p of panels.filter((p) => p.type === "timeseries" || p.type === "stat")) {
      expect(p.datasource?.uid, p.title).toBe(DS_VAR);
      expect(p.targets?.length, p.title).toBeGreaterThan(0);
      for (const t of p.targets ?? []) {
        expect(t.expr, p.title).toBeTruthy();
        expect(t.datasource?.uid, p.title).toBe(DS_VAR);
      }
    }
    expect(dashboardExpressions(dashboard).length).toBeGreaterThan(40);
  });

  it("shows what the issue asks for at a glance", () => {
    const titles = panels.map((p) => p.title.toLowerCase()).join("\n");
    for (const want of [
      "queue depth per priority",
      "finished / s",
      "wait time",
      "run time",
      "dead letters",
      "live workers",
      "slot utilisation",
      "messages per stream",
    ])
      expect(titles).toContain(want);
  });

  it("is provisioned from the folder compose mounts, with the Prometheus datasource it defaults to", () => {
    const dash = parseYaml(
      readFileSync(`${repoRoot}/deploy/grafana/provisioning/dashboards/dashboards.yml`, "utf8"),
    ) as { providers: { options: { path: string } }[] };
    expect(dash.providers[0]!.options.path).toBe("/var/lib/grafana/dashboards");
    const sources = parseYaml(
      readFileSync(`${repoRoot}/deploy/grafana/provisioning/datasources/datasources.yml`, "utf8"),
    ) as { datasources: { uid: string; type: string }[] };
    expect(sources.datasources.find((d) => d.type === "prometheus")?.uid).toBe("prometheus");
    const current = dashboard.templating.list.find((v) => v.name === "datasource") as unknown as {
      current: { value: string };
    };
    expect(current.current.value).toBe("prometheus");
  });
});
