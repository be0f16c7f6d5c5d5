//! `GET /metrics`: Prometheus text for operators. Labels are bounded (layer,
//! node), never per tenant.

use crate::AppState;
use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use std::fmt::Write;

pub fn router() -> Router<AppState> {
    Router::new().route("/metrics", get(metrics))
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let cache = state.directory.cache().stats();
    let node = &*state.node_id;
    let mut out = String::new();
    let mut line = |text: String| {
        let _ = writeln!(out, "{text}");
    };
    line("# HELP switchboard_cache_hits_total Cache lookups answered without the source, by layer.".into());
    line("# TYPE switchboard_cache_hits_total counter".into());
    line(format!("switchboard_cache_hits_total{{node=\"{node}\",layer=\"l1\"}} {}", cache.l1_hits));
    line(format!("switchboard_cache_hits_total{{node=\"{node}\",layer=\"l2\"}} {}", cache.l2_hits));
    line("# HELP switchboard_cache_misses_total Cache lookups that went to the source.".into());
    line("# TYPE switchboard_cache_misses_total counter".into());
    line(format!("switchboard_cache_misses_total{{node=\"{node}\"}} {}", cache.misses));
    line("# HELP switchboard_live_nodes Nodes seen beating in the last 10 s.".into());
    line("# TYPE switchboard_live_nodes gauge".into());
    line(format!("switchboard_live_nodes{{node=\"{node}\"}} {}", state.limiter.live_nodes()));
    line("# HELP switchboard_sockets Socket.IO connections open on this node.".into());
    line("# TYPE switchboard_sockets gauge".into());
    line(format!("switchboard_sockets{{node=\"{node}\"}} {}", state.realtime.local_sockets()));
    line("# HELP switchboard_topics Topics with subscribers on this node.".into());
    line("# TYPE switchboard_topics gauge".into());
    line(format!("switchboard_topics{{node=\"{node}\"}} {}", state.realtime.local_topics()));
    line("# HELP switchboard_events_published_total Events this node published to topics (replayed batches excluded).".into());
    line("# TYPE switchboard_events_published_total counter".into());
    line(format!(
        "switchboard_events_published_total{{node=\"{node}\"}} {}",
        state.realtime.events_published()
    ));
    let (detached, disconnects) = state.realtime.lagging();
    line("# HELP switchboard_lagging_subscribers_total Subscribers taken off a topic after missing events (a full queue, or history lost with Redis) and told system:lagging.".into());
    line("# TYPE switchboard_lagging_subscribers_total counter".into());
    line(format!("switchboard_lagging_subscribers_total{{node=\"{node}\"}} {detached}"));
    line("# HELP switchboard_lagging_disconnects_total Lagging subscribers disconnected because they could not take the notice in time.".into());
    line("# TYPE switchboard_lagging_disconnects_total counter".into());
    line(format!("switchboard_lagging_disconnects_total{{node=\"{node}\"}} {disconnects}"));
    let handshakes = state.realtime.handshakes();
    line("# HELP switchboard_handshakes_total Socket.IO handshakes, accepted or refused.".into());
    line("# TYPE switchboard_handshakes_total counter".into());
    let refused: u64 = handshakes.refused().iter().map(|(_, n)| n).sum();
    line(format!(
        "switchboard_handshakes_total{{node=\"{node}\",outcome=\"accepted\"}} {}",
        handshakes.accepted()
    ));
    line(format!("switchboard_handshakes_total{{node=\"{node}\",outcome=\"refused\"}} {refused}"));
    line("# HELP switchboard_handshake_refusals_total Refused Socket.IO handshakes by refusal code.".into());
    line("# TYPE switchboard_handshake_refusals_total counter".into());
    for (code, n) in handshakes.refused() {
        line(format!("switchboard_handshake_refusals_total{{node=\"{node}\",code=\"{code}\"}} {n}"));
    }
    line("# HELP switchboard_http_responses_total HTTP responses by status class.".into());
    line("# TYPE switchboard_http_responses_total counter".into());
    for (i, class) in ["1xx", "2xx", "3xx", "4xx", "5xx"].iter().enumerate() {
        let n = crate::request_id::RESPONSES[i].load(std::sync::atomic::Ordering::Relaxed);
        line(format!("switchboard_http_responses_total{{node=\"{node}\",class=\"{class}\"}} {n}"));
    }
    line("# HELP switchboard_draining Whether this node is draining.".into());
    line("# TYPE switchboard_draining gauge".into());
    line(format!("switchboard_draining{{node=\"{node}\"}} {}", u8::from(state.is_draining())));
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
}
