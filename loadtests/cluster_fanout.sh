#!/usr/bin/env bash
# Fan-out on one Redis and on a Redis Cluster of three masters, side by side
# in one run: two release nodes each time (fresh processes), TOPICS topics
# spread over the cluster's slots with PER_TOPIC subscribers each on the second
# node, RATE publishes/s from the first. RUNS rounds, each one Redis then the
# cluster. Prints deliveries/s and publish→deliver p50/p99 per run.
#
#   loadtests/cluster_fanout.sh [TOPICS] [PER_TOPIC] [RATE] [SECONDS] [RUNS]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
TOPICS=${1:-200}
PER_TOPIC=${2:-5}
RATE=${3:-4000}
SECONDS_=${4:-10}
RUNS=${5:-3}
. loadtests/lib.sh
scripts/services cluster start >/dev/null
SINGLE=$REDIS_URL
CLUSTER=$(scripts/services cluster env | sed -n "s/^export REDIS_URL='\(.*\)'$/\1/p")

limits='{"max_connections":1000000,"events_per_second":1000000,"max_topics_per_socket":100}'
for run in $(seq 1 "$RUNS"); do
  for mode in single cluster; do
    if [ "$mode" = single ]; then url=$SINGLE; else url=$CLUSTER; fi
    start_two_nodes "fan-$mode" SOCKET_EVENTS_PER_SECOND=1000000 REDIS_URL="$url"
    tenant=$(call POST "$A/api/v1/tenants" "$PLATFORM_KEY" "{\"name\":\"fanout\",\"limits\":$limits}" | json_at '["id"]')
    printf 'run %s, %-7s ' "$run" "$mode:"
    $BENCH spread "$A" "$B" "$tenant" "$TOPICS" "$PER_TOPIC" "$RATE" "$SECONDS_"
    stop_nodes
  done
done
