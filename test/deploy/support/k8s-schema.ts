import ts from "typescript";
import type { K8sObject } from "./kustomize.ts";
import { repoRoot } from "./kustomize.ts";

/**
 * Validation of Kubernetes objects against the API schemas, offline.
 *
 * Schemas: the `kubernetes-models` packages, generated from the Kubernetes OpenAPI spec (v1.36 for
 * kubernetes-models 5.x) and, for the CRDs, from KEDA's and the Prometheus Operator's CRD schemas. Each
 * model validates with the compiled JSON schema (required fields, types, enums, formats such as
 * quantities). JSON schema from OpenAPI allows unknown fields, while the API server rejects them
 * (kubectl's default `--validate=strict`), so a second check type-checks every object against the
 * models' TypeScript interfaces, whose excess-property checks catch misspelled or misplaced fields.
 */
export const KUBERNETES_VERSION = "1.36";

/** Where the model of an apiVersion's group lives. */
function modelModule(apiVersion: string, kind: string): string {
  const [group, version] = apiVersion.includes("/") ? apiVersion.split("/") : ["", apiVersion];
  if (group === "keda.sh") return `@kubernetes-models/keda/keda.sh/${version}/${kind}`;
  if (group === "monitoring.coreos.com")
    return `@kubernetes-models/prometheus-operator/monitoring.coreos.com/${version}/${kind}`;
  return group ? `kubernetes-models/${group}/${version}/${kind}` : `kubernetes-models/${version}/${kind}`;
}

type Model = { validate(): void };
type ModelClass = new (data: unknown) => Model;

/** Validate one object with its model's JSON schema; resolves to the error text, or "" when valid. */
export async function schemaErrors(o: K8sObject): Promise<string> {
  let mod: Record<string, unknown>;
  try {
    mod = (await import(modelModule(o.apiVersion, o.kind))) as Record<string, unknown>;
  } catch {
    return `no schema for ${o.apiVersion} ${o.kind} in Kubernetes ${KUBERNETES_VERSION} or the known CRDs`;
  }
  const Cls = mod[o.kind] as ModelClass | undefined;
  if (!Cls) return `no model ${o.kind} in ${modelModule(o.apiVersion, o.kind)}`;
  try {
    const { apiVersion: _a, kind: _k, ...data } = o;
    new Cls(data).validate();
    return "";
  } catch (e) {
    return (e as Error).message;
  }
}

/**
 * Type-check objects against the models' interfaces (`I<Kind>`); returns one message per error, each
 * naming the object. Takes a few seconds: one TypeScript program for all objects.
 */
export function strictFieldErrors(objects: K8sObject[]): string[] {
  const file = `${repoRoot}/test/deploy/__strict_check__.ts`;
  const lines: string[] = [];
  const names: string[] = [];
  objects.forEach((o, i) => {
    lines.push(`import type { I${o.kind} as T${i} } from "${modelModule(o.apiVersion, o.kind)}";`);
    lines.push(`export const o${i}: T${i} = ${JSON.stringify(o)};`);
    names.push(`${o.kind}/${o.metadata.name}`);
  });
  const source = lines.join("\n");
  const options: ts.CompilerOptions = {
    module: ts.ModuleKind.NodeNext,
    moduleResolution: ts.ModuleResolutionKind.NodeNext,
    target: ts.ScriptTarget.ES2022,
    strict: true,
    noEmit: true,
    skipLibCheck: true,
    types: [],
  };
  const host = ts.createCompilerHost(options);
  const getSourceFile = host.getSourceFile.bind(host);
  host.getSourceFile = (name, lang, ...rest) =>
    name === file ? ts.createSourceFile(name, source, lang) : getSourceFile(name, lang, ...rest);
  const fileExists = host.fileExists.bind(host);
  host.fileExists = (name) => name === file || fileExists(name);
  const program = ts.createProgram([file], options, host);
  const sf = program.getSourceFile(file)!;
  return ts.getPreEmitDiagnostics(program, sf).map((d) => {
    const line = d.start === undefined ? -1 : sf.getLineAndCharacterOfPosition(d.start).line;
    const who = line >= 0 ? (names[Math.floor(line / 2)] ?? "?") : "?";
    return `${who}: ${ts.flattenDiagnosticMessageText(d.messageText, "\n")}`;
  });
}
