import { describe, expect, it } from "vitest";
import { loadConfig, MAX_RESULT_LIMIT_BYTES } from "../../services/worker/config.ts";
import { ConfigError } from "../../shared/config.ts";
import { MAX_MSG_BYTES } from "../../shared/nats/topology.ts";

describe("worker config", () => {
  it("stores results of 1 MiB by default", () => {
    expect(loadConfig({}).maxResultBytes).toBe(1024 * 1024);
  });

  it("accepts MAX_RESULT_BYTES up to the state bucket's 2 MiB less room for the rest of the record", () => {
    expect(MAX_RESULT_LIMIT_BYTES).toBeLessThan(MAX_MSG_BYTES);
    expect(loadConfig({ MAX_RESULT_BYTES: String(MAX_RESULT_LIMIT_BYTES) }).maxResultBytes).toBe(
      MAX_RESULT_LIMIT_BYTES,
    );
    expect(loadConfig({ MAX_RESULT_BYTES: "1024" }).maxResultBytes).toBe(1024);
  });

  it.each([[String(MAX_RESULT_LIMIT_BYTES + 1)], [String(2 * 1024 * 1024)], [String(8 * 1024 * 1024)]])(
    "refuses MAX_RESULT_BYTES=%s, saying what the limit is and why",
    (value) => {
      expect(() => loadConfig({ MAX_RESULT_BYTES: value })).toThrow(ConfigError);
      expect(() => loadConfig({ MAX_RESULT_BYTES: value })).toThrow(
        `MAX_RESULT_BYTES: must be at most ${MAX_RESULT_LIMIT_BYTES}: the result is stored in the task's state record, which the state bucket caps at 2097152 bytes (2 MiB)`,
      );
    },
  );

  it.each([["1023"], ["0"], ["1 MiB"]])("refuses MAX_RESULT_BYTES=%s naming the variable", (value) => {
    expect(() => loadConfig({ MAX_RESULT_BYTES: value })).toThrow(/MAX_RESULT_BYTES/);
  });
});
