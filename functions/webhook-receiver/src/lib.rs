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
use domain::{Backends, Ingested, ingest};
use entry::Root;
use entry::http::{ApiError, Path, is_json, read_body};
use entry::lambda::Function;
use entry::settings::ConfigError;
use http::{HeaderMap, StatusCode};
use serde_json::json;
use tracing::Instrument;

/// Bitbucket Cloud refuses to send payloads over 256 KB; nothing larger is a real delivery.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

pub struct Receiver {
    pub backends: Backends,
    pub retention: chrono::Duration,
}

/// The function: its routes on the root's storage.
pub fn function(root: &Root) -> Result<Function, ConfigError> {
    let receiver = Receiver { backends: root.backends.clone(), retention: root.settings.retention };
    Ok(Function::http(app(Arc::new(receiver))))
}

/// The receiver's routes, ready to serve (Lambda or the local stack).
pub fn app(receiver: Arc<Receiver>) -> Router {
    entry::http::finish(routes(receiver))
}

/// The bare routes, for a host that adds the shared layers itself.
pub fn routes(receiver: Arc<Receiver>) -> Router {
    Router::new().route("/webhooks/{integration_id}", post(receive)).with_state(receiver)
}

async fn receive(
    State(receiver): State<Arc<Receiver>>,
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
        let backends = &receiver.backends;
        let outcome = ingest(
            backends.store.as_ref(),
            backends.secrets.as_ref(),
            &integration_id,
            &delivery,
            &body,
            receiver.retention,
        )
        .await?;
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
