//! The Redis connections every cluster role shares: one for commands and one
//! subscriber (pub/sub needs its own connection), both reconnecting by themselves.
//! After a reconnect the subscriber re-subscribes its channels, and roles that may
//! have missed messages meanwhile hear about it through [`Redis::reconnects`].

use fred::clients::SubscriberClient;
use fred::prelude::*;
use fred::types::Message;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use switchboard_domain::ErrorKind;
use tokio::sync::broadcast;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("REDIS_URL is not a Redis URL: {0}")]
    Config(String),
    #[error("redis: {0}")]
    Redis(#[from] fred::error::Error),
    #[error("redis did not answer in time")]
    Timeout,
    #[error("redis is not connected")]
    Down,
    #[error("redis answered unexpectedly: {0}")]
    Unexpected(String),
    #[error("the dedupe key was already used for a different batch")]
    DedupeMismatch,
    #[error("the dedupe key was not seen, and only a replay was asked for")]
    DedupeUnseen,
}

impl ClusterError {
    /// The same error again, for each caller a failed batch answers.
    pub(crate) fn again(&self) -> Self {
        match self {
            ClusterError::Config(s) => ClusterError::Config(s.clone()),
            ClusterError::Redis(e) => ClusterError::Redis(e.clone()),
            ClusterError::Timeout => ClusterError::Timeout,
            ClusterError::Down => ClusterError::Down,
            ClusterError::Unexpected(s) => ClusterError::Unexpected(s.clone()),
            ClusterError::DedupeMismatch => ClusterError::DedupeMismatch,
            ClusterError::DedupeUnseen => ClusterError::DedupeUnseen,
        }
    }

    pub fn kind(&self) -> ErrorKind {
        match self {
            ClusterError::Config(_) | ClusterError::Unexpected(_) => ErrorKind::Internal,
            ClusterError::Redis(_) | ClusterError::Timeout | ClusterError::Down => ErrorKind::Unavailable,
            ClusterError::DedupeMismatch => ErrorKind::Conflict,
            ClusterError::DedupeUnseen => ErrorKind::QuotaExceeded,
        }
    }
}

/// A TLS configuration that trusts the certificates in the PEM file `ca`.
fn tls_with_roots(ca: &std::path::Path) -> Result<fred::types::config::TlsConfig, ClusterError> {
    use rustls_pki_types::pem::PemObject;
    let bad = |why: String| ClusterError::Config(format!("REDIS_CA_CERT ({}): {why}", ca.display()));
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_file_iter(ca).map_err(|e| bad(e.to_string()))? {
        roots.add(cert.map_err(|e| bad(e.to_string()))?).map_err(|e| bad(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(bad("no certificate in the file".to_owned()));
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(fred::types::config::TlsConnector::from(config).into())
}

/// Whether a connection failed on the certificate (or the TLS handshake), not
/// on reachability.
fn is_tls_failure(e: &fred::error::Error) -> bool {
    let text = e.details().to_ascii_lowercase();
    *e.kind() == fred::error::ErrorKind::Tls || text.contains("certificate") || text.contains("tls")
}

/// How long a start over TLS waits for its connections: long enough for a
/// handshake to fail on its certificate rather than time out first.
const TLS_START_WAIT: Duration = Duration::from_secs(15);

/// How long a readiness ping may take before Redis counts as unreachable.
const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// Command connections per node. Redis runs scripts one at a time per
/// connection (a client cannot pipeline EVALSHA), and every publish, rate-limit
/// lease and presence change is a script, so they are spread over several.
const COMMAND_CONNECTIONS: usize = 8;

/// Pub/sub messages the subscriber buffers for this node's readers.
const SUBSCRIBER_CHANNEL: usize = 16_384;

/// Shared, self-reconnecting Redis connections: a few for commands, one subscriber.
#[derive(Clone)]
pub struct Redis {
    clients: Arc<[Client]>,
    next: Arc<AtomicUsize>,
    subscriber: SubscriberClient,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis").finish_non_exhaustive()
    }
}

impl Redis {
    /// Starts the connections. Waits up to `wait` for them; a Redis that is down
    /// at start is logged and retried in the background, not fatal, but one
    /// whose TLS certificate does not verify stops the start (that is a
    /// configuration to fix, not an outage to ride out). A `rediss://` URL
    /// verifies the server against `ca` (PEM) when given, else the system's
    /// roots.
    pub async fn connect(
        url: &str,
        ca: Option<&std::path::Path>,
        wait: Duration,
    ) -> Result<Self, ClusterError> {
        let mut config = Config::from_url(url).map_err(|e| ClusterError::Config(e.details().to_owned()))?;
        if let Some(ca) = ca {
            if config.tls.is_none() {
                return Err(ClusterError::Config(
                    "REDIS_CA_CERT is set but REDIS_URL is not rediss://".to_owned(),
                ));
            }
            config.tls = Some(tls_with_roots(ca)?);
        }
        let tls = config.tls.is_some();
        let mut builder = Builder::from_config(config);
        builder
            .with_connection_config(|c| {
                // Pipelined small commands must not wait for Nagle's algorithm.
                c.tcp.nodelay = Some(true);
                c.connection_timeout = Duration::from_secs(2);
                c.internal_command_timeout = Duration::from_secs(2);
            })
            .with_performance_config(|p| {
                p.default_command_timeout = Duration::from_secs(2);
            })
            .set_policy(ReconnectPolicy::new_exponential(0, 100, 2_000, 2));
        let clients: Vec<Client> =
            (0..COMMAND_CONNECTIONS).map(|_| builder.build()).collect::<Result<_, _>>()?;
        // Topic fan-out arrives through the subscriber's message channel; a reader
        // that falls this far behind resynchronises from history instead. Only the
        // subscriber gets the deep channels: each client preallocates every one of
        // its broadcast channels at this capacity.
        builder.with_performance_config(|p| p.broadcast_channel_capacity = SUBSCRIBER_CHANNEL);
        let subscriber = builder.build_subscriber_client()?;
        // Connection errors are listened for before anything connects: a
        // handshake that fails at once must not slip past before anyone waits.
        let mut errors = subscriber.error_rx();
        for client in &clients {
            client.connect();
        }
        subscriber.connect();
        let both = async {
            for client in &clients {
                client.wait_for_connect().await?;
            }
            subscriber.wait_for_connect().await
        };
        // Every failed attempt (the first, and each reconnect after it) is
        // reported here; a certificate that does not verify stops the start.
        let tls_failure = async {
            loop {
                match errors.recv().await {
                    Ok((e, _)) if is_tls_failure(&e) => return e,
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                        std::future::pending::<()>().await
                    }
                }
            }
        };
        // Over TLS the handshake gets time to fail even on a loaded machine (a
        // Redis that is down answers at once with a refused connection).
        let wait = if tls { wait.max(TLS_START_WAIT) } else { wait };
        let outcome = tokio::time::timeout(wait, async {
            tokio::select! {
                connected = both => connected,
                failure = tls_failure => Err(failure),
            }
        })
        .await;
        match outcome {
            Ok(Ok(_)) => {}
            Ok(Err(e)) if is_tls_failure(&e) => {
                for client in &clients {
                    let _ = client.quit().await;
                }
                let _ = subscriber.quit().await;
                return Err(ClusterError::Config(format!(
                    "TLS to Redis failed (check REDIS_CA_CERT and the host name in REDIS_URL against the server's certificate): {}",
                    e.details()
                )));
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "redis is not reachable yet; retrying in the background")
            }
            Err(_) => tracing::warn!("redis is not reachable yet; retrying in the background"),
        }
        // Re-subscribes every tracked channel after each reconnect.
        subscriber.manage_subscriptions();
        Ok(Self { clients: clients.into(), next: Arc::new(AtomicUsize::new(0)), subscriber })
    }

    /// The command connection while it is up, for the roles in this crate; `None`
    /// while it is down, so callers fall back at once instead of queueing behind
    /// the reconnect and waiting out the command timeout on a hot path.
    pub(crate) fn live(&self) -> Option<&Client> {
        let client = self.client();
        client.is_connected().then_some(client)
    }

    /// Subscribes to `channel` (kept across reconnects).
    pub(crate) async fn subscribe(&self, channel: &str) -> Result<(), ClusterError> {
        self.subscriber.subscribe(channel).await?;
        Ok(())
    }

    /// Whether Redis is a cluster, where topic channels are sharded
    /// (`SSUBSCRIBE`/`SPUBLISH`) so fan-out capacity grows with the shards.
    pub(crate) fn sharded(&self) -> bool {
        self.client().is_clustered()
    }

    /// Subscribes to a topic channel, sharded on a cluster (kept across reconnects).
    pub(crate) async fn subscribe_topic(&self, channel: &str) -> Result<(), ClusterError> {
        if self.sharded() {
            self.subscriber.ssubscribe(channel).await?;
        } else {
            self.subscriber.subscribe(channel).await?;
        }
        Ok(())
    }

    pub(crate) async fn unsubscribe_topic(&self, channel: &str) -> Result<(), ClusterError> {
        if self.sharded() {
            self.subscriber.sunsubscribe(channel).await?;
        } else {
            self.subscriber.unsubscribe(channel).await?;
        }
        Ok(())
    }

    /// A command connection (round robin), even while it reconnects (commands queue).
    pub(crate) fn client(&self) -> &Client {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.clients.len();
        &self.clients[i]
    }

    /// Every pub/sub message this node receives.
    pub(crate) fn messages(&self) -> broadcast::Receiver<Message> {
        self.subscriber.message_rx()
    }

    /// Fires after the subscriber (re)connects: messages may have been missed.
    pub(crate) fn reconnects(&self) -> broadcast::Receiver<fred::types::config::Server> {
        self.subscriber.reconnect_rx()
    }

    /// One round trip, bounded by a timeout, for readiness.
    pub async fn ping(&self) -> Result<(), ClusterError> {
        match tokio::time::timeout(PING_TIMEOUT, self.client().ping::<String>(None)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(ClusterError::Timeout),
        }
    }

    /// Closes both connections.
    pub async fn close(&self) {
        let mut results = vec![self.subscriber.quit().await];
        for client in self.clients.iter() {
            results.push(client.quit().await);
        }
        for result in results {
            if let Err(e) = result {
                tracing::debug!(error = %e, "redis quit failed");
            }
        }
    }
}

/// Runs one Redis call named `call` (a script's or a command's name, a fixed
/// word): its duration and outcome go to the metrics and, when traces are on,
/// it is a client span of its own.
pub(crate) async fn timed<T, E>(
    call: &'static str,
    f: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, E> {
    use tracing::Instrument;
    let started = std::time::Instant::now();
    let result = if switchboard_telemetry::trace::in_trace() {
        let span = tracing::info_span!(
            "redis",
            "otel.name" = call,
            "otel.kind" = "client",
            "db.system.name" = "redis",
            "db.operation.name" = call,
        );
        f.instrument(span).await
    } else {
        f.await
    };
    switchboard_telemetry::metrics().redis(call, result.is_ok(), started.elapsed());
    result
}
