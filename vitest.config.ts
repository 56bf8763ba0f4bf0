import { defineConfig } from "vitest/config";

// Suites spawn real nats-servers and service processes; on a 2-core machine two files at a time keeps
// timing-sensitive tests honest. `npm test` runs the 3-node cluster failover test on its own afterwards:
// beside another heavy file on a starved CPU, the streams whose leader it kills sometimes answered "no
// responders" for over a minute (nats-server 2.9 electing new leaders), and the test timed out.
export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    // stops the processes of a suite whose fork died before its afterAll (test/support/orphans.ts)
    globalSetup: ["test/support/orphans.ts"],
    exclude: ["test/reliability/**", "node_modules/**"],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // what a poll waits for (a watch, a consumer) can take seconds on a loaded CI machine; a poll that
    // must be fast says so with its own timeout
    expect: { poll: { timeout: 10_000 } },
    pool: "forks",
    maxWorkers: 2,
    fileParallelism: true,
  },
});
