#!/usr/bin/env bash
# Where one topic's fan-out latency goes. Two release nodes on one Redis,
# fresh for every figure: ten publishing sockets on node A at RATE events/s
# (20) for SECONDS (10), SUBSCRIBERS sockets on node B, for each count in
# COUNTS (1 10 100 1000), RUNS rounds (3). For each figure: publish→deliver
# p50/p99 as the subscribers see it, and its parts: how long an event took to
# reach its first subscriber (the bus: node A, Redis, node B, one socket),
# how long from its first to its last subscriber (node B writing it to every
# socket and the one load-generating process reading it from every socket,
# on the same cores), and node B's own figure from its metrics: from node A
# accepting the event to node B having queued it for all its subscribers
# (`switchboard_publish_to_write_seconds`, p50 read from the histogram's
# buckets, so as coarse as they are).
#
#   loadtests/fanout_parts.sh [RATE] [SECONDS] [RUNS] [COUNT ...]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
RATE=${1:-20}
SECONDS_=${2:-10}
RUNS=${3:-3}
shift 3 2>/dev/null || shift $#
COUNTS=("$@")
[ ${#COUNTS[@]} -gt 0 ] || COUNTS=(1 10 100 1000)
. loadtests/lib.sh

# The p50 of the publish_to_write histogram between two scrapes (files).
histogram_p50() {
  python3 - "$1" "$2" <<'PY'
import re, sys
def buckets(path):
    out = {}
    for line in open(path):
        m = re.match(r'switchboard_publish_to_write_seconds_bucket\{(?:[^}]*,)?le="([^"]+)"[^}]*\} (\S+)', line)
        if m:
            out[float(m.group(1))] = float(m.group(2))
    return out
a, b = buckets(sys.argv[1]), buckets(sys.argv[2])
les = sorted(b)
counts = [b[le] - a.get(le, 0.0) for le in les]
total = counts[-1] if counts else 0
if total <= 0:
    print("n/a")
    sys.exit()
half, prev_le, prev_c = total / 2, 0.0, 0.0
for le, c in zip(les, counts):
    if c >= half:
        if le == float("inf"):
            print(f">{prev_le * 1000:.2f} ms")
        else:
            print(f"{(prev_le + (le - prev_le) * (half - prev_c) / max(c - prev_c, 1e-9)) * 1000:.2f} ms")
        break
    prev_le, prev_c = le, c
PY
}

limits='{"max_connections":1000000,"events_per_second":1000000}'
scrape=$(mktemp -d)
trap 'rm -rf "$scrape"; for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null || true' EXIT
for run in $(seq 1 "$RUNS"); do
  for count in "${COUNTS[@]}"; do
    start_two_nodes "parts" SOCKET_EVENTS_PER_SECOND=1000000
    tenant=$(call POST "$A/api/v1/tenants" "$PLATFORM_KEY" "{\"name\":\"fanout-parts\",\"limits\":$limits}" | json_at '["id"]')
    curl -sf "$MB" >"$scrape/before"
    out=$($BENCH latency "$A" "$B" "$tenant" "$RATE" "$SECONDS_" "$count")
    curl -sf "$MB" >"$scrape/after"
    printf 'run %s, %4s subscribers: %s\n' "$run" "$count" "$(echo "$out" | sed -n 's/^latency: //p')"
    printf '                        %s; node B queued it for all of them p50 %s\n' \
      "$(echo "$out" | sed -n 's/^latency parts: //p')" "$(histogram_p50 "$scrape/before" "$scrape/after")"
    stop_nodes
  done
done
