"""Structural checks of the deployment files that no schema can express, and
of the links in README.md and docs/.

Run by scripts/check-deploy (with the tools virtualenv's Python, which has
PyYAML) after the schema checks: what compose, HAProxy and Kubernetes must
agree on for a drain to be graceful and a canary to be weighted, and that the
alert rules and the dashboard ask for metrics the server exposes. Prints one
line per failed check and exits 1 if there was any.

    python scripts/lib/deploy_checks.py ROOT
"""

import fnmatch
import hashlib
import json
import os
import re
import sys

import yaml

ROOT = sys.argv[1] if len(sys.argv) > 1 else "."
failures = []
passed = 0


def check(ok, what):
    global passed
    if ok:
        passed += 1
    else:
        failures.append(what)


def read(path):
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        return f.read()


def seconds(value):
    """Compose durations (30s, 1m30s) and plain numbers, in seconds."""
    if isinstance(value, (int, float)) or re.fullmatch(r"\d+(\.\d+)?", str(value)):
        return float(value)
    total, matched = 0.0, False
    for amount, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", str(value)):
        matched = True
        total += float(amount) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]
    return total if matched else float("nan")


# --- Dockerfile --------------------------------------------------------------

dockerfile = read("Dockerfile")
stages = re.findall(r"^FROM\s+(\S+)", dockerfile, re.M)
check(len(stages) >= 3, "Dockerfile: a multi-stage build (planner, builder, runtime)")
check(re.search(r"cargo build --release --locked -p switchboard", dockerfile) is not None,
      "Dockerfile: a locked release build of the switchboard package")
deps_build = dockerfile.find("cargo build --release")
copy_all = dockerfile.find("COPY . .", dockerfile.find("AS builder"))
check(0 <= deps_build < copy_all,
      "Dockerfile: dependencies are built (from the skeleton) before the sources are copied")
runtime = dockerfile[dockerfile.rfind("\nFROM "):]
check("distroless" in stages[-1] or "slim" in stages[-1], "Dockerfile: a small runtime base image")
user = re.findall(r"^USER\s+(\S+)", runtime, re.M)
check(bool(user) and user[-1].split(":")[0] not in ("0", "root"), "Dockerfile: the runtime stage runs as a non-root user")
check(re.search(r"^HEALTHCHECK .*\n?.*?/health/ready", runtime, re.M | re.S) is not None,
      "Dockerfile: HEALTHCHECK asks /health/ready")
check(re.search(r'^ENTRYPOINT \["/usr/local/bin/switchboard"\]', runtime, re.M) is not None
      and re.search(r'^CMD \["serve"\]', runtime, re.M) is not None,
      "Dockerfile: the entrypoint is the binary and serve the default command (so `migrate` runs as a one-off)")

# .dockerignore: what the build copies must be in the context.
patterns = [l.strip() for l in read(".dockerignore").splitlines() if l.strip() and not l.startswith("#")]


def in_context(path):
    included = True
    for p in patterns:
        negate = p.startswith("!")
        pat = p[1:] if negate else p
        pat = pat.rstrip("/")
        hit = fnmatch.fnmatch(path, pat) or fnmatch.fnmatch(path, pat + "/*") or (
            pat.startswith("**/") and (fnmatch.fnmatch(path, pat[3:]) or fnmatch.fnmatch(path, "*/" + pat[3:])
                                       or fnmatch.fnmatch(path, "*/" + pat[3:] + "/*") or fnmatch.fnmatch(path, pat[3:] + "/*")))
        if hit:
            included = negate
    return included


for needed in ["Cargo.toml", "Cargo.lock", "crates/server/src/main.rs", "crates/api/assets/redoc/redoc.standalone.js",
               "migrations/20261122000001_tenant_context.sql", "vendor/socketioxide-parser-common/Cargo.toml",
               "deploy/docker/cargo-skeleton.sh"]:
    check(in_context(needed), f".dockerignore: {needed} must be in the build context")
for unwanted in ["target/release/switchboard", ".data/postgres/PG_VERSION", ".git/HEAD",
                 "tests/socketio/node_modules/ws/index.js", "crates/api/target/x"]:
    check(not in_context(unwanted), f".dockerignore: {unwanted} must stay out of the build context")

# --- Redoc, pinned -----------------------------------------------------------

bundle = os.path.join(ROOT, "crates/api/assets/redoc/redoc.standalone.js")
with open(bundle, "rb") as f:
    data = f.read()
readme = read("crates/api/assets/redoc/README.md")
recorded = re.search(r"sha256 \| `([0-9a-f]{64})`", readme)
check(recorded is not None and hashlib.sha256(data).hexdigest() == recorded.group(1),
      "Redoc: the bundle's sha256 matches crates/api/assets/redoc/README.md")
check(len(data) < 2 * 1024 * 1024, "Redoc: the bundle is under 2 MiB")
version = re.search(r"\| version \| (\S+)", readme)
code_version = re.search(r'REDOC_VERSION: &str = "([^"]+)"', read("crates/api/src/openapi.rs"))
check(version is not None and code_version is not None and version.group(1) == code_version.group(1),
      "Redoc: REDOC_VERSION in openapi.rs is the version the README records")

# --- HAProxy -------------------------------------------------------------------

cfg = read("deploy/haproxy/haproxy.cfg")
for needle, what in [
    ("option httpchk", "health checks"),
    ("uri /health/ready", "health checks ask /health/ready"),
    ("cookie SBNODE insert indirect nocache", "cookie stickiness for long-polling"),
    ("timeout tunnel", "a tunnel timeout for websockets"),
    ("level admin", "a runtime API that may set weights and states"),
    ("server canary", "a canary server"),
    ("option forwardfor", "X-Forwarded-For for TRUSTED_PROXIES"),
]:
    check(needle in cfg, f"haproxy.cfg: {what} ({needle!r})")

# --- compose -------------------------------------------------------------------

compose = yaml.safe_load(read("deploy/compose.yaml"))
services = compose.get("services", {})
for name in ["postgres", "redis", "migrate", "node1", "node2", "canary", "haproxy"]:
    check(name in services, f"compose: a `{name}` service")
if {"postgres", "redis", "migrate", "node1", "node2", "canary", "haproxy"} <= services.keys():
    pg, redis, migrate, lb = services["postgres"], services["redis"], services["migrate"], services["haproxy"]
    check("pgvector" in pg.get("image", "") and "pg16" in pg.get("image", ""), "compose: Postgres 16 with pgvector")
    check(re.match(r"redis:7(\b|\.)", redis.get("image", "")) is not None, "compose: Redis 7")
    check("healthcheck" in pg and "healthcheck" in redis, "compose: Postgres and Redis have health checks")
    check(migrate.get("command") == ["migrate"] and migrate.get("restart") == "no", "compose: migrate runs once")
    check("DATABASE_ADMIN_URL" in migrate.get("environment", {}), "compose: migrate gets the owner's URL")
    env_example = read("deploy/.env.example")
    for var in sorted(set(re.findall(r"\$\{(\w+):\?", read("deploy/compose.yaml")))):
        check(re.search(rf"^{var}=", env_example, re.M) is not None, f"compose: {var} is in deploy/.env.example")
    for name in ["node1", "node2", "canary"]:
        node = services[name]
        env = node.get("environment", {})
        deps = node.get("depends_on", {})
        check(deps.get("migrate", {}).get("condition") == "service_completed_successfully",
              f"compose: {name} starts after the migration succeeded")
        check("/health/ready" in " ".join(node.get("healthcheck", {}).get("test", [])),
              f"compose: {name}'s health check asks /health/ready")
        check("DATABASE_ADMIN_URL" not in env, f"compose: {name} does not get the owner's URL")
        check(seconds(node.get("stop_grace_period", "10s")) >= seconds(env.get("DRAIN_SECONDS", 5)) + 10,
              f"compose: {name}'s stop_grace_period covers DRAIN_SECONDS with 10 s to spare")
        check(env.get("NODE_ID") == name, f"compose: {name} has its own NODE_ID")
        check("PLATFORM_KEY" in env and "TRUSTED_PROXIES" in env, f"compose: {name} gets PLATFORM_KEY and TRUSTED_PROXIES")
    mounts = [v for v in lb.get("volumes", []) if "haproxy.cfg" in str(v)]
    check(len(mounts) == 1 and os.path.normpath(os.path.join(ROOT, "deploy", str(mounts[0]).split(":")[0]))
          == os.path.normpath(os.path.join(ROOT, "deploy/haproxy/haproxy.cfg")),
          "compose: HAProxy mounts deploy/haproxy/haproxy.cfg")
    lb_env = lb.get("environment", {})
    addrs = {k: v for k, v in lb_env.items() if re.match(r"SB_(NODE\d|CANARY)_ADDR$", k)}
    check({v.split(":")[0] for v in addrs.values()} == {"node1", "node2", "canary"},
          "compose: HAProxy's servers are node1, node2 and canary")
    trusted = services["node1"]["environment"].get("TRUSTED_PROXIES", "")
    lb_ip = lb.get("networks", {}).get("switchboard", {}).get("ipv4_address")
    check(lb_ip is not None and trusted == f"{lb_ip}/32", "compose: nodes trust exactly HAProxy's address")

# --- Kubernetes ----------------------------------------------------------------

k8s_dir = os.path.join(ROOT, "deploy/k8s")
docs = {}
for fn in sorted(os.listdir(k8s_dir)):
    if fn.endswith(".yaml"):
        with open(os.path.join(k8s_dir, fn), encoding="utf-8") as f:
            docs[fn] = [d for d in yaml.safe_load_all(f) if d]
kustomization = docs.pop("kustomization.yaml")[0]
listed = set(kustomization.get("resources", []))
check(listed == set(docs) - {"migrate-job.yaml"},
      "k8s: kustomization.yaml lists every manifest but the migration Job")
objects = [(fn, d) for fn, ds in docs.items() for d in ds]
by_kind = {}
for fn, d in objects:
    by_kind.setdefault(d["kind"], []).append(d)
for kind in ["Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler", "Job", "ConfigMap", "Secret", "Ingress"]:
    check(kind in by_kind, f"k8s: a {kind}")
config = by_kind.get("ConfigMap", [{}])[0].get("data", {})
secret_keys = set(by_kind.get("Secret", [{}])[0].get("stringData", {}))
deployments = {d["metadata"]["name"]: d for d in by_kind.get("Deployment", [])}
check({"switchboard", "switchboard-canary"} <= deployments.keys(), "k8s: a stable and a canary Deployment")
drain = float(config.get("DRAIN_SECONDS", 5))
for name, d in deployments.items():
    pod = d["spec"]["template"]["spec"]
    c = pod["containers"][0]
    check(c.get("readinessProbe", {}).get("httpGet", {}).get("path") == "/health/ready", f"k8s: {name} is ready on /health/ready")
    check(c.get("livenessProbe", {}).get("httpGet", {}).get("path") == "/health", f"k8s: {name} is alive on /health")
    pre = c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    pause = float(pre[-1]) if pre and "sleep" in pre else 0
    check(pause > 0, f"k8s: {name} pauses in preStop so the ingress forgets it before the drain")
    check(pod.get("terminationGracePeriodSeconds", 30) >= pause + drain + 10,
          f"k8s: {name}'s termination grace covers preStop + DRAIN_SECONDS + 10 s")
    check(d["spec"]["strategy"]["rollingUpdate"].get("maxUnavailable") == 0, f"k8s: {name} never rolls below its count")
    check(pod.get("securityContext", {}).get("runAsNonRoot") is True
          and c.get("securityContext", {}).get("readOnlyRootFilesystem") is True, f"k8s: {name} runs as non-root, read-only")
    for e in c.get("env", []):
        ref = e.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            check(ref["key"] in secret_keys, f"k8s: {name} reads {ref['key']}, which secret.yaml defines")
    check(all(e.get("name") != "DATABASE_ADMIN_URL" for e in c.get("env", [])), f"k8s: {name} does not get the owner's URL")
    check(set(d["spec"]["selector"]["matchLabels"].items()) <= set(d["spec"]["template"]["metadata"]["labels"].items()),
          f"k8s: {name}'s selector matches its pods")


def selects(selector):
    return [n for n, d in deployments.items() if set(selector.items()) <= set(d["spec"]["template"]["metadata"]["labels"].items())]


services_k8s = {s["metadata"]["name"]: s for s in by_kind.get("Service", [])}
check(selects(services_k8s.get("switchboard", {}).get("spec", {}).get("selector", {"x": "y"})) == ["switchboard"],
      "k8s: the `switchboard` Service selects only the stable pods")
check(selects(services_k8s.get("switchboard-canary", {}).get("spec", {}).get("selector", {"x": "y"})) == ["switchboard-canary"],
      "k8s: the `switchboard-canary` Service selects only the canary pods")
for pdb in by_kind.get("PodDisruptionBudget", []):
    check(selects(pdb["spec"]["selector"]["matchLabels"]) == ["switchboard"], "k8s: the PodDisruptionBudget covers the stable pods")
for hpa in by_kind.get("HorizontalPodAutoscaler", []):
    check(hpa["spec"]["scaleTargetRef"]["name"] == "switchboard" and hpa["spec"]["minReplicas"] >= 2,
          "k8s: the HPA scales the stable Deployment, never below 2")
ingresses = {i["metadata"]["name"]: i for i in by_kind.get("Ingress", [])}
for name, ing in ingresses.items():
    for rule in ing["spec"]["rules"]:
        for p in rule["http"]["paths"]:
            check(p["backend"]["service"]["name"] in services_k8s, f"k8s: Ingress {name} routes to an existing Service")
canaries = [i for i in ingresses.values() if i["metadata"].get("annotations", {}).get("nginx.ingress.kubernetes.io/canary") == "true"]
check(len(canaries) == 1, "k8s: one canary Ingress")
for ing in canaries:
    a = ing["metadata"]["annotations"]
    weight, total = a.get("nginx.ingress.kubernetes.io/canary-weight", "x"), a.get("nginx.ingress.kubernetes.io/canary-weight-total", "100")
    check(weight.isdigit() and total.isdigit() and 0 <= int(weight) <= int(total),
          "k8s: the canary weight is a whole number within its total")
    check(ing["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"] == "switchboard-canary",
          "k8s: the canary Ingress routes to the canary Service")
for job in by_kind.get("Job", []):
    c = job["spec"]["template"]["spec"]["containers"][0]
    check(c.get("args") == ["migrate"], "k8s: the Job runs `switchboard migrate`")
    check({e["name"] for e in c.get("env", [])} >= {"DATABASE_URL", "DATABASE_ADMIN_URL"}, "k8s: the Job gets both database URLs")
images = {i["name"] for i in kustomization.get("images", [])}
for name, d in deployments.items():
    check(d["spec"]["template"]["spec"]["containers"][0]["image"] in images, f"k8s: kustomization.yaml sets {name}'s image")

# --- Metrics, rules and the dashboard --------------------------------------------


def exposed_metrics():
    """The sample names the server exposes, read from where they are registered."""
    names = set()
    src = read("crates/telemetry/src/metrics.rs")
    for name in re.findall(r'register_with_unit\(\s*"(\w+)"', src):
        names |= {f"switchboard_{name}_seconds_{s}" for s in ("bucket", "sum", "count")}
    gauges = set(re.findall(r"pub (\w+): Gauge\b", src))
    for name, field in re.findall(r'r\.register\(\s*"(\w+)",.*?self\.(\w+)\.clone\(\)', src, re.S):
        names.add(f"switchboard_{name}" if field in gauges else f"switchboard_{name}_total")
    src = read("crates/api/src/metrics.rs")
    for name in re.findall(r'counter\(\s*&mut e,\s*"(\w+)"', src):
        names.add(f"switchboard_{name}_total")
    for name in re.findall(r'encode_descriptor\(\s*"(\w+)"', src):
        names.add(f"switchboard_{name}_total")
    for name in re.findall(r'gauge\(\s*&mut e,\s*"(\w+)"', src):
        names.add(f"switchboard_{name}")
    return names


exposed = exposed_metrics()
check(len(exposed) > 20, "metrics: the exposed names could be read from the sources")
rules_text = read("deploy/prometheus/rules.yml")
recorded = set(re.findall(r"record: (\S+)", rules_text))
dashboard = json.loads(read("deploy/grafana/dashboards/switchboard.json"))
exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
for where, text in [("deploy/prometheus/rules.yml", rules_text), ("the dashboard", "\n".join(exprs))]:
    for name in sorted(set(re.findall(r"\b(switchboard_[a-z_]+)", text))):
        check(name in exposed, f"{where}: {name} is a metric the server exposes")
for name in sorted(set(re.findall(r"\b(switchboard:[a-z_0-9:]+)", "\n".join(exprs)))):
    check(name in recorded, f"the dashboard: {name} is recorded in deploy/prometheus/rules.yml")
uid = yaml.safe_load(read("deploy/grafana/provisioning/datasources/prometheus.yaml"))["datasources"][0]["uid"]
for p in dashboard["panels"]:
    for t in p.get("targets", []):
        check(t["datasource"]["uid"] == uid, f"the dashboard: {p['title']} uses the provisioned data source")
prom = yaml.safe_load(read("deploy/prometheus/prometheus.yml"))
targets = {t for job in prom["scrape_configs"] if job["job_name"] == "switchboard"
           for sc in job["static_configs"] for t in sc["targets"]}
node_names = [n for n, svc in services.items() if "NODE_ID" in svc.get("environment", {})]
metrics_port = services["node1"]["environment"].get("METRICS_ADDR", "").rpartition(":")[2]
check(targets == {f"{n}:{metrics_port}" for n in node_names}, "compose: Prometheus scrapes every node's METRICS_ADDR")
check(any(str(v).startswith("./prometheus:") for v in services.get("prometheus", {}).get("volumes", [])),
      "compose: Prometheus mounts deploy/prometheus")
check({"./grafana/provisioning:/etc/grafana/provisioning:ro", "./grafana/dashboards:/var/lib/grafana/dashboards:ro"}
      <= set(services.get("grafana", {}).get("volumes", [])), "compose: Grafana mounts the provisioning and the dashboard")

# --- Documentation links ---------------------------------------------------------


def slug(heading):
    """GitHub's anchor for a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


doc_files = ["README.md", "loadtests/README.md"] + [os.path.join("docs", f) for f in sorted(os.listdir(os.path.join(ROOT, "docs")))]
for doc in doc_files:
    text = read(doc)
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        file = os.path.normpath(os.path.join(os.path.dirname(doc), path)) if path else doc
        exists = os.path.exists(os.path.join(ROOT, file))
        check(exists, f"{doc}: the link to {target} names a file that exists")
        if exists and anchor and file.endswith(".md"):
            anchors = {slug(h) for h in re.findall(r"^#+ (.+)$", read(file), re.M)}
            check(anchor in anchors, f"{doc}: the link to {target} names a heading of {file}")

for f in failures:
    print(f"FAILED {f}")
print(f"deploy: {passed} passed, {len(failures)} failed")
sys.exit(1 if failures else 0)
