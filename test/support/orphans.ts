import type { ChildProcess } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { LocalServer } from "../../shared/nats/local-server.ts";

/**
 * Processes the suites start (nats-servers, services), noted so that the run's global teardown can stop
 * any that a suite left behind. A suite stops its own in `afterAll`, but a fork that vitest kills (a
 * hook past its timeout, a crash) takes its `afterAll` with it, and its children lived on: nats-servers
 * on their ports, services reconnecting to nothing, on a developer's machine until the next reboot.
 *
 * Each started process is a file `<pid>` in a folder the global setup names in `SLUICE_TEST_PIDS`
 * (inherited by every fork), holding a string its command line contains; the file goes when the
 * process exits. The teardown kills what is left only when its command line still has that string,
 * so a pid the system has given to something else since is never touched.
 */
const ENV = "SLUICE_TEST_PIDS";

/** Note `child` until it exits; `marker` is part of its command line. No-op outside a vitest run. */
export function track(child: ChildProcess, marker: string): void {
  const dir = process.env[ENV];
  if (!dir || child.pid === undefined) return;
  const file = join(dir, String(child.pid));
  writeFileSync(file, marker);
  child.once("exit", () => rmSync(file, { force: true }));
}

/** A local nats-server, tracked, and tracked again after each restart. */
export function trackServer<S extends LocalServer>(server: S): S {
  track(server.process, "nats-server");
  const restart = server.restart.bind(server);
  server.restart = async () => trackServer(await restart());
  return server;
}

/** vitest global setup: names the folder; the teardown it returns stops whatever is still noted. */
export default function setup(): () => void {
  const dir = mkdtempSync(join(tmpdir(), "sluice-test-pids-"));
  process.env[ENV] = dir;
  return () => {
    const left: string[] = [];
    for (const name of readdirSync(dir)) {
      const pid = Number(name);
      const marker = readFileSync(join(dir, name), "utf8");
      let cmdline: string;
      try {
        cmdline = readFileSync(`/proc/${pid}/cmdline`, "utf8").replaceAll("\0", " ");
      } catch {
        continue; // gone, or no /proc: nothing to check it against
      }
      if (!cmdline.includes(marker)) continue;
      try {
        process.kill(pid, "SIGKILL");
        left.push(`${pid} (${marker})`);
      } catch {
        // exited meanwhile
      }
    }
    rmSync(dir, { recursive: true, force: true });
    if (left.length > 0)
      console.warn(`test teardown: killed processes a suite left running: ${left.join(", ")}`);
  };
}
