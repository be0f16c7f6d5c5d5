//! What Switchboard tells its operators besides logs: Prometheus [`metrics`]
//! recorded by every crate into one process-wide set, served on
//! `METRICS_ADDR`, and OpenTelemetry [`trace`]s exported over OTLP when an
//! endpoint is configured.

pub mod metrics;

pub use metrics::{Metrics, metrics};
pub mod trace;

/// Now, in microseconds since the Unix epoch (0 if the clock is before it).
pub fn unix_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
