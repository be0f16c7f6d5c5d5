#!/usr/bin/env bash
# Realtime figures on two release nodes sharing one Redis (real Postgres, RLS on):
#   1. warm-cache authenticated handshakes per second on one node;
#   2. server RSS per idle authenticated socket, at IDLE sockets (default 10,000);
#   3. publish→deliver p50/p99 across the two nodes at RATE events/s (default 2,000)
#      to SUBSCRIBERS sockets (default 10) on the other node.
#
#   loadtests/realtime.sh [IDLE] [RATE] [SECONDS] [SUBSCRIBERS]
#
# Drives the nodes with crates/testkit's `sb-bench` (a Rust Socket.IO client).
# Starts the services if needed and stops the nodes it starts, by pid.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
IDLE=${1:-10000}
RATE=${2:-2000}
SECONDS_=${3:-10}
SUBS=${4:-10}
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
  RUST_LOG=warn HOST=127.0.0.1 PORT=$port NODE_ID=rt-$n SOCKET_EVENTS_PER_SECOND=1000000 DRAIN_SECONDS=1 \
    $BIN serve &
  pids+=($!)
done
for port in 18191 18192; do
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/health/ready" >/dev/null && break; sleep 0.1; done
done
A=http://127.0.0.1:18191
B=http://127.0.0.1:18192

platform=$($BIN token --service-role)
tenant=$(curl -sf -X POST "$A/api/v1/tenants" -H "authorization: Bearer $platform" \
  -H 'content-type: application/json' \
  -d '{"name":"realtime-load","limits":{"max_connections":1000000,"events_per_second":1000000}}' |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')

$BENCH handshakes "$A" "$tenant" 5000 32
$BENCH idle "$A" "$tenant" "$IDLE" "${pids[0]}"
$BENCH latency "$A" "$B" "$tenant" "$RATE" "$SECONDS_" "$SUBS"
