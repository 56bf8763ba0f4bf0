/**
 * A worker's "slots freed" notice on `<prefix>.slots.<type>`: either a plain decimal count (`3`, the
 * original form) or JSON `{"n":3,"keys":{"tenantA":2,"tenantB":1}}` that also says which concurrency
 * keys the freed slots held (tasks without a key are counted in `n` only).
 */
export type SlotsNotice = { n: number; keys?: Record<string, number> };

const decoder = new TextDecoder();

/** Parse either form; anything unreadable counts as nothing freed. */
export function parseSlotsNotice(data: Uint8Array): SlotsNotice {
  const text = decoder.decode(data).trim();
  if (!text.startsWith("{")) {
    const n = Number(text);
    return { n: Number.isInteger(n) && n > 0 ? n : 0 };
  }
  try {
    const v = JSON.parse(text) as { n?: unknown; keys?: unknown };
    const n = typeof v.n === "number" && Number.isInteger(v.n) && v.n > 0 ? v.n : 0;
    if (typeof v.keys !== "object" || v.keys === null || Array.isArray(v.keys)) return { n };
    const keys: Record<string, number> = {};
    for (const [k, c] of Object.entries(v.keys)) {
      if (typeof c === "number" && Number.isInteger(c) && c > 0) keys[k] = c;
    }
    return { n, keys };
  } catch {
    return { n: 0 };
  }
}
