//! The backup routes (admin: IAM on AWS, bearer token locally): backup targets per
//! integration, snapshots committed to Bitbucket when they changed, and the commit history.

use std::sync::Arc;

use axum::extract::{FromRequest, Request, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use domain::backup::{BackupTarget, Backups, Head, MAX_DOCUMENT_BYTES, Snapshot, TargetSpec};
use entry::Root;
use entry::http::{ApiError, JsonBody, Paging, Path, Query, is_json, read_body};
use entry::lambda::Function;
use entry::settings::ConfigError;
use serde_json::{Value, json};

/// The function: the backup routes.
pub fn function(root: &Root) -> Result<Function, ConfigError> {
    Ok(Function::http(routes(Arc::new(root.backups()))))
}

pub fn routes(backups: Arc<Backups>) -> Router {
    let target = "/integrations/{id}/backup-targets/{name}";
    Router::new()
        .route("/integrations/{id}/backup-targets", get(list))
        .route(target, put(define).get(show).delete(remove))
        .route(&format!("{target}/snapshots"), post(snapshot))
        .route(&format!("{target}/history"), get(history))
        .with_state(backups)
}

fn view(target: &BackupTarget, head: Option<&Head>) -> Value {
    let mut v = json!({
        "name": target.name,
        "directory": target.directory,
        "filename": target.filename,
        "path": target.path(),
        "branch": target.branch,
        "author": target.author,
        "message": target.message,
        "created_at": target.created_at,
        "updated_at": target.updated_at,
    });
    if let Some(head) = head {
        v["last_commit"] = json!(head.committed);
    }
    v
}

async fn list(State(b): State<Arc<Backups>>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let targets = b.list_targets(&id).await?;
    Ok(Json(json!({"backup_targets": targets.iter().map(|t| view(t, None)).collect::<Vec<_>>()})))
}

async fn define(
    State(b): State<Arc<Backups>>,
    Path((id, name)): Path<(String, String)>,
    JsonBody(spec): JsonBody<TargetSpec>,
) -> Result<impl IntoResponse, ApiError> {
    let (target, created) = b.put_target(&id, &name, spec).await?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(view(&target, None))))
}

async fn show(
    State(b): State<Arc<Backups>>,
    Path((id, name)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let (target, head) = b.target(&id, &name).await?;
    Ok(Json(view(&target, Some(&head))))
}

async fn remove(
    State(b): State<Arc<Backups>>,
    Path((id, name)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    b.delete_target(&id, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A snapshot body: JSON, bounded by the document limit (plus room for the envelope) rather
/// than the small admin limit.
struct SnapshotBody(Snapshot);

impl<S: Send + Sync> FromRequest<S> for SnapshotBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, _state: &S) -> Result<Self, ApiError> {
        let (parts, body) = request.into_parts();
        if !is_json(&parts.headers) {
            return Err(ApiError::UnsupportedMediaType("send the snapshot as application/json".into()));
        }
        let bytes = read_body(&parts.headers, body, MAX_DOCUMENT_BYTES + 64 * 1024).await?;
        entry::http::parse_json(&bytes).map(SnapshotBody)
    }
}

async fn snapshot(
    State(b): State<Arc<Backups>>,
    Path((id, name)): Path<(String, String)>,
    SnapshotBody(snapshot): SnapshotBody,
) -> Result<impl IntoResponse, ApiError> {
    let outcome = b.snapshot(&id, &name, snapshot).await?;
    let status = match outcome {
        domain::backup::Outcome::Committed { .. } => StatusCode::CREATED,
        _ => StatusCode::OK,
    };
    Ok((status, Json(outcome)))
}

async fn history(
    State(b): State<Arc<Backups>>,
    Path((id, name)): Path<(String, String)>,
    Query(paging): Query<Paging>,
) -> Result<Json<Value>, ApiError> {
    let limit = paging.limit(20, 100)?;
    let (entries, next_cursor) = b.history(&id, &name, limit, paging.cursor).await?;
    Ok(Json(json!({"history": entries, "next_cursor": next_cursor})))
}
