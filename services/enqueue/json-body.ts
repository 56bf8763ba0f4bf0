import { ErrorCodes, ValidationError } from "../../shared/errors.ts";

/**
 * JSON request bodies that fastify's parser never sees — the NATS APIs, and the Appwrite webhook route
 * (raw bytes, for its signature) — refused exactly where the HTTP API refuses them. fastify parses
 * HTTP bodies with secure-json-parse, set to refuse (http/app.ts): a body that is not UTF-8 or not JSON,
 * or that holds a `__proto__` key, or a `constructor` key whose value is an object with a `prototype`
 * key, anywhere, is a 400 `invalid_json` and nothing is written. `JSON.parse` alone keeps such keys as
 * plain properties, which a handler merging the payload into an object could trip over.
 */

// fatal: a body that is not UTF-8 is not JSON; decoding it to U+FFFD would store what the caller never sent
const decoder = new TextDecoder("utf-8", { fatal: true });

// Either key followed by a colon, each character as itself or as a \u escape (JSON allows both; the
// same patterns as secure-json-parse). One pass over the text, ~70 ns for a small body, ~0.7 ms a MiB:
// a fraction of the parse. Only a body that matches is walked.
const c = (ch: string) => {
  const hex = ch.charCodeAt(0).toString(16).padStart(4, "0");
  const last = hex.at(-1)!;
  const alt = /[a-f]/.test(last) ? `[${last}${last.toUpperCase()}]` : last;
  return `(?:${ch}|\\\\u${hex.slice(0, 3)}${alt})`;
};
const spelled = (key: string) => [...key].map(c).join("");
const SUSPECT_KEY = new RegExp(`"(?:${spelled("__proto__")}|${spelled("constructor")})"\\s*:`);

const INVALID = "body is not valid JSON";

/**
 * Parse a JSON body (a NATS request's, an Appwrite delivery's) as the HTTP API would. Throws
 * ValidationError 400 `invalid_json` for bytes that are not UTF-8, text that is not JSON, and
 * `__proto__` / `constructor.prototype` keys.
 */
export function parseJsonBody(data: Uint8Array): unknown {
  let text: string;
  let v: unknown;
  try {
    text = decoder.decode(data);
    v = JSON.parse(text);
  } catch {
    throw new ValidationError(ErrorCodes.invalidJson, INVALID);
  }
  if (v !== null && typeof v === "object" && SUSPECT_KEY.test(text) && hasForbiddenKey(v)) {
    throw new ValidationError(
      ErrorCodes.invalidJson,
      `${INVALID}: it has a __proto__ or constructor.prototype key`,
    );
  }
  return v;
}

/**
 * True when a parsed value holds an own `__proto__` key, or a `constructor` object with an own
 * `prototype`, at any depth (secure-json-parse's rule). Iterative: bodies may nest 100,000 deep before
 * the depth check refuses them.
 */
export function hasForbiddenKey(root: object): boolean {
  const stack: object[] = [root];
  while (stack.length > 0) {
    const node = stack.pop() as Record<string, unknown>;
    if (Object.hasOwn(node, "__proto__")) return true;
    if (Object.hasOwn(node, "constructor")) {
      const ctor = node.constructor;
      if (ctor !== null && typeof ctor === "object" && Object.hasOwn(ctor, "prototype")) return true;
    }
    for (const k in node) {
      const x = node[k];
      if (x !== null && typeof x === "object") stack.push(x);
    }
  }
  return false;
}
