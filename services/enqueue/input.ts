import type { z } from "zod";
import { ErrorCodes, PayloadTooLargeError, ValidationError } from "../../shared/errors.ts";
import { PRIORITIES } from "../../shared/priority.ts";
import { depthExceeds, MAX_DEPTH, readCommonTaskInput, TaskInput } from "../../shared/task.ts";

/** Validated enqueue input, priority already mapped to its name. */
export type ValidInput = z.output<typeof TaskInput>;

/** One validation problem as reported to callers: where, and what is wrong. */
export type FieldIssue = { path: string; message: string };

/** At most this many issues are reported: a body of 10,000 unknown keys should not echo them all. */
const MAX_ISSUES = 20;
const MAX_KEYS_LISTED = 10;

/**
 * Validate an enqueue request body (already parsed JSON: the common shape is checked without zod, see
 * readCommonTaskInput) against `TaskInput` and the payload limit.
 * Throws ValidationError (400) or PayloadTooLargeError (413); returns the input and the payload's
 * serialized size.
 */
export function parseTaskInput(body: unknown, maxPayloadBytes: number): ValidInput {
  if (depthExceeds(body, MAX_DEPTH)) {
    throw new ValidationError(ErrorCodes.invalidRequest, `body nests deeper than ${MAX_DEPTH} levels`, [
      { path: "", message: `nesting deeper than ${MAX_DEPTH} levels` },
    ]);
  }
  const common = readCommonTaskInput(body);
  const r = common ? { success: true as const, data: common } : TaskInput.safeParse(body);
  if (!r.success) {
    const issues = r.error.issues.slice(0, MAX_ISSUES).map(toFieldIssue);
    const fields = new Set(r.error.issues.map((i) => String(i.path[0] ?? "")));
    const only = fields.size === 1 ? [...fields][0] : undefined;
    const code =
      only === "type"
        ? ErrorCodes.invalidTaskType
        : only === "priority"
          ? ErrorCodes.invalidPriority
          : ErrorCodes.invalidRequest;
    const detail = issues.map((i) => (i.path ? `${i.path}: ${i.message}` : i.message)).join("; ");
    throw new ValidationError(code, detail, issues);
  }
  const bytes = Buffer.byteLength(JSON.stringify(r.data.payload ?? null));
  if (bytes > maxPayloadBytes) {
    throw new PayloadTooLargeError(`payload is ${bytes} bytes; the limit is ${maxPayloadBytes}`);
  }
  return r.data;
}

function toFieldIssue(i: z.core.$ZodIssue): FieldIssue {
  const path = i.path.map(String).join(".");
  // zod's union message ("Invalid input") says nothing about what a priority may be
  if (path === "priority") {
    return { path, message: `priority must be one of ${PRIORITIES.join(", ")}, or an integer 1-5` };
  }
  if (i.code === "unrecognized_keys") {
    const more = i.keys.length > MAX_KEYS_LISTED ? `, … (${i.keys.length} in all)` : "";
    return {
      path,
      message: `unknown field(s): ${i.keys.slice(0, MAX_KEYS_LISTED).map(short).join(", ")}${more}`,
    };
  }
  return { path, message: i.message };
}

function short(key: string): string {
  return key.length > 64 ? `${key.slice(0, 64)}…` : key;
}
