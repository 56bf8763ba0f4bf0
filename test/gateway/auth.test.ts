import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { findKey, parseApiKeys } from "../../services/enqueue/auth/keys.ts";
import { loadConfig } from "../../services/enqueue/config.ts";
import { ConfigError } from "../../shared/config.ts";
import { type Harness, startHarness } from "../enqueue/harness.ts";
import { testKey } from "./support.ts";

const reader = testKey("dashboard", ["read"]);
const producer = testKey("appwrite-fn", ["enqueue"]);
const both = testKey("service", ["enqueue", "read"]);
const admin = testKey("ops", ["admin"]);
const fromFile = testKey("mounted", ["read"]);

let h: Harness;
let dir: string;
beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "sluice-keys-"));
  const file = join(dir, "keys");
  writeFileSync(file, `# mounted secret\n${fromFile.entry}\n\n`);
  h = await startHarness({
    AUTH_ENABLED: "true",
    SLUICE_API_KEYS: [reader.entry, producer.entry, both.entry, admin.entry].join(","),
    SLUICE_API_KEYS_FILE: file,
    CORS_ORIGINS: "https://app.example.com",
  });
});
afterAll(async () => {
  await h?.cleanup();
  rmSync(dir, { recursive: true, force: true });
});

const task = JSON.stringify({ type: "auth.test", payload: { n: 1 } });

function call(method: "GET" | "POST", url: string, headers: Record<string, string> = {}) {
  return h.service.app.inject({
    method,
    url,
    headers: method === "POST" ? { "content-type": "application/json", ...headers } : headers,
    ...(method === "POST" ? { payload: task } : {}),
  });
}
const bearer = (k: { key: string }) => ({ authorization: `Bearer ${k.key}` });

describe("gateway auth - API keys", () => {
  it("answers 401 with a problem and WWW-Authenticate when no key or an unknown key is sent", async () => {
    for (const headers of [
      {},
      { authorization: "Bearer sk_nope" },
      { "x-api-key": "sk_nope" },
      { authorization: "" },
    ] as Record<string, string>[]) {
      const res = await call("POST", "/v1/tasks", headers);
      expect(res.statusCode, JSON.stringify(headers)).toBe(401);
      expect(res.headers["content-type"]).toMatch(/^application\/problem\+json/);
      expect(res.headers["www-authenticate"]).toBe('Bearer realm="sluice"');
      expect(res.json().code).toBe("unauthorized");
    }
    expect(await h.tasksCount()).toBe(0);
  });

  it("lets the enqueue scope enqueue but not read, and the read scope read but not enqueue (403)", async () => {
    const posted = await call("POST", "/v1/tasks", bearer(producer));
    expect(posted.statusCode).toBe(202);
    const { id } = posted.json() as { id: string };
    const denied = await call("GET", `/v1/tasks/${id}`, bearer(producer));
    expect(denied.statusCode).toBe(403);
    expect(denied.json()).toMatchObject({ code: "forbidden", status: 403 });
    expect(denied.json().detail).toContain("read");

    expect((await call("GET", `/v1/tasks/${id}`, bearer(reader))).statusCode).toBe(200);
    const refused = await call("POST", "/v1/tasks", bearer(reader));
    expect(refused.statusCode).toBe(403);
    expect(refused.json().detail).toContain("enqueue");
    expect(await h.tasksCount()).toBe(1);
  });

  it("accepts X-API-Key as well as a bearer token, and a key with several scopes", async () => {
    expect((await call("POST", "/v1/tasks", { "x-api-key": both.key })).statusCode).toBe(202);
    expect((await call("GET", "/v1/tasks", { "x-api-key": both.key })).statusCode).toBe(200);
  });

  it("reads keys from the mounted file too", async () => {
    expect((await call("GET", "/v1/workers", bearer(fromFile))).statusCode).toBe(200);
    expect((await call("POST", "/v1/tasks", bearer(fromFile))).statusCode).toBe(403);
  });

  it("gives admin every route, lets producers cancel, and keeps operations to admin keys", async () => {
    expect((await call("POST", "/v1/tasks", bearer(admin))).statusCode).toBe(202);
    expect((await call("GET", "/v1/workers", bearer(admin))).statusCode).toBe(200);
    const id = "no-such-task";
    // cancel is a producer's call (scope enqueue): past auth, then 404 for the unknown task
    expect((await call("POST", `/v1/tasks/${id}/cancel`, bearer(producer))).statusCode).toBe(404);
    // pausing a task is an operation: admin only
    expect((await call("POST", `/v1/tasks/${id}/pause`, bearer(producer))).statusCode).toBe(403);
    expect((await call("POST", `/v1/tasks/${id}/pause`, bearer(admin))).statusCode).toBe(404);
    expect((await call("POST", "/v1/dlq/replay", bearer(producer))).statusCode).toBe(403);
  });

  it("leaves health, readiness, metrics and the API docs open", async () => {
    for (const url of ["/healthz", "/readyz", "/metrics", "/openapi.json", "/docs"]) {
      expect((await call("GET", url)).statusCode, url).toBe(200);
    }
  });

  it("protects health, metrics and docs too when AUTH_EXEMPT_PATHS leaves them out", async () => {
    const strict = await startHarness({
      AUTH_ENABLED: "true",
      SLUICE_API_KEYS: reader.entry,
      AUTH_EXEMPT_PATHS: "/healthz",
    });
    try {
      const status = async (url: string, headers: Record<string, string> = {}) =>
        (await strict.service.app.inject({ url, headers })).statusCode;
      expect(await status("/healthz")).toBe(200);
      for (const url of ["/readyz", "/metrics", "/openapi.json", "/docs"]) {
        expect(await status(url), url).toBe(401);
        expect(await status(url, bearer(reader)), url).toBe(200);
      }
    } finally {
      await strict.cleanup();
    }
  });

  it("takes ?access_token= only on the event streams, never on ordinary routes", async () => {
    const plain = await call("GET", `/v1/workers?access_token=${reader.key}`);
    expect(plain.statusCode).toBe(401);
    const stream = await fetch(`${h.url}/v1/events?access_token=${encodeURIComponent(reader.key)}`);
    expect(stream.status).toBe(200);
    expect(stream.headers.get("content-type")).toMatch(/^text\/event-stream/);
    await stream.body?.cancel();
    const refused = await fetch(`${h.url}/v1/events?access_token=wrong`);
    expect(refused.status).toBe(401);
  });

  it("refuses a WebSocket upgrade without a key", async () => {
    const status = await new Promise<string>((resolve) => {
      const ws = new WebSocket(`${h.url.replace("http", "ws")}/v1/ws`);
      ws.onopen = () => resolve("open");
      ws.onerror = () => resolve("error");
    });
    expect(status).toBe("error");
    const ok = await new Promise<string>((resolve) => {
      const ws = new WebSocket(
        `${h.url.replace("http", "ws")}/v1/ws?access_token=${encodeURIComponent(reader.key)}`,
      );
      ws.onopen = () => {
        ws.close();
        resolve("open");
      };
      ws.onerror = () => resolve("error");
    });
    expect(ok).toBe("open");
  });
});

describe("gateway auth - CORS", () => {
  it("answers a preflight from a configured origin without a key, and nothing to other origins", async () => {
    const pre = await h.service.app.inject({
      method: "OPTIONS",
      url: "/v1/tasks",
      headers: {
        origin: "https://app.example.com",
        "access-control-request-method": "POST",
        "access-control-request-headers": "authorization,content-type",
      },
    });
    expect(pre.statusCode).toBe(204);
    expect(pre.headers["access-control-allow-origin"]).toBe("https://app.example.com");
    expect(String(pre.headers["access-control-allow-headers"])).toContain("authorization");
    const res = await call("POST", "/v1/tasks", { ...bearer(producer), origin: "https://app.example.com" });
    expect(res.headers["access-control-allow-origin"]).toBe("https://app.example.com");
    expect(String(res.headers["access-control-expose-headers"])).toContain("location");
    const other = await call("GET", "/healthz", { origin: "https://evil.example.com" });
    expect(other.headers["access-control-allow-origin"]).toBeUndefined();
  });
});

describe("gateway auth - configuration", () => {
  it("stores digests only and matches the presented key", () => {
    const k = testKey("x", ["read", "enqueue"]);
    const [parsed] = parseApiKeys(k.entry);
    expect(parsed!.digest.toString("hex")).not.toContain(k.key);
    expect(findKey([parsed!], k.key)?.name).toBe("x");
    expect(findKey([parsed!], `${k.key}x`)).toBeUndefined();
  });

  it.each([
    ["no digest", "name:read"],
    ["a short digest", `name:read:${"a".repeat(63)}`],
    ["an unknown scope", `name:write:${"a".repeat(64)}`],
    ["a repeated name", `a:read:${"a".repeat(64)},a:admin:${"b".repeat(64)}`],
  ])("rejects an entry with %s, without echoing it", (_what, entry) => {
    expect(() => loadConfig({ SLUICE_API_KEYS: entry })).toThrow(ConfigError);
    expect(() => loadConfig({ SLUICE_API_KEYS: entry })).toThrow(/SLUICE_API_KEYS/);
    try {
      loadConfig({ SLUICE_API_KEYS: entry });
    } catch (e) {
      expect((e as Error).message).not.toContain("a".repeat(63));
    }
  });

  it("turns auth on by default and names a missing key file", () => {
    expect(loadConfig({}).authEnabled).toBe(true);
    expect(loadConfig({ AUTH_ENABLED: "false" }).authEnabled).toBe(false);
    expect(() => loadConfig({ SLUICE_API_KEYS_FILE: "/nonexistent/keys" })).toThrow(/SLUICE_API_KEYS_FILE/);
    expect(() => loadConfig({ CORS_ORIGINS: "app.example.com" })).toThrow(/CORS_ORIGINS/);
    expect(loadConfig({ CORS_ORIGINS: "*" }).corsOrigins).toBe(true);
    expect(loadConfig({}).corsOrigins).toBeUndefined();
  });
});
