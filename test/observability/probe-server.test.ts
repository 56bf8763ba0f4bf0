import { Agent, get } from "node:http";
import { setTimeout as sleep } from "node:timers/promises";
import { Gauge, register } from "prom-client";
import { afterAll, describe, expect, it } from "vitest";
import { startProbeServer } from "../../shared/probe-server.ts";

afterAll(() => register.clear());

describe("probe server - shutdown", () => {
  it("answers a scrape in flight when close() begins and ends its keep-alive connection, so close() does not wait", async () => {
    // a slow collector keeps the scrape in flight across close()
    new Gauge({
      name: "probe_test_slow",
      help: "collected slowly",
      async collect() {
        await sleep(300);
        this.set(1);
      },
    });
    const probe = await startProbeServer({ host: "127.0.0.1", port: 0, ready: () => true });
    const agent = new Agent({ keepAlive: true });
    const arrived = new Promise((r) => probe.server.once("request", r));
    const scraped = new Promise<{ status: number; connection: string | undefined; body: string }>(
      (resolve, reject) => {
        get({ agent, host: "127.0.0.1", port: probe.port, path: "/metrics" }, (res) => {
          let body = "";
          res.on("data", (c: Buffer) => {
            body += c.toString();
          });
          res.on("end", () => resolve({ status: res.statusCode!, connection: res.headers.connection, body }));
        }).on("error", reject);
      },
    );
    await arrived; // in flight: the collector holds it for 300 ms
    const t0 = Date.now();
    const closed = probe.close().then(() => Date.now() - t0);
    const res = await scraped;
    expect(res.status).toBe(200);
    expect(res.body).toContain("probe_test_slow 1");
    expect(res.connection).toBe("close");
    // without it the socket the agent keeps holds close() for the keep-alive timeout
    expect(await closed).toBeLessThan(2_000);
    agent.destroy();
  });
});
