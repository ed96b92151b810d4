//! pipeline-trigger: `POST /integrations/{id}/pipelines` (run) and `…/pipelines/{uuid}/stop`,
//! plus the automatic runs: each recorded delivery (from the table's stream on AWS, from the
//! in-process feed locally) goes through [`Pipelines::on_delivery`].

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::Value;
use shared::domain::delivery::{self, Delivery};
use shared::domain::pipelines::{Pipelines, RunRequest};
use shared::http::{ApiError, JsonBody};
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

/// Handles one new image from the table's change feed: deliveries only (the stream's event
/// filter already selects them on AWS). An error means "retry this record".
pub async fn on_item(pipelines: &Pipelines, item: &Item) -> Result<(), String> {
    if item.kind != delivery::KIND {
        return Ok(());
    }
    let delivery: Delivery = item.record().map_err(|e| e.to_string())?;
    let span =
        tracing::info_span!("delivery", delivery_id = %delivery.delivery_id, integration = %delivery.integration_id);
    let _guard = span.enter();
    match pipelines.on_delivery(&delivery).await {
        Ok(effects) => {
            tracing::info!(?effects, "delivery processed");
            Ok(())
        }
        Err(e) => {
            tracing::warn!(error = %e, "delivery processing failed; it will be retried");
            Err(e.to_string())
        }
    }
}

/// A DynamoDB stream batch: each record processed; the failed ones reported for retry.
pub async fn on_stream(pipelines: &Pipelines, batch: &Value) -> Value {
    let mut failed = Vec::new();
    for (sequence, item) in shared::lambda::stream_records(batch) {
        let outcome = match item {
            Ok(item) => on_item(pipelines, &item).await,
            Err(e) => {
                // An image that cannot be read will not read better on retry.
                tracing::error!(error = %e, sequence, "unreadable stream record skipped");
                Ok(())
            }
        };
        if outcome.is_err() {
            failed.push(sequence);
        }
    }
    shared::lambda::batch_failures(&failed)
}
