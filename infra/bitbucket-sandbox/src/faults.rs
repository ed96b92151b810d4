//! Injected faults (rate limits, server errors, latency, revoked credentials) and the record of
//! every API request. Both sit in one middleware in front of the routes, so faults act before
//! authentication and their answers are recorded like any other.

use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::cloud::auth::INVALID_CREDENTIALS;
use crate::error::{DcError, Error};
use crate::{Sandbox, traffic};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Fault {
    /// e.g. `"GET"`; `None` matches any method.
    pub method: Option<String>,
    /// Matched against the path after the mount point, e.g. `"/hooks"`.
    pub path_contains: String,
    pub kind: FaultKind,
    /// How many matching requests it affects; `None` = until cleared.
    pub times: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FaultKind {
    /// 429 comes without `Retry-After` on Cloud routes, as Cloud sends it, and with
    /// `Retry-After: 1` on Data Center (`/rest/`) routes; 5xx are plain text.
    Status { status: u16 },
    /// Waits, then answers normally.
    Latency { millis: u64 },
    /// Answers normally but holds the answer back this long: the request took effect, the
    /// caller has not heard (a lost answer, or a caller dying mid-request).
    LatencyAfter { millis: u64 },
    /// Every credential answers 401 while active.
    Revoke,
}

#[derive(Debug, Clone, Serialize)]
pub struct RecordedRequest {
    pub method: String,
    /// Relative to the mount point, e.g. `/2.0/user` or `/rest/api/latest/projects/…`.
    pub path: String,
    pub query: String,
    pub status: u16,
}

impl Fault {
    fn matches(&self, method: &str, path: &str) -> bool {
        self.method.as_ref().is_none_or(|m| m.eq_ignore_ascii_case(method)) && path.contains(&self.path_contains)
    }
}

/// The kinds of every fault matching this request, using up one of each one's `times`.
pub fn take_matching(faults: &mut Vec<Fault>, method: &str, path: &str) -> Vec<FaultKind> {
    let mut hits = Vec::new();
    faults.retain_mut(|fault| {
        if !fault.matches(method, path) {
            return true;
        }
        hits.push(fault.kind.clone());
        match &mut fault.times {
            Some(left) => {
                *left = left.saturating_sub(1);
                *left > 0
            }
            None => true,
        }
    });
    hits
}

/// The answer to a `Status` fault, in the shape of the API it hit (Data Center with `dc`).
fn fault_response(status: u16, dc: bool) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let reason = status.canonical_reason().unwrap_or("Error");
    if status.is_server_error() {
        return (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], reason).into_response();
    }
    let rate_limited = status == StatusCode::TOO_MANY_REQUESTS;
    let error =
        Error::new(status, if rate_limited { "Rate limit for this resource has been exceeded" } else { reason });
    if !dc {
        return error.into_response();
    }
    let mut response = DcError::from(error).into_response();
    if rate_limited {
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

/// Applies faults to, and records (and logs, see [`crate::traffic`]), every `/2.0`, `/rest` and
/// `/site` request; `/_admin` passes untouched.
pub async fn middleware(State(sandbox): State<Sandbox>, request: Request, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    let dc = path.starts_with("/rest/");
    if !(dc || path.starts_with("/2.0/") || path.starts_with("/site/")) {
        return next.run(request).await;
    }
    let method = request.method().to_string();
    let query = request.uri().query().unwrap_or_default().to_owned();
    // The traffic log, when there is one, reads both bodies.
    let (pending, request) = if sandbox.logs_traffic() {
        match traffic::before(&sandbox, request).await {
            Ok((pending, request)) => (Some(pending), request),
            Err(response) => return response,
        }
    } else {
        (None, request)
    };
    let hits = take_matching(&mut sandbox.faults(), &method, &path);
    let mut answer = None;
    let mut hold = Duration::ZERO;
    for kind in hits {
        match kind {
            FaultKind::Latency { millis } => tokio::time::sleep(Duration::from_millis(millis)).await,
            FaultKind::LatencyAfter { millis } => hold += Duration::from_millis(millis),
            FaultKind::Status { status } => {
                answer.get_or_insert_with(|| fault_response(status, dc));
            }
            FaultKind::Revoke if dc => {
                answer.get_or_insert_with(|| DcError::authentication_failed().into_response());
            }
            FaultKind::Revoke => {
                answer.get_or_insert_with(|| Error::unauthorized(INVALID_CREDENTIALS).into_response());
            }
        }
    }
    let verdict = if dc { None } else { sandbox.count_request(request.headers()) };
    if verdict.as_ref().is_some_and(|v| v.limited) {
        answer.get_or_insert_with(|| fault_response(429, false));
    }
    let mut response = match answer {
        Some(response) => response,
        None => next.run(request).await,
    };
    if let Some(verdict) = &verdict {
        crate::rate_limit::apply(response.headers_mut(), verdict);
    }
    if !hold.is_zero() {
        tokio::time::sleep(hold).await;
    }
    sandbox.record(RecordedRequest { method, path, query, status: response.status().as_u16() });
    match pending {
        Some(pending) => traffic::after(&sandbox, pending, response).await,
        None => response,
    }
}
