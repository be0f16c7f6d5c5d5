#!/usr/bin/env bash
# Realtime figures on two release nodes sharing one Redis (real Postgres, RLS on):
#   1. warm-cache authenticated handshakes per second on one node;
#   2. server RSS per idle authenticated socket, at IDLE sockets (default 10,000),
#      on the other node, a process that has served nothing before; then per
#      idle long-polling client (IDLE / 2 of them, each holding one poll open),
#      on a third node, fresh as well;
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
. loadtests/lib.sh
start_two_nodes rt SOCKET_EVENTS_PER_SECOND=1000000

platform=$PLATFORM_KEY
limits='{"max_connections":1000000,"events_per_second":1000000}'
tenant=$(call POST "$A/api/v1/tenants" "$platform" "{\"name\":\"realtime-load\",\"limits\":$limits}" | json_at '["id"]')

$BENCH handshakes "$A" "$tenant" 5000 32
# On node B, which has served nothing yet: memory freed by the handshakes on
# node A would be reused and hide what a socket costs.
$BENCH idle "$B" "$tenant" "$IDLE" "${pids[1]}"
# Long-polling clients, on a node of their own that has served nothing yet.
serve_node rt 3 SOCKET_EVENTS_PER_SECOND=1000000
wait_ready 3
$BENCH idle-polling http://127.0.0.1:18193 "$tenant" "$((IDLE / 2))" "${pids[2]}"
$BENCH latency "$A" "$B" "$tenant" "$RATE" "$SECONDS_" "$SUBS"
