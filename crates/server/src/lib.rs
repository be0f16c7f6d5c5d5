//! The `switchboard` binary's work: typed [`config`], [`telemetry`], wiring the
//! crates into an [`Application`], graceful shutdown, and the `serve`, `migrate`
//! and `token` commands. `main.rs` only parses the command line and calls these.

pub mod config;
pub mod telemetry;
pub mod token;

use config::Config;
use secrecy::ExposeSecret;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;
use switchboard_api::AppState;
use switchboard_cluster::Redis;
use switchboard_db::Database;
use tokio::net::TcpListener;

/// Entries the per-node (L1) cache holds at most.
const CACHE_CAPACITY: u64 = 100_000;
/// How often each node looks for approvals past their time.
const APPROVAL_SWEEP: Duration = Duration::from_secs(2);

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error("database: {0}")]
    Db(#[from] switchboard_db::DbError),
    #[error("redis: {0}")]
    Redis(#[from] switchboard_cluster::ClusterError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("server: {0}")]
    Serve(std::io::Error),
    #[error("secrets: {0}")]
    Secrets(String),
}

/// A built server, bound to its port and its metrics address, not yet serving.
pub struct Application {
    listener: TcpListener,
    metrics: TcpListener,
    state: AppState,
    app: switchboard_api::App,
    /// This node's ingestion worker and the name it claims jobs under.
    worker: (tokio::task::JoinHandle<()>, String),
    /// This node's sweep of expired approvals.
    expiry: tokio::task::JoinHandle<()>,
    webhooks: Option<tokio::task::JoinHandle<()>>,
}

impl Application {
    /// Connects to Postgres (and Redis when configured), checks the database role
    /// and binds the listener. Port 0 binds a free port; see [`Self::local_addr`].
    pub async fn build(config: &Config) -> Result<Self, StartError> {
        let db = Database::connect(config.database_url.expose_secret()).await?;
        let redis = match &config.redis_url {
            Some(url) => Some(
                Redis::connect(url.expose_secret(), config.redis_ca_cert.as_deref(), Duration::from_secs(3))
                    .await?,
            ),
            None => {
                tracing::warn!(
                    "REDIS_URL is not set: single-node mode with in-process fan-out, limits and cache"
                );
                None
            }
        };
        let verifier = switchboard_auth::Verifier::connect(&switchboard_auth::JwtConfig {
            secret: config.jwt_secret.clone(),
            jwks_url: config.jwt_jwks_url.clone(),
            issuer: config.jwt_issuer.clone(),
            audience: config.jwt_audience.clone(),
        })
        .await;
        let hasher = switchboard_auth::ApiKeyHasher::new(config.api_key_secret.expose_secret().as_bytes());
        let cache = switchboard_cluster::Cache::new(
            redis.clone(),
            CACHE_CAPACITY,
            Duration::from_secs(60),
            Duration::from_secs(300),
        )
        .await;
        let directory =
            switchboard_realtime::Directory::new(db.clone(), cache, switchboard_domain::Limits::default());
        directory.watch_missed_invalidations();
        // This process in the cluster: a restarted node is a new instance, so
        // nothing the previous one held (connection shares, presence) is mistaken
        // for its own.
        let instance = format!("{}#{:08x}", config.node_id, uuid::Uuid::new_v4().as_u128() as u32);
        let nodes = switchboard_cluster::Nodes::new(redis.clone(), &instance);
        nodes.join().await;
        let limiter = switchboard_cluster::RateLimiter::new(redis.clone(), nodes);
        let verifier = std::sync::Arc::new(verifier);
        let per_second = config.auth_failures_per_second;
        let auth_failures = std::sync::Arc::new(switchboard_auth::AuthFailures::new(
            per_second.saturating_mul(4),
            per_second,
        ));
        let deps = switchboard_realtime::Deps {
            db: db.clone(),
            redis: redis.clone(),
            verifier: verifier.clone(),
            auth_failures: auth_failures.clone(),
            directory: directory.clone(),
            limiter: limiter.clone(),
        };
        let (realtime, engine_io) = switchboard_realtime::Realtime::new(deps, config.realtime).await;
        let knowledge = switchboard_knowledge::Knowledge::new(db.clone(), config.knowledge.clone());
        let wake = switchboard_knowledge::worker::Wake::default();
        let state =
            AppState::new(db, redis, verifier, hasher, directory, limiter, realtime, config.node_id.clone())
                .with_platform_key(config.platform_key.clone())
                .with_clients(auth_failures, config.trusted_proxies.clone())
                .with_knowledge(knowledge.clone(), wake.clone())
                .with_approval_ttl(config.approval_ttl)
                .with_vault(config.secrets.clone());
        let mut state = state;
        state.webhook_allow_private = config.webhooks.allow_private;
        // Every node works the embedding queue; its updates go out as
        // `document:updated` on the documents' projects.
        let (updates, mut updated) = tokio::sync::mpsc::channel(1024);
        let announcer = state.clone();
        tokio::spawn(async move {
            while let Some(update) = updated.recv().await {
                announcer.publish_update(update).await;
            }
        });
        let worker = tokio::spawn(switchboard_knowledge::worker::run(
            knowledge,
            switchboard_knowledge::worker::WorkerSettings {
                // A job waiting on a provider that is down tries again once its breaker may let it.
                wait: config.knowledge.patience.unwrap_or_default().breaker_cool_down,
                ..switchboard_knowledge::worker::WorkerSettings::new(instance.clone())
            },
            updates,
            wake,
        ));
        // Every node expires approvals past their time (once each, whichever node gets there).
        let expiry =
            tokio::spawn(switchboard_realtime::approvals::run_expiry(state.realtime.clone(), APPROVAL_SWEEP));
        // Every node delivers outbound webhooks (their secrets need the master key).
        let webhooks = config.secrets.clone().map(|vault| {
            let settings =
                switchboard_webhooks::worker::Settings { node: instance.clone(), ..config.webhooks.clone() };
            tokio::spawn(switchboard_webhooks::worker::run(state.db.clone(), vault, settings))
        });
        // One Engine.IO service (it holds the sessions): the router serves it
        // the requests that open a session, and an open session's requests (a
        // long-polling client's) reach it by a path of their own, lighter than
        // the router's.
        let sessions = switchboard_api::session_service(engine_io.clone(), &config.cors_allowed_origins);
        let router = switchboard_api::router(state.clone(), &config.cors_allowed_origins, |r| {
            r.route_service("/socket.io", engine_io.clone())
                .route_service("/socket.io/", engine_io.clone())
                .route_service("/socket.io/{*rest}", engine_io)
                .layer(axum::middleware::map_request(own_handshake_request))
        });
        let app = switchboard_api::App::new(sessions, router);
        let addr = SocketAddr::new(config.host, config.port);
        let listener = TcpListener::bind(addr).await.map_err(|source| StartError::Bind { addr, source })?;
        let addr = config.metrics_addr;
        let metrics = TcpListener::bind(addr).await.map_err(|source| StartError::Bind { addr, source })?;
        Ok(Self { listener, metrics, state, app, worker: (worker, instance), expiry, webhooks })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// Where `/metrics` is served.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics.local_addr().unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// Serves until `shutdown` completes, then drains: readiness turns 503, open
    /// requests finish, connections close.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartError> {
        let metrics_addr = self.metrics_addr();
        let Self { listener, metrics, state, app, worker, expiry, webhooks } = self;
        match listener.local_addr() {
            Ok(addr) => {
                tracing::info!(addr = %addr, metrics_addr = %metrics_addr, node_id = %state.node_id, "serving")
            }
            Err(e) => tracing::warn!(error = %e, node_id = %state.node_id, "serving on an unknown address"),
        }
        // /metrics on its own listener, served until the process ends (a
        // draining node is still scraped).
        let metrics_router = switchboard_api::metrics::router(&state);
        let metrics_task = tokio::spawn(async move {
            if let Err(e) = axum::serve(metrics, metrics_router).await {
                tracing::error!(error = %e, "the metrics listener stopped");
            }
        });
        let drain_state = state.clone();
        // Small frames (socket events, acks) go out at once: no Nagle delay.
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "cannot set TCP_NODELAY");
            }
        });
        axum::serve(listener, app.into_make_service())
            .with_graceful_shutdown(async move {
                tokio::select! {
                    () = shutdown => {}
                    () = drain_state.shutdown_requested() => {}
                }
                tracing::info!("shutting down: draining");
                drain_state.start_draining();
                drain_state.realtime.drain().await;
            })
            .await
            .map_err(StartError::Serve)?;
        metrics_task.abort();
        expiry.abort();
        // Jobs this node was working go back to the queue now rather than when
        // their leases run out: another node takes them at once.
        worker.0.abort();
        if let Some(w) = &webhooks {
            w.abort();
        }
        let released = async {
            let mut tx = state.db.begin_platform().await?;
            let n = switchboard_db::repo::knowledge::release_jobs(&mut tx, &worker.1).await?;
            // Endpoints this node was delivering to: another node goes on at
            // once (a delivery cut off mid-attempt is sent again).
            switchboard_db::repo::webhooks::release_node(&mut tx, &worker.1).await?;
            tx.commit().await?;
            Ok::<_, switchboard_db::DbError>(n)
        };
        match released.await {
            Ok(0) => {}
            Ok(n) => tracing::info!(jobs = n, "embedding jobs handed back to the queue"),
            Err(e) => tracing::warn!(error = %e, "embedding jobs left to their leases"),
        }
        state.db.close().await;
        if let Some(redis) = &state.redis {
            redis.close().await;
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// Completes on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("received SIGINT"),
        () = term => tracing::info!("received SIGTERM"),
    }
}

/// `switchboard serve`.
pub async fn serve() -> Result<(), StartError> {
    let config = Config::from_env()?;
    let app = Application::build(&config).await?;
    app.run_until(shutdown_signal()).await
}

/// `switchboard migrate [--seed-demo]`: migrations as the owner, then the
/// application role; optionally the demo tenant.
pub async fn migrate(seed_demo: bool) -> Result<(), StartError> {
    let app_url = std::env::var("DATABASE_URL").ok().filter(|v| !v.trim().is_empty());
    let Some(app_url) = app_url else {
        return Err(config::ConfigError(vec![
            "DATABASE_URL: required; the application role's URL (its user and password are provisioned)"
                .to_owned(),
        ])
        .into());
    };
    let admin_url = std::env::var("DATABASE_ADMIN_URL")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| app_url.clone());
    let report = switchboard_db::migrate(&admin_url, &app_url).await?;
    tracing::info!(applied = ?report.applied, app_role = %report.app_role, created = report.app_role_created, "migrated");
    if seed_demo {
        let db = Database::connect(&app_url).await?;
        switchboard_db::repo::seed::demo(&db).await?;
        db.close().await;
        tracing::info!(tenant_id = %switchboard_db::repo::seed::DEMO_TENANT, "demo tenant seeded");
    }
    Ok(())
}

/// `switchboard reembed [--tenant <id>]`: queues every ready document and
/// embedded memory whose vectors came from another model than this
/// configuration's, on every tenant (or one); the nodes' workers embed them
/// again in the background. Run it once after
/// changing the embedding model (EMBEDDING_URL/EMBEDDING_MODEL), when every
/// node has the new setting: nodes never do it by themselves, so a canary with
/// another model cannot start a tug of war.
pub async fn reembed(only: Option<switchboard_domain::TenantId>) -> Result<(), StartError> {
    let config = Config::from_env()?;
    let db = Database::connect(config.database_url.expose_secret()).await?;
    let knowledge = switchboard_knowledge::Knowledge::new(db.clone(), config.knowledge.clone());
    let model = knowledge.embedder().model_name();
    let queue = |tenant: switchboard_domain::TenantId| {
        let (db, model) = (db.clone(), model.clone());
        async move {
            let ctx = switchboard_db::TenantContext::new(tenant, None, switchboard_domain::Role::Service);
            let mut tx = db.begin(&ctx).await?;
            let n = switchboard_db::repo::knowledge::enqueue_reembedding(&mut tx, &model).await?;
            tx.commit().await?;
            Ok::<_, switchboard_db::DbError>(n)
        }
    };
    let mut queued = 0;
    if let Some(tenant) = only {
        queued = queue(tenant).await?;
    } else {
        // Tenant by tenant, inside each: the platform path reads no tenant's documents.
        let mut after = None;
        loop {
            let mut tx = db.begin_platform().await?;
            let page = switchboard_db::repo::tenants::list(&mut tx, after, 500).await?;
            tx.commit().await?;
            let Some(last) = page.last() else { break };
            after = Some(last.id);
            for tenant in &page {
                queued += queue(switchboard_domain::TenantId::from(tenant.id)).await?;
            }
        }
    }
    db.close().await;
    tracing::info!(model = %model, queued, "queued re-embedding");
    Ok(())
}

/// What the Socket.IO layer keeps of a handshake must not pin the connection's
/// read buffer (about 6 KiB of every idle socket's memory), nor hold what
/// nothing reads: see [`switchboard_realtime::handshake::own_handshake_request`]
/// (it also drops axum's `OriginalUri`, a second handle on the buffer).
async fn own_handshake_request(req: axum::extract::Request) -> axum::extract::Request {
    switchboard_realtime::handshake::own_handshake_request(req)
}

/// `switchboard rewrap-secrets [--tenant <id>]`: wraps every tenant's (or
/// one tenant's) data key under the
/// current master key (`SECRETS_MASTER_KEY`, `SECRETS_MASTER_KEY_ID`),
/// reading the old ones with `SECRETS_PREVIOUS_KEYS`; no secret's value is
/// read or written. Safe to run while nodes serve (each key is replaced only
/// if it is still the one read) and to run again. It ends by counting the
/// data keys still under another master key and fails unless there are
/// none; then the previous keys can be removed from the configuration.
pub async fn rewrap_secrets(only: Option<switchboard_domain::TenantId>) -> Result<(), StartError> {
    use switchboard_db::repo::secrets;
    let config = Config::from_env()?;
    let Some(keys) = config.secrets.clone() else {
        return Err(StartError::Secrets(
            "SECRETS_MASTER_KEY and SECRETS_MASTER_KEY_ID are not set".to_owned(),
        ));
    };
    let db = Database::connect(config.database_url.expose_secret()).await?;
    let (mut rewrapped, mut failed, mut after) = (0usize, 0usize, None);
    loop {
        let mut tx = db.begin_platform().await?;
        let page = secrets::keys_to_rewrap(&mut tx, keys.current_id(), only, after, 500).await?;
        let Some(last) = page.last() else { break };
        after = Some(switchboard_domain::TenantId::from(last.tenant_id));
        for row in &page {
            let wrapped = switchboard_vault::WrappedKey {
                master_id: row.master_key_id.clone(),
                bytes: row.wrapped_key.clone(),
            };
            match keys.rewrap(row.tenant_id, &wrapped) {
                Ok(Some(new)) => {
                    if secrets::rewrap(&mut tx, row.tenant_id, &row.master_key_id, &new.master_id, &new.bytes)
                        .await?
                    {
                        rewrapped += 1;
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    failed += 1;
                    tracing::error!(tenant_id = %row.tenant_id, master_key_id = %row.master_key_id, error = %e, "data key not re-wrapped");
                }
            }
        }
        tx.commit().await?;
    }
    // What is left under other keys now (a node still on an older current
    // key may have made one behind the cursor): none, or the command fails.
    let mut tx = db.begin_platform().await?;
    let left = secrets::count_not_under(&mut tx, keys.current_id(), only).await?;
    tx.commit().await?;
    db.close().await;
    tracing::info!(rewrapped, failed, left, master_key_id = %keys.current_id(), "data keys re-wrapped");
    if failed > 0 || left > 0 {
        return Err(StartError::Secrets(format!(
            "{left} data keys are still under another master key ({failed} could not be unwrapped: is their key in \
             SECRETS_PREVIOUS_KEYS, and does every node have the new current key?); run it again before dropping \
             the old key"
        )));
    }
    Ok(())
}
