//! `POST /webhooks/{integration_id}`: verify, record once, answer. No Bitbucket call happens
//! here; the work a delivery causes fans out from its record (DynamoDB Streams on AWS, the
//! in-process worker locally).

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use domain::webhook::DeliveryHeaders;
use domain::{Ingested, Intake};
use entry::Root;
use entry::http::{ApiError, Path, is_json, read_body};
use entry::lambda::{Access, Function};
use entry::settings::ConfigError;
use http::{HeaderMap, StatusCode};
use serde_json::json;
use tracing::Instrument;

/// Bitbucket Cloud refuses to send payloads over 256 KB; nothing larger is a real delivery.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// The function: the public route, on the root's storage, its integration reads cached as the
/// settings say.
pub fn function(root: &Root) -> Result<Function, ConfigError> {
    let intake = Intake::new(root.backends.clone(), root.settings.retention, root.settings.integration_cache);
    Ok(Function { access: Access::Public, ..Function::http(routes(Arc::new(intake))) })
}

/// The receiver's routes, ready to serve (tests, tools).
pub fn app(intake: Arc<Intake>) -> Router {
    entry::http::finish(routes(intake))
}

/// The bare routes, for a host that adds the shared layers itself.
pub fn routes(receiver: Arc<Intake>) -> Router {
    Router::new().route("/webhooks/{integration_id}", post(receive)).with_state(receiver)
}

async fn receive(
    State(receiver): State<Arc<Intake>>,
    Path(integration_id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = read_body(&headers, body, MAX_BODY_BYTES).await?;
    if !is_json(&headers) {
        return Err(ApiError::UnsupportedMediaType("webhook bodies must be sent as application/json".into()));
    }
    let pairs = headers.iter().map(|(name, value)| (name.as_str(), value.as_bytes()));
    let delivery = DeliveryHeaders::from_pairs(pairs).map_err(domain::Error::from)?;
    let span = tracing::info_span!(
        "delivery",
        integration_id = %integration_id,
        delivery_id = delivery.delivery_id.as_deref().unwrap_or("-"),
        event_key = delivery.event_key.as_deref().unwrap_or("-"),
        attempt = delivery.attempt,
    );
    async move {
        let outcome = receiver.ingest(&integration_id, &delivery, &body).await?;
        Ok(match outcome {
            Ingested::Recorded(d) => {
                tracing::info!(event_id = %d.event_id, summary = %d.summary, "delivery recorded");
                let answer =
                    json!({"event_id": d.event_id, "event_key": d.event_key, "flavor": d.flavor, "duplicate": false});
                (StatusCode::ACCEPTED, Json(answer)).into_response()
            }
            Ingested::Duplicate(d) => {
                tracing::info!(event_id = %d.event_id, "duplicate delivery, nothing recorded");
                let answer =
                    json!({"event_id": d.event_id, "event_key": d.event_key, "flavor": d.flavor, "duplicate": true});
                (StatusCode::OK, Json(answer)).into_response()
            }
            Ingested::Ping => (StatusCode::OK, Json(json!({"ping": true}))).into_response(),
        })
    }
    .instrument(span)
    .await
}
