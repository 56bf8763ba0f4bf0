import { z } from "zod";
import { ErrorCodes, ValidationError } from "../../shared/errors.ts";
import { TaskType } from "../../shared/task.ts";
import type { DeadLetterSelector } from "./dead-letters.ts";

/** Body of `POST /v1/dlq/replay` and of a purge: some ids, a type, or all. */
export const DeadLetterSelectorInput = z
  .strictObject({
    ids: z.array(z.string().min(1).max(256)).min(1).max(10_000).optional(),
    type: TaskType.optional(),
    all: z.boolean().optional(),
    limit: z.number().int().min(1).max(10_000).optional(),
  })
  .refine((s) => s.ids !== undefined || s.type !== undefined || s.all === true, {
    message: "name ids, a type, or all: true",
  });

/** Query of `GET /v1/dlq`. */
export const DeadLetterListQuery = z.strictObject({
  type: TaskType.optional(),
  limit: z.coerce.number().int().min(1).max(500).optional(),
  cursor: z.coerce.number().int().min(0).optional(),
});

/** `{id}` of a NATS control request. */
export const IdInput = z.strictObject({ id: z.string().min(1).max(256) });

/** Parse with a schema, or throw a 400 listing the issues. */
export function parseOr400<S extends z.ZodType>(
  schema: S,
  value: unknown,
): z.output<S> & DeadLetterSelectorShape {
  const r = schema.safeParse(value);
  if (!r.success) {
    throw new ValidationError(
      ErrorCodes.invalidRequest,
      "invalid request",
      r.error.issues.slice(0, 20).map((i) => ({ path: i.path.join("."), message: i.message })),
    );
  }
  return r.data as z.output<S> & DeadLetterSelectorShape;
}

type DeadLetterSelectorShape = Partial<DeadLetterSelector>;
