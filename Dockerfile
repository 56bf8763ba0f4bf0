# syntax=docker/dockerfile:1
#
# One image for the three Sluice services. Choose the service with the first argument or SLUICE_SERVICE:
#   docker run sluice enqueue            docker run -e SLUICE_SERVICE=worker sluice
# Node 24 strips TypeScript types itself, so there is no build step: the image runs the .ts sources
# with production dependencies only (typescript, vitest, biome and the `node` package stay out).
# Checked offline by test/deploy/dockerfile.test.ts. See docs/deploy.md.

ARG NODE_IMAGE=node:24-slim

# ---- production dependencies only -----------------------------------------------------------------
FROM ${NODE_IMAGE} AS deps
WORKDIR /app
COPY package.json package-lock.json ./
# --ignore-scripts: no production dependency needs an install script, and skipping them keeps the
# build from running code fetched at build time.
RUN --mount=type=cache,target=/root/.npm \
    npm ci --omit=dev --ignore-scripts --no-audit --no-fund

# ---- runtime ---------------------------------------------------------------------------------------
FROM ${NODE_IMAGE} AS runtime
ENV NODE_ENV=production \
    LOG_FORMAT=json \
    MALLOC_ARENA_MAX=2
WORKDIR /app

COPY --chmod=0755 <<'EOF' /usr/local/bin/sluice-entrypoint
#!/bin/sh
# Start one Sluice service as PID 1 (exec), so SIGTERM reaches its drain handler directly.
set -eu
svc="${SLUICE_SERVICE:-}"
case "${1:-}" in
  enqueue|dispatcher|worker) svc="$1"; shift ;;
esac
case "$svc" in
  enqueue|dispatcher|worker) ;;
  *)
    echo "usage: sluice <enqueue|dispatcher|worker> (or set SLUICE_SERVICE); got '${1:-}'" >&2
    exit 64
    ;;
esac
# Every service gets its metrics/health listener unless told otherwise, so the HEALTHCHECK below and
# the Kubernetes probes have something to ask (dispatcher and worker have no other HTTP port).
if [ -z "${METRICS_PORT:-}" ]; then
  export METRICS_PORT=9464
fi
# flags as in shared/node-flags.ts
case "$svc" in
  enqueue) flags="--max-semi-space-size=8 --heap-growing-percent=30" ;;
  dispatcher) flags="--max-semi-space-size=4" ;;
  worker) flags="--max-semi-space-size=4" ;;
esac
# shellcheck disable=SC2086 # the flags are words
exec node $flags "services/$svc/main.ts" "$@"
EOF

COPY <<'EOF' /usr/local/bin/sluice-healthcheck.mjs
// Docker HEALTHCHECK: ask the running service's own /healthz. The service and its ports are read from
// PID 1's command line and environment, because the entrypoint may have chosen them (argument, default
// METRICS_PORT) after Docker built this check's environment.
import { readFileSync } from "node:fs";

const pid = process.env.SLUICE_HEALTH_PID || "1";
let argv;
let env;
try {
  argv = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
  env = Object.fromEntries(
    readFileSync(`/proc/${pid}/environ`, "utf8")
      .split("\0")
      .filter((l) => l.includes("="))
      .map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)]),
  );
} catch (e) {
  console.error(`no process ${pid}: ${e.message}`);
  process.exit(1);
}
const svc = argv.map((a) => /services\/(enqueue|dispatcher|worker)\/main\.ts$/.exec(a)?.[1]).find(Boolean);
if (!svc) {
  console.error(`process ${pid} is not a Sluice service: ${argv.join(" ")}`);
  process.exit(1);
}
const local = (h) => (!h || h === "0.0.0.0" || h === "::" ? "127.0.0.1" : h);
const [host, port] =
  svc === "enqueue"
    ? [local(env.HTTP_HOST), Number(env.HTTP_PORT || 8080)]
    : [local(env.METRICS_HOST), Number(env.METRICS_PORT || 0)];
if (!port) {
  // METRICS_PORT=0 turned the listener off: a live PID 1 is all there is to check.
  process.exit(0);
}
const url = `http://${host.includes(":") ? `[${host}]` : host}:${port}/healthz`;
try {
  const res = await fetch(url, { signal: AbortSignal.timeout(3000) });
  if (!res.ok) console.error(`${url}: HTTP ${res.status}`);
  process.exit(res.ok ? 0 : 1);
} catch (e) {
  console.error(`${url}: ${e.message}`);
  process.exit(1);
}
EOF

# Owned by root and only readable by the service user: the services write nothing to disk.
COPY --from=deps /app/node_modules ./node_modules
COPY package.json ./
COPY shared ./shared
COPY services ./services

# The base image's unprivileged `node` user (uid 1000).
USER node

# enqueue's API; every service's metrics/health listener (METRICS_PORT).
EXPOSE 8080 9464

HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
  CMD ["node", "/usr/local/bin/sluice-healthcheck.mjs"]

# SIGTERM starts each service's drain (workers finish running tasks within SHUTDOWN_GRACE_MS).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/sluice-entrypoint"]
CMD []
