import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { createServer, connect as tcpConnect } from "node:net";
import { join } from "node:path";

/**
 * Spawns a real nats-server with JetStream on loopback: `npm start` uses one on a data folder, every
 * test suite its own on a free port with a temporary store, and the cluster tests three of them.
 */

/** Where to find nats-server: the explicit path, then PATH, then Debian's and the usual install spots. */
export function findNatsServer(explicit?: string): string | undefined {
  if (explicit) return existsSync(explicit) ? explicit : undefined;
  try {
    const p = execFileSync("sh", ["-c", "command -v nats-server"], { encoding: "utf8" }).trim();
    if (p) return p;
  } catch {
    // not on PATH
  }
  return ["/usr/sbin/nats-server", "/usr/bin/nats-server", "/usr/local/bin/nats-server"].find((p) =>
    existsSync(p),
  );
}

/** The one line we print when no binary can be found or installed. */
export const INSTALL_HINT =
  "nats-server not found: install it (Debian/Ubuntu: `sudo apt-get install nats-server`; macOS: `brew install nats-server`; " +
  "or download from https://github.com/nats-io/nats-server/releases) or set NATS_SERVER_BIN, or point NATS_URL at a running server.";

/** A free TCP port on 127.0.0.1 (the OS picks; there is a small race before nats-server binds it). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.unref();
    s.on("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const addr = s.address();
      const port = typeof addr === "object" && addr ? addr.port : 0;
      s.close(() => resolve(port));
    });
  });
}

/** Options of {@link startNatsServer}. */
export type LocalServerOptions = {
  /** Path of the binary (default: found with {@link findNatsServer}). */
  bin?: string;
  /** Client port (default: a free one). */
  port?: number;
  /** JetStream store directory (created if missing). */
  storeDir: string;
  /** Server name; required in a cluster. */
  name?: string;
  /** Cluster settings, for multi-node tests. */
  cluster?: { name: string; port: number; routes: number[] };
  /** Monitoring port (`/jsz`, `/varz`), off by default. */
  httpPort?: number;
  /** Inherit stdio, discard it, or pipe it (the caller must then read `process.stdout`/`stderr`). */
  stdio?: "inherit" | "ignore" | "pipe";
  /** Write the server's log to this file (appended across restarts), for tests that explain failures. */
  logFile?: string;
  /**
   * Run in its own process group, so a terminal's Ctrl-C reaches only the supervisor (npm start), which
   * stops the server after the services drained rather than under them.
   */
  detached?: boolean;
};

/** A running local server. */
export type LocalServer = {
  readonly url: string;
  readonly port: number;
  readonly process: ChildProcess;
  /**
   * SIGINT, then SIGKILL after `graceMs`; resolves when the process exited. nats-server shuts down the
   * same way on SIGINT and SIGTERM, but exits 1 after SIGTERM (2.9.10): a clean stop should not look
   * like a failure (`npm start` stops it the same way).
   */
  stop(graceMs?: number): Promise<void>;
  /** SIGKILL, for crash tests. */
  kill(): Promise<void>;
  /** Start it again on the same port and store (after stop or kill). */
  restart(): Promise<LocalServer>;
};

/** Start a nats-server with JetStream and wait until it accepts connections. */
export async function startNatsServer(opts: LocalServerOptions): Promise<LocalServer> {
  const bin = opts.bin ?? findNatsServer();
  if (!bin) throw new Error(INSTALL_HINT);
  const port = opts.port ?? (await freePort());
  mkdirSync(opts.storeDir, { recursive: true });
  const confPath = join(opts.storeDir, "nats-server.conf");
  writeFileSync(confPath, serverConfig({ ...opts, port }));
  const args = ["-c", confPath];
  const child = spawn(bin, args, { stdio: opts.stdio ?? "ignore", detached: opts.detached ?? false });
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  let failed: Error | undefined;
  child.once("error", (e) => {
    failed = e;
  });
  await waitForPort(
    port,
    10_000,
    () => failed ?? (child.exitCode !== null ? new Error("nats-server exited") : undefined),
  );
  const server: LocalServer = {
    url: `nats://127.0.0.1:${port}`,
    port,
    process: child,
    async stop(graceMs = 5000) {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill("SIGINT");
      const t = setTimeout(() => child.kill("SIGKILL"), graceMs);
      await exited;
      clearTimeout(t);
    },
    async kill() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill("SIGKILL");
      await exited;
    },
    restart: () => startNatsServer({ ...opts, bin, port }),
  };
  return server;
}

/** MAX_MSG_SIZE of our streams is 2 MiB (1 MiB payload plus envelope); the server default (1 MiB) is too small. */
export const MAX_PAYLOAD = "8MB";

/** The server's config file: a file rather than flags, because `max_payload` has no flag. */
function serverConfig(o: LocalServerOptions & { port: number }): string {
  const lines = [
    `listen: "127.0.0.1:${o.port}"`,
    `max_payload: ${MAX_PAYLOAD}`,
    `jetstream { store_dir: ${JSON.stringify(o.storeDir)} }`,
  ];
  if (o.name) lines.push(`server_name: ${JSON.stringify(o.name)}`);
  if (o.httpPort) lines.push(`http: "127.0.0.1:${o.httpPort}"`);
  if (o.logFile) lines.push(`log_file: ${JSON.stringify(o.logFile)}`);
  if (o.cluster) {
    const routes = o.cluster.routes.map((p) => JSON.stringify(`nats://127.0.0.1:${p}`)).join(", ");
    lines.push(
      `cluster { name: ${JSON.stringify(o.cluster.name)}, listen: "127.0.0.1:${o.cluster.port}", routes: [${routes}] }`,
    );
  }
  return `${lines.join("\n")}\n`;
}

async function waitForPort(port: number, timeoutMs: number, failed: () => Error | undefined): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const err = failed();
    if (err) throw err;
    const ok = await new Promise<boolean>((resolve) => {
      const s = tcpConnect({ port, host: "127.0.0.1" }, () => {
        s.destroy();
        resolve(true);
      });
      s.on("error", () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`nats-server did not listen on ${port} within ${timeoutMs} ms`);
}
