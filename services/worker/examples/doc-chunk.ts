import { z } from "zod";
import { defineTask } from "../sdk.ts";

/**
 * Splits a text or Markdown document into chunks of at most `chunkSize` characters, each overlapping
 * the previous one by `chunkOverlap`, preferring to cut at paragraph, line, sentence and word breaks
 * (in that order) so chunks stay readable for embedding and retrieval.
 */
export const docChunk = defineTask({
  type: "doc.chunk",
  payload: z
    .strictObject({
      text: z.string().max(900_000),
      format: z.enum(["text", "markdown"]).default("text"),
      chunkSize: z.number().int().min(16).max(100_000).default(1000),
      chunkOverlap: z.number().int().min(0).default(100),
    })
    .refine((p) => p.chunkOverlap < p.chunkSize, { message: "chunkOverlap must be smaller than chunkSize" }),
  concurrency: 4,
  timeoutMs: 60_000,
  handler: async (p, ctx) => {
    const chunks: { index: number; start: number; end: number; text: string }[] = [];
    const text = p.format === "markdown" ? p.text.replace(/\r\n/g, "\n") : p.text;
    let start = 0;
    let lastReport = 0;
    // Resumed (after a pause, a crash or a failure): cutting is deterministic, so the chunks before the
    // checkpoint are rebuilt without the work around them (progress writes, yields) and we go on from there.
    const resumeAt = (ctx.lastCheckpoint as { start?: number } | undefined)?.start ?? 0;
    while (start < resumeAt && start < text.length) {
      const end = cutPoint(text, start, p.chunkSize);
      chunks.push({ index: chunks.length, start, end, text: text.slice(start, end) });
      if (end >= text.length) break;
      start = Math.max(end - p.chunkOverlap, start + 1);
    }
    while (start < text.length) {
      if (ctx.signal.aborted) throw ctx.signal.reason;
      const end = cutPoint(text, start, p.chunkSize);
      chunks.push({ index: chunks.length, start, end, text: text.slice(start, end) });
      if (end >= text.length) break;
      // step back by the overlap, but always move forward
      start = Math.max(end - p.chunkOverlap, start + 1);
      const pct = Math.floor((end / text.length) * 100);
      if (pct - lastReport >= 10) {
        lastReport = pct;
        ctx.progress(pct, `${chunks.length} chunks`);
        await ctx.checkpoint({ start, chunks: chunks.length });
        // yield so a long document does not block the worker's event loop (heartbeats, other tasks)
        await new Promise((r) => setImmediate(r));
      }
    }
    ctx.progress(100, `${chunks.length} chunks`);
    return {
      chunks,
      count: chunks.length,
      chunkSize: p.chunkSize,
      chunkOverlap: p.chunkOverlap,
      resumedAt: resumeAt,
    };
  },
});

const BREAKS = ["\n\n", "\n", ". ", " "];

/** End of the chunk starting at `start`: the last natural break in the window's second half, else the hard limit. */
export function cutPoint(text: string, start: number, size: number): number {
  const hard = Math.min(start + size, text.length);
  if (hard === text.length) return hard;
  const window = text.slice(start, hard);
  for (const b of BREAKS) {
    const i = window.lastIndexOf(b);
    if (i >= size / 2) return start + i + b.length;
  }
  return hard;
}
