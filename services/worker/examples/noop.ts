import { z } from "zod";
import { defineTask } from "../sdk.ts";

/** Returns its input. The benchmark's task: all the cost is Sluice's own. */
export const noop = defineTask({
  type: "noop",
  payload: z.json(),
  concurrency: 100,
  timeoutMs: 10_000,
  handler: async (payload) => payload,
});
