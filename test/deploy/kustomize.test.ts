import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { kustomizeBuild, parseYamlDocs, repoRoot } from "./support/kustomize.ts";

// The manifest tests trust test/deploy/support/kustomize.ts to build what kustomize builds. Here it is
// held against a fixture, and against kubectl's own kustomize wherever kubectl is installed.

function kubectl(): string | undefined {
  try {
    return execFileSync("kubectl", ["version", "--client", "-o", "json"], {
      encoding: "utf8",
      timeout: 10_000,
    });
  } catch {
    return undefined;
  }
}
const kubectlVersion = kubectl();

describe("kustomize build of k8s/", () => {
  const dir = mkdtempSync(join(tmpdir(), "sluice-kustomize-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("applies namespace, images, merge-by-name patches and $patch: delete like kustomize", () => {
    mkdirSync(join(dir, "base"));
    mkdirSync(join(dir, "over"));
    writeFileSync(
      join(dir, "base/kustomization.yaml"),
      "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [d.yaml]\n",
    );
    writeFileSync(
      join(dir, "base/d.yaml"),
      [
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: w}\nspec:\n  replicas: 1\n  template:\n    spec:",
        "      containers:\n      - name: c\n        image: app\n        env: [{name: A, value: a}, {name: B, value: b}]",
        "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: gone}\n",
      ].join("\n"),
    );
    writeFileSync(
      join(dir, "over/kustomization.yaml"),
      "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamespace: ns\nresources: [../base]\n" +
        "images: [{name: app, newName: reg/app, newTag: '2'}]\npatches: [{path: p.yaml}]\n",
    );
    writeFileSync(
      join(dir, "over/p.yaml"),
      "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: w}\nspec:\n  replicas: 3\n  template:\n    spec:\n" +
        "      containers:\n      - name: c\n        env: [{name: B, value: B2}, {name: C, value: c}]\n" +
        "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: gone}\n$patch: delete\n",
    );
    const [d, ...rest] = kustomizeBuild(join(dir, "over"));
    expect(rest).toEqual([]);
    expect(d).toMatchObject({ metadata: { name: "w", namespace: "ns" }, spec: { replicas: 3 } });
    const c = (d as unknown as { spec: { template: { spec: { containers: Record<string, unknown>[] } } } })
      .spec.template.spec.containers[0];
    expect(c).toEqual({
      name: "c",
      image: "reg/app:2",
      env: [
        { name: "B", value: "B2" },
        { name: "C", value: "c" },
        { name: "A", value: "a" },
      ],
    });
    if (kubectlVersion) {
      const theirs = parseYamlDocs(
        execFileSync("kubectl", ["kustomize", join(dir, "over")], { encoding: "utf8" }),
      );
      expect(theirs).toEqual([d]);
    }
  });

  it("refuses kustomization fields it does not implement instead of ignoring them", () => {
    mkdirSync(join(dir, "odd"));
    writeFileSync(
      join(dir, "odd/kustomization.yaml"),
      "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamePrefix: x-\nresources: []\n",
    );
    expect(() => kustomizeBuild(join(dir, "odd"))).toThrow(/namePrefix/);
  });

  // kubectl is not a Debian package, so machines without it cover the overlays through the fixture above.
  it.skipIf(!kubectlVersion)(
    "builds every overlay exactly as `kubectl kustomize` does (when kubectl is installed)",
    () => {
      for (const overlay of ["dev", "production", "production-keda"]) {
        const path = join(repoRoot, "k8s/overlays", overlay);
        const theirs = parseYamlDocs(execFileSync("kubectl", ["kustomize", path], { encoding: "utf8" }));
        const key = (o: unknown) => {
          const m = (o as { kind: string; metadata: { name: string } }).metadata;
          return `${(o as { kind: string }).kind}/${m.name}`;
        };
        const sort = (l: unknown[]) => [...l].sort((a, b) => key(a).localeCompare(key(b)));
        expect(sort(kustomizeBuild(path)), overlay).toEqual(sort(theirs));
      }
    },
  );
});
