//! Data integrity, one test per class of failure an adversarial review found (RELIABILITY.md
//! lists them): backup paths read as form metadata, numbers rewritten by a float, concurrent
//! lifecycle operations leaving Bitbucket and the secret store apart, a cached secret refusing
//! deliveries after a rotation, a commit landing after its integration's deletion answered,
//! deliveries dropped by a disconnect, a reused delivery id, repeated security headers, the
//! stack answering before it is ready, and bodies that never arrive.

use std::sync::Arc;
use std::time::Duration;

use bitbucket_sandbox::{self as sb, Fault, FaultKind};
use cross_function_tests::stack::{Stack, StateBackend, stack, stack_on};
use cross_function_tests::{emulator_config, temp_dir, unique};
use domain::consumers::{Outcome, consume};
use domain::signature::sign;
use local_stack::SANDBOX_ID;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Reads a file through the sandbox's Cloud API, as any client would.
async fn file_at(s: &Stack, rev: &str, path: &str) -> Option<Vec<u8>> {
    let url = format!("{}/repositories/sandbox/demo/src/{rev}/{path}", s.sandbox_api());
    let response = s.http.get(url).basic_auth(sb::API_TOKEN_EMAIL, Some(sb::API_TOKEN)).send().await.unwrap();
    (response.status() == 200).then_some(response.bytes().await.unwrap().to_vec())
}

async fn commit_json(s: &Stack, hash: &str) -> Value {
    let url = format!("{}/repositories/sandbox/demo/commit/{hash}", s.sandbox_api());
    let response = s.http.get(url).basic_auth(sb::API_TOKEN_EMAIL, Some(sb::API_TOKEN)).send().await.unwrap();
    response.json().await.unwrap()
}

fn push(branch: &str) -> Vec<u8> {
    let tip = json!({"type": "branch", "name": branch,
                     "target": {"type": "commit", "hash": "7f3c2a1d9e8b4c5a6f7e8d9c0b1a2f3e4d5c6b7a"}});
    let change =
        json!({"new": tip, "old": null, "created": true, "closed": false, "forced": false, "truncated": false});
    serde_json::to_vec(&json!({"push": {"changes": [change]}, "repository": {"full_name": "sandbox/demo"}})).unwrap()
}

/// Class: a backup path read as one of `POST /src`'s metadata fields, or cut by a quote. Every
/// metadata name as a root file is committed as that file, with the target's author.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backup_paths_are_files_whatever_their_name() {
    let s = stack("integrity-paths").await;
    for name in ["message", "branch", "author", "parents", "files"] {
        let (status, answer) = s
            .put(
                &format!("/integrations/sandbox/backup-targets/{name}"),
                json!({"filename": name, "branch": "backups", "author": "Backup Bot <bot@example.com>"}),
            )
            .await;
        assert_eq!(status, 201, "{answer}");
        let document = json!({"file": name, "author": "Mallory <m@example.com>"});
        let (status, made) = s
            .post_json(&format!("/integrations/sandbox/backup-targets/{name}/snapshots"), json!({"document": document}))
            .await;
        assert_eq!(status, 201, "{name}: {made}");
        let commit = made["commit"].as_str().unwrap();
        let file = file_at(&s, commit, name).await.unwrap_or_else(|| panic!("no file `{name}` in {commit}"));
        assert_eq!(serde_json::from_slice::<Value>(&file).unwrap(), document, "{name}");
        assert_eq!(commit_json(&s, commit).await["author"]["raw"], "Backup Bot <bot@example.com>", "{name}");
    }

    // A quote, a backslash or a line break would end or change the form field's name: refused
    // where the target is defined, naming the field, and nothing is stored.
    for (field, spec) in [
        ("filename", json!({"filename": "important.json\".bak", "branch": "backups"})),
        ("filename", json!({"filename": "a\r\nb.json", "branch": "backups"})),
        ("directory", json!({"directory": "we\"ird", "filename": "a.json", "branch": "backups"})),
    ] {
        let (status, answer) = s.put("/integrations/sandbox/backup-targets/quoted", spec).await;
        assert_eq!(status, 400, "{answer}");
        assert!(answer["error"]["message"].as_str().unwrap().starts_with(field), "{answer}");
    }
    let (status, _) = s.get("/integrations/sandbox/backup-targets/quoted").await;
    assert_eq!(status, 404);
    s.stop().await;
}

/// The sandbox reads `POST /src` forms as Bitbucket does: a file field (with a `filename`) is a
/// file whatever its name, `/message` is a file, and a malformed `Content-Disposition` is a 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sandbox_parses_commit_forms_strictly() {
    let s = stack("integrity-form").await;
    let url = format!("{}/repositories/sandbox/demo/src", s.sandbox_api());
    let send = |disposition: &str, probe: bool| {
        let body = format!(
            "--b\r\nContent-Disposition: {disposition}\r\n\r\ncontent\r\n--b\r\n\
             Content-Disposition: form-data; name=\"branch\"\r\n\r\nform-test\r\n--b--\r\n"
        );
        s.http
            .post(&url)
            .basic_auth(sb::API_TOKEN_EMAIL, Some(sb::API_TOKEN))
            .header("Content-Type", "multipart/form-data; boundary=b")
            // The malformed one is on purpose: the suite-wide traffic check takes it as a probe.
            .header(sb::PROBE_HEADER, if probe { "1" } else { "0" })
            .body(body)
            .send()
    };
    for (disposition, path) in
        [(r#"form-data; name="message"; filename="message""#, "message"), (r#"form-data; name="/author""#, "author")]
    {
        let response = send(disposition, false).await.unwrap();
        assert_eq!(response.status(), 201, "{disposition}");
        let location = response.headers()["location"].to_str().unwrap().to_owned();
        let commit = location.rsplit('/').next().unwrap();
        assert_eq!(file_at(&s, commit, path).await.as_deref(), Some(&b"content"[..]), "{disposition}");
    }
    let response = send(r#"form-data; name="important.json".bak""#, true).await.unwrap();
    assert_eq!(response.status(), 400, "a quote inside the name is not cut");
    s.stop().await;
}

/// Class: numbers changed on their way to the repository. Digits beyond a float's precision,
/// past i64/u64, exponents and signed zeros are committed exactly as sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_numbers_keep_every_digit() {
    let s = stack("integrity-numbers").await;
    let (status, _) =
        s.put("/integrations/sandbox/backup-targets/numbers", json!({"filename": "n.json", "branch": "backups"})).await;
    assert_eq!(status, 201);
    let numbers = [
        "123456789012345678901234567890",
        "-9223372036854775809",
        "18446744073709551616",
        "0.30000000000000000000000000001",
        "1e400",
        "-0.0",
    ];
    let body = format!(r#"{{"document": {{"n": [{}]}}}}"#, numbers.join(", "));
    let response = s
        .http
        .post(s.url("/integrations/sandbox/backup-targets/numbers/snapshots"))
        .bearer_auth(&s.token)
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let made: Value = response.json().await.unwrap();
    let file = String::from_utf8(file_at(&s, made["commit"].as_str().unwrap(), "n.json").await.unwrap()).unwrap();
    let expected = format!("{{\n  \"n\": [\n{}\n  ]\n}}\n", numbers.map(|n| format!("    {n}")).join(",\n"));
    assert_eq!(file, expected);
    s.stop().await;
}

/// Class: lifecycle operations on one integration interleaving. Rounds of six concurrent
/// rotations (and a disconnect/reconnect pair): each answers 200 or a 409 that changed nothing,
/// and afterwards the secret Bitbucket signs with is one the receiver accepts.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_lifecycle_operations_never_drift() {
    let s = stack("integrity-rotate").await;
    for round in 0..5 {
        let mut calls = tokio::task::JoinSet::new();
        for _ in 0..6 {
            let (http, url, token) =
                (s.http.clone(), s.url("/integrations/sandbox/rotate-webhook-secret"), s.token.clone());
            calls.spawn(async move { http.post(url).bearer_auth(token).send().await.unwrap() });
        }
        let mut statuses = Vec::new();
        while let Some(response) = calls.join_next().await {
            let response = response.unwrap();
            let status = response.status().as_u16();
            let answer: Value = response.json().await.unwrap();
            if status == 409 {
                assert!(answer["error"]["message"].as_str().unwrap().contains("nothing was changed"), "{answer}");
            }
            statuses.push(status);
        }
        assert!(statuses.iter().all(|s| *s == 200 || *s == 409), "round {round}: {statuses:?}");
        assert!(statuses.contains(&200), "round {round}: {statuses:?}");

        // Bitbucket now signs with the hook's secret: the receiver must accept the delivery.
        s.running.sandbox.push("main", &[("round.txt", &round.to_string())], "round").await;
        s.running.sandbox.settle().await;
        let last = s.running.sandbox.sent_webhooks().into_iter().last().expect("a delivery was sent");
        assert_eq!(last.status, Some(202), "round {round}: Bitbucket's signature was refused");
    }
    s.stop().await;
}

/// Class: a secret cached by one instance while another rotates it. The receiver's cache (5
/// minutes on AWS) must not refuse deliveries signed with the new secret: a mismatch re-reads
/// it. On the AWS adapters (moto), with two store instances as two Lambdas would hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_with_a_cached_secret_accepts_the_rotated_one() {
    use aws_adapters::SecretsManagerStore;
    use domain::secrets::{Secret, SecretStore};
    use domain::tables::INTEGRATIONS;
    use domain::{Integration, WebhookSecrets};

    let config = emulator_config().await;
    let sm = || SecretsManagerStore::new(aws_sdk_secretsmanager::Client::new(&config), Duration::from_secs(300));
    let (receiver_secrets, api_secrets) = (Arc::new(sm()), sm());
    let store = Arc::new(cross_function_tests::emulator_table().await);
    let id = "cached";
    let prefix = unique("integrity");
    let (old, new) = (Secret::new("old-secret"), Secret::new("new-secret"));
    let now = chrono::Utc::now();
    let access = domain::bitbucket::Credential::AccessToken { token: Secret::new("unused") };
    let target = domain::bitbucket::RepoTarget::cloud("ws", "repo");
    let record = Integration::new(id, id, target, &access, &prefix);
    let name = record.webhook_secret_name.clone();
    api_secrets.put(&name, &WebhookSecrets::new(&old).to_secret()).await.unwrap();
    INTEGRATIONS.put(store.as_ref(), "", &[id], &record, domain::store::Condition::Absent).await.unwrap();
    let backends = domain::Backends { store, secrets: receiver_secrets };
    let router =
        webhook_receiver::app(Arc::new(domain::Intake::new(backends, chrono::Duration::days(1), Duration::ZERO)));
    let send = |secret: &Secret, delivery: &str| {
        let body = push("main");
        let request = http::Request::post(format!("/webhooks/{id}"))
            .header("Content-Type", "application/json")
            .header("X-Event-Key", "repo:push")
            .header("X-Request-UUID", delivery)
            .header("X-Hub-Signature", sign(secret.expose().as_bytes(), &body))
            .body(axum::body::Body::from(body))
            .unwrap();
        let router = router.clone();
        async move { tower::ServiceExt::oneshot(router, request).await.unwrap().status().as_u16() }
    };
    assert_eq!(send(&old, "before").await, 202, "the receiver now caches the old secret");
    // Another instance (the integrations API) rotates.
    let rotated = WebhookSecrets::new(&old).rotate(&new, now + chrono::Duration::hours(24));
    api_secrets.put(&name, &rotated.to_secret()).await.unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(send(&new, "after").await, 202, "signed with the rotated secret");
    assert_eq!(send(&old, "retry").await, 202, "the previous secret stays valid for in-flight retries");
    assert_eq!(send(&Secret::new("forged"), "forged").await, 401);
}

/// Class: work of an integration still under way when it is deleted. A commit in flight is
/// waited for (the delete answers after it), and a snapshot after the delete finds it gone:
/// nothing is committed once the delete has answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nothing_is_committed_after_a_delete_answers() {
    let s = stack("integrity-delete").await;
    let (status, _) =
        s.put("/integrations/sandbox/backup-targets/slow", json!({"filename": "slow.json", "branch": "backups"})).await;
    assert_eq!(status, 201);
    s.running.sandbox.inject_fault(Fault {
        method: Some("POST".into()),
        path_contains: "/src".into(),
        kind: FaultKind::Latency { millis: 1500 },
        times: Some(1),
    });
    let snapshot = {
        let (http, url, token) =
            (s.http.clone(), s.url("/integrations/sandbox/backup-targets/slow/snapshots"), s.token.clone());
        tokio::spawn(async move {
            let response = http.post(url).bearer_auth(token).json(&json!({"document": {"a": 1}})).send().await.unwrap();
            response.status().as_u16()
        })
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (status, answer) = s.delete("/integrations/sandbox?force=true").await;
    assert_eq!(status, 204, "{answer}");
    assert!(snapshot.is_finished(), "the delete answered while a commit was still in flight");
    assert_eq!(snapshot.await.unwrap(), 201, "the commit under way finished first");
    let commits = s.running.sandbox.commit_count();
    let (status, _) =
        s.post_json("/integrations/sandbox/backup-targets/slow/snapshots", json!({"document": {"a": 2}})).await;
    assert_eq!(status, 404);
    assert_eq!(s.running.sandbox.commit_count(), commits, "nothing committed after the delete");
    s.stop().await;
}

/// Class: deliveries accepted while connected whose effects the consumers dropped because the
/// integration was disconnected when they got to them. They are parked (and listed, with the
/// reason), and acted on by the consumers' scheduled runs once the integration is reconnected.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deliveries_reaching_a_disconnected_integration_are_parked_then_acted_on() {
    let temp = temp_dir("integrity-parked");
    let s = stack_on(temp.path(), &StateBackend::Sqlite, false).await;
    // The branch exists in Bitbucket (so the reconciliation after the drain keeps it).
    s.running.sandbox.seed_branches(&["parked/one".into()], "main").unwrap();
    let (status, _) = s.deliver("repo:push", "parked-1", &push("parked/one")).await;
    assert_eq!(status, 202);
    // A pull request opened in Bitbucket: its delivery is recorded (no worker runs here).
    let pr = s.running.sandbox.open_pull_request("develop", "main", "Parked").await;
    s.running.sandbox.settle().await;
    let (status, _) = s.post("/integrations/sandbox/disconnect").await;
    assert_eq!(status, 200);

    // The consumers get to the delivery now, as the stream (or the local worker) would.
    let store = s.running.backends.store.clone();
    let (deliveries, _) = domain::list_deliveries(store.as_ref(), SANDBOX_ID, 10, None).await.unwrap();
    assert_eq!(deliveries.len(), 2);
    let (pruner, pipelines) = (s.running.pruner.as_ref(), s.running.pipelines.as_ref());
    for delivery in deliveries.iter().rev().filter(|d| d.delivery_id != "parked-1") {
        consume(pruner, delivery).await.unwrap();
        consume(pipelines, delivery).await.unwrap();
    }
    let delivery = deliveries.iter().find(|d| d.delivery_id == "parked-1").expect("recorded");
    let parked = Outcome::Parked("integration is inactive".into());
    assert_eq!(consume(pruner, delivery).await.unwrap(), parked);
    assert_eq!(consume(pipelines, delivery).await.unwrap(), parked);
    consume(pruner, delivery).await.unwrap(); // a redelivery parks nothing twice

    let (status, listed) = s.get("/integrations/sandbox/parked").await;
    assert_eq!(status, 200, "{listed}");
    let mut consumers: Vec<&str> =
        listed["parked"].as_array().unwrap().iter().map(|p| p["consumer"].as_str().unwrap()).collect();
    consumers.sort_unstable();
    assert_eq!(consumers, ["environments", "environments", "pipelines", "pipelines"], "{listed}");
    assert_eq!(listed["parked"][0]["event_key"], "pullrequest:created", "newest first");
    assert_eq!(listed["parked"][3]["delivery_id"], "parked-1");
    assert_eq!(listed["parked"][0]["reason"], "integration is inactive");
    let (_, environments) = s.get("/integrations/sandbox/environments").await;
    assert!(!environments.to_string().contains("parked/one"), "nothing acted while disconnected");

    let (status, _) = s.post("/integrations/sandbox/reconnect").await;
    assert_eq!(status, 200);
    let report = branch_pruner::on_schedule(s.running.pruner.clone()).await;
    assert_eq!(report["integrations"][0]["parked_handled"], 2, "{report}");
    let report = status_poller::on_schedule(s.running.pipelines.clone()).await;
    assert_eq!(report["polled"][0]["parked_handled"], 2, "{report}");
    let (_, environments) = s.get("/integrations/sandbox/environments").await;
    assert!(environments.to_string().contains("parked/one"), "{environments}");
    // What reconciliation cannot heal: the pull request's environment is active, and its run
    // was started.
    let develop = environments["environments"].as_array().unwrap().iter().find(|e| e["branch"] == "develop").cloned();
    assert_eq!(develop.as_ref().map(|e| (&e["status"], &e["pull_request"])), Some((&json!("active"), &json!(pr))));
    let (_, runs) = s.get("/integrations/sandbox/pipelines").await;
    assert_eq!(
        runs["pipelines"].as_array().unwrap().iter().filter(|r| r["pull_request"] == json!(pr)).count(),
        1,
        "{runs}"
    );
    let (_, listed) = s.get("/integrations/sandbox/parked").await;
    assert_eq!(listed["parked"], json!([]), "handled deliveries are no longer parked");
    s.stop().await;
}

/// Class: a different body under a recorded delivery id. A true retry (same bytes) is a
/// duplicate; anything else is a 409, never silently dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_id_reused_with_another_body_is_a_conflict() {
    let s = stack("integrity-reuse").await;
    let (status, first) = s.deliver("repo:push", "reused-1", &push("main")).await;
    assert_eq!(status, 202, "{first}");
    let (status, again) = s.deliver("repo:push", "reused-1", &push("main")).await;
    assert_eq!((status, &again["duplicate"], &again["event_id"]), (200, &json!(true), &first["event_id"]));
    let (status, other) = s.deliver("repo:push", "reused-1", &push("develop")).await;
    assert_eq!(status, 409, "{other}");
    s.stop().await;
}

/// Class: headers a delivery or a request carries once, read by whichever copy comes first;
/// and the bearer scheme read case-sensitively.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_signatures_are_refused_and_the_bearer_scheme_is_case_insensitive() {
    let s = stack("integrity-headers").await;
    let body = push("main");
    let secret = s.running.seeded.sandbox_webhook_secret.expose().to_owned();
    let response = s
        .http
        .post(s.url(&format!("/webhooks/{SANDBOX_ID}")))
        .header("Content-Type", "application/json")
        .header("X-Event-Key", "repo:push")
        .header("X-Request-UUID", "two-signatures")
        .header("X-Hub-Signature", sign(secret.as_bytes(), &body))
        .header("X-Hub-Signature", "sha256=0000000000000000000000000000000000000000000000000000000000000000")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let response = s
            .http
            .get(s.url("/integrations"))
            .header("Authorization", format!("{scheme} {}", s.token))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{scheme}");
    }
    s.stop().await;
}

/// Class: answering before ready. Until the stack has seeded, its own routes answer 503 and
/// `/health` says `starting`; no request reaches a service that the seed is still writing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_but_the_sandbox_answers_before_the_stack_is_ready() {
    let temp = temp_dir("integrity-ready");
    let backends = local_adapters::backends(temp.path()).unwrap();
    let sandbox = sb::Sandbox::new("http://127.0.0.1:9/sandbox/bitbucket");
    let root = local_stack::root(backends, "http://127.0.0.1:9", chrono::Duration::days(1), Default::default());
    let services = local_stack::Services::new(&root).unwrap();
    let token = domain::secrets::Secret::new("t");
    let ready = local_stack::Ready::default();
    let app = local_stack::app(&root, &services, &sandbox, entry::http::AdminToken::new(&token), ready.clone());
    let call = |method: &str, path: &str| {
        let request = http::Request::builder()
            .method(method)
            .uri(path)
            .header("Authorization", "Bearer t")
            .header("Content-Type", "application/json")
            // A body on every method, the sandbox's GET included: on purpose.
            .header(sb::PROBE_HEADER, "1")
            .body(axum::body::Body::from(r#"{"name": "x"}"#))
            .unwrap();
        let app = app.clone();
        async move { tower::ServiceExt::oneshot(app, request).await.unwrap().status().as_u16() }
    };
    assert_eq!(call("GET", "/health").await, 503);
    assert_eq!(call("PATCH", "/integrations/sandbox").await, 503);
    assert_eq!(call("POST", "/integrations/sandbox/rotate-webhook-secret").await, 503);
    assert_eq!(call("POST", "/webhooks/sandbox").await, 503);
    assert_eq!(call("GET", "/openapi.json").await, 200);
    assert_eq!(call("GET", "/sandbox/bitbucket/2.0/repositories/sandbox/demo").await, 401, "the sandbox serves");
}

/// Class: request bodies that never arrive whole. A body declared larger than what is sent, or
/// stopped half-way, is answered 408 within the read timeout and the connection is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_that_never_arrive_are_answered_408() {
    let s = stack("integrity-slow-body").await;
    for path in ["/integrations", &format!("/webhooks/{SANDBOX_ID}")] {
        let mut tcp = tokio::net::TcpStream::connect(s.running.addr).await.unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\nContent-Length: 300000\r\n\r\n",
            s.token
        );
        tcp.write_all(head.as_bytes()).await.unwrap();
        tcp.write_all(&[b' '; 100]).await.unwrap();
        let started = std::time::Instant::now();
        let mut answer = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(15), tcp.read_to_end(&mut answer)).await;
        assert!(read.is_ok(), "{path}: no answer, or the connection held open, after 15 s");
        let text = String::from_utf8_lossy(&answer);
        assert!(text.starts_with("HTTP/1.1 408"), "{path}: {text}");
        assert!(started.elapsed() < Duration::from_secs(14), "{path}");
    }
    s.stop().await;
}
