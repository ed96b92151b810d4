//! The connections API end to end on the local stack and its sandbox Bitbucket, over real HTTP:
//! every credential kind, every test-connection failure reason, validation, each lifecycle
//! transition, webhooks registered in the sandbox and deliveries from it accepted, retries on
//! 429/5xx, and no secret in any answer or state record.

use std::time::Duration;

use bitbucket_sandbox as sb;
use cross_function_tests::stack::stack;
use serde_json::{Value, json};

fn api_token() -> Value {
    json!({"kind": "api_token", "email": sb::API_TOKEN_EMAIL, "token": sb::API_TOKEN})
}

fn all_secret_values() -> Vec<&'static str> {
    vec![sb::API_TOKEN, sb::ACCESS_TOKEN, sb::READONLY_ACCESS_TOKEN, sb::OAUTH_CONSUMER_SECRET, sb::APP_PASSWORD]
}

fn assert_no_secret(answer: &Value) {
    let text = answer.to_string();
    for secret in all_secret_values() {
        assert!(!text.contains(secret), "a secret leaked into an answer: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_credential_kind_connects_or_fails_with_its_reason() {
    let s = stack("connections").await;
    let ok_kinds = [
        api_token(),
        json!({"kind": "access_token", "token": sb::ACCESS_TOKEN}),
        json!({"kind": "oauth_consumer", "key": sb::OAUTH_CONSUMER_KEY, "secret": sb::OAUTH_CONSUMER_SECRET}),
    ];
    for credential in ok_kinds {
        let (status, created) = s.create(credential.clone(), json!({})).await;
        assert_eq!(status, 201, "{credential}: {created}");
        assert_eq!(created["status"], "active");
        assert_eq!(created["credential"]["kind"], credential["kind"]);
        let hook_id = created["webhook"]["id"].as_str().unwrap();
        let hook = s.hook(hook_id).expect("webhook registered in the sandbox");
        assert_eq!(hook["url"], s.url(&format!("/webhooks/{}", created["id"].as_str().unwrap())));
        assert_eq!(hook["active"], true);
        assert_eq!(hook["secret_set"], true);
        assert_no_secret(&created);
    }

    let failures = [
        (
            json!({"kind": "app_password", "username": sb::APP_PASSWORD_USER, "app_password": sb::APP_PASSWORD}),
            json!({}),
            "app_password_removed",
        ),
        (json!({"kind": "access_token", "token": "not-a-token"}), json!({}), "bad_credentials"),
        (json!({"kind": "access_token", "token": sb::READONLY_ACCESS_TOKEN}), json!({}), "forbidden"),
        (api_token(), json!({"repository": "missing"}), "not_found"),
        (api_token(), json!({"base_url": "http://127.0.0.1:9/2.0"}), "network"),
    ];
    let hooks_before = s.running.sandbox.hooks().len();
    for (credential, extra, reason) in failures {
        let (status, answer) = s.create(credential.clone(), extra).await;
        assert_eq!((status, answer["error"]["code"].as_str()), (422, Some(reason)), "{credential}: {answer}");
        assert_no_secret(&answer);
        if reason == "app_password_removed" {
            let message = answer["error"]["message"].as_str().unwrap();
            assert!(
                message.contains("2026-07-28")
                    && message.contains("API token")
                    && message.contains("write:webhook:bitbucket"),
                "{message}"
            );
        }
        if reason == "forbidden" {
            assert!(answer["error"]["message"].as_str().unwrap().contains("webhook"), "{answer}");
        }
    }
    // The read-only token is enough when no webhook is wanted.
    let (status, created) = s
        .create(json!({"kind": "access_token", "token": sb::READONLY_ACCESS_TOKEN}), json!({"register_webhook": false}))
        .await;
    assert_eq!((status, &created["webhook"]), (201, &Value::Null), "{created}");
    assert_eq!(s.running.sandbox.hooks().len(), hooks_before, "failed creations left no webhook behind");
    let (_, list) = s.get("/integrations").await;
    assert_eq!(list["integrations"].as_array().unwrap().len(), 1 + 3 + 1, "sandbox + 3 kinds + read-only");
    s.running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn oauth_tokens_are_cached_then_refreshed_when_they_expire() {
    let s = stack("connections").await;
    s.running.sandbox.set_oauth_token_lifetime(2);
    let oauth = json!({"kind": "oauth_consumer", "key": sb::OAUTH_CONSUMER_KEY, "secret": sb::OAUTH_CONSUMER_SECRET});
    let (status, created) = s.create(oauth, json!({})).await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let tokens = s.count("/site/oauth2/access_token");
    assert_eq!(tokens, 1, "one token for the whole creation (user, repository, hooks)");
    let (_, report) = s.post(&format!("/integrations/{id}/test")).await;
    assert_eq!(report["test"]["ok"], true, "{report}");
    assert_eq!(s.count("/site/oauth2/access_token"), 1, "cached while valid");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (_, report) = s.post(&format!("/integrations/{id}/test")).await;
    assert_eq!(report["test"]["ok"], true, "{report}");
    assert_eq!(s.count("/site/oauth2/access_token"), 2, "refreshed after expiry");
    s.running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input_is_a_400_naming_the_field_and_stores_nothing() {
    let s = stack("connections").await;
    let cases = [
        (json!({"name": ""}), "name"),
        (json!({"name": "x".repeat(51)}), "name"),
        (json!({"description": "d".repeat(256)}), "description"),
        (json!({"flavor": "github"}), "flavor"),
        (json!({"base_url": "http://bitbucket.example.com/2.0"}), "base_url"),
        (json!({"workspace": "bad workspace"}), "workspace"),
        (json!({"workspace": null, "repository": null, "repository_url": "https://github.com/a/b"}), "repository_url"),
        (json!({"credential": {"kind": "http_token", "token": "t"}}), "credential.kind"),
        (json!({"credential": {"kind": "api_token", "email": "no-at-sign", "token": "t"}}), "credential.email"),
        (json!({"credential": {"kind": "password", "password": "x"}}), "credential"),
        (json!({"options": {"fetch_branches": "yes"}}), "options.fetch_branches"),
        (json!({"surprise": 1}), "surprise"),
    ];
    for (extra, field) in cases {
        let (status, answer) = s.create(api_token(), extra.clone()).await;
        let message = answer["error"]["message"].as_str().unwrap_or_default().to_owned();
        assert_eq!(status, 400, "{extra}: {answer}");
        assert!(message.contains(field), "{extra}: the message names `{field}`: {message}");
    }
    let r = s.http.post(s.url("/integrations")).bearer_auth(&s.token).body("name=x").send().await.unwrap();
    assert_eq!(r.status(), 415);
    let r = s
        .http
        .post(s.url("/integrations"))
        .bearer_auth(&s.token)
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let (_, list) = s.get("/integrations").await;
    assert_eq!(list["integrations"].as_array().unwrap().len(), 1, "only the seeded sandbox");
    // A repository URL fills workspace and repository in; the sandbox is not bitbucket.org, so
    // base_url still points at it.
    let (status, created) = s
        .create(api_token(), json!({"workspace": null, "repository": null, "repository_url": "https://bitbucket.org/sandbox/demo/src/main/docs"}))
        .await;
    assert_eq!((status, created["repository"]["full_name"].as_str()), (201, Some("sandbox/demo")), "{created}");
    assert_eq!(s.get("/integrations/nope").await.0, 404);
    s.running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lifecycle_transitions_follow_the_rules_and_bitbucket_follows_them() {
    let s = stack("connections").await;
    let (_, created) = s.create(api_token(), json!({})).await;
    let id = created["id"].as_str().unwrap().to_owned();
    let hook_id = created["webhook"]["id"].as_str().unwrap().to_owned();
    let path = |action: &str| format!("/integrations/{id}/{action}");

    // A push in the sandbox reaches the receiver, signed, and is listed.
    s.running.sandbox.push("main", &[("docs/a.md", "hello")], "docs").await;
    s.running.sandbox.settle().await;
    let (_, events) = s.get(&path("events")).await;
    let events = events["events"].as_array().unwrap().clone();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["summary"], "branch main updated");

    let (status, off) = s.post(&path("disconnect")).await;
    assert_eq!((status, off["status"].as_str()), (200, Some("inactive")));
    assert_eq!(s.hook(&hook_id).unwrap()["active"], false, "webhook deactivated in Bitbucket");
    assert_eq!(s.post(&path("disconnect")).await.0, 409);
    assert_eq!(s.post(&path("unarchive")).await.0, 409);

    let (status, on) = s.post(&path("reconnect")).await;
    assert_eq!((status, on["status"].as_str()), (200, Some("active")), "{on}");
    assert_eq!(s.hook(&hook_id).unwrap()["active"], true);
    assert_eq!(s.post(&path("reconnect")).await.0, 409);

    let (status, archived) = s.post(&path("archive")).await;
    assert_eq!((status, archived["status"].as_str()), (200, Some("archived")));
    assert_eq!(s.hook(&hook_id).unwrap()["active"], false);
    assert_eq!(s.post(&path("archive")).await.0, 409);
    assert_eq!(s.post(&path("rotate-webhook-secret")).await.0, 409);
    let (_, back) = s.post(&path("unarchive")).await;
    assert_eq!(back["status"], "inactive");
    let (_, on) = s.post(&path("reconnect")).await;
    assert_eq!(on["status"], "active");
    assert_eq!(s.post(&path("fly")).await.0, 404);

    // Rotation: Bitbucket gets the new secret; its deliveries are accepted.
    let (status, rotated) = s.post(&path("rotate-webhook-secret")).await;
    assert_eq!(status, 200, "{rotated}");
    s.running.sandbox.push("develop", &[("b.txt", "b")], "after rotation").await;
    s.running.sandbox.settle().await;
    let (_, events) = s.get(&path("events")).await;
    assert_eq!(events["events"].as_array().unwrap().len(), 2, "delivery signed with the rotated secret accepted");

    // Edits; a bad new credential is refused and the old one kept.
    let (status, edited) = s
        .call(
            reqwest::Method::PATCH,
            &format!("/integrations/{id}"),
            Some(json!({"name": "Renamed", "options": {"build_pull_requests": false}})),
        )
        .await;
    assert_eq!(
        (status, edited["name"].as_str(), &edited["options"]["build_pull_requests"]),
        (200, Some("Renamed"), &json!(false))
    );
    let (status, refused) = s
        .call(
            reqwest::Method::PATCH,
            &format!("/integrations/{id}"),
            Some(json!({"credential": {"kind": "access_token", "token": "wrong"}})),
        )
        .await;
    assert_eq!((status, refused["error"]["code"].as_str()), (422, Some("bad_credentials")));
    assert_eq!(s.post(&path("test")).await.1["test"]["ok"], true, "old credential still works");

    // Deletion removes the webhook from Bitbucket; recorded events are kept until they expire.
    let (status, _) = s.call(reqwest::Method::DELETE, &format!("/integrations/{id}"), None).await;
    assert_eq!(status, 204);
    assert!(s.hook(&hook_id).is_none(), "webhook removed from Bitbucket");
    assert_eq!(s.get(&format!("/integrations/{id}")).await.0, 404);
    let (kept, _) = domain::list_deliveries(s.running.backends.store.as_ref(), &id, 10, None).await.unwrap();
    assert_eq!(kept.len(), 2);
    s.running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revoked_credentials_put_the_integration_in_error_until_reconnected() {
    let s = stack("connections").await;
    let (_, created) = s.create(api_token(), json!({})).await;
    let id = created["id"].as_str().unwrap().to_owned();
    s.running.sandbox.inject_fault(sb::Fault {
        method: None,
        path_contains: "/2.0/".into(),
        kind: sb::FaultKind::Revoke,
        times: None,
    });
    let (_, report) = s.post(&format!("/integrations/{id}/test")).await;
    assert_eq!(
        (report["test"]["ok"].as_bool(), report["test"]["reason"].as_str()),
        (Some(false), Some("bad_credentials"))
    );
    assert_eq!(report["integration"]["status"], "error");
    assert_eq!(report["integration"]["last_error"]["reason"], "bad_credentials");
    let (_, still) = s.post(&format!("/integrations/{id}/reconnect")).await;
    assert_eq!(still["status"], "error");
    s.running.sandbox.clear_faults();
    let (_, back) = s.post(&format!("/integrations/{id}/reconnect")).await;
    assert_eq!((back["status"].as_str(), &back["last_error"]), (Some("active"), &Value::Null));
    s.running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rate_limits_and_server_errors_are_retried_with_backoff() {
    let s = stack("connections").await;
    s.running.sandbox.clear_requests();
    s.running.sandbox.inject_fault(sb::Fault {
        method: Some("GET".into()),
        path_contains: "/2.0/user".into(),
        kind: sb::FaultKind::Status { status: 429 },
        times: Some(2),
    });
    s.running.sandbox.inject_fault(sb::Fault {
        method: Some("GET".into()),
        path_contains: "/hooks".into(),
        kind: sb::FaultKind::Status { status: 503 },
        times: Some(2),
    });
    let (status, created) = s.create(api_token(), json!({})).await;
    assert_eq!(status, 201, "{created}");
    let user_calls: Vec<u16> =
        s.running.sandbox.requests().iter().filter(|r| r.path.ends_with("/2.0/user")).map(|r| r.status).collect();
    assert_eq!(user_calls, [429, 429, 200]);
    let hook_lists: Vec<u16> = s
        .running
        .sandbox
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path.ends_with("/hooks"))
        .map(|r| r.status)
        .collect();
    assert_eq!(hook_lists, [503, 503, 200]);

    // A Bitbucket that stays down: the connection test gives up with `unavailable`, nothing stored.
    s.running.sandbox.inject_fault(sb::Fault {
        method: None,
        path_contains: "/2.0/".into(),
        kind: sb::FaultKind::Status { status: 502 },
        times: None,
    });
    let (status, answer) = s.create(api_token(), json!({"name": "Down"})).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (503, Some("unavailable")), "{answer}");
    s.running.sandbox.clear_faults();
    let (_, list) = s.get("/integrations").await;
    assert_eq!(list["integrations"].as_array().unwrap().len(), 2);
    s.running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_secret_reaches_the_state_table() {
    let s = stack("connections").await;
    for credential in [
        api_token(),
        json!({"kind": "access_token", "token": sb::ACCESS_TOKEN}),
        json!({"kind": "oauth_consumer", "key": sb::OAUTH_CONSUMER_KEY, "secret": sb::OAUTH_CONSUMER_SECRET}),
    ] {
        let (status, created) = s.create(credential, json!({})).await;
        assert_eq!(status, 201);
        let id = created["id"].as_str().unwrap();
        s.post(&format!("/integrations/{id}/rotate-webhook-secret")).await;
    }
    s.create(
        json!({"kind": "app_password", "username": sb::APP_PASSWORD_USER, "app_password": sb::APP_PASSWORD}),
        json!({}),
    )
    .await;
    let webhook_secret = s.running.seeded.sandbox_webhook_secret.expose().to_owned();
    s.running.stop().await.unwrap();
    let mut state = Vec::new();
    for file in ["state.sqlite3", "state.sqlite3-wal"] {
        if let Ok(bytes) = std::fs::read(s.dir.join(file)) {
            state.extend(bytes);
        }
    }
    assert!(!state.is_empty());
    let haystack = String::from_utf8_lossy(&state);
    assert!(haystack.contains("Demo repo"), "the records are really in these files");
    for secret in all_secret_values().into_iter().chain([webhook_secret.as_str()]) {
        assert!(!haystack.contains(secret), "a secret value is in the state table");
    }
    let secrets = std::fs::read_to_string(s.dir.join("secrets.json")).unwrap();
    assert!(secrets.contains(sb::ACCESS_TOKEN), "credentials live in the secret store");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn data_center_http_tokens_connect_and_deliveries_arrive_signed() {
    let s = stack("connections").await;
    let dc = |credential: Value| {
        json!({
            "name": "DC demo",
            "flavor": "datacenter",
            "base_url": s.url("/sandbox/bitbucket"),
            "project_key": sb::DC_PROJECT,
            "repository": sb::REPOSITORY,
            "credential": credential,
        })
    };
    let (status, answer) = s.call(reqwest::Method::POST, "/integrations", Some(dc(api_token()))).await;
    assert_eq!((status, answer["error"]["message"].as_str().map(|m| m.contains("credential.kind"))), (400, Some(true)));
    let (status, answer) =
        s.call(reqwest::Method::POST, "/integrations", Some(dc(json!({"kind": "http_token", "token": "wrong"})))).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (422, Some("bad_credentials")), "{answer}");

    // Data Center sends Retry-After with its 429s: the client waits that long, then succeeds.
    s.running.sandbox.inject_fault(sb::Fault {
        method: Some("GET".into()),
        path_contains: "/rest/api/latest/projects/".into(),
        kind: sb::FaultKind::Status { status: 429 },
        times: Some(1),
    });
    let started = std::time::Instant::now();
    let (status, created) = s
        .call(
            reqwest::Method::POST,
            "/integrations",
            Some(dc(json!({"kind": "http_token", "token": sb::DC_HTTP_TOKEN}))),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    assert!(started.elapsed() >= Duration::from_secs(1), "Retry-After honoured");
    assert_eq!(created["flavor"], "datacenter");
    assert_eq!(created["repository"]["full_name"], format!("{}/{}", sb::DC_PROJECT, sb::REPOSITORY));
    let id = created["id"].as_str().unwrap().to_owned();
    let hook_id = created["webhook"]["id"].as_str().unwrap().to_owned();
    let hook_number: u64 = hook_id.parse().expect("Data Center webhook ids are numbers");
    let dc_hook = |sandbox: &sb::Sandbox| sandbox.dc_hooks().into_iter().find(|h| h["id"] == hook_number);
    assert_eq!(dc_hook(&s.running.sandbox).expect("registered in Data Center")["active"], true);

    s.running.sandbox.push("main", &[("dc.txt", "x")], "dc push").await;
    s.running.sandbox.settle().await;
    let (_, events) = s.get(&format!("/integrations/{id}/events")).await;
    let events = events["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(
        (events[0]["event_key"].as_str(), events[0]["flavor"].as_str()),
        (Some("repo:refs_changed"), Some("datacenter"))
    );
    assert_eq!(events[0]["summary"], "branch main updated");

    let (_, off) = s.post(&format!("/integrations/{id}/disconnect")).await;
    assert_eq!(off["status"], "inactive");
    assert_eq!(dc_hook(&s.running.sandbox).unwrap()["active"], false);
    s.running.stop().await.unwrap();
}
