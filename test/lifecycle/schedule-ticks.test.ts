import { describe, expect, it } from "vitest";
import { DueHeap } from "../../services/dispatcher/scheduler/due-heap.ts";
import {
  dueTicks,
  newScheduleRecord,
  ScheduleInput,
  type ScheduleRecord,
  tickAfter,
} from "../../shared/schedule.ts";

const T = Date.UTC(2026, 0, 15, 12, 0, 0); // a Thursday, 12:00:00 UTC

function rec(over: Partial<ScheduleRecord>): ScheduleRecord {
  return {
    name: "s",
    task: { type: "noop" },
    paused: false,
    missedPolicy: "once",
    maxCatchUp: 100,
    nextRunAt: T,
    createdAt: T - 60_000,
    updatedAt: T - 60_000,
    ...over,
  };
}

describe("schedules - tick arithmetic", () => {
  it("parses every as ms or a duration string and refuses less than a second", () => {
    const ok = (every: unknown) => ScheduleInput.safeParse({ name: "a", every, task: { type: "noop" } });
    expect(ok("30s").data?.every).toBe(30_000);
    expect(ok("5m").data?.every).toBe(300_000);
    expect(ok(1500).data?.every).toBe(1500);
    expect(ok("500ms").success).toBe(false);
    expect(ok(999).success).toBe(false);
    expect(ok("fast").success).toBe(false);
  });

  it("requires exactly one of cron and every, and a time zone only with cron", () => {
    const p = (b: object) => ScheduleInput.safeParse({ name: "a", task: { type: "noop" }, ...b }).success;
    expect(p({ cron: "* * * * * *", every: "1s" })).toBe(false);
    expect(p({})).toBe(false);
    expect(p({ every: "1s", timezone: "Europe/Berlin" })).toBe(false);
    expect(p({ cron: "0 9 * * *", timezone: "Mars/Olympus" })).toBe(false);
    expect(p({ cron: "0 9 * * *", timezone: "Europe/Berlin" })).toBe(true);
  });

  it("fires a cron with seconds on every matching second and honours the time zone", () => {
    expect(tickAfter({ cron: "*/5 * * * * *" }, T + 1)).toBe(T + 5_000);
    expect(tickAfter({ cron: "*/5 * * * * *" }, T)).toBe(T + 5_000);
    // 09:30 in New York is 14:30 UTC in January (EST) and 13:30 UTC in July (EDT)
    expect(tickAfter({ cron: "0 30 9 * * *", timezone: "America/New_York" }, T)).toBe(
      Date.UTC(2026, 0, 15, 14, 30),
    );
    expect(tickAfter({ cron: "0 30 9 * * *", timezone: "America/New_York" }, Date.UTC(2026, 6, 1))).toBe(
      Date.UTC(2026, 6, 1, 13, 30),
    );
    const r = newScheduleRecord(ScheduleInput.parse({ name: "a", every: "1m", task: { type: "noop" } }), T);
    expect(r).toMatchObject({ nextRunAt: T + 60_000, missedPolicy: "once", paused: false });
  });

  it("fires the one due tick on time under every policy", () => {
    for (const missedPolicy of ["skip", "once", "all"] as const) {
      expect(dueTicks(rec({ every: 1000, missedPolicy }), T + 30)).toEqual({ fire: [T], next: T + 1000 });
    }
    expect(dueTicks(rec({ every: 1000 }), T - 1)).toEqual({ fire: [], next: T });
  });

  it("handles ticks missed in downtime by the policy: once fires the latest, all up to the cap, skip none", () => {
    const now = T + 10_500; // ticks T … T+10 s were missed
    expect(dueTicks(rec({ every: 1000, missedPolicy: "once" }), now)).toEqual({
      fire: [T + 10_000],
      next: T + 11_000,
    });
    expect(dueTicks(rec({ every: 1000, missedPolicy: "skip" }), now)).toEqual({
      fire: [T + 10_000],
      next: T + 11_000,
    });
    // a tick more than SKIP_GRACE_MS late is dropped under skip: 5 s late here
    expect(dueTicks(rec({ every: 10_000, missedPolicy: "skip" }), T + 25_000)).toEqual({
      fire: [],
      next: T + 30_000,
    });
    const all = dueTicks(rec({ every: 1000, missedPolicy: "all", maxCatchUp: 4 }), now);
    expect(all.fire).toEqual([T + 7_000, T + 8_000, T + 9_000, T + 10_000]);
    const cron = dueTicks(rec({ cron: "*/2 * * * * *", missedPolicy: "all" }), T + 7_000);
    expect(cron).toEqual({ fire: [T, T + 2_000, T + 4_000, T + 6_000], next: T + 8_000 });
    expect(dueTicks(rec({ cron: "*/2 * * * * *" }), T + 7_000)).toEqual({
      fire: [T + 6_000],
      next: T + 8_000,
    });
  });
});

describe("scheduler - due heap", () => {
  it("pops entries in due order, ties by sequence, and grows and shrinks", () => {
    const h = new DueHeap(4);
    const n = 10_000;
    const entries = Array.from({ length: n }, (_, i) => ({
      due: Math.floor(Math.random() * 1000),
      seq: i + 1,
    }));
    for (const e of entries) h.push(e.due, e.seq);
    expect(h.size).toBe(n);
    entries.sort((a, b) => a.due - b.due || a.seq - b.seq);
    for (const e of entries) {
      expect(h.peekDue()).toBe(e.due);
      expect(h.pop()).toBe(e.seq);
    }
    expect(h.pop()).toBeUndefined();
    expect(h.peekDue()).toBe(Number.POSITIVE_INFINITY);
    expect(h.bytes).toBeLessThanOrEqual(16 * 8);
  });
});
