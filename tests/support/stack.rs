//! The local stack (every route, SQLite state, the sandbox Bitbucket) on a free port, with
//! helpers to call its API over real HTTP.

use bitbucket_sandbox as sb;
use local_stack::{Config, Running, start};
use serde_json::{Value, json};

use crate::temp_dir;

pub struct Stack {
    pub running: Running,
    pub http: reqwest::Client,
    pub token: String,
    pub dir: std::path::PathBuf,
    /// The state directory's guard when the stack owns it (removed with the stack).
    pub temp: Option<tempfile::TempDir>,
}

/// The local stack on a free port with its own state directory.
pub async fn stack(prefix: &str) -> Stack {
    let temp = temp_dir(prefix);
    let dir = temp.path().to_path_buf();
    let config = Config::for_tests(dir.clone());
    let running = start(config, false).await.expect("local stack starts");
    let token = running.seeded.api_token.expose().to_owned();
    Stack { running, http: reqwest::Client::new(), token, dir, temp: Some(temp) }
}

impl Stack {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.running.base_url)
    }

    pub fn sandbox_api(&self) -> String {
        self.url("/sandbox/bitbucket/2.0")
    }

    pub async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self.http.request(method, self.url(path)).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (status, if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap() })
    }

    pub async fn create(&self, credential: Value, extra: Value) -> (u16, Value) {
        let mut body = json!({
            "name": "Demo repo",
            "flavor": "cloud",
            "base_url": self.sandbox_api(),
            "workspace": sb::WORKSPACE,
            "repository": sb::REPOSITORY,
            "credential": credential,
        });
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        self.call(reqwest::Method::POST, "/integrations", Some(body)).await
    }

    pub async fn post(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, None).await
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, None).await
    }

    /// Posts one delivery to the seeded integration as Bitbucket Cloud would, signed with its
    /// webhook secret; the receiver's status and answer.
    pub async fn deliver(&self, event_key: &str, delivery_id: &str, body: &[u8]) -> (u16, Value) {
        let secret = self.running.seeded.sandbox_webhook_secret.expose().to_owned();
        let response = self
            .http
            .post(self.url(&format!("/webhooks/{}", local_stack::SANDBOX_ID)))
            .header("Content-Type", "application/json")
            .header("X-Event-Key", event_key)
            .header("X-Request-UUID", delivery_id)
            .header("X-Hub-Signature", domain::signature::sign(secret.as_bytes(), body))
            .body(body.to_vec())
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub fn hook(&self, id: &str) -> Option<Value> {
        self.running.sandbox.hooks().into_iter().find(|h| h["uuid"] == id)
    }

    pub fn count(&self, path_contains: &str) -> usize {
        self.running.sandbox.requests().iter().filter(|r| r.path.contains(path_contains)).count()
    }
}

impl Stack {
    pub async fn put(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::PUT, path, Some(body)).await
    }

    pub async fn post_json(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::DELETE, path, None).await
    }

    /// A Data Center integration on the sandbox (`SANDBOX/demo`, HTTP token, no webhook), with
    /// `extra` fields merged in; returns its id.
    pub async fn data_center_integration(&self, extra: Value) -> String {
        let mut body = json!({
            "name": "DC", "flavor": "datacenter", "base_url": self.url("/sandbox/bitbucket"),
            "project_key": sb::DC_PROJECT, "repository": sb::REPOSITORY, "register_webhook": false,
            "credential": {"kind": "http_token", "token": sb::DC_HTTP_TOKEN},
        });
        for (k, v) in extra.as_object().expect("extra fields are an object") {
            body[k] = v.clone();
        }
        let (status, created) = self.post_json("/integrations", body).await;
        assert_eq!(status, 201, "{created}");
        created["id"].as_str().expect("an id").to_owned()
    }

    /// Stops the stack; its state directory's guard comes back, for a test that reads the
    /// directory after the stop (dropping it removes the directory).
    pub async fn stop(self) -> Option<tempfile::TempDir> {
        self.running.stop().await.expect("the stack stops");
        self.temp
    }
}

/// Where a stack keeps its state: SQLite under its directory, or a DynamoDB table on the AWS
/// emulator (secrets stay in the directory's file either way).
#[derive(Clone)]
pub enum StateBackend {
    Sqlite,
    DynamoDb(aws_adapters::DynamoStore),
}

impl StateBackend {
    /// A fresh table on the emulator (`AWS_ENDPOINT_URL` must name it).
    pub async fn dynamodb() -> Self {
        StateBackend::DynamoDb(crate::emulator_table().await)
    }

    pub fn name(&self) -> &'static str {
        match self {
            StateBackend::Sqlite => "sqlite",
            StateBackend::DynamoDb(_) => "dynamodb",
        }
    }

    fn backends(&self, dir: &std::path::Path) -> domain::Backends {
        match self {
            StateBackend::Sqlite => local_adapters::backends(dir).expect("the SQLite state opens"),
            StateBackend::DynamoDb(table) => domain::Backends {
                store: std::sync::Arc::new(table.clone()),
                secrets: std::sync::Arc::new(local_adapters::FileSecretStore::new(dir.join("secrets.json"))),
            },
        }
    }
}

/// The local stack on a free port, on `dir` (token, secrets, SQLite; the caller keeps it, so
/// a second start can reuse it) and `state`. Without its worker, deliveries are recorded and
/// nothing acts on them (until a start with one).
pub async fn stack_on(dir: &std::path::Path, state: &StateBackend, worker: bool) -> Stack {
    stack_with(dir, state.backends(dir), worker).await
}

/// [`stack_on`] over backends of the caller's (a store that injects faults, say).
pub async fn stack_with(dir: &std::path::Path, backends: domain::Backends, worker: bool) -> Stack {
    let config = Config { worker, ..Config::for_tests(dir.to_path_buf()) };
    let running = local_stack::start_with(config, backends, false).await.expect("local stack starts");
    let token = running.seeded.api_token.expose().to_owned();
    Stack { running, http: reqwest::Client::new(), token, dir: dir.to_path_buf(), temp: None }
}
