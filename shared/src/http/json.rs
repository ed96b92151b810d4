//! `JsonBody<T>`: the request-body extractor for admin routes. Non-JSON is 415, too large 413,
//! and a body that does not fit `T` is a 400 naming the field (`credential.kind: …`).

use axum::extract::{FromRequest, Request};
use serde::de::DeserializeOwned;

use super::{ApiError, is_json, read_body};

/// Admin request bodies are small; this bounds what a caller can make us buffer.
pub const MAX_ADMIN_BODY: usize = 64 * 1024;

pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, _state: &S) -> Result<Self, ApiError> {
        let (parts, body) = request.into_parts();
        if !is_json(&parts.headers) {
            return Err(ApiError::UnsupportedMediaType("send the body as application/json".into()));
        }
        let bytes = read_body(&parts.headers, body, MAX_ADMIN_BODY).await?;
        parse(&bytes).map(JsonBody)
    }
}

/// Deserializes `bytes`, reporting the path of the offending field.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." || path.is_empty() {
            ApiError::BadRequest(format!("invalid JSON body: {inner}"))
        } else {
            ApiError::BadRequest(format!("{path}: {inner}"))
        }
    })
}
