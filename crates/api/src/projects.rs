//! `GET/POST /projects`, `GET/PATCH/DELETE /projects/{id}`: any member reads;
//! creating, changing and deleting are audited in the same transaction.

use crate::AppState;
use crate::auth::Member;
use crate::error::ApiError;
use crate::extract::{Page, Paged, ValidJson, check_json, path_id};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use switchboard_db::repo::audit::{self, Entry};
use switchboard_db::repo::projects::{self, Project};
use switchboard_domain::ProjectId;
use switchboard_domain::json::{JsonCap, Shape};
use validator::Validate;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/projects", get(list).post(create))
        .route("/projects/{id}", get(show).patch(update).delete(remove))
}

#[derive(Debug, Deserialize, Validate, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProject {
    #[validate(length(min = 1, max = 200))]
    #[schema(min_length = 1, max_length = 200)]
    name: String,
    #[validate(length(max = 2000))]
    #[schema(max_length = 2000)]
    description: Option<String>,
}

#[derive(Debug, Deserialize, Validate, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchProject {
    #[validate(length(min = 1, max = 200))]
    #[schema(min_length = 1, max_length = 200)]
    name: Option<String>,
    #[validate(length(max = 2000))]
    #[schema(max_length = 2000)]
    description: Option<String>,
    #[schema(value_type = Option<Object>)]
    metadata: Option<Value>,
}

#[utoipa::path(post, path = "/api/v1/projects", tag = "projects", request_body = CreateProject, responses((status = 201, body = Project), crate::openapi::CommonErrors))]
pub(crate) async fn create(
    State(state): State<AppState>,
    member: Member,
    ValidJson(body): ValidJson<CreateProject>,
) -> Result<(StatusCode, Json<Project>), ApiError> {
    let mut tx = state.db.begin(&member.ctx).await?;
    let project =
        projects::create(&mut tx, None, &body.name, body.description.as_deref().unwrap_or("")).await?;
    let entry = Entry {
        action: "project.create",
        target_type: "project",
        target_id: project.id.to_string(),
        details: json!({ "name": project.name }),
    };
    audit::record(&mut tx, &member.caller.actor(), &entry).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(project)))
}

#[utoipa::path(get, path = "/api/v1/projects", tag = "projects", params(crate::extract::PageQuery), responses((status = 200, body = Paged<Project>), crate::openapi::CommonErrors))]
pub(crate) async fn list(
    State(state): State<AppState>,
    member: Member,
    page: Page,
) -> Result<Json<Paged<Project>>, ApiError> {
    let mut tx = state.db.begin(&member.ctx).await?;
    let rows = projects::list(&mut tx, page.cursor, page.fetch_limit()).await?;
    tx.commit().await?;
    Ok(Json(Paged::new(rows, page, |p: &Project| p.id)))
}

#[utoipa::path(get, path = "/api/v1/projects/{id}", tag = "projects", params(("id" = Uuid, Path)), responses((status = 200, body = Project), crate::openapi::CommonErrors))]
pub(crate) async fn show(
    State(state): State<AppState>,
    member: Member,
    Path(id): Path<String>,
) -> Result<Json<Project>, ApiError> {
    let id: ProjectId = path_id(&id)?;
    let mut tx = state.db.begin(&member.ctx).await?;
    let project = projects::get(&mut tx, id).await?;
    tx.commit().await?;
    Ok(Json(project))
}

#[utoipa::path(patch, path = "/api/v1/projects/{id}", tag = "projects", params(("id" = Uuid, Path)), request_body = PatchProject, responses((status = 200, body = Project), crate::openapi::CommonErrors))]
pub(crate) async fn update(
    State(state): State<AppState>,
    member: Member,
    Path(id): Path<String>,
    ValidJson(body): ValidJson<PatchProject>,
) -> Result<Json<Project>, ApiError> {
    let id: ProjectId = path_id(&id)?;
    if let Some(m) = &body.metadata {
        check_json("metadata", m, Shape::Object, JsonCap::Metadata)?;
    }
    let mut tx = state.db.begin(&member.ctx).await?;
    let project = projects::update(
        &mut tx,
        id,
        body.name.as_deref(),
        body.description.as_deref(),
        body.metadata.as_ref(),
    )
    .await?;
    let entry = Entry {
        action: "project.update",
        target_type: "project",
        target_id: id.to_string(),
        details: json!({ "name": body.name, "description": body.description }),
    };
    audit::record(&mut tx, &member.caller.actor(), &entry).await?;
    tx.commit().await?;
    Ok(Json(project))
}

#[utoipa::path(delete, path = "/api/v1/projects/{id}", tag = "projects", params(("id" = Uuid, Path)), responses((status = 204), crate::openapi::CommonErrors))]
pub(crate) async fn remove(
    State(state): State<AppState>,
    member: Member,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id: ProjectId = path_id(&id)?;
    let mut tx = state.db.begin(&member.ctx).await?;
    projects::delete(&mut tx, id).await?;
    let entry = Entry {
        action: "project.delete",
        target_type: "project",
        target_id: id.to_string(),
        details: json!({}),
    };
    audit::record(&mut tx, &member.caller.actor(), &entry).await?;
    tx.commit().await?;
    state.directory.authz_changed(member.ctx.tenant_id).await;
    Ok(StatusCode::NO_CONTENT)
}
