import { readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseAllDocuments } from "yaml";

/**
 * The subset of `kustomize build` that k8s/ uses, so the manifests can be checked on machines without
 * kubectl: resources (files and directories), components, namespace, images and strategic-merge patches
 * from files (including `$patch: delete`). Any other kustomization field is refused rather than ignored,
 * and test/deploy/kustomize.test.ts compares the result with `kubectl kustomize` wherever kubectl exists.
 */

/** A Kubernetes object as parsed from YAML. */
export type K8sObject = {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string> } & Record<string, unknown>;
} & Record<string, unknown>;

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };
type JsonMap = { [k: string]: Json };

const SUPPORTED = new Set([
  "apiVersion",
  "kind",
  "resources",
  "components",
  "namespace",
  "images",
  "patches",
]);

/** Kinds that are not namespaced (the namespace transformer leaves them alone). */
const CLUSTER_SCOPED = new Set([
  "Namespace",
  "ClusterRole",
  "ClusterRoleBinding",
  "CustomResourceDefinition",
]);

/** Lists merged element by element on their `name` key by a strategic merge patch (the ones we patch). */
const MERGE_BY_NAME = new Set(["containers", "initContainers", "env", "volumes"]);

/** Parse every YAML document in a string (merge keys on), skipping empty ones. */
export function parseYamlDocs(text: string, source = "<string>"): unknown[] {
  return parseAllDocuments(text, { merge: true })
    .map((d) => {
      if (d.errors.length) throw new Error(`${source}: ${d.errors.map((e) => e.message).join("; ")}`);
      return d.toJS() as unknown;
    })
    .filter((d) => d !== null && d !== undefined);
}

function readObjects(path: string): K8sObject[] {
  return parseYamlDocs(readFileSync(path, "utf8"), path) as K8sObject[];
}

function kustomizationAt(dir: string): Record<string, unknown> {
  const path = join(dir, "kustomization.yaml");
  const [k] = parseYamlDocs(readFileSync(path, "utf8"), path) as Record<string, unknown>[];
  if (!k) throw new Error(`${path}: empty`);
  for (const key of Object.keys(k)) {
    if (!SUPPORTED.has(key)) throw new Error(`${path}: field "${key}" is not supported by this builder`);
  }
  return k;
}

const isMap = (v: unknown): v is JsonMap => typeof v === "object" && v !== null && !Array.isArray(v);

/** Strategic merge of `patch` into `base` for the fields Sluice's overlays patch. */
export function strategicMerge(base: Json, patch: Json, key = ""): Json {
  if (isMap(base) && isMap(patch)) {
    const out: JsonMap = { ...base };
    for (const [k, v] of Object.entries(patch)) {
      if (v === null) delete out[k];
      else out[k] = k in base ? strategicMerge(base[k] as Json, v, k) : v;
    }
    return out;
  }
  if (Array.isArray(base) && Array.isArray(patch) && MERGE_BY_NAME.has(key)) {
    // As kustomize orders them: the patch's items (merged into their namesakes) first, then the rest.
    const nameOf = (v: Json) => (isMap(v) ? v.name : undefined);
    const merged = patch.map((item) => {
      const twin = base.find((b) => nameOf(b) !== undefined && nameOf(b) === nameOf(item));
      return twin === undefined ? item : strategicMerge(twin, item, "");
    });
    const patched = new Set<Json | undefined>(patch.map(nameOf).filter((n) => n !== undefined));
    return [...merged, ...base.filter((b) => !patched.has(nameOf(b)))];
  }
  return patch;
}

function applyPatchFile(objects: K8sObject[], path: string): K8sObject[] {
  let out = objects;
  for (const patch of readObjects(path)) {
    const same = (o: K8sObject) =>
      o.kind === patch.kind &&
      o.apiVersion.split("/")[0] === patch.apiVersion.split("/")[0] &&
      o.metadata.name === patch.metadata.name;
    const i = out.findIndex(same);
    if (i < 0) throw new Error(`${path}: no ${patch.kind}/${patch.metadata.name} to patch`);
    if ((patch as Record<string, unknown>).$patch === "delete") {
      out = out.filter((o) => !same(o));
    } else {
      out = out.map((o, j) => (j === i ? (strategicMerge(o as Json, patch as Json) as K8sObject) : o));
    }
  }
  return out;
}

function setImages(objects: K8sObject[], images: { name: string; newName?: string; newTag?: string }[]) {
  const rewrite = (c: JsonMap) => {
    const image = String(c.image);
    const [name, tag] = image.includes(":") ? image.split(":") : [image, undefined];
    const rule = images.find((r) => r.name === name);
    if (rule) c.image = `${rule.newName ?? name}${(rule.newTag ?? tag) ? `:${rule.newTag ?? tag}` : ""}`;
  };
  const visit = (v: Json) => {
    if (Array.isArray(v)) v.forEach(visit);
    else if (isMap(v)) {
      for (const [k, child] of Object.entries(v)) {
        if ((k === "containers" || k === "initContainers") && Array.isArray(child)) {
          for (const c of child) if (isMap(c) && typeof c.image === "string") rewrite(c);
        }
        visit(child);
      }
    }
  };
  for (const o of objects) visit(o as Json);
}

/** Build the kustomization (or component) in `dir` into a list of objects. */
export function kustomizeBuild(dir: string): K8sObject[] {
  const k = kustomizationAt(dir);
  let objects: K8sObject[] = [];
  for (const r of (k.resources as string[] | undefined) ?? []) {
    const p = resolve(dir, r);
    objects.push(...(r.endsWith(".yaml") || r.endsWith(".yml") ? readObjects(p) : kustomizeBuild(p)));
  }
  for (const c of (k.components as string[] | undefined) ?? []) {
    const comp = resolve(dir, c);
    const ck = kustomizationAt(comp);
    if (ck.kind !== "Component") throw new Error(`${comp}: not a Component`);
    for (const r of (ck.resources as string[] | undefined) ?? [])
      objects.push(...readObjects(resolve(comp, r)));
    for (const p of (ck.patches as { path: string }[] | undefined) ?? []) {
      objects = applyPatchFile(objects, resolve(comp, p.path));
    }
  }
  for (const p of (k.patches as { path?: string }[] | undefined) ?? []) {
    if (!p.path) throw new Error(`${dir}: only file patches are supported`);
    objects = applyPatchFile(objects, resolve(dir, p.path));
  }
  if (typeof k.namespace === "string") {
    for (const o of objects) if (!CLUSTER_SCOPED.has(o.kind)) o.metadata.namespace = k.namespace;
  }
  if (Array.isArray(k.images)) setImages(objects, k.images as { name: string }[]);
  return objects;
}

/** The repository root (three levels above this file). */
export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), "../../..");
