import { spawnSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { findNatsServer, INSTALL_HINT } from "../shared/nats/local-server.ts";
import { loadEnsureConfig } from "./config.ts";

/**
 * Find a nats-server binary, or install Debian's package when that is safe to do unattended (root on
 * Debian/Ubuntu with apt-get). Used by `npm start` and `.ci/run`; runnable alone:
 * `node scripts/ensure-nats-server.ts [--dry-run]` prints the binary's path on stdout.
 *
 * Debian's package may enable and start a system service on install. Sluice never uses it: `npm start`
 * and the tests always spawn their own server on a free or configured port.
 */

/** Raised when no binary is found and none can be installed; the message is one printable line. */
export class NatsServerMissingError extends Error {
  override name = "NatsServerMissingError";
  readonly code = "nats_server_missing";
}

/** What decides whether we may install: who we are, which OS, whether apt-get exists. */
export type HostFacts = {
  /** Effective uid (undefined off POSIX). */
  uid: number | undefined;
  /** Contents of /etc/os-release, if any. */
  osRelease: string | undefined;
  aptGet: boolean;
};

/** The facts of this machine. */
export function hostFacts(): HostFacts {
  let osRelease: string | undefined;
  try {
    osRelease = readFileSync("/etc/os-release", "utf8");
  } catch {
    osRelease = undefined;
  }
  const aptGet = ["/usr/bin/apt-get", "/bin/apt-get", "/usr/local/bin/apt-get"].some((p) => existsSync(p));
  return { uid: process.geteuid?.(), osRelease, aptGet };
}

/** True when an unattended `apt-get install nats-server` is possible: root, Debian or a derivative, apt-get. */
export function canInstallWithApt(h: HostFacts): boolean {
  if (h.uid !== 0 || !h.aptGet || !h.osRelease) return false;
  const ids = h.osRelease
    .split("\n")
    .filter((l) => /^(ID|ID_LIKE)=/.test(l))
    .flatMap((l) =>
      l
        .slice(l.indexOf("=") + 1)
        .replace(/["']/g, "")
        .split(/\s+/),
    );
  return ids.includes("debian") || ids.includes("ubuntu");
}

/** The commands an install runs, in order. */
export const APT_COMMANDS: readonly (readonly string[])[] = [
  ["apt-get", "update"],
  ["apt-get", "install", "-y", "--no-install-recommends", "nats-server"],
];

/** Options of {@link ensureNatsServer}. */
export type EnsureOptions = {
  /** An explicit binary (NATS_SERVER_BIN): used if it exists, never replaced by an install. */
  bin?: string | undefined;
  /** Progress lines (default: stderr). */
  log?: (line: string) => void;
  /** Facts to decide on (default: this machine's). */
  host?: HostFacts;
  /** Environment for apt-get (default: the current one); DEBIAN_FRONTEND is forced non-interactive. */
  env?: Record<string, string | undefined>;
  /** Only report what would be done. */
  dryRun?: boolean;
};

/** The path of a usable nats-server, installing Debian's package if needed and allowed; throws NatsServerMissingError. */
export function ensureNatsServer(o: EnsureOptions = {}): string {
  const log = o.log ?? ((l: string) => process.stderr.write(`${l}\n`));
  if (o.bin) {
    if (existsSync(o.bin)) return o.bin;
    throw new NatsServerMissingError(`NATS_SERVER_BIN=${o.bin} does not exist. ${INSTALL_HINT}`);
  }
  const found = findNatsServer();
  if (found) return found;
  if (!canInstallWithApt(o.host ?? hostFacts())) throw new NatsServerMissingError(INSTALL_HINT);
  const shown = APT_COMMANDS.map((c) => c.join(" ")).join(" && ");
  if (o.dryRun) {
    log(`nats-server not found; would run: ${shown}`);
    return "";
  }
  log(`nats-server not found; installing Debian's package: ${shown}`);
  const env = { ...(o.env ?? process.env), DEBIAN_FRONTEND: "noninteractive" };
  for (const [cmd, ...args] of APT_COMMANDS) {
    // apt's output goes to stderr so that stdout carries only the path
    const r = spawnSync(cmd!, args, { stdio: ["ignore", 2, 2], env });
    if (r.status !== 0) {
      const why = r.error ? r.error.message : `exit ${r.status ?? r.signal}`;
      throw new NatsServerMissingError(`${[cmd, ...args].join(" ")} failed (${why}). ${INSTALL_HINT}`);
    }
  }
  const installed = findNatsServer();
  if (!installed)
    throw new NatsServerMissingError(`installed nats-server but cannot find it. ${INSTALL_HINT}`);
  log(
    `installed ${installed} (a system service it may have started is not used: Sluice runs its own server)`,
  );
  return installed;
}

if (import.meta.main) {
  try {
    const cfg = loadEnsureConfig(process.env);
    const dryRun = process.argv.includes("--dry-run");
    const bin = ensureNatsServer({ bin: cfg.natsServerBin, dryRun });
    if (bin) process.stdout.write(`${bin}\n`);
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\n`);
    process.exit(1);
  }
}
