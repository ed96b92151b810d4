//! The backup committer end to end on the local stack and its sandbox Bitbucket, over real HTTP:
//! exact committed bytes, unchanged snapshots writing nothing, the Bitbucket requests a snapshot
//! costs, ordering under concurrency and lateness, the 409 path, retries, every refusal.

use std::time::Duration;

use bitbucket_sandbox::{self as sb, Fault, FaultKind};
use cross_function_tests::stack::{Stack, stack};
use local_stack::SANDBOX_ID;
use serde_json::{Value, json};

const TARGETS: &str = "/integrations/sandbox/backup-targets";

fn target(name: &str) -> String {
    format!("{TARGETS}/{name}")
}

fn snapshots(name: &str) -> String {
    format!("{TARGETS}/{name}/snapshots")
}

/// A Postman-like collection whose `version` field tells which snapshot a commit holds.
fn collection(version: u64) -> Value {
    json!({
        "info": {"name": "Orders API", "schema": "https://schema.getpostman.com/json/collection/v2.1.0/collection.json"},
        "item": [{"name": "List orders", "request": {"method": "GET", "url": "{{base}}/orders"}}],
        "version": version,
    })
}

/// Reads through the sandbox's Cloud API, as any Bitbucket client would.
async fn sandbox_get(s: &Stack, path: &str) -> (u16, Vec<u8>) {
    let url = format!("{}/sandbox/bitbucket/2.0/repositories/sandbox/demo{path}", s.running.base_url);
    let response = s.http.get(url).basic_auth(sb::API_TOKEN_EMAIL, Some(sb::API_TOKEN)).send().await.unwrap();
    (response.status().as_u16(), response.bytes().await.unwrap().to_vec())
}

async fn file_at(s: &Stack, rev: &str, path: &str) -> Option<Vec<u8>> {
    let (status, body) = sandbox_get(s, &format!("/src/{rev}/{path}")).await;
    (status == 200).then_some(body)
}

async fn tip(s: &Stack, branch: &str) -> String {
    let (status, body) = sandbox_get(s, &format!("/refs/branches/{branch}")).await;
    assert_eq!(status, 200, "branch {branch}");
    let branch: Value = serde_json::from_slice(&body).unwrap();
    branch["target"]["hash"].as_str().unwrap().to_owned()
}

async fn parent_of(s: &Stack, hash: &str) -> Option<String> {
    let (_, body) = sandbox_get(s, &format!("/commit/{hash}")).await;
    let commit: Value = serde_json::from_slice(&body).unwrap();
    commit["parents"][0]["hash"].as_str().map(str::to_owned)
}

async fn define(s: &Stack, name: &str, spec: Value) {
    let (status, answer) = s.put(&target(name), spec).await;
    assert_eq!(status, 201, "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_document_posted_twice_is_one_commit_of_canonical_json() {
    let s = stack("backup").await;
    define(&s, "orders", json!({"directory": "/collections/", "filename": "orders.json", "branch": "main"})).await;
    let before = s.running.sandbox.commit_count();
    s.running.sandbox.clear_requests();

    // Keys out of order, compact: committed sorted, indented by two spaces, with a newline.
    let body = json!({"document": {"b": [1, {"y": true, "x": null}], "a": "é"}, "message": "First backup"});
    let (status, first) = s.post_json(&snapshots("orders"), body).await;
    assert_eq!(status, 201, "{first}");
    assert_eq!(first["changed"], true);
    // Without contention a changed snapshot costs two requests: the tip read and the commit.
    let requests: Vec<String> =
        s.running.sandbox.requests().iter().map(|r| format!("{} {}", r.method, r.path)).collect();
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert!(requests[0].starts_with("GET ") && requests[0].ends_with("/refs/branches/main"), "{requests:?}");
    assert!(requests[1].starts_with("POST ") && requests[1].ends_with("/src"), "{requests:?}");
    let commit = first["commit"].as_str().unwrap();
    let expected =
        "{\n  \"a\": \"é\",\n  \"b\": [\n    1,\n    {\n      \"x\": null,\n      \"y\": true\n    }\n  ]\n}\n";
    assert_eq!(file_at(&s, commit, "collections/orders.json").await.as_deref(), Some(expected.as_bytes()));
    assert_eq!(first["size"], expected.len());
    assert_eq!(first["path"], "collections/orders.json");
    assert_eq!(tip(&s, "main").await, commit);
    assert!(first["url"].as_str().unwrap().ends_with(&format!("/sandbox/demo/commits/{commit}")), "{first}");
    let (_, raw) = sandbox_get(&s, &format!("/commit/{commit}")).await;
    assert_eq!(serde_json::from_slice::<Value>(&raw).unwrap()["message"], "First backup");

    // The same document, keys reordered: unchanged, and not a single Bitbucket request.
    s.running.sandbox.clear_requests();
    let (status, second) =
        s.post_json(&snapshots("orders"), json!({"document": {"a": "é", "b": [1, {"x": null, "y": true}]}})).await;
    assert_eq!(status, 200, "{second}");
    assert_eq!((second["changed"].clone(), second["commit"].clone()), (json!(false), json!(commit)));
    assert!(s.running.sandbox.requests().is_empty(), "{:?}", s.running.sandbox.requests());
    assert_eq!(s.running.sandbox.commit_count(), before + 1);

    // A change commits again, on top of the first; history lists both, newest first.
    let (status, third) = s.post_json(&snapshots("orders"), json!({"document": {"a": "changed"}})).await;
    assert_eq!(status, 201, "{third}");
    assert_eq!(parent_of(&s, third["commit"].as_str().unwrap()).await.as_deref(), Some(commit));
    let (status, history) = s.get(&format!("{}/history", target("orders"))).await;
    assert_eq!(status, 200);
    let entries = history["history"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{history}");
    assert_eq!(entries[0]["commit"], third["commit"]);
    assert_eq!(entries[1]["commit"], json!(commit));
    assert_eq!(entries[1]["sha256"], first["sha256"]);
    assert_eq!(entries[1]["size"], expected.len());
    assert_eq!(entries[1]["message"], "First backup");
    assert!(entries[0]["committed_at"].is_string() && entries[0]["url"].is_string());
    assert_eq!(entries[0]["message"], "Back up orders.json (version 3)");
    // Paged with a cursor.
    let (_, page) = s.get(&format!("{}/history?limit=1", target("orders"))).await;
    assert_eq!(page["history"][0]["commit"], third["commit"]);
    let cursor = page["next_cursor"].as_str().unwrap();
    let (_, page) = s.get(&format!("{}/history?limit=1&cursor={cursor}", target("orders"))).await;
    assert_eq!(page["history"][0]["commit"], json!(commit));

    let (status, shown) = s.get(&target("orders")).await;
    assert_eq!(status, 200);
    assert_eq!(shown["last_commit"]["commit"], third["commit"]);
    assert_eq!(shown["path"], "collections/orders.json");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_missing_branch_is_created_from_the_main_branch() {
    let s = stack("backup").await;
    let main = tip(&s, "main").await;
    define(
        &s,
        "api",
        json!({"directory": "postman", "filename": "api.json", "branch": "backups/postman",
               "author": "Backup Bot <bot@example.com>", "message": "Backup {target} v{version}"}),
    )
    .await;
    let (status, made) = s.post_json(&snapshots("api"), json!({"document": collection(7), "version": 7})).await;
    assert_eq!(status, 201, "{made}");
    let commit = made["commit"].as_str().unwrap();
    assert_eq!(tip(&s, "backups/postman").await, commit);
    assert_eq!(parent_of(&s, commit).await.as_deref(), Some(main.as_str()));
    assert_eq!(tip(&s, "main").await, main, "the main branch does not move");
    let (_, raw) = sandbox_get(&s, &format!("/commit/{commit}")).await;
    let raw: Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(raw["message"], "Backup api v7");
    assert_eq!(raw["author"]["raw"], "Backup Bot <bot@example.com>");
    s.stop().await;
}

/// Follows first parents from the branch tip while the backed-up file exists.
async fn versions_on_branch(s: &Stack, branch: &str, path: &str) -> Vec<u64> {
    let mut versions = Vec::new();
    let mut at = Some(tip(s, branch).await);
    while let Some(hash) = at {
        let Some(bytes) = file_at(s, &hash, path).await else { break };
        let doc: Value = serde_json::from_slice(&bytes).expect("every commit holds one whole JSON document");
        assert_eq!(bytes, canonical(&doc), "every commit is canonical");
        versions.push(doc["version"].as_u64().unwrap());
        at = parent_of(s, &hash).await;
    }
    versions.reverse();
    versions
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_snapshots_end_with_the_newest_and_lose_nothing() {
    let s = stack("backup").await;
    define(&s, "race", json!({"directory": "race", "filename": "c.json", "branch": "race"})).await;
    let before = s.running.sandbox.commit_count();
    // All at once, in shuffled order.
    let mut order: Vec<u64> = (1..=20).collect();
    order.sort_by_key(|v| (v * 7919) % 23);
    let mut tasks = Vec::new();
    for version in order {
        let (http, url, token) = (s.http.clone(), s.url(&snapshots("race")), s.token.clone());
        tasks.push(tokio::spawn(async move {
            let body = json!({"document": collection(version), "version": version});
            let response = http.post(url).bearer_auth(token).json(&body).send().await.unwrap();
            (version, response.status().as_u16(), response.json::<Value>().await.unwrap())
        }));
    }
    let mut committed = Vec::new();
    for task in tasks {
        let (version, status, answer) = task.await.unwrap();
        match status {
            201 => committed.push(version),
            200 => assert_eq!(answer["superseded"], true, "{version}: {answer}"),
            other => panic!("version {version}: {other} {answer}"),
        }
    }
    committed.sort_unstable();
    assert!(committed.contains(&20), "the newest snapshot is always committed: {committed:?}");
    // Bitbucket holds the newest; the branch is a chain of whole documents in increasing
    // version order, exactly the commits that answered 201.
    let versions = versions_on_branch(&s, "race", "race/c.json").await;
    assert_eq!(versions.last(), Some(&20));
    assert_eq!(versions, committed, "commits on the branch are the 201 answers, in version order");
    assert_eq!(s.running.sandbox.commit_count() - before, committed.len());
    let (_, history) = s.get(&format!("{}/history?limit=100", target("race"))).await;
    assert_eq!(history["history"].as_array().unwrap().len(), committed.len());

    // Late: an older version than the committed one never overwrites it.
    let (status, late) = s.post_json(&snapshots("race"), json!({"document": collection(3), "version": 3})).await;
    assert_eq!((status, late["superseded"].clone(), late["latest_version"].clone()), (200, json!(true), json!(20)));
    // A repeat of the committed snapshot (a client retry) is simply unchanged.
    let (status, again) = s.post_json(&snapshots("race"), json!({"document": collection(20), "version": 20})).await;
    assert_eq!((status, again["changed"].clone(), again.get("superseded")), (200, json!(false), None), "{again}");
    // Without a version a snapshot counts as newer than everything seen.
    let (status, next) = s.post_json(&snapshots("race"), json!({"document": collection(21)})).await;
    assert_eq!((status, next["version"].clone()), (201, json!(21)), "{next}");
    assert_eq!(versions_on_branch(&s, "race", "race/c.json").await.last(), Some(&21));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_branch_that_moves_mid_commit_is_re_read_and_retried() {
    let s = stack("backup").await;
    define(&s, "moving", json!({"filename": "m.json", "branch": "develop"})).await;
    // Hold the commit request for a moment and push to the branch meanwhile: a real 409.
    s.running.sandbox.inject_fault(Fault {
        method: Some("POST".into()),
        path_contains: "/src".into(),
        kind: FaultKind::Latency { millis: 800 },
        times: Some(1),
    });
    let (http, url, token) = (s.http.clone(), s.url(&snapshots("moving")), s.token.clone());
    let task = tokio::spawn(async move {
        let response =
            http.post(url).bearer_auth(token).json(&json!({"document": collection(1)})).send().await.unwrap();
        (response.status().as_u16(), response.json::<Value>().await.unwrap())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pushed = s.running.sandbox.push("develop", &[("other.txt", "someone else\n")], "Concurrent work").await;
    let (status, answer) = task.await.unwrap();
    assert_eq!(status, 201, "{answer}");
    let commit = answer["commit"].as_str().unwrap();
    assert_eq!(parent_of(&s, commit).await.as_deref(), Some(pushed.as_str()), "committed on top of the new tip");
    assert_eq!(file_at(&s, commit, "other.txt").await.as_deref(), Some(&b"someone else\n"[..]), "nothing lost");
    let conflicts = s.running.sandbox.requests().iter().filter(|r| r.path.ends_with("/src") && r.status == 409).count();
    assert_eq!(conflicts, 1);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rate_limits_and_server_errors_are_retried() {
    let s = stack("backup").await;
    define(&s, "flaky", json!({"filename": "f.json", "branch": "main"})).await;
    s.running.sandbox.clear_requests();
    for (path, status) in [("/refs/branches/", 503), ("/src", 429)] {
        s.running.sandbox.inject_fault(Fault {
            method: None,
            path_contains: path.into(),
            kind: FaultKind::Status { status },
            times: Some(1),
        });
    }
    let (status, answer) = s.post_json(&snapshots("flaky"), json!({"document": collection(1)})).await;
    assert_eq!(status, 201, "{answer}");
    let statuses: Vec<u16> = s.running.sandbox.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![503, 200, 429, 201]);
    assert!(file_at(&s, answer["commit"].as_str().unwrap(), "f.json").await.is_some());

    // A Bitbucket that stays down: 503 to the caller, nothing recorded as committed.
    s.running.sandbox.inject_fault(Fault {
        method: None,
        path_contains: "/src".into(),
        kind: FaultKind::Status { status: 503 },
        times: None,
    });
    let (status, failed) = s.post_json(&snapshots("flaky"), json!({"document": collection(2)})).await;
    assert_eq!((status, failed["error"]["code"].as_str()), (503, Some("unavailable")), "{failed}");
    s.running.sandbox.clear_faults();
    let (_, shown) = s.get(&target("flaky")).await;
    assert_eq!(shown["last_commit"]["commit"], answer["commit"]);
    // The next attempt is not blocked by the failed one.
    let (status, _) = s.post_json(&snapshots("flaky"), json!({"document": collection(2)})).await;
    assert_eq!(status, 201);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_requests_are_refused_and_commit_nothing() {
    let s = stack("backup").await;
    define(&s, "ok", json!({"filename": "ok.json", "branch": "main"})).await;
    let commits = s.running.sandbox.commit_count();

    for (spec, field) in [
        (json!({"directory": "../../etc", "filename": "a.json", "branch": "main"}), "directory"),
        (json!({"directory": "a/./b", "filename": "a.json", "branch": "main"}), "directory"),
        (json!({"filename": "../a.json", "branch": "main"}), "filename"),
        (json!({"filename": "..", "branch": "main"}), "filename"),
        (json!({"filename": "a.json", "branch": "bad branch"}), "branch"),
        (json!({"filename": "a.json", "branch": "main", "message": "{nope}"}), "message"),
        (json!({"filename": "a.json", "branch": "main", "author": "nobody"}), "author"),
    ] {
        let (status, answer) = s.put(&target("bad"), spec.clone()).await;
        assert_eq!(status, 400, "{spec}: {answer}");
        assert!(answer["error"]["message"].as_str().unwrap().starts_with(field), "{spec}: {answer}");
    }
    let (status, answer) = s.put(&target("bad"), json!({"filename": "a.json"})).await;
    assert_eq!(status, 400, "{answer}");
    assert!(answer["error"]["message"].as_str().unwrap().contains("branch"), "{answer}");
    let (status, _) = s.put(&target("a%20b"), json!({"filename": "a.json", "branch": "main"})).await;
    assert_eq!(status, 400);
    let (status, _) = s.get(&target("bad")).await;
    assert_eq!(status, 404, "no target was stored");

    let post_raw = |content_type: &'static str, body: Vec<u8>| {
        let request =
            s.http.post(s.url(&snapshots("ok"))).bearer_auth(&s.token).header("content-type", content_type).body(body);
        async move {
            let response = request.send().await.unwrap();
            (response.status().as_u16(), response.json::<Value>().await.unwrap())
        }
    };
    let (status, answer) = post_raw("text/plain", b"{}".to_vec()).await;
    assert_eq!(status, 415, "{answer}");
    let (status, answer) = post_raw("application/json", b"{\"document\": {\"a\": ".to_vec()).await;
    assert_eq!(status, 400, "{answer}");
    let (status, answer) = post_raw("application/json", b"{\"document\": \"text\"}".to_vec()).await;
    assert_eq!((status, answer["error"]["message"].as_str().unwrap().starts_with("document")), (400, true));
    let (status, answer) = post_raw("application/json", b"{\"version\": 1}".to_vec()).await;
    assert_eq!(status, 400, "{answer}");
    let (status, answer) = post_raw("application/json", b"{\"document\": {}, \"extra\": 1}".to_vec()).await;
    assert_eq!(status, 400, "{answer}");
    let (status, answer) = post_raw("application/json", b"{\"document\": {}, \"version\": -1}".to_vec()).await;
    assert_eq!(status, 400, "{answer}");
    // Above 2^53 - 1 a version is refused: "one more than any seen" must always exist.
    let (status, answer) = s.post_json(&snapshots("ok"), json!({"document": {}, "version": 1_u64 << 53})).await;
    assert_eq!((status, answer["error"]["message"].as_str().map(|m| m.starts_with("version"))), (400, Some(true)));
    // Over the documented limit: refused before parsing.
    let big = format!("{{\"document\": {{\"blob\": \"{}\"}}}}", "x".repeat(5 * 1024 * 1024));
    let (status, answer) = post_raw("application/json", big.into_bytes()).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (413, Some("payload_too_large")), "{answer}");
    // Under the request limit but over the document limit once canonical (indentation grows it).
    let wide: Vec<Value> = (0..900_000).map(|i| json!(i % 10)).collect();
    let (status, answer) = s.post_json(&snapshots("ok"), json!({"document": wide})).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (413, Some("payload_too_large")), "{answer}");

    let (status, _) = s.post_json(&snapshots("missing"), json!({"document": {}})).await;
    assert_eq!(status, 404);
    let (status, _) = s.post_json("/integrations/nope/backup-targets/ok/snapshots", json!({"document": {}})).await;
    assert_eq!(status, 404);

    // A disconnected, then archived, integration backs nothing up.
    let (status, _) = s.post(&format!("/integrations/{SANDBOX_ID}/disconnect")).await;
    assert_eq!(status, 200);
    let (status, answer) = s.post_json(&snapshots("ok"), json!({"document": {"a": 1}})).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (409, Some("conflict")), "{answer}");
    assert!(answer["error"]["message"].as_str().unwrap().contains("inactive"), "{answer}");
    let (status, _) = s.post(&format!("/integrations/{SANDBOX_ID}/archive")).await;
    assert_eq!(status, 200);
    let (status, answer) = s.post_json(&snapshots("ok"), json!({"document": {"a": 1}})).await;
    assert_eq!(status, 409, "{answer}");
    let (status, _) = s.put(&target("other"), json!({"filename": "o.json", "branch": "main"})).await;
    assert_eq!(status, 409, "an archived integration's targets do not change");

    assert_eq!(s.running.sandbox.commit_count(), commits, "nothing was committed");
    let (_, shown) = s.get(&target("ok")).await;
    assert_eq!(shown["last_commit"], Value::Null);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn targets_are_listed_replaced_and_deleted() {
    let s = stack("backup").await;
    define(&s, "one", json!({"filename": "one.json", "branch": "main"})).await;
    define(&s, "two", json!({"directory": "d", "filename": "two.json", "branch": "main"})).await;
    let (status, replaced) =
        s.put(&target("two"), json!({"directory": "e", "filename": "two.json", "branch": "main"})).await;
    assert_eq!((status, replaced["path"].clone()), (200, json!("e/two.json")));
    let (_, listed) = s.get(TARGETS).await;
    let names: Vec<&str> =
        listed["backup_targets"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["one", "two"]);
    let (status, _) = s.post_json(&snapshots("one"), json!({"document": {"n": 1}})).await;
    assert_eq!(status, 201);
    let (status, _) = s.delete(&target("one")).await;
    assert_eq!(status, 204);
    let (status, _) = s.get(&format!("{}/history", target("one"))).await;
    assert_eq!(status, 404);
    // Defined again, it starts afresh: the same document is committed again.
    define(&s, "one", json!({"filename": "one.json", "branch": "main"})).await;
    let (status, again) = s.post_json(&snapshots("one"), json!({"document": {"n": 1}})).await;
    assert_eq!(status, 201, "{again}");
    let (_, history) = s.get(&format!("{}/history", target("one"))).await;
    assert_eq!(history["history"].as_array().unwrap().len(), 1);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn data_center_commits_through_browse_with_the_tip_it_read() {
    let s = stack("backup").await;
    let id = s.data_center_integration(json!({})).await;
    let targets = format!("/integrations/{id}/backup-targets");
    let (status, _) = s
        .put(&format!("{targets}/api"), json!({"directory": "dc", "filename": "api.json", "branch": "dc-backups"}))
        .await;
    assert_eq!(status, 201);
    let main = tip(&s, "main").await;
    s.running.sandbox.clear_requests();
    let (status, made) = s.post_json(&format!("{targets}/api/snapshots"), json!({"document": collection(1)})).await;
    assert_eq!(status, 201, "{made}");
    let commit = made["commit"].as_str().unwrap();
    // A new branch: the tip lookup finds nothing, the default branch names the start, one PUT.
    let requests: Vec<String> =
        s.running.sandbox.requests().iter().map(|r| format!("{} {}", r.method, r.path)).collect();
    assert_eq!(requests.len(), 3, "{requests:?}");
    assert!(requests[2].starts_with("PUT ") && requests[2].ends_with("/browse/dc/api.json"), "{requests:?}");
    assert_eq!(tip(&s, "dc-backups").await, commit);
    assert_eq!(parent_of(&s, commit).await.as_deref(), Some(main.as_str()));
    assert_eq!(file_at(&s, commit, "dc/api.json").await, Some(canonical(&collection(1))));
    assert!(
        made["url"].as_str().unwrap().ends_with(&format!("/projects/SANDBOX/repos/demo/commits/{commit}")),
        "{made}"
    );

    // Changed: two requests (tip read, PUT with sourceCommitId); unchanged: none.
    s.running.sandbox.clear_requests();
    let (status, second) = s.post_json(&format!("{targets}/api/snapshots"), json!({"document": collection(2)})).await;
    assert_eq!(status, 201, "{second}");
    assert_eq!(s.running.sandbox.requests().len(), 2);
    assert_eq!(parent_of(&s, second["commit"].as_str().unwrap()).await.as_deref(), Some(commit));
    s.running.sandbox.clear_requests();
    let (status, _) = s.post_json(&format!("{targets}/api/snapshots"), json!({"document": collection(2)})).await;
    assert_eq!(status, 200);
    assert!(s.running.sandbox.requests().is_empty());
    s.stop().await;
}

/// The canonical bytes of a document built in a test.
fn canonical(doc: &Value) -> Vec<u8> {
    let raw = serde_json::value::to_raw_value(doc).expect("a JSON value");
    domain::backup::canonical(&raw).expect("valid JSON")
}
