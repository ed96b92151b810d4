//! The integrations API (admin: IAM on AWS, bearer token locally): connections to Bitbucket,
//! their lifecycle, the deliveries the receiver recorded for them, and the consumer work that
//! failed on them (listed, and replayed one delivery at a time).

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use domain::Integration;
use domain::connection::{Connections, IntegrationPatch, NewIntegration};
use domain::consumers::DeliveryConsumer;
use domain::failures;
use entry::Root;
use entry::http::{ApiError, JsonBody, Paging, Path, Query};
use entry::lambda::Function;
use entry::settings::ConfigError;
use serde::Deserialize;
use serde_json::{Value, json};

pub struct Api {
    pub connections: Connections,
}

/// The function: the connections service (it registers webhooks, so it needs the public URL).
pub fn function(root: &Root) -> Result<Function, ConfigError> {
    let api = routes(Arc::new(Api { connections: root.connections()? }));
    let failures = failure_routes(Arc::new(Consumers(root.consumers())));
    Ok(Function::http(api.merge(failures)))
}

/// The delivery consumers a replay runs, in the stream's order.
pub struct Consumers(pub Vec<Arc<dyn DeliveryConsumer>>);

/// `GET /integrations/{id}/failures` and `POST /integrations/{id}/deliveries/{delivery_id}/replay`.
pub fn failure_routes(consumers: Arc<Consumers>) -> Router {
    Router::new()
        .route("/integrations/{id}/failures", get(list_failures))
        .route("/integrations/{id}/deliveries/{delivery_id}/replay", post(replay))
        .with_state(consumers)
}

/// Consumer work that failed (after its retries on the stream, or the local worker's), newest
/// attempt first; a later success or a replay that succeeds removes it.
async fn list_failures(
    State(consumers): State<Arc<Consumers>>,
    Path(id): Path<String>,
    Query(paging): Query<Paging>,
) -> Result<Json<Value>, ApiError> {
    let limit = paging.limit(20, 100)?;
    let Some(first) = consumers.0.first() else { return Ok(Json(json!({"failures": [], "next_cursor": null}))) };
    let ctx = first.context();
    ctx.get(&id).await?;
    let (failures, next_cursor) =
        failures::list(ctx.store.as_ref(), &id, limit, paging.cursor).await.map_err(domain::Error::from)?;
    Ok(Json(json!({"failures": failures, "next_cursor": next_cursor})))
}

/// Runs every consumer on one recorded delivery again, through the claims that make a replay
/// never double an effect; answers what each did (`ok` is false when one failed again).
async fn replay(
    State(consumers): State<Arc<Consumers>>,
    Path((id, delivery_id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let replayed = failures::replay(&consumers.0, &id, &delivery_id).await?;
    let ok = !replayed.iter().any(failures::Replayed::failed);
    Ok(Json(json!({"delivery_id": delivery_id, "ok": ok, "consumers": replayed})))
}

pub fn routes(api: Arc<Api>) -> Router {
    Router::new()
        .route("/integrations", get(list).post(create))
        .route("/integrations/{id}", get(show).patch(update).delete(remove))
        .route("/integrations/{id}/test", post(test))
        .route("/integrations/{id}/{action}", post(lifecycle))
        .route("/integrations/{id}/events", get(list_events))
        .route("/integrations/{id}/parked", get(list_parked))
        .route("/integrations/{id}/activity", get(list_activity))
        .with_state(api)
}

/// An integration as answered: everything but secret names (values are never in the record).
pub fn view(i: &Integration) -> Value {
    json!({
        "id": i.id,
        "name": i.name,
        "description": i.description,
        "status": i.status,
        "flavor": i.target.flavor,
        "repository": {
            "base_url": i.target.base_url,
            "full_name": i.target.full_name(),
            "owner": i.target.owner,
            "slug": i.target.slug,
        },
        "options": i.options,
        "credential": i.credential,
        "webhook": i.webhook,
        "last_error": i.last_error,
        "created_at": i.created_at,
        "updated_at": i.updated_at,
    })
}

async fn create(
    State(api): State<Arc<Api>>,
    JsonBody(request): JsonBody<NewIntegration>,
) -> Result<impl IntoResponse, ApiError> {
    let integration = api.connections.create(request).await?;
    Ok((StatusCode::CREATED, Json(view(&integration))))
}

async fn list(State(api): State<Arc<Api>>) -> Result<Json<Value>, ApiError> {
    let all = api.connections.list().await?;
    Ok(Json(json!({"integrations": all.iter().map(view).collect::<Vec<_>>()})))
}

async fn show(State(api): State<Arc<Api>>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    Ok(Json(view(&api.connections.get(&id).await?)))
}

async fn update(
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
    JsonBody(patch): JsonBody<IntegrationPatch>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(view(&api.connections.update(&id, patch).await?)))
}

#[derive(Deserialize)]
struct DeleteQuery {
    force: Option<bool>,
}

async fn remove(
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
    Query(q): Query<DeleteQuery>,
) -> Result<StatusCode, ApiError> {
    api.connections.delete(&id, q.force.unwrap_or(false)).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn test(State(api): State<Arc<Api>>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let (integration, report) = api.connections.test_connection(&id).await?;
    Ok(Json(json!({"test": report, "integration": view(&integration)})))
}

async fn lifecycle(
    State(api): State<Arc<Api>>,
    Path((id, action)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let c = &api.connections;
    let integration = match action.as_str() {
        "disconnect" => c.disconnect(&id).await?,
        "reconnect" => c.reconnect(&id).await?,
        "archive" => c.archive(&id).await?,
        "unarchive" => c.unarchive(&id).await?,
        "rotate-webhook-secret" => c.rotate_webhook_secret(&id).await?,
        _ => return Err(ApiError::NotFound(format!("no action `{action}` on integrations"))),
    };
    Ok(Json(view(&integration)))
}

async fn list_events(
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
    Query(paging): Query<Paging>,
) -> Result<Json<Value>, ApiError> {
    let (events, next_cursor) = api.connections.deliveries(&id, paging.limit(20, 100)?, paging.cursor).await?;
    Ok(Json(json!({"events": events, "next_cursor": next_cursor})))
}

/// The activity feed: every domain event of the integration, newest first, each with when it
/// was published (EventBridge on AWS, `EVENTS_URL` locally).
async fn list_activity(
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
    Query(paging): Query<Paging>,
) -> Result<Json<Value>, ApiError> {
    let (activity, next_cursor) = api.connections.activity(&id, paging.limit(20, 100)?, paging.cursor).await?;
    Ok(Json(json!({"activity": activity, "next_cursor": next_cursor})))
}

/// Deliveries a consumer could not act on yet (the integration was disconnected, or its
/// credential refused, when they reached it), with the reason; newest first.
async fn list_parked(
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
    Query(paging): Query<Paging>,
) -> Result<Json<Value>, ApiError> {
    let (parked, next_cursor) = api.connections.parked(&id, paging.limit(20, 100)?, paging.cursor).await?;
    let parked: Vec<Value> = parked
        .iter()
        .map(|p| {
            json!({
                "consumer": p.consumer,
                "reason": p.reason,
                "parked_at": p.parked_at,
                "delivery_id": p.delivery.delivery_id,
                "event_key": p.delivery.event_key,
                "summary": p.delivery.summary,
                "received_at": p.delivery.received_at,
            })
        })
        .collect();
    Ok(Json(json!({"parked": parked, "next_cursor": next_cursor})))
}
