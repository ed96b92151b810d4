//! The sandbox over real HTTP: mounted like the local stack mounts it, driven with reqwest, and
//! delivering webhooks to a small receiver started by each test that needs one.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use bitbucket_sandbox::{
    self as sb, ACCESS_TOKEN, APP_PASSWORD, APP_PASSWORD_USER, DC_HTTP_TOKEN, Fault, FaultKind, OAUTH_CONSUMER_KEY,
    OAUTH_CONSUMER_SECRET, READONLY_ACCESS_TOKEN,
};
use domain::webhook::{Flavor, RepoEvent, parse};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::common::{Harness, probe, start};

async fn serve(app: Router) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

async fn error_message(response: reqwest::Response) -> String {
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["type"], "error", "{body}");
    body["error"]["message"].as_str().unwrap().to_owned()
}

// ---- a webhook receiver -----------------------------------------------------------------------

#[derive(Clone, Default)]
struct Receiver {
    received: Arc<Mutex<Vec<(HeaderMap, Bytes)>>>,
    /// Statuses to answer with, in order; 200 once they run out.
    script: Arc<Mutex<VecDeque<u16>>>,
}

async fn receive(State(receiver): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    receiver.received.lock().unwrap().push((headers, body));
    let status = receiver.script.lock().unwrap().pop_front().unwrap_or(200);
    StatusCode::from_u16(status).unwrap()
}

async fn start_receiver(script: &[u16]) -> (String, Receiver) {
    let receiver = Receiver { script: Arc::new(Mutex::new(script.iter().copied().collect())), ..Default::default() };
    let base = serve(Router::new().route("/hook", post(receive)).with_state(receiver.clone())).await;
    (format!("{base}/hook"), receiver)
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_else(|| panic!("no {name} header"))
}

// ---- credentials ------------------------------------------------------------------------------

#[tokio::test]
async fn api_token_and_access_tokens_are_accepted() {
    let h = start().await;
    let user = h.get(&h.url("/2.0/user")).send().await.unwrap();
    assert_eq!(user.status(), 200);
    let user: Value = user.json().await.unwrap();
    assert_eq!((user["type"].as_str(), user["username"].as_str()), (Some("user"), Some("sandbox-dev")));

    let repo = h.http.get(h.repo("")).bearer_auth(ACCESS_TOKEN).send().await.unwrap();
    assert_eq!(repo.status(), 200);
    let repo: Value = repo.json().await.unwrap();
    assert_eq!(repo["full_name"], "sandbox/demo");
    assert_eq!(repo["mainbranch"]["name"], "main");
    assert_eq!(repo["links"]["html"]["href"], format!("{}/sandbox/demo", h.base));

    let missing = h.http.get(h.url("/2.0/user")).send().await.unwrap();
    assert_eq!(missing.status(), 401);
    assert_eq!(error_message(missing).await, "Invalid credentials");
    let wrong = h.http.get(h.url("/2.0/user")).bearer_auth("nope").send().await.unwrap();
    assert_eq!(wrong.status(), 401);

    let unknown = h.get(&h.url("/2.0/repositories/sandbox/x")).send().await.unwrap();
    assert_eq!(unknown.status(), 404);
    assert_eq!(error_message(unknown).await, "Repository sandbox/x not found");
}

#[tokio::test]
async fn app_passwords_are_refused() {
    let h = start().await;
    let response =
        h.http.get(h.url("/2.0/user")).basic_auth(APP_PASSWORD_USER, Some(APP_PASSWORD)).send().await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(error_message(response).await, "App passwords are no longer supported; use an API token");
}

#[tokio::test]
async fn readonly_token_lacks_the_webhook_scope() {
    let h = start().await;
    let read = h.http.get(h.repo("/refs/branches")).bearer_auth(READONLY_ACCESS_TOKEN).send().await.unwrap();
    assert_eq!(read.status(), 200);
    let body = json!({ "url": "http://127.0.0.1:9/hook", "events": ["repo:push"] });
    let response = h.http.post(h.repo("/hooks")).bearer_auth(READONLY_ACCESS_TOKEN).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 403);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["message"], "Your credentials lack one or more required privilege scopes.");
    assert_eq!(body["error"]["detail"], json!({ "required": ["webhook"], "granted": ["account", "repository"] }));
    assert!(h.sandbox.hooks().is_empty());
}

async fn oauth_token(h: &Harness) -> Value {
    let response = h
        .http
        .post(h.url("/site/oauth2/access_token"))
        .basic_auth(OAUTH_CONSUMER_KEY, Some(OAUTH_CONSUMER_SECRET))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

#[tokio::test]
async fn oauth_client_credentials_tokens_work_until_they_expire() {
    let h = start().await;
    let token = oauth_token(&h).await;
    assert_eq!(token["token_type"], "bearer");
    assert_eq!(token["expires_in"], 7200);
    // `scope`, space-separated, as Cloud answers since 2026-05-04; no refresh token for client credentials.
    assert_eq!(token["scope"], sb::ACCESS_TOKEN_SCOPES.join(" "));
    assert!(token.get("scopes").is_none() && token.get("refresh_token").is_none(), "{token}");
    let access = token["access_token"].as_str().unwrap();
    let user = h.http.get(h.url("/2.0/user")).bearer_auth(access).send().await.unwrap();
    assert_eq!(user.status(), 200);

    // Client credentials as form fields work too; wrong ones do not.
    let form = [("grant_type", "client_credentials"), ("client_id", OAUTH_CONSUMER_KEY), ("client_secret", "x")];
    let wrong = h.http.post(h.url("/site/oauth2/access_token")).form(&form).send().await.unwrap();
    assert_eq!(wrong.status(), 400);
    assert_eq!(wrong.json::<Value>().await.unwrap()["error"], "invalid_client");

    h.sandbox.set_oauth_token_lifetime(1);
    let token = oauth_token(&h).await;
    assert_eq!(token["expires_in"], 1);
    let short = token["access_token"].as_str().unwrap();
    assert_eq!(h.http.get(h.url("/2.0/user")).bearer_auth(short).send().await.unwrap().status(), 200);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let expired = h.http.get(h.url("/2.0/user")).bearer_auth(short).send().await.unwrap();
    assert_eq!(expired.status(), 401);
}

// ---- hooks ------------------------------------------------------------------------------------

#[tokio::test]
async fn hooks_crud() {
    let h = start().await;
    let hook = h.create_hook("https://example.test/hook", Some("s3cret"), &["repo:push", "pullrequest:created"]).await;
    let uuid = hook["uuid"].as_str().unwrap().to_owned();
    assert!(uuid.starts_with('{') && uuid.ends_with('}'));
    assert_eq!(hook["secret_set"], true);
    assert_eq!(hook["subject_type"], "repository");
    assert!(hook.get("secret").is_none(), "the secret is never echoed");
    assert!(hook["created_at"].is_string());

    let list: Value = h.get(&h.repo("/hooks")).send().await.unwrap().json().await.unwrap();
    assert_eq!(list["size"], 1);
    assert_eq!(list["values"][0]["uuid"], uuid.as_str());
    assert_eq!(h.sandbox.hooks(), vec![hook.clone()]);

    let bare = uuid.trim_matches(|c| c == '{' || c == '}');
    for uid in [uuid.clone(), bare.to_owned(), format!("%7B{bare}%7D")] {
        let got = h.get(&h.repo(&format!("/hooks/{uid}"))).send().await.unwrap();
        assert_eq!(got.status(), 200, "{uid}");
    }

    let update =
        json!({ "description": "renamed", "url": "http://example.test/v2", "active": false, "events": ["repo:push"] });
    let put =
        h.http.put(h.repo(&format!("/hooks/{bare}"))).bearer_auth(ACCESS_TOKEN).json(&update).send().await.unwrap();
    assert_eq!(put.status(), 200);
    let put: Value = put.json().await.unwrap();
    assert_eq!(
        (&put["description"], &put["url"], &put["active"], &put["events"], &put["secret_set"]),
        (&json!("renamed"), &json!("http://example.test/v2"), &json!(false), &json!(["repo:push"]), &json!(true))
    );

    for bad in [
        json!({ "url": "ftp://example.test", "events": ["repo:push"] }),
        json!({ "url": "https://example.test", "events": [] }),
        json!({ "url": "https://example.test", "events": ["repo:fork"] }),
        json!({ "url": "https://example.test", "events": "repo:push" }),
    ] {
        let response = probe(h.post(&h.repo("/hooks"))).json(&bad).send().await.unwrap();
        assert_eq!(response.status(), 400, "{bad}");
        assert!(!error_message(response).await.is_empty());
    }
    let malformed = probe(h.post(&h.repo("/hooks"))).body("{not json").send().await.unwrap();
    assert_eq!(malformed.status(), 400);

    let deleted = h.http.delete(h.repo(&format!("/hooks/{uuid}"))).bearer_auth(ACCESS_TOKEN).send().await.unwrap();
    assert_eq!(deleted.status(), 204);
    assert_eq!(h.get(&h.repo(&format!("/hooks/{bare}"))).send().await.unwrap().status(), 404);
    assert!(h.sandbox.hooks().is_empty());
}

// ---- branches and paging ----------------------------------------------------------------------

#[tokio::test]
async fn branches_page_through_next_links() {
    let h = start().await;
    let main = h.tip("main").await;
    for i in 0..250 {
        let body = json!({ "name": format!("bulk/{i:03}"), "target": { "hash": main } });
        let response = h.post(&h.repo("/refs/branches")).json(&body).send().await.unwrap();
        assert_eq!(response.status(), 201);
    }
    let mut names = Vec::new();
    let mut pages = 0;
    let mut url = Some(h.repo("/refs/branches?pagelen=100"));
    while let Some(next) = url {
        let page: Value = h.get(&next).send().await.unwrap().json().await.unwrap();
        pages += 1;
        assert_eq!(page["size"], 253, "250 created and 3 seeded");
        assert_eq!(page["page"], pages);
        names.extend(page["values"].as_array().unwrap().iter().map(|b| b["name"].as_str().unwrap().to_owned()));
        url = page["next"].as_str().map(str::to_owned);
    }
    assert_eq!(pages, 3);
    assert_eq!(names.len(), 253);
    assert!(names.windows(2).all(|w| w[0] < w[1]), "sorted by name");

    let filtered: Value =
        h.get(&h.repo("/refs/branches?q=name%20~%20%22login%22")).send().await.unwrap().json().await.unwrap();
    assert_eq!(filtered["values"][0]["name"], "feature/login");
    assert_eq!(filtered["size"], 1);

    let branch: Value = h.get(&h.repo("/refs/branches/feature/login")).send().await.unwrap().json().await.unwrap();
    assert_eq!(branch["type"], "branch");
    assert_eq!(branch["target"]["hash"].as_str().unwrap().len(), 40);
    assert_eq!(
        h.http.delete(h.repo("/refs/branches/main")).bearer_auth(ACCESS_TOKEN).send().await.unwrap().status(),
        400
    );
    assert_eq!(
        h.http.delete(h.repo("/refs/branches/bulk/000")).bearer_auth(ACCESS_TOKEN).send().await.unwrap().status(),
        204
    );
    assert_eq!(h.get(&h.repo("/refs/branches/bulk/000")).send().await.unwrap().status(), 404);
    assert_eq!(probe(h.get(&h.repo("/refs/branches?pagelen=0"))).send().await.unwrap().status(), 400);
}

// ---- source -----------------------------------------------------------------------------------

#[tokio::test]
async fn src_commit_on_the_tip_is_created_and_readable() {
    let h = start().await;
    let tip = h.tip("main").await;
    let form = reqwest::multipart::Form::new()
        .text("message", "Add docs")
        .text("author", "Robot <robot@example.test>")
        .text("branch", "main")
        .text("parents", tip.clone())
        .text("docs/new.md", "# New\n");
    let response = h.post(&h.repo("/src")).multipart(form).send().await.unwrap();
    assert_eq!(response.status(), 201, "{:?}", response.text().await);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.starts_with(&h.repo("/commit/")), "{location}");
    assert!(response.bytes().await.unwrap().is_empty());
    let hash = location.rsplit('/').next().unwrap().to_owned();
    assert_eq!(h.tip("main").await, hash);
    assert_eq!(h.sandbox.commit_count(), 1);

    for rev in [hash.as_str(), "main"] {
        let file = h.get(&h.repo(&format!("/src/{rev}/docs/new.md"))).send().await.unwrap();
        assert_eq!(file.status(), 200);
        assert!(file.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
        assert_eq!(file.text().await.unwrap(), "# New\n");
    }
    // The older commit still has its own tree.
    assert_eq!(h.get(&h.repo(&format!("/src/{tip}/docs/new.md"))).send().await.unwrap().status(), 404);
    assert_eq!(h.get(&h.repo(&format!("/src/{tip}/README.md"))).send().await.unwrap().status(), 200);

    let commit: Value = h.get(&h.repo(&format!("/commit/{hash}"))).send().await.unwrap().json().await.unwrap();
    assert_eq!(commit["message"], "Add docs");
    assert_eq!(commit["author"]["raw"], "Robot <robot@example.test>");
    assert_eq!(commit["parents"][0]["hash"], tip.as_str());

    // URL-encoded forms work too, and `files` deletes.
    let form = [("message", "Drop docs"), ("files", "docs/new.md")];
    let response = h.post(&h.repo("/src")).form(&form).send().await.unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(h.get(&h.repo("/src/main/docs/new.md")).send().await.unwrap().status(), 404);
    assert_eq!(h.sandbox.commit_count(), 2);
}

#[tokio::test]
async fn src_commit_on_a_stale_parent_is_refused() {
    let h = start().await;
    let stale = h.tip("develop").await;
    h.sandbox.push("develop", &[("moved.txt", "x")], "Someone else pushed").await;
    let form = reqwest::multipart::Form::new()
        .text("message", "Mine")
        .text("branch", "develop")
        .text("parents", stale.clone())
        .text("mine.txt", "y");
    let response = h.post(&h.repo("/src")).multipart(form).send().await.unwrap();
    assert_eq!(response.status(), 409);
    assert_eq!(error_message(response).await, format!("Commit not on branch tip: {stale} (the branch moved)"));
    assert_eq!(h.sandbox.commit_count(), 0);
    assert_eq!(h.get(&h.repo("/src/develop/mine.txt")).send().await.unwrap().status(), 404);

    let readonly = h
        .http
        .post(h.repo("/src"))
        .bearer_auth(READONLY_ACCESS_TOKEN)
        .form(&[("message", "x"), ("a.txt", "a")])
        .send()
        .await
        .unwrap();
    assert_eq!(readonly.status(), 403);
    assert_eq!(h.sandbox.commit_count(), 0);
}

// ---- faults and the request log ---------------------------------------------------------------

#[tokio::test]
async fn rate_limit_fault_then_normal() {
    let h = start().await;
    h.sandbox.inject_fault(Fault {
        method: Some("GET".into()),
        path_contains: "/2.0/user".into(),
        kind: FaultKind::Status { status: 429 },
        times: Some(2),
    });
    for _ in 0..2 {
        let response = h.get(&h.url("/2.0/user")).send().await.unwrap();
        assert_eq!(response.status(), 429);
        assert!(response.headers().get("retry-after").is_none());
    }
    assert_eq!(h.get(&h.url("/2.0/user")).send().await.unwrap().status(), 200);
    let statuses: Vec<u16> = h.sandbox.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [429, 429, 200]);
    let first = &h.sandbox.requests()[0];
    assert_eq!((first.method.as_str(), first.path.as_str(), first.query.as_str()), ("GET", "/2.0/user", ""));
}

#[tokio::test]
async fn latency_revoke_and_server_error_faults() {
    let h = start().await;
    h.sandbox.inject_fault(Fault {
        method: None,
        path_contains: "/refs/branches".into(),
        kind: FaultKind::Latency { millis: 300 },
        times: Some(1),
    });
    let started = Instant::now();
    assert_eq!(h.get(&h.repo("/refs/branches")).send().await.unwrap().status(), 200);
    assert!(started.elapsed() >= Duration::from_millis(300));

    h.sandbox.inject_fault(Fault { method: None, path_contains: String::new(), kind: FaultKind::Revoke, times: None });
    for request in [h.get(&h.url("/2.0/user")), h.http.get(h.url("/2.0/user")).bearer_auth(ACCESS_TOKEN)] {
        assert_eq!(request.send().await.unwrap().status(), 401);
    }
    h.sandbox.clear_faults();
    assert_eq!(h.get(&h.url("/2.0/user")).send().await.unwrap().status(), 200);

    // Faults also come through the admin API.
    let fault = json!({ "path_contains": "/hooks", "kind": { "type": "status", "status": 503 }, "times": 1 });
    let added = h.http.post(h.url("/_admin/faults")).json(&fault).send().await.unwrap();
    assert_eq!(added.status(), 201);
    assert_eq!(h.get(&h.repo("/hooks")).send().await.unwrap().status(), 503);
    assert_eq!(h.get(&h.repo("/hooks")).send().await.unwrap().status(), 200);

    let log: Value = h.http.get(h.url("/_admin/requests")).send().await.unwrap().json().await.unwrap();
    assert!(log.as_array().unwrap().iter().all(|r| !r["path"].as_str().unwrap().starts_with("/_admin")));
    assert_eq!(log.as_array().unwrap().len(), h.sandbox.requests().len());
}

#[tokio::test]
async fn unknown_routes_and_bad_input_are_json_errors() {
    let h = start().await;
    let unknown = probe(h.get(&h.url("/2.0/nothing"))).send().await.unwrap();
    assert_eq!(unknown.status(), 404);
    assert!(unknown.json::<Value>().await.is_ok());
    let bad_id = probe(h.get(&h.repo("/pullrequests/abc"))).send().await.unwrap();
    assert_eq!(bad_id.status(), 400);
    assert!(bad_id.json::<Value>().await.is_ok());
    let admin =
        h.http.post(h.url("/_admin/pullrequests")).json(&json!({ "source": "nope", "title": "x" })).send().await;
    let admin = admin.unwrap();
    assert_eq!(admin.status(), 404);
    let body: Value = admin.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found");
}

// ---- webhooks ---------------------------------------------------------------------------------

#[tokio::test]
async fn push_webhook_is_signed_and_parses() {
    let h = start().await;
    let (url, receiver) = start_receiver(&[]).await;
    let hook = h.create_hook(&url, Some("hook-secret"), &["repo:push", "pullrequest:created"]).await;
    let previous = h.tip("main").await;

    let hash = h.sandbox.push("main", &[("src/app.rs", "fn main() {}\n")], "Add the app").await;
    h.sandbox.settle().await;

    let received = receiver.received.lock().unwrap().clone();
    assert_eq!(received.len(), 1);
    let (headers, body) = &received[0];
    assert_eq!(header(headers, "x-event-key"), "repo:push");
    assert_eq!(header(headers, "x-hook-uuid"), hook["uuid"].as_str().unwrap());
    assert_eq!(header(headers, "x-attempt-number"), "1");
    assert_eq!(header(headers, "user-agent"), "Bitbucket-Webhooks/2.0");
    assert_eq!(header(headers, "content-type"), "application/json");
    assert!(uuid::Uuid::parse_str(header(headers, "x-request-uuid")).is_ok());
    assert!(!header(headers, "x-event-time").is_empty());
    let signature = header(headers, "x-hub-signature");
    assert_eq!(domain::signature::verify(Some(signature), body, [b"hook-secret".as_slice()]), Ok(()));

    let parsed = parse(Flavor::Cloud, "repo:push", body).unwrap();
    assert_eq!(parsed.repository.as_deref(), Some("sandbox/demo"));
    let expected =
        RepoEvent::BranchUpdated { branch: "main".into(), head: Some(hash), previous: Some(previous), forced: false };
    assert_eq!(parsed.events, [expected]);

    // A pull request opened through the admin API reaches the same hook.
    let opened =
        h.http.post(h.url("/_admin/pullrequests")).json(&json!({ "source": "develop", "title": "Dev" })).send();
    let id = opened.await.unwrap().json::<Value>().await.unwrap()["id"].as_u64().unwrap();
    h.sandbox.settle().await;
    let received = receiver.received.lock().unwrap().clone();
    assert_eq!(received.len(), 2);
    let parsed = parse(Flavor::Cloud, header(&received[1].0, "x-event-key"), &received[1].1).unwrap();
    let RepoEvent::PullRequestOpened { pull_request } = &parsed.events[0] else { panic!("{parsed:?}") };
    assert_eq!((pull_request.id, pull_request.destination_branch.as_str()), (id, "main"));

    let pr: Value = h.get(&h.repo(&format!("/pullrequests/{id}"))).send().await.unwrap().json().await.unwrap();
    assert_eq!(pr["state"], "OPEN");
    let open: Value = h.get(&h.repo("/pullrequests")).send().await.unwrap().json().await.unwrap();
    assert_eq!(open["size"], 1);

    let sent = h.sandbox.sent_webhooks();
    assert_eq!(
        sent.iter().map(|s| (s.event_key.as_str(), s.status)).collect::<Vec<_>>(),
        [("repo:push", Some(200)), ("pullrequest:created", Some(200))]
    );
}

#[tokio::test]
async fn webhook_is_retried_on_a_server_error_with_the_same_request_uuid() {
    let h = start().await;
    let (url, receiver) = start_receiver(&[500]).await;
    h.create_hook(&url, None, &["repo:commit_status_created"]).await;
    let tip = h.tip("main").await;
    let status =
        json!({ "key": "ci", "state": "INPROGRESS", "name": "CI", "url": "https://ci.test/1", "refname": "main" });
    let response = h.post(&h.repo(&format!("/commit/{tip}/statuses/build"))).json(&status).send().await.unwrap();
    assert_eq!(response.status(), 201);
    h.sandbox.settle().await;

    let received = receiver.received.lock().unwrap().clone();
    assert_eq!(received.len(), 2);
    assert_eq!(header(&received[0].0, "x-attempt-number"), "1");
    assert_eq!(header(&received[1].0, "x-attempt-number"), "2");
    assert_eq!(header(&received[0].0, "x-request-uuid"), header(&received[1].0, "x-request-uuid"));
    assert!(received[0].0.get("x-hub-signature").is_none(), "no secret, no signature");
    let parsed = parse(Flavor::Cloud, "repo:commit_status_created", &received[1].1).unwrap();
    assert!(matches!(&parsed.events[0], RepoEvent::CommitStatus { state, .. } if state == "INPROGRESS"));
    let attempts: Vec<_> = h.sandbox.sent_webhooks().iter().map(|s| (s.attempt, s.status)).collect();
    assert_eq!(attempts, [(1, Some(500)), (2, Some(200))]);
}

#[tokio::test]
async fn client_errors_are_final_and_inactive_hooks_are_skipped() {
    let h = start().await;
    let (url, receiver) = start_receiver(&[404]).await;
    h.create_hook(&url, None, &["repo:push"]).await;
    let inactive = json!({ "url": url, "active": false, "events": ["repo:push"] });
    assert_eq!(h.post(&h.repo("/hooks")).json(&inactive).send().await.unwrap().status(), 201);

    h.sandbox.create_branch("topic", "main").await.unwrap();
    h.sandbox.settle().await;
    assert_eq!(receiver.received.lock().unwrap().len(), 1);
    let sent = h.sandbox.sent_webhooks();
    assert_eq!(sent.iter().map(|s| (s.attempt, s.status)).collect::<Vec<_>>(), [(1, Some(404))]);
}

#[tokio::test]
async fn unreachable_hooks_get_three_attempts() {
    let h = start().await;
    // A port that was free a moment ago: connections are refused.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    h.create_hook(&format!("http://{closed}/hook"), None, &["repo:push"]).await;
    h.sandbox.delete_branch("develop").await.unwrap();
    h.sandbox.settle().await;
    let attempts: Vec<_> = h.sandbox.sent_webhooks().iter().map(|s| (s.attempt, s.status)).collect();
    assert_eq!(attempts, [(1, None), (2, None), (3, None)]);
}

#[tokio::test]
async fn admin_routes_drive_branches_and_pull_requests() {
    let h = start().await;
    let (url, receiver) = start_receiver(&[]).await;
    let events =
        ["repo:push", "pullrequest:created", "pullrequest:updated", "pullrequest:fulfilled", "pullrequest:rejected"];
    h.create_hook(&url, Some("s"), &events).await;
    let admin = |path: &str| h.http.post(h.url(&format!("/_admin{path}")));

    let created = admin("/branches").json(&json!({ "name": "feature/x", "from": "develop" })).send().await.unwrap();
    assert_eq!(created.status(), 201);
    let pushed =
        admin("/push").json(&json!({ "branch": "feature/x", "files": { "x.txt": "x" } })).send().await.unwrap();
    let commit = pushed.json::<Value>().await.unwrap()["commit"].as_str().unwrap().to_owned();
    // Read by commit: live Cloud refuses `src/{branch}/…` for a branch with a `/`.
    for rev in ["feature/x", "feature%2Fx"] {
        assert_eq!(h.get(&h.repo(&format!("/src/{rev}/x.txt"))).send().await.unwrap().status(), 404, "{rev}");
    }
    assert_eq!(h.get(&h.repo(&format!("/src/{commit}/x.txt"))).send().await.unwrap().text().await.unwrap(), "x");

    let opened = admin("/pullrequests").json(&json!({ "source": "feature/x", "title": "X" })).send().await.unwrap();
    let id = opened.json::<Value>().await.unwrap()["id"].as_u64().unwrap();
    let updated = admin(&format!("/pullrequests/{id}/update")).json(&json!({ "title": "X2" })).send().await.unwrap();
    assert_eq!(updated.json::<Value>().await.unwrap()["title"], "X2");
    let merged: Value = admin(&format!("/pullrequests/{id}/merge")).send().await.unwrap().json().await.unwrap();
    assert_eq!((&merged["state"], &merged["source"]["commit"]), (&json!("MERGED"), &json!({ "hash": &commit[..12] })));
    assert_eq!(admin(&format!("/pullrequests/{id}/decline")).send().await.unwrap().status(), 400, "already merged");

    let other = h.sandbox.open_pull_request("develop", "main", "Dev").await;
    h.sandbox.decline_pull_request(other).await.unwrap();
    let merged_list: Value = h.get(&h.repo("/pullrequests?state=MERGED")).send().await.unwrap().json().await.unwrap();
    assert_eq!(merged_list["values"][0]["id"], id);
    let both: Value =
        h.get(&h.repo("/pullrequests?state=MERGED&state=DECLINED")).send().await.unwrap().json().await.unwrap();
    assert_eq!(both["size"], 2);
    assert_eq!(h.get(&h.repo("/pullrequests")).send().await.unwrap().json::<Value>().await.unwrap()["size"], 0);

    let deleted = h.http.delete(h.url("/_admin/branches/feature/x")).send().await.unwrap();
    assert_eq!(deleted.status(), 204);
    h.sandbox.settle().await;

    let keys: Vec<String> = receiver
        .received
        .lock()
        .unwrap()
        .iter()
        .map(|(headers, body)| {
            let key = header(headers, "x-event-key").to_owned();
            parse(Flavor::Cloud, &key, body).unwrap();
            key
        })
        .collect();
    let mut expected = vec!["repo:push", "repo:push", "pullrequest:created", "pullrequest:updated"];
    expected.extend(["pullrequest:fulfilled", "pullrequest:created", "pullrequest:rejected", "repo:push"]);
    let mut sorted_keys = keys.clone();
    sorted_keys.sort();
    expected.sort();
    assert_eq!(sorted_keys, expected, "deliveries run concurrently, so compare as sets");
    assert!(h.sandbox.requests().iter().all(|r| !r.path.starts_with("/_admin")));
}

// ---- Data Center ------------------------------------------------------------------------------

/// A Data Center error body's first message.
async fn dc_error_message(response: reqwest::Response) -> String {
    let body: Value = response.json().await.unwrap();
    body["errors"][0]["message"].as_str().unwrap_or_else(|| panic!("not a Data Center error: {body}")).to_owned()
}

#[tokio::test]
async fn data_center_reads_the_same_repository_with_its_own_token() {
    let h = start().await;
    let repo = h.dc_request(reqwest::Method::GET, &h.dc("")).send().await.unwrap();
    assert_eq!(repo.status(), 200);
    assert_eq!(header(repo.headers(), "x-ausername"), "sandbox-dev");
    let expected = json!({
        "slug": "demo",
        "id": 1,
        "name": "demo",
        "project": { "key": "SANDBOX", "name": "Sandbox" },
        "links": { "self": [{ "href": format!("{}/projects/SANDBOX/repos/demo/browse", h.base) }] },
    });
    assert_eq!(repo.json::<Value>().await.unwrap(), expected);

    let branch = h.dc_request(reqwest::Method::GET, &h.dc("/default-branch")).send().await.unwrap();
    assert_eq!(header(branch.headers(), "x-ausername"), "sandbox-dev");
    let expected = json!({ "id": "refs/heads/main", "displayId": "main", "type": "BRANCH", "isDefault": true });
    assert_eq!(branch.json::<Value>().await.unwrap(), expected);

    // Cloud credentials are refused here, and the Data Center token on Cloud's routes.
    let refused = json!({ "errors": [{
        "context": null,
        "message": "Authentication failed. Please check your credentials and try again.",
        "exceptionName": "com.atlassian.bitbucket.auth.IncorrectPasswordAuthenticationException",
    }] });
    for request in [h.get(&h.dc("")), h.http.get(h.dc("")).bearer_auth(ACCESS_TOKEN), h.http.get(h.dc(""))] {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401);
        assert!(response.headers().get("x-ausername").is_none());
        assert_eq!(response.json::<Value>().await.unwrap(), refused);
    }
    assert_eq!(h.http.get(h.repo("")).bearer_auth(DC_HTTP_TOKEN).send().await.unwrap().status(), 401);

    let unknown = h.dc_request(reqwest::Method::GET, &h.url("/rest/api/latest/projects/SANDBOX/repos/x")).send();
    let unknown = unknown.await.unwrap();
    assert_eq!(unknown.status(), 404);
    let exception = "com.atlassian.bitbucket.repository.NoSuchRepositoryException";
    assert_eq!(
        unknown.json::<Value>().await.unwrap(),
        json!({ "errors": [{ "context": null, "message": "Repository SANDBOX/x does not exist.", "exceptionName": exception }] })
    );
    let paths: Vec<_> = h.sandbox.requests().iter().map(|r| (r.path.clone(), r.status)).collect();
    assert_eq!(paths[0], ("/rest/api/latest/projects/SANDBOX/repos/demo".to_owned(), 200));
    assert_eq!(paths.last().unwrap(), &("/rest/api/latest/projects/SANDBOX/repos/x".to_owned(), 404));
}

#[tokio::test]
async fn data_center_webhooks_crud_and_paging() {
    let h = start().await;
    let dc = |method, rest: &str| h.dc_request(method, &h.dc(rest));
    let events = ["repo:refs_changed", "pr:opened"];
    let mut ids = Vec::new();
    for i in 0..3 {
        let hook = h.create_dc_hook(&format!("https://example.test/hook/{i}"), "s3cret", &events).await;
        assert_eq!(hook["configuration"], json!({}), "the secret is never echoed");
        assert_eq!((&hook["name"], &hook["active"]), (&json!("test"), &json!(true)));
        ids.push(hook["id"].as_u64().unwrap());
    }
    assert_eq!(ids, [1, 2, 3]);
    assert!(h.sandbox.hooks().is_empty(), "Cloud's hooks are a separate list");

    let first = dc(reqwest::Method::GET, "/webhooks?limit=2").send().await.unwrap();
    assert_eq!(header(first.headers(), "x-ausername"), "sandbox-dev");
    let first: Value = first.json().await.unwrap();
    assert_eq!((&first["size"], &first["limit"], &first["start"]), (&json!(2), &json!(2), &json!(0)));
    assert_eq!((&first["isLastPage"], &first["nextPageStart"]), (&json!(false), &json!(2)));
    let last: Value = dc(reqwest::Method::GET, "/webhooks?limit=2&start=2").send().await.unwrap().json().await.unwrap();
    assert_eq!((&last["values"][0]["id"], &last["isLastPage"]), (&json!(3), &json!(true)));
    assert!(last.get("nextPageStart").is_none());
    let all: Value = dc(reqwest::Method::GET, "/webhooks").send().await.unwrap().json().await.unwrap();
    assert_eq!(all["values"], json!(h.sandbox.dc_hooks()));

    let update = json!({
        "name": "renamed",
        "url": "http://example.test/v2",
        "active": false,
        "events": ["repo:refs_changed"],
        "configuration": { "secret": "new" },
    });
    let put = dc(reqwest::Method::PUT, "/webhooks/2").json(&update).send().await.unwrap();
    assert_eq!(put.status(), 200);
    let put: Value = put.json().await.unwrap();
    for (field, value) in [("id", json!(2)), ("name", json!("renamed")), ("active", json!(false))] {
        assert_eq!(put[field], value, "{field}");
    }
    assert_eq!((&put["events"], &put["configuration"]), (&json!(["repo:refs_changed"]), &json!({})));
    assert_eq!(h.sandbox.dc_hooks()[1], put);

    for bad in [
        json!({ "name": "x", "url": "https://example.test", "events": ["repo:push"] }),
        json!({ "name": "x", "url": "https://example.test", "events": [] }),
        json!({ "name": "x", "url": "ftp://example.test", "events": ["pr:opened"] }),
        json!({ "url": "https://example.test", "events": ["pr:opened"] }),
    ] {
        let response = dc(reqwest::Method::POST, "/webhooks").json(&bad).send().await.unwrap();
        assert_eq!(response.status(), 400, "{bad}");
        assert!(!dc_error_message(response).await.is_empty());
    }
    let bad_update = probe(dc(reqwest::Method::PUT, "/webhooks/2")).json(&json!({ "events": ["pr:nope"] })).send();
    assert_eq!(bad_update.await.unwrap().status(), 400);
    assert_eq!(h.sandbox.dc_hooks()[1], put, "a refused update changes nothing");

    assert_eq!(dc(reqwest::Method::DELETE, "/webhooks/2").send().await.unwrap().status(), 204);
    for (method, id) in [(reqwest::Method::DELETE, "2"), (reqwest::Method::PUT, "2"), (reqwest::Method::GET, "abc")] {
        // A body on GET and DELETE, and a non-numeric id: on purpose.
        let response = probe(dc(method, &format!("/webhooks/{id}"))).json(&update).send().await.unwrap();
        assert_eq!(response.status(), 404, "{id}");
        assert_eq!(dc_error_message(response).await, format!("Webhook {id} does not exist."));
    }
    let ids: Vec<_> = h.sandbox.dc_hooks().iter().map(|hook| hook["id"].clone()).collect();
    assert_eq!(ids, [json!(1), json!(3)]);
    assert_eq!(h.create_dc_hook("https://example.test/4", "", &events).await["id"], 4, "ids are not reused");
}

#[tokio::test]
async fn data_center_push_webhook_is_signed_and_parses() {
    let h = start().await;
    let (url, receiver) = start_receiver(&[500]).await;
    let hook = h.create_dc_hook(&url, "dc-secret", &["repo:refs_changed", "pr:opened"]).await;
    let previous = h.tip("main").await;

    let hash = h.sandbox.push("main", &[("src/app.rs", "fn main() {}\n")], "Add the app").await;
    h.sandbox.settle().await;

    let received = receiver.received.lock().unwrap().clone();
    assert_eq!(received.len(), 2, "retried after the 500");
    let (headers, body) = &received[1];
    assert_eq!(header(headers, "x-event-key"), "repo:refs_changed");
    assert_eq!(header(headers, "content-type"), "application/json");
    assert!(uuid::Uuid::parse_str(header(headers, "x-request-id")).is_ok());
    assert_eq!(header(&received[0].0, "x-request-id"), header(headers, "x-request-id"), "the same on retries");
    assert!(headers.get("x-request-uuid").is_none() && headers.get("x-hook-uuid").is_none(), "not Cloud's headers");
    let signature = header(headers, "x-hub-signature");
    assert_eq!(domain::signature::verify(Some(signature), body, [b"dc-secret".as_slice()]), Ok(()));

    let parsed = parse(Flavor::DataCenter, "repo:refs_changed", body).unwrap();
    assert_eq!(parsed.repository.as_deref(), Some("SANDBOX/demo"));
    let expected =
        RepoEvent::BranchUpdated { branch: "main".into(), head: Some(hash), previous: Some(previous), forced: false };
    assert_eq!(parsed.events, [expected]);

    let id = h.sandbox.open_pull_request("develop", "main", "Dev").await;
    h.sandbox.settle().await;
    let received = receiver.received.lock().unwrap().clone();
    assert_eq!(received.len(), 3);
    assert_eq!(header(&received[2].0, "x-event-key"), "pr:opened");
    let parsed = parse(Flavor::DataCenter, "pr:opened", &received[2].1).unwrap();
    let RepoEvent::PullRequestOpened { pull_request } = &parsed.events[0] else { panic!("{parsed:?}") };
    assert_eq!((pull_request.id, pull_request.source_branch.as_str()), (id, "develop"));

    let sent: Vec<_> =
        h.sandbox.sent_webhooks().iter().map(|s| (s.flavor, s.hook_uuid.clone(), s.attempt, s.status)).collect();
    let hook_id = hook["id"].to_string();
    assert_eq!(
        sent,
        [
            (Flavor::DataCenter, hook_id.clone(), 1, Some(500)),
            (Flavor::DataCenter, hook_id.clone(), 2, Some(200)),
            (Flavor::DataCenter, hook_id, 1, Some(200)),
        ]
    );

    // A new secret signs what follows.
    let rotate = json!({ "configuration": { "secret": "rotated" } });
    let put = h.dc_request(reqwest::Method::PUT, &h.dc(&format!("/webhooks/{}", hook["id"]))).json(&rotate).send();
    assert_eq!(put.await.unwrap().status(), 200);
    h.sandbox.delete_branch("develop").await.unwrap();
    h.sandbox.settle().await;
    let (headers, body) = receiver.received.lock().unwrap()[3].clone();
    let signature = header(&headers, "x-hub-signature");
    assert_eq!(domain::signature::verify(Some(signature), &body, [b"rotated".as_slice()]), Ok(()));
    let parsed = parse(Flavor::DataCenter, header(&headers, "x-event-key"), &body).unwrap();
    assert!(matches!(&parsed.events[..], [RepoEvent::BranchDeleted { branch, .. }] if branch == "develop"));
}

#[tokio::test]
async fn data_center_rate_limits_carry_retry_after() {
    let h = start().await;
    h.sandbox.inject_fault(Fault {
        method: Some("GET".into()),
        path_contains: "/rest/api/latest/projects/".into(),
        kind: FaultKind::Status { status: 429 },
        times: Some(1),
    });
    let limited = h.dc_request(reqwest::Method::GET, &h.dc("")).send().await.unwrap();
    assert_eq!(limited.status(), 429);
    assert_eq!(header(limited.headers(), "retry-after"), "1");
    assert_eq!(dc_error_message(limited).await, "Rate limit for this resource has been exceeded");
    assert_eq!(h.dc_request(reqwest::Method::GET, &h.dc("")).send().await.unwrap().status(), 200);

    h.sandbox.inject_fault(Fault {
        method: None,
        path_contains: "/rest/".into(),
        kind: FaultKind::Revoke,
        times: Some(1),
    });
    let revoked = h.dc_request(reqwest::Method::GET, &h.dc("/webhooks")).send().await.unwrap();
    assert_eq!(revoked.status(), 401);
    assert_eq!(dc_error_message(revoked).await, "Authentication failed. Please check your credentials and try again.");
    let statuses: Vec<u16> = h.sandbox.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [429, 200, 401]);
}
