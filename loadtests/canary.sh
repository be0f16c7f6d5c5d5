#!/usr/bin/env bash
# Canary releases on the local cluster (scripts/cluster), under client traffic
# through HAProxy (loadtests/drivers/canary-traffic.mjs):
#
#   good    a canary with a new configuration (CANARY_ENV, default
#           SOCKET_EVENTS_PER_SECOND=150) or a new binary (CANARY_BIN) takes
#           WEIGHT against two stable nodes of weight 100; scripts/canary-analysis
#           compares it with them from their metrics and promotes it: every
#           stable node is restarted onto the canary's binary and settings.
#   broken  the same with a canary broken on purpose: a wrong JWT_SECRET, so
#           it refuses every handshake and every authenticated request. The
#           analysis rolls it back (weight 0 at once, then it drains); the
#           clients it refused stay within its weight's share.
#
#   loadtests/canary.sh [good|broken|both]     (default both: broken, then good)
#
# WEIGHT (default 10), STEPS and INTERVAL (analysis: 8 steps of 2 s) come from
# the environment. Non-zero when a verdict is not the expected one, when the
# broken canary affected more than its share, or when the good one affected
# anyone. Stops the cluster it started.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
SCENARIOS=${1:-both}
WEIGHT=${WEIGHT:-10}
STEPS=${STEPS:-8}
INTERVAL=${INTERVAL:-2}
BASE=${SB_CLUSTER_PORT:-18180}
OUT="$ROOT/.data/canary"

command -v node >/dev/null || { echo "canary: Node.js 18 or newer is required" >&2; exit 1; }
if [ ! -d loadtests/node_modules ] || [ loadtests/package-lock.json -nt loadtests/node_modules ]; then
  (cd loadtests && npm ci --no-audit --no-fund --loglevel=error)
fi
mkdir -p "$OUT"

TRAFFIC=""
stop_all() {
  if [ -n "$TRAFFIC" ] && kill -0 "$TRAFFIC" 2>/dev/null; then kill "$TRAFFIC" 2>/dev/null || true; fi
  scripts/cluster stop
}
scripts/cluster start 2
trap stop_all EXIT
eval "$(scripts/cluster env)"
now_ms() { date +%s%3N; }

# The analysis times an authenticated read on each node, as a tenant's member.
probe_tenant=$(curl -sf -X POST "$SB_LB_URL/api/v1/tenants" -H "authorization: Bearer $PLATFORM_KEY" \
  -H 'content-type: application/json' -d '{"name":"canary-probe","limits":{"http_requests_per_second":100000}}' |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')
probe_token=$(node -e 'import("./loadtests/drivers/common.mjs").then((m) => console.log(m.userToken(process.argv[1], process.argv[2])))' \
  "$JWT_SECRET" "$probe_tenant")

# /metrics on the node's own metrics port when it has one, else on its HTTP port.
metrics_url() {
  local port=$1
  if curl -sf -o /dev/null "http://127.0.0.1:$((port + 10))/metrics"; then
    echo "http://127.0.0.1:$((port + 10))/metrics"
  else
    echo "http://127.0.0.1:$port/metrics"
  fi
}

failures=0
# scenario NAME EXPECTED_VERDICT VAR=value...: one canary from start to verdict.
scenario() {
  local name=$1 expected=$2 verdict window="$OUT/$1.window" log="$OUT/$1.traffic"
  shift 2
  echo
  echo "== canary: $name (expect $expected) =="
  : >"$window"
  LB_URL=$SB_LB_URL WINDOW_FILE=$window node loadtests/drivers/canary-traffic.mjs >"$log" &
  TRAFFIC=$!
  for _ in $(seq 1 100); do grep -q '^ready' "$log" 2>/dev/null && break; sleep 0.1; done
  sleep 2

  if [ -n "${CANARY_BIN:-}" ]; then
    SWITCHBOARD_BIN=$CANARY_BIN scripts/cluster start-node canary "$@"
  else
    scripts/cluster start-node canary "$@"
  fi
  scripts/cluster lb "set weight nodes/canary $WEIGHT" >/dev/null
  echo "start $(now_ms)" >>"$window"
  echo "canary weight $WEIGHT against 2 x 100: $(python3 -c "print(f'{$WEIGHT / ($WEIGHT + 200):.1%}')") of new connections"

  set +e
  scripts/canary-analysis --canary "http://127.0.0.1:$((BASE + 9))" \
    --canary-metrics "$(metrics_url $((BASE + 9)))" \
    --stable "http://127.0.0.1:$((BASE + 1))" "http://127.0.0.1:$((BASE + 2))" \
    --stable-metrics "$(metrics_url $((BASE + 1)))" "$(metrics_url $((BASE + 2)))" \
    --steps "$STEPS" --interval "$INTERVAL" --probe-path "/api/v1/projects?limit=1" --probe-token "$probe_token" |
    tee "$OUT/$name.analysis"
  set -e
  verdict=$(sed -n 's/^verdict: \([a-z]*\).*/\1/p' "$OUT/$name.analysis")
  if [ "$verdict" = rollback ]; then
    scripts/cluster lb "set weight nodes/canary 0" >/dev/null
    echo "end $(now_ms)" >>"$window"
    scripts/cluster rollback
  else
    scripts/cluster promote
    echo "end $(now_ms)" >>"$window"
  fi
  sleep 2
  kill -TERM "$TRAFFIC"
  wait "$TRAFFIC" || true
  TRAFFIC=""
  sed -n '/^$/,$p' "$log" | grep -v '^canary-traffic '

  python3 - "$name" "$expected" "$verdict" "$WEIGHT" "$log" <<'PY' || failures=$((failures + 1))
import json, sys
name, expected, verdict, weight, log = sys.argv[1:]
report = next(json.loads(l.split(" ", 1)[1]) for l in open(log) if l.startswith("canary-traffic "))
share = int(weight) / (int(weight) + 200)
problems = []
if verdict != expected:
    problems.append(f"verdict {verdict or 'none'}, expected {expected}")
during = report["clients_during_window"]
affected = report["affected_during_window"]
if name == "broken":
    # Round robin gives the canary its share of new connections; allow one
    # client of rounding.
    if affected > share * during + 1:
        problems.append(f"{affected} of {during} clients affected, more than the weight's share ({share:.1%})")
else:
    if affected or report["rest_failed_during_window"]:
        problems.append(f"a good canary affected {affected} clients and failed {report['rest_failed_during_window']} requests")
if report["affected_outside_window"] or report["rest_failed_outside_window"]:
    problems.append("clients were affected while the canary had no weight")
if report["never_connected"]:
    problems.append(f"{report['never_connected']} clients never connected")
print(f"  result                  {'; '.join(problems) if problems else 'as expected'} "
      f"(weight share {share:.1%}, affected {affected / during if during else 0:.1%})")
sys.exit(1 if problems else 0)
PY
}

case "$SCENARIOS" in
  broken | both) scenario broken rollback JWT_SECRET=a-wrong-secret-for-this-cluster-0123456789 ;;
esac
case "$SCENARIOS" in
  good | both) scenario good promote "${CANARY_ENV:-SOCKET_EVENTS_PER_SECOND=150}" ;;
esac
[ "$failures" = 0 ] || { echo "canary: $failures scenario(s) did not go as expected" >&2; exit 1; }
echo
echo "canary: every scenario went as expected"
