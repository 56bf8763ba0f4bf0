import { connect } from "node:net";
import { BODY_CATEGORIES, hostileBody, validBody } from "./hostile-bodies.ts";
import { routeCase } from "./hostile-routes.ts";
import { message } from "./http-message.ts";
import type { Rng } from "./rng.ts";

/**
 * Hostile HTTP requests, written byte by byte over a plain TCP socket (node:net), so a case can be
 * anything: invalid UTF-8, a broken request line, a body that never finishes, one byte every 300 ms.
 */

/** HTTP case kinds: the hostile bodies on POST /v1/tasks, plus framing, media types, other routes, slowness. */
export const HTTP_CATEGORIES = [...BODY_CATEGORIES, "content-type", "framing", "routes", "slow"] as const;
export type HttpCategory = (typeof HTTP_CATEGORIES)[number];

/** One request to send. */
export type HttpCase = {
  category: HttpCategory;
  variant: string;
  /** The whole message: head and body. */
  data: Buffer;
  /** Send the first `from` bytes at once, then trickle the rest, `bytes` every `everyMs`. */
  slow?: { from: number; bytes: number; everyMs: number };
  /** Half-close the connection after writing (the client is done, the message is not). */
  halfClose?: boolean;
  /** The server may close instead of answering: a body far over the limit, a message cut short. */
  mayClose?: boolean;
};

/** What came back. */
export type HttpOutcome = { status?: number; closed?: boolean; timedOut?: boolean; ms: number };

/** Limits of the gateway under test. */
export type HttpLimits = { type: string; maxPayloadBytes: number; bodyLimitBytes: number };

const raw = (s: string) => Buffer.from(s, "latin1");
const HOST = "Host: 127.0.0.1\r\nConnection: close\r\n";

/** One hostile HTTP request of `category`. */
export function httpCase(rng: Rng, category: HttpCategory, l: HttpLimits): HttpCase {
  const valid = JSON.stringify(validBody(l.type, rng.int(0, 1_000_000)));
  const c = (variant: string, data: Buffer, extra: Partial<HttpCase> = {}): HttpCase => ({
    category,
    variant,
    data,
    ...extra,
  });
  switch (category) {
    case "content-type": {
      const ct = rng.pick([
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/xml",
        "json",
        "application/javascript",
        null,
      ]);
      return c(String(ct), message(valid, { contentType: ct }));
    }
    case "framing": {
      const big = "a".repeat(rng.int(20_000, 60_000));
      const cases: [string, Buffer, boolean?][] = [
        ["garbage-request-line", raw("GARBAGE\r\n\r\n")],
        ["no-version", raw("GET\r\n\r\n")],
        ["http-9.9", raw(`GET / HTTP/9.9\r\n${HOST}\r\n`)],
        ["no-host", raw("GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n")],
        ["space-in-path", raw(`GET /v1/tasks/a b HTTP/1.1\r\n${HOST}\r\n`)],
        ["binary-line", Buffer.concat([Buffer.from([0x16, 0x03, 0x01, 0x00, 0xff]), raw("\r\n\r\n")])],
        ["header-too-large", raw(`GET /healthz HTTP/1.1\r\n${HOST}X-Big: ${big}\r\n\r\n`)],
        ["bad-header-name", raw(`GET /healthz HTTP/1.1\r\n${HOST}Bad Header: x\r\n\r\n`)],
        ["control-char-header", raw(`GET /healthz HTTP/1.1\r\n${HOST}X-A: b\u0001c\r\n\r\n`)],
        ["content-length-text", message(valid, { headers: ["Content-Length: abc"] })],
        ["content-length-negative", message(valid, { headers: ["Content-Length: -1"] })],
        [
          "content-length-twice",
          message(valid, { headers: [`Content-Length: ${valid.length}`, "Content-Length: 3"] }),
        ],
        [
          "cl-and-te",
          message(valid, { headers: [`Content-Length: ${valid.length}`, "Transfer-Encoding: chunked"] }),
        ],
        ["bad-chunk-size", message("zz\r\nabc\r\n0\r\n\r\n", { headers: ["Transfer-Encoding: chunked"] })],
        ["body-cut-short", message(valid, { headers: [`Content-Length: ${valid.length + 100}`] }), true],
        ["null-in-path", raw(`GET /v1/tasks/\u0000 HTTP/1.1\r\n${HOST}\r\n`)],
      ];
      const [variant, data, cutShort] = rng.pick(cases);
      return c(variant, data, cutShort ? { mayClose: true, halfClose: true } : {});
    }
    case "routes": {
      const [variant, data] = routeCase(rng, l, valid);
      return c(variant, data);
    }
    case "slow": {
      const everyMs = rng.int(200, 400);
      const v = rng.int(0, 2);
      if (v === 0) {
        const m = message(valid);
        const headLen = m.indexOf("\r\n\r\n") + 4;
        // the head arrives at once; the body one byte at a time, far slower than the request timeout
        return c("slow-body", m, { slow: { from: headLen, bytes: 1, everyMs } });
      }
      if (v === 1) return c("slow-head", message(valid), { slow: { from: 0, bytes: 1, everyMs } });
      // announces 50 bytes more than it sends, then waits
      return c("stalled-body", message(valid, { headers: [`Content-Length: ${valid.length + 50}`] }));
    }
    default: {
      if (category === "huge" && rng.chance(0.3)) {
        // over the body limit itself: refused from the Content-Length, or while a chunked body streams in
        const size = rng.int(l.bodyLimitBytes + 1, 4 * 1024 * 1024);
        const body = Buffer.alloc(size, 0x61);
        if (rng.chance(0.5)) return c("body-over-limit", message(body), { mayClose: true });
        const chunked = Buffer.concat([
          Buffer.from(`${size.toString(16)}\r\n`),
          body,
          Buffer.from("\r\n0\r\n\r\n"),
        ]);
        return c("chunked-over-limit", message(chunked, { headers: ["Transfer-Encoding: chunked"] }), {
          mayClose: true,
        });
      }
      const b = hostileBody(rng, category, l);
      return c(b.variant, message(b.data), { mayClose: b.data.length > l.bodyLimitBytes });
    }
  }
}

/** Send one case and read the status line (the socket is closed once the head of the answer is in). */
export function sendHttp(port: number, hc: HttpCase, timeoutMs: number): Promise<HttpOutcome> {
  const t0 = Date.now();
  return new Promise((resolve) => {
    let got = Buffer.alloc(0);
    let done = false;
    let trickle: NodeJS.Timeout | undefined;
    const s = connect(port, "127.0.0.1");
    const finish = (o: Omit<HttpOutcome, "ms">) => {
      if (done) return;
      done = true;
      clearInterval(trickle);
      clearTimeout(timer);
      s.destroy();
      resolve({ ...o, ms: Date.now() - t0 });
    };
    const timer = setTimeout(() => finish({ timedOut: true }), timeoutMs);
    const statusOf = () => {
      const m = /^HTTP\/1\.[01] (\d{3})/.exec(got.subarray(0, 32).toString("latin1"));
      return m ? Number(m[1]) : undefined;
    };
    s.on("data", (d) => {
      got = Buffer.concat([got, d]);
      if (got.includes("\r\n\r\n")) finish({ status: statusOf() });
    });
    // a reset after the answer started still counts the answer; before it, the server closed on us
    s.on("error", () => finish(statusOf() ? { status: statusOf() } : { closed: true }));
    s.on("close", () => finish(statusOf() ? { status: statusOf() } : { closed: true }));
    s.on("connect", () => {
      const data = hc.data;
      if (!hc.slow) {
        s.write(data);
        if (hc.halfClose) s.end();
        return;
      }
      const { from, bytes, everyMs } = hc.slow;
      s.write(data.subarray(0, from));
      let at = from;
      trickle = setInterval(() => {
        if (at >= data.length || s.destroyed) return clearInterval(trickle);
        s.write(data.subarray(at, at + bytes));
        at += bytes;
      }, everyMs);
    });
  });
}
