#!/usr/bin/env bash
# GET /api/v1/projects with a user JWT at a fixed rate against one release node
# (RLS on, real Postgres and Redis), reporting latency percentiles and the
# tenant-directory cache hit rate from /metrics.
#
#   loadtests/rest_projects.sh [RATE] [SECONDS]     (defaults: 300 req/s, 30 s)
#
# Needs `hey` (apt-get install hey). Starts the services if needed and stops the
# node it starts.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
RATE=${1:-300}
SECONDS_=${2:-30}
WORKERS=10
PORT=${LOAD_PORT:-18090}

command -v hey >/dev/null || { echo "loadtest: install hey (apt-get install hey)" >&2; exit 1; }
scripts/services start >/dev/null
eval "$(scripts/services env)"
export JWT_SECRET=loadtest-secret-0123456789abcdef
export PLATFORM_KEY=loadtest-platform-key-0123456789abcdef0123
cargo build -q --release -p switchboard
BIN=./target/release/switchboard
RUST_LOG=warn $BIN migrate

RUST_LOG=warn HOST=127.0.0.1 PORT=$PORT METRICS_ADDR=127.0.0.1:$((PORT + 10)) NODE_ID=load-1 $BIN serve &
NODE=$!
trap 'kill $NODE 2>/dev/null; wait $NODE 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$PORT/health/ready" >/dev/null && break; sleep 0.1; done

platform=$PLATFORM_KEY
tenant=$(curl -sf -X POST "http://127.0.0.1:$PORT/api/v1/tenants" -H "authorization: Bearer $platform" \
  -H 'content-type: application/json' \
  -d '{"name":"loadtest","limits":{"http_requests_per_second":100000}}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
token=$($BIN token --tenant "$tenant" --ttl 1h)
for i in $(seq 1 20); do
  curl -sf -X POST "http://127.0.0.1:$PORT/api/v1/projects" -H "authorization: Bearer $token" \
    -H 'content-type: application/json' -d "{\"name\":\"project $i\"}" >/dev/null
done

echo "GET /api/v1/projects (20 projects, page of 50) at $RATE req/s for ${SECONDS_}s, $WORKERS connections"
hey -z "${SECONDS_}s" -c $WORKERS -q $((RATE / WORKERS)) -H "Authorization: Bearer $token" \
  "http://127.0.0.1:$PORT/api/v1/projects" | sed -n '/Summary/,/Latency distribution/p;/10%/,/99%/p;/Status code/,$p'

curl -sf "http://127.0.0.1:$((PORT + 10))/metrics" | python3 -c '
import sys
m = {}
for line in sys.stdin:
    if line.startswith("switchboard_cache"):
        name, value = line.rsplit(" ", 1)
        m[name] = float(value)
hits = sum(v for k, v in m.items() if k.startswith("switchboard_cache_hits_total"))
misses = sum(v for k, v in m.items() if k.startswith("switchboard_cache_misses_total"))
print(f"cache: {int(hits)} hits, {int(misses)} misses, hit rate {hits / max(hits + misses, 1):.4%}")
'
