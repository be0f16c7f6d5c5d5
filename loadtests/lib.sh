# Shared by the realtime harnesses (source it): starts the services if needed,
# builds the release `switchboard` and `sb-bench`, migrates, and gives
# `start_two_nodes NAME [VAR=value ...]`, which serves two nodes on one Redis at
# $A and $B (ports 18191 and 18192, /metrics at $MA and $MB on 18201 and 18202;
# `serve_node` and `wait_ready` start more)
# and stops them by pid when the script exits (or at `stop_nodes`),
# and `call METHOD URL TOKEN BODY`. Tokens are signed with
# switchboard-testkit's JWT_SECRET, the one sb-bench signs with; tenants are
# created with $PLATFORM_KEY.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
scripts/services start >/dev/null
eval "$(scripts/services env)"
export JWT_SECRET=switchboard-test-secret-0123456789
# Clients come from many loopback addresses, as many clients would: nodes limit
# new sessions per client address (sb-bench reads this).
export SB_SOURCE_ADDRESSES=${SB_SOURCE_ADDRESSES:-200}
# The operator's credential for the platform routes (creating tenants).
export PLATFORM_KEY=loadtest-platform-key-0123456789abcdef0123
cargo build -q --release -p switchboard -p switchboard-testkit --bin switchboard --bin sb-bench
BIN=./target/release/switchboard
BENCH=./target/release/sb-bench
RUST_LOG=warn $BIN migrate
A=http://127.0.0.1:18191
B=http://127.0.0.1:18192
MA=http://127.0.0.1:18201/metrics
MB=http://127.0.0.1:18202/metrics

pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null || true' EXIT

start_two_nodes() {
  local name=$1
  shift
  serve_node "$name" 1 "$@"
  serve_node "$name" 2 "$@"
  wait_ready 1
  wait_ready 2
}

# NAME N [VAR=value ...]: serves node N (port 18190+N, /metrics on 18200+N),
# its pid last in `pids`; `wait_ready N` waits until it answers.
serve_node() {
  local name=$1 n=$2
  shift 2
  env RUST_LOG=warn HOST=127.0.0.1 PORT=$((18190 + n)) METRICS_ADDR=127.0.0.1:$((18200 + n)) NODE_ID="$name-$n" DRAIN_SECONDS=1 "$@" $BIN serve &
  pids+=($!)
}
wait_ready() {
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$((18190 + $1))/health/ready" >/dev/null && break; sleep 0.1; done
}

# Stops every node started so far (by pid) and forgets them, for harnesses
# that want fresh nodes for each figure.
stop_nodes() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  pids=()
}

# METHOD URL TOKEN BODY: the JSON answer, or a failure.
call() {
  curl -sf -X "$1" "$2" -H "authorization: Bearer $3" -H 'content-type: application/json' -d "$4"
}

# The value at PATH (Python subscript, e.g. '["id"]') of the JSON on stdin.
json_at() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }
