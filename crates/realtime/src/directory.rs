//! The directory every request and handshake consults: a tenant's status and
//! limits, and the grant behind an API key, read through the per-tenant cache so
//! a warm lookup makes no Postgres round trip. Runs' status is here too, for
//! streamed deltas. Changes go through
//! [`Directory::tenant_changed`] and [`Directory::api_keys_changed`], which
//! invalidate across the cluster.
//!
//! An invalidation that cannot reach Redis (it is down, or this node is cut
//! off from it) is written to Postgres; every node polls those every second,
//! drops what it cached for them and reads around Redis for them until one
//! node has pushed them to Redis. So a key revoked or a tenant suspended while
//! Redis is away is refused on every node within about a second, and stays
//! refused when Redis comes back with its old entries.
//!
//! An API key that does not exist costs one Postgres lookup per node and
//! minute at most: its absence is remembered in a small local cache of its
//! own, never in the shared cache (random keys cannot evict tenants' entries
//! or fill Redis).

use serde::{Deserialize, Serialize};
use std::sync::Arc;
use switchboard_cluster::cache::TypeMismatch;
use switchboard_cluster::{Cache, Kind, Namespace};
use switchboard_db::repo::api_keys::{self, KeyGrant};
use switchboard_db::repo::{conversations, invalidations, projects, runs, tenants};
use switchboard_db::{Database, DbError, TenantContext};
use switchboard_domain::{ErrorKind, Limits, RunId, RunStatus, TenantId, TenantStatus, Topic};
use uuid::Uuid;

/// What the directory knows of a tenant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantInfo {
    pub status: TenantStatus,
    pub limits: Limits,
}

#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Cache(#[from] TypeMismatch),
}

impl DirectoryError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            DirectoryError::Db(e) => e.kind(),
            DirectoryError::Cache(_) => ErrorKind::Internal,
        }
    }
}

/// What the directory knows of a run: enough to accept or refuse streamed
/// deltas without a Postgres round trip.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunInfo {
    pub status: RunStatus,
    pub project_id: Uuid,
    /// The conversation it belongs to, whose visibility it shares.
    #[serde(default)]
    pub conversation_id: Option<Uuid>,
}

/// Tenants and API keys, cached.
#[derive(Clone)]
pub struct Directory {
    db: Database,
    cache: Cache,
    defaults: Limits,
    /// Hashes of keys found not to exist (or revoked), for a minute.
    unknown_keys: moka::sync::Cache<Box<[u8]>, ()>,
}

impl std::fmt::Debug for Directory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Directory").field("cache", &self.cache).finish_non_exhaustive()
    }
}

/// Absent keys remembered per node, and for how long.
const UNKNOWN_KEYS: u64 = 10_000;
const UNKNOWN_KEY_TTL: std::time::Duration = std::time::Duration::from_secs(60);

impl Directory {
    pub fn new(db: Database, cache: Cache, defaults: Limits) -> Self {
        let unknown_keys =
            moka::sync::Cache::builder().max_capacity(UNKNOWN_KEYS).time_to_live(UNKNOWN_KEY_TTL).build();
        Self { db, cache, defaults, unknown_keys }
    }

    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// A tenant's status and effective limits; `None` if it does not exist.
    pub async fn tenant(&self, id: TenantId) -> Result<Option<TenantInfo>, Arc<DirectoryError>> {
        let (db, defaults) = (self.db.clone(), self.defaults);
        self.cache
            .get_or_load(Namespace::new(id.as_uuid(), Kind::Tenant), "info", || async move {
                let mut tx = db.begin_platform().await?;
                let found = match tenants::get(&mut tx, id).await {
                    Ok(t) => {
                        Some(TenantInfo { status: t.status(), limits: defaults.with_overrides(&t.limits) })
                    }
                    Err(DbError::NotFound) => None,
                    Err(e) => return Err(DirectoryError::Db(e)),
                };
                tx.commit().await?;
                Ok(found)
            })
            .await
    }

    /// The live grant for a key hash; `None` for unknown or revoked keys.
    pub async fn api_key(&self, hash: &[u8]) -> Result<Option<KeyGrant>, Arc<DirectoryError>> {
        if self.unknown_keys.contains_key(hash) {
            return Ok(None);
        }
        let key: String = hash.iter().map(|b| format!("{b:02x}")).collect();
        let (db, owned) = (self.db.clone(), hash.to_vec());
        let found = self
            .cache
            .get_or_load(Namespace::new(Uuid::nil(), Kind::ApiKey), &key, || async move {
                let mut tx = db.begin_platform().await?;
                let grant = api_keys::lookup(&mut tx, &owned).await?;
                tx.commit().await?;
                // An absence is an error here so the shared cache keeps none.
                grant.ok_or(DirectoryError::Db(DbError::NotFound))
            })
            .await;
        match found {
            Ok(grant) => Ok(Some(grant)),
            Err(e) if matches!(&*e, DirectoryError::Db(DbError::NotFound)) => {
                self.unknown_keys.insert(hash.into(), ());
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// A run of the context's tenant that the context's user can see; `None`
    /// if there is none. A run found is cached per tenant until
    /// [`Self::runs_changed`]; an absence is not cached, so a run created a
    /// moment ago is found at once on every node and creating one invalidates
    /// nothing. A run of a conversation is seen by whoever can see the
    /// conversation (asked per user, cached like any subscribe answer).
    pub async fn run(&self, ctx: &TenantContext, id: RunId) -> Result<Option<RunInfo>, Arc<DirectoryError>> {
        let Some(info) = self.run_of_tenant(ctx, id).await? else { return Ok(None) };
        if let Some(conversation) = info.conversation_id
            && !self.sees(ctx, &Topic::Conversation(conversation.into())).await?
        {
            return Ok(None);
        }
        Ok(Some(info))
    }

    async fn run_of_tenant(
        &self,
        ctx: &TenantContext,
        id: RunId,
    ) -> Result<Option<RunInfo>, Arc<DirectoryError>> {
        let (db, ctx) = (self.db.clone(), *ctx);
        let found = self
            .cache
            .get_or_load(Namespace::new(ctx.tenant_id.as_uuid(), Kind::Run), &id.to_string(), || async move {
                let mut tx = db.begin(&ctx).await?;
                let run = runs::get(&mut tx, id).await?;
                tx.commit().await?;
                Ok::<_, DirectoryError>(RunInfo {
                    status: run.status(),
                    project_id: run.project_id,
                    conversation_id: run.conversation_id,
                })
            })
            .await;
        match found {
            Ok(info) => Ok(Some(info)),
            Err(e) if matches!(&*e, DirectoryError::Db(DbError::NotFound)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Call after a run changed status.
    pub async fn runs_changed(&self, tenant: TenantId) {
        self.invalidate(Namespace::new(tenant.as_uuid(), Kind::Run)).await;
    }

    /// Whether the context's user may see (and so subscribe to) the topic's
    /// target: a conversation RLS lets them read, a project or a run of their
    /// tenant. Channels need only tenant membership. Cached per tenant until
    /// [`Self::authz_changed`] (runs: [`Self::runs_changed`]).
    pub async fn may_subscribe(
        &self,
        ctx: &TenantContext,
        topic: &Topic,
    ) -> Result<bool, Arc<DirectoryError>> {
        match topic {
            Topic::Run(id) => self.run(ctx, *id).await.map(|run| run.is_some()),
            Topic::Channel(_) => Ok(true),
            other => self.sees(ctx, other).await,
        }
    }

    /// Whether the context's user can see the conversation or project (cached).
    async fn sees(&self, ctx: &TenantContext, topic: &Topic) -> Result<bool, Arc<DirectoryError>> {
        let key = match topic {
            Topic::Conversation(id) => {
                format!("c:{id}:{}:{}", ctx.user_id.map(|u| u.to_string()).unwrap_or_default(), ctx.role)
            }
            Topic::Project(id) => format!("p:{id}"),
            Topic::Run(_) | Topic::Channel(_) => return Ok(true),
        };
        let (db, ctx, topic) = (self.db.clone(), *ctx, topic.clone());
        self.cache
            .get_or_load(Namespace::new(ctx.tenant_id.as_uuid(), Kind::Authz), &key, || async move {
                let mut tx = db.begin(&ctx).await?;
                let found = match topic {
                    Topic::Conversation(id) => conversations::get(&mut tx, id).await.map(|_| ()),
                    Topic::Project(id) => projects::get(&mut tx, id).await.map(|_| ()),
                    Topic::Run(_) | Topic::Channel(_) => Ok(()),
                };
                tx.commit().await?;
                match found {
                    Ok(()) => Ok(true),
                    Err(DbError::NotFound) => Ok(false),
                    Err(e) => Err(DirectoryError::Db(e)),
                }
            })
            .await
    }

    /// Call after something that answers [`Self::may_subscribe`] changed
    /// (a conversation or project deleted, participants changed).
    pub async fn authz_changed(&self, tenant: TenantId) {
        self.invalidate(Namespace::new(tenant.as_uuid(), Kind::Authz)).await;
    }

    /// Call after a tenant's status or limits changed (or it was deleted).
    pub async fn tenant_changed(&self, id: TenantId) {
        self.invalidate(Namespace::new(id.as_uuid(), Kind::Tenant)).await;
    }

    /// Call after an API key was revoked.
    pub async fn api_keys_changed(&self) {
        self.invalidate(Namespace::new(Uuid::nil(), Kind::ApiKey)).await;
    }

    /// Invalidates `ns` everywhere: through Redis, or, when Redis does not take
    /// it, through Postgres (see the module doc).
    async fn invalidate(&self, ns: Namespace) {
        if self.cache.invalidate(ns).await {
            return;
        }
        let recorded = async {
            let mut tx = self.db.begin_platform().await?;
            invalidations::record(&mut tx, ns.tenant, ns.kind.as_str()).await?;
            tx.commit().await
        };
        if let Err(e) = recorded.await {
            tracing::error!(error = %e, kind = ns.kind.as_str(), "invalidation reached neither redis nor postgres; other nodes rely on TTL");
        }
    }

    /// Polls the invalidations Redis missed, every second, for as long as the
    /// directory lives (call once per node).
    pub fn watch_missed_invalidations(&self) {
        let me = self.clone();
        tokio::spawn(async move {
            let mut last = 0;
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            loop {
                tick.tick().await;
                match me.apply_missed(last).await {
                    Ok(seen) => last = seen,
                    Err(e) => tracing::debug!(error = %e, "missed invalidations not polled"),
                }
            }
        });
    }

    /// One poll: forgets what changed since `last`, reads around Redis for
    /// what it has not been told, and tells it when it answers. Returns the
    /// last sequence number seen.
    async fn apply_missed(&self, last: i64) -> Result<i64, DbError> {
        let mut tx = self.db.begin_platform().await?;
        let rows = invalidations::poll(&mut tx, last).await?;
        tx.commit().await?;
        let ns = |r: &invalidations::Invalidation| {
            Kind::parse(&r.kind).map(|kind| Namespace::new(r.tenant_id, kind))
        };
        let mut seen = last;
        for row in rows.iter().filter(|r| r.seq > last) {
            if let Some(ns) = ns(row) {
                self.cache.forget(ns);
            }
            seen = seen.max(row.seq);
        }
        let mut held = std::collections::HashSet::new();
        let mut pushed = Vec::new();
        let reachable = self.cache.reaches_redis();
        for row in rows.iter().filter(|r| !r.pushed) {
            let Some(ns) = ns(row) else { continue };
            if reachable && self.cache.invalidate(ns).await {
                pushed.push((row.id, row.seq));
            } else {
                held.insert(ns);
            }
        }
        self.cache.hold(held);
        if !pushed.is_empty() {
            let mut tx = self.db.begin_platform().await?;
            invalidations::pushed(&mut tx, &pushed).await?;
            tx.commit().await?;
            tracing::info!(count = pushed.len(), "invalidations missed by redis are now in redis");
        }
        Ok(seen)
    }
}
