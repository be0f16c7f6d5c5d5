#!/usr/bin/env bash
# Switchboard side by side with what a team would otherwise deploy: Socket.IO 4
# on Node.js scaled out with @socket.io/redis-adapter (loadtests/baseline/),
# two processes of each on the project's one Redis, driven by the same load
# generator (sb-bench, crates/testkit), every figure on fresh processes (start
# the pair, measure one thing, stop it). In each of RUNS rounds, for both
# servers in turn (which goes first alternates between rounds):
#
#   1. handshakes: HANDSHAKES (10,000) authenticated connects on node 1,
#      CONCURRENCY (32) at a time, after WARMUP (2,000) not counted, so that
#      Node's JIT has compiled the path as in a server that has been up a
#      while (`sb-bench handshakes`);
#   2. idle: the RSS growth per socket of node 2, a process that has served
#      nothing before, holding IDLE (10,000) authenticated sockets (`sb-bench idle`);
#      and the same for IDLE / 2 long-polling clients, each holding one poll
#      open (`sb-bench idle-polling`);
#   3. fan-out: one topic with SUBSCRIBERS (1,000) subscribers on node 2 and
#      ten publishing sockets on node 1, at each publish rate of RATES_FANOUT
#      (default "20 50 100" per second: 20,000 to 100,000 deliveries/s)
#      (`sb-bench latency`);
#   4. chat: 1,000 topics x 2 subscribers on node 2, eight sockets on node 1
#      publishing round robin, each publish asking for its ack, at each rate of
#      RATES_CHAT (default "5000 10000 20000 40000" per second) (`sb-bench chat`).
#
# One line per figure with both servers side by side (and the CPU time the
# pair used), then the medians over the rounds and the Switchboard/Node
# ratios: delivered/s, the share delivered of what was published (fan-out)
# or offered (chat), publish→deliver p50 and p99, handshakes/s, KiB per idle
# socket. Delivered/s counts late deliveries too (sb-bench waits until 3 s
# pass without one): a server that falls behind shows it in the p50 and p99. Switchboard runs with its defaults except SOCKET_EVENTS_PER_SECOND
# (raised, as in the other harnesses: the Node server limits no socket's
# rate) and a tenant with publish_bound.sh's high limits; SWITCHBOARD_ENV adds
# VAR=value settings to its nodes. Under more chat than it has room for,
# Switchboard refuses publishes (`rate_limited`, NODE_PUBLISHES_IN_FLIGHT)
# where Node queues them: read the share with the p99. Sockets come from
# SB_SOURCE_ADDRESSES loopback addresses (lib.sh). Logs and the raw sb-bench
# lines go to .data/versus_node/<time>/.
#
#   loadtests/versus_node.sh [SECONDS] [RUNS]     (defaults 5 and 3)
#
# The default takes about 11 minutes: a round is 20 figures, most of them
# SECONDS plus 5 to 10 s of connecting, subscribing and draining. Needs
# Node.js 18 or newer; `npm ci` in loadtests/ on first use. Exits non-zero
# when a figure could not be measured (it goes on with the others and says
# which).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
SECONDS_=${1:-5}
RUNS=${2:-3}
read -r -a FANOUT_RATES <<<"${RATES_FANOUT:-20 50 100}"
read -r -a CHAT_RATES <<<"${RATES_CHAT:-5000 10000 20000 40000}"
SUBSCRIBERS=${SUBSCRIBERS:-1000}
TOPICS=1000
PER_TOPIC=2
HANDSHAKES=${HANDSHAKES:-10000}
CONCURRENCY=${CONCURRENCY:-32}
WARMUP=${WARMUP:-2000}
IDLE=${IDLE:-10000}
NA=http://127.0.0.1:18291
NB=http://127.0.0.1:18292

fail() {
  echo "versus_node: $*" >&2
  exit 1
}

command -v node >/dev/null || fail "Node.js 18 or newer is required"
[ "$(node -p 'process.versions.node.split(".")[0]')" -ge 18 ] || fail "Node.js 18 or newer is required (found $(node --version))"
if [ ! -d loadtests/node_modules ] || [ loadtests/package-lock.json -nt loadtests/node_modules ]; then
  (cd loadtests && npm ci --no-audit --no-fund --loglevel=error) || fail "npm ci in loadtests/ failed"
fi
# PORT...: fails when something already listens there (it would be measured instead).
ports_free() {
  local port
  for port in "$@"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      fail "127.0.0.1:$port is already in use (another harness running?)"
    fi
  done
}
ports_free 18191 18192 18201 18202 18291 18292

. loadtests/lib.sh

OUT="$ROOT/.data/versus_node/$(date +%Y%m%d-%H%M%S)"
mkdir -p "$OUT"
RAW="$OUT/figures.tsv"
: >"$RAW"
failures=()
tenant=""

alive() {
  local state
  state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
  [ -n "$state" ] && [ "$state" != Z ]
}

# Stops every server started (SIGTERM, then SIGKILL after 10 s) and reaps it.
stop_servers() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do
    for _ in $(seq 1 100); do alive "$p" || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  pids=()
}
trap 'stop_servers' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# URL PID NAME: fails unless the server answers and its process is the one started.
check_up() {
  local url=$1 pid=$2 name=$3
  alive "$pid" || fail "$name exited at start; see $OUT/$4"
  curl -sf -o /dev/null "$url" || fail "$name is not ready at $url; see $OUT/$4"
}

start_switchboard() {
  ports_free 18191 18192 18201 18202
  start_two_nodes versus SOCKET_EVENTS_PER_SECOND=1000000 ${SWITCHBOARD_ENV:-} >>"$OUT/switchboard.log" 2>&1
  check_up "$A/health/ready" "${pids[0]}" "Switchboard node 1" switchboard.log
  check_up "$B/health/ready" "${pids[1]}" "Switchboard node 2" switchboard.log
  local limits='{"max_connections":1000000,"events_per_second":1000000,"max_topics_per_socket":1000}'
  tenant=$(call POST "$A/api/v1/tenants" "$PLATFORM_KEY" "{\"name\":\"versus-node\",\"limits\":$limits}" | json_at '["id"]') ||
    fail "could not create a tenant on Switchboard node 1"
}

start_node() {
  local n port
  ports_free 18291 18292
  for n in 1 2; do
    port=$((18290 + n))
    echo "== $(date +%T) PORT=$port" >>"$OUT/node-$n.log"
    env HOST=127.0.0.1 PORT=$port node loadtests/baseline/server.mjs >>"$OUT/node-$n.log" 2>&1 &
    pids+=($!)
  done
  for port in 18291 18292; do
    for _ in $(seq 1 100); do curl -sf -o /dev/null "http://127.0.0.1:$port/health" && break; sleep 0.1; done
  done
  check_up "$NA/health" "${pids[0]}" "Node.js server 1" node-1.log
  check_up "$NB/health" "${pids[1]}" "Node.js server 2" node-2.log
  # The Node server scopes rooms to the token's tenant and checks nothing more.
  tenant=$(cat /proc/sys/kernel/random/uuid)
}

# CPU time of the running servers, in clock ticks.
servers_cpu() {
  local p total=0
  for p in "${pids[@]}"; do total=$((total + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0))); done
  echo "$total"
}

# measure RUN SERVER LOAD RATE: one figure on a fresh pair; appends a line to $RAW.
measure() {
  local run=$1 server=$2 load=$3 rate=$4 pub sub limit out status=ok cpu0 cpu1 args
  if [ "$server" = switchboard ]; then
    start_switchboard
    pub=$A sub=$B
  else
    start_node
    pub=$NA sub=$NB
  fi
  case $load in
    handshakes) args=(handshakes "$pub" "$tenant" "$HANDSHAKES" "$CONCURRENCY") limit=180 ;;
    idle) args=(idle "$sub" "$tenant" "$IDLE" "${pids[1]}") limit=300 ;;
    idle-polling) args=(idle-polling "$sub" "$tenant" "$((IDLE / 2))" "${pids[1]}") limit=300 ;;
    fanout) args=(latency "$pub" "$sub" "$tenant" "$rate" "$SECONDS_" "$SUBSCRIBERS") limit=$((SECONDS_ + 180)) ;;
    chat) args=(chat "$pub" "$sub" "$tenant" "$TOPICS" "$PER_TOPIC" "$rate" "$SECONDS_") limit=$((SECONDS_ + 180)) ;;
  esac
  if [ "$load" = handshakes ] && [ "$WARMUP" -gt 0 ]; then
    echo "== $(date +%T) run $run $server warm-up" >>"$OUT/sb-bench.log"
    timeout -k 5 120 "$BENCH" handshakes "$pub" "$tenant" "$WARMUP" "$CONCURRENCY" >>"$OUT/sb-bench.log" 2>&1 || true
  fi
  cpu0=$(servers_cpu)
  echo "== $(date +%T) run $run $server ${args[*]}" >>"$OUT/sb-bench.log"
  if out=$(timeout -k 5 "$limit" "$BENCH" "${args[@]}" 2>>"$OUT/sb-bench.log"); then
    alive "${pids[0]}" && alive "${pids[1]}" || status="crashed"
  else
    status="sb-bench failed (exit $?)"
  fi
  cpu1=$(servers_cpu)
  echo "$out" >>"$OUT/sb-bench.log"
  stop_servers
  if [ "$status" = crashed ]; then
    # An outcome of the load, not a failure of the harness.
    echo "versus_node: run $run, $server, $load ${rate}: a server exited during the run; see its log in $OUT" >&2
  elif [ "$status" != ok ]; then
    echo "versus_node: run $run, $server, $load ${rate}: $status; see $OUT/sb-bench.log" >&2
    failures+=("run $run $server $load $rate")
  fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$run" "$server" "$load" "$rate" "$status" "$((cpu1 - cpu0))" \
    "$(grep -v '^latency parts:' <<<"$out" | tail -n 1)" >>"$RAW"
}

REPORT=$(
  cat <<'PY'
import os, re, statistics, sys

mode, raw = sys.argv[1], sys.argv[2]
seconds, per_topic = int(os.environ["SECONDS_"]), int(os.environ["PER_TOPIC"])
tick = os.sysconf("SC_CLK_TCK")
NUM = r"([\d.]+)"
PATTERNS = {
    "fanout": rf"delivered (\d+)/(\d+), p50 {NUM} ms, p99 {NUM} ms",
    "chat": rf"\(sent in {NUM} s\): accepted (\d+) \((\d+)/s\), refused (\d+), unanswered (\d+); "
    rf"delivered (\d+)/(\d+) of the accepted \({NUM}%\), p50 {NUM} ms, p99 {NUM} ms",
    "handshakes": r"= (\d+)/s at concurrency \d+, (\d+) refused or failed",
    "idle": rf"server RSS (\d+) KiB -> (\d+) KiB = {NUM} KiB per socket",
    "idle-polling": rf"server RSS (\d+) KiB -> (\d+) KiB = {NUM} KiB per client",
}


def figures(load, rate, status, cpu, line):
    """The figure's values (None when it was not measured)."""
    m = re.search(PATTERNS[load], line) if status == "ok" else None
    if not m:
        return None
    g = [float(x) for x in m.groups()]
    f = {"cpu": int(cpu) / tick}
    if load == "fanout":
        f.update(rate=g[0] / seconds, share=100 * g[0] / max(g[1], 1), p50=g[2], p99=g[3])
    elif load == "chat":
        offered = rate * seconds * per_topic
        f.update(rate=g[5] / g[0], share=100 * g[5] / offered, p50=g[8], p99=g[9],
                 accepted=g[2], refused=g[3], unanswered=g[4])
    elif load == "handshakes":
        f.update(rate=g[0], failed=g[1])
    else:
        f.update(kib=g[2], before=g[0], after=g[1])
    return f


rows = {}
for row in open(raw):
    run, server, load, rate, status, cpu, line = row.rstrip("\n").split("\t", 6)
    rows.setdefault((load, int(rate)), {}).setdefault(server, []).append(
        (int(run), figures(load, int(rate), status, cpu, line), status))

NAMES = {"switchboard": "Switchboard", "node": "Node"}


def title(load, rate):
    subs = os.environ["SUBSCRIBERS"]
    return {
        "fanout": f"fan-out {rate}/s x {subs}",
        "chat": f"chat {rate}/s",
        "handshakes": "handshakes",
        "idle": f"idle {os.environ['IDLE']}",
        "idle-polling": f"idle polling {int(os.environ['IDLE']) // 2}",
    }[load]


def show(load, f, status="ok"):
    if f is None:
        return "crashed during the run" if status == "crashed" else "not measured"
    if load == "handshakes":
        return f"{f['rate']:7.0f}/s, {f['failed']:.0f} failed, cpu {f['cpu']:.1f} s"
    if load in ("idle", "idle-polling"):
        return f"{f['kib']:6.2f} KiB/socket (RSS {f['before'] / 1024:.0f} -> {f['after'] / 1024:.0f} MiB)"
    text = f"{f['rate']:7.0f} deliveries/s {f['share']:5.1f}%, p50 {f['p50']:7.2f} ms, p99 {f['p99']:8.2f} ms"
    if load == "chat":
        text += f" (refused {f['refused']:.0f}, unanswered {f['unanswered']:.0f})"
    return text + f", cpu {f['cpu']:.1f} s"


if mode == "line":
    run, load, rate = int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
    got = rows[(load, rate)]
    parts = []
    for server in ("switchboard", "node"):
        f, status = next(((f, st) for r, f, st in got.get(server, []) if r == run), (None, "ok"))
        parts.append(f"{NAMES[server]}: {show(load, f, status)}")
    print(f"run {run}  {title(load, rate):<20} " + "  |  ".join(parts), flush=True)
    sys.exit(0)


def med(server_rows, key):
    vals = [f[key] for _, f, _ in server_rows if f is not None]
    return statistics.median(vals) if vals else None


def cell(v, fmt, unit=""):
    return "n/a" if v is None else format(v, fmt) + unit


def ratio(a, b):
    return "n/a" if a is None or b is None or b == 0 else f"{a / b:.2f}x"


runs = max((r for v in rows.values() for rs in v.values() for r, _, _ in rs), default=0)
print(f"\nmedians of {runs} run(s), {seconds} s of load each; Switchboard/Node: above 1 means more for "
      "Switchboard (better for delivered/s and handshakes/s, worse for latency and KiB); "
      "delivered/s counts late deliveries too")
order = {"handshakes": 0, "idle": 1, "idle-polling": 2, "fanout": 3, "chat": 4}
print(f"{'':<22}   {'Switchboard':^46}   {'Node.js + redis-adapter':^46}   Switchboard/Node")
print(f"{'figure':<22}   " + "   ".join(
    [f"{'delivered/s':>12}{'share':>8}{'p50 ms':>9}{'p99 ms':>10}{'cpu s':>7}"] * 2)
      + f"   {'deliv/s':>8}{'p50':>7}{'p99':>7}")
for (load, rate) in sorted(rows, key=lambda k: (order[k[0]], k[1])):
    got = rows[(load, rate)]
    sb, nd = got.get("switchboard", []), got.get("node", [])
    if load in ("fanout", "chat"):
        cols = []
        for s in (sb, nd):
            cols.append(f"{cell(med(s, 'rate'), '12.0f'):>12}{cell(med(s, 'share'), '.1f', '%'):>8}"
                        f"{cell(med(s, 'p50'), '9.2f'):>9}{cell(med(s, 'p99'), '10.2f'):>10}"
                        f"{cell(med(s, 'cpu'), '7.1f'):>7}")
        print(f"{title(load, rate):<22}   " + "   ".join(cols) +
              f"   {ratio(med(sb, 'rate'), med(nd, 'rate')):>8}{ratio(med(sb, 'p50'), med(nd, 'p50')):>7}"
              f"{ratio(med(sb, 'p99'), med(nd, 'p99')):>7}")
        for server, s in (("switchboard", sb), ("node", nd)):
            crashed = sum(1 for _, _, st in s if st == "crashed")
            if crashed:
                print(f"{'':<22}   ({NAMES[server]} crashed in {crashed} of {len(s)} runs: medians of the others)")
    elif load == "handshakes":
        a, b = med(sb, "rate"), med(nd, "rate")
        print(f"{'handshakes/s':<22}   {cell(a, '12.0f'):>12}{'':34}   {cell(b, '12.0f'):>12}{'':34}   {ratio(a, b):>8}")
    else:
        a, b = med(sb, "kib"), med(nd, "kib")
        label = "KiB per idle socket" if load == "idle" else "KiB per polling client"
        print(f"{label:<22}   {cell(a, '12.2f'):>12}{'':34}   {cell(b, '12.2f'):>12}{'':34}   {ratio(a, b):>8}")
PY
)
export SECONDS_ PER_TOPIC SUBSCRIBERS IDLE

# figure RUN LOAD RATE: both servers, the order alternating between rounds, then their line.
figure() {
  local run=$1 load=$2 rate=$3 server
  local order=(switchboard node)
  [ $((run % 2)) -eq 1 ] || order=(node switchboard)
  for server in "${order[@]}"; do measure "$run" "$server" "$load" "$rate"; done
  python3 -c "$REPORT" line "$RAW" "$run" "$load" "$rate"
}

echo "versus_node: $RUNS run(s) of ${SECONDS_} s loads; fan-out ${FANOUT_RATES[*]}/s to $SUBSCRIBERS, chat ${CHAT_RATES[*]}/s; logs in $OUT"
started=$(date +%s)
for run in $(seq 1 "$RUNS"); do
  figure "$run" handshakes 0
  figure "$run" idle 0
  figure "$run" idle-polling 0
  for rate in "${FANOUT_RATES[@]}"; do figure "$run" fanout "$rate"; done
  for rate in "${CHAT_RATES[@]}"; do figure "$run" chat "$rate"; done
done
python3 -c "$REPORT" summary "$RAW"
echo "versus_node: done in $(($(date +%s) - started)) s"
if [ ${#failures[@]} -gt 0 ]; then
  printf 'versus_node: not measured: %s\n' "${failures[@]}" >&2
  exit 1
fi
