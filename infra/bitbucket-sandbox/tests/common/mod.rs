//! The harness every sandbox test file shares: the sandbox served over real HTTP on a free
//! port, mounted where the local stack mounts it, and a client with the API token.
#![allow(dead_code)] // each test file uses its own subset

use axum::Router;
use bitbucket_sandbox::{API_TOKEN, API_TOKEN_EMAIL, Sandbox};
use reqwest::RequestBuilder;
use tokio::net::TcpListener;

pub const MOUNT: &str = "/sandbox/bitbucket";

pub struct Harness {
    pub sandbox: Sandbox,
    pub base: String,
    pub http: reqwest::Client,
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
}
