//! The receiver driven by the events Lambda really delivers (Function URL / HTTP API payload
//! 2.0, decoded by lambda_http), covering every status it answers. After each refusal the
//! table is checked: nothing was recorded.

use std::sync::Arc;

use base64::Engine as _;
use domain::Backends;
use domain::bitbucket::{Credential, RepoTarget};
use domain::secrets::Secret;
use domain::signature::sign;
use domain::store::{Condition, MemoryStore};
use domain::tables::INTEGRATIONS;
use domain::{Integration, IntegrationStatus, WebhookSecrets, list_deliveries};
use local_adapters::FileSecretStore;
use serde_json::{Value, json};
use tower::ServiceExt;
use webhook_receiver::{MAX_BODY_BYTES, app};

const SECRET: &str = "s3cret";
const PUSH: &str = r#"{"push":{"changes":[{"new":{"type":"branch","name":"main","target":{"hash":"abc"}},"old":null,"created":true,"closed":false,"forced":false,"truncated":false}]},"repository":{"full_name":"ws/repo"}}"#;

struct Harness {
    router: axum::Router,
    backends: Backends,
    /// Holds the secret file; removed with the harness.
    _dir: tempfile::TempDir,
}

async fn harness() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let backends = Backends {
        store: Arc::new(MemoryStore::new()),
        secrets: Arc::new(FileSecretStore::new(dir.path().join("secrets.json"))),
    };
    for (id, status) in [
        ("live", IntegrationStatus::Active),
        ("broken", IntegrationStatus::Error),
        ("off", IntegrationStatus::Inactive),
        ("old", IntegrationStatus::Archived),
    ] {
        let secret_name = format!("test/{id}/webhook");
        backends.secrets.put(&secret_name, &WebhookSecrets::new(&Secret::new(SECRET)).to_secret()).await.unwrap();
        let access = Credential::AccessToken { token: Secret::new("unused") };
        let i = Integration { status, ..Integration::new(id, id, RepoTarget::cloud("ws", "repo"), &access, "test") };
        INTEGRATIONS.put(backends.store.as_ref(), "", &[id], &i, Condition::Absent).await.unwrap();
    }
    let receiver = domain::Intake::new(backends.clone(), chrono::Duration::days(30), std::time::Duration::ZERO);
    Harness { router: app(Arc::new(receiver)), backends, _dir: dir }
}

/// A Function URL event (payload format 2.0) as Lambda delivers it.
fn lambda_event(integration: &str, headers: &[(&str, &str)], body: &[u8], base64: bool) -> lambda_http::Request {
    let mut header_map = serde_json::Map::new();
    for (k, v) in headers {
        header_map.insert(k.to_ascii_lowercase(), json!(v));
    }
    let path = format!("/webhooks/{integration}");
    let body = if base64 {
        base64::engine::general_purpose::STANDARD.encode(body)
    } else {
        String::from_utf8(body.to_vec()).unwrap()
    };
    let event = json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": "",
        "headers": header_map,
        "requestContext": {
            "accountId": "anonymous",
            "apiId": "abcdefgh",
            "domainName": "abcdefgh.lambda-url.eu-west-1.on.aws",
            "domainPrefix": "abcdefgh",
            "http": {"method": "POST", "path": path, "protocol": "HTTP/1.1", "sourceIp": "18.205.93.1", "userAgent": "Bitbucket-Webhooks/2.0"},
            "requestId": "b0e5a1c4-0000-4000-8000-000000000001",
            "routeKey": "$default",
            "stage": "$default",
            "time": "22/Nov/2026:03:00:00 +0000",
            "timeEpoch": 1795316400000_i64
        },
        "body": body,
        "isBase64Encoded": base64
    });
    lambda_http::request::from_str(&event.to_string()).expect("a valid Lambda HTTP event")
}

impl Harness {
    async fn send(&self, request: lambda_http::Request) -> (u16, Value) {
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status().as_u16();
        assert_eq!(response.headers()["content-type"], "application/json");
        assert!(response.headers().contains_key("x-request-id"));
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    async fn recorded(&self, integration: &str) -> usize {
        list_deliveries(self.backends.store.as_ref(), integration, 100, None).await.unwrap().0.len()
    }
}

fn signed_headers<'a>(signature: &'a str, delivery: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("Content-Type", "application/json"),
        ("X-Event-Key", "repo:push"),
        ("X-Request-UUID", delivery),
        ("X-Hook-UUID", "{hook}"),
        ("X-Attempt-Number", "1"),
        ("X-Hub-Signature", signature),
    ]
}

#[tokio::test]
async fn new_delivery_is_recorded_then_answered_as_duplicate() {
    let h = harness().await;
    let sig = sign(SECRET.as_bytes(), PUSH.as_bytes());
    let (status, first) = h.send(lambda_event("live", &signed_headers(&sig, "d-1"), PUSH.as_bytes(), false)).await;
    assert_eq!(status, 202, "{first}");
    assert_eq!((first["duplicate"].clone(), first["flavor"].clone()), (json!(false), json!("cloud")));
    let (status, again) = h.send(lambda_event("live", &signed_headers(&sig, "d-1"), PUSH.as_bytes(), true)).await;
    assert_eq!((status, &again["duplicate"], &again["event_id"]), (200, &json!(true), &first["event_id"]));
    assert_eq!(h.recorded("live").await, 1);
    // Integrations in `error` (credential trouble) still accept deliveries.
    let (status, _) = h.send(lambda_event("broken", &signed_headers(&sig, "d-2"), PUSH.as_bytes(), false)).await;
    assert_eq!(status, 202);
}

#[tokio::test]
async fn base64_bodies_are_verified_on_their_decoded_bytes() {
    let h = harness().await;
    let sig = sign(SECRET.as_bytes(), PUSH.as_bytes());
    let (status, _) = h.send(lambda_event("live", &signed_headers(&sig, "b-1"), PUSH.as_bytes(), true)).await;
    assert_eq!(status, 202);
}

#[tokio::test]
async fn unknown_event_keys_are_recorded_as_other() {
    let h = harness().await;
    let body = br#"{"repository":{"full_name":"ws/repo"},"approval":{}}"#;
    let sig = sign(SECRET.as_bytes(), body);
    let mut headers = signed_headers(&sig, "o-1");
    headers[1] = ("X-Event-Key", "pullrequest:approved");
    let (status, answer) = h.send(lambda_event("live", &headers, body, false)).await;
    assert_eq!((status, &answer["event_key"]), (202, &json!("pullrequest:approved")));
    let (events, _) = list_deliveries(h.backends.store.as_ref(), "live", 10, None).await.unwrap();
    assert_eq!(events[0].summary, "pullrequest:approved (not acted on)");
}

#[tokio::test]
async fn unsigned_data_center_ping_is_answered_and_not_recorded() {
    let h = harness().await;
    let headers = [("Content-Type", "application/json"), ("X-Event-Key", "diagnostics:ping"), ("X-Request-Id", "p-1")];
    let (status, answer) = h.send(lambda_event("live", &headers, br#"{"test": true}"#, false)).await;
    assert_eq!((status, answer), (200, json!({"ping": true})));
    assert_eq!(h.recorded("live").await, 0);
}

#[tokio::test]
async fn every_refusal_has_its_status_and_records_nothing() {
    let h = harness().await;
    let good = sign(SECRET.as_bytes(), PUSH.as_bytes());
    let wrong = sign(b"other", PUSH.as_bytes());
    let oversized = vec![b' '; MAX_BODY_BYTES + 1];
    let oversized_sig = sign(SECRET.as_bytes(), &oversized);
    let malformed = br#"{"push": {"changes": [}"#;
    let malformed_sig = sign(SECRET.as_bytes(), malformed);
    let wrong_shape = br#"{"push": {"changes": "none"}}"#;
    let wrong_shape_sig = sign(SECRET.as_bytes(), wrong_shape);

    let mut no_key = signed_headers(&good, "k");
    no_key.remove(1);
    let mut text = signed_headers(&good, "t");
    text[0] = ("Content-Type", "text/plain");
    let mut no_type = signed_headers(&good, "n");
    no_type.remove(0);
    let mut unsigned = signed_headers(&good, "u");
    unsigned.pop();
    let long_id = "x".repeat(200);

    // (case, integration, headers, body, status, error code)
    type Case<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>, &'a [u8], u16, &'a str);
    let cases: Vec<Case> = vec![
        ("oversized", "live", signed_headers(&oversized_sig, "o"), &oversized, 413, "payload_too_large"),
        ("not json", "live", text, PUSH.as_bytes(), 415, "unsupported_media_type"),
        ("no content type", "live", no_type, PUSH.as_bytes(), 415, "unsupported_media_type"),
        ("unknown integration", "nope", signed_headers(&good, "1"), PUSH.as_bytes(), 404, "not_found"),
        ("invalid integration id", "../etc", signed_headers(&good, "1"), PUSH.as_bytes(), 404, "not_found"),
        ("disconnected", "off", signed_headers(&good, "2"), PUSH.as_bytes(), 410, "gone"),
        ("archived", "old", signed_headers(&good, "3"), PUSH.as_bytes(), 410, "gone"),
        ("unsigned", "live", unsigned, PUSH.as_bytes(), 401, "unauthorized"),
        ("wrong secret", "live", signed_headers(&wrong, "4"), PUSH.as_bytes(), 401, "unauthorized"),
        ("malformed signature", "live", signed_headers("sha256=xyz", "5"), PUSH.as_bytes(), 401, "unauthorized"),
        ("signature of another body", "live", signed_headers(&good, "6"), b"{}", 401, "unauthorized"),
        ("malformed json", "live", signed_headers(&malformed_sig, "7"), malformed, 400, "bad_request"),
        ("wrong shape", "live", signed_headers(&wrong_shape_sig, "8"), wrong_shape, 400, "bad_request"),
        ("no event key", "live", no_key, PUSH.as_bytes(), 400, "bad_request"),
        ("delivery id too long", "live", signed_headers(&good, &long_id), PUSH.as_bytes(), 400, "bad_request"),
    ];
    for (name, integration, headers, body, status, code) in cases {
        let (got, answer) = h.send(lambda_event(integration, &headers, body, true)).await;
        assert_eq!((got, answer["error"]["code"].as_str()), (status, Some(code)), "{name}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(!message.is_empty() && !message.contains(SECRET), "{name}: {message}");
    }
    for integration in ["live", "off", "old"] {
        assert_eq!(h.recorded(integration).await, 0, "{integration}: nothing recorded");
    }
    // Malformed JSON names the problem (serde's line/column).
    let (_, answer) = h.send(lambda_event("live", &signed_headers(&malformed_sig, "9"), malformed, false)).await;
    assert!(answer["error"]["message"].as_str().unwrap().contains("line 1"), "{answer}");
}

#[tokio::test]
async fn unknown_routes_are_json_404s() {
    let h = harness().await;
    let mut request = lambda_event("live", &[("Content-Type", "application/json")], b"{}", false);
    *request.uri_mut() = "/nowhere".parse().unwrap();
    let (status, answer) = h.send(request).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (404, Some("not_found")));
}
