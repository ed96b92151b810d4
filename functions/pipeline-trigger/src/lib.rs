//! pipeline-trigger: `POST /integrations/{id}/pipelines` (run) and `…/pipelines/{uuid}/stop`,
//! plus the automatic runs: each recorded delivery (from the table's stream on AWS, from the
//! in-process feed locally) goes through [`Pipelines::on_delivery`].

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::Value;
use shared::domain::pipelines::{Pipelines, RunRequest};
use shared::http::{ApiError, JsonBody, Path};
use shared::store::Item;

pub fn app(pipelines: Arc<Pipelines>) -> Router {
    shared::http::finish(routes(pipelines))
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

/// Handles one new image from the table's change feed (deliveries only). An error means
/// "retry this record".
pub async fn on_item(pipelines: &Pipelines, item: &Item) -> Result<(), String> {
    shared::lambda::on_delivery_item(item, |delivery| async move { pipelines.on_delivery(&delivery).await }).await
}

/// A DynamoDB stream batch: each record processed; the failed ones reported for retry.
pub async fn on_stream(pipelines: &Pipelines, batch: &Value) -> Value {
    shared::lambda::on_stream(batch, |item| async move { on_item(pipelines, &item).await }).await
}
