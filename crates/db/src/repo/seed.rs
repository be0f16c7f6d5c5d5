//! The demo tenant `scripts/run` creates: one tenant, one project, one public
//! conversation, with fixed ids so that seeding twice changes nothing.

use crate::{Database, DbError, TenantContext};
use switchboard_domain::{ConversationId, ProjectId, Role, TenantId};
use uuid::Uuid;

pub const DEMO_TENANT: TenantId = TenantId(Uuid::from_u128(0x5b0a_0000_0000_4000_8000_0000_0000_0001));
pub const DEMO_PROJECT: ProjectId = ProjectId(Uuid::from_u128(0x5b0a_0000_0000_4000_8000_0000_0000_0002));
pub const DEMO_CONVERSATION: ConversationId =
    ConversationId(Uuid::from_u128(0x5b0a_0000_0000_4000_8000_0000_0000_0003));

/// Ensures the demo tenant, project and conversation exist.
pub async fn demo(db: &Database) -> Result<(), DbError> {
    let mut platform = db.begin_platform().await?;
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM tenants WHERE id = $1)")
        .bind(DEMO_TENANT.as_uuid())
        .fetch_one(platform.conn())
        .await?;
    if !exists {
        super::tenants::create(&mut platform, Some(DEMO_TENANT), "Demo", &serde_json::json!({})).await?;
    }
    platform.commit().await?;

    let mut tx = db.begin(&TenantContext::new(DEMO_TENANT, None, Role::Service)).await?;
    if matches!(super::projects::get(&mut tx, DEMO_PROJECT).await, Err(DbError::NotFound)) {
        super::projects::create(&mut tx, Some(DEMO_PROJECT), "Demo project", "Seeded by scripts/run").await?;
    }
    if matches!(super::conversations::get(&mut tx, DEMO_CONVERSATION).await, Err(DbError::NotFound)) {
        super::conversations::create(&mut tx, Some(DEMO_CONVERSATION), DEMO_PROJECT, "General", false)
            .await?;
    }
    tx.commit().await
}
