import { epochMs } from "./clock.ts";

/**
 * The one payload every system carries, so all three move the same bytes: a sequence number, the send
 * time (epoch ms, fractional: see clock.ts) and a fixed 64-byte body. `rec` marks messages whose latency
 * counts (warm-up ones do not).
 */
export type BenchPayload = { seq: number; ts: number; rec: boolean; body: string };

const BODY = "x".repeat(64);

/** A payload stamped with the current time. */
export function makePayload(seq: number, rec: boolean): BenchPayload {
  return { seq, ts: epochMs(), rec, body: BODY };
}

const enc = new TextEncoder();

/** The payload as JSON bytes (what JetStream carries). */
export function payloadBytes(seq: number, rec: boolean): Uint8Array {
  return enc.encode(JSON.stringify(makePayload(seq, rec)));
}
