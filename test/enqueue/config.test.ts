import { describe, expect, it } from "vitest";
import { envSchema, loadConfig, MAX_PAYLOAD_LIMIT_BYTES } from "../../services/enqueue/config.ts";
import { ConfigError } from "../../shared/config.ts";

describe("enqueue config", () => {
  it("applies the documented defaults", () => {
    const c = loadConfig({});
    expect(c).toMatchObject({
      httpHost: "0.0.0.0",
      httpPort: 8080,
      maxPayloadBytes: 1_048_576,
      requestTimeoutMs: 10_000,
      publishTimeoutMs: 5_000,
      natsUrl: ["nats://127.0.0.1:4222"],
      prefix: "sluice",
      replicas: 1,
      storage: "file",
    });
    expect(Object.isFrozen(c)).toBe(true);
  });

  it("parses every variable it owns, treating empty strings as unset", () => {
    const c = loadConfig({
      HTTP_HOST: "127.0.0.1",
      HTTP_PORT: "0",
      MAX_PAYLOAD_BYTES: "2048",
      REQUEST_TIMEOUT_MS: "400",
      NATS_URL: "nats://a:4222, nats://b:4222",
      SLUICE_PREFIX: "",
      UNRELATED: "ignored",
    });
    expect(c).toMatchObject({
      httpHost: "127.0.0.1",
      httpPort: 0,
      maxPayloadBytes: 2048,
      requestTimeoutMs: 400,
      publishTimeoutMs: 200,
      natsUrl: ["nats://a:4222", "nats://b:4222"],
      prefix: "sluice",
    });
    expect(Object.keys(envSchema.shape)).toEqual(
      expect.arrayContaining([
        "HTTP_HOST",
        "HTTP_PORT",
        "MAX_PAYLOAD_BYTES",
        "REQUEST_TIMEOUT_MS",
        "NATS_URL",
      ]),
    );
  });

  it.each([
    ["HTTP_PORT", "65536"],
    ["HTTP_PORT", "http"],
    ["MAX_PAYLOAD_BYTES", "0"],
    ["MAX_PAYLOAD_BYTES", String(MAX_PAYLOAD_LIMIT_BYTES + 1)],
    ["REQUEST_TIMEOUT_MS", "-1"],
  ])("rejects %s=%s naming the variable", (key, value) => {
    expect(() => loadConfig({ [key]: value })).toThrow(ConfigError);
    expect(() => loadConfig({ [key]: value })).toThrow(key);
  });
});
