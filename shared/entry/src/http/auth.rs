//! Who may call the admin routes, and the record of who did.
//!
//! On AWS the HTTP API's IAM authorizer verifies the caller; the functions still refuse a
//! request that carries no IAM identity in its request context (a function URL or another front
//! added outside the template would otherwise reach them unauthenticated) unless it presents the
//! bearer token configured in Secrets Manager ([`AdminGuard`]). The local stack requires its own
//! bearer token ([`require_admin`]). Either way every change an admin request makes is logged
//! with its caller ("admin change").

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use domain::secrets::{Secret, SecretStore};
use lambda_http::RequestExt;
use lambda_http::request::RequestContext;
use sha2::{Digest, Sha256};

use super::ApiError;

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
    scheme.eq_ignore_ascii_case("bearer").then_some(token.trim())
}

fn presented_token(request: &Request) -> Option<&str> {
    request.headers().get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(bearer_token)
}

/// The IAM principal API Gateway's authorizer verified for this request, if any.
pub fn iam_caller(request: &Request) -> Option<String> {
    let iam_arn = match request.request_context_ref()? {
        RequestContext::ApiGatewayV2(context) => context.authorizer.as_ref()?.iam.as_ref()?.user_arn.clone(),
        RequestContext::ApiGatewayV1(context) => context.identity.user_arn.clone(),
        _ => None,
    };
    iam_arn.filter(|arn| arn.starts_with("arn:"))
}

/// Runs an admin request on behalf of `caller`, logging every change it makes (anything but a
/// read) with the caller, so the log shows who deleted an integration or pruned branches.
async fn as_caller(caller: String, request: Request, next: Next) -> Response {
    let (method, path) = (request.method().clone(), request.uri().path().to_owned());
    let response = next.run(request).await;
    if !method.is_safe() {
        tracing::info!(caller, %method, path, status = response.status().as_u16(), "admin change");
    }
    response
}

/// The local stack's guard: the bearer token it generated (or was given).
pub async fn require_admin(State(token): State<AdminToken>, request: Request, next: Next) -> Response {
    match presented_token(&request) {
        Some(p) if token.matches(p) => as_caller("bearer token".into(), request, next).await,
        Some(_) => ApiError::Unauthorized("the bearer token is not valid".into()).into_response(),
        None => ApiError::Unauthorized("admin routes need `Authorization: Bearer <API_TOKEN>`".into()).into_response(),
    }
}

/// The Lambda functions' guard: an IAM-verified caller, or the bearer token kept in the secret
/// `token_secret` (when configured, for deployments that front the API otherwise). Nothing
/// else: a request that reached the function around API Gateway's authorizer is refused.
#[derive(Clone)]
pub struct AdminGuard {
    pub secrets: Arc<dyn SecretStore>,
    pub token_secret: Option<String>,
}

impl AdminGuard {
    async fn token_matches(&self, presented: &str) -> bool {
        let Some(name) = &self.token_secret else { return false };
        match self.secrets.get(name).await {
            Ok(Some(token)) => AdminToken::new(&token).matches(presented),
            Ok(None) => false,
            Err(e) => {
                tracing::error!(error = %e, "the admin token could not be read");
                false
            }
        }
    }
}

pub async fn require_iam_or_token(State(guard): State<AdminGuard>, request: Request, next: Next) -> Response {
    if let Some(caller) = iam_caller(&request) {
        return as_caller(caller, request, next).await;
    }
    let presented = presented_token(&request).map(str::to_owned);
    match presented {
        Some(token) if guard.token_matches(&token).await => as_caller("bearer token".into(), request, next).await,
        _ => ApiError::Unauthorized(
            "admin routes need an IAM-authorized request (SigV4 through the HTTP API), or the configured bearer token"
                .into(),
        )
        .into_response(),
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
