//! Data Center credentials: HTTP access tokens (`Bearer`), each with a repository permission.
//! Every `/rest` route authenticates first (401 `IncorrectPasswordAuthenticationException`, no
//! `X-AUSERNAME`), then checks the permission its operation's description names (401
//! `AuthorisationException`, with `X-AUSERNAME`: the user is known, the permission is missing).

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::state::DC_USER;
use crate::error::DcError;
use crate::{DC_HTTP_TOKEN, DC_PROJECT, DC_READ_TOKEN, DC_WRITE_TOKEN, DcPermission, ExtraCredential, Grant, Sandbox};

/// The authenticated token's permission on `SANDBOX/demo`, put in the request by [`authenticate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DcCaller(pub DcPermission);

impl DcCaller {
    /// 401, as Data Center answers an authenticated user without the permission.
    pub fn require(self, needed: DcPermission) -> Result<(), DcError> {
        if self.0 >= needed {
            return Ok(());
        }
        Err(DcError::not_permitted(format!(
            "You are not permitted to access this resource: {} is needed on {DC_PROJECT}/{}, the token has {}.",
            needed.as_str(),
            crate::REPOSITORY,
            self.0.as_str()
        )))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for DcCaller {
    type Rejection = DcError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, DcError> {
        parts.extensions.get::<DcCaller>().copied().ok_or_else(DcError::authentication_failed)
    }
}

/// The permission of the request's token, if it is one the sandbox accepts.
pub fn identify(sandbox: &Sandbox, headers: &HeaderMap) -> Option<DcPermission> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())?;
    match token {
        DC_HTTP_TOKEN => Some(DcPermission::RepoAdmin),
        DC_WRITE_TOKEN => Some(DcPermission::RepoWrite),
        DC_READ_TOKEN => Some(DcPermission::RepoRead),
        token => match sandbox.grant_of(&ExtraCredential::DcHttpToken(token.to_owned()))? {
            Grant::Permission(permission) => Some(permission),
            _ => Some(DcPermission::RepoAdmin),
        },
    }
}

/// Refuses anything but an accepted HTTP access token (Cloud credentials included); names the
/// user in `X-AUSERNAME` on every answer to it, as Data Center does.
pub async fn authenticate(State(sandbox): State<Sandbox>, mut request: Request, next: Next) -> Response {
    let Some(permission) = identify(&sandbox, request.headers()) else {
        return DcError::authentication_failed().into_response();
    };
    request.extensions_mut().insert(DcCaller(permission));
    let mut response = next.run(request).await;
    response.headers_mut().insert("x-ausername", HeaderValue::from_static(DC_USER));
    response
}
