//! pipeline-trigger: `POST /integrations/{id}/pipelines` (run) and `…/pipelines/{uuid}/stop`,
//! plus the automatic runs: each recorded delivery (from the table's stream on AWS, from the
//! in-process feed locally) goes through [`Pipelines::on_delivery`].

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::post;
use axum::{Json, Router};
use domain::pipelines::{Pipelines, RunRequest};
use entry::Root;
use entry::http::{ApiError, JsonBody, Path};
use entry::lambda::{Access, Function};
use entry::settings::ConfigError;

/// The function: the run and stop routes, and the automatic runs of every recorded delivery
/// (the table's stream).
pub fn function(root: &Root) -> Result<Function, ConfigError> {
    let pipelines = Arc::new(root.pipelines());
    Ok(Function {
        access: Access::Admin,
        routes: routes(pipelines.clone()),
        consumers: vec![pipelines],
        schedule: None,
        queue: None,
        relay: None,
    })
}

pub fn routes(pipelines: Arc<Pipelines>) -> Router {
    Router::new()
        .route("/integrations/{id}/pipelines", post(run))
        .route("/integrations/{id}/pipelines/{uuid}/stop", post(stop))
        .with_state(pipelines)
}

async fn run(
    State(p): State<Arc<Pipelines>>,
    Path(id): Path<String>,
    JsonBody(request): JsonBody<RunRequest>,
) -> Result<impl IntoResponse, ApiError> {
    Ok((StatusCode::CREATED, Json(p.run(&id, request).await?)))
}

async fn stop(
    State(p): State<Arc<Pipelines>>,
    Path((id, uuid)): Path<(String, String)>,
) -> Result<impl IntoResponse, ApiError> {
    Ok((StatusCode::ACCEPTED, Json(p.stop(&id, &uuid).await?)))
}
