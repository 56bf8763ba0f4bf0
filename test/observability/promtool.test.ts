import { spawnSync } from "node:child_process";
import { describe, expect, it } from "vitest";
import { repoRoot } from "./support/promql.ts";

// promtool comes with Debian's `prometheus` package (.ci/run installs it). Without it the suite is
// skipped on a developer machine but fails in CI, where a silent skip would hide broken rules.
const promtool = spawnSync("promtool", ["--version"], { encoding: "utf8" });
const have = promtool.status === 0;
const inCi = Boolean(process.env.CI);

function run(...args: string[]): { status: number | null; out: string } {
  const r = spawnSync("promtool", args, {
    cwd: `${repoRoot}/deploy/prometheus`,
    encoding: "utf8",
    timeout: 30_000,
  });
  return { status: r.status, out: `${r.stdout}\n${r.stderr}` };
}

describe("observability - promtool", () => {
  it.runIf(inCi && !have)("is installed in CI", () => {
    expect.fail("promtool not found: .ci/run must install Debian's prometheus package");
  });

  it.runIf(have)("accepts the Prometheus configuration and the rule file it loads", () => {
    const r = run("check", "config", "prometheus.yml");
    expect(r.out).toMatch(/1 rule files found/);
    expect(r.status, r.out).toBe(0);
  });

  it.runIf(have)("accepts the alert rules", () => {
    const r = run("check", "rules", "alerts.yml");
    expect(r.status, r.out).toBe(0);
    expect(r.out).toMatch(/SUCCESS: 7 rules found/);
  });

  it.runIf(have)("fires each alert on its situation and not on a healthy one (promtool test rules)", () => {
    const r = run("test", "rules", "alerts.test.yml");
    expect(r.status, r.out).toBe(0);
    expect(r.out).toMatch(/SUCCESS/);
  });
});
