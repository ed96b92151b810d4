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

/// Deserializes `bytes` (one JSON object, nothing after it), reporting the path of the
/// offending field.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // Every body is an object: serde would also build a struct from an array of its fields.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::BadRequest("invalid JSON body: expected a JSON object".into()));
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut *de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." || path.is_empty() {
            ApiError::BadRequest(format!("invalid JSON body: {inner}"))
        } else {
            ApiError::BadRequest(domain::objects::join_path(&path, &inner.to_string()))
        }
    })?;
    // `from_slice` would check this itself: trailing bytes make the body something else.
    de.end().map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize)]
    struct Body {
        mode: String,
    }

    #[test]
    fn one_object_and_nothing_else() {
        assert!(parse::<Body>(br#" {"mode": "a"} "#).is_ok_and(|b| b.mode == "a"));
        for bad in [&br#"{"mode": "a"} x"#[..], br#"{"mode": "a"}{"mode": "b"}"#, br#"["a"]"#, b"", b"null"] {
            assert!(matches!(parse::<Body>(bad), Err(ApiError::BadRequest(_))), "{}", String::from_utf8_lossy(bad));
        }
    }
}
