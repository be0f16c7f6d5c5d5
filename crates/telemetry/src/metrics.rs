//! The process-wide metrics, recorded where things happen and encoded for
//! Prometheus on `/metrics`. Labels come from small fixed vocabularies (route
//! templates, status classes, refusal codes, event names, outcomes): never a
//! tenant, user, topic or socket, so the number of series stays bounded
//! whatever clients send.
//!
//! Values another part of the server already keeps (sockets, topics, cache
//! hits, live nodes, draining) are read when scraped, through a [`Collector`]
//! handed to [`Metrics::registry`].

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use std::borrow::Cow;
use std::sync::LazyLock;
use std::time::Duration;

/// Latency buckets in seconds, 0.5 ms to 10 s: fine below 25 ms, where the
/// fan-out objective sits, and coarse above a second.
const LATENCY: [f64; 16] =
    [0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

fn latency() -> Histogram {
    Histogram::new(LATENCY)
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// One HTTP request: the route's template (`/api/v1/runs/{id}`, or
/// `unmatched`), the method and the status class.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub route: Cow<'static, str>,
    pub method: Method,
    pub class: StatusClass,
}

/// HTTP methods, others folded into `other`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types, clippy::upper_case_acronyms)]
pub enum Method {
    GET,
    POST,
    PUT,
    PATCH,
    DELETE,
    HEAD,
    OPTIONS,
    other,
}

impl Method {
    pub fn of(method: &str) -> Self {
        match method {
            "GET" => Self::GET,
            "POST" => Self::POST,
            "PUT" => Self::PUT,
            "PATCH" => Self::PATCH,
            "DELETE" => Self::DELETE,
            "HEAD" => Self::HEAD,
            "OPTIONS" => Self::OPTIONS,
            _ => Self::other,
        }
    }
}

/// `1xx` … `5xx`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub struct StatusClass(u8);

impl StatusClass {
    pub fn of(status: u16) -> Self {
        Self((status / 100).clamp(1, 5) as u8)
    }
}

impl EncodeLabelValue for StatusClass {
    fn encode(&self, encoder: &mut prometheus_client::encoding::LabelValueEncoder) -> std::fmt::Result {
        use std::fmt::Write;
        write!(encoder, "{}xx", self.0)
    }
}

/// A label with one word from a fixed vocabulary.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

/// A Postgres transaction: `tenant` or `platform`, and how it ended
/// (`commit`, `rollback`, `error`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TxLabels {
    pub kind: &'static str,
    pub outcome: &'static str,
}

/// A Redis call by name (a script or a command) and whether it answered.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RedisLabels {
    pub call: &'static str,
    pub outcome: &'static str,
}

/// A client event by name; names outside the documented set are `other`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    pub event: &'static str,
}

/// A refusal: where (`handshake`, `event`, `http`) and its documented code.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    pub layer: &'static str,
    pub code: &'static str,
}

/// A rate limit that refused: `http`, `socket` (a socket's own bucket),
/// `tenant_events`, `auth_failures`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitLabels {
    pub limit: &'static str,
}

/// An outside service behind a circuit breaker: `embedding`, `rerank`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BreakerLabels {
    pub breaker: &'static str,
}

/// A knowledge search by mode, and whether it was degraded (no vectors).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SearchLabels {
    pub mode: &'static str,
    pub degraded: &'static str,
}

/// An embedding job by how it ended: `done`, `retry`, `waiting`, `dead`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobLabels {
    pub outcome: &'static str,
}

/// Everything recorded as it happens. Cheap to record from any task: counters
/// and histograms are atomics, families a read lock and a hash lookup.
#[derive(Debug)]
pub struct Metrics {
    pub http_duration: Histograms<HttpLabels>,
    pub handshake_duration: Histograms<OutcomeLabels>,
    pub publish_to_write: Histogram,
    pub db_transaction: Histograms<TxLabels>,
    pub redis_call: Histograms<RedisLabels>,
    pub events_in: Family<EventLabels, Counter>,
    pub events_out: Counter,
    pub refusals: Family<RefusalLabels, Counter>,
    pub rate_limited: Family<LimitLabels, Counter>,
    pub recoveries: Family<OutcomeLabels, Counter>,
    pub dropped: Counter,
    /// 1 while the Postgres circuit breaker is open (or probing).
    pub db_breaker_open: Gauge,
    pub db_refused_fast: Counter,
    /// 0 closed, 1 open, 2 half-open (one probe let through).
    pub breaker_state: Family<BreakerLabels, Gauge>,
    pub breaker_refused: Family<BreakerLabels, Counter>,
    pub search_duration: Histograms<SearchLabels>,
    pub embedding_jobs: Family<JobLabels, Counter>,
    pub chunks_embedded: Counter,
    /// Webhook delivery attempts, by outcome (the `JobLabels` of a job):
    /// `delivered`, `retry`, `failed`.
    pub webhook_attempts: Family<JobLabels, Counter>,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| Metrics {
    http_duration: Family::new_with_constructor(latency),
    handshake_duration: Family::new_with_constructor(latency),
    publish_to_write: latency(),
    db_transaction: Family::new_with_constructor(latency),
    redis_call: Family::new_with_constructor(latency),
    events_in: Family::default(),
    events_out: Counter::default(),
    refusals: Family::default(),
    rate_limited: Family::default(),
    recoveries: Family::default(),
    dropped: Counter::default(),
    db_breaker_open: Gauge::default(),
    db_refused_fast: Counter::default(),
    breaker_state: Family::default(),
    breaker_refused: Family::default(),
    search_duration: Family::new_with_constructor(latency),
    embedding_jobs: Family::default(),
    chunks_embedded: Counter::default(),
    webhook_attempts: Family::default(),
});

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    &METRICS
}

/// Creates the series the objectives divide by, at zero, so that the first
/// scrape already has them: Prometheus counts no increase into a series'
/// first sample, and a burst before it would be lost to `rate()`.
pub fn init() {
    let m = metrics();
    for outcome in ["accepted", "refused", "failed"] {
        let _ = m.handshake_duration.get_or_create(&OutcomeLabels { outcome });
    }
    for outcome in ["true", "false"] {
        let _ = m.recoveries.get_or_create(&OutcomeLabels { outcome });
    }
}

impl Metrics {
    pub fn http(&self, route: Cow<'static, str>, method: &str, status: u16, took: Duration) {
        let labels = HttpLabels { route, method: Method::of(method), class: StatusClass::of(status) };
        self.http_duration.get_or_create(&labels).observe(took.as_secs_f64());
    }

    /// A handshake that ended `accepted`, `refused` (the client's fault: a
    /// token, a limit) or `failed` (the server's: a database or Redis down).
    pub fn handshake(&self, outcome: &'static str, took: Duration) {
        self.handshake_duration.get_or_create(&OutcomeLabels { outcome }).observe(took.as_secs_f64());
    }

    pub fn refused(&self, layer: &'static str, code: &'static str) {
        self.refusals.get_or_create(&RefusalLabels { layer, code }).inc();
    }

    pub fn limited(&self, limit: &'static str) {
        self.rate_limited.get_or_create(&LimitLabels { limit }).inc();
    }

    pub fn event_in(&self, event: &'static str) {
        self.events_in.get_or_create(&EventLabels { event }).inc();
    }

    pub fn recovery(&self, recovered: bool) {
        let outcome = if recovered { "true" } else { "false" };
        self.recoveries.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    pub fn transaction(&self, kind: &'static str, outcome: &'static str, took: Duration) {
        self.db_transaction.get_or_create(&TxLabels { kind, outcome }).observe(took.as_secs_f64());
    }

    pub fn redis(&self, call: &'static str, ok: bool, took: Duration) {
        let outcome = if ok { "ok" } else { "error" };
        self.redis_call.get_or_create(&RedisLabels { call, outcome }).observe(took.as_secs_f64());
    }

    /// A registry over these metrics and `collector`'s, every series labelled
    /// with `node`.
    pub fn registry(&self, node: &str, collector: Box<dyn Collector>) -> Registry {
        let mut r = Registry::with_prefix_and_labels(
            "switchboard",
            [(Cow::Borrowed("node"), Cow::Owned(node.to_owned()))].into_iter(),
        );
        r.register_with_unit(
            "http_request_duration",
            "HTTP requests by route template, method and status class, from the first byte in to the response head out",
            Unit::Seconds,
            self.http_duration.clone(),
        );
        r.register_with_unit(
            "handshake_duration",
            "Socket.IO handshakes by outcome: accepted, refused (the client's token or a limit) or failed (the server could not decide)",
            Unit::Seconds,
            self.handshake_duration.clone(),
        );
        r.register_with_unit(
            "publish_to_write",
            "From the publishing node accepting an event to this node writing it to its subscribers' sockets (node clocks must agree)",
            Unit::Seconds,
            self.publish_to_write.clone(),
        );
        r.register_with_unit(
            "db_transaction_duration",
            "Postgres transactions, begin to commit or rollback, by kind (tenant, platform) and outcome",
            Unit::Seconds,
            self.db_transaction.clone(),
        );
        r.register_with_unit(
            "redis_call_duration",
            "Redis calls by name (script or command) and outcome",
            Unit::Seconds,
            self.redis_call.clone(),
        );
        r.register(
            "events_in",
            "Client events received over Socket.IO, by event name",
            self.events_in.clone(),
        );
        r.register(
            "events_out",
            "Topic events written to subscribers' sockets on this node (one per subscriber)",
            self.events_out.clone(),
        );
        r.register(
            "refusals",
            "Requests refused with a documented code, by layer (handshake, event, http) and code",
            self.refusals.clone(),
        );
        r.register("rate_limit_hits", "Refusals by a rate limit, by limit", self.rate_limited.clone());
        r.register(
            "recoveries",
            "Subscribes with `since`, by whether every event after it was replayed (recovered true or false)",
            self.recoveries.clone(),
        );
        r.register(
            "deliveries_dropped",
            "Topic events a socket's full queue could not take (the socket is then told system:lagging)",
            self.dropped.clone(),
        );
        r.register(
            "db_breaker_open",
            "1 while the Postgres circuit breaker is open: transactions are refused at once (503) until a probe gets through",
            self.db_breaker_open.clone(),
        );
        r.register(
            "db_refused_fast",
            "Transactions the Postgres circuit breaker refused without waiting for the pool",
            self.db_refused_fast.clone(),
        );
        r.register(
            "breaker_state",
            "Circuit breakers around outside services (embedding, rerank): 0 closed, 1 open (calls refused at once), 2 half-open (one probe through)",
            self.breaker_state.clone(),
        );
        r.register(
            "breaker_refused",
            "Calls a circuit breaker refused without trying the service",
            self.breaker_refused.clone(),
        );
        r.register(
            "search_duration_seconds",
            "Knowledge searches by mode (hybrid, vector, keyword) and whether they were degraded to full text",
            self.search_duration.clone(),
        );
        r.register("embedding_jobs", "Embedding jobs worked, by how they ended", self.embedding_jobs.clone());
        r.register("chunks_embedded", "Document chunks embedded and stored", self.chunks_embedded.clone());
        r.register(
            "webhook_attempts",
            "Outbound webhook delivery attempts, by outcome (delivered, retry, failed: given up)",
            self.webhook_attempts.clone(),
        );
        r.register_collector(collector);
        r
    }
}

/// The registry as Prometheus text (OpenMetrics).
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, registry) {
        tracing::error!(error = %e, "metrics could not be encoded");
    }
    out
}

/// The content type of [`encode`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
