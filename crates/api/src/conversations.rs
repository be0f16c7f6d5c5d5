//! `GET/POST /projects/{id}/conversations`, `GET/DELETE /conversations/{id}`.
//! A private conversation is visible to its participants, its creator, and the
//! tenant's owners, admins and services (enforced by RLS); deleting one takes its
//! creator or an admin, and removes its messages.

use crate::AppState;
use crate::auth::Member;
use crate::error::ApiError;
use crate::extract::{Page, Paged, ValidJson, path_id};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use switchboard_db::repo::audit::{self, Entry};
use switchboard_db::repo::conversations::{self, Conversation};
use switchboard_db::repo::projects;
use switchboard_domain::{ConversationId, ErrorKind, ProjectId, Role};
use uuid::Uuid;
use validator::Validate;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/projects/{id}/conversations", get(list).post(create))
        .route("/conversations/{id}", get(show).delete(remove))
}

#[derive(Debug, Deserialize, Validate, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateConversation {
    #[validate(length(max = 500))]
    #[schema(max_length = 500)]
    title: Option<String>,
    #[serde(default)]
    private: bool,
    /// Users who may see a private conversation (besides its creator).
    #[validate(length(max = 1000))]
    #[serde(default)]
    participants: Vec<Uuid>,
}

#[utoipa::path(post, path = "/api/v1/projects/{id}/conversations", tag = "conversations", params(("id" = Uuid, Path)), request_body = CreateConversation, responses((status = 201, body = Conversation), crate::openapi::CommonErrors))]
pub(crate) async fn create(
    State(state): State<AppState>,
    member: Member,
    Path(project): Path<String>,
    ValidJson(body): ValidJson<CreateConversation>,
) -> Result<(StatusCode, Json<Conversation>), ApiError> {
    let project: ProjectId = path_id(&project)?;
    let mut tx = state.db.begin(&member.ctx).await?;
    projects::get(&mut tx, project).await?;
    let conversation =
        conversations::create(&mut tx, None, project, body.title.as_deref().unwrap_or(""), body.private)
            .await?;
    let id = ConversationId(conversation.id);
    for user in &body.participants {
        conversations::add_participant(&mut tx, id, *user).await?;
    }
    tx.commit().await?;
    state.directory.authz_changed(member.ctx.tenant_id).await;
    Ok((StatusCode::CREATED, Json(conversation)))
}

#[utoipa::path(get, path = "/api/v1/projects/{id}/conversations", tag = "conversations", params(("id" = Uuid, Path), crate::extract::PageQuery), responses((status = 200, body = Paged<Conversation>), crate::openapi::CommonErrors))]
pub(crate) async fn list(
    State(state): State<AppState>,
    member: Member,
    Path(project): Path<String>,
    page: Page,
) -> Result<Json<Paged<Conversation>>, ApiError> {
    let project: ProjectId = path_id(&project)?;
    let mut tx = state.db.begin(&member.ctx).await?;
    projects::get(&mut tx, project).await?;
    let rows = conversations::list(&mut tx, project, page.cursor, page.fetch_limit()).await?;
    tx.commit().await?;
    Ok(Json(Paged::new(rows, page, |c: &Conversation| c.id)))
}

#[utoipa::path(get, path = "/api/v1/conversations/{id}", tag = "conversations", params(("id" = Uuid, Path)), responses((status = 200, body = Conversation), crate::openapi::CommonErrors))]
pub(crate) async fn show(
    State(state): State<AppState>,
    member: Member,
    Path(id): Path<String>,
) -> Result<Json<Conversation>, ApiError> {
    let id: ConversationId = path_id(&id)?;
    let mut tx = state.db.begin(&member.ctx).await?;
    let conversation = conversations::get(&mut tx, id).await?;
    tx.commit().await?;
    Ok(Json(conversation))
}

#[utoipa::path(delete, path = "/api/v1/conversations/{id}", tag = "conversations", params(("id" = Uuid, Path)), responses((status = 204), crate::openapi::CommonErrors))]
pub(crate) async fn remove(
    State(state): State<AppState>,
    member: Member,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id: ConversationId = path_id(&id)?;
    let mut tx = state.db.begin(&member.ctx).await?;
    let conversation = conversations::get(&mut tx, id).await?;
    let is_creator =
        conversation.created_by.is_some() && conversation.created_by == member.ctx.user_id.map(|u| u.0);
    if !(is_creator || member.ctx.role.is_admin() || member.ctx.role == Role::Service) {
        return Err(ApiError::new(
            ErrorKind::Forbidden,
            "only its creator or an admin deletes a conversation",
        ));
    }
    conversations::delete(&mut tx, id).await?;
    let entry = Entry {
        action: "conversation.delete",
        target_type: "conversation",
        target_id: id.to_string(),
        details: json!({ "project_id": conversation.project_id }),
    };
    audit::record(&mut tx, &member.caller.actor(), &entry).await?;
    tx.commit().await?;
    state.directory.authz_changed(member.ctx.tenant_id).await;
    Ok(StatusCode::NO_CONTENT)
}
