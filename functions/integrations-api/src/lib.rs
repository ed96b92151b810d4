//! The integrations API (admin: IAM on AWS, bearer token locally). For now it lists what the
//! receiver recorded; connecting, testing and the lifecycle of integrations build on it.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Value, json};
use shared::backends::Backends;
use shared::domain::{integration, list_deliveries};
use shared::http::ApiError;
use shared::store::clamp_limit;

pub struct Api {
    pub backends: Backends,
}

pub fn app(api: Arc<Api>) -> Router {
    shared::http::finish(routes(api))
}

pub fn routes(api: Arc<Api>) -> Router {
    Router::new().route("/integrations/{id}/events", get(list_events)).with_state(api)
}

#[derive(Deserialize)]
struct Paging {
    limit: Option<String>,
    cursor: Option<String>,
}

/// `limit` as a number in 1..=max; anything else is a 400 naming the parameter.
fn parse_limit(raw: Option<&str>, default: usize, max: usize) -> Result<usize, ApiError> {
    match raw {
        None => Ok(default),
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => Ok(clamp_limit(Some(n), default, max)),
            _ => Err(ApiError::BadRequest(format!("`limit` must be a whole number from 1 to {max}"))),
        },
    }
}

async fn list_events(
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
    Query(paging): Query<Paging>,
) -> Result<Json<Value>, ApiError> {
    let limit = parse_limit(paging.limit.as_deref(), 20, 100)?;
    let store = api.backends.store.as_ref();
    if integration::get(store, &id).await?.is_none() {
        return Err(ApiError::NotFound(format!("no integration `{id}`")));
    }
    let (events, next_cursor) = list_deliveries(store, &id, limit, paging.cursor).await?;
    Ok(Json(json!({"events": events, "next_cursor": next_cursor})))
}
