import { spawn } from "node:child_process";
import { createRequire } from "node:module";
import { register } from "./children.ts";
import { round } from "./stats.ts";

/**
 * HTTP load with autocannon, run as its own process (a client, not part of the measured server) on
 * keep-alive connections: the same JSON body POSTed for `durationS` seconds.
 */

/** What one autocannon run reports, reduced to what we print. */
export type HttpLoad = {
  connections: number;
  durationS: number;
  requests: number;
  ok2xx: number;
  non2xx: number;
  errors: number;
  timeouts: number;
  perSec: number;
  latencyP50Ms: number;
  latencyP99Ms: number;
};

const cli = createRequire(import.meta.url).resolve("autocannon/autocannon.js");

/** POST `body` (JSON) with `headers` to `url` on `connections` keep-alive connections for `durationS` seconds. */
export async function httpLoad(
  url: string,
  body: string,
  headers: Record<string, string>,
  connections: number,
  durationS: number,
): Promise<HttpLoad> {
  const args = [cli, "-j", "-n", "-c", String(connections), "-d", String(durationS), "-m", "POST"];
  for (const [k, v] of Object.entries({ "content-type": "application/json", ...headers })) {
    args.push("-H", `${k}=${v}`);
  }
  args.push("-b", body, url);
  const child = spawn(process.execPath, args, { stdio: ["ignore", "pipe", "pipe"] });
  register(child, "autocannon");
  let out = "";
  let err = "";
  child.stdout.on("data", (d) => {
    out += d;
  });
  child.stderr.on("data", (d) => {
    err += d;
  });
  const code = await new Promise<number | null>((resolve) => child.once("exit", resolve));
  if (code !== 0) throw new Error(`autocannon exited ${code}: ${err.slice(-500)}`);
  const r = JSON.parse(out) as {
    requests: { total: number };
    latency: { p50: number; p99: number };
    duration: number;
    non2xx: number;
    errors: number;
    timeouts: number;
    "2xx": number;
  };
  return {
    connections,
    durationS: round(r.duration, 2),
    requests: r.requests.total,
    ok2xx: r["2xx"],
    non2xx: r.non2xx,
    errors: r.errors,
    timeouts: r.timeouts,
    perSec: Math.round(r["2xx"] / r.duration),
    latencyP50Ms: r.latency.p50,
    latencyP99Ms: r.latency.p99,
  };
}

/** One request, to say why a load run got no 2xx: the status and the start of the body. */
export async function probeOnce(url: string, body: string, headers: Record<string, string>): Promise<string> {
  try {
    const r = await fetch(url, {
      method: "POST",
      body,
      headers: { "content-type": "application/json", ...headers },
      signal: AbortSignal.timeout(5000),
    });
    return `${r.status} ${(await r.text()).slice(0, 300)}`;
  } catch (e) {
    return `request failed: ${String(e)}`;
  }
}
