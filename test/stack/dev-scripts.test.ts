import { createServer, type Server } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { loadStartConfig } from "../../scripts/config.ts";
import {
  canInstallWithApt,
  ensureNatsServer,
  NatsServerMissingError,
} from "../../scripts/ensure-nats-server.ts";
import { chooseNatsPort, isPortFree, PortBusyError } from "../../scripts/ports.ts";
import { createFormatter } from "../../scripts/pretty-log.ts";
import { ConfigError } from "../../shared/config.ts";

const DEBIAN = 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\nID=debian\n';
const UBUNTU = 'NAME="Ubuntu"\nID=ubuntu\nID_LIKE=debian\n';
const MINT = 'NAME="Linux Mint"\nID=linuxmint\nID_LIKE="ubuntu debian"\n';
const FEDORA = 'NAME="Fedora Linux"\nID=fedora\n';

describe("ensure-nats-server - may it install with apt-get", () => {
  it("installs only as root on Debian or a derivative that has apt-get", () => {
    expect(canInstallWithApt({ uid: 0, osRelease: DEBIAN, aptGet: true })).toBe(true);
    expect(canInstallWithApt({ uid: 0, osRelease: UBUNTU, aptGet: true })).toBe(true);
    expect(canInstallWithApt({ uid: 0, osRelease: MINT, aptGet: true })).toBe(true);
  });

  it("refuses when not root, without apt-get, on another OS, or without os-release", () => {
    expect(canInstallWithApt({ uid: 1000, osRelease: DEBIAN, aptGet: true })).toBe(false);
    expect(canInstallWithApt({ uid: 0, osRelease: DEBIAN, aptGet: false })).toBe(false);
    expect(canInstallWithApt({ uid: 0, osRelease: FEDORA, aptGet: true })).toBe(false);
    expect(canInstallWithApt({ uid: 0, osRelease: undefined, aptGet: true })).toBe(false);
    expect(canInstallWithApt({ uid: undefined, osRelease: DEBIAN, aptGet: true })).toBe(false);
  });

  it("never replaces an explicit NATS_SERVER_BIN that does not exist with an install", () => {
    const logs: string[] = [];
    expect(() =>
      ensureNatsServer({
        bin: "/nonexistent/nats-server",
        host: { uid: 0, osRelease: DEBIAN, aptGet: true },
        log: (l) => logs.push(l),
      }),
    ).toThrow(NatsServerMissingError);
    expect(logs).toEqual([]);
  });
});

describe("npm start - ports", () => {
  const servers: Server[] = [];
  afterEach(async () => {
    await Promise.all(servers.splice(0).map((s) => new Promise((r) => s.close(r))));
  });
  const occupy = (port = 0) =>
    new Promise<number>((resolve, reject) => {
      const s = createServer();
      s.once("error", reject);
      s.listen(port, "127.0.0.1", () => {
        servers.push(s);
        const a = s.address();
        resolve(typeof a === "object" && a ? a.port : 0);
      });
    });

  it("refuses an explicit NATS_PORT that is taken rather than silently using another", async () => {
    const port = await occupy();
    expect(await isPortFree(port)).toBe(false);
    await expect(chooseNatsPort(port)).rejects.toThrow(PortBusyError);
  });

  it("uses an explicit NATS_PORT that is free", async () => {
    const port = await occupy();
    await new Promise((r) => servers.pop()!.close(r));
    expect(await chooseNatsPort(port)).toEqual({ port });
  });

  it("falls back from 4222 to a free port when 4222 is taken", async () => {
    // 4222 is either taken already (a system nats-server) or we take it for the test
    if (await isPortFree(4222)) await occupy(4222);
    const r = await chooseNatsPort(undefined);
    expect(r.fellBackFrom).toBe(4222);
    expect(r.port).not.toBe(4222);
    expect(await isPortFree(r.port)).toBe(true);
  });
});

describe("npm start - config", () => {
  it("spawns its own server unless NATS_URL is set, and waits the worker's grace plus a margin", () => {
    const c = loadStartConfig({});
    expect(c.natsUrl).toEqual([]);
    expect(c.httpPort).toBe(8080);
    expect(c.httpHost).toBe("127.0.0.1");
    expect(c.dataDir).toBe(".data");
    expect(c.natsPort).toBeUndefined();
    expect(c.stopTimeoutMs).toBe(35_000);
    const e = loadStartConfig({ NATS_URL: "nats://a:4222, nats://b:4222", SHUTDOWN_GRACE_MS: "1000" });
    expect(e.natsUrl).toEqual(["nats://a:4222", "nats://b:4222"]);
    expect(e.stopTimeoutMs).toBe(11_000);
  });

  it("rejects a bad port with every bad variable named", () => {
    expect(() => loadStartConfig({ HTTP_PORT: "http", NATS_PORT: "70000" })).toThrow(
      /HTTP_PORT[\s\S]*NATS_PORT|NATS_PORT[\s\S]*HTTP_PORT/,
    );
    expect(() => loadStartConfig({ HTTP_PORT: "x" })).toThrow(ConfigError);
  });
});

describe("npm start - readable logs", () => {
  const fmt = createFormatter({
    color: false,
    sources: ["start", "enqueue", "nats"],
    now: () => new Date(0),
  });

  it("shows a pino line as level, message and its extra fields, without the noise", () => {
    const line = JSON.stringify({
      level: 40,
      time: "2026-01-01T00:00:00.000Z",
      pid: 1,
      hostname: "h",
      service: "enqueue",
      msg: "slow publish",
      ms: 120,
      subject: "sluice.tasks.normal.noop",
      err: { type: "Error", message: "timeout", stack: "..." },
    });
    const out = fmt.line("enqueue", line);
    expect(out).toMatch(
      / enqueue WARN {2}slow publish ms=120 subject=sluice\.tasks\.normal\.noop err="Error: timeout"$/,
    );
    expect(out).not.toContain("hostname");
  });

  it("maps nats-server's own levels and passes other text through", () => {
    expect(fmt.line("nats", "[12] 2026/01/01 00:00:00.000000 [WRN] low disk")).toMatch(
      / nats {4}WARN {2}low disk$/,
    );
    expect(fmt.line("nats", "plain text")).toMatch(/ nats {10}plain text$/);
  });
});
