import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { afterEach, describe, expect, it } from "vitest";
import { freePort, type LocalServer, startNatsServer } from "../../shared/nats/local-server.ts";
import { startTestNats, type TestNats } from "../support/nats.ts";
import { trackServer } from "../support/orphans.ts";
import { type ServiceProcess, spawnService, waitFor } from "../support/processes.ts";

let proc: ServiceProcess | undefined;
let nats: TestNats | undefined;
let late: LocalServer | undefined;
let lateDir: string | undefined;

afterEach(async () => {
  await proc?.stop("SIGKILL");
  await nats?.cleanup();
  await late?.stop();
  if (lateDir) rmSync(lateDir, { recursive: true, force: true });
  proc = nats = late = lateDir = undefined;
});

const post = (port: unknown, body: unknown) =>
  fetch(`http://127.0.0.1:${port}/v1/tasks`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });

describe("enqueue process", () => {
  it("logs ready with its real port, accepts over HTTP and exits 0 on SIGTERM", async () => {
    nats = await startTestNats();
    proc = spawnService("enqueue", { NATS_URL: nats.url, HTTP_PORT: "0", HTTP_HOST: "127.0.0.1" });
    const ready = await proc.waitForLog((l) => l.msg === "ready");
    expect(ready.service).toBe("enqueue");
    expect(typeof ready.port).toBe("number");
    expect(ready.port).toBeGreaterThan(0);

    const res = await post(ready.port, { type: "proc.test", payload: { ok: true }, priority: "urgent" });
    expect(res.status).toBe(202);
    const { id } = (await res.json()) as { id: string };

    const nc = await connect({ servers: nats.url });
    try {
      const jsm = await jetstreamManager(nc);
      const sm = await jsm.streams.getMessage("SLUICE_TASKS", {
        last_by_subj: "sluice.tasks.urgent.proc.test",
      });
      expect(sm?.json<{ id: string }>().id).toBe(id);
    } finally {
      await nc.close();
    }

    expect(await proc.stop("SIGTERM")).toBe(0);
    expect(proc.logs.some((l) => l.msg === "stopped")).toBe(true);
  });

  it("comes up without NATS, answers 503, and becomes ready when NATS appears", async () => {
    const port = await freePort();
    proc = spawnService("enqueue", {
      NATS_URL: `nats://127.0.0.1:${port}`,
      HTTP_PORT: "0",
      HTTP_HOST: "127.0.0.1",
    });
    const listening = await proc.waitForLog((l) => l.msg === "listening");
    const base = `http://127.0.0.1:${listening.port}`;
    expect((await fetch(`${base}/healthz`)).status).toBe(200);
    expect((await fetch(`${base}/readyz`)).status).toBe(503);
    const refused = await post(listening.port, { type: "early" });
    expect(refused.status).toBe(503);
    expect(refused.headers.get("retry-after")).toBe("1");
    expect(proc.logs.some((l) => l.msg === "ready")).toBe(false);

    lateDir = mkdtempSync(join(tmpdir(), "sluice-test-"));
    late = trackServer(
      await startNatsServer({ port, storeDir: lateDir, bin: process.env.NATS_SERVER_BIN || undefined }),
    );
    await proc.waitForLog((l) => l.msg === "ready", 15_000);
    await waitFor(async () => (await fetch(`${base}/readyz`)).status === 200, 10_000);
    expect((await post(listening.port, { type: "late" })).status).toBe(202);
    expect(await proc.stop("SIGTERM")).toBe(0);
  });

  it("exits 0 on SIGTERM while NATS was never reachable", async () => {
    const port = await freePort();
    proc = spawnService("enqueue", { NATS_URL: `nats://127.0.0.1:${port}`, HTTP_PORT: "0" });
    await proc.waitForLog((l) => l.msg === "listening");
    expect(await proc.stop("SIGTERM")).toBe(0);
  });

  it("refuses to start with an invalid configuration", async () => {
    proc = spawnService("enqueue", { HTTP_PORT: "not-a-port", MAX_PAYLOAD_BYTES: "0" });
    const code = await proc.exited;
    expect(code).not.toBe(0);
    const text = JSON.stringify(proc.logs);
    expect(text).toMatch(/HTTP_PORT/);
    expect(text).toMatch(/MAX_PAYLOAD_BYTES/);
  });
});
