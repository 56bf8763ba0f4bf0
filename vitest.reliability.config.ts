import { defineConfig } from "vitest/config";

// The heavy proofs (scale, long failure scenarios): `npm run test:reliability`, not part of `npm test`.
// One file at a time, so a suite measuring memory or latency has the machine to itself; each suite
// documents its own bounded runtime.
export default defineConfig({
  test: {
    include: ["test/reliability/**/*.test.ts"],
    testTimeout: 15 * 60_000,
    hookTimeout: 5 * 60_000,
    pool: "forks",
    maxWorkers: 1,
    fileParallelism: false,
  },
});
