//! Logging and traces. Logs are structured JSON lines through `tracing`,
//! filtered by `RUST_LOG` (default `info`), with the fields of the current
//! span (the request id, the tenant and, with traces on, `trace_id` and
//! `span_id`). Traces go over OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set
//! ([`switchboard_telemetry::trace`]): the server's own spans, whatever
//! `RUST_LOG` keeps of the logs.

use switchboard_telemetry::trace::Provider;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::format::FmtSpan;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer as _};

/// Installs the global subscriber once; later calls (tests) are no-ops. The
/// returned provider, when traces are on, flushes them at exit.
pub fn init() -> Option<Provider> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt::layer()
        .json()
        .with_current_span(true)
        .with_span_list(false)
        .with_span_events(FmtSpan::NONE)
        .with_target(true)
        .with_writer(std::io::stderr)
        .with_filter(filter);
    let instance =
        std::env::var("NODE_ID").ok().filter(|n| !n.is_empty()).unwrap_or_else(|| "switchboard".into());
    let (traces, provider, problem) = match switchboard_telemetry::trace::pipeline(&instance) {
        Ok(Some((layer, provider))) => {
            // Spans of the server's crates (and the events inside them).
            let spans = Targets::new().with_target("switchboard", tracing::Level::INFO);
            (Some(layer.with_filter(spans)), Some(provider), None)
        }
        Ok(None) => (None, None, None),
        Err(e) => (None, None, Some(e)),
    };
    let _ = tracing_subscriber::registry().with(logs).with(traces).try_init();
    if let Some(problem) = problem {
        tracing::error!(problem = %problem, "traces are off");
    } else if provider.is_some() {
        tracing::info!("traces are exported over OTLP");
    }
    provider
}
