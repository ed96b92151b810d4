//! The harness every sandbox test module shares: the sandbox served over real HTTP on a free
//! port, mounted where the local stack mounts it, and a client with the API token.

use axum::Router;
use bitbucket_sandbox::{API_TOKEN, API_TOKEN_EMAIL, DC_HTTP_TOKEN, PROBE_HEADER, Sandbox};
use reqwest::{Method, RequestBuilder};
use serde_json::{Value, json};
use tokio::net::TcpListener;

pub const MOUNT: &str = "/sandbox/bitbucket";

pub struct Harness {
    pub sandbox: Sandbox,
    pub base: String,
    pub http: reqwest::Client,
}

/// Marks a request a test sends on purpose with what the descriptions do not describe (an unknown
/// route or method, input they do not allow): the suite-wide traffic check (`make test`) takes
/// what is wrong with it, and its undocumented 4xx, as notices, and still checks the envelope.
pub fn probe(request: RequestBuilder) -> RequestBuilder {
    request.header(PROBE_HEADER, "1")
}

pub async fn start() -> Harness {
    // Bind first so the sandbox knows its own public URL.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}{MOUNT}", listener.local_addr().unwrap());
    let sandbox = Sandbox::new(base.clone());
    let app = Router::new().nest(MOUNT, sandbox.router());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Harness { sandbox, base, http: reqwest::Client::new() }
}

impl Harness {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A Cloud URL of `sandbox/demo`.
    pub fn repo(&self, rest: &str) -> String {
        self.url(&format!("/2.0/repositories/sandbox/demo{rest}"))
    }

    /// With the API token: every scope.
    pub fn get(&self, url: &str) -> RequestBuilder {
        self.http.get(url).basic_auth(API_TOKEN_EMAIL, Some(API_TOKEN))
    }

    pub fn post(&self, url: &str) -> RequestBuilder {
        self.http.post(url).basic_auth(API_TOKEN_EMAIL, Some(API_TOKEN))
    }

    /// A Data Center URL of `SANDBOX/demo` under `/rest/{api}`.
    pub fn dc_api(&self, api: &str, rest: &str) -> String {
        self.url(&format!("/rest/{api}/projects/SANDBOX/repos/demo{rest}"))
    }

    /// A Data Center URL of `SANDBOX/demo` under `/rest/api/latest`.
    pub fn dc(&self, rest: &str) -> String {
        self.dc_api("api/latest", rest)
    }

    /// With the API token.
    pub fn cloud(&self, method: Method, url: &str) -> RequestBuilder {
        self.http.request(method, url).basic_auth(API_TOKEN_EMAIL, Some(API_TOKEN))
    }

    /// With the Data Center HTTP access token.
    pub fn dc_request(&self, method: Method, url: &str) -> RequestBuilder {
        self.http.request(method, url).bearer_auth(DC_HTTP_TOKEN)
    }

    /// A Data Center GET under `/rest/api/latest` that must answer 200.
    pub async fn dc_get(&self, rest: &str) -> Value {
        let response = self.dc_request(Method::GET, &self.dc(rest)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{rest}");
        response.json().await.unwrap()
    }

    /// A Cloud GET with the API token that must answer 200.
    pub async fn cloud_get(&self, url: &str) -> Value {
        let response = self.cloud(Method::GET, url).send().await.unwrap();
        assert_eq!(response.status(), 200, "{url}");
        response.json().await.unwrap()
    }

    /// The tip of a branch, through Cloud's API.
    pub async fn tip(&self, branch: &str) -> String {
        self.cloud_get(&self.repo(&format!("/refs/branches/{branch}"))).await["target"]["hash"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// A Cloud hook (201), with or without a secret.
    pub async fn create_hook(&self, url: &str, secret: Option<&str>, events: &[&str]) -> Value {
        let body = json!({ "description": "test", "url": url, "active": true, "secret": secret, "events": events });
        let response = self.post(&self.repo("/hooks")).json(&body).send().await.unwrap();
        assert_eq!(response.status(), 201);
        response.json().await.unwrap()
    }

    /// A Data Center hook (201); an empty secret is none.
    pub async fn create_dc_hook(&self, url: &str, secret: &str, events: &[&str]) -> Value {
        let configuration = json!({ "secret": secret });
        let body =
            json!({ "name": "test", "url": url, "active": true, "events": events, "configuration": configuration });
        let response = self.dc_request(Method::POST, &self.dc("/webhooks")).json(&body).send().await.unwrap();
        assert_eq!(response.status(), 201);
        response.json().await.unwrap()
    }
}

/// The whole Data Center error body, checking its shape; returns the first error.
pub async fn dc_error(response: reqwest::Response, status: u16) -> Value {
    assert_eq!(response.status(), status);
    let body: Value = response.json().await.unwrap();
    let errors = body["errors"].as_array().unwrap_or_else(|| panic!("not a Data Center error: {body}"));
    assert_eq!(errors.len(), 1, "{body}");
    assert!(errors[0]["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    errors[0].clone()
}

/// A file path under the temporary directory, removed when dropped.
pub struct TempPath(pub std::path::PathBuf);

impl TempPath {
    pub fn new(name: &str) -> Self {
        TempPath(std::env::temp_dir().join(format!("sandbox-{name}-{}", uuid::Uuid::new_v4())))
    }

    /// Every line of the file, parsed.
    pub fn json_lines(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.0).unwrap_or_default();
        text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
