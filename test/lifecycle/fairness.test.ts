import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type ServiceProcess, waitFor } from "../support/processes.ts";
import { type Stack, startStack } from "../support/stack.ts";
import {
  call,
  enqueueSpans,
  maxOverlap,
  patchQueue,
  type Span,
  spans,
  waitForEnded,
} from "./limits-helpers.ts";

describe("lifecycle - fairness", () => {
  let stack: Stack;
  let leader: ServiceProcess;
  beforeAll(async () => {
    stack = await startStack();
    leader = await stack.dispatcher();
    await stack.worker({ WORKER_TYPES: "test.span.fair,test.span.aging,test.span.failover" }); // 4, 1, 4 slots
  });
  afterAll(() => stack?.cleanup());

  it("does not let a noisy tenant's burst delay a quiet tenant beyond its share", async () => {
    const type = "test.span.fair";
    await patchQueue(stack, type, { keyConcurrency: 2, paused: true }, leader);
    // 200 tasks of tenant A, then 5 of tenant B behind them in the same priority
    await enqueueSpans(
      stack,
      type,
      Array.from({ length: 200 }, (_, i) => ({ tag: `fair-a-${i}`, ms: 40, concurrencyKey: "tenant-a" })),
      20,
    );
    await enqueueSpans(
      stack,
      type,
      Array.from({ length: 5 }, (_, i) => ({ tag: `fair-b-${i}`, ms: 40, concurrencyKey: "tenant-b" })),
    );
    const at = Date.now();
    await patchQueue(stack, type, { paused: false });

    const b = await waitForEnded(stack, "fair-b-", 5, 10_000);
    const a = spans(stack, "fair-a-");
    // B had two of the four slots from the start: 5 tasks of 40 ms take three rounds, not 200 / 4 of A's
    expect(Math.max(...b.map((s) => s.end!)) - at).toBeLessThan(1500);
    const aStartedBeforeBDone = a.filter((s) => s.start < Math.max(...b.map((x) => x.end!))).length;
    expect(aStartedBeforeBDone).toBeLessThan(40);
    // and each tenant stayed within its key limit
    expect(maxOverlap(b)).toBeLessThanOrEqual(2);
    expect(maxOverlap(spans(stack, "fair-a-"))).toBeLessThanOrEqual(2);
    expect(maxOverlap(b)).toBe(2);

    const view = await call(stack, "GET", `/v1/queues/${type}`);
    expect((view.body.depth as { total: number }).total).toBeGreaterThan(100); // A's backlog still waits
    await patchQueue(stack, type, { paused: true }); // leave the rest alone for the other tests
  });

  /** Pause, enqueue one low task and then `urgent` urgent ones (40 ms each, one slot), resume; runs in start order. */
  async function lowAmongUrgent(tag: string, urgent: number): Promise<Span[]> {
    const type = "test.span.aging";
    await patchQueue(stack, type, { paused: true }, leader);
    await enqueueSpans(stack, type, [{ tag: `${tag}-low`, ms: 10, priority: "low" }]);
    await enqueueSpans(
      stack,
      type,
      Array.from({ length: urgent }, (_, i) => ({ tag: `${tag}-urgent-${i}`, ms: 40, priority: "urgent" })),
      10,
    );
    await patchQueue(stack, type, { paused: false });
    return waitForEnded(stack, `${tag}-`, urgent + 1, 15_000);
  }

  it("is strict by default: a low task waits for every urgent one", async () => {
    const ran = await lowAmongUrgent("strict", 30);
    expect(ran.at(-1)!.tag).toBe("strict-low");
  });

  it("with aging, lets a low task through under sustained urgent load", async () => {
    await patchQueue(stack, "test.span.aging", { aging: { afterMs: 150 } }, leader);
    const ran = await lowAmongUrgent("aged", 30);
    const pos = ran.findIndex((s) => s.tag === "aged-low");
    // three levels of 150 ms after it was enqueued it counts as urgent, and is older than all of them
    expect(pos).toBeGreaterThan(0);
    expect(pos).toBeLessThan(20);
  });

  it("rebuilds a tenant's running count after a dispatcher failover instead of over-admitting it", async () => {
    const type = "test.span.failover"; // 4 slots, 2 per key
    await patchQueue(stack, type, { keyConcurrency: 2, paused: true }, leader);
    await stack.dispatcher(); // the standby
    await enqueueSpans(
      stack,
      type,
      Array.from({ length: 2 }, (_, i) => ({ tag: `fo-${i}`, ms: 3500, concurrencyKey: "tenant-a" })),
    );
    await patchQueue(stack, type, { paused: false });
    await waitFor(() => spans(stack, "fo-").length === 2, 5000);
    await leader.stop("SIGKILL");
    // two more of the same tenant, after the crash (a killed leader's held messages wait out their ack
    // wait); the standby leads once the lease expires (2 s) while the first two still run, and may start
    // these only when those end
    await enqueueSpans(
      stack,
      type,
      Array.from({ length: 2 }, (_, i) => ({ tag: `fo-${i + 2}`, ms: 10, concurrencyKey: "tenant-a" })),
    );
    const ran = await waitFor(() => {
      const s = spans(stack, "fo-");
      return s.length === 4 ? s : undefined;
    }, 15_000);
    const firstEnds = ran.slice(0, 2).map((s) => s.end ?? Number.POSITIVE_INFINITY);
    for (const s of ran.slice(2)) expect(s.start).toBeGreaterThanOrEqual(Math.min(...firstEnds));
    expect(maxOverlap(ran)).toBeLessThanOrEqual(2);
  });
});
