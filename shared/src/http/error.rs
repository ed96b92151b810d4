//! One error type for every HTTP answer, mapped once from the domain and port errors. Bodies
//! are `{"error": {"code": "...", "message": "..."}}`; messages never contain secrets.

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde_json::json;

use crate::bitbucket::BitbucketError;
use crate::domain::IngestError;
use crate::domain::backup::{BackupError, MAX_DOCUMENT_BYTES};
use crate::domain::connection::ConnectionError;
use crate::domain::pipelines::PipelineError;
use crate::domain::pruning::PrunerError;
use crate::secrets::SecretError;
use crate::store::StoreError;
use crate::webhook;

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
    /// A dependency failed in a way worth retrying (Bitbucket retries webhook deliveries on 5xx).
    #[error("{0}")]
    Unavailable(String),
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
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
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
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal",
            ApiError::Bitbucket(e) => e.reason(),
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
        (status, Json(json!({"error": {"code": self.code(), "message": self.to_string()}}))).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::BadCursor => ApiError::BadRequest("the cursor is not valid for this listing".into()),
            StoreError::ConditionFailed { .. } => ApiError::Conflict("the record changed concurrently; retry".into()),
            StoreError::Throttled | StoreError::Unavailable(_) => {
                ApiError::Unavailable(format!("state store: {e}; retry later"))
            }
            StoreError::Corrupt(_) => ApiError::Internal(e.to_string()),
        }
    }
}

impl From<SecretError> for ApiError {
    fn from(e: SecretError) -> Self {
        match e {
            SecretError::Corrupt(_) => ApiError::Internal(e.to_string()),
            SecretError::Unavailable(_) | SecretError::Denied => ApiError::Unavailable(format!("{e}; retry later")),
        }
    }
}

impl From<IngestError> for ApiError {
    fn from(e: IngestError) -> Self {
        let message = e.to_string();
        match e {
            IngestError::UnknownIntegration(_) => ApiError::NotFound(message),
            IngestError::NotAccepting { .. } => ApiError::Gone(message),
            IngestError::MissingEventKey | IngestError::BadDeliveryId(_) | IngestError::Payload { .. } => {
                ApiError::BadRequest(message)
            }
            IngestError::Signature(_) => ApiError::Unauthorized(message),
            IngestError::RepeatedHeader(webhook::RepeatedHeader("X-Hub-Signature")) => ApiError::Unauthorized(message),
            IngestError::RepeatedHeader(_) => ApiError::BadRequest(message),
            IngestError::DeliveryIdReused { .. } => ApiError::Conflict(message),
            // Our configuration is missing, not the sender's fault: 503 makes Bitbucket retry.
            IngestError::SecretMissing(_) => ApiError::Unavailable(message),
            IngestError::Secrets(e) => e.into(),
            IngestError::Store(e) => e.into(),
        }
    }
}

impl From<ConnectionError> for ApiError {
    fn from(e: ConnectionError) -> Self {
        let message = e.to_string();
        match e {
            ConnectionError::Invalid { .. } => ApiError::BadRequest(message),
            ConnectionError::NotFound(_) => ApiError::NotFound(message),
            ConnectionError::WrongState { .. } | ConnectionError::Busy { .. } => ApiError::Conflict(message),
            // The connection test or a Bitbucket step failed: 422 with the specific reason.
            ConnectionError::Bitbucket(b) => ApiError::Bitbucket(b),
            ConnectionError::Secrets(e) => e.into(),
            ConnectionError::Store(e) => e.into(),
        }
    }
}

impl From<BackupError> for ApiError {
    fn from(e: BackupError) -> Self {
        let message = e.to_string();
        match e {
            BackupError::Invalid { .. } => ApiError::BadRequest(message),
            BackupError::NoTarget { .. } => ApiError::NotFound(message),
            BackupError::TooLarge { .. } => ApiError::PayloadTooLarge(MAX_DOCUMENT_BYTES),
            BackupError::Busy(_) => ApiError::Unavailable(message),
            BackupError::Connection(e) => e.into(),
            BackupError::Bitbucket(b) => ApiError::Bitbucket(b),
            BackupError::Secrets(e) => e.into(),
            BackupError::Store(e) => e.into(),
        }
    }
}

impl From<PipelineError> for ApiError {
    fn from(e: PipelineError) -> Self {
        let message = e.to_string();
        match e {
            PipelineError::Invalid { .. } => ApiError::BadRequest(message),
            PipelineError::NotFound(_) => ApiError::NotFound(message),
            PipelineError::AlreadyFinished { .. } => ApiError::Conflict(message),
            PipelineError::ActionInProgress(_) => ApiError::Unavailable(message),
            PipelineError::Connection(e) => e.into(),
            PipelineError::Bitbucket(b) => ApiError::Bitbucket(b),
            PipelineError::Secrets(e) => e.into(),
            PipelineError::Store(e) => e.into(),
        }
    }
}

impl From<PrunerError> for ApiError {
    fn from(e: PrunerError) -> Self {
        let message = e.to_string();
        match e {
            PrunerError::Invalid { .. } => ApiError::BadRequest(message),
            PrunerError::NotMirrored(_) => ApiError::Conflict(message),
            // Nothing was pruned; a later run (or a retry) may read the whole listing.
            PrunerError::Incomplete(_) => ApiError::Unavailable(message),
            PrunerError::Connection(e) => e.into(),
            // 503 when Bitbucket is down or rate limiting, 422 when it refused.
            PrunerError::Bitbucket(b) => ApiError::Bitbucket(b),
            PrunerError::Secrets(e) => e.into(),
            PrunerError::Store(e) => e.into(),
        }
    }
}
