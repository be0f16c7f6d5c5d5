//! A circuit breaker in front of the pool. While Postgres is down, every
//! request would wait out the pool's acquire timeout (5 s) before failing, and
//! a busy node would pile up requests doing nothing. After a failure that says
//! the database is unavailable, the breaker opens: for the next second every
//! transaction fails at once with `unavailable` (a 503 with `Retry-After`).
//! Then one request at a time probes; the first that gets through closes the
//! breaker, one that fails opens it again. Readiness pings always go through,
//! and close or open it too. Its state and its refusals are in the metrics.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long the breaker stays open after a failure.
const OPEN_FOR: Duration = Duration::from_secs(1);

/// A probe that has not finished after this long no longer holds others back.
const PROBE_FOR: Duration = Duration::from_secs(6);

#[derive(Debug, Clone, Copy)]
enum State {
    Closed,
    Open { until: Instant },
    Probing { since: Instant },
}

#[derive(Debug)]
pub(crate) struct Breaker {
    state: Mutex<State>,
}

impl Default for Breaker {
    fn default() -> Self {
        Self { state: Mutex::new(State::Closed) }
    }
}

impl Breaker {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether a request may try the database now.
    pub(crate) fn admit(&self) -> bool {
        let mut state = self.state();
        let now = Instant::now();
        match *state {
            State::Closed => true,
            State::Open { until } if now < until => false,
            State::Probing { since } if since.elapsed() < PROBE_FOR => false,
            State::Open { .. } | State::Probing { .. } => {
                *state = State::Probing { since: now };
                true
            }
        }
    }

    /// What a request that was admitted found: the database unavailable or not.
    pub(crate) fn record(&self, unavailable: bool) {
        let mut state = self.state();
        let was_closed = matches!(*state, State::Closed);
        *state = if unavailable { State::Open { until: Instant::now() + OPEN_FOR } } else { State::Closed };
        switchboard_telemetry::metrics().db_breaker_open.set(i64::from(unavailable));
        match (was_closed, unavailable) {
            (true, true) => tracing::warn!("database unavailable: failing requests fast until it answers"),
            (false, false) => tracing::info!("database answers again"),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_opens_it_one_probe_goes_through_and_a_success_closes_it() {
        let b = Breaker::default();
        assert!(b.admit() && b.admit(), "closed: everything goes through");
        b.record(true);
        assert!(!b.admit(), "open right after a failure");
        *b.state() = State::Open { until: Instant::now() };
        assert!(b.admit(), "the first request after the wait probes");
        assert!(!b.admit(), "the others wait for the probe");
        b.record(false);
        assert!(b.admit() && b.admit(), "closed again");
    }
}
