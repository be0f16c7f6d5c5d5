//! The Socket.IO layer: the handshake guard ([`handshake`]), topics and their
//! authorization ([`subscribe`]), presence ([`presence`]), `message:send`
//! ([`messages`]), what every event goes through (`event`), event limits
//! ([`limits`]), the bus ↔ local rooms ([`hub`]) and
//! drain ([`drain`]). [`codes`] is the one place an
//! [`ErrorKind`](switchboard_domain::ErrorKind) becomes what a Socket.IO client
//! sees.
//!
//! [`Realtime`] is also what REST reaches for: [`Realtime::publish`] (broadcasts,
//! messages, runs), [`Realtime::publish_batch`] (streamed deltas), [`Realtime::presence`], [`Realtime::disconnect_user`] and
//! [`Realtime::drain`] work across every node.

pub mod approvals;
pub mod codes;
pub mod directory;
pub mod drain;
mod envelope;
mod event;
mod expiry;
pub mod handshake;
mod hub;
mod lagging;
pub mod limits;
pub mod messages;
pub mod presence;
mod session;
pub mod stats;
pub mod subscribe;

pub use directory::{Directory, DirectoryError, RunInfo, TenantInfo};
pub use envelope::From;
pub use session::Session;
pub use subscribe::check_event_name;

/// The Socket.IO service: Engine.IO's requests (under `/socket.io`), and 404
/// for any other. Clones share its sessions.
pub type SocketIoService = socketioxide::service::SocketIoService<engineioxide::service::NotFoundService>;

use serde_json::value::RawValue;
use socketioxide::SocketIo;
use socketioxide::handler::ConnectHandler;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use switchboard_auth::Verifier;
use switchboard_cluster::{Dedupe, HistoryConfig, Offset, Presence, Published, RateLimiter, Shares, Topics};
use switchboard_db::Database;
use switchboard_domain::{ErrorKind, Limits, TenantId, Topic, UserId};

/// Node-wide settings of the Socket.IO layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RealtimeConfig {
    /// Events one socket may send per second (also bounded by its tenant's rate).
    pub socket_events_per_second: u32,
    /// Most events a `subscribe` with `since` replays; more means `recovered: false`.
    pub replay_limit: u32,
    /// Most bytes of events one replay sends; more means `recovered: false`.
    pub replay_bytes: u32,
    /// Per-topic history: count and age.
    pub history: HistoryConfig,
    /// Packets queued for one socket before it counts as too slow.
    pub socket_buffer: usize,
    /// Largest Socket.IO packet accepted from a client (bytes).
    pub max_packet_bytes: u64,
    /// How long a drain takes to close every socket.
    pub drain_window: Duration,
    /// Client publishes (socket `publish`, `POST /broadcast`) this node has
    /// under way at once; past it, more are refused with `rate_limited`
    /// until some finish, so an overloaded node pushes back instead of
    /// queueing without bound (`NODE_PUBLISHES_IN_FLIGHT`).
    pub publishes_in_flight: usize,
}

impl Default for RealtimeConfig {
    fn default() -> Self {
        Self {
            socket_events_per_second: 100,
            replay_limit: 1_000,
            replay_bytes: 4 * 1024 * 1024,
            history: HistoryConfig::default(),
            socket_buffer: 256,
            max_packet_bytes: 1024 * 1024,
            drain_window: Duration::from_secs(5),
            publishes_in_flight: 128,
        }
    }
}

/// What the layer needs from the rest of the node.
#[derive(Clone, Debug)]
pub struct Deps {
    pub db: Database,
    pub redis: Option<switchboard_cluster::Redis>,
    pub verifier: Arc<Verifier>,
    /// Failed authentications per client address (shared with REST).
    pub auth_failures: Arc<switchboard_auth::AuthFailures>,
    pub directory: Directory,
    /// Limits, and through it this process's membership in the cluster.
    pub limiter: RateLimiter,
}

pub(crate) struct Inner {
    pub(crate) config: RealtimeConfig,
    pub(crate) db: Database,
    pub(crate) verifier: Arc<Verifier>,
    pub(crate) auth_failures: Arc<switchboard_auth::AuthFailures>,
    pub(crate) directory: Directory,
    pub(crate) limiter: RateLimiter,
    pub(crate) topics: Topics,
    pub(crate) presence: Presence,
    /// Each tenant's open connections, cluster-wide.
    pub(crate) connections: Shares,
    /// Each tenant's presence entries, cluster-wide.
    pub(crate) presence_entries: Shares,
    pub(crate) expiries: expiry::Expiries,
    pub(crate) hub: hub::Hub,
    pub(crate) budgets: limits::TenantBudgets,
    pub(crate) draining: AtomicBool,
    pub(crate) io: OnceLock<SocketIo>,
    /// Events this node published to topics (client and server ones).
    pub(crate) published: AtomicU64,
    /// Room for client publishes under way ([`RealtimeConfig::publishes_in_flight`]).
    pub(crate) publishing: tokio::sync::Semaphore,
    pub(crate) handshakes: stats::Handshakes,
    pub(crate) lagging: lagging::LaggingStats,
    /// The client events' handlers, built once and shared by every socket.
    pub(crate) handlers: Arc<socketioxide::socket::MessageHandlers>,
}

/// The Socket.IO layer's handle; cheap to clone.
#[derive(Clone)]
pub struct Realtime {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Realtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Realtime").field("config", &self.inner.config).finish_non_exhaustive()
    }
}

/// The control topic every node listens to (disconnects, ...).
pub(crate) const CONTROL_ROOM: &str = "sys:control";

impl Realtime {
    /// Builds the Socket.IO service to serve and starts the bus reader.
    /// Call from within a tokio runtime.
    pub async fn new(deps: Deps, config: RealtimeConfig) -> (Self, SocketIoService) {
        let (topics, deliveries) = Topics::new(deps.redis.clone(), config.history);
        let nodes = deps.limiter.nodes().clone();
        let presence = Presence::new(deps.redis.clone(), nodes.clone());
        let connections = Shares::new("conns", deps.redis.clone(), nodes.clone());
        let presence_entries = Shares::new("presence", deps.redis.clone(), nodes);
        let inner = Arc::new(Inner {
            config,
            db: deps.db,
            verifier: deps.verifier,
            auth_failures: deps.auth_failures,
            directory: deps.directory,
            limiter: deps.limiter.clone(),
            topics,
            presence,
            connections,
            presence_entries,
            expiries: expiry::Expiries::default(),
            hub: hub::Hub::default(),
            budgets: limits::TenantBudgets::default(),
            draining: AtomicBool::new(false),
            io: OnceLock::new(),
            published: AtomicU64::new(0),
            publishing: tokio::sync::Semaphore::new(config.publishes_in_flight.max(1)),
            handshakes: stats::Handshakes::default(),
            lagging: lagging::LaggingStats::default(),
            handlers: Arc::new(handshake::handlers()),
        });
        let rt = Self { inner };
        let (service, io) = SocketIo::builder()
            .with_state(rt.clone())
            .max_buffer_size(config.socket_buffer)
            .max_payload(config.max_packet_bytes)
            .ws_max_message_size(config.max_packet_bytes as usize)
            // Read in 512-byte steps: a client's events are mostly smaller, and the
            // buffer is kept for the socket's life (the buffer grows for a larger frame).
            .ws_read_buffer_size(512)
            .ping_interval(Duration::from_secs(25))
            .ping_timeout(Duration::from_secs(20))
            .connect_timeout(Duration::from_secs(10))
            .build_svc();
        io.ns("/", handshake::on_connect.with(handshake::guard));
        let _ = rt.inner.io.set(io.clone());
        // The control topic is always subscribed; a failure here (Redis still
        // connecting) is retried by the resubscription after reconnect.
        if let Err(e) = rt.inner.topics.subscribe(CONTROL_ROOM).await {
            tracing::warn!(error = %e, "control topic not subscribed yet");
        }
        tokio::spawn(hub::dispatch(Arc::downgrade(&rt.inner), io, deliveries));
        tokio::spawn(presence::reaper(Arc::downgrade(&rt.inner)));
        tokio::spawn(expiry::sweeper(Arc::downgrade(&rt.inner)));
        (rt, service)
    }

    /// Room for one client publish, to hold while it is under way; `None`
    /// when this node already has as many under way as it takes: refuse it
    /// with `rate_limited` (the caller tries again shortly).
    pub fn publish_slot(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        let slot = self.inner.publishing.try_acquire().ok();
        if slot.is_none() {
            switchboard_telemetry::metrics().limited("node_publishes");
        }
        slot
    }

    /// How long a client refused for want of a publish slot should wait.
    pub const PUBLISH_RETRY: Duration = Duration::from_millis(50);

    /// Publishes `event` with `data` on `topic` in `tenant`, to subscribers on
    /// every node (except the socket `except`, the sender), and into history.
    pub async fn publish(
        &self,
        tenant: TenantId,
        topic: &Topic,
        event: &str,
        data: &RawValue,
        from: Option<&From>,
        except: Option<&str>,
    ) -> Result<Offset, ErrorKind> {
        let room = topic.room(tenant);
        let payload = envelope::stored(event, &topic.to_string(), data, from, except)?;
        let offset = self.inner.topics.publish(&room, &payload).await.map_err(|e| {
            tracing::error!(error = %e, room, "publish failed");
            e.kind()
        })?;
        self.inner.published.fetch_add(1, Ordering::Relaxed);
        Ok(offset)
    }

    /// Publishes one `event` per item of `data` on `topic`, in order and with
    /// nothing else in between (streamed deltas). With `dedupe`, a second call
    /// with the same key and fingerprint (on any node, for a while: see
    /// [`switchboard_cluster::DEDUPE_TTL`]) publishes nothing and answers with
    /// the first call's offsets and `replayed: true`; with another
    /// fingerprint it is a conflict.
    pub async fn publish_batch(
        &self,
        tenant: TenantId,
        topic: &Topic,
        event: &str,
        data: &[Box<RawValue>],
        from: Option<&From>,
        dedupe: Option<Dedupe<'_>>,
    ) -> Result<Published, ErrorKind> {
        let room = topic.room(tenant);
        let name = topic.to_string();
        let payloads = data
            .iter()
            .map(|d| envelope::stored(event, &name, d, from, None))
            .collect::<Result<Vec<String>, _>>()?;
        let payloads: Vec<&str> = payloads.iter().map(String::as_str).collect();
        let published = self.inner.topics.publish_batch(&room, &payloads, dedupe).await.map_err(|e| {
            if e.kind() != ErrorKind::Conflict {
                tracing::error!(error = %e, room, "publish failed");
            }
            e.kind()
        })?;
        if !published.replayed {
            self.inner.published.fetch_add(published.count as u64, Ordering::Relaxed);
        }
        Ok(published)
    }

    /// Charges `bytes` that a client is about to add to topic history to its
    /// tenant's history quota (`max_history_bytes` per history TTL); refused
    /// with how long until there is room. Server events are not charged: they
    /// are bounded by the writes behind them and carry previews only.
    pub async fn charge_history(
        &self,
        tenant: TenantId,
        limits: &Limits,
        bytes: usize,
    ) -> Result<(), Duration> {
        let quota = limits::Spend::HistoryBytes.quota(limits, self.inner.config.history.ttl);
        let n = u32::try_from(bytes).unwrap_or(u32::MAX);
        self.inner.budgets.spend(&self.inner.limiter, tenant, limits::Spend::HistoryBytes, quota, n).await
    }

    /// Charges one dedupe key of a streamed batch to the tenant's quota
    /// (`max_dedupe_keys` per 15 minutes); refused with how long to wait.
    pub async fn charge_dedupe_key(&self, tenant: TenantId, limits: &Limits) -> Result<(), Duration> {
        let quota = limits::Spend::DedupeKeys.quota(limits, self.inner.config.history.ttl);
        self.inner.budgets.spend(&self.inner.limiter, tenant, limits::Spend::DedupeKeys, quota, 1).await
    }

    /// Takes `n` events from `tenant`'s cluster-wide event budget (its
    /// `events_per_second`), all or none; refused with how long to wait.
    pub async fn take_events(&self, tenant: TenantId, per_second: u32, n: u32) -> Result<(), Duration> {
        self.inner.budgets.take_n(&self.inner.limiter, tenant, per_second, n).await
    }

    /// The presence entries on `topic` in `tenant`, from every node.
    pub async fn presence(
        &self,
        tenant: TenantId,
        topic: &Topic,
    ) -> Result<Vec<serde_json::Value>, ErrorKind> {
        presence::list(&self.inner, &topic.room(tenant)).await
    }

    /// Disconnects every socket of `user` in `tenant`, on every node; the number
    /// is not known in advance (sockets on other nodes), so nothing is returned.
    pub async fn disconnect_user(&self, tenant: TenantId, user: UserId) -> Result<(), ErrorKind> {
        hub::send_control(&self.inner, &hub::Control::Disconnect { tenant, user }).await
    }

    /// Disconnects every socket of `tenant` on every node (it was suspended).
    pub async fn disconnect_tenant(&self, tenant: TenantId) -> Result<(), ErrorKind> {
        hub::send_control(&self.inner, &hub::Control::DisconnectTenant { tenant }).await
    }

    /// Whether `ctx`'s user may subscribe to `topic` (cached briefly).
    pub async fn may_subscribe(
        &self,
        ctx: &switchboard_db::TenantContext,
        topic: &Topic,
    ) -> Result<bool, ErrorKind> {
        self.inner.directory.may_subscribe(ctx, topic).await.map_err(|e| e.kind())
    }

    /// Events this node has published to topics since it started.
    pub fn events_published(&self) -> u64 {
        self.inner.published.load(Ordering::Relaxed)
    }

    /// Handshakes this node accepted and refused since it started.
    pub fn handshakes(&self) -> &stats::Handshakes {
        &self.inner.handshakes
    }

    /// Subscribers this node took off a topic after they missed events (to be
    /// told `system:lagging`), and those of them it disconnected because they
    /// could not take even the notice, since it started.
    pub fn lagging(&self) -> (u64, u64) {
        let stats = &self.inner.lagging;
        (stats.detached.load(Ordering::Relaxed), stats.disconnects.load(Ordering::Relaxed))
    }

    /// Topics this node has local subscribers for.
    pub fn local_topics(&self) -> usize {
        self.inner.hub.len()
    }

    /// Sockets connected to this node.
    pub fn local_sockets(&self) -> usize {
        self.inner.io.get().map(|io| io.sockets().len()).unwrap_or(0)
    }

    pub fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::SeqCst)
    }

    /// Refuses new connections from now on, tells every socket `system:drain` and
    /// closes them in batches over the drain window. Returns when all are closed.
    pub async fn drain(&self) {
        drain::drain(&self.inner).await
    }
}
