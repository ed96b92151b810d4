//! HTTP to Bitbucket: authentication per credential kind (OAuth tokens cached until they
//! expire), jittered exponential backoff on 429/5xx/timeouts within the caller's deadline
//! (honouring Data Center's Retry-After), bounded pagination, and the mapping of answers to
//! [`BitbucketError`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use base64::Engine as _;
use reqwest::header::{AUTHORIZATION, HeaderMap, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use domain::bitbucket::capabilities::{C_OAUTH_TOKEN, holds};
use domain::bitbucket::{BitbucketError, Credential, Listing, Operation};
use domain::secrets::Secret;
use domain::webhook::Flavor;

/// Retry shape: attempts are bounded, and so is every wait.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
    pub request_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
        }
    }
}

/// Built once per process (cold start): the HTTP client with its connection pool and the
/// OAuth token cache, shared by every connection.
pub struct Transport {
    http: OnceLock<reqwest::Client>,
    policy: RetryPolicy,
    /// sha256(token URL, consumer key, consumer secret) → (access token, valid until).
    oauth_tokens: Mutex<HashMap<[u8; 32], (Secret, Instant)>>,
}

/// A request body that can be rebuilt for each attempt.
#[derive(Debug, Clone)]
pub enum Body {
    Empty,
    Json(Value),
    Form(Vec<(String, String)>),
    /// `multipart/form-data` parts. Names are sent as they are (a file path with `/` stays
    /// readable to Bitbucket, not RFC 5987-encoded), so callers pass only names
    /// [`super::form_safe`] accepts.
    Multipart(Vec<FormPart>),
}

/// One `multipart/form-data` field.
#[derive(Debug, Clone)]
pub struct FormPart {
    pub name: String,
    pub bytes: Vec<u8>,
    /// Marks a file field (`filename=` in its `Content-Disposition`).
    pub file_name: Option<String>,
}

impl FormPart {
    pub fn text(name: &str, value: &str) -> Self {
        FormPart { name: name.to_owned(), bytes: value.as_bytes().to_vec(), file_name: None }
    }
}

fn multipart(parts: &[FormPart]) -> reqwest::multipart::Form {
    parts.iter().fold(reqwest::multipart::Form::new().percent_encode_noop(), |form, part| {
        let mut field = reqwest::multipart::Part::bytes(part.bytes.clone());
        if let Some(file_name) = &part.file_name {
            field = field.file_name(file_name.clone());
        }
        form.part(part.name.clone(), field)
    })
}

/// Who is calling and until when: the per-connection half of a request.
#[derive(Clone)]
pub struct Session {
    pub transport: Arc<Transport>,
    pub flavor: Flavor,
    pub credential: Credential,
    pub oauth_token_url: String,
    pub deadline: Instant,
}

impl Transport {
    pub fn new(policy: RetryPolicy) -> Self {
        Transport { http: OnceLock::new(), policy, oauth_tokens: Mutex::new(HashMap::new()) }
    }

    /// The HTTP client, built at the first Bitbucket call rather than at cold start: building it
    /// reads the system's certificate store (hundreds of files), which a function whose request
    /// never reaches Bitbucket (a webhook, a listing) should not pay for.
    fn http(&self) -> &reqwest::Client {
        self.http.get_or_init(|| {
            // ring as rustls' provider, as for the AWS SDK's client (`backends::sdk_config`): one
            // small crypto library in every function instead of aws-lc. A provider someone
            // installed first wins; that is fine too.
            let _ = rustls::crypto::ring::default_provider().install_default();
            reqwest::Client::builder()
                .user_agent(concat!("bitbucket-automation/", env!("CARGO_PKG_VERSION")))
                .connect_timeout(Duration::from_secs(5))
                .pool_idle_timeout(Duration::from_secs(60))
                .build()
                .expect("static HTTP client configuration")
        })
    }
}

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

fn short(text: &str) -> String {
    let text = text.trim();
    match text.char_indices().nth(300) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// Bitbucket's own error message from a body: Cloud `error.message`, Data Center
/// `errors[0].message`, OAuth `error_description`.
fn message_of(body: &Value) -> Option<String> {
    body.pointer("/error/message")
        .or_else(|| body.pointer("/errors/0/message"))
        .or_else(|| body.get("error_description"))
        .and_then(Value::as_str)
        .map(short)
}

fn full_jitter(policy: &RetryPolicy, attempt: u32) -> Duration {
    let exp = policy.base_delay.saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)));
    let cap = exp.min(policy.max_delay);
    cap.mul_f64(rand::random::<f64>())
}

/// `Retry-After` in seconds (Data Center sends it; Cloud does not).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers.get(RETRY_AFTER)?.to_str().ok()?.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// Describes a transport failure without the URL's query or any header.
/// What kind of network failure `cause` (the innermost error's text) describes. TLS first: a
/// certificate for the wrong host names the expected `DnsName`, which is no DNS failure.
fn failure_kind(cause: &str, timed_out: bool) -> &'static str {
    let lower = cause.to_lowercase();
    if lower.contains("certificate") || lower.contains("tls") || lower.contains("handshake") {
        "TLS failed"
    } else if lower.contains("dns") || lower.contains("resolve") || lower.contains("lookup") {
        "DNS lookup failed"
    } else if timed_out {
        "timed out"
    } else {
        "connection failed"
    }
}

fn network_error(e: &reqwest::Error) -> BitbucketError {
    let mut root: &dyn std::error::Error = e;
    while let Some(next) = root.source() {
        root = next;
    }
    let cause = root.to_string();
    let kind = failure_kind(&cause, e.is_timeout());
    if e.is_timeout() {
        BitbucketError::Unavailable(format!("{kind}: {}", short(&cause)))
    } else {
        BitbucketError::Network(format!("{kind}: {}", short(&cause)))
    }
}

impl Session {
    async fn authorization(&self, refresh: bool) -> Result<String, BitbucketError> {
        Ok(match &self.credential {
            Credential::ApiToken { email, token } => basic(email, token.expose()),
            Credential::AppPassword { username, app_password } => basic(username, app_password.expose()),
            Credential::AccessToken { token } | Credential::HttpToken { token } => format!("Bearer {}", token.expose()),
            Credential::OauthConsumer { key, secret } => {
                format!("Bearer {}", self.oauth_token(key, secret, refresh).await?.expose())
            }
        })
    }

    /// Client-credentials grant, cached until shortly before `expires_in`.
    async fn oauth_token(&self, key: &str, secret: &Secret, refresh: bool) -> Result<Secret, BitbucketError> {
        let cache_key: [u8; 32] =
            Sha256::digest(format!("{}\n{key}\n{}", self.oauth_token_url, secret.expose()).as_bytes()).into();
        if !refresh
            && let Some((token, until)) = self.transport.oauth_tokens.lock().expect("lock").get(&cache_key)
            && Instant::now() < *until
        {
            return Ok(token.clone());
        }
        let form = vec![("grant_type".to_owned(), "client_credentials".to_owned())];
        let response = self
            .send_with(&C_OAUTH_TOKEN, &self.oauth_token_url, &Body::Form(form), true, &basic(key, secret.expose()))
            .await?;
        #[derive(serde::Deserialize)]
        struct Token {
            access_token: Secret,
            expires_in: Option<u64>,
        }
        let token: Token = response
            .json()
            .await
            .map_err(|e| BitbucketError::Unexpected(format!("OAuth token answer: {}", short(&e.to_string()))))?;
        // Renew a minute early (or at half-life for very short tokens) so a request never
        // starts with a token about to expire.
        let lifetime = Duration::from_secs(token.expires_in.unwrap_or(3600));
        let until = Instant::now() + lifetime.saturating_sub(Duration::from_secs(60).min(lifetime / 2));
        self.transport.oauth_tokens.lock().expect("lock").insert(cache_key, (token.access_token.clone(), until));
        Ok(token.access_token)
    }

    /// Sends `operation` (its method) to `url` with retries; returns a 2xx response or the
    /// typed error, which names the operation.
    pub async fn send(
        &self,
        operation: &'static Operation,
        url: &str,
        body: &Body,
        retry_unsafe: bool,
    ) -> Result<reqwest::Response, BitbucketError> {
        let auth = self.authorization(false).await?;
        match self.send_with(operation, url, body, retry_unsafe, &auth).await {
            // An OAuth token can be revoked before it expires: fetch a new one, once.
            Err(BitbucketError::BadCredentials(_)) if matches!(self.credential, Credential::OauthConsumer { .. }) => {
                let auth = self.authorization(true).await?;
                self.send_with(operation, url, body, retry_unsafe, &auth).await
            }
            other => other,
        }
    }

    /// `retry_unsafe`: the request may be repeated after an ambiguous failure (a 500 or a
    /// timeout). GET/PUT/DELETE always may; a POST only when the caller says it is safe (e.g. a
    /// commit guarded by `parents`). 429, 502, 503, 504 and refused connections are always
    /// retried: the request was not processed.
    async fn send_with(
        &self,
        operation: &'static Operation,
        url: &str,
        body: &Body,
        retry_unsafe: bool,
        authorization: &str,
    ) -> Result<reqwest::Response, BitbucketError> {
        let method = Method::from_bytes(operation.method.as_bytes()).expect("the table's methods are HTTP methods");
        let policy = self.transport.policy;
        let idempotent = retry_unsafe || method != Method::POST;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let remaining = self.deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(BitbucketError::Unavailable("the deadline passed before Bitbucket answered".into()));
            }
            let mut request = self
                .transport
                .http()
                .request(method.clone(), url)
                .header(AUTHORIZATION, authorization)
                .header("Accept", "application/json")
                .timeout(remaining.min(policy.request_timeout));
            request = match body {
                Body::Empty => request,
                Body::Json(v) => request.json(v),
                Body::Form(fields) => request.form(fields),
                Body::Multipart(parts) => request.multipart(multipart(parts)),
            };
            let (failure, wait_hint) = match request.send().await {
                Ok(response) if response.status().is_success() => return Ok(response),
                Ok(response) => {
                    let status = response.status();
                    let hint = retry_after(response.headers());
                    match status {
                        StatusCode::TOO_MANY_REQUESTS => (BitbucketError::RateLimited, hint),
                        StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT => {
                            (BitbucketError::Unavailable(format!("HTTP {}", status.as_u16())), hint)
                        }
                        s if s.is_server_error() && idempotent => {
                            (BitbucketError::Unavailable(format!("HTTP {}", status.as_u16())), hint)
                        }
                        _ => return Err(self.final_error(response, operation).await),
                    }
                }
                Err(e) if e.is_connect() || (e.is_timeout() && idempotent) => (network_error(&e), None),
                Err(e) => return Err(network_error(&e)),
            };
            tracing::info!(attempt, reason = failure.reason(), "Bitbucket request will be retried");
            if attempt >= policy.max_attempts {
                return Err(failure);
            }
            let wait = wait_hint.unwrap_or_else(|| full_jitter(&policy, attempt));
            if Instant::now() + wait >= self.deadline {
                return Err(failure);
            }
            tokio::time::sleep(wait).await;
        }
    }

    async fn final_error(&self, response: reqwest::Response, operation: &'static Operation) -> BitbucketError {
        let status = response.status();
        let path = response.url().path().to_owned();
        // Data Center names the authenticated user on every answer to a valid credential.
        let user_known = response.headers().contains_key("x-ausername");
        let body: Value = response.json().await.unwrap_or(Value::Null);
        let message = message_of(&body);
        match status {
            StatusCode::UNAUTHORIZED => match (&self.credential, self.flavor) {
                (Credential::AppPassword { .. }, Flavor::Cloud) => BitbucketError::AppPasswordRemoved,
                // Data Center answers a missing permission with 401 too: the user is known, the
                // exception is an authorisation one. The operation says which permission.
                (_, Flavor::DataCenter)
                    if user_known
                        || body.pointer("/errors/0/exceptionName").and_then(Value::as_str)
                            == Some(DC_NOT_PERMITTED) =>
                {
                    BitbucketError::Forbidden {
                        missing: operation.permission.map(|p| p.as_str().to_owned()).into_iter().collect(),
                        granted: None,
                        message,
                        operation: Some(operation),
                    }
                }
                _ => BitbucketError::BadCredentials(message),
            },
            StatusCode::FORBIDDEN => {
                let scopes = |pointer: &str| {
                    body.pointer(pointer)
                        .and_then(Value::as_array)
                        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect::<Vec<String>>())
                };
                let required = scopes("/error/detail/required").unwrap_or_default();
                let granted = scopes("/error/detail/granted");
                // What Bitbucket required and did not grant; all it required when it did not say
                // what it granted.
                let missing = match &granted {
                    Some(granted) => {
                        let lacking: Vec<String> = required.iter().filter(|s| !holds(granted, s)).cloned().collect();
                        if lacking.is_empty() { required } else { lacking }
                    }
                    None => required,
                };
                BitbucketError::Forbidden { missing, granted, message, operation: Some(operation) }
            }
            StatusCode::NOT_FOUND => BitbucketError::NotFound(message.unwrap_or(path)),
            StatusCode::CONFLICT => BitbucketError::Conflict(message),
            StatusCode::BAD_REQUEST if self.is_oauth_endpoint(&path) => BitbucketError::BadCredentials(message),
            StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY => BitbucketError::Rejected(message),
            // A server error on a request not safe to repeat: still Bitbucket failing (503 to
            // callers, not a refusal), and it may have acted, so the caller checks before redoing.
            s if s.is_server_error() => BitbucketError::Unavailable(format!(
                "HTTP {}{} (not retried: the request may have taken effect)",
                s.as_u16(),
                message.map(|m| format!(": {m}")).unwrap_or_default()
            )),
            s => BitbucketError::Unexpected(format!(
                "HTTP {}{}",
                s.as_u16(),
                message.map(|m| format!(": {m}")).unwrap_or_default()
            )),
        }
    }

    fn is_oauth_endpoint(&self, path: &str) -> bool {
        self.oauth_token_url.ends_with(path)
    }

    pub async fn json<T: DeserializeOwned>(
        &self,
        operation: &'static Operation,
        url: &str,
        body: &Body,
    ) -> Result<T, BitbucketError> {
        let response = self.send(operation, url, body, false).await?;
        response
            .json()
            .await
            .map_err(|e| BitbucketError::Unexpected(format!("not the expected JSON: {}", short(&e.to_string()))))
    }

    /// A raw body (file content); `None` for a 404.
    pub async fn bytes(&self, operation: &'static Operation, url: &str) -> Result<Option<Vec<u8>>, BitbucketError> {
        let response = match self.send(operation, url, &Body::Empty, false).await {
            Ok(response) => response,
            Err(BitbucketError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        let bytes = response.bytes().await.map_err(|e| BitbucketError::Unexpected(format!("file content: {e}")))?;
        Ok(Some(bytes.to_vec()))
    }

    /// Follows a listing's pages up to `max_pages`. `next_url` reads the next page's URL out of
    /// a page (Cloud `next`, Data Center `nextPageStart`); only URLs on the same origin as the
    /// first are followed, so a credential is never sent elsewhere.
    pub async fn list<T: DeserializeOwned>(
        &self,
        operation: &'static Operation,
        first: &str,
        max_pages: usize,
        next_url: impl Fn(&Value, &str) -> Option<String>,
    ) -> Result<Listing<T>, BitbucketError> {
        let first_origin = origin(first);
        let mut items = Vec::new();
        let mut url = first.to_owned();
        for _ in 0..max_pages {
            let body: Value = self.json(operation, &url, &Body::Empty).await?;
            let values = body.get("values").cloned().unwrap_or(Value::Array(vec![]));
            let mut values: Vec<T> = serde_json::from_value(values)
                .map_err(|e| BitbucketError::Unexpected(format!("listing page: {}", short(&e.to_string()))))?;
            items.append(&mut values);
            match next_url(&body, &url) {
                Some(next) if origin(&next) == first_origin => url = next,
                Some(_) => return Err(BitbucketError::Unexpected("a page linked to another host".into())),
                None => return Ok(Listing { items, complete: true }),
            }
        }
        Ok(Listing { items, complete: false })
    }
}

/// What Data Center calls a missing permission.
const DC_NOT_PERMITTED: &str = "com.atlassian.bitbucket.AuthorisationException";

fn origin(url: &str) -> Option<(String, String, Option<u16>)> {
    let u = reqwest::Url::parse(url).ok()?;
    Some((u.scheme().to_owned(), u.host_str()?.to_owned(), u.port_or_known_default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_failures_are_named_by_their_innermost_cause() {
        let cases = [
            // rustls, a certificate for another host: it names the expected DnsName.
            (
                r#"invalid peer certificate: certificate not valid for name "bitbucket.example.com"; certificate is only valid for DnsName("other.example.com")"#,
                "TLS failed",
            ),
            ("invalid peer certificate: UnknownIssuer", "TLS failed"),
            ("received fatal alert: HandshakeFailure", "TLS failed"),
            ("failed to lookup address information: Name or service not known", "DNS lookup failed"),
            ("Connection refused (os error 111)", "connection failed"),
        ];
        for (cause, kind) in cases {
            assert_eq!(failure_kind(cause, false), kind, "{cause}");
        }
        assert_eq!(failure_kind("deadline has elapsed", true), "timed out");
    }

    #[test]
    fn backoff_is_bounded_and_messages_are_short() {
        let p = RetryPolicy::default();
        for attempt in 1..20 {
            assert!(full_jitter(&p, attempt) <= p.max_delay);
        }
        let long = "x".repeat(1000);
        assert!(short(&long).chars().count() <= 301);
        assert_eq!(message_of(&serde_json::json!({"errors": [{"message": "nope"}]})).as_deref(), Some("nope"));
        assert_eq!(origin("https://a.b/x?y=1"), origin("https://a.b:443/z"));
        assert_ne!(origin("https://a.b/x"), origin("https://evil.example/x"));
    }
}
