import { type ChildProcess, spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { SERVICE_ENV, type ServiceName, serviceNodeFlags } from "../shared/node-flags.ts";
import { parseJsonLine } from "./pretty-log.ts";

const root = fileURLToPath(new URL("..", import.meta.url));

/** How a child ended. */
export type ExitStatus = { code: number | null; signal: NodeJS.Signals | null };

/** A process `npm start` runs and watches. */
export type Supervised = {
  readonly name: string;
  readonly child: ChildProcess;
  /** Resolves on the child's `"msg":"ready"` log line. */
  readonly ready: Promise<void>;
  /** Whether that line was seen. */
  isReady(): boolean;
  /** Resolves once the child exited and its output was read to the end. */
  readonly closed: Promise<ExitStatus>;
};

/** Options of {@link Supervisor}. */
export type SupervisorOptions = {
  /** Receives every output line of every child, with the child's name. */
  onLine(name: string, line: string): void;
  /** Called when a child exits before {@link Supervisor.stop} asked it to. */
  onUnexpectedExit(name: string, status: ExitStatus): void;
};

/**
 * Owns the child processes of `npm start`: spawns the services in their own process groups (so a
 * terminal's Ctrl-C reaches only the supervisor, which then stops them in order), relays their output,
 * and tells an expected exit from a crash.
 */
export class Supervisor {
  readonly #o: SupervisorOptions;
  readonly #children = new Map<string, Supervised>();
  readonly #expected = new Set<string>();

  constructor(o: SupervisorOptions) {
    this.#o = o;
  }

  /** Start `services/<name>/main.ts` on this Node with `env` (over the services' defaults, SERVICE_ENV). */
  spawnService(name: string, env: Record<string, string>): Supervised {
    const child = spawn(
      process.execPath,
      [...serviceNodeFlags(name as ServiceName), `services/${name}/main.ts`],
      {
        cwd: root,
        env: { ...SERVICE_ENV, ...env },
        stdio: ["ignore", "pipe", "pipe"],
        detached: true,
      },
    );
    return this.track(name, child);
  }

  /** Watch a process started elsewhere (the nats-server); its stdout and stderr must be pipes. */
  track(name: string, child: ChildProcess): Supervised {
    let markReady: () => void = () => {};
    let seenReady = false;
    const ready = new Promise<void>((resolve) => {
      markReady = resolve;
    });
    const onLine = (line: string) => {
      if (!seenReady && parseJsonLine(line)?.msg === "ready") {
        seenReady = true;
        markReady();
      }
      this.#o.onLine(name, line);
    };
    if (child.stdout)
      createInterface({ input: child.stdout, crlfDelay: Number.POSITIVE_INFINITY }).on("line", onLine);
    if (child.stderr)
      createInterface({ input: child.stderr, crlfDelay: Number.POSITIVE_INFINITY }).on("line", onLine);
    // `close` rather than `exit`: the last lines (the drain summary) are printed before we move on.
    const closed = new Promise<ExitStatus>((resolve) => {
      child.once("close", (code, signal) => resolve({ code, signal }));
      // a spawn failure emits `error` and may never emit `close`
      child.once("error", () => resolve({ code: child.exitCode ?? 127, signal: null }));
    });
    void closed.then((status) => {
      if (!this.#expected.has(name)) this.#o.onUnexpectedExit(name, status);
    });
    const s: Supervised = { name, child, ready, closed, isReady: () => seenReady };
    this.#children.set(name, s);
    return s;
  }

  /** The watched process called `name`, if any. */
  get(name: string): Supervised | undefined {
    return this.#children.get(name);
  }

  /**
   * Ask the named children to stop with `signal` (SIGTERM unless said), all at once, and wait for them;
   * any still running after `timeoutMs` gets SIGKILL. Resolves with how each ended.
   */
  async stop(
    names: readonly string[],
    timeoutMs: number,
    signal: NodeJS.Signals = "SIGTERM",
  ): Promise<Map<string, ExitStatus>> {
    const targets = names.flatMap((n) => {
      const s = this.#children.get(n);
      return s ? [s] : [];
    });
    for (const s of targets) {
      this.#expected.add(s.name);
      if (isRunning(s.child)) s.child.kill(signal);
    }
    const timer = setTimeout(() => {
      for (const s of targets) if (isRunning(s.child)) s.child.kill("SIGKILL");
    }, timeoutMs);
    const results = await Promise.all(targets.map(async (s) => [s.name, await s.closed] as const));
    clearTimeout(timer);
    return new Map(results);
  }

  /** SIGKILL every child still running; synchronous, for the process `exit` hook. */
  killAll(): void {
    for (const s of this.#children.values()) {
      this.#expected.add(s.name);
      if (isRunning(s.child)) s.child.kill("SIGKILL");
    }
  }
}

function isRunning(c: ChildProcess): boolean {
  return c.exitCode === null && c.signalCode === null;
}
