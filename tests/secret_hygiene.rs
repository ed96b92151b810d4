//! Secret hygiene end to end: every credential kind (random values the sandbox is told to
//! accept), webhook secrets, a secured pipeline variable and the admin token go through a whole
//! run on the local stack — connection tests, signed deliveries, events, backups, pipelines,
//! environments, disconnect/reconnect, credential rotation, a revoked credential, deletion —
//! while every log line (TRACE, JSON) is captured. Then every answer (status, headers, body),
//! the log, every state record, the raw SQLite files and the URLs sent to Bitbucket are searched
//! for each secret, its standard and URL-safe base64 (padded or not, at any alignment, and of
//! the `user:secret` Basic forms) and its hex. Only the secret file may hold them.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use bitbucket_sandbox::{self as sb, ExtraCredential, Fault, FaultKind, TestCounts};
use cross_function_tests::manifest;
use cross_function_tests::records::state_records;
use cross_function_tests::stack::{Stack, stack};
use domain::WebhookSecrets;
use domain::signature::sign;
use reqwest::Method;
use serde_json::{Value, json};

/// Log lines as the subscriber writes them, for the whole test process.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn bytes(&self) -> Vec<u8> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

/// The JSON subscriber `entry::telemetry` installs, at TRACE, into memory; set once per process
/// (before the stack starts, so it sees everything).
fn capture_logs() -> Captured {
    static CAPTURED: OnceLock<Captured> = OnceLock::new();
    CAPTURED
        .get_or_init(|| {
            let captured = Captured::default();
            let writer = captured.clone();
            tracing_subscriber::fmt()
                .json()
                .with_max_level(tracing_subscriber::filter::LevelFilter::TRACE)
                .with_current_span(true)
                .with_span_list(true)
                .flatten_event(true)
                .with_writer(move || writer.clone())
                .try_init()
                .expect("no other subscriber in this test process");
            captured
        })
        .clone()
}

/// A random secret of 40 letters and digits (so every encoding of it is distinctive).
fn random_secret() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let bytes =
        [uuid::Uuid::new_v4().into_bytes(), uuid::Uuid::new_v4().into_bytes(), uuid::Uuid::new_v4().into_bytes()];
    bytes.concat().iter().take(40).map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char).collect()
}

/// The part of base64(`k` filler bytes + `secret`) that depends on `secret` alone: whatever
/// larger value `secret` is encoded inside, its encoding holds the core for one of `k` = 0, 1, 2.
fn base64_cores(engine: &impl base64::Engine, secret: &[u8]) -> Vec<String> {
    (0..3)
        .map(|k| {
            let mut data = vec![0u8; k];
            data.extend_from_slice(secret);
            let encoded = engine.encode(&data);
            // Character i encodes bits 6i..6i+6: keep those lying wholly in the secret's bytes.
            let first = (k * 8).div_ceil(6);
            let last = ((k + secret.len()) * 8) / 6; // exclusive
            encoded[first..last.min(encoded.len())].to_owned()
        })
        .collect()
}

/// One secret and every form of it that must not appear.
#[derive(Clone)]
struct Needles {
    label: String,
    forms: Vec<(String, Vec<u8>)>,
}

fn needles(label: &str, secret: &str, user: Option<&str>) -> Needles {
    let mut forms = vec![("plain".to_owned(), secret.as_bytes().to_vec())];
    let mut add_base64 = |what: &str, value: &[u8]| {
        for (name, encoded) in [
            ("base64", STANDARD.encode(value)),
            ("base64 unpadded", STANDARD_NO_PAD.encode(value)),
            ("base64url", URL_SAFE.encode(value)),
            ("base64url unpadded", URL_SAFE_NO_PAD.encode(value)),
        ] {
            forms.push((format!("{name} of {what}"), encoded.into_bytes()));
        }
    };
    add_base64("the secret", secret.as_bytes());
    if let Some(user) = user {
        add_base64("user:secret", format!("{user}:{secret}").as_bytes());
    }
    for core in base64_cores(&STANDARD, secret.as_bytes()) {
        forms.push(("base64 inside a larger value".into(), core.into_bytes()));
    }
    for core in base64_cores(&URL_SAFE, secret.as_bytes()) {
        forms.push(("base64url inside a larger value".into(), core.into_bytes()));
    }
    forms.push(("hex".into(), hex::encode(secret).into_bytes()));
    forms.push(("HEX".into(), hex::encode_upper(secret).into_bytes()));
    forms.sort();
    forms.dedup();
    Needles { label: label.to_owned(), forms }
}

/// Every needle is at least this long; positions are looked up by their first bytes, so a
/// megabyte of WAL against hundreds of needles stays one pass.
const PREFIX: usize = 8;

/// A needle: its secret's label, the form's name, the bytes.
type Candidate<'a> = (&'a str, &'a str, &'a [u8]);

/// Every (secret, form) found in `haystack`.
fn found(all: &[Needles], haystack: &[u8]) -> Vec<String> {
    let mut by_prefix: std::collections::HashMap<&[u8], Vec<Candidate>> = Default::default();
    for n in all {
        for (form, bytes) in &n.forms {
            assert!(bytes.len() >= PREFIX, "{} ({form}) is too short to search for", n.label);
            by_prefix.entry(&bytes[..PREFIX]).or_default().push((&n.label, form, bytes));
        }
    }
    let mut hits = std::collections::BTreeSet::new();
    for start in 0..haystack.len().saturating_sub(PREFIX - 1) {
        let Some(candidates) = by_prefix.get(&haystack[start..start + PREFIX]) else { continue };
        for (label, form, bytes) in candidates {
            if haystack[start..].starts_with(bytes) {
                hits.insert(format!("{label} ({form})"));
            }
        }
    }
    hits.into_iter().collect()
}

/// The API as a client sees it, keeping every answer (status line, headers, body).
struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
    seen: Mutex<Vec<u8>>,
    answers: std::sync::atomic::AtomicUsize,
}

impl Client {
    async fn send(&self, request: reqwest::RequestBuilder) -> (u16, Value) {
        let response = request.send().await.expect("the stack answers");
        let status = response.status().as_u16();
        let mut record = format!("HTTP {status}\n").into_bytes();
        for (name, value) in response.headers() {
            record.extend_from_slice(name.as_str().as_bytes());
            record.extend_from_slice(b": ");
            record.extend_from_slice(value.as_bytes());
            record.push(b'\n');
        }
        let body = response.bytes().await.expect("a body");
        record.extend_from_slice(&body);
        record.push(b'\n');
        self.seen.lock().expect("lock").extend_from_slice(&record);
        self.answers.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        (status, if body.is_empty() { Value::Null } else { serde_json::from_slice(&body).unwrap_or(Value::Null) })
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        self.send(request).await
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.call(Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call(Method::POST, path, body).await
    }

    /// Creates an integration; returns its id.
    async fn create(&self, body: Value) -> String {
        let (status, created) = self.post("/integrations", Some(body)).await;
        assert_eq!(status, 201, "{created}");
        created["id"].as_str().expect("an id").to_owned()
    }

    /// A delivery signed as Bitbucket Cloud signs it.
    async fn deliver(&self, id: &str, key: &str, body: &[u8], secret: &str) -> (u16, Value) {
        let request = self
            .http
            .post(format!("{}/webhooks/{id}", self.base))
            .header("Content-Type", "application/json")
            .header("X-Event-Key", key)
            .header("X-Request-UUID", uuid::Uuid::new_v4().to_string())
            .header("X-Hub-Signature", sign(secret.as_bytes(), body))
            .body(body.to_vec());
        self.send(request).await
    }
}

/// The webhook secrets of `id` valid now (current, and the previous one during a rotation).
async fn webhook_secrets(s: &Stack, id: &str) -> Vec<String> {
    let name = format!("local/{id}/webhook");
    let secret = s.running.backends.secrets.get(&name).await.expect("secret store").expect("webhook secret");
    let secrets = WebhookSecrets::from_secret(&name, &secret).expect("webhook secrets");
    secrets.accepted(chrono::Utc::now()).iter().map(|b| String::from_utf8_lossy(b).into_owned()).collect()
}

/// Every file of the state directory with its bytes (one removed meanwhile is skipped).
fn state_files(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("the state dir") {
        let path = entry.expect("an entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
        match std::fs::read(&path) {
            Ok(bytes) => files.push((name, bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => panic!("{name}: {e}"),
        }
    }
    files
}

fn revoke(s: &Stack, path_contains: &str) {
    s.running.sandbox.inject_fault(Fault {
        method: None,
        path_contains: path_contains.into(),
        kind: FaultKind::Revoke,
        times: None,
    });
}

#[test]
fn the_scanner_finds_every_encoding() {
    let secret = "Zq8RkT3vLw0pXy7NbC2mAe9HsJ4uGd6F1iKo5tVr";
    let n = [needles("t", secret, Some("me@example.test"))];
    let basic = STANDARD.encode(format!("me@example.test:{secret}"));
    let embedded = URL_SAFE_NO_PAD.encode(format!(r#"{{"kind":"x","token":"{secret}"}}"#));
    for haystack in [
        format!("x {secret} y"),
        format!("Authorization: Basic {basic}"),
        format!("cursor={embedded}"),
        format!("hex {}", hex::encode(secret)),
        STANDARD.encode(format!("ab{secret}")),
    ] {
        assert!(!found(&n, haystack.as_bytes()).is_empty(), "{haystack}");
    }
    assert!(found(&n, b"nothing of it here, not even Zq8RkT3v").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_value_reaches_a_log_an_answer_or_a_state_record() {
    let logs = capture_logs();
    let started = std::time::Instant::now();
    let s = stack("secret-hygiene").await;
    let sandbox = &s.running.sandbox;
    let c = Client {
        http: reqwest::Client::new(),
        base: s.running.base_url.clone(),
        token: s.token.clone(),
        seen: Mutex::default(),
        answers: Default::default(),
    };

    // Credentials of every kind, with random values the sandbox accepts like its own.
    let email = format!("hygiene-{}@example.test", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let (api_token, api_token_2) = (random_secret(), random_secret());
    let (access_token, access_token_2) = (random_secret(), random_secret());
    let consumer_key = format!("hygiene-consumer-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let consumer_secret = random_secret();
    let dc_token = random_secret();
    let legacy_user = "hygiene-legacy";
    let app_password = random_secret();
    let secured_value = random_secret();
    for credential in [
        ExtraCredential::ApiToken { email: email.clone(), token: api_token.clone() },
        ExtraCredential::ApiToken { email: email.clone(), token: api_token_2.clone() },
        ExtraCredential::AccessToken(access_token.clone()),
        ExtraCredential::AccessToken(access_token_2.clone()),
        ExtraCredential::OauthConsumer { key: consumer_key.clone(), secret: consumer_secret.clone() },
        ExtraCredential::DcHttpToken(dc_token.clone()),
    ] {
        sandbox.accept_credential(credential);
    }
    let cloud = |name: &str, credential: Value| {
        json!({"name": name, "flavor": "cloud", "base_url": s.sandbox_api(), "workspace": sb::WORKSPACE,
               "repository": sb::REPOSITORY, "credential": credential})
    };
    let a =
        c.create(cloud("Hygiene API token", json!({"kind": "api_token", "email": email, "token": api_token}))).await;
    let b = c.create(cloud("Hygiene access token", json!({"kind": "access_token", "token": access_token}))).await;
    let o = c
        .create(cloud(
            "Hygiene OAuth",
            json!({"kind": "oauth_consumer", "key": consumer_key, "secret": consumer_secret}),
        ))
        .await;
    let d = c
        .create(json!({"name": "Hygiene DC", "flavor": "datacenter", "base_url": s.url("/sandbox/bitbucket"),
                       "project_key": sb::DC_PROJECT, "repository": sb::REPOSITORY,
                       "credential": {"kind": "http_token", "token": dc_token}}))
        .await;
    let legacy = json!({"kind": "app_password", "username": legacy_user, "app_password": app_password});
    let (status, refused) = c.post("/integrations", Some(cloud("Hygiene legacy", legacy))).await;
    assert_eq!((status, refused["error"]["code"].as_str()), (422, Some("app_password_removed")), "{refused}");
    assert!(refused["error"]["message"].as_str().is_some_and(|m| m.contains("api_token")), "{refused}");
    let mut webhook_values: Vec<String> = Vec::new();
    for id in [&a, &b, &o, &d] {
        webhook_values.extend(webhook_secrets(&s, id).await);
        let (status, tested) = c.post(&format!("/integrations/{id}/test"), None).await;
        assert_eq!((status, tested["test"]["ok"].as_bool()), (200, Some(true)), "{tested}");
    }

    // Deliveries: Bitbucket's own, signed with each integration's secret, and one sent here.
    sandbox.push("main", &[("hygiene.txt", "one")], "Hygiene push").await;
    sandbox.settle().await;
    let push = manifest().into_iter().find(|f| f.event_key == "repo:push").expect("a push fixture").body();
    let a_secret = webhook_secrets(&s, &a).await.remove(0);
    assert_eq!(c.deliver(&a, "repo:push", &push, &a_secret).await.0, 202);
    assert_eq!(c.deliver(&a, "repo:push", &push, "not-the-secret").await.0, 401);
    for id in [&a, &b, &o, &d] {
        let (status, events) = c.get(&format!("/integrations/{id}/events?limit=50")).await;
        assert_eq!(status, 200);
        assert!(!events["events"].as_array().expect("events").is_empty(), "{id} received a signed delivery");
    }

    // Backups, Cloud and Data Center.
    let target = json!({"directory": "backups", "filename": "hygiene.json", "branch": "backups",
                        "author": "Hygiene <hygiene@example.test>"});
    for id in [&a, &d] {
        let path = format!("/integrations/{id}/backup-targets/hygiene");
        assert_eq!(c.call(Method::PUT, &path, Some(target.clone())).await.0, 201);
        let (status, committed) = c.post(&format!("{path}/snapshots"), Some(json!({"document": {"v": 1}}))).await;
        assert_eq!(status, 201, "{committed}");
        assert_eq!(c.post(&format!("{path}/snapshots"), Some(json!({"document": {"v": 1}}))).await.0, 200);
        assert_eq!(c.get(&format!("{path}/history")).await.0, 200);
        assert_eq!(c.get(&path).await.0, 200);
    }

    // Pipelines with a secured variable (OAuth and API token), completed with tests, then stopped.
    let run = json!({"branch": "main", "selector": {"type": "custom", "pattern": "deploy"},
                     "variables": [{"key": "ENV", "value": "staging"},
                                   {"key": "API_KEY", "value": secured_value, "secured": true}]});
    let mut runs = Vec::new();
    for id in [&a, &o] {
        let (status, started) = c.post(&format!("/integrations/{id}/pipelines"), Some(run.clone())).await;
        assert_eq!(status, 201, "{started}");
        runs.push((id.clone(), started["uuid"].as_str().expect("a uuid").to_owned()));
    }
    let tests = TestCounts { total: 3, passed: 2, failed: 1, skipped: 0 };
    sandbox.complete_pipeline(&runs[0].1, "FAILED", Some(tests)).expect("the run completes");
    sandbox.settle().await;
    for (id, uuid) in &runs {
        assert_eq!(c.post(&format!("/integrations/{id}/pipelines/refresh"), None).await.0, 200);
        assert_eq!(c.get(&format!("/integrations/{id}/pipelines?limit=10")).await.0, 200);
        assert_eq!(c.get(&format!("/integrations/{id}/pipelines/{uuid}")).await.0, 200);
    }
    assert_eq!(c.post(&format!("/integrations/{}/pipelines/{}/stop", runs[1].0, runs[1].1), None).await.0, 202);

    // Environments, stale-branch plans and the audit.
    for id in [&a, &d] {
        let (status, report) =
            c.post(&format!("/integrations/{id}/prune"), Some(json!({"mode": "environments"}))).await;
        assert_eq!(status, 200, "{report}");
        assert_eq!(c.get(&format!("/integrations/{id}/environments")).await.0, 200);
        let plan = json!({"mode": "stale-branches", "dry_run": true});
        assert_eq!(c.post(&format!("/integrations/{id}/prune"), Some(plan)).await.0, 200);
        assert_eq!(c.get(&format!("/integrations/{id}/prune-audit")).await.0, 200);
    }

    // Lifecycle: disconnect/reconnect, a rotated webhook secret, rotated credentials.
    assert_eq!(c.post(&format!("/integrations/{a}/disconnect"), None).await.1["status"], "inactive");
    assert_eq!(c.post(&format!("/integrations/{a}/reconnect"), None).await.1["status"], "active");
    assert_eq!(c.post(&format!("/integrations/{a}/rotate-webhook-secret"), None).await.0, 200);
    webhook_values.extend(webhook_secrets(&s, &a).await);
    let rotate = |credential: Value| json!({"credential": credential});
    let (status, patched) = c
        .call(
            Method::PATCH,
            &format!("/integrations/{a}"),
            Some(rotate(json!({"kind": "api_token", "email": email, "token": api_token_2}))),
        )
        .await;
    assert_eq!(status, 200, "{patched}");
    let new_access = rotate(json!({"kind": "access_token", "token": access_token_2}));
    assert_eq!(c.call(Method::PATCH, &format!("/integrations/{b}"), Some(new_access)).await.0, 200);
    sandbox.push("main", &[("hygiene.txt", "two")], "After the rotation").await;
    sandbox.settle().await;

    // A revoked credential: Bitbucket refuses, the integrations go to `error`, then recover.
    revoke(&s, "/2.0/");
    let (_, tested) = c.post(&format!("/integrations/{b}/test"), None).await;
    assert_eq!(tested["integration"]["status"], "error", "{tested}");
    let (status, refused) = c.post(&format!("/integrations/{o}/pipelines"), Some(run.clone())).await;
    assert_eq!((status, refused["error"]["code"].as_str()), (422, Some("bad_credentials")), "{refused}");
    let snapshot = json!({"document": {"v": 2}});
    let (status, refused) =
        c.post(&format!("/integrations/{a}/backup-targets/hygiene/snapshots"), Some(snapshot)).await;
    assert_eq!(status, 422, "{refused}");
    revoke(&s, "/rest/");
    let (_, tested) = c.post(&format!("/integrations/{d}/test"), None).await;
    assert_eq!(tested["test"]["reason"], "bad_credentials", "{tested}");
    sandbox.clear_faults();
    for id in [&a, &b, &o, &d] {
        let (status, back) = c.post(&format!("/integrations/{id}/reconnect"), None).await;
        assert_eq!((status, back["status"].as_str()), (200, Some("active")), "{back}");
    }
    assert_eq!(c.get("/integrations").await.0, 200);

    // What the secret store holds just before deletion proves the scan would see the values.
    let secret_file = std::fs::read(s.dir.join("secrets.json")).expect("the secret file");

    for id in [&a, &b, &o, &d] {
        assert_eq!(c.call(Method::DELETE, &format!("/integrations/{id}"), None).await.0, 204);
    }
    sandbox.settle().await;

    // Gather: the records (integrations deleted or not), Bitbucket's view of our URLs.
    let ids = [a.as_str(), b.as_str(), o.as_str(), d.as_str(), "sandbox"];
    let records = state_records(s.running.backends.store.as_ref(), &ids).await;
    let mut state = Vec::new();
    for item in &records {
        let line = json!({"pk": item.key.pk, "sk": item.key.sk, "kind": item.kind, "sort": item.sort,
                          "attrs": Value::Object(item.attrs.clone())});
        state.extend_from_slice(line.to_string().as_bytes());
        state.push(b'\n');
    }
    let mut urls = Vec::new();
    for r in sandbox.requests() {
        urls.extend_from_slice(format!("{} {}?{}\n", r.method, r.path, r.query).as_bytes());
    }
    let oauth_tokens = sandbox.issued_oauth_tokens();
    let dir = s.dir.clone();
    let (admin_token, seeded_secret) = (s.token.clone(), s.running.seeded.sandbox_webhook_secret.expose().to_owned());
    // The files while the database is open (its WAL holds the latest pages) and after it
    // closed (the WAL checkpointed into the main file, then removed).
    let mut files = state_files(&dir);
    let _dir = s.stop().await;
    files.extend(state_files(&dir));

    let mut all = vec![
        needles("API token", &api_token, Some(&email)),
        needles("rotated API token", &api_token_2, Some(&email)),
        needles("access token", &access_token, None),
        needles("rotated access token", &access_token_2, None),
        needles("OAuth consumer secret", &consumer_secret, Some(&consumer_key)),
        needles("Data Center HTTP token", &dc_token, None),
        needles("app password", &app_password, Some(legacy_user)),
        needles("secured pipeline variable", &secured_value, None),
        needles("seeded API token", sb::API_TOKEN, Some(sb::API_TOKEN_EMAIL)),
    ];
    assert!(!oauth_tokens.is_empty(), "the OAuth consumer was used");
    all.extend(oauth_tokens.iter().map(|t| needles("OAuth access token", t, None)));
    webhook_values.sort();
    webhook_values.dedup();
    assert!(webhook_values.len() >= 5, "four integrations and a rotation: {}", webhook_values.len());
    all.extend(webhook_values.iter().map(|w| needles("webhook secret", w, None)));
    let admin = needles("admin API token", &admin_token, None);
    let seeded = needles("seeded webhook secret", &seeded_secret, None);

    // The secret store really held the credentials (and the scan finds them there).
    let held = found(&all, &secret_file);
    for label in ["rotated API token", "rotated access token", "OAuth consumer secret", "Data Center HTTP token"] {
        assert!(held.iter().any(|h| h.starts_with(label)), "{label} is in the secret store");
    }

    let log = logs.bytes();
    let responses = c.seen.lock().expect("lock").clone();
    let log_text = String::from_utf8_lossy(&log);
    assert!(log_text.contains("delivery recorded") && log_text.contains("request finished"), "the log is captured");
    assert!(log_text.contains(&a), "the log names the integrations");
    assert!(String::from_utf8_lossy(&state).contains("Hygiene"), "the records are dumped");

    // The raw database files (deleted pages included) and every other file of the state dir
    // but the secret stores: `secrets.json`, and the two files kept for the generated values,
    // which may hold their own value only.
    let mut db = Vec::new();
    let mut problems = Vec::new();
    let mut other_files = std::collections::BTreeSet::new();
    for (name, bytes) in &files {
        let mut forbidden = all.clone();
        match name.as_str() {
            "secrets.json" | "secrets.tmp" => continue,
            "api-token" => forbidden.push(seeded.clone()),
            "sandbox-webhook-secret" => forbidden.push(admin.clone()),
            _ => forbidden.extend([admin.clone(), seeded.clone()]),
        }
        if name.starts_with("state.sqlite3") {
            db.extend_from_slice(bytes);
        } else {
            other_files.insert(name.clone());
        }
        problems.extend(found(&forbidden, bytes).into_iter().map(|h| format!("file {name}: {h}")));
    }
    assert!(String::from_utf8_lossy(&db).contains("Hygiene"), "the database files hold the records");

    all.extend([admin, seeded]);
    for (place, bytes) in [("log", &log), ("answers", &responses), ("state records", &state), ("Bitbucket URLs", &urls)]
    {
        problems.extend(found(&all, bytes).into_iter().map(|h| format!("{place}: {h}")));
    }
    let forms: usize = all.iter().map(|n| n.forms.len()).sum();
    println!(
        "FIGURES secret_hygiene secrets={} needles={forms} log_bytes={} log_lines={} answers={} answer_bytes={} \
         records={} state_bytes={} db_bytes={} url_bytes={} other_files={} seconds={:.1}",
        all.len(),
        log.len(),
        log.iter().filter(|b| **b == b'\n').count(),
        c.answers.load(std::sync::atomic::Ordering::SeqCst),
        responses.len(),
        records.len(),
        state.len(),
        db.len(),
        urls.len(),
        other_files.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(problems.is_empty(), "secret values found:\n{}", problems.join("\n"));
}
