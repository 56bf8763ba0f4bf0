import { execFileSync, spawn } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Redis } from "ioredis";
import { findNatsServer, freePort, startNatsServer } from "../../shared/nats/local-server.ts";
import { alive, register, registerDir, terminate } from "./children.ts";
import { until } from "./clock.ts";

/**
 * The brokers, each started by the bench on a free loopback port with a fresh temp dir, never the
 * machine's own nats-server (4222) or Redis (6379).
 */

/** A broker the bench started. */
export type Broker = { readonly port: number; readonly pid: number; stop(): Promise<void> };

/** A nats-server with JetStream and file storage in a new temp dir. */
export async function startNats(): Promise<Broker & { url: string }> {
  const storeDir = mkdtempSync(join(tmpdir(), "sluice-bench-nats-"));
  registerDir(storeDir);
  const s = await startNatsServer({ storeDir });
  register(s.process, "nats-server");
  return { url: s.url, port: s.port, pid: s.process.pid!, stop: () => s.stop() };
}

/**
 * A redis-server. `persistent`: AOF with fsync every second (what a team that must not lose jobs runs);
 * otherwise no persistence at all. RDB snapshots are off in both.
 */
export async function startRedis(persistent: boolean): Promise<Broker> {
  const dir = mkdtempSync(join(tmpdir(), "sluice-bench-redis-"));
  registerDir(dir);
  const port = await freePort();
  const args = ["--port", String(port), "--bind", "127.0.0.1", "--dir", dir, "--save", ""];
  args.push(...(persistent ? ["--appendonly", "yes", "--appendfsync", "everysec"] : ["--appendonly", "no"]));
  const child = spawn("redis-server", args, { stdio: "ignore" });
  register(child, "redis-server");
  let spawnError: Error | undefined;
  child.once("error", (e) => {
    spawnError = e;
  });
  const probe = new Redis({ host: "127.0.0.1", port, lazyConnect: true, maxRetriesPerRequest: 0 });
  probe.on("error", () => undefined);
  try {
    await until(
      "redis-server to answer PING",
      async () => {
        if (spawnError)
          throw new Error(`redis-server: ${spawnError.message} (install it: apt-get install redis-server)`);
        if (!alive(child)) throw new Error("redis-server exited at startup");
        try {
          if (probe.status !== "ready") await probe.connect();
          return (await probe.ping()) === "PONG";
        } catch {
          return false;
        }
      },
      10_000,
      50,
    );
  } finally {
    probe.disconnect();
  }
  return { port, pid: child.pid!, stop: () => terminate(child) };
}

/** FLUSHALL, so the next phase starts on an empty keyspace. */
export async function flushRedis(port: number): Promise<void> {
  const r = new Redis({ host: "127.0.0.1", port });
  try {
    await r.flushall();
  } finally {
    r.disconnect();
  }
}

/** Versions of the brokers, for the report. */
export function brokerVersions(): { natsServer: string; redis: string } {
  const run = (bin: string, args: string[]) => {
    try {
      return execFileSync(bin, args, { encoding: "utf8" }).trim();
    } catch {
      return "unknown";
    }
  };
  const nats = findNatsServer();
  const natsServer = nats ? run(nats, ["--version"]).replace(/^nats-server:\s*/, "") : "not found";
  const redis = /v=(\S+)/.exec(run("redis-server", ["--version"]))?.[1] ?? "unknown";
  return { natsServer, redis };
}
