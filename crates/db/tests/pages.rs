//! Byte-bounded pages against the real Postgres: a message page stops at its
//! count or at its byte budget, whichever comes first, always holds at least
//! one row, says when more follow, and its cursor leads to the rest.
//!
//! Needs DATABASE_URL (application role) of a migrated database:
//! `scripts/test` provides it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use switchboard_db::repo::messages;
use switchboard_db::{Database, TenantContext};
use switchboard_domain::{ConversationId, Role, TenantId, UserId};
use uuid::Uuid;

#[tokio::test]
async fn a_message_page_stops_at_its_count_or_its_bytes_and_its_cursor_leads_on() {
    let url =
        std::env::var("DATABASE_URL").expect("DATABASE_URL must be set: run the tests through scripts/test");
    let db = Database::connect(&url).await.unwrap();
    let (tenant, project, conversation) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let mut platform = db.begin_platform().await.unwrap();
    sqlx::query("INSERT INTO tenants (id, name) VALUES ($1, 'pages')")
        .bind(tenant)
        .execute(platform.conn())
        .await
        .unwrap();
    platform.commit().await.unwrap();
    let ctx = TenantContext::new(TenantId(tenant), Some(UserId::new()), Role::Owner);
    let mut tx = db.begin(&ctx).await.unwrap();
    sqlx::query("INSERT INTO projects (id, tenant_id, name) VALUES ($1, $2, 'p')")
        .bind(project)
        .bind(tenant)
        .execute(tx.conn())
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO conversations (id, tenant_id, project_id, title, visibility) VALUES ($1, $2, $3, 'c', 'public')",
    )
    .bind(conversation)
    .bind(tenant)
    .bind(project)
    .execute(tx.conn())
    .await
    .unwrap();
    // Five messages of 1000 bytes each (998 of content, `{}` of metadata): a..e.
    for letter in ["a", "b", "c", "d", "e"] {
        sqlx::query("INSERT INTO messages (tenant_id, conversation_id, content) VALUES ($1, $2, $3)")
            .bind(tenant)
            .bind(conversation)
            .bind(letter.repeat(998))
            .execute(tx.conn())
            .await
            .unwrap();
    }
    let conv = ConversationId(conversation);
    let firsts = |page: &switchboard_db::repo::Slice<messages::Message>| -> String {
        page.items.iter().map(|m| &m.content[..1]).collect()
    };

    // 2500 bytes: two whole messages, newest first, and word of more.
    let page = messages::list(&mut tx, conv, None, 10, 2500).await.unwrap();
    assert_eq!((firsts(&page).as_str(), page.more), ("ed", true));
    let cursor = page.items.last().unwrap().id;
    let page = messages::list(&mut tx, conv, Some(cursor), 10, 2500).await.unwrap();
    assert_eq!((firsts(&page).as_str(), page.more), ("cb", true));
    let cursor = page.items.last().unwrap().id;
    let page = messages::list(&mut tx, conv, Some(cursor), 10, 2500).await.unwrap();
    assert_eq!((firsts(&page).as_str(), page.more), ("a", false));

    // The count runs out first.
    let page = messages::list(&mut tx, conv, None, 3, 1 << 20).await.unwrap();
    assert_eq!((firsts(&page).as_str(), page.more), ("edc", true));
    // Exactly the whole list: no word of more.
    let page = messages::list(&mut tx, conv, None, 5, 5000).await.unwrap();
    assert_eq!((firsts(&page).as_str(), page.more), ("edcba", false));
    // A budget smaller than one message still returns one, or no page would advance.
    let page = messages::list(&mut tx, conv, None, 10, 10).await.unwrap();
    assert_eq!((firsts(&page).as_str(), page.more), ("e", true));
    // A cursor naming another tenant's or no message leads nowhere.
    let page = messages::list(&mut tx, conv, Some(Uuid::new_v4()), 10, 1 << 20).await.unwrap();
    assert!(page.items.is_empty() && !page.more, "{page:?}");
    tx.rollback().await.unwrap();
}
