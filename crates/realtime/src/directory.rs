//! The directory every request and handshake consults: a tenant's status and
//! limits, and the grant behind an API key, read through the per-tenant cache so
//! a warm lookup makes no Postgres round trip. Runs' status is here too, for
//! streamed deltas. Changes go through
//! [`Directory::tenant_changed`] and [`Directory::api_keys_changed`], which
//! invalidate across the cluster.

use serde::{Deserialize, Serialize};
use std::sync::Arc;
use switchboard_cluster::cache::TypeMismatch;
use switchboard_cluster::{Cache, Kind, Namespace};
use switchboard_db::repo::api_keys::{self, KeyGrant};
use switchboard_db::repo::{conversations, projects, runs, tenants};
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
}

/// Tenants and API keys, cached.
#[derive(Clone, Debug)]
pub struct Directory {
    db: Database,
    cache: Cache,
    defaults: Limits,
}

impl Directory {
    pub fn new(db: Database, cache: Cache, defaults: Limits) -> Self {
        Self { db, cache, defaults }
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
        let key: String = hash.iter().map(|b| format!("{b:02x}")).collect();
        let (db, hash) = (self.db.clone(), hash.to_vec());
        self.cache
            .get_or_load(Namespace::new(Uuid::nil(), Kind::ApiKey), &key, || async move {
                let mut tx = db.begin_platform().await?;
                let grant = api_keys::lookup(&mut tx, &hash).await?;
                tx.commit().await?;
                Ok(grant)
            })
            .await
    }

    /// A run of the context's tenant; `None` if it does not exist there. A run
    /// found is cached per tenant until [`Self::runs_changed`]; an absence is
    /// not cached, so a run created a moment ago is found at once on every
    /// node and creating one invalidates nothing.
    pub async fn run(&self, ctx: &TenantContext, id: RunId) -> Result<Option<RunInfo>, Arc<DirectoryError>> {
        let (db, ctx) = (self.db.clone(), *ctx);
        let found = self
            .cache
            .get_or_load(Namespace::new(ctx.tenant_id.as_uuid(), Kind::Run), &id.to_string(), || async move {
                let mut tx = db.begin(&ctx).await?;
                let run = runs::get(&mut tx, id).await?;
                tx.commit().await?;
                Ok::<_, DirectoryError>(RunInfo { status: run.status(), project_id: run.project_id })
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
        self.cache.invalidate(Namespace::new(tenant.as_uuid(), Kind::Run)).await;
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
        let key = match topic {
            Topic::Conversation(id) => {
                format!("c:{id}:{}:{}", ctx.user_id.map(|u| u.to_string()).unwrap_or_default(), ctx.role)
            }
            Topic::Project(id) => format!("p:{id}"),
            Topic::Run(id) => return self.run(ctx, *id).await.map(|run| run.is_some()),
            Topic::Channel(_) => return Ok(true),
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
        self.cache.invalidate(Namespace::new(tenant.as_uuid(), Kind::Authz)).await;
    }

    /// Call after a tenant's status or limits changed (or it was deleted).
    pub async fn tenant_changed(&self, id: TenantId) {
        self.cache.invalidate(Namespace::new(id.as_uuid(), Kind::Tenant)).await;
    }

    /// Call after an API key was revoked.
    pub async fn api_keys_changed(&self) {
        self.cache.invalidate(Namespace::new(Uuid::nil(), Kind::ApiKey)).await;
    }
}
