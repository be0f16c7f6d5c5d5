//! Logging: structured JSON lines through `tracing`, filtered by `RUST_LOG`
//! (default `info`). Fields of the enclosing spans (the request id, the tenant)
//! are flattened onto every line.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::FmtSpan;

/// Installs the global subscriber once; later calls (tests) are no-ops.
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(true)
        .with_span_list(false)
        .with_span_events(FmtSpan::NONE)
        .with_target(true)
        .with_writer(std::io::stderr)
        .try_init();
}
