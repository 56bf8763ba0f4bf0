import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { z } from "zod";
import { startEnvSchema } from "../../scripts/config.ts";
import { envSchema as dispatcherEnv } from "../../services/dispatcher/config.ts";
import { envSchema as enqueueEnv } from "../../services/enqueue/config.ts";
import { envSchema as workerEnv } from "../../services/worker/config.ts";
import { commonEnv } from "../../shared/config.ts";
import { otelEnv } from "../../shared/telemetry/otel-env.ts";

const readme = readFileSync(fileURLToPath(new URL("../../README.md", import.meta.url)), "utf8");
// documented once, in their own tables: every service reads them
const commonKeys = new Set([...Object.keys(commonEnv), ...Object.keys(otelEnv)]);

/** The `| \`VAR\` | default | meaning |` rows under a `### heading`, up to the next heading. */
function tableUnder(heading: string): Map<string, string> {
  const start = readme.indexOf(`\n### ${heading}\n`);
  if (start < 0) throw new Error(`README has no "### ${heading}" section`);
  const end = readme.indexOf("\n#", start + 5);
  const rows = new Map<string, string>();
  for (const line of readme.slice(start, end < 0 ? undefined : end).split("\n")) {
    const m = /^\| `([A-Z][A-Z0-9_]*)` +\| ([^|]+?) +\|/.exec(line);
    if (m) rows.set(m[1]!, m[2]!);
  }
  return rows;
}

const sections: [heading: string, schema: z.ZodObject, required: (key: string) => boolean][] = [
  ["Common (every service)", z.object(commonEnv), () => true],
  ["Tracing (every service)", z.object(otelEnv), () => true],
  ["enqueue", enqueueEnv, (k) => !commonKeys.has(k)],
  ["dispatcher", dispatcherEnv, (k) => !commonKeys.has(k)],
  ["worker", workerEnv, (k) => !commonKeys.has(k)],
  ["npm start", startEnvSchema, (k) => !commonKeys.has(k)],
];

describe("README - configuration tables", () => {
  for (const [heading, schema, required] of sections) {
    it(`lists every ${heading} variable with the default the code applies`, () => {
      const rows = tableUnder(heading);
      const defaults = schema.parse({}) as Record<string, unknown>;
      const missing = Object.keys(schema.shape).filter((k) => required(k) && !rows.has(k));
      expect(missing, `undocumented in "### ${heading}"`).toEqual([]);
      for (const [key, shown] of rows) {
        expect(Object.keys(schema.shape), `"### ${heading}" documents ${key}, which is not read`).toContain(
          key,
        );
        const actual = defaults[key];
        const documented = shown === "—" ? undefined : shown.replace(/^`|`$/g, "");
        expect(documented, `default of ${key}`).toBe(actual === undefined ? undefined : String(actual));
      }
    });
  }
});
