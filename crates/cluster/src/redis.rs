//! The Redis connection every cluster role shares.

use fred::prelude::*;
use std::time::Duration;
use switchboard_domain::ErrorKind;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("REDIS_URL is not a Redis URL: {0}")]
    Config(String),
    #[error("redis: {0}")]
    Redis(#[from] fred::error::Error),
    #[error("redis did not answer in time")]
    Timeout,
}

impl ClusterError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            ClusterError::Config(_) => ErrorKind::Internal,
            ClusterError::Redis(_) | ClusterError::Timeout => ErrorKind::Unavailable,
        }
    }
}

/// How long a readiness ping may take before Redis counts as unreachable.
const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// A shared, self-reconnecting Redis client.
#[derive(Clone)]
pub struct Redis {
    client: Client,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis").finish_non_exhaustive()
    }
}

impl Redis {
    /// Starts the connection. Waits up to `wait` for it; a Redis that is down at
    /// start is logged and retried in the background, not fatal.
    pub async fn connect(url: &str, wait: Duration) -> Result<Self, ClusterError> {
        let config = Config::from_url(url).map_err(|e| ClusterError::Config(e.details().to_owned()))?;
        let client = Builder::from_config(config)
            .with_connection_config(|c| {
                c.connection_timeout = Duration::from_secs(2);
                c.internal_command_timeout = Duration::from_secs(2);
            })
            .with_performance_config(|p| {
                p.default_command_timeout = Duration::from_secs(2);
            })
            .set_policy(ReconnectPolicy::new_exponential(0, 100, 2_000, 2))
            .build()?;
        client.connect();
        match tokio::time::timeout(wait, client.wait_for_connect()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "redis is not reachable yet; retrying in the background")
            }
            Err(_) => tracing::warn!("redis is not reachable yet; retrying in the background"),
        }
        Ok(Self { client })
    }

    /// One round trip, bounded by a timeout, for readiness.
    pub async fn ping(&self) -> Result<(), ClusterError> {
        match tokio::time::timeout(PING_TIMEOUT, self.client.ping::<String>(None)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(ClusterError::Timeout),
        }
    }

    /// Closes the connection.
    pub async fn close(&self) {
        if let Err(e) = self.client.quit().await {
            tracing::debug!(error = %e, "redis quit failed");
        }
    }
}
