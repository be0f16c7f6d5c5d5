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
. loadtests/lib.sh
start_two_nodes runs

platform=$PLATFORM_KEY
limits='{"max_connections":100000,"events_per_second":1000000,"http_requests_per_second":100000}'
tenant=$(call POST "$A/api/v1/tenants" "$platform" "{\"name\":\"runs-load\",\"limits\":$limits}" | json_at '["id"]')
admin=$($BIN token --tenant "$tenant" --role admin)
key=$(call POST "$A/api/v1/api-keys" "$admin" '{"name":"worker","scopes":["read","write"]}' | json_at '["key"]')
project=$(call POST "$A/api/v1/projects" "$admin" '{"name":"load"}' | json_at '["id"]')
for rate in "${RATES[@]}"; do
  run=$(call POST "$A/api/v1/runs" "$key" "{\"project_id\":\"$project\"}" | json_at '["id"]')
  call PATCH "$A/api/v1/runs/$run" "$key" '{"status":"running"}' >/dev/null
  $BENCH deltas "$A" "$B" "$tenant" "$key" "$run" "$rate" "$SECONDS_" "$WATCHERS" "$BATCH"
done
