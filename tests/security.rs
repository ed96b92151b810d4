//! The deployment's security promises that live in the code (SECURITY.md lists them with the
//! template's and CI's): admin routes fail closed without an IAM identity, every admin change is
//! logged with its caller, a flood of malformed deliveries reads nothing, a warm receiver reads
//! an integration once, Bitbucket may not be a loopback address inside Lambda, "no such secret"
//! is believed only briefly, and new secrets use the configured KMS key.

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bitbucket_client::RetryPolicy;
use domain::secrets::{Secret, SecretStore};
use domain::store::{Condition, Item, Key, MemoryStore, Page, Query, StateStore, StoreError};
use entry::lambda::{Served, handle};
use entry::{Root, Settings};
use lambda_http::lambda_runtime::{Context, LambdaEvent};
use serde_json::{Value, json};

/// A store that counts its reads, around another.
struct Counting {
    inner: MemoryStore,
    reads: AtomicUsize,
}

#[async_trait]
impl StateStore for Counting {
    async fn get(&self, key: &Key) -> Result<Option<Item>, StoreError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.get(key).await
    }
    async fn put(&self, item: Item, condition: Condition) -> Result<u64, StoreError> {
        self.inner.put(item, condition).await
    }
    async fn delete(&self, key: &Key, condition: Condition) -> Result<(), StoreError> {
        self.inner.delete(key, condition).await
    }
    async fn write_all(&self, writes: Vec<domain::store::Write>) -> Result<Vec<u64>, StoreError> {
        self.inner.write_all(writes).await
    }
    async fn query(&self, query: &Query) -> Result<Page, StoreError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.query(query).await
    }
}

fn event(name: &str) -> Value {
    let path = format!("{}/../events/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

async fn invoke(served: &Served, event: &Value) -> (u16, Value) {
    let answer = handle(served, LambdaEvent::new(event.clone(), Context::default())).await.unwrap();
    let body = answer["body"].as_str().unwrap_or_default();
    (answer["statusCode"].as_u64().unwrap() as u16, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// A root on `store` (secrets in a temp file), with the demo integration, as a Lambda's
/// settings would say after `settings`.
struct Env {
    root: Root,
    _dir: tempfile::TempDir,
}

async fn setup(store: Arc<dyn StateStore>, settings: impl FnOnce(&mut Settings)) -> Env {
    let dir = cross_function_tests::temp_dir("security");
    let secrets = Arc::new(local_adapters::FileSecretStore::new(dir.path().join("secrets.json")));
    let backends = domain::Backends { store, secrets };
    local_stack::demo::seed(&backends, "https://bitbucket.example.com/2.0", "sec").await.unwrap();
    let mut values = Settings::local("https://hooks.example.com", "sec", chrono::Duration::days(1));
    settings(&mut values);
    Env { root: Root::new(values, backends, RetryPolicy::default()), _dir: dir }
}

/// Class: admin routes reachable around API Gateway's IAM authorizer (a function URL, another
/// front). Without an IAM identity in the request context a request is refused, unless it
/// presents the bearer token kept in the configured secret.
#[tokio::test]
async fn admin_routes_refuse_callers_without_an_iam_identity() {
    let env = setup(Arc::new(MemoryStore::new()), |s| s.admin_token_secret = Some("sec/admin-token".into())).await;
    let root = &env.root;
    root.backends.secrets.put("sec/admin-token", &Secret::new("front-door-token")).await.unwrap();
    let api = Served::new(integrations_api::function(root).unwrap(), root.admin_guard());

    let signed = event("integrations-api/list-integrations.json");
    assert_eq!(invoke(&api, &signed).await.0, 200, "an IAM-authorized caller");

    let mut anonymous = signed.clone();
    anonymous["requestContext"].as_object_mut().unwrap().remove("authorizer");
    let (status, answer) = invoke(&api, &anonymous).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (401, Some("unauthorized")), "{answer}");

    for (token, expected) in [("front-door-token", 200), ("wrong", 401)] {
        let mut bearer = anonymous.clone();
        bearer["headers"]["authorization"] = json!(format!("Bearer {token}"));
        assert_eq!(invoke(&api, &bearer).await.0, expected, "{token}");
    }

    // Without a configured token, only IAM passes; the public receiver needs neither.
    let iam_only = setup(Arc::new(MemoryStore::new()), |_| {}).await;
    let iam_only = &iam_only.root;
    let api = Served::new(integrations_api::function(iam_only).unwrap(), iam_only.admin_guard());
    let mut bearer = anonymous.clone();
    bearer["headers"]["authorization"] = json!("Bearer front-door-token");
    assert_eq!(invoke(&api, &bearer).await.0, 401);
    let receiver = Served::new(webhook_receiver::function(iam_only).unwrap(), iam_only.admin_guard());
    assert_eq!(invoke(&receiver, &event("webhook-receiver/signed-push.json")).await.0, 202);
}

/// Log lines, captured per test (a thread-local subscriber on a current-thread runtime).
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl Write for Lines {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Class: admin changes nobody can trace. Every change (not a read) is logged with the IAM
/// caller that made it, under the request's id, and kept in the integration's activity feed
/// (`admin.change`, published as every domain event is); a refused change is logged only.
#[test]
fn admin_changes_are_logged_with_their_caller() {
    let store = Arc::new(MemoryStore::new());
    let lines = Lines::default();
    let writer = lines.clone();
    let subscriber = tracing_subscriber::fmt().json().flatten_event(true).with_writer(move || writer.clone()).finish();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    tracing::subscriber::with_default(subscriber, || {
        runtime.block_on(async {
            let env = setup(store.clone(), |_| {}).await;
            let api = Served::new(integrations_api::function(&env.root).unwrap(), env.root.admin_guard());
            let mut archive = event("integrations-api/show-integration.json");
            archive["rawPath"] = json!("/integrations/demo/archive");
            archive["requestContext"]["http"]["method"] = json!("POST");
            archive["requestContext"]["http"]["path"] = json!("/integrations/demo/archive");
            archive["routeKey"] = json!("POST /integrations/{id}/{action}");
            assert_eq!(invoke(&api, &archive).await.0, 200);
            assert_eq!(invoke(&api, &event("integrations-api/list-integrations.json")).await.0, 200);
            // Archived already: refused (409), so nothing changed and nothing joins the feed.
            assert_eq!(invoke(&api, &archive).await.0, 409);
        })
    });
    let feed = runtime.block_on(domain::outbox::list(store.as_ref(), "demo", 50, None)).unwrap().0;
    let admin: Vec<_> = feed.iter().filter(|e| e.event.kind == domain::outbox::EventType::AdminChange).collect();
    assert_eq!(admin.len(), 1, "{feed:?}");
    assert_eq!(
        admin[0].event.data,
        json!({"caller": "arn:aws:iam::123456789012:user/platform", "method": "POST",
               "path": "/integrations/demo/archive", "status": 200, "request_id": admin[0].event.data["request_id"]})
    );
    assert!(admin[0].event.data["request_id"].is_string());
    let log = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
    let changes: Vec<Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["message"] == "admin change")
        .collect();
    assert_eq!(changes.len(), 2, "a change and a refused one, the read is not one: {log}");
    assert_eq!(changes[0]["caller"], "arn:aws:iam::123456789012:user/platform");
    assert_eq!(
        (changes[0]["method"].as_str(), changes[0]["path"].as_str()),
        (Some("POST"), Some("/integrations/demo/archive"))
    );
    assert_eq!(changes[0]["status"], 200);
}

/// Class: a flood that costs reads. What the request alone shows wrong (no or a malformed
/// signature, no event key, a bad delivery id, an impossible integration id) is answered before
/// anything is read; and a warm receiver reads an integration once for many deliveries.
#[tokio::test]
async fn a_flood_of_bad_deliveries_reads_nothing_and_good_ones_read_the_integration_once() {
    let store = Arc::new(Counting { inner: MemoryStore::new(), reads: AtomicUsize::new(0) });
    let env = setup(store.clone(), |s| s.integration_cache = Duration::from_secs(10)).await;
    let receiver = Served::new(webhook_receiver::function(&env.root).unwrap(), env.root.admin_guard());
    let signed = event("webhook-receiver/signed-push.json");
    let with = |change: &dyn Fn(&mut Value)| {
        let mut e = signed.clone();
        change(&mut e);
        e
    };
    let bad = [
        with(&|e| drop(e["headers"].as_object_mut().unwrap().remove("x-hub-signature"))),
        with(&|e| e["headers"]["x-hub-signature"] = json!("sha256=nothex")),
        with(&|e| drop(e["headers"].as_object_mut().unwrap().remove("x-event-key"))),
        with(&|e| e["headers"]["x-request-uuid"] = json!("has space")),
        with(&|e| {
            e["rawPath"] = json!("/webhooks/..%2F..");
            e["requestContext"]["http"]["path"] = json!("/webhooks/..%2F..");
        }),
    ];
    store.reads.store(0, Ordering::SeqCst);
    for _ in 0..20 {
        for event in &bad {
            let (status, answer) = invoke(&receiver, event).await;
            assert!((400..500).contains(&status), "{answer}");
        }
    }
    assert_eq!(store.reads.load(Ordering::SeqCst), 0, "100 malformed deliveries, no read");

    for n in 0..20 {
        let delivery = with(&|e| e["headers"]["x-request-uuid"] = json!(format!("flood-{n}")));
        assert_eq!(invoke(&receiver, &delivery).await.0, 202);
    }
    assert_eq!(store.reads.load(Ordering::SeqCst), 1, "20 deliveries, one integration read (the write is not a read)");
}

/// Class: Bitbucket aimed at this machine. Inside Lambda, 127.0.0.1:9001 is the Runtime API: a
/// plain-http (or any) loopback base URL is refused where the local stack accepts its sandbox.
#[tokio::test]
async fn a_loopback_bitbucket_is_refused_inside_lambda() {
    let env = setup(Arc::new(MemoryStore::new()), |s| s.allow_loopback_http = false).await;
    let request = domain::connection::NewIntegration {
        name: "Runtime API".into(),
        description: String::new(),
        flavor: domain::webhook::Flavor::DataCenter,
        base_url: Some("http://127.0.0.1:9001/2018-06-01/runtime".into()),
        workspace: None,
        project_key: Some("PRJ".into()),
        repository: Some("repo".into()),
        repository_url: None,
        credential: domain::bitbucket::Credential::HttpToken { token: Secret::new("t") },
        options: Default::default(),
        register_webhook: false,
    };
    let refused = env.root.connections().unwrap().create(request).await.unwrap_err();
    assert!(matches!(refused, domain::Error::Invalid { field: "base_url", .. }), "{refused:?}");
}

/// Class: a negative answer believed too long. A secret that did not exist when first read is
/// found once it exists (within seconds, not the 5-minute cache), on Secrets Manager (moto);
/// and a new secret is created with the configured KMS key.
#[tokio::test]
async fn secrets_absent_are_believed_briefly_and_new_ones_use_the_kms_key() {
    use aws_adapters::SecretsManagerStore;
    let config = cross_function_tests::emulator_config().await;
    let client = || aws_sdk_secretsmanager::Client::new(&config);
    let reader = SecretsManagerStore::new(client(), Duration::from_secs(300));
    let writer =
        SecretsManagerStore::new(client(), Duration::from_secs(300)).with_kms_key(Some("alias/bitbucket".into()));
    let name = cross_function_tests::unique("security/absent");
    assert_eq!(reader.get(&name).await.unwrap(), None);
    writer.put(&name, &Secret::new("now-here")).await.unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(reader.get(&name).await.unwrap().map(|s| s.expose().to_owned()), Some("now-here".into()));
    let described = client().describe_secret().secret_id(&name).send().await.unwrap();
    assert_eq!(described.kms_key_id(), Some("alias/bitbucket"));
}
