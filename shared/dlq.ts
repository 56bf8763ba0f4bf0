import type { TaskError, TaskMessage } from "./task.ts";

/**
 * A dead-letter entry: the task message (payload included) as it was last attempted, why it died, and
 * how many attempts it had. Stored in the DLQ stream on `<prefix>.dlq.<type>` with msg id `<id>:dead`,
 * so a worker that dies between writing the entry and acking cannot file it twice.
 */
export type DeadLetter = {
  task: TaskMessage;
  error: TaskError;
  attempts: number;
  deadAt: number;
  workerId?: string;
};

/** The msg id that keeps one dead-letter entry per task. */
export function deadLetterMsgId(id: string): string {
  return `${id}:dead`;
}
