/** Raw HTTP/1.1 requests for the hostile suites, built by hand so that any part can be wrong. */

/** The request line and headers of {@link message}. */
export type Head = { method?: string; path?: string; contentType?: string | null; headers?: string[] };

/** A well-formed message: `Connection: close`, a Host, and a Content-Length unless `headers` frame it. */
export function message(body: Buffer | string, h: Head = {}): Buffer {
  const b = Buffer.isBuffer(body) ? body : Buffer.from(body);
  const lines = [
    `${h.method ?? "POST"} ${h.path ?? "/v1/tasks"} HTTP/1.1`,
    "Host: 127.0.0.1",
    "Connection: close",
  ];
  const ct = h.contentType === undefined ? "application/json" : h.contentType;
  if (ct !== null) lines.push(`Content-Type: ${ct}`);
  if (!h.headers?.some((x) => /^(content-length|transfer-encoding):/i.test(x)))
    lines.push(`Content-Length: ${b.length}`);
  lines.push(...(h.headers ?? []));
  return Buffer.concat([Buffer.from(`${lines.join("\r\n")}\r\n\r\n`), b]);
}
