import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type LocalServer, startNatsServer } from "../../shared/nats/local-server.ts";
import { trackServer } from "./orphans.ts";

/** A nats-server with JetStream on a free loopback port and a temporary store, for one suite. */
export type TestNats = LocalServer & { storeDir: string; cleanup(): Promise<void> };

/** Start a server for a suite; call `cleanup()` in afterAll. `NATS_SERVER_BIN` may name the binary. */
export async function startTestNats(): Promise<TestNats> {
  const storeDir = mkdtempSync(join(tmpdir(), "sluice-test-"));
  const server = trackServer(
    await startNatsServer({ storeDir, bin: process.env.NATS_SERVER_BIN || undefined }),
  );
  return Object.assign(server, {
    storeDir,
    async cleanup() {
      await server.stop();
      rmSync(storeDir, { recursive: true, force: true });
    },
  });
}
