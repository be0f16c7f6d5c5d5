#!/usr/bin/env bash
# The publish-bound (chat-shaped) load, with and without the node pushing
# back: TOPICS topics (1,000) with PER_TOPIC subscribers (2) each on node B,
# eight publishing sockets on node A round robin over the topics, every
# publish asking for its ack; two release nodes on one Redis, fresh for every
# figure. For each RATE, one run with NODE_PUBLISHES_IN_FLIGHT unbounded (how
# the node behaved before it pushed back) and one with the default (128),
# side by side (IN_FLIGHT sets the bounded runs' room); RUNS rounds. Prints accepted/refused/unanswered publishes and
# the delivery and publish→deliver p50/p99 of the accepted ones. With
# BASELINE_BIN (another build of `switchboard`, e.g. of an earlier commit),
# each rate runs that build and this one side by side instead, both with
# their defaults. After each run, the CPU seconds the two nodes and Redis
# spent over it (setup included). NODE_ENV adds settings to both nodes, e.g.
# NODE_ENV="TOPIC_HISTORY_SIZE=100" for topics whose history is full.
#
#   loadtests/publish_bound.sh [SECONDS] [RUNS] [RATE ...]
#   BASELINE_BIN=/tmp/switchboard-before loadtests/publish_bound.sh 8 3 20000 30000
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
SECONDS_=${1:-10}
RUNS=${2:-3}
shift 2 2>/dev/null || shift $#
RATES=("$@")
[ ${#RATES[@]} -gt 0 ] || RATES=(5000 10000 15000 20000 40000)
TOPICS=${TOPICS:-1000}
PER_TOPIC=${PER_TOPIC:-2}
. loadtests/lib.sh

modes=(unbounded bounded)
current=$BIN
if [ -n "${BASELINE_BIN:-}" ]; then
  [ -x "$BASELINE_BIN" ] || { echo "BASELINE_BIN $BASELINE_BIN is not an executable" >&2; exit 1; }
  modes=(baseline current)
fi
limits='{"max_connections":1000000,"events_per_second":1000000,"max_topics_per_socket":1000}'
read -r -a node_env <<< "${NODE_ENV:-}"
redis_pid=$(redis-cli -u "$REDIS_URL" info server 2>/dev/null | awk -F: '/^process_id/ {print $2}' | tr -d '\r' || true)
# CPU seconds a process has used so far.
cpu_of() { awk '{print ($14 + $15) / 100}' "/proc/$1/stat" 2>/dev/null || echo 0; }
for run in $(seq 1 "$RUNS"); do
  for rate in "${RATES[@]}"; do
    for mode in "${modes[@]}"; do
      BIN=$current
      case $mode in
        unbounded) in_flight=1000000 ;;
        baseline) in_flight=${IN_FLIGHT:-128}; BIN=$BASELINE_BIN ;;
        *) in_flight=${IN_FLIGHT:-128} ;;
      esac
      redis_before=$( [ -n "$redis_pid" ] && cpu_of "$redis_pid" || echo 0)
      start_two_nodes "chat-$mode" SOCKET_EVENTS_PER_SECOND=1000000 NODE_PUBLISHES_IN_FLIGHT=$in_flight "${node_env[@]}"
      tenant=$(call POST "$A/api/v1/tenants" "$PLATFORM_KEY" "{\"name\":\"chat\",\"limits\":$limits}" | json_at '["id"]')
      printf 'run %s, %6s/s, %-9s ' "$run" "$rate" "$mode:"
      $BENCH chat "$A" "$B" "$tenant" "$TOPICS" "$PER_TOPIC" "$rate" "$SECONDS_"
      node_a=$(cpu_of "${pids[0]}") node_b=$(cpu_of "${pids[1]}")
      if [ -n "$redis_pid" ]; then
        redis_used=$(awk -v a="$(cpu_of "$redis_pid")" -v b="$redis_before" 'BEGIN {printf "%.2f", a - b}')
      else
        redis_used=unknown
      fi
      printf '    cpu: node A %s s, node B %s s, redis %s s\n' "$node_a" "$node_b" "$redis_used"
      stop_nodes
    done
  done
done
