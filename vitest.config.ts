import { defineConfig } from "vitest/config";

// Suites spawn real nats-servers and service processes; on a 2-core machine two files at a time keeps
// timing-sensitive tests honest.
export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    exclude: ["test/reliability/**", "node_modules/**"],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: "forks",
    maxWorkers: 2,
    fileParallelism: true,
  },
});
