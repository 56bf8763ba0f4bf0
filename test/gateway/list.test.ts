import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Harness, postTask, startHarness } from "../enqueue/harness.ts";
import { advance } from "./support.ts";

let h: Harness;
const ids: Record<string, string[]> = { "list.a": [], "list.b": [] };
beforeAll(async () => {
  h = await startHarness({ LIST_SCAN_MAX: "100" });
  // 30 tasks alternating two types, enqueued in order
  for (let i = 0; i < 30; i++) {
    const type = i % 2 === 0 ? "list.a" : "list.b";
    const res = await postTask(h, { type, payload: { i } });
    ids[type]!.push((res.json() as { id: string }).id);
  }
});
afterAll(async () => {
  await h?.cleanup();
});

type Page = {
  tasks: { id: string; type: string; status: string; revision: number; result?: unknown }[];
  cursor?: string;
  revision: number;
  scanned: number;
};
const list = async (query: string): Promise<Page> => {
  const res = await h.service.app.inject({ url: `/v1/tasks${query}` });
  expect(res.statusCode, res.body).toBe(200);
  return res.json() as Page;
};

describe("gateway list - GET /v1/tasks", () => {
  it("lists the most recently changed tasks first, without results", async () => {
    const all = [...ids["list.a"]!, ...ids["list.b"]!];
    // a changed task moves to the front
    const moved = ids["list.a"]![0]!;
    await advance(h, moved, { status: "completed", result: { big: true } });
    const page = await list("?limit=5");
    expect(page.tasks).toHaveLength(5);
    expect(page.tasks[0]!.id).toBe(moved);
    expect(page.tasks[0]!.status).toBe("completed");
    expect(page.tasks[0]!.result).toBeUndefined();
    // then newest enqueues first
    expect(page.tasks[1]!.id).toBe(ids["list.b"]![14]);
    expect(page.tasks[2]!.id).toBe(ids["list.a"]![14]);
    const revs = page.tasks.map((t) => t.revision);
    expect([...revs].sort((a, b) => b - a)).toEqual(revs);
    expect(page.cursor).toBeDefined();
    expect(all).toContain(page.tasks[4]!.id);
  });

  it("pages through everything with the cursor, each task once", async () => {
    const seen: string[] = [];
    let cursor: string | undefined;
    for (let i = 0; i < 20; i++) {
      const page = await list(`?limit=7${cursor ? `&cursor=${cursor}` : ""}`);
      seen.push(...page.tasks.map((t) => t.id));
      cursor = page.cursor;
      if (!cursor) break;
    }
    expect(cursor).toBeUndefined();
    expect(seen).toHaveLength(30);
    expect(new Set(seen).size).toBe(30);
  });

  it("filters by type and status", async () => {
    const b = await list("?type=list.b&limit=100");
    expect(b.tasks.map((t) => t.id).sort()).toEqual([...ids["list.b"]!].sort());
    const done = await list("?status=completed,failed&limit=100");
    expect(done.tasks.map((t) => t.id)).toEqual([ids["list.a"]![0]]);
    const none = await list("?type=list.none");
    expect(none.tasks).toEqual([]);
  });

  it("stops after LIST_SCAN_MAX records and hands back a cursor when a selective filter has not filled the page", async () => {
    for (let i = 0; i < 120; i++) await postTask(h, { type: "list.noise" });
    const page = await list("?type=list.b&limit=100");
    expect(page.scanned).toBeLessThanOrEqual(100);
    expect(page.tasks).toEqual([]);
    expect(page.cursor).toBeDefined();
    const next = await list(`?type=list.b&limit=100&cursor=${page.cursor}`);
    expect(next.tasks.length).toBeGreaterThan(0);
  });

  it("rejects bad parameters with 400", async () => {
    for (const q of [
      "?limit=0",
      "?limit=501",
      "?limit=x",
      "?status=done",
      "?type=Bad",
      "?cursor=abc",
      "?cursor=0",
    ]) {
      const res = await h.service.app.inject({ url: `/v1/tasks${q}` });
      expect(res.statusCode, q).toBe(400);
      expect(res.json().code).toBe("invalid_request");
    }
  });
});
