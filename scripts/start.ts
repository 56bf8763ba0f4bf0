import { mkdirSync } from "node:fs";
import { resolve } from "node:path";
import { ConfigError } from "../shared/config.ts";
import { names } from "../shared/names.ts";
import { connectNats } from "../shared/nats/connection.ts";
import { freePort, type LocalServer, startNatsServer } from "../shared/nats/local-server.ts";
import { ensureTopology, ensureTypeConsumers } from "../shared/nats/topology.ts";
import { EXAMPLE_TYPES, loadStartConfig, type StartConfig } from "./config.ts";
import { ensureNatsServer, NatsServerMissingError } from "./ensure-nats-server.ts";
import { chooseNatsPort, isPortFree, PortBusyError } from "./ports.ts";
import { createFormatter } from "./pretty-log.ts";
import { type ExitStatus, Supervisor } from "./supervisor.ts";

/**
 * `npm start`: the whole system on one machine, as separate processes like in production — a
 * nats-server with JetStream on `.data/nats` (unless NATS_URL names one), then enqueue, dispatcher and
 * one worker serving the example types. Their JSON logs are shown as readable lines. Ctrl-C or SIGTERM
 * drains the services, then stops the server; a service that dies stops everything with exit code 1.
 */

const SERVICES = ["enqueue", "dispatcher", "worker"] as const;
/** How long the services get to log `ready` after they were spawned. */
const READY_TIMEOUT_MS = 30_000;
/** Signals this soon after the first are the same Ctrl-C relayed again (npm forwards what it got). */
const REPEAT_SIGNAL_WINDOW_MS = 1_000;

const fmt = createFormatter({
  color: process.stdout.isTTY === true,
  sources: ["start", "nats", ...SERVICES],
});
const say = (level: "INFO" | "WARN" | "ERROR", text: string) =>
  process.stdout.write(`${fmt.record("start", level, text)}\n`);

let stopping: Promise<never> | undefined;
let firstSignalAt = 0;
let natsStarting: Promise<unknown> | undefined;
/** Replaced by the configured value once the env is parsed. */
let stopTimeoutMs = 35_000;

const sup = new Supervisor({
  onLine: (name, line) => process.stdout.write(`${fmt.line(name, line)}\n`),
  onUnexpectedExit: (name, status) => {
    say("ERROR", `${name} exited unexpectedly (${describe(status)}); stopping everything`);
    void shutdown(1);
  },
});

// Last resort for a crash of this script itself: never leave the services or the server behind.
process.on("exit", () => sup.killAll());

function onSignal(signal: NodeJS.Signals): void {
  if (!stopping) {
    firstSignalAt = Date.now();
    say("INFO", `${signal} received: draining the services, then stopping nats-server`);
    void shutdown(0);
  } else if (Date.now() - firstSignalAt > REPEAT_SIGNAL_WINDOW_MS) {
    say("WARN", `${signal} again: killing everything without waiting`);
    sup.killAll();
    process.exit(1);
  }
}
process.on("SIGINT", onSignal);
process.on("SIGTERM", onSignal);

/** Stop the services (bounded), then the server, then exit; the first caller decides the exit code. */
function shutdown(code: number): Promise<never> {
  stopping ??= (async () => {
    let exitCode = code;
    // a server still starting would otherwise be orphaned
    await natsStarting?.catch(() => undefined);
    const services = await sup.stop(SERVICES, stopTimeoutMs);
    for (const [name, status] of services) {
      // Killed by our SIGTERM before it installed its drain handler: it was serving nothing yet.
      const beforeReady = status.signal === "SIGTERM" && !sup.get(name)?.isReady();
      const clean = status.code === 0 || beforeReady;
      if (!clean) exitCode = exitCode || 1;
      const note = beforeReady ? ", stopped before it was ready" : "";
      say(clean ? "INFO" : "ERROR", `${name} exited (${describe(status)}${note})`);
    }
    // SIGINT: nats-server shuts down as on SIGTERM, but exits 0 instead of 1 (2.9.10)
    const nats = await sup.stop(["nats"], 5_000, "SIGINT");
    for (const [name, status] of nats) say("INFO", `${name} exited (${describe(status)})`);
    say(exitCode === 0 ? "INFO" : "ERROR", `stopped, exit code ${exitCode}`);
    process.exit(exitCode);
  })();
  return stopping;
}

function describe(s: ExitStatus): string {
  return s.signal ? `signal ${s.signal}` : `code ${s.code}`;
}

/** Spawn our nats-server on the configured or a free port; resolves with its URL. */
async function startOwnServer(cfg: StartConfig, dataDir: string): Promise<LocalServer> {
  const bin = ensureNatsServer({ bin: cfg.natsServerBin, log: (l) => say("INFO", l) });
  const { port, fellBackFrom } = await chooseNatsPort(cfg.natsPort);
  if (fellBackFrom)
    say("INFO", `port ${fellBackFrom} is taken (another nats-server?); using ${port} instead`);
  const storeDir = resolve(dataDir, "nats");
  say("INFO", `starting ${bin} on 127.0.0.1:${port}, JetStream store ${storeDir}`);
  const server = await startNatsServer({ bin, port, storeDir, stdio: "pipe", detached: true });
  sup.track("nats", server.process);
  say("INFO", `nats started (pid ${server.process.pid})`);
  return server;
}

async function main(): Promise<void> {
  const cfg = loadStartConfig(process.env);
  stopTimeoutMs = cfg.stopTimeoutMs;
  const dataDir = resolve(cfg.dataDir);
  mkdirSync(dataDir, { recursive: true });

  let natsUrl = cfg.natsUrl;
  let natsNote: string;
  if (natsUrl.length === 0) {
    const starting = startOwnServer(cfg, dataDir);
    natsStarting = starting;
    const server = await starting;
    natsUrl = [server.url];
    natsNote = `our nats-server, store in ${resolve(dataDir, "nats")}`;
  } else {
    natsNote = "existing server (NATS_URL); no nats-server spawned";
    say("INFO", `using the NATS at ${natsUrl.join(",")}`);
  }
  if (stopping) return;

  // Streams, buckets and the example types' consumers exist before any service starts, so the first
  // enqueued task has somewhere to go even if the worker is still starting.
  const nc = await connectNats(
    { natsUrl, natsUser: cfg.natsUser, natsPass: cfg.natsPass, natsToken: cfg.natsToken },
    { name: "sluice-start" },
  );
  try {
    const n = names(cfg.prefix);
    const topo = await ensureTopology(nc, n, { replicas: cfg.replicas, storage: cfg.storage });
    const ackWait = cfg.workAckWaitMs === undefined ? {} : { ackWaitMs: cfg.workAckWaitMs };
    for (const type of EXAMPLE_TYPES) await ensureTypeConsumers(topo.jsm, n, type, ackWait);
    say(
      "INFO",
      `streams, buckets and consumers ready (prefix ${cfg.prefix}, types ${EXAMPLE_TYPES.join(", ")})`,
    );
  } finally {
    await nc.close();
  }
  if (stopping) return;

  const httpPort = cfg.httpPort === 0 ? await freePort() : cfg.httpPort;
  if (!(await isPortFree(httpPort, cfg.httpHost))) {
    throw new PortBusyError(`HTTP_PORT ${httpPort} is in use; set HTTP_PORT to a free port (0 picks one)`);
  }

  if (stopping) return;
  const base = stringEnv(process.env);
  const common = { ...base, NATS_URL: natsUrl.join(","), LOG_FORMAT: "json" };
  const envs: Record<(typeof SERVICES)[number], Record<string, string>> = {
    // local mode: no API keys, unless the caller's environment says AUTH_ENABLED=true
    enqueue: { AUTH_ENABLED: "false", ...common, HTTP_HOST: cfg.httpHost, HTTP_PORT: String(httpPort) },
    // two processes cannot share one metrics port; run them alone to scrape them
    dispatcher: { ...common, METRICS_PORT: "0" },
    worker: { ...common, METRICS_PORT: "0" },
  };
  const started = SERVICES.map((name) => {
    const s = sup.spawnService(name, envs[name]);
    say("INFO", `${name} started (pid ${s.child.pid})`);
    return s;
  });

  const timeout = new Promise<"timeout">((r) => setTimeout(() => r("timeout"), READY_TIMEOUT_MS).unref());
  const ready = await Promise.race([Promise.all(started.map((s) => s.ready)), timeout]);
  if (stopping) return;
  if (ready === "timeout") {
    const late = started.filter((s) => !s.isReady()).map((s) => s.name);
    say("ERROR", `not ready after ${READY_TIMEOUT_MS / 1000} s: ${late.join(", ")}; stopping`);
    await shutdown(1);
    return;
  }
  printBanner({ cfg, httpPort, natsUrl, natsNote, dataDir });
}

function printBanner(o: {
  cfg: StartConfig;
  httpPort: number;
  natsUrl: string[];
  natsNote: string;
  dataDir: string;
}): void {
  const host = o.cfg.httpHost === "0.0.0.0" || o.cfg.httpHost === "::" ? "127.0.0.1" : o.cfg.httpHost;
  const api = `http://${host.includes(":") ? `[${host}]` : host}:${o.httpPort}`;
  const post = `curl -s -X POST ${api}/v1/tasks -H 'content-type: application/json' -d`;
  const lines = [
    "",
    "Sluice is running.",
    `  HTTP API   ${api}   (enqueue: POST /v1/tasks, GET /v1/tasks/<id>, GET /readyz)`,
    `  API docs   ${api}/docs   (OpenAPI: ${api}/openapi.json)`,
    `  NATS       ${o.natsUrl.join(",")}   (${o.natsNote})`,
    `  Data       ${o.dataDir}`,
    "",
    "Try it:",
    `  ${post} '{"type":"noop","payload":{"hello":"world"}}'`,
    `  ${post} '{"type":"doc.chunk","priority":"high","payload":{"text":"First paragraph.\\n\\nSecond paragraph, a little longer.","chunkSize":24,"chunkOverlap":0}}'`,
    `  curl -s ${api}/v1/tasks/<id from the reply>`,
    `  npx sluice --url ${api} task watch <id>      (the CLI; npx sluice --help)`,
    "",
    "Ctrl-C stops everything (the services drain first).",
    "",
  ];
  process.stdout.write(`${lines.join("\n")}\n`);
}

function stringEnv(env: NodeJS.ProcessEnv): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(env)) if (v !== undefined) out[k] = v;
  return out;
}

main().catch((err: unknown) => {
  const known =
    err instanceof ConfigError || err instanceof NatsServerMissingError || err instanceof PortBusyError;
  say("ERROR", known ? (err as Error).message : `npm start failed: ${(err as Error)?.stack ?? String(err)}`);
  void shutdown(1);
});
