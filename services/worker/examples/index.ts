import type { TaskDefinition } from "../sdk.ts";
import { docChunk } from "./doc-chunk.ts";
import { noop } from "./noop.ts";
import { makeWebhookDeliver } from "./webhook-deliver.ts";

export { docChunk, noop };

/** The example task types `npm start`, the tests and the benchmark run. */
export function exampleTasks(opts: { webhookSigningSecret: string }): TaskDefinition[] {
  return [noop, docChunk, makeWebhookDeliver(opts.webhookSigningSecret)] as TaskDefinition[];
}
