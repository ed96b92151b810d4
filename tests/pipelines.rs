//! pipeline-trigger and status-poller end to end on the local stack and its sandbox Bitbucket:
//! run/stop/list/filter/paging, automatic runs from webhook events (once per delivery and
//! action), stops on merge, commit-status webhooks, polls (one request in steady state), test
//! summaries, retries, Data Center refused.

use std::time::Duration;

use bitbucket_sandbox::{Fault, FaultKind, TestCounts};
use cross_function_tests::stack::{Stack, stack};
use cross_function_tests::{acted, count};
use domain::delivery::Delivery;
use serde_json::{Value, json};

const PIPELINES: &str = "/integrations/sandbox/pipelines";

async fn run(s: &Stack, body: Value) -> Value {
    let (status, run) = s.post_json(PIPELINES, body).await;
    assert_eq!(status, 201, "{run}");
    run
}

async fn list(s: &Stack, query: &str) -> Value {
    let (status, page) = s.get(&format!("{PIPELINES}{query}")).await;
    assert_eq!(status, 200, "{page}");
    page
}

fn numbers(page: &Value) -> Vec<u64> {
    page["pipelines"].as_array().unwrap().iter().map(|r| r["build_number"].as_u64().unwrap()).collect()
}

/// Waits (bounded, 20 s: the suite's stacks share two cores in CI) until the builds view
/// satisfies `done`; webhooks and the worker are async.
async fn eventually(s: &Stack, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..400 {
        s.running.sandbox.settle().await;
        let page = list(s, "?limit=100").await;
        if done(&page) {
            return page;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}: {}", list(s, "?limit=100").await);
}

fn sandbox_run(s: &Stack, uuid: &str) -> Value {
    s.running.sandbox.pipelines().into_iter().find(|p| p["uuid"] == uuid).expect("the run is in the sandbox")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn runs_start_stop_and_list_with_filters_and_paging() {
    let s = stack("pipelines").await;
    let first = run(
        &s,
        json!({"branch": "main", "selector": {"type": "custom", "pattern": "deploy"},
               "variables": [{"key": "ENV", "value": "staging"}, {"key": "TOKEN", "value": "s3cr3t-value", "secured": true}]}),
    )
    .await;
    assert_eq!((first["build_number"].clone(), first["status"].clone()), (json!(1), json!("PENDING")));
    assert_eq!((first["branch"].clone(), first["trigger"].clone()), (json!("main"), json!("manual")));
    assert_eq!(first["selector"], "custom: deploy");
    assert_eq!(first["variables"], json!(["ENV", "TOKEN"]));
    assert!(first["link"].as_str().unwrap().ends_with("/sandbox/demo/pipelines/results/1"), "{first}");
    let sent = sandbox_run(&s, first["uuid"].as_str().unwrap());
    assert_eq!(sent["target"]["selector"]["pattern"], "deploy");
    assert_eq!(sent["variables"][0]["value"], "staging");
    // The secured value reached Bitbucket and nothing of ours.
    assert!(!first.to_string().contains("s3cr3t-value"));
    let state = std::fs::read(s.dir.join("state.sqlite3")).unwrap();
    assert!(!state.windows(12).any(|w| w == b"s3cr3t-value"), "a variable value reached the state");

    let uuid = first["uuid"].as_str().unwrap();
    let (status, stopped) = s.post(&format!("{PIPELINES}/{uuid}/stop")).await;
    assert_eq!((status, stopped["status"].clone()), (202, json!("STOPPED")), "{stopped}");
    let (status, again) = s.post(&format!("{PIPELINES}/{uuid}/stop")).await;
    assert_eq!(status, 409, "{again}");
    assert!(again["error"]["message"].as_str().unwrap().contains("already finished"), "{again}");

    for branch in ["develop", "feature/login", "develop"] {
        run(&s, json!({"branch": branch})).await;
    }
    assert_eq!(numbers(&list(&s, "").await), [4, 3, 2, 1], "newest first");
    assert_eq!(numbers(&list(&s, "?branch=develop").await), [4, 2]);
    assert_eq!(numbers(&list(&s, "?branch=feature/login").await), [3]);
    assert_eq!(numbers(&list(&s, "?status=stopped").await), [1]);
    assert_eq!(numbers(&list(&s, "?status=PENDING&branch=develop").await), [4, 2]);
    let page = list(&s, "?limit=3").await;
    assert_eq!(numbers(&page), [4, 3, 2]);
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    let rest = list(&s, &format!("?limit=3&cursor={cursor}")).await;
    assert_eq!(numbers(&rest), [1]);
    let (status, _) = s.get(&format!("{PIPELINES}?status=bogus")).await;
    assert_eq!(status, 400);
    let (status, _) = s.get(&format!("{PIPELINES}?limit=0")).await;
    assert_eq!(status, 400);

    let (status, shown) = s.get(&format!("{PIPELINES}/{uuid}")).await;
    assert_eq!((status, shown["status"].clone()), (200, json!("STOPPED")));
    let bare = uuid.trim_matches(['{', '}']);
    assert_eq!(s.get(&format!("{PIPELINES}/{bare}")).await.0, 200, "uuids work without braces too");
    assert_eq!(s.get(&format!("{PIPELINES}/%7Bnope%7D")).await.0, 404);

    for (body, code) in [
        (json!({"branch": "no such branch"}), 400),
        (json!({"branch": "main", "selector": {"type": "branches", "pattern": "x"}}), 400),
        (json!({"branch": "main", "commit": "xyz"}), 400),
        (json!({"branch": "main", "variables": [{"key": "1BAD", "value": "v"}]}), 400),
        (json!({"branch": "main", "unknown": 1}), 400),
        (json!({"branch": "gone"}), 422),
    ] {
        let (status, answer) = s.post_json(PIPELINES, body.clone()).await;
        assert_eq!(status, code, "{body}: {answer}");
    }
    assert_eq!(s.running.sandbox.pipelines().len(), 4, "refused requests started nothing");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pull_requests_build_once_per_head_and_stop_when_merged() {
    let s = stack("pipelines").await;
    let sandbox = &s.running.sandbox;
    let pr = sandbox.open_pull_request("feature/login", "main", "Login page").await;
    let page = eventually(&s, "the pull request's run", |p| numbers(p).len() == 1).await;
    let built = &page["pipelines"][0];
    assert_eq!((built["trigger"].clone(), built["pull_request"].clone()), (json!("pull_request"), json!(pr)));
    assert_eq!(built["branch"], "feature/login");
    assert_eq!(built["origin"]["action"].as_str().map(|a| a.starts_with(&format!("pr-{pr}-opened"))), Some(true));

    // A title edit leaves the head alone: nothing starts.
    sandbox.update_pull_request(pr, Some("Login page, reviewed")).await.unwrap();
    sandbox.settle().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(numbers(&list(&s, "").await).len(), 1);
    assert_eq!(sandbox.pipelines().len(), 1);

    // A new commit on the source branch: one more run.
    sandbox.push("feature/login", &[("src/login.txt", "A login form, with validation.\n")], "Validate").await;
    sandbox.update_pull_request(pr, None).await.unwrap();
    let page = eventually(&s, "the second run", |p| numbers(p).len() == 2).await;
    let second = page["pipelines"][0]["uuid"].as_str().unwrap().to_owned();

    // Merged while the second run is running: it is stopped.
    sandbox.start_pipeline(&second).unwrap();
    sandbox.merge_pull_request(pr).await.unwrap();
    eventually(&s, "the running run stopped", |p| p["pipelines"][0]["status"] == "STOPPED").await;
    assert_eq!(sandbox_run(&s, &second)["state"]["result"]["name"], "STOPPED");
    assert_eq!(sandbox.pipelines().len(), 2, "merging starts nothing");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_delivery_processed_twice_makes_one_run() {
    let s = stack("pipelines").await;
    let sandbox = &s.running.sandbox;
    sandbox.open_pull_request("develop", "main", "Changelog").await;
    eventually(&s, "the run", |p| numbers(p).len() == 1).await;
    // The recorded delivery, as the stream (or a redelivery) would hand it over again.
    let store = s.running.backends.store.clone();
    let (deliveries, _) = domain::list_deliveries(store.as_ref(), "sandbox", 100, None).await.unwrap();
    let opened: Delivery = deliveries
        .into_iter()
        .find(|d| d.event_key == "pullrequest:created")
        .expect("the pull request delivery was recorded");
    let pipelines = s.running.pipelines.clone();
    let (a, b) = tokio::join!(acted(pipelines.as_ref(), &opened), acted(pipelines.as_ref(), &opened));
    assert!(count(&a, "started") == 0 && count(&b, "started") == 0, "{a:?} {b:?}");
    assert_eq!(count(&a, "repeated") + count(&b, "repeated"), 2);
    assert_eq!(sandbox.pipelines().len(), 1, "still one run in Bitbucket");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pushes_build_matching_branches_and_deletions_nothing() {
    let s = stack("pipelines").await;
    let (status, _) = s
        .call(
            reqwest::Method::PATCH,
            "/integrations/sandbox",
            Some(json!({"options": {"build_branches": ["release/*"]}})),
        )
        .await;
    assert_eq!(status, 200);
    let sandbox = &s.running.sandbox;
    sandbox.push("release/1.0", &[("VERSION", "1.0\n")], "Release 1.0").await;
    sandbox.push("feature/other", &[("x", "y\n")], "Not built").await;
    let page = eventually(&s, "the release run", |p| numbers(p).len() == 1).await;
    assert_eq!(
        (page["pipelines"][0]["branch"].clone(), page["pipelines"][0]["trigger"].clone()),
        (json!("release/1.0"), json!("push"))
    );
    sandbox.delete_branch("release/1.0").await.unwrap();
    sandbox.create_branch("v1.0-tag-like", "main").await.unwrap();
    sandbox.settle().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sandbox.pipelines().len(), 1, "deleting or creating unmatched branches starts nothing");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn polls_update_runs_fetch_tests_once_and_settle_to_one_request() {
    let s = stack("pipelines").await;
    let sandbox = &s.running.sandbox;
    let mut uuids = Vec::new();
    for branch in ["main", "develop", "main"] {
        uuids.push(run(&s, json!({"branch": branch})).await["uuid"].as_str().unwrap().to_owned());
    }
    sandbox.start_pipeline(&uuids[0]).unwrap();
    sandbox
        .complete_pipeline(&uuids[0], "SUCCESSFUL", Some(TestCounts { total: 12, passed: 11, failed: 0, skipped: 1 }))
        .unwrap();
    sandbox
        .complete_pipeline(&uuids[1], "FAILED", Some(TestCounts { total: 5, passed: 3, failed: 2, skipped: 0 }))
        .unwrap();
    sandbox.start_pipeline(&uuids[2]).unwrap();
    sandbox.settle().await;

    let (status, report) = s.post(&format!("{PIPELINES}/refresh")).await;
    assert_eq!(status, 200, "{report}");
    let (_, done) = s.get(&format!("{PIPELINES}/{}", uuids[0])).await;
    assert_eq!(done["status"], "SUCCESSFUL");
    assert_eq!(
        (done["tests"]["total"].clone(), done["tests"]["passed"].clone(), done["tests"]["skipped"].clone()),
        (json!(12), json!(11), json!(1))
    );
    assert_eq!(done["tests"]["steps"][0]["step"], "Build");
    assert!(done["completed"].is_string() && done["duration_seconds"].is_u64(), "{done}");
    let (_, failed) = s.get(&format!("{PIPELINES}/{}", uuids[1])).await;
    assert_eq!((failed["status"].clone(), failed["tests"]["failed"].clone()), (json!("FAILED"), json!(2)));
    assert_eq!(numbers(&list(&s, "?status=IN_PROGRESS").await), [3]);

    // The last run finishes: the next poll reads one page, then fetches the report once.
    sandbox.complete_pipeline(&uuids[2], "SUCCESSFUL", None).unwrap();
    sandbox.settle().await;
    s.post(&format!("{PIPELINES}/refresh")).await;
    assert_eq!(numbers(&list(&s, "?status=SUCCESSFUL").await), [3, 1]);

    // Nothing changes any more: a poll is exactly one Bitbucket request (once the status
    // webhooks' own refreshes are done).
    sandbox.settle().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    sandbox.clear_requests();
    let (status, report) = s.post(&format!("{PIPELINES}/refresh")).await;
    assert_eq!((status, report["updated"].clone()), (200, json!(0)), "{report}");
    let requests: Vec<String> =
        sandbox.requests().iter().map(|r| format!("{} {}?{}", r.method, r.path, r.query)).collect();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert!(requests[0].contains("/pipelines") && requests[0].contains("sort=-created_on"), "{requests:?}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_poll_through_rate_limits_and_outages_loses_nothing() {
    let s = stack("pipelines").await;
    let sandbox = &s.running.sandbox;
    let uuid = run(&s, json!({"branch": "main"})).await["uuid"].as_str().unwrap().to_owned();
    sandbox.complete_pipeline(&uuid, "SUCCESSFUL", None).unwrap();
    sandbox.clear_requests();
    for status in [429, 503, 502] {
        sandbox.inject_fault(Fault {
            method: Some("GET".into()),
            path_contains: "/pipelines".into(),
            kind: FaultKind::Status { status },
            times: Some(1),
        });
    }
    // All three faults hit the first request together; then two more single faults.
    let (status, report) = s.post(&format!("{PIPELINES}/refresh")).await;
    assert_eq!(status, 200, "{report}");
    let statuses: Vec<u16> = sandbox.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses.first(), Some(&429), "{statuses:?}");
    assert!(statuses.iter().filter(|&&c| c == 200).count() >= 1, "{statuses:?}");
    let (_, shown) = s.get(&format!("{PIPELINES}/{uuid}")).await;
    assert_eq!(shown["status"], "SUCCESSFUL");

    // Down for good: the refresh says so (503), and the stored run is untouched.
    sandbox.inject_fault(Fault {
        method: None,
        path_contains: "/pipelines".into(),
        kind: FaultKind::Status { status: 503 },
        times: None,
    });
    let (status, failed) = s.post(&format!("{PIPELINES}/refresh")).await;
    assert_eq!((status, failed["error"]["code"].as_str()), (503, Some("unavailable")), "{failed}");
    sandbox.clear_faults();
    assert_eq!(s.get(&format!("{PIPELINES}/{uuid}")).await.1["status"], "SUCCESSFUL");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn commit_status_webhooks_update_a_run_at_once() {
    let s = stack("pipelines").await;
    let uuid = run(&s, json!({"branch": "develop"})).await["uuid"].as_str().unwrap().to_owned();
    // The sandbox, like Pipelines, sets a build status on the commit when the run starts.
    s.running.sandbox.start_pipeline(&uuid).unwrap();
    eventually(&s, "the run in progress", |p| p["pipelines"][0]["status"] == "IN_PROGRESS").await;
    s.running
        .sandbox
        .complete_pipeline(&uuid, "FAILED", Some(TestCounts { total: 2, passed: 1, failed: 1, skipped: 0 }))
        .unwrap();
    let page = eventually(&s, "the run failed", |p| p["pipelines"][0]["status"] == "FAILED").await;
    assert_eq!(page["pipelines"][0]["tests"]["failed"], 1);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn data_center_and_inactive_integrations_run_nothing() {
    let s = stack("pipelines").await;
    let id = s.data_center_integration(json!({})).await;
    let (status, answer) = s.post_json(&format!("/integrations/{id}/pipelines"), json!({"branch": "main"})).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (409, Some("unsupported")), "{answer}");
    assert!(answer["error"]["message"].as_str().unwrap().contains("Data Center has no Pipelines"));
    assert_eq!(s.post(&format!("/integrations/{id}/pipelines/refresh")).await.0, 409);

    let (status, _) = s.post("/integrations/sandbox/disconnect").await;
    assert_eq!(status, 200);
    let (status, answer) = s.post_json(PIPELINES, json!({"branch": "main"})).await;
    assert_eq!(status, 409, "{answer}");
    let reports = s.running.pipelines.poll_all().await.unwrap();
    assert!(reports.is_empty(), "disconnected and Data Center integrations are not polled: {reports:?}");
    assert!(s.running.sandbox.pipelines().is_empty());
    s.stop().await;
}
