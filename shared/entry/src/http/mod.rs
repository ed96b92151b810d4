//! HTTP plumbing every function's router shares: typed errors rendered as JSON, request ids on
//! every log line, admin bearer auth for the local stack, bounded body reads.

mod auth;
mod error;
mod extract;
mod json;

pub use auth::{AdminGuard, AdminToken, iam_caller, require_admin, require_iam_or_token};
pub use error::ApiError;
pub use extract::{Path, Query};
pub use json::{JsonBody, MAX_ADMIN_BODY, parse as parse_json};

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use bytes::BytesMut;
use http::{HeaderMap, HeaderValue, header};
use http_body_util::BodyExt;
use tracing::Instrument;

pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The router type every function serves (for crates that need not name axum).
pub type Router = axum::Router;

tokio::task_local! {
    /// The request id of the request being answered (error bodies quote it).
    pub static REQUEST_ID: String;
}

/// Middleware: gives each request an id (the caller's `x-request-id`, or a new one), runs the
/// handler inside a span that carries it, and echoes it in the response.
pub async fn request_context(request: Request, next: Next) -> Response {
    let request_id = request
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let span = tracing::info_span!(
        "request",
        request_id = %request_id,
        method = %request.method(),
        path = %request.uri().path(),
    );
    let mut response = REQUEST_ID.scope(request_id.clone(), next.run(request).instrument(span.clone())).await;
    span.in_scope(|| tracing::info!(status = response.status().as_u16(), "request finished"));
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    response
}

/// How much of an oversized body is still read (and dropped) before the 413: a client still
/// sending then gets the answer instead of a reset connection. Larger ones are cut off.
const DRAIN_LIMIT: u64 = 16 * 1024 * 1024;

/// How long a request body may take to arrive, whole: a client that declares more than it
/// sends, or stops half-way, gets a 408 instead of holding its connection (and a task) open.
/// In Lambda the body is already in memory; this bounds the local stack's real connections.
pub const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Reads a request body of at most `limit` bytes within [`BODY_READ_TIMEOUT`]; a declared or
/// actual larger one is 413, a late one 408, and nothing of either is kept or parsed.
pub async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, ApiError> {
    tokio::time::timeout(BODY_READ_TIMEOUT, read_bounded(headers, body, limit)).await.map_err(|_| {
        ApiError::RequestTimeout(format!("the body did not arrive within {} s", BODY_READ_TIMEOUT.as_secs()))
    })?
}

async fn read_bounded(headers: &HeaderMap, mut body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    let declared_too_large = declared.is_some_and(|len| len > limit as u64);
    if declared.is_some_and(|len| len > DRAIN_LIMIT) {
        return Err(ApiError::PayloadTooLarge(limit));
    }
    let mut kept = BytesMut::new();
    let mut seen: u64 = 0;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ApiError::BadRequest(format!("the body could not be read: {e}")))?;
        let Ok(data) = frame.into_data() else { continue };
        seen += data.len() as u64;
        if seen > DRAIN_LIMIT {
            break;
        }
        if !declared_too_large && seen <= limit as u64 {
            kept.extend_from_slice(&data);
        }
    }
    if declared_too_large || seen > limit as u64 {
        return Err(ApiError::PayloadTooLarge(limit));
    }
    Ok(kept.freeze())
}

/// True when the request says its body is JSON (`application/json`, optionally with
/// parameters, or a `+json` subtype).
pub fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let mime = value.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

/// The paging query of a listing: `?limit=…&cursor=…`.
#[derive(Debug, serde::Deserialize)]
pub struct Paging {
    pub limit: Option<String>,
    pub cursor: Option<String>,
}

impl Paging {
    /// The page size asked for (see [`parse_limit`]).
    pub fn limit(&self, default: usize, max: usize) -> Result<usize, ApiError> {
        parse_limit(self.limit.as_deref(), default, max)
    }
}

/// A `limit` query parameter: a whole number in 1..=max (`default` when absent); anything
/// else is a 400 naming the parameter.
pub fn parse_limit(raw: Option<&str>, default: usize, max: usize) -> Result<usize, ApiError> {
    match raw {
        None => Ok(default),
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(ApiError::BadRequest(format!("limit: must be a whole number from 1 to {max}"))),
        },
    }
}

/// Adds what every function's router needs: JSON 404/405 answers and the request context.
pub fn finish(router: axum::Router) -> axum::Router {
    router
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .method_not_allowed_fallback(|| async { ApiError::NotFound("no such route for this method".into()) })
        .layer(axum::middleware::from_fn(request_context))
}
