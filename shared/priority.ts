/**
 * Priorities, highest first. The order of this tuple is the dispatch order: the dispatcher reads
 * the `urgent` subject of a type before `high`, and so on.
 */
export const PRIORITIES = ["urgent", "high", "normal", "low", "bulk"] as const;

export type Priority = (typeof PRIORITIES)[number];

/** The priority a task gets when the caller names none. */
export const DEFAULT_PRIORITY: Priority = "normal";

/** Rank of a priority: 0 for `urgent` … 4 for `bulk`. */
export function priorityRank(p: Priority): number {
  return PRIORITIES.indexOf(p);
}

/** Numeric form accepted on the v1 API: 1 = urgent … 5 = bulk. */
export function priorityFromNumber(n: number): Priority | undefined {
  return Number.isInteger(n) ? PRIORITIES[n - 1] : undefined;
}

/**
 * The legacy API's 1–10 scale (smaller is more urgent) folded onto our five levels:
 * 1 → urgent, 2–3 → high, 4–6 → normal, 7–8 → low, 9–10 → bulk.
 */
export function priorityFromLegacy(n: number): Priority | undefined {
  if (!Number.isInteger(n) || n < 1 || n > 10) return undefined;
  if (n === 1) return "urgent";
  if (n <= 3) return "high";
  if (n <= 6) return "normal";
  if (n <= 8) return "low";
  return "bulk";
}
