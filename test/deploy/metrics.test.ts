import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { kustomizeBuild, parseYamlDocs, repoRoot } from "./support/kustomize.ts";

// The autoscalers query Sluice metrics by name; a name the services do not export would leave the HPA
// without a signal and nothing would say so. The exported names come from a real scrape when
// SLUICE_METRICS_SCRAPE names one (a /metrics URL or a saved scrape file), otherwise from the metric
// names the services' sources register with prom-client (`name: "sluice_..."`).

/** Metric names the deployment's queries use. */
function usedMetricNames(): Map<string, string> {
  const used = new Map<string, string>();
  const add = (text: string, where: string) => {
    for (const m of text.matchAll(/\bsluice_[a-z0-9_]+\b/g)) used.set(m[0], where);
  };
  const adapter = parseYamlDocs(
    readFileSync(join(repoRoot, "k8s/prometheus-adapter/values.yaml"), "utf8"),
  )[0] as {
    rules: { external: { seriesQuery: string; metricsQuery: string; name: { as: string } }[] };
  };
  for (const r of adapter.rules.external) {
    // `name.as` is what the adapter serves, not a Prometheus series: only the queries count.
    add(r.seriesQuery, "k8s/prometheus-adapter/values.yaml seriesQuery");
    add(r.metricsQuery, "k8s/prometheus-adapter/values.yaml metricsQuery");
  }
  for (const o of kustomizeBuild(join(repoRoot, "k8s/overlays/production-keda"))) {
    if (o.kind !== "ScaledObject") continue;
    for (const t of (o.spec as { triggers: { type: string; metadata: { query?: string } }[] }).triggers) {
      if (t.type === "prometheus") add(t.metadata.query ?? "", "KEDA prometheus trigger");
    }
  }
  return used;
}

/** Metric names the services export. */
async function exportedMetricNames(): Promise<{ names: Set<string>; source: string }> {
  const scrape = process.env.SLUICE_METRICS_SCRAPE;
  if (scrape) {
    const text = /^https?:\/\//.test(scrape)
      ? await (await fetch(scrape, { signal: AbortSignal.timeout(5_000) })).text()
      : readFileSync(scrape, "utf8");
    const names = new Set([...text.matchAll(/^# TYPE (\S+) /gm)].map((m) => m[1]!));
    return { names, source: scrape };
  }
  const names = new Set<string>();
  const walk = (dir: string) => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      const p = join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.name.endsWith(".ts") && !e.name.endsWith(".test.ts")) {
        for (const m of readFileSync(p, "utf8").matchAll(/\bname:\s*["'`](sluice_[a-z0-9_]+)["'`]/g))
          names.add(m[1]!);
      }
    }
  };
  walk(join(repoRoot, "services"));
  walk(join(repoRoot, "shared"));
  return { names, source: "prom-client registrations in services/ and shared/" };
}

describe("metrics the autoscalers depend on", () => {
  it("the HPA's adapter rule and KEDA's query read sluice_queue_depth", () => {
    expect([...usedMetricNames().keys()]).toEqual(["sluice_queue_depth"]);
  });

  it("every metric the autoscalers query is one the services export", async () => {
    const { names, source } = await exportedMetricNames();
    const missing = [...usedMetricNames()]
      .filter(([n]) => !names.has(n))
      .map(([n, where]) => `${n} (used by ${where}) is not exported according to ${source}`);
    expect(missing).toEqual([]);
  });
});
