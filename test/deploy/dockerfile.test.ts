import { execFileSync, spawn, spawnSync } from "node:child_process";
import {
  chmodSync,
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { builtinModules } from "node:module";
import { tmpdir } from "node:os";
import { dirname, join, relative, resolve } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { freePort } from "../../shared/nats/local-server.ts";
import { type ServiceName, serviceNodeFlags } from "../../shared/node-flags.ts";
import { dockerfile, dockerignoreAllows } from "./support/dockerfile.ts";
import { repoRoot } from "./support/kustomize.ts";
import { SERVICES } from "./support/service-env.ts";

// No Docker engine here: the Dockerfile is read instruction by instruction, and the two scripts it
// writes into the image (entrypoint, health check) are extracted and run for real.

const ins = dockerfile();
const stages: { name: string; ins: typeof ins }[] = [];
for (const i of ins) {
  if (i.op === "FROM") stages.push({ name: /\bAS\s+(\S+)/i.exec(i.args)?.[1] ?? "", ins: [] });
  stages.at(-1)?.ins.push(i);
}
const final = stages.at(-1)!;
const heredoc = (target: string) =>
  final.ins.find((i) => i.op === "COPY" && i.args.endsWith(target))?.heredoc;
const tmp = mkdtempSync(join(tmpdir(), "sluice-dockerfile-"));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** Every module the services load at run time, from their entry points through relative imports. */
function runtimeImports(): { files: Set<string>; packages: Map<string, string> } {
  const files = new Set<string>();
  const packages = new Map<string, string>();
  const queue = SERVICES.map((s) => join(repoRoot, "services", s, "main.ts"));
  while (queue.length) {
    const file = queue.pop()!;
    if (files.has(file)) continue;
    files.add(file);
    const src = readFileSync(file, "utf8");
    // Static imports and re-exports (not `import type`, erased at run time), and literal dynamic imports.
    const re =
      /(?:^|\n)\s*(?:import|export)\s+(?!type\s)(?:[^"';]*?\sfrom\s+)?["']([^"']+)["']|import\(\s*["']([^"']+)["']\s*\)/g;
    for (const m of src.matchAll(re)) {
      const spec = (m[1] ?? m[2])!;
      if (spec.startsWith(".")) queue.push(resolve(dirname(file), spec));
      else if (!spec.startsWith("node:") && !builtinModules.includes(spec)) {
        const pkg = spec.startsWith("@") ? spec.split("/").slice(0, 2).join("/") : spec.split("/")[0]!;
        packages.set(pkg, relative(repoRoot, file));
      }
    }
  }
  return { files, packages };
}

describe("Dockerfile", () => {
  it("builds on node:24-slim in stages, with production dependencies only in the final image", () => {
    const arg = ins.find((i) => i.op === "ARG" && i.args.startsWith("NODE_IMAGE="));
    expect(arg?.args).toBe("NODE_IMAGE=node:24-slim");
    expect(stages.length).toBeGreaterThanOrEqual(2);
    for (const s of stages) expect(s.ins[0]!.args).toMatch(/^\$\{NODE_IMAGE\}\s/);
    const deps = stages.find((s) => s.ins.some((i) => i.op === "RUN" && /npm ci --omit=dev\b/.test(i.args)));
    expect(deps, "a stage running npm ci --omit=dev").toBeDefined();
    expect(
      final.ins.some((i) => i.op === "COPY" && i.args.includes(`--from=${deps!.name} /app/node_modules`)),
    ).toBe(true);
    expect(final.ins.some((i) => i.op === "RUN" && /npm (ci|install)/.test(i.args))).toBe(false);
  });

  it("runs as an unprivileged user, with a health check and an entrypoint that picks the service", () => {
    const user = final.ins.filter((i) => i.op === "USER").at(-1)?.args;
    expect(user).toBeDefined();
    expect(["root", "0"]).not.toContain(user!.split(":")[0]);
    expect(final.ins.find((i) => i.op === "HEALTHCHECK")?.args).toMatch(/sluice-healthcheck\.mjs/);
    expect(final.ins.find((i) => i.op === "ENTRYPOINT")?.args).toBe('["/usr/local/bin/sluice-entrypoint"]');
  });

  it("copies only paths that exist and that .dockerignore lets into the build context", () => {
    const ignore = readFileSync(join(repoRoot, ".dockerignore"), "utf8");
    const sources = ins
      .filter((i) => i.op === "COPY" && !i.heredoc && !i.args.includes("--from="))
      .flatMap((i) =>
        i.args
          .split(/\s+/)
          .filter((a) => !a.startsWith("--"))
          .slice(0, -1),
      );
    expect(sources.length).toBeGreaterThan(0);
    for (const s of sources) {
      expect(existsSync(join(repoRoot, s)), s).toBe(true);
      expect(dockerignoreAllows(s, ignore), s).toBe(true);
    }
    // Everything the services load is inside what the image copies, and nothing is ignored away.
    for (const f of runtimeImports().files) {
      const rel = relative(repoRoot, f);
      expect(
        sources.some((s) => rel === s || rel.startsWith(`${s}/`)),
        rel,
      ).toBe(true);
      expect(dockerignoreAllows(rel, ignore), rel).toBe(true);
    }
    expect(dockerignoreAllows("node_modules/x/index.js", ignore)).toBe(false);
    expect(dockerignoreAllows("shared/nats/x.test.ts", ignore)).toBe(false);
  });

  it("needs no dev dependency at run time: every package the services import is a production dependency", () => {
    const pkg = JSON.parse(readFileSync(join(repoRoot, "package.json"), "utf8")) as {
      dependencies: Record<string, string>;
    };
    const { packages } = runtimeImports();
    expect(packages.size).toBeGreaterThan(0);
    const missing = [...packages].filter(([p]) => !(p in pkg.dependencies)).map(([p, f]) => `${p} (${f})`);
    expect(missing).toEqual([]);
  });

  it("the entrypoint runs the service named by its argument or SLUICE_SERVICE, with a metrics port", () => {
    const script = join(tmp, "entrypoint");
    writeFileSync(script, heredoc("/usr/local/bin/sluice-entrypoint")!);
    // A stand-in `node` that prints what it was asked to run.
    writeFileSync(join(tmp, "node"), '#!/bin/sh\necho "$*|$METRICS_PORT"\n');
    chmodSync(join(tmp, "node"), 0o755);
    const run = (args: string[], env: Record<string, string> = {}) =>
      spawnSync("sh", [script, ...args], {
        env: { PATH: `${tmp}:/usr/bin:/bin`, ...env },
        encoding: "utf8",
        timeout: 5_000,
      });
    // the same Node flags as every other launcher (shared/node-flags.ts)
    const flags = (svc: ServiceName) => serviceNodeFlags(svc).join(" ");
    expect(run(["worker"]).stdout.trim()).toBe(`${flags("worker")} services/worker/main.ts|9464`);
    expect(run([], { SLUICE_SERVICE: "enqueue" }).stdout.trim()).toBe(
      `${flags("enqueue")} services/enqueue/main.ts|9464`,
    );
    expect(run(["dispatcher", "--x"], { SLUICE_SERVICE: "worker", METRICS_PORT: "9999" }).stdout.trim()).toBe(
      `${flags("dispatcher")} services/dispatcher/main.ts --x|9999`,
    );
    const bad = run(["workers"]);
    expect(bad.status).toBe(64);
    expect(bad.stderr).toMatch(/usage/);
  });

  it("npm run <service> starts each service with the same Node flags as the entrypoint", () => {
    const scripts = (
      JSON.parse(readFileSync(join(repoRoot, "package.json"), "utf8")) as {
        scripts: Record<string, string>;
      }
    ).scripts;
    for (const svc of ["enqueue", "dispatcher", "worker"] as const) {
      expect(scripts[svc]).toBe(
        `MALLOC_ARENA_MAX=\${MALLOC_ARENA_MAX:-2} exec node ${serviceNodeFlags(svc).join(" ")} services/${svc}/main.ts`,
      );
    }
  });

  it("the health check asks the running service's /healthz and fails unless it answers 200", async () => {
    const script = join(tmp, "healthcheck.mjs");
    writeFileSync(script, heredoc("/usr/local/bin/sluice-healthcheck.mjs")!);
    const check = (pid: number) =>
      spawnSync(process.execPath, [script], {
        env: { SLUICE_HEALTH_PID: String(pid) },
        encoding: "utf8",
        timeout: 10_000,
      }).status;
    const port = await freePort();
    // A process that looks like the worker to the check: same command line shape, same env.
    const server = `require("node:http").createServer((q, s) => { s.statusCode = q.url === "/healthz" ? Number(process.env.STATUS) : 404; s.end(); }).listen(Number(process.env.METRICS_PORT), "127.0.0.1", () => console.log("up"))`;
    const start = async (status: number, metricsPort: number) => {
      const p = spawn(process.execPath, ["-e", server, "services/worker/main.ts"], {
        env: { METRICS_PORT: String(metricsPort), STATUS: String(status) },
        stdio: ["ignore", "pipe", "inherit"],
      });
      if (metricsPort) await new Promise((r) => p.stdout.once("data", r));
      return p;
    };
    const healthy = await start(200, port);
    try {
      expect(check(healthy.pid!)).toBe(0);
    } finally {
      healthy.kill();
    }
    const sick = await start(503, port);
    try {
      expect(check(sick.pid!)).toBe(1);
    } finally {
      sick.kill();
    }
    await new Promise((r) => sick.once("exit", r));
    expect(check(sick.pid!), "gone").toBe(1);
    // The check's own process is not a Sluice service.
    expect(check(process.pid)).toBe(1);
    // METRICS_PORT=0: nothing to ask; the live process is the answer.
    const silent = spawn(process.execPath, ["-e", "setTimeout(() => {}, 10000)", "services/worker/main.ts"], {
      env: { METRICS_PORT: "0" },
    });
    try {
      await new Promise((r) => setTimeout(r, 200));
      expect(check(silent.pid!)).toBe(0);
    } finally {
      silent.kill();
    }
  });

  it("the image's scripts are valid: the entrypoint parses in sh, the health check in node", () => {
    const sh = join(tmp, "syntax.sh");
    writeFileSync(sh, heredoc("/usr/local/bin/sluice-entrypoint")!);
    execFileSync("sh", ["-n", sh]);
    const mjs = join(tmp, "syntax.mjs");
    writeFileSync(mjs, heredoc("/usr/local/bin/sluice-healthcheck.mjs")!);
    execFileSync(process.execPath, ["--check", mjs]);
    expect(readdirSync(tmp)).toContain("syntax.mjs");
  });
});
