//! Who may call the admin routes, and the record of who did.
//!
//! On AWS the HTTP API's IAM authorizer verifies the caller; the functions still refuse a
//! request that carries no IAM identity in its request context (a function URL or another front
//! added outside the template would otherwise reach them unauthenticated) unless it presents the
//! bearer token configured in Secrets Manager ([`AdminGuard`]). The local stack requires its own
//! bearer token ([`require_admin`]). Either way every change an admin request makes is logged
//! with its caller ("admin change") and kept in the integration's activity feed (`admin.change`).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use domain::integration::valid_id;
use domain::outbox::{self, DomainEvent, EventType};
use domain::secrets::{Secret, SecretStore};
use domain::store::StateStore;
use lambda_http::RequestExt;
use lambda_http::request::RequestContext;
use sha2::{Digest, Sha256};

use super::ApiError;

/// The local stack's bearer token (its digest), and where admin changes are kept.
#[derive(Clone)]
pub struct AdminToken {
    digest: Arc<[u8; 32]>,
    feed: Option<Arc<dyn StateStore>>,
}

impl AdminToken {
    pub fn new(token: &Secret) -> Self {
        AdminToken { digest: Arc::new(Sha256::digest(token.expose().as_bytes()).into()), feed: None }
    }

    /// Keeps every admin change in the activity feed of the integration it names.
    pub fn with_feed(self, store: Arc<dyn StateStore>) -> Self {
        AdminToken { feed: Some(store), ..self }
    }

    /// Compares digests so the check takes the same time whatever the presented token.
    fn matches(&self, presented: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        digest.iter().zip(self.digest.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
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
/// read) with the caller, so the log shows who deleted an integration or pruned branches; a
/// change that succeeded on a route naming an integration is also kept in its activity feed.
async fn as_caller(caller: String, feed: Option<&dyn StateStore>, request: Request, next: Next) -> Response {
    let (method, path) = (request.method().clone(), request.uri().path().to_owned());
    let response = next.run(request).await;
    if method.is_safe() {
        return response;
    }
    let status = response.status();
    tracing::info!(caller, %method, path, status = status.as_u16(), "admin change");
    if let (Some(store), Some(id), true) = (feed, changed_integration(&path), status.is_success()) {
        let request_id = super::REQUEST_ID.try_with(Clone::clone).ok();
        let data = serde_json::json!({
            "caller": caller, "method": method.as_str(), "path": path, "status": status.as_u16(),
            "request_id": request_id,
        });
        // Each request is its own cause: two identical changes are two entries.
        let event = DomainEvent::new(EventType::AdminChange, id, &uuid::Uuid::new_v4().to_string(), data);
        if let Err(e) = outbox::record(store, &event).await {
            // The change is made and logged above; only the feed's copy is missing.
            tracing::warn!(caller, path, error = %e, "admin change not kept in the activity feed");
        }
    }
    response
}

/// The integration an admin route changes (`/integrations/{id}/…`), when the path names one.
fn changed_integration(path: &str) -> Option<&str> {
    let id = path.strip_prefix("/integrations/")?.split('/').next()?;
    valid_id(id).then_some(id)
}

/// The local stack's guard: the bearer token it generated (or was given).
pub async fn require_admin(State(token): State<AdminToken>, request: Request, next: Next) -> Response {
    match presented_token(&request) {
        Some(p) if token.matches(p) => as_caller("bearer token".into(), token.feed.as_deref(), request, next).await,
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
    /// Where admin changes are kept besides the log (the activity feed).
    pub feed: Option<Arc<dyn StateStore>>,
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
        return as_caller(caller, guard.feed.as_deref(), request, next).await;
    }
    let presented = presented_token(&request).map(str::to_owned);
    match presented {
        Some(token) if guard.token_matches(&token).await => {
            as_caller("bearer token".into(), guard.feed.as_deref(), request, next).await
        }
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
