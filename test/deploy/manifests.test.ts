import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { exampleTasks } from "../../services/worker/examples/index.ts";
import type { TaskDefinition } from "../../services/worker/sdk.ts";
import { names } from "../../shared/names.ts";
import { PRIORITIES, type Priority } from "../../shared/priority.ts";
import { KUBERNETES_VERSION, schemaErrors, strictFieldErrors } from "./support/k8s-schema.ts";
import { type K8sObject, kustomizeBuild, parseYamlDocs, repoRoot } from "./support/kustomize.ts";
import { envProblems, SERVICES, type ServiceName } from "./support/service-env.ts";

// Offline checks of k8s/: what `kubectl apply -k` would send, validated as the API server would, and
// held against the services' real config contracts.

type Obj = K8sObject & { spec?: Record<string, unknown> };
type Container = {
  name: string;
  args?: string[];
  ports?: { name?: string; containerPort: number }[];
  env?: {
    name: string;
    value?: string;
    valueFrom?: {
      fieldRef?: unknown;
      secretKeyRef?: { name: string; key: string; optional?: boolean };
      configMapKeyRef?: { name: string; key: string; optional?: boolean };
    };
  }[];
  envFrom?: { configMapRef?: { name: string }; secretRef?: { name: string } }[];
  lifecycle?: { preStop?: { exec?: { command: string[] } } };
  livenessProbe?: Probe;
  readinessProbe?: Probe;
  startupProbe?: Probe;
};
type Probe = { httpGet?: { path: string; port: string | number } };
type PodSpec = { containers: Container[]; terminationGracePeriodSeconds?: number };

const OVERLAYS = ["dev", "production", "production-keda"] as const;
const builds = Object.fromEntries(
  OVERLAYS.map((o) => [o, kustomizeBuild(join(repoRoot, "k8s/overlays", o)) as Obj[]]),
) as Record<(typeof OVERLAYS)[number], Obj[]>;
const label = (o: Obj) => `${o.kind}/${o.metadata.name}`;
const find = (objs: Obj[], kind: string, name: string) =>
  objs.find((o) => o.kind === kind && o.metadata.name === name);
const podSpec = (d: Obj) => (d.spec as { template: { spec: PodSpec } }).template.spec;
const deployments = (objs: Obj[]) => objs.filter((o) => o.kind === "Deployment");
const serviceOf = (c: Container) => c.args?.[0] as ServiceName;

/** The env a container would see, with values a real pod would get (secrets: from the build or a stand-in). */
function containerEnv(
  objs: Obj[],
  d: Obj,
  c: Container,
): { env: Record<string, string>; problems: string[] } {
  const env: Record<string, string> = {};
  const problems: string[] = [];
  const data = (kind: string, name: string) => {
    const o = find(objs, kind, name) as (Obj & { data?: Record<string, string> }) | undefined;
    if (!o) return undefined;
    if (kind === "Secret") {
      const s = o as Obj & { stringData?: Record<string, string>; data?: Record<string, string> };
      const decoded = Object.entries(s.data ?? {}).map(([k, v]) => [k, Buffer.from(v, "base64").toString()]);
      return { ...Object.fromEntries(decoded), ...(s.stringData ?? {}) } as Record<string, string>;
    }
    return o.data ?? {};
  };
  for (const from of c.envFrom ?? []) {
    const ref = from.configMapRef ?? from.secretRef;
    const kind = from.configMapRef ? "ConfigMap" : "Secret";
    const values = ref && data(kind, ref.name);
    if (!values) problems.push(`${label(d)}: envFrom ${kind} ${ref?.name} is not in the build`);
    else Object.assign(env, values);
  }
  for (const e of c.env ?? []) {
    if (e.value !== undefined) env[e.name] = e.value;
    else if (e.valueFrom?.fieldRef) env[e.name] = `${d.metadata.name}-7d9f8c6b5-x2x9z`;
    else {
      const ref = e.valueFrom?.secretKeyRef ?? e.valueFrom?.configMapKeyRef;
      const kind = e.valueFrom?.secretKeyRef ? "Secret" : "ConfigMap";
      if (!ref) {
        problems.push(`${label(d)}: ${e.name} has no value`);
        continue;
      }
      const values = data(kind, ref.name);
      if (values && !(ref.key in values) && !ref.optional) {
        problems.push(`${label(d)}: ${e.name} refers to missing key ${ref.name}.${ref.key}`);
      }
      // A Secret created outside the build (production) stands in with a plausible value.
      const v = values ? values[ref.key] : ref.optional ? undefined : "external-secret-value";
      if (v !== undefined) env[e.name] = v;
    }
  }
  return { env, problems };
}

describe(`kubernetes manifests (k8s/overlays, validated against Kubernetes ${KUBERNETES_VERSION})`, () => {
  it("every object of every overlay matches its API schema (CRDs: the KEDA and Prometheus Operator schemas)", async () => {
    const errors: string[] = [];
    for (const [overlay, objs] of Object.entries(builds)) {
      for (const o of objs) {
        const e = await schemaErrors(o);
        if (e) errors.push(`${overlay} ${label(o)}: ${e}`);
      }
    }
    expect(errors).toEqual([]);
  });

  it("no object carries a field its API does not define (what kubectl --validate=strict rejects)", () => {
    const objs = [
      ...new Map(
        Object.values(builds)
          .flat()
          .map((o) => [JSON.stringify(o), o]),
      ).values(),
    ];
    expect(strictFieldErrors(objs)).toEqual([]);
  });

  it("every container's environment is accepted by its service's envSchema and loadConfig", async () => {
    const problems: string[] = [];
    for (const [overlay, objs] of Object.entries(builds)) {
      for (const d of deployments(objs)) {
        for (const c of podSpec(d).containers) {
          const svc = serviceOf(c);
          expect(SERVICES, `${overlay} ${label(d)} runs ${svc}`).toContain(svc);
          const { env, problems: p } = containerEnv(objs, d, c);
          problems.push(...p, ...(await envProblems(svc, env)).map((x) => `${overlay} ${x}`));
        }
      }
    }
    expect(problems).toEqual([]);
  });

  it("probes ask the services' real endpoints on the ports the services listen on", () => {
    for (const objs of Object.values(builds)) {
      for (const d of deployments(objs)) {
        const c = podSpec(d).containers[0]!;
        const { env } = containerEnv(objs, d, c);
        const port = (p: Probe | undefined) => {
          const named = c.ports?.find((x) => x.name === p?.httpGet?.port)?.containerPort;
          return named ?? p?.httpGet?.port;
        };
        const svc = serviceOf(c);
        const listen = Number(svc === "enqueue" ? env.HTTP_PORT : env.METRICS_PORT);
        expect(listen, `${label(d)} listener`).toBeGreaterThan(0);
        for (const p of [c.startupProbe, c.livenessProbe, c.readinessProbe]) {
          expect(port(p), `${label(d)} probe port`).toBe(listen);
        }
        expect(c.livenessProbe?.httpGet?.path).toBe("/healthz");
        expect(c.startupProbe?.httpGet?.path).toBe("/healthz");
        expect(c.readinessProbe?.httpGet?.path).toBe("/readyz");
        expect(c.ports?.find((x) => x.name === "metrics")?.containerPort).toBe(Number(env.METRICS_PORT));
      }
    }
  });

  it("a stopping pod can finish its drain: preStop + SHUTDOWN_GRACE_MS + 10 s fit in the grace period", () => {
    for (const objs of Object.values(builds)) {
      for (const d of deployments(objs)) {
        const spec = podSpec(d);
        const c = spec.containers[0]!;
        const { env } = containerEnv(objs, d, c);
        const cmd = c.lifecycle?.preStop?.exec?.command ?? [];
        const preStopS = cmd[0] === "sleep" ? Number(cmd[1]) : 0;
        const drainS = serviceOf(c) === "worker" ? Number(env.SHUTDOWN_GRACE_MS ?? 25_000) / 1000 : 5;
        expect(spec.terminationGracePeriodSeconds, label(d)).toBeGreaterThanOrEqual(preStopS + drainS + 10);
      }
      const enqueue = podSpec(find(objs, "Deployment", "enqueue")!).containers[0]!;
      expect(enqueue.lifecycle?.preStop?.exec?.command?.[0], "enqueue waits for endpoint removal").toBe(
        "sleep",
      );
    }
  });

  it("autoscalers, disruption budgets, the Service and the PodMonitor point at pods the build creates", () => {
    for (const [overlay, objs] of Object.entries(builds)) {
      const podLabels = deployments(objs).map(
        (d) =>
          (d.spec as { template: { metadata: { labels: Record<string, string> } } }).template.metadata.labels,
      );
      const selects = (sel: Record<string, string>) =>
        podLabels.some((l) => Object.entries(sel).every(([k, v]) => l[k] === v));
      for (const o of objs) {
        const spec = o.spec as Record<string, { matchLabels?: Record<string, string> } | undefined>;
        if (["PodDisruptionBudget", "PodMonitor"].includes(o.kind)) {
          expect(selects(spec.selector?.matchLabels ?? {}), `${overlay} ${label(o)}`).toBe(true);
        }
        if (o.kind === "Service") {
          expect(selects(spec.selector as unknown as Record<string, string>), `${overlay} ${label(o)}`).toBe(
            true,
          );
        }
        if (o.kind === "HorizontalPodAutoscaler" || o.kind === "ScaledObject") {
          const ref = (o.spec as { scaleTargetRef: { kind?: string; name: string } }).scaleTargetRef;
          expect(ref.kind ?? "Deployment").toBe("Deployment");
          expect(find(objs, "Deployment", ref.name), `${overlay} ${label(o)} target`).toBeDefined();
        }
      }
      const autoscalers = objs.filter((o) => ["HorizontalPodAutoscaler", "ScaledObject"].includes(o.kind));
      expect(autoscalers.map(label), `${overlay}: exactly one autoscaler for the workers`).toHaveLength(1);
    }
  });

  it("runs two dispatchers everywhere and R3 streams in production", () => {
    for (const objs of Object.values(builds)) {
      expect(
        (find(objs, "Deployment", "dispatcher")!.spec as { replicas: number }).replicas,
      ).toBeGreaterThanOrEqual(2);
    }
    for (const overlay of ["production", "production-keda"] as const) {
      const cm = find(builds[overlay], "ConfigMap", "sluice-config") as Obj & {
        data: Record<string, string>;
      };
      expect(cm.data.SLUICE_REPLICAS).toBe("3");
    }
  });

  it("the HPA scales on backlog per worker and CPU, and its External metric comes from an adapter rule", () => {
    const hpa = find(builds.production, "HorizontalPodAutoscaler", "worker")!;
    const spec = hpa.spec as {
      metrics: { type: string; external?: { metric: { name: string }; target: { type: string } } }[];
      behavior: { scaleDown: { stabilizationWindowSeconds: number } };
    };
    expect(spec.metrics.map((m) => m.type).sort()).toEqual(["External", "Resource"]);
    const external = spec.metrics.find((m) => m.type === "External")!.external!;
    expect(external.target.type, "per-worker value").toBe("AverageValue");
    expect(spec.behavior.scaleDown.stabilizationWindowSeconds).toBeGreaterThanOrEqual(60);
    const adapter = parseYamlDocs(
      readFileSync(join(repoRoot, "k8s/prometheus-adapter/values.yaml"), "utf8"),
    )[0] as {
      rules: { external: { seriesQuery: string; name: { as: string } }[] };
    };
    const rule = adapter.rules.external.find((r) => r.name.as === external.metric.name);
    expect(rule, `adapter rule producing ${external.metric.name}`).toBeDefined();
    expect(rule!.seriesQuery).toMatch(/^sluice_queue_depth\{/);
  });

  it("KEDA sums each built-in type's five tasks consumers, named as shared/names.ts names them, per worker's slots", () => {
    const so = find(builds["production-keda"], "ScaledObject", "worker")!;
    const spec = so.spec as {
      triggers: { type: string; name?: string; metadata: Record<string, string> }[];
      advanced: { scalingModifiers: { target: string; metricType?: string; formula: string } };
    };
    const n = names("sluice");
    const defs = exampleTasks({ webhookSigningSecret: "x" });
    const nats = spec.triggers.filter((t) => t.type === "nats-jetstream");
    // one trigger per (priority, type) consumer of the tasks stream: together they see every task of
    // the type not finished (a task's message stays there until its worker acks it)
    expect(nats.map((t) => t.metadata.consumer).sort()).toEqual(
      defs.flatMap((d) => PRIORITIES.map((p) => n.tasksConsumer(p, d.type))).sort(),
    );
    expect(n.tasksConsumer("normal", "noop")).toBe("d_normal_noop_bd9b6f");
    for (const t of nats) expect(t.metadata.stream, t.name).toBe(n.tasksStream);

    // scalingModifiers replaces every external trigger by one metric computed by the formula: each one
    // needs a name the formula can use, and none may be left out of it
    const sm = spec.advanced.scalingModifiers;
    expect(sm.target).toBe("1");
    expect(sm.metricType ?? "AverageValue").toBe("AverageValue");
    const vars = spec.triggers.filter((t) => t.type !== "cpu" && t.type !== "memory").map((t) => t.name!);
    expect(new Set(vars).size).toBe(vars.length);
    for (const v of vars) expect(v).toMatch(/^[A-Za-z_][A-Za-z0-9_]*$/);
    // only numbers, + and /, parentheses and commas, max() and float(), and trigger names: JavaScript
    // evaluates such an expr-lang formula the same way
    expect(sm.formula).toMatch(/^[\w\s+/().,]*$/);
    const used = new Set(sm.formula.match(/[A-Za-z_]\w*/g));
    for (const id of used) expect(["max", "float", ...vars], `${id} in the formula`).toContain(id);
    for (const v of vars) expect(used.has(v), `trigger ${v} left out of the formula`).toBe(true);
    const formula = new Function("max", "float", ...vars, `return (${sm.formula});`) as (
      ...args: unknown[]
    ) => number;
    /** Replicas asked for at these trigger values (the rest 0): the formula over the target of 1. */
    const replicas = (values: Record<string, number>) =>
      formula(Math.max, Number, ...vars.map((v) => values[v] ?? 0)) / Number(sm.target);
    const trigger = (p: Priority, type: string) =>
      nats.find((t) => t.metadata.consumer === n.tasksConsumer(p, type))!.name!;

    expect(replicas({})).toBe(0);
    for (const d of defs) {
      // One worker's slots for the type: see the comment in k8s/components/keda/scaledobject.yaml.
      for (const p of PRIORITIES)
        expect(replicas({ [trigger(p, d.type)]: 10 * d.concurrency }), d.type).toBe(10);
      // spread over the priorities, the type's tasks add up (KEDA alone would take the largest trigger)
      const spread = Object.fromEntries(PRIORITIES.map((p) => [trigger(p, d.type), 2 * d.concurrency]));
      expect(replicas(spread), d.type).toBe(10);
    }
    // every worker serves every type: the type that needs the most workers decides
    const [a, b] = defs as [TaskDefinition, TaskDefinition];
    expect(
      replicas({
        [trigger("normal", a.type)]: 3 * a.concurrency,
        [trigger("bulk", b.type)]: 7 * b.concurrency,
      }),
    ).toBe(7);
    // the prometheus backlog, as the HPA reads it: 200 waiting tasks per worker
    const backlog = spec.triggers.find((t) => t.type === "prometheus");
    if (backlog) expect(replicas({ [backlog.name!]: 800 })).toBe(4);
  });
});
