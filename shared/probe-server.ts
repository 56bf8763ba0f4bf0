import { createServer, type Server } from "node:http";
import { register } from "prom-client";

/**
 * The small HTTP listener of services that have no API of their own (dispatcher, worker):
 * `/healthz` (the process is alive), `/readyz` (it is doing its job), `/metrics` (Prometheus).
 */
export async function startProbeServer(opts: {
  host: string;
  port: number;
  ready: () => boolean;
}): Promise<{ server: Server; port: number; close(): Promise<void> }> {
  // An answer sent after close() began would leave its keep-alive connection idle, and close() waits
  // for it (it ends only the idle connections it finds at the start): while closing, answers end theirs.
  let closing = false;
  const server = createServer((req, res) => {
    if (closing) res.setHeader("connection", "close");
    const path = (req.url ?? "/").split("?")[0];
    if (path === "/healthz") {
      res.writeHead(200, { "content-type": "application/json" }).end('{"status":"ok"}');
    } else if (path === "/readyz") {
      const ok = opts.ready();
      res
        .writeHead(ok ? 200 : 503, { "content-type": "application/json" })
        .end(JSON.stringify({ status: ok ? "ready" : "not_ready" }));
    } else if (path === "/metrics") {
      register.metrics().then(
        (body) => {
          if (closing) res.setHeader("connection", "close");
          res.writeHead(200, { "content-type": register.contentType }).end(body);
        },
        () => res.writeHead(500).end(),
      );
    } else {
      res
        .writeHead(404, { "content-type": "application/problem+json" })
        .end(JSON.stringify({ type: "about:blank", title: "Not Found", status: 404, code: "not_found" }));
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(opts.port, opts.host, () => resolve());
  });
  const addr = server.address();
  return {
    server,
    port: typeof addr === "object" && addr ? addr.port : opts.port,
    close: () =>
      new Promise<void>((r) => {
        closing = true;
        server.close(() => r());
      }),
  };
}
