"""The knowledge bench's driver (see loadtests/knowledge.sh): REST through
urllib, SQL through psql in the tenant's context (RLS on), figures on stdout."""
import argparse
import json
import math
import os
import random
import re
import statistics
import subprocess
import time
import urllib.request

p = argparse.ArgumentParser()
for name in ("base", "token", "tenant", "project", "database-url", "admin-url", "node-pid"):
    p.add_argument("--" + name, required=True)
for name in ("docs", "chunks", "queries"):
    p.add_argument("--" + name, type=int, required=True)
args = p.parse_args()
DOCS_MD = open(os.path.join(os.path.dirname(__file__), "..", "..", "tests", "knowledge", "docs.md")).read()
QUERIES = json.load(open(os.path.join(os.path.dirname(__file__), "..", "..", "tests", "knowledge", "queries.json")))["queries"]


def call(method, path, body=None):
    req = urllib.request.Request(args.base + path, method=method,
                                 headers={"authorization": "Bearer " + args.token, "content-type": "application/json"},
                                 data=None if body is None else json.dumps(body).encode())
    with urllib.request.urlopen(req, timeout=60) as res:
        return json.loads(res.read() or b"null")


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(math.ceil(q * len(xs))) - 1)]


def psql(sql):
    ctx = f"BEGIN; SET LOCAL app.tenant_id = '{args.tenant}'; SET LOCAL app.role = 'service';\n"
    out = subprocess.run(["psql", args.database_url, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"],
                         input=ctx + sql + "\nCOMMIT;\n", capture_output=True, text=True, check=True)
    return out.stdout


# 1. Ingestion.
blocks = [b for b in DOCS_MD.split("<!-- doc: ") if b.strip()]
cpu0, t0 = cpu_seconds(args.node_pid), time.time()
ids = []
for copy in range(args.docs):
    for block in blocks:
        title, body = block.split(" -->", 1)
        doc = call("POST", f"/api/v1/projects/{args.project}/documents",
                   {"title": f"{title} ({copy})", "content": body.strip(), "content_type": "text/markdown"})
        ids.append(doc["id"])
chunks = 0
for doc_id in ids:
    while True:
        d = call("GET", f"/api/v1/documents/{doc_id}")
        if d["status"] == "ready":
            chunks += d["chunk_count"]
            break
        if d["status"] == "failed":
            raise SystemExit(f"ingestion failed: {d}")
        time.sleep(0.05)
elapsed, cpu = time.time() - t0, cpu_seconds(args.node_pid) - cpu0
print(f"ingestion: {len(ids)} documents, {chunks} chunks in {elapsed:.1f} s: {chunks / elapsed:.1f} chunks/s "
      f"({cpu:.1f} CPU seconds on the node, {cpu / chunks * 1000:.1f} ms of CPU per chunk)")

# 2. A large corpus: CHUNKS chunks with clustered unit vectors (200 centres,
# each chunk a centre plus noise), under one document. Their text is 60 words
# of the retrieval set's vocabulary, drawn so that a few words are everywhere
# and most are rare (a word's rank r comes up about as often as 1/r), as in
# real prose: a query's common words then match tens of thousands of chunks,
# which is what the full-text leg of a search pays for.
big = call("POST", f"/api/v1/projects/{args.project}/documents",
           {"title": "corpus", "content": "synthetic corpus for the search bench"})
while call("GET", f"/api/v1/documents/{big['id']}")["status"] != "ready":
    time.sleep(0.1)
words = {}
for w in re.findall(r"[a-z]{3,}", DOCS_MD.lower()):
    words[w] = words.get(w, 0) + 1
vocabulary = sorted(words, key=lambda w: -words[w])
t0 = time.time()
psql(f"""
DELETE FROM chunks WHERE document_id = '{big['id']}';
-- `0 * c` ties each centre's subquery to its row, so each gets its own random vector.
CREATE TEMP TABLE centres AS
  SELECT c, ARRAY(SELECT random() * 2 - 1 + 0 * c FROM generate_series(1, 384)) AS v FROM generate_series(0, 199) c;
CREATE TEMP TABLE vocabulary (i serial PRIMARY KEY, w text NOT NULL);
INSERT INTO vocabulary (w) SELECT unnest(ARRAY[{",".join("'" + w + "'" for w in vocabulary)}]);
-- Each chunk's 60 words, drawn at once and joined to the vocabulary (a word
-- of rank r, 1-based, comes up about as often as 1/r).
CREATE TEMP TABLE texts AS
  SELECT n, string_agg(v.w, ' ') AS content
    FROM (SELECT n, least(floor(power({len(vocabulary)}, random()))::int, {len(vocabulary)}) AS i
            FROM generate_series(1, {args.chunks}) n, generate_series(1, 60) k) r
    JOIN vocabulary v USING (i)
   GROUP BY n;
INSERT INTO chunks (tenant_id, project_id, document_id, position, heading, content, token_count, embedding, model, dims)
SELECT '{args.tenant}', '{args.project}', '{big['id']}', g.n, '', t.content, 80,
       (SELECT array_agg(x / norm ORDER BY i)::vector
          FROM (SELECT x, i, sqrt(sum(x * x) OVER ()) AS norm FROM unnest(raw) WITH ORDINALITY AS u(x, i)) s),
       'all-MiniLM-L6-v2', 384
  FROM (SELECT n, (SELECT array_agg(cv + (random() * 2 - 1) * 0.6 ORDER BY i)
                     FROM unnest((SELECT v FROM centres WHERE c = n % 200)) WITH ORDINALITY AS u(cv, i)) AS raw
          FROM generate_series(1, {args.chunks}) n) g
  JOIN texts t USING (n);
""")
# Fresh statistics, as autovacuum would give them a little later (ANALYZE
# needs the tables' owner).
subprocess.run(["psql", args.admin_url, "-X", "-q", "-c", "ANALYZE chunks; ANALYZE documents;"], check=True)
print(f"corpus: {args.chunks} chunks written and indexed (HNSW) in {time.time() - t0:.0f} s")

# Query vectors: near random corpus chunks (a perturbed copy of one), as a real
# query lands near the chunks that answer it.
rows = psql(f"SELECT embedding::text FROM chunks WHERE document_id = '{big['id']}' ORDER BY random() LIMIT {args.queries};")
queries = []
for line in rows.strip().splitlines():
    v = [float(x) + random.uniform(-0.02, 0.02) for x in line.strip("[]").split(",")]
    n = math.sqrt(sum(x * x for x in v))
    queries.append("[" + ",".join(f"{x / n:.6f}" for x in v) + "]")

NEAREST = """EXPLAIN (ANALYZE, FORMAT JSON) SELECT c.id FROM chunks c
  JOIN documents d ON d.tenant_id = c.tenant_id AND d.id = c.document_id
 WHERE c.dims = 384 AND c.model = 'all-MiniLM-L6-v2'
 ORDER BY c.embedding::vector(384) <=> '{q}'::vector(384) LIMIT 10;"""
IDS = """SELECT string_agg(id::text, ',') FROM (SELECT c.id FROM chunks c
  JOIN documents d ON d.tenant_id = c.tenant_id AND d.id = c.document_id
 WHERE c.dims = 384 AND c.model = 'all-MiniLM-L6-v2'
 ORDER BY c.embedding::vector(384) <=> '{q}'::vector(384) LIMIT 10) s;"""
exact = psql("SET LOCAL enable_indexscan = off;\n" + "\n".join(IDS.format(q=q) for q in queries)).split()
# 40 is pgvector's default; the server asks for four times its candidates
# (160 for a search of 10, which fetches 40 candidates per retriever).
for ef in (40, 160):
    script = f"SET LOCAL hnsw.ef_search = {ef};\n" + "\n".join(NEAREST.format(q=q) for q in queries)
    plans = [json.loads(x) for x in re.findall(r"^\[.*?^\]$", psql(script), re.S | re.M)]
    times = [p[0]["Execution Time"] for p in plans]
    uses_index = sum(1 for p in plans if "chunks_embedding_384" in json.dumps(p))
    approx = psql(f"SET LOCAL hnsw.ef_search = {ef};\n" + "\n".join(IDS.format(q=q) for q in queries)).split()
    recall = statistics.mean(len(set(a.split(",")) & set(e.split(","))) / 10 for a, e in zip(approx, exact))
    print(f"vector query (SQL, HNSW, ef_search {ef}, RLS on): p50 {pct(times, 0.5):.2f} ms  p99 {pct(times, 0.99):.2f} ms "
          f"over {len(times)} queries ({uses_index} through the index); recall@10 against exact search {recall:.3f}")
t_exact = []
for q in queries[:20]:
    out = psql("SET LOCAL enable_indexscan = off;\n" + NEAREST.format(q=q))
    t_exact.append(json.loads(re.findall(r"^\[.*?^\]$", out, re.S | re.M)[0])[0]["Execution Time"])
print(f"exact search for comparison: p50 {pct(t_exact, 0.5):.1f} ms over 20 queries")

for mode in ("vector", "keyword", "hybrid"):
    lat = []
    for i in range(args.queries):
        q = QUERIES[i % len(QUERIES)]["q"]
        t = time.perf_counter()
        found = call("POST", "/api/v1/search", {"query": q, "mode": mode, "limit": 10})
        lat.append((time.perf_counter() - t) * 1000)
        assert found["degraded"] is False
    how = "full text only" if mode == "keyword" else "query embedded by the model"
    print(f"POST /search {mode} over REST at {args.chunks + chunks} chunks ({how}): "
          f"p50 {pct(lat, 0.5):.1f} ms  p99 {pct(lat, 0.99):.1f} ms over {len(lat)} requests")
