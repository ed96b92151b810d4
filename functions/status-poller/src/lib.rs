//! status-poller: the builds view (`GET /integrations/{id}/pipelines`, `…/{uuid}`), the
//! on-demand poll (`POST …/pipelines/refresh`) and the scheduled poll of every integration.

use std::sync::Arc;

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use domain::pipelines::{Pipelines, RunFilter};
use entry::Root;
use entry::http::{ApiError, Path, Query, parse_limit};
use entry::lambda::{Access, Function};
use entry::settings::ConfigError;
use serde::Deserialize;
use serde_json::{Value, json};

/// The function: the builds view routes, and the scheduled poll.
pub fn function(root: &Root) -> Result<Function, ConfigError> {
    let pipelines = Arc::new(root.pipelines());
    let scheduled = pipelines.clone();
    let schedule = entry::lambda::scheduled(move || on_schedule(scheduled.clone()));
    Ok(Function {
        access: Access::Admin,
        routes: routes(pipelines),
        consumers: Vec::new(),
        schedule: Some(schedule),
        relay: None,
    })
}

pub fn routes(pipelines: Arc<Pipelines>) -> Router {
    Router::new()
        .route("/integrations/{id}/pipelines", get(list))
        .route("/integrations/{id}/pipelines/refresh", post(refresh))
        .route("/integrations/{id}/pipelines/{uuid}", get(show))
        .with_state(pipelines)
}

#[derive(Deserialize)]
struct ListQuery {
    branch: Option<String>,
    status: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

const STATUSES: &[&str] = &["PENDING", "IN_PROGRESS", "SUCCESSFUL", "FAILED", "ERROR", "STOPPED", "EXPIRED"];

async fn list(
    State(p): State<Arc<Pipelines>>,
    Path(id): Path<String>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = parse_limit(q.limit.as_deref(), 20, 100)?;
    let status = q.status.map(|s| s.to_ascii_uppercase());
    if let Some(s) = &status
        && !STATUSES.contains(&s.as_str())
    {
        return Err(ApiError::BadRequest(format!("status: must be one of {}", STATUSES.join(", "))));
    }
    let filter = RunFilter { branch: q.branch, status };
    let (runs, next_cursor) = p.list(&id, &filter, limit, q.cursor).await?;
    Ok(Json(json!({"pipelines": runs, "next_cursor": next_cursor})))
}

async fn show(
    State(p): State<Arc<Pipelines>>,
    Path((id, uuid)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!(p.get(&id, &uuid).await?)))
}

async fn refresh(State(p): State<Arc<Pipelines>>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!(p.refresh(&id).await?)))
}

/// The scheduled poll: every eligible integration; failures are reported per integration.
pub async fn on_schedule(pipelines: Arc<Pipelines>) -> Value {
    match pipelines.poll_all().await {
        Ok(reports) => {
            for report in &reports {
                tracing::info!(integration = %report.integration, updated = report.updated, pages = report.pages,
                    error = report.error.as_deref().unwrap_or(""), "polled");
            }
            json!({"polled": reports})
        }
        Err(e) => {
            tracing::error!(error = %e, "poll failed");
            json!({"error": e.to_string()})
        }
    }
}
