#!/usr/bin/env bash
# What tracing costs fan-out, side by side in one run: two release nodes on
# one Redis (fresh processes each time), SUBSCRIBERS sockets of one topic on
# the second node, ten publishing sockets on the first at RATE events/s, with
# traces off (no endpoint), sampled at 1% and at 100%
# (parentbased_traceidratio), exporting to an OTLP/HTTP receiver on loopback
# that takes every export and counts it. RUNS rounds, each off, 1%, 100%.
# Prints deliveries, publish→deliver p50/p99 and the CPU time both nodes spent
# during the run (what limits fan-out throughput on a busy node), per run, and
# what the receiver got.
#
#   loadtests/tracing_overhead.sh [RATE] [SECONDS] [SUBSCRIBERS] [RUNS]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
RATE=${1:-2000}
SECONDS_=${2:-10}
SUBSCRIBERS=${3:-50}
RUNS=${4:-3}
. loadtests/lib.sh
OTLP_PORT=18230

# The receiver: OTLP/HTTP's POST /v1/traces, answered 200 after reading the
# whole body; counts exports and bytes, printed on SIGTERM.
python3 - "$OTLP_PORT" <<'PY' &
import signal, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
stats = {"exports": 0, "bytes": 0}
class Sink(BaseHTTPRequestHandler):
    def do_POST(self):
        n = int(self.headers.get("content-length", 0))
        self.rfile.read(n)
        stats["exports"] += 1
        stats["bytes"] += n
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()
    def log_message(self, *a):
        pass
server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Sink)
def report(*_):
    print(f"otlp receiver: {stats['exports']} exports, {stats['bytes']} bytes", flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, report)
server.serve_forever()
PY
pids+=($!)
receiver=$!

# CPU seconds (user + system) the nodes have used so far.
node_cpu() {
  local p total=0 ticks
  ticks=$(getconf CLK_TCK)
  for p in "${pids[@]}"; do
    [ "$p" = "$receiver" ] && continue
    total=$((total + $(awk '{print $14 + $15}' "/proc/$p/stat")))
  done
  awk -v t="$total" -v h="$ticks" 'BEGIN { printf "%.2f", t / h }'
}

stop_nodes() {
  for p in "${pids[@]}"; do [ "$p" = "$receiver" ] || kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do [ "$p" = "$receiver" ] || wait "$p" 2>/dev/null || true; done
  pids=("$receiver")
}

limits='{"max_connections":1000000,"events_per_second":1000000}'
for run in $(seq 1 "$RUNS"); do
  for mode in off 0.01 1; do
    if [ "$mode" = off ]; then
      start_two_nodes "trace-$mode" SOCKET_EVENTS_PER_SECOND=1000000
    else
      start_two_nodes "trace-$mode" SOCKET_EVENTS_PER_SECOND=1000000 \
        OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$OTLP_PORT" \
        OTEL_TRACES_SAMPLER=parentbased_traceidratio OTEL_TRACES_SAMPLER_ARG="$mode"
    fi
    tenant=$(call POST "$A/api/v1/tenants" "$PLATFORM_KEY" "{\"name\":\"tracing\",\"limits\":$limits}" | json_at '["id"]')
    before=$(node_cpu)
    printf 'run %s, traces %-5s ' "$run" "$mode:"
    out=$($BENCH latency "$A" "$B" "$tenant" "$RATE" "$SECONDS_" "$SUBSCRIBERS")
    after=$(node_cpu)
    echo "$out, nodes' CPU $(awk -v a="$after" -v b="$before" 'BEGIN { printf "%.2f", a - b }') s"
    stop_nodes
  done
done
kill -TERM "$receiver"
wait "$receiver" 2>/dev/null || true
