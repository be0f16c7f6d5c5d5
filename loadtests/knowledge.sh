#!/usr/bin/env bash
# Knowledge speed on one release node (the built-in model on this machine's CPU):
#   1. ingestion: DOCS copies of the retrieval set's sixteen documents
#      (tests/knowledge/docs.md, about 300 chunks) posted at once; chunks embedded per second,
#      from the first post to the last document ready;
#   2. search at CHUNKS chunks (100,000) in one tenant: that many chunks with
#      clustered synthetic 384-dimension unit vectors and 60 words each of the
#      set's vocabulary (a few words common, most rare) written straight to
#      Postgres, then
#      - p50/p99 of the nearest-vector query through the HNSW index (the SQL the
#        server runs, under RLS in the tenant's context) and its recall@10
#        against exact search, over QUERIES (200) query vectors;
#      - p50/p99 of `POST /search` (vector, keyword and hybrid) end to end
#        over REST; vector and hybrid add embedding the query with the model.
#
#   loadtests/knowledge.sh [DOCS] [CHUNKS] [QUERIES]
set -euo pipefail
cd "$(dirname "$0")/.."
DOCS=${1:-3}
CHUNKS=${2:-100000}
QUERIES=${3:-200}
source loadtests/lib.sh

env RUST_LOG=warn HOST=127.0.0.1 PORT=18191 METRICS_ADDR=127.0.0.1:18201 NODE_ID=kb-bench "$BIN" serve &
pids+=($!)
for _ in $(seq 1 100); do curl -sf "$A/health/ready" >/dev/null && break; sleep 0.1; done

tenant=$(call POST "$A/api/v1/tenants" "$PLATFORM_KEY" \
  '{"name":"kb-bench","limits":{"http_requests_per_second":100000}}' | json_at '["id"]')
admin=$("$BIN" token --tenant "$tenant" --role admin --ttl 2h)
project=$(call POST "$A/api/v1/projects" "$admin" '{"name":"bench"}' | json_at '["id"]')

python3 loadtests/knowledge/bench.py --base "$A" --token "$admin" --tenant "$tenant" --project "$project" \
  --docs "$DOCS" --chunks "$CHUNKS" --queries "$QUERIES" --database-url "$DATABASE_URL" \
  --admin-url "$DATABASE_ADMIN_URL" --node-pid "${pids[0]}"

# The bench's tenant goes, with its documents and chunks.
curl -sf -X DELETE "$A/api/v1/tenants/$tenant" -H "authorization: Bearer $PLATFORM_KEY" >/dev/null
