//! What every handler can reach.

use crate::client_addr::TrustedProxies;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use switchboard_auth::{ApiKeyHasher, AuthFailures, PlatformKey, Verifier};
use switchboard_cluster::{RateLimiter, Redis};
use switchboard_db::Database;
use switchboard_realtime::{Directory, Realtime};
use tokio::sync::Notify;

#[derive(Clone, Debug)]
pub struct AppState {
    pub db: Database,
    pub redis: Option<Redis>,
    pub node_id: Arc<str>,
    pub verifier: Arc<Verifier>,
    pub key_hasher: ApiKeyHasher,
    /// The operator's credential; `None` disables the platform routes.
    pub platform_key: Option<PlatformKey>,
    /// Failed authentications per client address (shared with the handshake).
    pub auth_failures: Arc<AuthFailures>,
    pub trusted_proxies: TrustedProxies,
    /// New Socket.IO sessions per client address.
    pub sessions: Arc<crate::ratelimit::Keyed>,
    pub directory: Directory,
    pub limiter: RateLimiter,
    pub realtime: Realtime,
    /// Documents, memories and search; `None` only in states built without it.
    pub knowledge: Option<switchboard_knowledge::Knowledge>,
    /// Wakes this node's ingestion worker when a job was queued here.
    pub knowledge_wake: switchboard_knowledge::worker::Wake,
    /// How long a person has to decide an approval a tool policy asks for.
    pub approval_ttl: std::time::Duration,
    /// The master keys that wrap tenants' data keys; `None` without
    /// `SECRETS_MASTER_KEY` (the secrets routes then answer 503).
    pub vault: Option<Arc<switchboard_vault::MasterKeys>>,
    /// `WEBHOOK_ALLOW_PRIVATE`: webhook endpoints may be private or loopback.
    pub webhook_allow_private: bool,
    draining: Arc<AtomicBool>,
    shutdown: Arc<Notify>,
}

impl AppState {
    #[allow(clippy::too_many_arguments)] // each is one shared service, wired once at start
    pub fn new(
        db: Database,
        redis: Option<Redis>,
        verifier: Arc<Verifier>,
        key_hasher: ApiKeyHasher,
        directory: Directory,
        limiter: RateLimiter,
        realtime: Realtime,
        node_id: impl Into<Arc<str>>,
    ) -> Self {
        Self {
            db,
            redis,
            node_id: node_id.into(),
            verifier,
            key_hasher,
            platform_key: None,
            auth_failures: Arc::new(AuthFailures::default()),
            trusted_proxies: TrustedProxies::default(),
            sessions: crate::ratelimit::new_sessions(),
            directory,
            limiter,
            realtime,
            knowledge: None,
            knowledge_wake: Default::default(),
            approval_ttl: std::time::Duration::from_secs(24 * 3600),
            vault: None,
            webhook_allow_private: false,
            draining: Arc::new(AtomicBool::new(false)),
            shutdown: Arc::new(Notify::new()),
        }
    }

    /// Counts failed authentications in `failures` (the handshake's too) and
    /// believes `X-Forwarded-For` from `proxies`.
    pub fn with_clients(mut self, failures: Arc<AuthFailures>, proxies: TrustedProxies) -> Self {
        self.auth_failures = failures;
        self.trusted_proxies = proxies;
        self
    }

    /// Seals tenant secrets under `keys`.
    pub fn with_vault(mut self, keys: Option<Arc<switchboard_vault::MasterKeys>>) -> Self {
        self.vault = keys;
        self
    }

    /// How long approvals wait for a decision before they expire.
    pub fn with_approval_ttl(mut self, ttl: std::time::Duration) -> Self {
        self.approval_ttl = ttl;
        self
    }

    /// Serves knowledge through `knowledge`, waking `wake`'s worker on new jobs.
    pub fn with_knowledge(
        mut self,
        knowledge: switchboard_knowledge::Knowledge,
        wake: switchboard_knowledge::worker::Wake,
    ) -> Self {
        self.knowledge = Some(knowledge);
        self.knowledge_wake = wake;
        self
    }

    pub fn knowledge(&self) -> Result<&switchboard_knowledge::Knowledge, crate::error::ApiError> {
        self.knowledge.as_ref().ok_or_else(|| {
            crate::error::ApiError::new(
                switchboard_domain::ErrorKind::Unavailable,
                "knowledge is not available on this node",
            )
        })
    }

    pub fn wake_knowledge(&self) {
        self.knowledge_wake.wake();
    }

    /// Tells `project:<id>` how a document stands (`document:updated`).
    pub async fn announce_document(
        &self,
        tenant: switchboard_domain::TenantId,
        doc: &switchboard_db::repo::knowledge::Document,
    ) {
        let update = switchboard_knowledge::worker::update_of(tenant, doc);
        self.publish_update(update).await;
    }

    /// Publishes a worker's `document:updated`.
    pub async fn publish_update(&self, update: switchboard_knowledge::worker::Update) {
        let topic = switchboard_domain::Topic::Project(switchboard_domain::ProjectId::from(update.project));
        let Ok(data) = serde_json::value::to_raw_value(&update.data) else { return };
        if let Err(kind) =
            self.realtime.publish(update.tenant, &topic, "document:updated", &data, None, None).await
        {
            tracing::warn!(?kind, project_id = %update.project, "document update not announced");
        }
    }

    /// Enables the platform routes for callers presenting `key`.
    pub fn with_platform_key(mut self, key: Option<PlatformKey>) -> Self {
        self.platform_key = key;
        self
    }

    /// Asks the server to drain and stop (`POST /admin/drain`).
    pub fn request_shutdown(&self) {
        self.start_draining();
        self.shutdown.notify_one();
    }

    /// Completes once [`Self::request_shutdown`] was called.
    pub async fn shutdown_requested(&self) {
        self.shutdown.notified().await
    }

    /// Marks the node as draining: readiness answers 503 from now on.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst) || self.realtime.is_draining()
    }
}
