#!/usr/bin/env bash
# Slow consumers against everyone else, on one release node: RATE events/s of
# BYTES each to SUBSCRIBERS sockets of one topic, first all reading, then with
# SLOW_PERCENT of them not reading at all (their queues fill and the node takes
# them off the topic with `system:lagging`). Prints the reading subscribers'
# p50/p99 both ways, RUNS times, each run on fresh topics.
#
#   loadtests/slow_consumers.sh [RATE] [SECONDS] [SUBSCRIBERS] [SLOW_PERCENT] [BYTES] [RUNS]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
RATE=${1:-500}
SECONDS_=${2:-10}
SUBS=${3:-50}
SLOW=${4:-10}
BYTES=${5:-1024}
RUNS=${6:-3}
. loadtests/lib.sh
start_two_nodes slow SOCKET_EVENTS_PER_SECOND=1000000

tenant=$(call POST "$A/api/v1/tenants" "$PLATFORM_KEY" '{"name":"slow","limits":{"events_per_second":1000000,"max_connections":1000000}}' | json_at '["id"]')
for run in $(seq 1 "$RUNS"); do
  echo "run $run:"
  $BENCH slow "$A" "$tenant" "$RATE" "$SECONDS_" "$SUBS" "$SLOW" "$BYTES"
  curl -s "$MA" | grep '^switchboard_lagging' || true
done
