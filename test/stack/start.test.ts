import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { freePort } from "../../shared/nats/local-server.ts";
import { waitFor } from "../support/processes.ts";

const root = fileURLToPath(new URL("../..", import.meta.url));
const SOURCES = ["nats", "enqueue", "dispatcher", "worker"];

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}

describe("npm start", () => {
  it("runs the whole stack, completes a noop task over HTTP, and on SIGINT stops every process and exits 0", async () => {
    const dataDir = mkdtempSync(join(tmpdir(), "sluice-start-"));
    const httpPort = await freePort();
    const natsPort = await freePort();
    const env: Record<string, string> = {
      PATH: process.env.PATH ?? "",
      HTTP_PORT: String(httpPort),
      NATS_PORT: String(natsPort),
      SLUICE_DATA_DIR: dataDir,
      SHUTDOWN_GRACE_MS: "5000",
    };
    if (process.env.NATS_SERVER_BIN) env.NATS_SERVER_BIN = process.env.NATS_SERVER_BIN;
    const child = spawn(process.execPath, ["scripts/start.ts"], {
      cwd: root,
      env,
      stdio: ["ignore", "pipe", "pipe"],
    });
    const lines: string[] = [];
    createInterface({ input: child.stdout }).on("line", (l) => lines.push(l));
    createInterface({ input: child.stderr }).on("line", (l) => lines.push(l));
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
      child.once("close", (code, signal) => resolve({ code, signal })),
    );
    const pids = () => {
      const out = new Map<string, number>();
      for (const l of lines) {
        const m = / start +INFO +(\S+) started \(pid (\d+)\)/.exec(l);
        if (m) out.set(m[1]!, Number(m[2]));
      }
      return out;
    };
    const base = `http://127.0.0.1:${httpPort}`;
    try {
      await waitFor(
        async () => {
          if (child.exitCode !== null) throw new Error(`npm start exited early:\n${lines.join("\n")}`);
          return (await fetch(`${base}/readyz`)).status === 200;
        },
        40_000,
        100,
      );
      expect(lines.join("\n")).toContain(`127.0.0.1:${natsPort}`);

      const payload = { hello: "stack" };
      const res = await fetch(`${base}/v1/tasks`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ type: "noop", payload }),
      });
      expect(res.status).toBe(202);
      const { id } = (await res.json()) as { id: string };
      const done = await waitFor(async () => {
        const r = await fetch(`${base}/v1/tasks/${id}`);
        const s = (await r.json()) as { status: string; result?: unknown };
        return s.status === "completed" ? s : undefined;
      }, 20_000);
      expect(done.result).toEqual(payload);

      const started = pids();
      expect([...started.keys()].sort()).toEqual([...SOURCES].sort());
      for (const pid of started.values()) expect(alive(pid)).toBe(true);

      child.kill("SIGINT");
      const status = await Promise.race([
        exited,
        new Promise<"hung">((r) => setTimeout(() => r("hung"), 30_000)),
      ]);
      expect(status, lines.slice(-30).join("\n")).toEqual({ code: 0, signal: null });
      for (const [name, pid] of started) expect(alive(pid), `${name} (pid ${pid}) still runs`).toBe(false);
      const out = lines.join("\n");
      // nats-server too: after SIGTERM it would exit 1, which reads as a failure in the log
      for (const name of ["enqueue", "dispatcher", "worker", "nats"])
        expect(out).toContain(`${name} exited (code 0)`);
    } finally {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
      // never leave a service or server behind, even when an assertion failed mid-way
      for (const pid of pids().values()) if (alive(pid)) process.kill(pid, "SIGKILL");
      rmSync(dataDir, { recursive: true, force: true });
    }
  }, 90_000);
});
