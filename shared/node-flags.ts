/**
 * Node flags and environment each service is started with (npm scripts, `npm start`, the container
 * entrypoint, tests and the bench all use these; docs/performance.md has the measurements). The memory
 * target is each service below 200 MB of RSS under load, on a machine where V8 would size its heaps
 * for 24 GiB. Each setting below was measured against its CPU cost at full speed, because throughput
 * on a busy machine is bounded by total CPU.
 *
 * `--max-semi-space-size` (MiB): V8 sizes the young generation from the machine's memory, up to 32 MiB
 * per semi-space here, and our services allocate fast and keep little, so it grew to its maximum under
 * load (RSS ~300 MiB). 8 MiB keeps the scavenges short; the worker, which allocates most per task, gets
 * 4: its RSS at full speed went from ~190–199 MiB to ~175–188 for ~5% more worker CPU. The dispatcher
 * gets 4 too: with 8 it reached 191.5 MiB in one bench run (the target is 190.7); in two alternating
 * pairs of full Sluice runs, 4 against 8 gave a dispatcher RSS max of 183 / 160 against 192 / 177 MiB,
 * and no more dispatcher CPU per task (67 / 51 against 70 / 53 µs during the million-task drain).
 *
 * `--heap-growing-percent=30` (gateway only): after each full collection V8 lets the old generation grow
 * to 1.3× what survived instead of its adaptive factor (up to 4×). Under NATS request load the gateway
 * keeps ~30–50 MiB alive but V8 let its heap reach ~130 MiB, RSS 220–230 MiB; with 30% it stayed at
 * ~150 MiB at the same request rate. Not for the worker and the dispatcher: at full speed it cost the
 * worker ~20% more CPU and ~10% of end-to-end throughput.
 */
export type ServiceName = "enqueue" | "dispatcher" | "worker";

const FLAGS: Record<ServiceName, readonly string[]> = {
  enqueue: ["--max-semi-space-size=8", "--heap-growing-percent=30"],
  dispatcher: ["--max-semi-space-size=4"],
  worker: ["--max-semi-space-size=4"],
};

/** The Node flags of one service. */
export function serviceNodeFlags(name: ServiceName): readonly string[] {
  return FLAGS[name];
}

/**
 * `MALLOC_ARENA_MAX=2`: glibc gives each thread that allocates its own malloc arena (V8's GC and
 * compiler threads, libuv's pool), and their free pages stay resident; two arenas took ~10 MiB off each
 * service's RSS under load at no measurable cost. Set where a launcher starts a service, unless the
 * environment already says otherwise (the container image sets it in its ENV).
 */
export const SERVICE_ENV: Readonly<Record<string, string>> = { MALLOC_ARENA_MAX: "2" };
