//! `GET /metrics` on its own listener (`METRICS_ADDR`): the process's
//! [`switchboard_telemetry`] metrics, and the values other parts of the server
//! keep (sockets, topics, cache, live nodes, draining) read at scrape time.
//! Every series carries the node's name; none carries a tenant, user or topic.

use crate::AppState;
use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use std::sync::Arc;
use switchboard_telemetry::metrics::{CONTENT_TYPE, encode};

/// The metrics listener's routes.
pub fn router(state: &AppState) -> Router {
    switchboard_telemetry::metrics::init();
    let registry =
        switchboard_telemetry::metrics().registry(&state.node_id, Box::new(Snapshot(state.clone())));
    Router::new().route("/metrics", get(metrics)).with_state(Arc::new(registry))
}

async fn metrics(State(registry): State<Arc<Registry>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], encode(&registry))
}

/// What the server keeps elsewhere, read when scraped.
struct Snapshot(AppState);

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Snapshot")
    }
}

fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> std::fmt::Result {
    let c = ConstCounter::new(v);
    c.encode(e.encode_descriptor(name, help, None, c.metric_type())?)
}

fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, v: i64) -> std::fmt::Result {
    let g = ConstGauge::new(v);
    g.encode(e.encode_descriptor(name, help, None, g.metric_type())?)
}

impl Collector for Snapshot {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let state = &self.0;
        let rt = &state.realtime;
        let cache = state.directory.cache().stats();
        {
            let c = ConstCounter::new(cache.l1_hits);
            let mut family = e.encode_descriptor(
                "cache_hits",
                "Tenant-directory cache lookups answered without Postgres, by layer (l1 in process, l2 in Redis)",
                None,
                c.metric_type(),
            )?;
            c.encode(family.encode_family(&[("layer", "l1")])?)?;
            ConstCounter::new(cache.l2_hits).encode(family.encode_family(&[("layer", "l2")])?)?;
        }
        counter(
            &mut e,
            "cache_misses",
            "Tenant-directory cache lookups that went to Postgres",
            cache.misses,
        )?;
        {
            let handshakes = rt.handshakes();
            let c = ConstCounter::new(handshakes.accepted());
            let mut family = e.encode_descriptor(
                "handshakes",
                "Socket.IO handshakes by outcome (refusals by code: switchboard_refusals_total{layer=\"handshake\"})",
                None,
                c.metric_type(),
            )?;
            c.encode(family.encode_family(&[("outcome", "accepted")])?)?;
            ConstCounter::new(handshakes.refused())
                .encode(family.encode_family(&[("outcome", "refused")])?)?;
        }
        counter(
            &mut e,
            "events_published",
            "Events this node published to topics (client and server ones; replayed batches excluded)",
            rt.events_published(),
        )?;
        let (detached, disconnects) = rt.lagging();
        counter(
            &mut e,
            "lagging_subscribers",
            "Subscribers taken off a topic after missing events (a full queue, or history lost with Redis) and told system:lagging",
            detached,
        )?;
        counter(
            &mut e,
            "lagging_disconnects",
            "Lagging subscribers disconnected because they could not take the notice in time",
            disconnects,
        )?;
        let n = |v: usize| i64::try_from(v).unwrap_or(i64::MAX);
        gauge(&mut e, "sockets", "Socket.IO connections open on this node", n(rt.local_sockets()))?;
        gauge(&mut e, "topics", "Topics with subscribers on this node", n(rt.local_topics()))?;
        gauge(
            &mut e,
            "live_nodes",
            "Nodes seen beating in the last 10 s",
            i64::from(state.limiter.live_nodes()),
        )?;
        gauge(&mut e, "draining", "1 while this node drains, else 0", i64::from(state.is_draining()))?;
        Ok(())
    }
}
