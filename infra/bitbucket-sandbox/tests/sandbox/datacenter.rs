//! Data Center file commits, branches, branch deletion, pull request listing and branch
//! restrictions (both flavors), over real HTTP as the local stack mounts the sandbox.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use bitbucket_sandbox::{ACCESS_TOKEN, READONLY_ACCESS_TOKEN};
use chrono::{DateTime, Duration, Utc};
use domain::webhook::{Flavor, RepoEvent, parse};
use reqwest::multipart::{Form, Part};
use reqwest::{Method, RequestBuilder};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::common::{Harness, dc_error, probe, start};
const CONFLICT_EXCEPTION: &str = "com.atlassian.bitbucket.scm.git.GitCommitConflictException";
const METADATA: &str = "com.atlassian.bitbucket.server.bitbucket-branch:latest-commit-metadata";

impl Harness {
    /// `PUT …/browse/{path}`: `content` as a file part, then the text fields.
    async fn put_file(&self, path: &str, content: Option<&[u8]>, fields: &[(&str, &str)]) -> reqwest::Response {
        self.put_file_request(path, content, fields).send().await.unwrap()
    }
    fn put_file_request(&self, path: &str, content: Option<&[u8]>, fields: &[(&str, &str)]) -> RequestBuilder {
        let mut form = Form::new();
        if let Some(content) = content {
            form = form.part("content", Part::bytes(content.to_vec()).file_name("blob"));
        }
        for (name, value) in fields {
            form = form.text(name.to_string(), value.to_string());
        }
        self.dc_request(Method::PUT, &self.dc(&format!("/browse/{path}"))).multipart(form)
    }
    async fn raw(&self, path: &str, at: &str) -> reqwest::Response {
        self.dc_request(Method::GET, &self.dc(&format!("/raw/{path}?at={at}"))).send().await.unwrap()
    }
    async fn delete_dc_branch(&self, body: Value) -> reqwest::Response {
        let url = self.dc_api("branch-utils/latest", "/branches");
        self.dc_request(Method::DELETE, &url).json(&body).send().await.unwrap()
    }
    async fn branch_exists(&self, name: &str) -> bool {
        let status = self.cloud(Method::GET, &self.repo(&format!("/refs/branches/{name}"))).send().await.unwrap();
        status.status() == 200
    }
}

fn is_hash(value: &Value) -> bool {
    value.as_str().is_some_and(|h| h.len() == 40 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn near(t: DateTime<Utc>, expected: DateTime<Utc>) -> bool {
    (t - expected).num_seconds().abs() < 60
}

fn millis(value: &Value) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(value.as_i64().unwrap_or_else(|| panic!("not millis: {value}"))).unwrap()
}

// ---- a webhook receiver -----------------------------------------------------------------------

#[derive(Clone, Default)]
struct Receiver {
    received: Arc<Mutex<Vec<(String, Bytes)>>>,
}

impl Receiver {
    /// `(X-Event-Key, body)` of every POST so far.
    fn received(&self) -> Vec<(String, Bytes)> {
        self.received.lock().unwrap().clone()
    }
}

async fn receive(State(receiver): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let key = headers.get("x-event-key").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    receiver.received.lock().unwrap().push((key, body));
    StatusCode::OK
}

async fn start_receiver() -> (String, Receiver) {
    let receiver = Receiver::default();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().route("/hook", post(receive)).with_state(receiver.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/hook"), receiver)
}

// ---- browse: file commits ---------------------------------------------------------------------

#[tokio::test]
async fn browse_put_commits_one_file_and_raw_reads_it_back() {
    let h = start().await;
    let (url, receiver) = start_receiver().await;
    h.create_dc_hook(&url, "", &["repo:refs_changed"]).await;
    h.create_hook(&url, None, &["repo:push"]).await;
    let before = h.tip("main").await;
    // Not UTF-8, with a NUL and a CR: the bytes must come back exactly.
    let bytes: &[u8] = b"{\"v\":1}\r\n\x00\xff\xfe binary";

    let response =
        h.put_file("backups/2024/state.json", Some(bytes), &[("branch", "main"), ("message", "Back up")]).await;
    assert_eq!(response.status(), 200, "{:?}", response.text().await);
    let commit: Value = response.json().await.unwrap();
    let id = commit["id"].as_str().unwrap().to_owned();
    assert!(is_hash(&commit["id"]), "{commit}");
    assert_eq!(commit["displayId"], &id[..11]);
    assert_eq!(commit["message"], "Back up");
    assert_eq!(commit["author"], json!({ "name": "Sandbox Developer", "emailAddress": "dev@sandbox.test" }));
    assert_eq!(commit["committer"], commit["author"]);
    assert!(near(millis(&commit["authorTimestamp"]), Utc::now()));
    assert_eq!(commit["committerTimestamp"], commit["authorTimestamp"]);
    assert_eq!(commit["parents"], json!([{ "id": before, "displayId": &before[..11] }]));
    assert_eq!(h.sandbox.commit_count(), 1);
    assert_eq!(h.tip("main").await, id);

    for at in ["main", "refs/heads/main", id.as_str(), &id[..7]] {
        let raw = h.raw("backups/2024/state.json", at).await;
        assert_eq!(raw.status(), 200, "{at}");
        assert_eq!(raw.bytes().await.unwrap(), bytes, "{at}");
    }
    let raw = h.dc_request(Method::GET, &h.dc("/raw/backups/2024/state.json")).send().await.unwrap();
    assert_eq!(raw.bytes().await.unwrap(), bytes, "the default branch without `at`");
    dc_error(h.raw("backups/2024/state.json", &before).await, 404).await;
    dc_error(h.raw("nope.txt", "main").await, 404).await;
    dc_error(h.raw("README.md", "no-such-branch").await, 404).await;

    assert_eq!(h.dc_get(&format!("/commits/{id}")).await, commit);
    assert_eq!(h.dc_get(&format!("/commits/{}", &id[..11])).await, commit);
    dc_error(h.dc_request(Method::GET, &h.dc(&format!("/commits/{}", "0".repeat(40)))).send().await.unwrap(), 404)
        .await;

    // Both flavors' hooks heard of it as a branch update.
    h.sandbox.settle().await;
    let mut received = h.sandbox.sent_webhooks().iter().map(|s| s.event_key.clone()).collect::<Vec<_>>();
    received.sort();
    assert_eq!(received, ["repo:push", "repo:refs_changed"]);
    for (key, body) in receiver.received() {
        let flavor = if key == "repo:push" { Flavor::Cloud } else { Flavor::DataCenter };
        let parsed = parse(flavor, &key, &body).unwrap();
        let expected = RepoEvent::BranchUpdated {
            branch: "main".into(),
            head: Some(id.clone()),
            previous: Some(before.clone()),
            forced: false,
        };
        assert_eq!(parsed.events, [expected], "{key}");
    }
}

#[tokio::test]
async fn browse_put_edits_need_the_current_source_commit() {
    let h = start().await;
    let created = h.put_file("notes.txt", Some(b"one"), &[("branch", "develop")]).await;
    assert_eq!(created.status(), 200);
    let first: Value = created.json().await.unwrap();
    let first_id = first["id"].as_str().unwrap().to_owned();
    assert_eq!(first["message"], "notes.txt edited online with Bitbucket", "the default message");

    // The file exists now: editing it without sourceCommitId is refused.
    let error = dc_error(h.put_file("notes.txt", Some(b"two"), &[("branch", "develop")]).await, 409).await;
    assert_eq!((&error["context"], &error["exceptionName"]), (&Value::Null, &json!(CONFLICT_EXCEPTION)));
    assert!(error["message"].as_str().unwrap().contains("already exists"), "{error}");

    // With the tip (a 7-digit prefix will do), it commits.
    let fields = [("branch", "develop"), ("sourceCommitId", &first_id[..7]), ("message", "Two")];
    let edited = h.put_file("notes.txt", Some(b"two"), &fields).await;
    assert_eq!(edited.status(), 200);
    let second: Value = edited.json().await.unwrap();
    assert_eq!(second["parents"][0]["id"], first_id.as_str());
    assert_eq!(h.raw("notes.txt", "develop").await.bytes().await.unwrap(), "two");
    assert_eq!(h.raw("notes.txt", &first_id).await.bytes().await.unwrap(), "one", "the old commit keeps its tree");

    // The first commit is stale now, for editing and for adding a new file alike.
    for path in ["notes.txt", "other.txt"] {
        let fields = [("branch", "develop"), ("sourceCommitId", first_id.as_str())];
        let error = dc_error(h.put_file(path, Some(b"three"), &fields).await, 409).await;
        let body = json!({ "context": null, "message": error["message"], "exceptionName": CONFLICT_EXCEPTION });
        assert_eq!(error, body);
        assert!(error["message"].as_str().unwrap().contains("has been modified since"), "{error}");
    }
    assert_eq!(h.raw("notes.txt", "develop").await.bytes().await.unwrap(), "two");
    assert_eq!(h.raw("other.txt", "develop").await.status(), 404);
    assert_eq!(h.sandbox.commit_count(), 2);
}

#[tokio::test]
async fn browse_put_creates_a_branch_from_the_source_branch() {
    let h = start().await;
    let develop = h.tip("develop").await;
    let main = h.tip("main").await;

    let fields = [("branch", "backup/one"), ("sourceBranch", "develop"), ("sourceCommitId", develop.as_str())];
    let response = h.put_file("backup.txt", Some(b"b"), &fields).await;
    assert_eq!(response.status(), 200);
    let commit: Value = response.json().await.unwrap();
    assert_eq!(commit["parents"][0]["id"], develop.as_str());
    assert_eq!(h.tip("backup/one").await, commit["id"].as_str().unwrap());
    assert_eq!(h.raw("CHANGELOG.md", "backup/one").await.status(), 200, "develop's tree");
    assert_eq!(h.tip("develop").await, develop, "the source branch stays");

    // Without sourceBranch, from the default branch.
    let response = h.put_file("backup.txt", Some(b"b"), &[("branch", "backup/two")]).await;
    let commit: Value = response.json().await.unwrap();
    assert_eq!(commit["parents"][0]["id"], main.as_str());
    assert_eq!(h.raw("CHANGELOG.md", "backup/two").await.status(), 404);

    // A sourceCommitId that is not the source branch's tip: no branch.
    let fields = [("branch", "backup/three"), ("sourceBranch", "develop"), ("sourceCommitId", main.as_str())];
    dc_error(h.put_file("backup.txt", Some(b"b"), &fields).await, 409).await;
    let fields = [("branch", "backup/three"), ("sourceBranch", "nope")];
    dc_error(h.put_file("backup.txt", Some(b"b"), &fields).await, 404).await;
    assert!(!h.branch_exists("backup/three").await);
    assert_eq!(h.sandbox.commit_count(), 2);
}

#[tokio::test]
async fn browse_put_refuses_bad_requests() {
    let h = start().await;
    let main = h.tip("main").await;
    let branch = [("branch", "main")];
    // An empty segment, and `..` hidden from URL normalisation as `%2F`.
    for path in ["a//b.txt", "a%2F..%2Fb.txt", "%2E%2E%2Fescape.txt", "a%2F.%2Fb.txt"] {
        dc_error(probe(h.put_file_request(path, Some(b"x"), &branch)).send().await.unwrap(), 400).await;
    }
    let empty =
        probe(h.dc_request(Method::PUT, &h.dc("/browse/"))).multipart(Form::new().text("branch", "main")).send();
    dc_error(empty.await.unwrap(), 400).await;
    dc_error(h.put_file("ok.txt", None, &branch).await, 400).await;
    dc_error(h.put_file("ok.txt", Some(b"x"), &[]).await, 400).await;
    dc_error(h.put_file("ok.txt", Some(b"x"), &[("branch", " ")]).await, 400).await;
    dc_error(h.put_file("ok.txt", Some(b"x"), &[("branch", "bad name")]).await, 400).await;
    assert_eq!(h.sandbox.commit_count(), 0);
    assert_eq!(h.tip("main").await, main);

    // Only the Data Center token gets in, and only to SANDBOX/demo.
    let form = Form::new().text("content", "x").text("branch", "main");
    let anonymous = h.http.put(h.dc("/browse/ok.txt")).multipart(form).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let form = Form::new().text("content", "x").text("branch", "main");
    let other = h.url("/rest/api/latest/projects/SANDBOX/repos/other/browse/ok.txt");
    dc_error(h.dc_request(Method::PUT, &other).multipart(form).send().await.unwrap(), 404).await;
    assert_eq!(h.sandbox.commit_count(), 0);

    // `content` as a plain text field works as well as a file part.
    let form = Form::new().text("content", "plain").text("branch", "main");
    let ok = h.dc_request(Method::PUT, &h.dc("/browse/ok.txt")).multipart(form).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(h.raw("ok.txt", "main").await.text().await.unwrap(), "plain");
    assert_eq!(h.sandbox.commit_count(), 1);
}

// ---- branches ---------------------------------------------------------------------------------

#[tokio::test]
async fn branches_page_filter_order_and_details() {
    let h = start().await;
    let names: Vec<String> = (0..30).map(|i| format!("seed/{i:02}")).collect();
    h.sandbox.seed_branches(&names, "develop").unwrap();
    let develop = h.tip("develop").await;

    let mut listed = Vec::new();
    let mut start = Some(0);
    let mut pages = 0;
    while let Some(at) = start {
        let page = h.dc_get(&format!("/branches?limit=10&start={at}")).await;
        pages += 1;
        assert_eq!((&page["limit"], &page["start"]), (&json!(10), &json!(at)));
        for branch in page["values"].as_array().unwrap() {
            assert!(branch.get("metadata").is_none(), "no details unless asked");
            assert_eq!(branch["latestCommit"], branch["latestChangeset"]);
            assert!(is_hash(&branch["latestCommit"]));
            listed.push(branch.clone());
        }
        start = page["nextPageStart"].as_u64();
        assert_eq!(page["isLastPage"], start.is_none());
    }
    assert_eq!(pages, 4, "33 branches by 10");
    let ids: Vec<&str> = listed.iter().map(|b| b["displayId"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 33);
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "alphabetical by default: {ids:?}");
    let seed = listed.iter().find(|b| b["displayId"] == "seed/07").unwrap();
    let expected = json!({
        "id": "refs/heads/seed/07",
        "displayId": "seed/07",
        "type": "BRANCH",
        "latestCommit": develop,
        "latestChangeset": develop,
        "isDefault": false,
    });
    assert_eq!(seed, &expected);
    let defaults: Vec<_> = listed.iter().filter(|b| b["isDefault"] == true).map(|b| &b["displayId"]).collect();
    assert_eq!(defaults, [&json!("main")]);

    let filtered = h.dc_get("/branches?filterText=SEED%2F1&limit=100").await;
    let ids: Vec<_> = filtered["values"].as_array().unwrap().iter().map(|b| b["displayId"].clone()).collect();
    assert_eq!(ids, (10..20).map(|i| json!(format!("seed/{i}"))).collect::<Vec<_>>());

    let detailed = h.dc_get("/branches?filterText=develop&details=true").await;
    let branch = &detailed["values"][0];
    let commit = &branch["metadata"][METADATA];
    assert_eq!(commit["id"], branch["latestCommit"]);
    assert_eq!(commit["message"], "Start the changelog");
    assert_eq!(commit, &h.dc_get(&format!("/commits/{develop}")).await);

    h.sandbox.advance_clock(Duration::minutes(5));
    h.sandbox.push("seed/20", &[("x.txt", "x")], "Newest").await;
    let recent = h.dc_get("/branches?orderBy=MODIFICATION&limit=2").await;
    assert_eq!(recent["values"][0]["displayId"], "seed/20");
    assert_eq!(recent["nextPageStart"], 2);

    for bad in ["orderBy=SIZE", "details=maybe", "limit=0", "start=-1"] {
        let refused = probe(h.dc_request(Method::GET, &h.dc(&format!("/branches?{bad}")))).send().await.unwrap();
        dc_error(refused, 400).await;
    }
}

// ---- branch-utils deletion --------------------------------------------------------------------

#[tokio::test]
async fn branch_utils_delete_checks_then_deletes_with_a_webhook() {
    let h = start().await;
    h.sandbox.create_branch("release/1.0", "main").await.unwrap();
    let topic = h.sandbox.create_branch("topic", "develop").await.unwrap();
    h.sandbox.settle().await;
    let (url, receiver) = start_receiver().await;
    h.create_dc_hook(&url, "", &["repo:refs_changed"]).await;
    h.sandbox.add_branch_restriction("delete", "release/*");

    let error = dc_error(h.delete_dc_branch(json!({ "name": "refs/heads/main" })).await, 400).await;
    assert!(error["message"].as_str().unwrap().contains("default branch"), "{error}");
    dc_error(h.delete_dc_branch(json!({ "name": "main" })).await, 400).await;
    // As the description says: no error for a branch that is not there, 401 for a missing branch
    // permission, 400 for an endPoint the branch is not at.
    assert_eq!(h.delete_dc_branch(json!({ "name": "refs/heads/nope" })).await.status(), 204);
    let refused = dc_error(h.delete_dc_branch(json!({ "name": "refs/heads/release/1.0" })).await, 401).await;
    assert_eq!(refused["exceptionName"], "com.atlassian.bitbucket.AuthorisationException");
    let main = h.tip("main").await;
    dc_error(h.delete_dc_branch(json!({ "name": "topic", "endPoint": main })).await, 400).await;
    dc_error(h.delete_dc_branch(json!({ "nme": "topic" })).await, 400).await;

    // A dry run answers as the deletion would, and deletes nothing.
    let dry = h.delete_dc_branch(json!({ "name": "refs/heads/topic", "endPoint": topic, "dryRun": true })).await;
    assert_eq!(dry.status(), 204);
    assert!(h.branch_exists("topic").await);
    dc_error(h.delete_dc_branch(json!({ "name": "release/1.0", "dryRun": true })).await, 401).await;

    // Nor can anyone without the token.
    let url = h.dc_api("branch-utils/latest", "/branches");
    let anonymous = h.http.delete(&url).json(&json!({ "name": "topic" })).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let cloud = h.http.delete(&url).bearer_auth(ACCESS_TOKEN).json(&json!({ "name": "topic" })).send();
    assert_eq!(cloud.await.unwrap().status(), 401);
    h.sandbox.settle().await;
    assert!(receiver.received().is_empty(), "nothing deleted yet");
    assert!(h.branch_exists("topic").await && h.branch_exists("release/1.0").await);

    let deleted = h.delete_dc_branch(json!({ "name": "refs/heads/topic", "endPoint": &topic[..7] })).await;
    assert_eq!(deleted.status(), 204);
    assert!(!h.branch_exists("topic").await);
    assert_eq!(h.delete_dc_branch(json!({ "name": "topic" })).await.status(), 204, "gone already: no error");
    h.sandbox.settle().await;

    let received = receiver.received();
    assert_eq!(received.len(), 1);
    let (key, body) = &received[0];
    assert_eq!(key, "repo:refs_changed");
    let payload: Value = serde_json::from_slice(body).unwrap();
    let change = &payload["changes"][0];
    assert_eq!((&change["type"], &change["refId"]), (&json!("DELETE"), &json!("refs/heads/topic")));
    let parsed = parse(Flavor::DataCenter, key, body).unwrap();
    assert_eq!(parsed.events, [RepoEvent::BranchDeleted { branch: "topic".into(), previous: Some(topic) }]);
}

// ---- pull requests ----------------------------------------------------------------------------

#[tokio::test]
async fn pull_requests_listing_filters_by_state_and_branch() {
    let h = start().await;
    let merged = h.sandbox.open_pull_request("develop", "main", "Develop").await;
    let declined = h.sandbox.open_pull_request("feature/login", "develop", "Login into develop").await;
    let open = h.sandbox.open_pull_request("feature/login", "main", "Login").await;
    h.sandbox.advance_clock(Duration::hours(1));
    h.sandbox.merge_pull_request(merged).await.unwrap();
    h.sandbox.decline_pull_request(declined).await.unwrap();

    let ids = |page: &Value| -> Vec<u64> {
        page["values"].as_array().unwrap().iter().map(|p| p["id"].as_u64().unwrap()).collect()
    };
    let default = h.dc_get("/pull-requests").await;
    assert_eq!(ids(&default), [open]);
    let pr = &default["values"][0];
    assert_eq!(
        (&pr["title"], &pr["state"], &pr["open"], &pr["closed"]),
        (&json!("Login"), &json!("OPEN"), &json!(true), &json!(false))
    );
    assert!(pr.get("closedDate").is_none());
    assert_eq!(pr["fromRef"]["id"], "refs/heads/feature/login");
    assert_eq!(pr["fromRef"]["displayId"], "feature/login");
    assert_eq!(pr["fromRef"]["latestCommit"], h.tip("feature/login").await.as_str());
    assert_eq!((&pr["toRef"]["id"], &pr["toRef"]["displayId"]), (&json!("refs/heads/main"), &json!("main")));
    assert!(near(millis(&pr["createdDate"]), Utc::now()));

    assert_eq!(ids(&h.dc_get("/pull-requests?state=ALL").await), [open, declined, merged], "newest first");
    assert_eq!(ids(&h.dc_get("/pull-requests?state=ALL&order=OLDEST").await), [merged, declined, open]);
    let merged_page = h.dc_get("/pull-requests?state=merged").await;
    assert_eq!(ids(&merged_page), [merged]);
    let pr = &merged_page["values"][0];
    assert_eq!((&pr["state"], &pr["open"], &pr["closed"]), (&json!("MERGED"), &json!(false), &json!(true)));
    assert!(near(millis(&pr["closedDate"]), Utc::now() + Duration::hours(1)));
    assert_eq!(pr["updatedDate"], pr["closedDate"]);
    assert_eq!(ids(&h.dc_get("/pull-requests?state=DECLINED").await), [declined]);

    let outgoing = "/pull-requests?state=ALL&at=refs/heads/feature/login&direction=OUTGOING";
    assert_eq!(ids(&h.dc_get(outgoing).await), [open, declined]);
    assert_eq!(
        ids(&h.dc_get("/pull-requests?state=ALL&at=refs/heads/main").await),
        [open, merged],
        "INCOMING by default"
    );
    assert_eq!(ids(&h.dc_get("/pull-requests?state=ALL&at=develop&direction=INCOMING").await), [declined]);
    assert_eq!(ids(&h.dc_get("/pull-requests?at=develop&direction=OUTGOING").await), Vec::<u64>::new());

    let first = h.dc_get("/pull-requests?state=ALL&limit=1").await;
    assert_eq!((ids(&first), &first["nextPageStart"]), (vec![open], &json!(1)));
    let last = h.dc_get("/pull-requests?state=ALL&limit=1&start=2").await;
    assert_eq!((ids(&last), &last["isLastPage"]), (vec![merged], &json!(true)));

    for bad in ["state=WHATEVER", "direction=SIDEWAYS", "order=RANDOM"] {
        let response = h.dc_request(Method::GET, &h.dc(&format!("/pull-requests?{bad}"))).send().await.unwrap();
        dc_error(response, 400).await;
    }
}

// ---- restrictions -----------------------------------------------------------------------------

#[tokio::test]
async fn branch_restrictions_show_on_both_flavors() {
    let h = start().await;
    assert_eq!(h.sandbox.add_branch_restriction("delete", "release/*"), 1);
    let admin = h.http.post(h.url("/_admin/branch-restrictions"));
    let added = admin.json(&json!({ "kind": "force", "pattern": "main" })).send().await.unwrap();
    assert_eq!(added.status(), 201);
    assert_eq!(added.json::<Value>().await.unwrap(), json!({ "id": 2 }));
    assert_eq!(h.sandbox.add_branch_restriction("delete", "hotfix"), 3);
    assert_eq!(h.sandbox.add_branch_restriction("require_passing_builds_to_merge", "*"), 4);
    let bad = h.http.post(h.url("/_admin/branch-restrictions")).json(&json!({ "kind": "nope", "pattern": "x" }));
    let bad = bad.send().await.unwrap();
    assert_eq!(bad.status(), 400);
    assert_eq!(bad.json::<Value>().await.unwrap()["error"]["code"], "bad_request");

    // Cloud.
    let deletes = h.cloud_get(&h.repo("/branch-restrictions?kind=delete")).await;
    assert_eq!(deletes["size"], 2);
    let mut first = deletes["values"][0].clone();
    assert_eq!(first["links"]["self"]["href"], h.repo("/branch-restrictions/1"));
    first.as_object_mut().unwrap().remove("links");
    let expected = json!({
        "type": "branchrestriction",
        "id": 1,
        "kind": "delete",
        "branch_match_kind": "glob",
        "pattern": "release/*",
        "users": [],
        "groups": [],
    });
    assert_eq!(first, expected);
    assert_eq!(deletes["values"][1]["pattern"], "hotfix");
    assert_eq!(h.cloud_get(&h.repo("/branch-restrictions")).await["size"], 4);
    let single = h.cloud_get(&h.repo("/branch-restrictions/2")).await;
    assert_eq!((&single["kind"], &single["pattern"]), (&json!("force"), &json!("main")));
    // `repository:admin`, which `repository` does not give.
    let readonly = h.http.get(h.repo("/branch-restrictions")).bearer_auth(READONLY_ACCESS_TOKEN).send().await.unwrap();
    assert_eq!(readonly.status(), 403);
    assert_eq!(readonly.json::<Value>().await.unwrap()["error"]["detail"]["required"], json!(["repository:admin"]));
    assert_eq!(h.cloud(Method::GET, &h.repo("/branch-restrictions/9")).send().await.unwrap().status(), 404);
    assert_eq!(h.http.get(h.repo("/branch-restrictions")).send().await.unwrap().status(), 401);

    // Data Center: the same list, Cloud-only kinds left out.
    let dc = |query: &str| {
        let url = h.dc_api("branch-permissions/2.0", &format!("/restrictions{query}"));
        h.dc_request(Method::GET, &url).send()
    };
    let response = dc("?type=no-deletes").await.unwrap();
    assert_eq!(response.status(), 200);
    let no_deletes: Value = response.json().await.unwrap();
    assert_eq!((&no_deletes["size"], &no_deletes["isLastPage"]), (&json!(2), &json!(true)));
    let pattern = json!({
        "id": 1,
        "type": "no-deletes",
        "matcher": {
            "id": "release/*",
            "displayId": "release/*",
            "type": { "id": "PATTERN", "name": "Pattern" },
            "active": true,
        },
        "users": [],
        "groups": [],
        "accessKeys": [],
    });
    assert_eq!(no_deletes["values"][0], pattern);
    let exact = &no_deletes["values"][1];
    assert_eq!(
        exact["matcher"],
        json!({
            "id": "refs/heads/hotfix",
            "displayId": "hotfix",
            "type": { "id": "BRANCH", "name": "Branch" },
            "active": true,
        })
    );
    let all: Value = dc("").await.unwrap().json().await.unwrap();
    let types: Vec<_> =
        all["values"].as_array().unwrap().iter().map(|r| (r["id"].clone(), r["type"].clone())).collect();
    assert_eq!(
        types,
        [(json!(1), json!("no-deletes")), (json!(2), json!("fast-forward-only")), (json!(3), json!("no-deletes"))]
    );
    let latest = h.dc_api("branch-permissions/latest", "/restrictions?matcherType=BRANCH&limit=1");
    let page: Value = h.dc_request(Method::GET, &latest).send().await.unwrap().json().await.unwrap();
    assert_eq!((&page["values"][0]["id"], &page["nextPageStart"]), (&json!(2), &json!(1)));
    let refused =
        probe(h.dc_request(Method::GET, &h.dc_api("branch-permissions/2.0", "/restrictions?type=no-such-type")));
    dc_error(refused.send().await.unwrap(), 400).await;
    let anonymous = h.http.get(h.dc_api("branch-permissions/2.0", "/restrictions")).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
}

#[tokio::test]
async fn cloud_refuses_to_delete_a_restricted_branch() {
    let h = start().await;
    h.sandbox.create_branch("release/1.0", "main").await.unwrap();
    h.sandbox.create_branch("release-notes", "main").await.unwrap();
    h.sandbox.add_branch_restriction("delete", "release/*");
    let delete = |name: &str| h.http.delete(h.repo(&format!("/refs/branches/{name}"))).bearer_auth(ACCESS_TOKEN).send();

    let refused = delete("release/1.0").await.unwrap();
    assert_eq!(refused.status(), 403);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["type"], "error");
    assert!(body["error"]["message"].as_str().unwrap().contains("restriction"), "{body}");
    assert!(h.branch_exists("release/1.0").await);
    assert_eq!(delete("main").await.unwrap().status(), 400);
    assert_eq!(delete("nope").await.unwrap().status(), 404);
    assert_eq!(delete("release-notes").await.unwrap().status(), 204, "not matched by release/*");

    // A restriction on another kind does not stop deletions.
    h.sandbox.add_branch_restriction("force", "develop");
    assert_eq!(delete("develop").await.unwrap().status(), 204);

    // The sandbox's own drivers are not the API: they may delete it (a missed deletion, say).
    h.sandbox.delete_branch_quietly("release/1.0").unwrap();
    assert!(!h.branch_exists("release/1.0").await);
}

// ---- quiet helpers ----------------------------------------------------------------------------

#[tokio::test]
async fn seeded_branches_and_quiet_deletions_send_no_webhooks() {
    let h = start().await;
    let (url, receiver) = start_receiver().await;
    h.create_dc_hook(&url, "", &["repo:refs_changed"]).await;
    h.create_hook(&url, None, &["repo:push"]).await;

    let names: Vec<String> = (0..250).map(|i| format!("bulk/{i:03}")).collect();
    h.sandbox.seed_branches(&names, "main").unwrap();
    h.sandbox.delete_branch_quietly("bulk/007").unwrap();
    h.sandbox.delete_branch_quietly("develop").unwrap();
    assert!(h.sandbox.delete_branch_quietly("main").is_err());
    assert!(h.sandbox.delete_branch_quietly("bulk/007").is_err());
    assert!(h.sandbox.seed_branches(&["fresh".to_owned(), "bulk/001".to_owned()], "main").is_err());
    assert!(h.sandbox.seed_branches(&["fresh".to_owned()], "no-such-branch").is_err());
    h.sandbox.settle().await;
    assert!(receiver.received().is_empty());
    assert!(h.sandbox.sent_webhooks().is_empty());

    // 250 seeded + main + feature/login − bulk/007, paged by 100.
    let main = h.tip("main").await;
    let mut names = Vec::new();
    let mut url = Some(h.repo("/refs/branches?pagelen=100"));
    while let Some(next) = url {
        let page = h.cloud_get(&next).await;
        assert_eq!(page["size"], 251);
        for branch in page["values"].as_array().unwrap() {
            let name = branch["name"].as_str().unwrap().to_owned();
            if name.starts_with("bulk/") {
                assert_eq!(branch["target"]["hash"], main.as_str());
            }
            names.push(name);
        }
        url = page["next"].as_str().map(str::to_owned);
    }
    assert_eq!(names.len(), 251);
    assert!(!names.iter().any(|n| n == "fresh" || n == "bulk/007" || n == "develop"));

    // The hooks do work: a branch change through the sandbox reaches both.
    h.sandbox.create_branch("loud", "main").await.unwrap();
    h.sandbox.settle().await;
    let mut keys: Vec<_> = receiver.received().into_iter().map(|(key, _)| key).collect();
    keys.sort();
    assert_eq!(keys, ["repo:push", "repo:refs_changed"]);
}

// ---- the clock --------------------------------------------------------------------------------

#[tokio::test]
async fn an_advanced_clock_ages_commits_and_pull_requests() {
    let h = start().await;
    let start = Utc::now();
    let pr = h.sandbox.open_pull_request("develop", "main", "Dev").await;
    h.sandbox.advance_clock(Duration::days(30));
    h.sandbox.push("aged", &[("a.txt", "a")], "Thirty days on").await;
    h.sandbox.merge_pull_request(pr).await.unwrap();
    let later = start + Duration::days(30);
    assert!(near(h.sandbox.now(), later));

    let date = |branch: &Value| {
        DateTime::parse_from_rfc3339(branch["target"]["date"].as_str().unwrap()).unwrap().with_timezone(&Utc)
    };
    let listing = h.cloud_get(&h.repo("/refs/branches?pagelen=100")).await;
    let branches = listing["values"].as_array().unwrap();
    let find = |name: &str| branches.iter().find(|b| b["name"] == name).unwrap();
    assert!(near(date(find("aged")), later), "{}", find("aged"));
    assert!(near(date(find("main")), start), "{}", find("main"));

    let dc = h.dc_get("/branches?details=true&filterText=aged").await;
    assert!(near(millis(&dc["values"][0]["metadata"][METADATA]["authorTimestamp"]), later));

    let pull = h.cloud_get(&h.repo(&format!("/pullrequests/{pr}"))).await;
    assert_eq!(pull["state"], "MERGED");
    let at = |field: &str| DateTime::parse_from_rfc3339(pull[field].as_str().unwrap()).unwrap().with_timezone(&Utc);
    assert!(near(at("created_on"), start));
    assert!(near(at("updated_on"), later));
}

// ---- routes clients use -------------------------------------------------------------------------

#[tokio::test]
async fn rest_api_1_0_is_served_as_latest() {
    let h = start().await;
    for rest in ["", "/default-branch", "/branches", "/pull-requests", "/webhooks", "/raw/README.md"] {
        let latest = h.dc_request(Method::GET, &h.dc(rest)).send().await.unwrap();
        let one = h.dc_request(Method::GET, &h.dc_api("api/1.0", rest)).send().await.unwrap();
        assert_eq!((one.status(), latest.status()), (StatusCode::OK, StatusCode::OK), "{rest}");
        assert_eq!(one.bytes().await.unwrap(), latest.bytes().await.unwrap(), "{rest}");
    }
    let form = Form::new().text("content", "one").text("branch", "main");
    let put = h.dc_request(Method::PUT, &h.dc_api("api/1.0", "/browse/one.txt")).multipart(form).send().await;
    assert_eq!(put.unwrap().status(), 200);
    assert_eq!(h.raw("one.txt", "main").await.text().await.unwrap(), "one");
}

#[tokio::test]
async fn default_branch_the_deprecated_way() {
    let h = start().await;
    let main = h.tip("main").await;
    let branch = h.dc_get("/branches/default").await;
    let expected = json!({
        "id": "refs/heads/main",
        "displayId": "main",
        "type": "BRANCH",
        "latestCommit": main,
        "latestChangeset": main,
        "isDefault": true,
    });
    assert_eq!(branch, expected);
}

#[tokio::test]
async fn branches_are_created_through_the_api_and_branch_utils() {
    let h = start().await;
    let (url, receiver) = start_receiver().await;
    h.create_dc_hook(&url, "", &["repo:refs_changed"]).await;
    let develop = h.tip("develop").await;

    let created =
        h.dc_request(Method::POST, &h.dc("/branches")).json(&json!({ "name": "one", "startPoint": "develop" }));
    let created = created.send().await.unwrap();
    assert_eq!(created.status(), 200, "createBranchForRepository answers 200");
    let created: Value = created.json().await.unwrap();
    assert_eq!((&created["id"], &created["latestCommit"]), (&json!("refs/heads/one"), &json!(develop)));

    let utils = h.dc_api("branch-utils/latest", "/branches");
    let body = json!({ "name": "refs/heads/two", "startPoint": &develop[..12] });
    let created = h.dc_request(Method::POST, &utils).json(&body).send().await.unwrap();
    assert_eq!(created.status(), 201, "createBranch answers 201");
    assert_eq!(created.json::<Value>().await.unwrap()["displayId"], "two");
    assert_eq!(h.tip("two").await, develop);

    // branch-utils: 400 for a name that exists, 409 for one overlapping another's.
    dc_error(
        h.dc_request(Method::POST, &utils).json(&json!({ "name": "two", "startPoint": "main" })).send().await.unwrap(),
        400,
    )
    .await;
    dc_error(
        h.dc_request(Method::POST, &utils)
            .json(&json!({ "name": "two/x", "startPoint": "main" }))
            .send()
            .await
            .unwrap(),
        409,
    )
    .await;
    dc_error(
        probe(h.dc_request(Method::POST, &utils))
            .json(&json!({ "name": "three", "startPoint": "nope" }))
            .send()
            .await
            .unwrap(),
        404,
    )
    .await;
    dc_error(h.dc_request(Method::POST, &utils).json(&json!({ "name": "three" })).send().await.unwrap(), 400).await;
    assert!(!h.branch_exists("three").await);

    h.sandbox.settle().await;
    let added: Vec<String> = receiver
        .received()
        .iter()
        .map(|(_, body)| {
            serde_json::from_slice::<Value>(body).unwrap()["changes"][0]["ref"]["displayId"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(added.len(), 2);
    assert!(added.contains(&"one".to_owned()) && added.contains(&"two".to_owned()), "{added:?}");
}

#[tokio::test]
async fn unknown_data_center_routes_answer_in_data_center_envelope() {
    let h = start().await;
    let unknown = probe(h.dc_request(Method::GET, &h.dc("/nothing-here"))).send().await.unwrap();
    dc_error(unknown, 404).await;
    let wrong = probe(h.dc_request(Method::PATCH, &h.dc("/webhooks"))).send().await.unwrap();
    dc_error(wrong, 405).await;
    let plugin = probe(h.dc_request(Method::GET, &h.url("/rest/nope/1.0/x"))).send().await.unwrap();
    dc_error(plugin, 404).await;
    // Cloud's stay Cloud's.
    let cloud = probe(h.get(&h.url("/2.0/nothing"))).send().await.unwrap();
    assert_eq!(cloud.status(), 404);
    assert_eq!(cloud.json::<Value>().await.unwrap()["type"], "error");
}
