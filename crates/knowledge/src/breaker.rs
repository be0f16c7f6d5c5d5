//! A circuit breaker for an outside service (an embedding provider, a
//! reranker). Closed, it lets calls through and counts consecutive failures;
//! at `threshold` it opens and refuses every call at once for `cool_down`;
//! then it is half-open: one call (the probe) goes through while the others
//! are still refused; the probe's success closes it, its failure opens it
//! again. Its state is in the metrics (`switchboard_breaker_state`).

use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed,
    Open,
    HalfOpen,
}

#[derive(Debug)]
enum Inner {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// A probe is out; `since` bounds how long a lost probe blocks others.
    Probing {
        since: Instant,
    },
}

#[derive(Debug)]
pub struct Breaker {
    name: &'static str,
    threshold: u32,
    cool_down: Duration,
    inner: Mutex<Inner>,
}

/// Leave to call: report how it went with [`Breaker::succeeded`] or
/// [`Breaker::failed`].
#[derive(Debug)]
#[must_use]
pub struct Permit {
    probe: bool,
}

impl Breaker {
    pub fn new(name: &'static str, threshold: u32, cool_down: Duration) -> Self {
        let b = Self {
            name,
            threshold: threshold.max(1),
            cool_down,
            inner: Mutex::new(Inner::Closed { failures: 0 }),
        };
        b.publish(State::Closed);
        b
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn state(&self) -> State {
        match *self.lock() {
            Inner::Closed { .. } => State::Closed,
            Inner::Open { until } if Instant::now() < until => State::Open,
            Inner::Open { .. } | Inner::Probing { .. } => State::HalfOpen,
        }
    }

    /// Leave to call, or `None`: refused at once (open, or another call is
    /// the probe).
    pub fn permit(&self) -> Option<Permit> {
        let mut inner = self.lock();
        let now = Instant::now();
        match *inner {
            Inner::Closed { .. } => Some(Permit { probe: false }),
            Inner::Open { until } if now >= until => {
                *inner = Inner::Probing { since: now };
                drop(inner);
                self.publish(State::HalfOpen);
                Some(Permit { probe: true })
            }
            // A probe that never reported (its task was dropped) frees the way after a cool-down.
            Inner::Probing { since } if now.duration_since(since) >= self.cool_down => {
                *inner = Inner::Probing { since: now };
                Some(Permit { probe: true })
            }
            _ => {
                drop(inner);
                switchboard_telemetry::metrics()
                    .breaker_refused
                    .get_or_create(&switchboard_telemetry::metrics::BreakerLabels { breaker: self.name })
                    .inc();
                None
            }
        }
    }

    pub fn succeeded(&self, permit: Permit) {
        let mut inner = self.lock();
        let was_closed = matches!(*inner, Inner::Closed { .. });
        if permit.probe || was_closed {
            *inner = Inner::Closed { failures: 0 };
        }
        drop(inner);
        if permit.probe {
            tracing::info!(breaker = self.name, "circuit breaker closed: the service answers again");
            self.publish(State::Closed);
        }
    }

    pub fn failed(&self, permit: Permit) {
        let mut inner = self.lock();
        let open = match *inner {
            Inner::Closed { failures } if !permit.probe => {
                let failures = failures + 1;
                if failures >= self.threshold {
                    true
                } else {
                    *inner = Inner::Closed { failures };
                    false
                }
            }
            _ => permit.probe,
        };
        if open {
            *inner = Inner::Open { until: Instant::now() + self.cool_down };
        }
        drop(inner);
        if open {
            tracing::warn!(
                breaker = self.name,
                cool_down_ms = self.cool_down.as_millis() as u64,
                "circuit breaker open"
            );
            self.publish(State::Open);
        }
    }

    fn publish(&self, state: State) {
        let value = match state {
            State::Closed => 0,
            State::Open => 1,
            State::HalfOpen => 2,
        };
        switchboard_telemetry::metrics()
            .breaker_state
            .get_or_create(&switchboard_telemetry::metrics::BreakerLabels { breaker: self.name })
            .set(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_consecutive_failures_then_lets_one_probe_through() {
        let b = Breaker::new("test", 3, Duration::from_millis(50));
        for _ in 0..2 {
            let p = b.permit().expect("closed");
            b.failed(p);
        }
        // A success in between resets the count.
        let p = b.permit().expect("closed");
        b.succeeded(p);
        for _ in 0..3 {
            let p = b.permit().expect("closed");
            b.failed(p);
        }
        assert_eq!(b.state(), State::Open);
        assert!(b.permit().is_none(), "open: refused at once");
        std::thread::sleep(Duration::from_millis(60));
        let probe = b.permit().expect("half-open: one probe");
        assert!(b.permit().is_none(), "only one probe at a time");
        b.failed(probe);
        assert_eq!(b.state(), State::Open, "a failed probe opens it again");
        std::thread::sleep(Duration::from_millis(60));
        let probe = b.permit().expect("the next probe");
        b.succeeded(probe);
        assert_eq!(b.state(), State::Closed);
        assert!(b.permit().is_some());
    }
}
