//! One error type for every HTTP answer, mapped once from the domain and port errors. Bodies
//! are `{"error": {"code": "...", "message": "..."}}`; messages never contain secrets.

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde_json::json;

use domain::Error;
use domain::bitbucket::BitbucketError;
use domain::secrets::SecretError;
use domain::store::StoreError;
use domain::webhook::RepeatedHeader;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Gone(String),
    #[error("{0}")]
    RequestTimeout(String),
    #[error("the body is larger than the {0}-byte limit")]
    PayloadTooLarge(usize),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    Unprocessable(String),
    /// Worth retrying shortly, and the message says why (Bitbucket retries webhook deliveries
    /// on 5xx).
    #[error("{0}")]
    Unavailable(String),
    /// A dependency (the state table, the secret store) failed: 503 too, but its detail names
    /// infrastructure (tables, roles, accounts), so it goes to the log and the answer is generic.
    #[error("{0}")]
    Dependency(String),
    /// Something that should not happen; the detail goes to the log only.
    #[error("{0}")]
    Internal(String),
    /// Bitbucket refused or failed: 422 carrying the typed reason (503 when worth retrying).
    #[error("{0}")]
    Bitbucket(BitbucketError),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Gone(_) => StatusCode::GONE,
            ApiError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unavailable(_) | ApiError::Dependency(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            // Worth retrying later: Bitbucket is down, slow or rate limiting.
            ApiError::Bitbucket(BitbucketError::Unavailable(_) | BitbucketError::RateLimited) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Bitbucket(BitbucketError::Unsupported(_)) => StatusCode::CONFLICT,
            ApiError::Bitbucket(_) => StatusCode::UNPROCESSABLE_ENTITY,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::NotFound(_) => "not_found",
            ApiError::Conflict(_) => "conflict",
            ApiError::Gone(_) => "gone",
            ApiError::RequestTimeout(_) => "request_timeout",
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::Unprocessable(_) => "unprocessable",
            ApiError::Unavailable(_) | ApiError::Dependency(_) => "unavailable",
            ApiError::Internal(_) => "internal",
            ApiError::Bitbucket(e) => e.reason(),
        }
    }
}

impl ApiError {
    /// What the caller is told: the message, except where it would name infrastructure.
    fn public_message(&self) -> String {
        match self {
            ApiError::Dependency(_) => "a service this API depends on is unavailable; retry later".into(),
            ApiError::Internal(_) => "the request could not be completed".into(),
            other => other.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(code = self.code(), error = %self, "request failed");
        } else {
            tracing::info!(code = self.code(), error = %self, "request refused");
        }
        let mut error = json!({"code": self.code(), "message": self.public_message()});
        // The id the log lines carry: what to quote to whoever reads the logs.
        if let Ok(request_id) = super::REQUEST_ID.try_with(Clone::clone) {
            error["request_id"] = json!(request_id);
        }
        (status, Json(json!({"error": error}))).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::BadCursor => ApiError::BadRequest("the cursor is not valid for this listing".into()),
            StoreError::ConditionFailed { .. } => ApiError::Conflict("the record changed concurrently; retry".into()),
            StoreError::Throttled | StoreError::Unavailable(_) => ApiError::Dependency(format!("state store: {e}")),
            StoreError::Corrupt(_) => ApiError::Internal(e.to_string()),
        }
    }
}

impl From<SecretError> for ApiError {
    fn from(e: SecretError) -> Self {
        match e {
            SecretError::Corrupt(_) => ApiError::Internal(e.to_string()),
            SecretError::Unavailable(_) | SecretError::Denied => ApiError::Dependency(e.to_string()),
        }
    }
}

/// The one mapping from the domain's errors to answers.
impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let message = e.to_string();
        match e {
            Error::Invalid { .. } | Error::Malformed(_) => ApiError::BadRequest(message),
            Error::Signature(_) | Error::RepeatedHeader(RepeatedHeader("X-Hub-Signature")) => {
                ApiError::Unauthorized(message)
            }
            Error::RepeatedHeader(_) => ApiError::BadRequest(message),
            Error::NotFound(_) => ApiError::NotFound(message),
            Error::NotAccepting { .. } => ApiError::Gone(message),
            Error::WrongState { .. } | Error::Busy { .. } | Error::Conflict(_) => ApiError::Conflict(message),
            Error::TooLarge { limit, .. } => ApiError::PayloadTooLarge(limit),
            // Worth retrying: Bitbucket retries a webhook delivery on 5xx, people retry a 503.
            Error::Retry(_) => ApiError::Unavailable(message),
            // 503 when Bitbucket is down or rate limiting, 422 when it refused.
            Error::Bitbucket(b) => ApiError::Bitbucket(b),
            Error::Secrets(e) => e.into(),
            Error::Store(e) => e.into(),
        }
    }
}
