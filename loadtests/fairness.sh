#!/usr/bin/env bash
# One tenant's recovery replays against another's live delivery, on one release
# node: tenant B's publish→deliver p50/p99 at RATE events/s to SUBSCRIBERS
# sockets, first alone, then while STORMERS sockets of tenant A loop replays of
# 1,000 events of 2 KB (2 MB each) from the start of a topic. Tenant A has the
# default limits (its replays are charged to its 1,000 events/s budget); B has
# room to spare. Prints both figures and their ratio, RUNS times.
#
#   loadtests/fairness.sh [RATE] [SECONDS] [SUBSCRIBERS] [STORMERS] [RUNS]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
RATE=${1:-1000}
SECONDS_=${2:-10}
SUBS=${3:-20}
STORMERS=${4:-8}
RUNS=${5:-3}
. loadtests/lib.sh
start_two_nodes fair SOCKET_EVENTS_PER_SECOND=1000000

for run in $(seq 1 "$RUNS"); do
  a=$(call POST "$A/api/v1/tenants" "$PLATFORM_KEY" '{"name":"replayer"}' | json_at '["id"]')
  b=$(call POST "$A/api/v1/tenants" "$PLATFORM_KEY" '{"name":"live","limits":{"events_per_second":1000000}}' | json_at '["id"]')
  echo "run $run:"
  $BENCH fairness "$A" "$a" "$b" "$RATE" "$SECONDS_" "$SUBS" "$STORMERS"
done
