import { defineConfig } from "vitest/config";

// The heavy proofs (scale, long failure scenarios): `npm run test:reliability`, not part of `npm test`.
// One file at a time, so a suite measuring memory or latency has the machine to itself; each suite
// documents its own bounded runtime. docs/reliability.md describes every suite, its knobs
// (RELIABILITY_SEED, RELIABILITY_TASKS, RELIABILITY_HOSTILE, RELIABILITY_OVERLOAD_MS, SOAK_DURATION)
// and the latest results; a bounded subset runs in `npm test` (test/pipeline/reliability-subset.test.ts).
export default defineConfig({
  test: {
    include: ["test/reliability/**/*.test.ts"],
    globalSetup: ["test/support/orphans.ts"],
    testTimeout: 15 * 60_000,
    hookTimeout: 5 * 60_000,
    pool: "forks",
    maxWorkers: 1,
    fileParallelism: false,
  },
});
