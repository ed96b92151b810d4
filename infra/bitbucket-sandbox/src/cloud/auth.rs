//! Credentials as Cloud accepts them today: API tokens (Basic email:token), access tokens and
//! OAuth client-credentials tokens (Bearer). App passwords are refused: Cloud removed them.

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

use crate::error::Error;
use crate::{
    ACCESS_TOKEN, API_TOKEN, API_TOKEN_EMAIL, APP_PASSWORD, APP_PASSWORD_USER, ExtraCredential, OAUTH_CONSUMER_KEY,
    OAUTH_CONSUMER_SECRET, READONLY_ACCESS_TOKEN, Sandbox,
};

const ALL_SCOPES: &[&str] = &["account", "repository", "repository:write", "webhook", "pipeline"];
const READONLY_SCOPES: &[&str] = &["account", "repository"];

pub const INVALID_CREDENTIALS: &str = "Invalid credentials";
const APP_PASSWORD_REFUSED: &str = "App passwords are no longer supported; use an API token";

/// Issued OAuth tokens and their expiry.
pub struct OAuth {
    pub lifetime: Duration,
    pub(crate) tokens: HashMap<String, Instant>,
}

impl Default for OAuth {
    fn default() -> Self {
        OAuth { lifetime: Duration::from_secs(7200), tokens: HashMap::new() }
    }
}

/// An authenticated caller and the scopes its credential grants.
pub struct Caller {
    scopes: &'static [&'static str],
}

impl Caller {
    /// 403 with Cloud's message and `detail` when the credential lacks `scope`.
    pub fn require(&self, scope: &str) -> Result<(), Error> {
        if self.scopes.contains(&scope) {
            return Ok(());
        }
        let mut error =
            Error::new(StatusCode::FORBIDDEN, "Your credentials lack one or more required privilege scopes.");
        error.detail = Some(json!({ "required": [scope], "granted": self.scopes }));
        Err(error)
    }
}

impl FromRequestParts<Sandbox> for Caller {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, sandbox: &Sandbox) -> Result<Self, Error> {
        authenticate(sandbox, &parts.headers)
    }
}

fn authenticate(sandbox: &Sandbox, headers: &HeaderMap) -> Result<Caller, Error> {
    let invalid = || Error::unauthorized(INVALID_CREDENTIALS);
    let value = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).ok_or_else(invalid)?;
    let (scheme, credential) = value.trim().split_once(' ').ok_or_else(invalid)?;
    let credential = credential.trim();
    if scheme.eq_ignore_ascii_case("basic") {
        let (user, secret) = decode_basic(credential).ok_or_else(invalid)?;
        return match (user.as_str(), secret.as_str()) {
            (API_TOKEN_EMAIL, API_TOKEN) => Ok(Caller { scopes: ALL_SCOPES }),
            (APP_PASSWORD_USER, APP_PASSWORD) => Err(Error::unauthorized(APP_PASSWORD_REFUSED)),
            _ if sandbox.accepts(&ExtraCredential::ApiToken { email: user.clone(), token: secret.clone() }) => {
                Ok(Caller { scopes: ALL_SCOPES })
            }
            _ => Err(invalid()),
        };
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(invalid());
    }
    match credential {
        ACCESS_TOKEN => Ok(Caller { scopes: ALL_SCOPES }),
        READONLY_ACCESS_TOKEN => Ok(Caller { scopes: READONLY_SCOPES }),
        token if sandbox.accepts(&ExtraCredential::AccessToken(token.to_owned())) => Ok(Caller { scopes: ALL_SCOPES }),
        token => {
            let oauth = sandbox.oauth();
            match oauth.tokens.get(token) {
                Some(expires) if Instant::now() < *expires => Ok(Caller { scopes: ALL_SCOPES }),
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
    let known = match client {
        Some((key, secret)) if key == OAUTH_CONSUMER_KEY && secret == OAUTH_CONSUMER_SECRET => true,
        Some((key, secret)) => sandbox.accepts(&ExtraCredential::OauthConsumer { key, secret }),
        None => false,
    };
    if !known {
        return oauth_error("invalid_client", "Invalid OAuth client credentials");
    }
    if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return oauth_error("unsupported_grant_type", "Only grant_type=client_credentials is supported");
    }
    let token = hex::encode(rand::random::<[u8; 24]>());
    let lifetime = {
        let mut oauth = sandbox.oauth();
        let now = Instant::now();
        oauth.tokens.retain(|_, expires| *expires > now);
        let lifetime = oauth.lifetime;
        oauth.tokens.insert(token.clone(), now + lifetime);
        lifetime
    };
    Json(json!({
        "access_token": token,
        "token_type": "bearer",
        "expires_in": lifetime.as_secs(),
        "scopes": ALL_SCOPES.join(" "),
        "state": "client_credentials",
    }))
    .into_response()
}
