import { Agent, request } from "node:http";
import { afterEach, describe, expect, it } from "vitest";
import { type Harness, startHarness } from "../enqueue/harness.ts";

let h: Harness | undefined;
afterEach(async () => {
  await h?.cleanup();
  h = undefined;
});

describe("gateway shutdown - requests in flight", () => {
  it("answers a request that arrived before stop() and ends its keep-alive connection, so stop() does not wait", async () => {
    h = await startHarness();
    const agent = new Agent({ keepAlive: true });
    const url = new URL(`${h.url}/v1/tasks`);
    const body = JSON.stringify({ type: "shutdown.inflight", payload: { n: 1 } });
    // the server has parsed the request's headers (its hooks ran before closing began)
    const arrived = new Promise((r) => h!.service.app.server.once("request", r));
    const answered = new Promise<{ status: number; connection: string | undefined }>((resolve, reject) => {
      const req = request(
        {
          agent,
          host: url.hostname,
          port: url.port,
          path: url.pathname,
          method: "POST",
          headers: { "content-type": "application/json", "content-length": Buffer.byteLength(body) },
        },
        (res) => {
          res.resume(); // consumed: the agent keeps the socket for reuse, as any keep-alive client does
          res.on("end", () => resolve({ status: res.statusCode!, connection: res.headers.connection }));
        },
      );
      req.on("error", reject);
      // half the body now, the rest once stop() has begun: the answer is sent after the listener closed
      req.write(body.slice(0, 10));
      void arrived.then(() => setTimeout(() => req.end(body.slice(10)), 200));
    });
    await arrived;
    const t0 = Date.now();
    const stopped = h.service.stop().then(() => Date.now() - t0);
    const res = await answered;
    expect(res).toEqual({ status: 202, connection: "close" });
    // without "connection: close" the idle socket holds close() for keepAliveTimeout (72 s)
    expect(await stopped).toBeLessThan(5_000);
    expect(await h.tasksCount()).toBe(1);
    agent.destroy();
  });
});
