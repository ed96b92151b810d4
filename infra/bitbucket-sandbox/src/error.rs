//! Errors, rendered the way Bitbucket Cloud renders them (`{"type":"error","error":{…}}`) on the
//! Cloud API, as Data Center does (`{"errors":[{…}]}`) on its API, and as
//! `{"error":{"code","message"}}` on the admin routes.

use axum::Json;
use axum::extract::{FromRequestParts, Path};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

#[derive(Debug, Clone)]
pub struct Error {
    pub status: StatusCode,
    pub message: String,
    /// Cloud's `error.detail`, e.g. the required and granted scopes of a 403.
    pub detail: Option<Value>,
}

impl Error {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Error { status, message: message.into(), detail: None }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Error::new(StatusCode::BAD_REQUEST, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Error::new(StatusCode::NOT_FOUND, message)
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Error::new(StatusCode::CONFLICT, message)
    }
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Error::new(StatusCode::UNAUTHORIZED, message)
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let mut error = json!({ "message": self.message });
        if let Some(detail) = self.detail {
            error["detail"] = detail;
        }
        (self.status, Json(json!({ "type": "error", "error": error }))).into_response()
    }
}

/// The same failure, in the admin routes' shape.
#[derive(Debug)]
pub struct AdminError(pub Error);

impl From<Error> for AdminError {
    fn from(e: Error) -> Self {
        AdminError(e)
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let code = match self.0.status {
            StatusCode::BAD_REQUEST => "bad_request",
            StatusCode::NOT_FOUND => "not_found",
            StatusCode::CONFLICT => "conflict",
            _ => "error",
        };
        (self.0.status, Json(json!({ "error": { "code": code, "message": self.0.message } }))).into_response()
    }
}

/// The same failure, in Data Center's shape: `{"errors": [{"context", "message", "exceptionName"}]}`
/// with all three keys, `context` and `exceptionName` null unless known, as the description's
/// narrative ("Errors & Validation") shows every error.
#[derive(Debug)]
pub struct DcError {
    pub error: Error,
    pub exception: Option<&'static str>,
}

/// What Data Center names a permission failure (answered 401, with the user in `X-AUSERNAME`).
pub const DC_NOT_PERMITTED: &str = "com.atlassian.bitbucket.AuthorisationException";

impl DcError {
    pub fn authentication_failed() -> Self {
        DcError {
            error: Error::unauthorized("Authentication failed. Please check your credentials and try again."),
            exception: Some("com.atlassian.bitbucket.auth.IncorrectPasswordAuthenticationException"),
        }
    }

    /// 401 for an authenticated user who lacks a permission (the description documents 401 for
    /// insufficient permissions on every repository operation the sandbox serves).
    pub fn not_permitted(message: impl Into<String>) -> Self {
        DcError { error: Error::unauthorized(message), exception: Some(DC_NOT_PERMITTED) }
    }

    pub fn with_exception(error: Error, exception: &'static str) -> Self {
        DcError { error, exception: Some(exception) }
    }
}

impl From<Error> for DcError {
    fn from(error: Error) -> Self {
        DcError { error, exception: None }
    }
}

impl IntoResponse for DcError {
    fn into_response(self) -> Response {
        let error = json!({ "context": Value::Null, "message": self.error.message, "exceptionName": self.exception });
        (self.error.status, Json(json!({ "errors": [error] }))).into_response()
    }
}

/// `Path`, but a bad segment (e.g. a non-numeric pull request id) is a JSON 400, not plain text.
pub struct PathParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for PathParams<T> {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Error> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(PathParams(value)),
            Err(rejection) => Err(Error::bad_request(rejection.body_text())),
        }
    }
}

/// [`PathParams`] for the Data Center routes: a bad segment is a 400 in Data Center's shape.
pub struct DcPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for DcPath<T> {
    type Rejection = DcError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, DcError> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(DcPath(value)),
            Err(rejection) => Err(Error::bad_request(rejection.body_text()).into()),
        }
    }
}

/// Parses a JSON request body; anything malformed is a 400 naming the problem.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(body).map_err(|e| Error::bad_request(format!("Invalid JSON body: {e}")))
}
