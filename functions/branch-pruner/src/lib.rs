//! branch-pruner: `POST /integrations/{id}/prune` (reconcile environments, or plan/delete stale
//! branches), `GET /integrations/{id}/environments` and `GET /integrations/{id}/prune-audit`;
//! environments follow each recorded delivery (the table's stream on AWS, the in-process feed
//! locally); and the schedule enqueues one message per eligible integration, whose work is its
//! reconciliation, then its stale-branch cleanup (a dry run unless its policy is enabled).

use std::sync::Arc;

use axum::extract::State;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use chrono::Utc;
use domain::fanout::{self, Job, Work, WorkQueue};
use domain::pruning::{PruneAction, PruneRequest, Pruner, StatusReport};
use entry::Root;
use entry::http::{ApiError, JsonBody, Paging, Path, Query};
use entry::lambda::{Access, Function};
use entry::settings::ConfigError;
use serde_json::{Value, json};

/// The function: the prune and listing routes, environments following every recorded delivery
/// (the table's stream), and the scheduled reconciliation's fan-out and its queue's work (on the
/// pruner for scheduled work, whose requests defer to people's).
pub fn function(root: &Root) -> Result<Function, ConfigError> {
    let pruner = Arc::new(root.pruner());
    let scheduled = Arc::new(root.scheduled_pruner());
    // Needed by the schedule only: a function built without it still serves its routes.
    let queue = root.work_queue(Job::Prune).map_err(|e| e.to_string());
    let (on_tick, on_message) = (scheduled.clone(), scheduled);
    let schedule = entry::lambda::scheduled(move || {
        let (pruner, queue) = (on_tick.clone(), queue.clone());
        async move { on_schedule(&pruner, queue.map_err(domain::Error::Retry)?.as_ref()).await }
    });
    let queue = entry::lambda::queue_work(move |work| on_work(on_message.clone(), work));
    Ok(Function {
        access: Access::Admin,
        routes: routes(pruner.clone()),
        consumers: vec![pruner],
        schedule: Some(schedule),
        queue: Some(queue),
        relay: None,
    })
}

pub fn routes(pruner: Arc<Pruner>) -> Router {
    Router::new()
        .route("/integrations/{id}/prune", post(prune))
        .route("/integrations/{id}/environments", get(environments))
        .route("/integrations/{id}/prune-audit", get(audit))
        .route("/integrations/{id}/environments/{branch}/status", put(report_status))
        .with_state(pruner)
}

async fn prune(
    State(p): State<Arc<Pruner>>,
    Path(id): Path<String>,
    JsonBody(request): JsonBody<PruneRequest>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(match request.validate()? {
        PruneAction::Reconcile => json!(p.reconcile(&id).await?),
        PruneAction::StaleBranches { dry_run } => json!(p.stale_branches(&id, dry_run, Utc::now()).await?),
    }))
}

async fn environments(
    State(p): State<Arc<Pruner>>,
    Path(id): Path<String>,
    Query(paging): Query<Paging>,
) -> Result<Json<Value>, ApiError> {
    let limit = paging.limit(100, 1000)?;
    let (environments, next_cursor) = p.list_environments(&id, limit, paging.cursor).await?;
    Ok(Json(json!({"environments": environments, "next_cursor": next_cursor})))
}

async fn audit(
    State(p): State<Arc<Pruner>>,
    Path(id): Path<String>,
    Query(paging): Query<Paging>,
) -> Result<Json<Value>, ApiError> {
    let limit = paging.limit(20, 100)?;
    let (entries, next_cursor) = p.list_audit(&id, limit, paging.cursor).await?;
    Ok(Json(json!({"audit": entries, "next_cursor": next_cursor})))
}

/// A deployment's state reported by the service that deploys the environment (the branch
/// percent-encoded as one path segment): shown in Bitbucket on the environment's head commit.
async fn report_status(
    State(p): State<Arc<Pruner>>,
    Path((id, branch)): Path<(String, String)>,
    JsonBody(report): JsonBody<StatusReport>,
) -> Result<Json<Value>, ApiError> {
    let environment = p.report_status(&id, &branch, report).await?;
    Ok(Json(json!(environment)))
}

/// The scheduled run: one message per eligible integration on `queue`, in an order that rotates
/// with each cycle.
pub async fn on_schedule(pruner: &Pruner, queue: &dyn WorkQueue) -> Result<Value, domain::Error> {
    let enqueued = fanout::enqueue(&pruner.ctx, queue, Job::Prune, |i| pruner.schedulable(i)).await?;
    tracing::info!(cycle = enqueued.cycle, enqueued = enqueued.enqueued, skipped = enqueued.skipped, "prune enqueued");
    Ok(json!(enqueued))
}

/// One message's run: one integration's parked deliveries, reconciliation and stale-branch plan.
pub async fn on_work(pruner: Arc<Pruner>, work: Work) -> Result<Value, domain::Error> {
    match pruner.run_one(&work.integration_id, Utc::now()).await? {
        Some(report) => {
            let environments = report.environments.as_ref();
            tracing::info!(integration = %report.integration,
                listed = environments.map_or(0, |r| r.listed), pruned = environments.map_or(0, |r| r.pruned.len()),
                deferred = report.deferred, errors = ?report.errors, "branches reconciled");
            Ok(json!(report))
        }
        None => Ok(json!({"integration": work.integration_id, "skipped": "gone or not eligible"})),
    }
}
