import { type JetStreamManager, jetstreamManager } from "@nats-io/jetstream";
import { type KV, Kvm } from "@nats-io/kv";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { loadConfig } from "../../services/enqueue/config.ts";
import { createEnqueueService, type EnqueueService } from "../../services/enqueue/service.ts";
import { createLogger } from "../../shared/logger.ts";
import { names as buildNames, type Names } from "../../shared/names.ts";
import { connectedProbe } from "../../shared/nats/connection.ts";
import type { LocalServer } from "../../shared/nats/local-server.ts";
import type { TaskMessage } from "../../shared/task.ts";
import { startTestNats, type TestNats } from "../support/nats.ts";
import { waitFor } from "../support/processes.ts";

/** Payload limit the suites run with: small, so over-limit bodies stay cheap. */
export const TEST_MAX_PAYLOAD_BYTES = 4096;

/** An enqueue service running in-process against its own nats-server, plus an observer connection. */
export type Harness = {
  nats: TestNats;
  service: EnqueueService;
  /** Base URL of the real HTTP listener. */
  url: string;
  /** A separate connection for checking what the service stored. */
  nc: NatsConnection;
  jsm: JetStreamManager;
  /** The state bucket, through the observer connection. */
  kv: KV;
  names: Names;
  /** Messages in the tasks stream. */
  tasksCount(): Promise<number>;
  /** Messages (records) in the state bucket's stream. */
  stateCount(): Promise<number>;
  /** The last task message stored on a subject, or undefined. */
  lastTask(subject: string): Promise<{ msg: TaskMessage; msgId: string | undefined } | undefined>;
  /** Stop the nats-server (an outage); the store is kept. Resolves once the observer saw it go. */
  stopNats(): Promise<void>;
  /**
   * Start it again on the same port and store; resolves once the observer connection (`nc`, `jsm`,
   * `kv`) is back. The service reconnects on its own schedule: wait for its readiness separately.
   */
  restartNats(): Promise<void>;
  cleanup(): Promise<void>;
};

/** Start nats-server and the enqueue service (HTTP on a free loopback port); wait until NATS is ready. */
export async function startHarness(env: Record<string, string> = {}): Promise<Harness> {
  const nats = await startTestNats();
  const cfg = loadConfig({
    NATS_URL: nats.url,
    HTTP_HOST: "127.0.0.1",
    HTTP_PORT: "0",
    MAX_PAYLOAD_BYTES: String(TEST_MAX_PAYLOAD_BYTES),
    REQUEST_TIMEOUT_MS: "5000",
    AUTH_ENABLED: "false",
    ...env,
  });
  const log = createLogger({ service: "enqueue", level: "silent", format: "json" });
  const service = createEnqueueService(cfg, log, { checkIntervalMs: 250 });
  const port = await service.start();
  await service.whenNatsReady();
  const nc = await connect({ servers: nats.url, maxReconnectAttempts: -1, reconnectTimeWait: 100 });
  const jsm = await jetstreamManager(nc);
  const names = buildNames(cfg.prefix);
  const kv = await new Kvm(nc).open(names.stateBucket);
  const observerUp = connectedProbe(nc);
  let server: LocalServer = nats;
  return {
    nats,
    service,
    url: `http://127.0.0.1:${port}`,
    nc,
    jsm,
    kv,
    names,
    tasksCount: async () => (await jsm.streams.info(names.tasksStream)).state.messages,
    stateCount: async () => (await jsm.streams.info(`KV_${names.stateBucket}`)).state.messages,
    async lastTask(subject) {
      const sm = await jsm.streams.getMessage(names.tasksStream, { last_by_subj: subject });
      if (!sm) return undefined;
      return { msg: sm.json<TaskMessage>(), msgId: sm.header?.get("Nats-Msg-Id") || undefined };
    },
    async stopNats() {
      await server.stop();
      // else restartNats() could take the observer's not yet updated "up" for its reconnect
      await waitFor(() => !observerUp(), 5_000, 10);
    },
    async restartNats() {
      server = await server.restart();
      // The service being ready again says nothing about this connection, which redials on its own
      // timer. And nats.js drops what a disconnected client sends (each dial resets its outbound
      // buffer), so an observer request made before its reconnect never reaches the server: the
      // caller gets a TimeoutError 5 s later. Hence: back only once the observer is.
      await waitFor(() => observerUp(), 15_000, 10);
    },
    async cleanup() {
      await service.stop();
      await nc.close();
      await server.stop();
      await nats.cleanup();
    },
  };
}

/** POST a JSON body to /v1/tasks through the app's real routes. */
export function postTask(h: Harness, body: unknown, headers: Record<string, string> = {}) {
  return h.service.app.inject({
    method: "POST",
    url: "/v1/tasks",
    headers: { "content-type": "application/json", ...headers },
    payload: typeof body === "string" ? body : JSON.stringify(body),
  });
}
