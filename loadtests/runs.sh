#!/usr/bin/env bash
# Streamed deltas of one run to many watchers, on two release nodes sharing one
# Redis (real Postgres, RLS on): a worker with an API key posts
# `POST /runs/{id}/deltas` batches one after another, alternating nodes, while
# WATCHERS sockets (default 100, half on each node) watch `run:<id>`. For each
# RATE (deltas/s; default a sweep), prints the rate reached, post→deliver
# p50/p99/max, and what was lost or reordered.
#
#   loadtests/runs.sh [WATCHERS] [SECONDS] [BATCH] [RATE ...]
#
# Drives the nodes with crates/testkit's `sb-bench`. Starts the services if
# needed and stops the nodes it starts, by pid.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
WATCHERS=${1:-100}
SECONDS_=${2:-10}
BATCH=${3:-25}
shift $(( $# < 3 ? $# : 3 ))
RATES=("$@")
[ ${#RATES[@]} -gt 0 ] || RATES=(1000 2000 4000 8000)
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

scripts/services start >/dev/null
eval "$(scripts/services env)"
# The secret sb-bench signs with (switchboard-testkit's JWT_SECRET).
export JWT_SECRET=switchboard-test-secret-0123456789
cargo build -q --release -p switchboard -p switchboard-testkit --bin switchboard --bin sb-bench
BIN=./target/release/switchboard
BENCH=./target/release/sb-bench
RUST_LOG=warn $BIN migrate

pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null || true' EXIT
for n in 1 2; do
  port=$((18190 + n))
  RUST_LOG=warn HOST=127.0.0.1 PORT=$port NODE_ID=runs-$n DRAIN_SECONDS=1 $BIN serve &
  pids+=($!)
done
for port in 18191 18192; do
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/health/ready" >/dev/null && break; sleep 0.1; done
done
A=http://127.0.0.1:18191
B=http://127.0.0.1:18192
json() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }
call() { # METHOD URL TOKEN BODY
  curl -sf -X "$1" "$2" -H "authorization: Bearer $3" -H 'content-type: application/json' -d "$4"
}

platform=$($BIN token --service-role)
limits='{"max_connections":100000,"events_per_second":1000000,"http_requests_per_second":100000}'
tenant=$(call POST "$A/api/v1/tenants" "$platform" "{\"name\":\"runs-load\",\"limits\":$limits}" | json '["id"]')
admin=$($BIN token --tenant "$tenant" --role admin)
key=$(call POST "$A/api/v1/api-keys" "$admin" '{"name":"worker","scopes":["read","write"]}' | json '["key"]')
project=$(call POST "$A/api/v1/projects" "$admin" '{"name":"load"}' | json '["id"]')
for rate in "${RATES[@]}"; do
  run=$(call POST "$A/api/v1/runs" "$key" "{\"project_id\":\"$project\"}" | json '["id"]')
  call PATCH "$A/api/v1/runs/$run" "$key" '{"status":"running"}' >/dev/null
  $BENCH deltas "$A" "$B" "$tenant" "$key" "$run" "$rate" "$SECONDS_" "$WATCHERS" "$BATCH"
done
