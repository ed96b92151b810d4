//! status-poller: the builds view (`GET /integrations/{id}/pipelines`, `…/{uuid}`), the
//! on-demand poll (`POST …/pipelines/refresh`) and the scheduled poll: the schedule enqueues one
//! message per pollable integration, and the queue's batches poll one integration each.

use std::sync::Arc;

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use domain::fanout::{self, Job, Work, WorkQueue};
use domain::pipelines::{Pipelines, RunFilter};
use entry::Root;
use entry::http::{ApiError, Path, Query, parse_limit};
use entry::lambda::{Access, Function};
use entry::settings::ConfigError;
use serde::Deserialize;
use serde_json::{Value, json};

/// The function: the builds view routes, the scheduled poll's fan-out and its queue's work (on
/// the pipelines service for scheduled work, whose requests defer to people's).
pub fn function(root: &Root) -> Result<Function, ConfigError> {
    let pipelines = Arc::new(root.pipelines());
    let scheduled = Arc::new(root.scheduled_pipelines());
    // Needed by the schedule only: a function built without it still serves its routes.
    let queue = root.work_queue(Job::Poll).map_err(|e| e.to_string());
    let (on_tick, on_message) = (scheduled.clone(), scheduled);
    let schedule = entry::lambda::scheduled(move || {
        let (pipelines, queue) = (on_tick.clone(), queue.clone());
        async move { on_schedule(&pipelines, queue.map_err(domain::Error::Retry)?.as_ref()).await }
    });
    let queue = entry::lambda::queue_work(move |work| on_work(on_message.clone(), work));
    Ok(Function {
        access: Access::Admin,
        routes: routes(pipelines),
        consumers: Vec::new(),
        schedule: Some(schedule),
        queue: Some(queue),
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

/// The scheduled poll: one message per pollable integration on `queue`, in an order that
/// rotates with each cycle.
pub async fn on_schedule(pipelines: &Pipelines, queue: &dyn WorkQueue) -> Result<Value, domain::Error> {
    let enqueued = fanout::enqueue(&pipelines.ctx, queue, Job::Poll, Pipelines::pollable).await?;
    tracing::info!(cycle = enqueued.cycle, enqueued = enqueued.enqueued, skipped = enqueued.skipped, "poll enqueued");
    Ok(json!(enqueued))
}

/// One message's poll: one integration (the parked deliveries it can act on now, then its runs).
pub async fn on_work(pipelines: Arc<Pipelines>, work: Work) -> Result<Value, domain::Error> {
    match pipelines.poll_one(&work.integration_id).await? {
        Some(report) => {
            tracing::info!(integration = %report.integration, updated = report.updated, pages = report.pages, "polled");
            Ok(json!(report))
        }
        None => Ok(json!({"integration": work.integration_id, "skipped": "gone or not pollable"})),
    }
}
