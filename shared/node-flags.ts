/**
 * Node flags every service is started with (npm scripts, `npm start`, the container entrypoint, tests
 * and the bench all use these; docs/performance.md has the measurements).
 *
 * `--max-semi-space-size=8` (MiB): V8 sizes the young generation from the machine's memory, up to
 * 32 MiB per semi-space here, and our services allocate fast and keep little, so the young
 * generation grew to its maximum under load. Capping it kept each service's RSS near 140–210 MiB
 * instead of ~300 MiB under a backlog, and shortened the scavenge pauses that made the latency tail.
 */
export const SERVICE_NODE_FLAGS: readonly string[] = ["--max-semi-space-size=8"];
