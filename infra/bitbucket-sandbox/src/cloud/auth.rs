//! Credentials as Cloud accepts them today: API tokens (Basic email:token, granular scopes),
//! access tokens and OAuth client-credentials tokens (Bearer, legacy scopes). App passwords are
//! refused: Cloud removed them. Each operation's scopes are in [`super::scopes`].

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::Form;
use axum::Json;
use axum::extract::rejection::FormRejection;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::json;

use super::scopes::{self, Operation};
use crate::error::Error;
use crate::{
    ACCESS_TOKEN, ACCESS_TOKEN_SCOPES, API_TOKEN, API_TOKEN_EMAIL, API_TOKEN_SCOPES, APP_PASSWORD, APP_PASSWORD_USER,
    ExtraCredential, Grant, NO_ADMIN_API_TOKEN, NO_ADMIN_API_TOKEN_EMAIL, NO_PULLREQUEST_ACCESS_TOKEN,
    OAUTH_CONSUMER_KEY, OAUTH_CONSUMER_SECRET, READONLY_ACCESS_TOKEN, READONLY_ACCESS_TOKEN_SCOPES, Sandbox,
};

pub const INVALID_CREDENTIALS: &str = "Invalid credentials";
const APP_PASSWORD_REFUSED: &str = "App passwords are no longer supported; use an API token";
const MISSING_SCOPES: &str = "Your credentials lack one or more required privilege scopes.";

/// Issued OAuth tokens: their expiry and the consumer's scopes.
pub struct OAuth {
    pub lifetime: Duration,
    pub(crate) tokens: HashMap<String, (Instant, Vec<String>)>,
}

impl Default for OAuth {
    fn default() -> Self {
        OAuth { lifetime: Duration::from_secs(7200), tokens: HashMap::new() }
    }
}

/// What kind of Cloud credential made a request (the traffic log's `auth.kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `Basic email:token`: granular scopes.
    ApiToken,
    /// A repository, project or workspace access token: legacy scopes.
    AccessToken,
    /// A token from the client-credentials grant: the consumer's legacy scopes.
    OauthConsumer,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::ApiToken => "api_token",
            Kind::AccessToken => "access_token",
            Kind::OauthConsumer => "oauth_consumer",
        }
    }
}

/// An authenticated caller and the scopes its credential grants.
#[derive(Debug, Clone)]
pub struct Caller {
    pub kind: Kind,
    pub scopes: Vec<String>,
}

impl Caller {
    /// 403 when the credential lacks a scope `operation` needs, in Cloud's shape: `detail` names
    /// the operation's scopes in the credential's own vocabulary (granular for an API token,
    /// legacy for the others) and the ones granted.
    pub fn require(&self, operation: &Operation) -> Result<(), Error> {
        let (required, missing) = match self.kind {
            Kind::ApiToken => (operation.granular, scopes::missing_granular(operation.granular, &self.scopes)),
            Kind::AccessToken | Kind::OauthConsumer => {
                (operation.legacy, scopes::missing_legacy(operation.legacy, &self.scopes))
            }
        };
        if missing.is_empty() {
            return Ok(());
        }
        let mut error = Error::new(StatusCode::FORBIDDEN, MISSING_SCOPES);
        error.detail = Some(json!({ "required": required, "granted": self.scopes }));
        Err(error)
    }
}

impl FromRequestParts<Sandbox> for Caller {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, sandbox: &Sandbox) -> Result<Self, Error> {
        authenticate(sandbox, &parts.headers)
    }
}

fn owned(scopes: &[&str]) -> Vec<String> {
    scopes.iter().map(|s| s.to_string()).collect()
}

/// Everything but `except`.
fn all_but(scopes: &[&str], except: &str) -> Vec<String> {
    scopes.iter().filter(|s| **s != except).map(|s| s.to_string()).collect()
}

/// The scopes an accepted extra credential holds.
fn granted(grant: Grant, default: &[&str]) -> Vec<String> {
    match grant {
        Grant::Scopes(scopes) => scopes,
        _ => owned(default),
    }
}

/// The caller behind a request's `Authorization`, or 401.
pub fn authenticate(sandbox: &Sandbox, headers: &HeaderMap) -> Result<Caller, Error> {
    let invalid = || Error::unauthorized(INVALID_CREDENTIALS);
    let value = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).ok_or_else(invalid)?;
    let (scheme, credential) = value.trim().split_once(' ').ok_or_else(invalid)?;
    let credential = credential.trim();
    if scheme.eq_ignore_ascii_case("basic") {
        let (user, secret) = decode_basic(credential).ok_or_else(invalid)?;
        let api_token = |scopes| Ok(Caller { kind: Kind::ApiToken, scopes });
        return match (user.as_str(), secret.as_str()) {
            (API_TOKEN_EMAIL, API_TOKEN) => api_token(owned(API_TOKEN_SCOPES)),
            (NO_ADMIN_API_TOKEN_EMAIL, NO_ADMIN_API_TOKEN) => {
                api_token(all_but(API_TOKEN_SCOPES, "admin:repository:bitbucket"))
            }
            (APP_PASSWORD_USER, APP_PASSWORD) => Err(Error::unauthorized(APP_PASSWORD_REFUSED)),
            _ => match sandbox.grant_of(&ExtraCredential::ApiToken { email: user, token: secret }) {
                Some(grant) => api_token(granted(grant, API_TOKEN_SCOPES)),
                None => Err(invalid()),
            },
        };
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(invalid());
    }
    let access_token = |scopes| Ok(Caller { kind: Kind::AccessToken, scopes });
    match credential {
        ACCESS_TOKEN => access_token(owned(ACCESS_TOKEN_SCOPES)),
        READONLY_ACCESS_TOKEN => access_token(owned(READONLY_ACCESS_TOKEN_SCOPES)),
        NO_PULLREQUEST_ACCESS_TOKEN => access_token(all_but(ACCESS_TOKEN_SCOPES, "pullrequest")),
        token => {
            if let Some(grant) = sandbox.grant_of(&ExtraCredential::AccessToken(token.to_owned())) {
                return access_token(granted(grant, ACCESS_TOKEN_SCOPES));
            }
            let oauth = sandbox.oauth();
            match oauth.tokens.get(token) {
                Some((expires, scopes)) if Instant::now() < *expires => {
                    Ok(Caller { kind: Kind::OauthConsumer, scopes: scopes.clone() })
                }
                _ => Err(invalid()),
            }
        }
    }
}

fn decode_basic(credential: &str) -> Option<(String, String)> {
    let decoded = String::from_utf8(STANDARD.decode(credential).ok()?).ok()?;
    let (user, secret) = decoded.split_once(':')?;
    Some((user.to_owned(), secret.to_owned()))
}

fn oauth_error(error: &str, description: &str) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({ "error": error, "error_description": description }))).into_response()
}

/// `POST /site/oauth2/access_token` with `grant_type=client_credentials`; the client
/// authenticates with HTTP Basic or with `client_id`/`client_secret` form fields.
pub async fn access_token(
    State(sandbox): State<Sandbox>,
    headers: HeaderMap,
    form: Result<Form<HashMap<String, String>>, FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return oauth_error("invalid_request", "Expected an application/x-www-form-urlencoded body");
    };
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic ").or_else(|| v.strip_prefix("basic ")))
        .and_then(|v| decode_basic(v.trim()));
    let client = basic.or_else(|| Some((form.get("client_id")?.clone(), form.get("client_secret")?.clone())));
    let scopes = match client {
        Some((key, secret)) if key == OAUTH_CONSUMER_KEY && secret == OAUTH_CONSUMER_SECRET => {
            Some(owned(ACCESS_TOKEN_SCOPES))
        }
        Some((key, secret)) => sandbox
            .grant_of(&ExtraCredential::OauthConsumer { key, secret })
            .map(|grant| granted(grant, ACCESS_TOKEN_SCOPES)),
        None => None,
    };
    let Some(scopes) = scopes else {
        return oauth_error("invalid_client", "Invalid OAuth client credentials");
    };
    if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return oauth_error("unsupported_grant_type", "Only grant_type=client_credentials is supported");
    }
    let token = hex::encode(rand::random::<[u8; 24]>());
    let lifetime = {
        let mut oauth = sandbox.oauth();
        let now = Instant::now();
        oauth.tokens.retain(|_, (expires, _)| *expires > now);
        let lifetime = oauth.lifetime;
        oauth.tokens.insert(token.clone(), (now + lifetime, scopes.clone()));
        lifetime
    };
    // RFC 6749 5.1 `scope` (space-separated), as Cloud sends it since 2026-05-04; no refresh token
    // for client credentials (4.4.3).
    Json(json!({
        "access_token": token,
        "token_type": "bearer",
        "expires_in": lifetime.as_secs(),
        "scope": scopes.join(" "),
        "state": "client_credentials",
    }))
    .into_response()
}
