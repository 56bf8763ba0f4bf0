import { z } from "zod";
import { defineTask } from "../sdk.ts";

/** Returns its input. The benchmark's task: all the cost is Sluice's own. */
export const noop = defineTask({
  type: "noop",
  // anything: a payload arrives JSON-parsed, so z.json() would only walk it again to prove it is JSON
  payload: z.unknown(),
  concurrency: 100,
  timeoutMs: 10_000,
  handler: async (payload) => payload,
});
