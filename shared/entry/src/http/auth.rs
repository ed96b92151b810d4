//! Admin routes: on AWS the HTTP API's IAM authorizer guards them; the local stack (and any
//! deployment without IAM in front) requires `Authorization: Bearer <token>`.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::ApiError;
use domain::secrets::Secret;

#[derive(Clone)]
pub struct AdminToken(Arc<[u8; 32]>);

impl AdminToken {
    pub fn new(token: &Secret) -> Self {
        AdminToken(Arc::new(Sha256::digest(token.expose().as_bytes()).into()))
    }

    /// Compares digests so the check takes the same time whatever the presented token.
    fn matches(&self, presented: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        digest.iter().zip(self.0.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }
}

/// The credentials of `Authorization: Bearer <token>`; the scheme name is case-insensitive
/// (RFC 7235 §2.1), so `BEARER` and `bearer` count too.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim_start().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token)
}

pub async fn require_admin(State(token): State<AdminToken>, request: Request, next: Next) -> Response {
    let presented =
        request.headers().get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(bearer_token);
    match presented {
        Some(p) if token.matches(p.trim()) => next.run(request).await,
        Some(_) => ApiError::Unauthorized("the bearer token is not valid".into()).into_response(),
        None => ApiError::Unauthorized("admin routes need `Authorization: Bearer <API_TOKEN>`".into()).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::bearer_token;

    #[test]
    fn the_scheme_is_case_insensitive() {
        for value in ["Bearer t", "bearer t", "BEARER t", "bEaReR t"] {
            assert_eq!(bearer_token(value), Some("t"), "{value}");
        }
        for value in ["Basic t", "Bearert", "Bearer", ""] {
            assert_eq!(bearer_token(value), None, "{value}");
        }
    }
}
