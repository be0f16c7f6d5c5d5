#!/usr/bin/env bash
# A rolling restart under load, on the local cluster (scripts/cluster): NODES
# release nodes (default 2) behind HAProxy, socket.io-client subscribers over
# websockets and long-polling, REST writers (broadcasts, and messages stored in
# Postgres) through the balancer; then every node in turn is taken out of
# HAProxy, sent SIGTERM (it drains), waited for, started again and put back once
# ready. Passes only if every accepted event reached every subscriber exactly
# once and in order and no REST request failed (loadtests/drivers/rolling.mjs
# prints the figures).
#
#   loadtests/rolling_restart.sh [NODES]
#
# Driver settings (WS_SUBSCRIBERS, POLLING_SUBSCRIBERS, CHANNELS, ...) pass
# through the environment; see the driver. Stops the cluster it started.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
NODES=${1:-2}

command -v node >/dev/null || { echo "rolling_restart: Node.js 18 or newer is required" >&2; exit 1; }
if [ ! -d loadtests/node_modules ] || [ loadtests/package-lock.json -nt loadtests/node_modules ]; then
  (cd loadtests && npm ci --no-audit --no-fund --loglevel=error)
fi

scripts/cluster start "$NODES"
trap 'scripts/cluster stop' EXIT
eval "$(scripts/cluster env)"

actions=$(python3 -c 'import json, sys; print(json.dumps([f"scripts/cluster restart-node node{i}" for i in range(1, int(sys.argv[1]) + 1)]))' "$NODES")
LB_URL=$SB_LB_URL ACTIONS=$actions node loadtests/drivers/rolling.mjs
