//! Pull requests the way Bitbucket users expect, and results reported back (issue 18), end to end
//! on the local stack and its sandbox: the pull-request target (and a custom pipeline instead),
//! Bitbucket's own runs adopted, superseded runs stopped, drafts and forks, resync, failed test
//! cases; the domain events (activity feed, signed webhooks, JSON Schemas, EventBridge on moto);
//! environment statuses on the commit (Cloud and Data Center, reported or from `environment_url`);
//! and the scheduled pull-request reconciliation healing a dropped webhook (issue 19).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bitbucket_sandbox::{FailedTest, PullRequestOptions, TestCounts};
use cross_function_tests::stack::{Stack, StateBackend, stack, stack_on};
use cross_function_tests::temp_dir;
use serde_json::{Value, json};

const PIPELINES: &str = "/integrations/sandbox/pipelines";

async fn patch_options(s: &Stack, id: &str, options: Value) {
    let (status, answer) =
        s.call(reqwest::Method::PATCH, &format!("/integrations/{id}"), Some(json!({ "options": options }))).await;
    assert_eq!(status, 200, "{answer}");
}

async fn runs(s: &Stack) -> Vec<Value> {
    let (status, page) = s.get(&format!("{PIPELINES}?limit=100")).await;
    assert_eq!(status, 200, "{page}");
    page["pipelines"].as_array().unwrap().clone()
}

async fn activity(s: &Stack, id: &str) -> Vec<Value> {
    let (status, page) = s.get(&format!("/integrations/{id}/activity?limit=100")).await;
    assert_eq!(status, 200, "{page}");
    page["activity"].as_array().unwrap().clone()
}

fn of_type<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["type"] == kind).collect()
}

/// Bounded wait (20 s: the suite's stacks share two cores) for what webhooks and the worker do.
async fn eventually<T>(s: &Stack, what: &str, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    for _ in 0..400 {
        s.running.sandbox.settle().await;
        if let Some(found) = probe().await {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Lets the background work of what just happened finish, for a test that expects nothing.
async fn quiet(s: &Stack) {
    s.running.sandbox.settle().await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    s.running.sandbox.settle().await;
}

fn sandbox_run(s: &Stack, uuid: &str) -> Value {
    s.running.sandbox.pipelines().into_iter().find(|p| p["uuid"] == uuid).expect("the run is in the sandbox")
}

fn tip(s: &Stack, branch: &str) -> String {
    s.running.sandbox.branch_tip(branch).unwrap_or_else(|| panic!("no branch {branch}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pull_requests_build_on_the_pull_request_target_or_a_custom_pipeline() {
    let s = stack("pull-requests").await;
    let sandbox = &s.running.sandbox;
    let pr = sandbox.open_pull_request("feature/login", "main", "Login page").await;
    let run = eventually(&s, "the pull request's run", async || runs(&s).await.into_iter().next()).await;
    let sent = sandbox_run(&s, run["uuid"].as_str().unwrap());
    assert_eq!(sent["target"]["type"], "pipeline_pullrequest_target", "{sent}");
    assert_eq!(
        (&sent["target"]["source"], &sent["target"]["destination"], &sent["target"]["pullrequest"]["id"]),
        (&json!("feature/login"), &json!("main"), &json!(pr))
    );
    assert_eq!(sent["target"]["selector"], json!({"type": "pull-requests", "pattern": "**"}));
    assert_eq!(sent["target"]["commit"]["hash"], tip(&s, "feature/login"));
    assert_eq!(sent["target"]["destination_commit"]["hash"], tip(&s, "main"));
    assert_eq!((&run["trigger"], &run["pull_request"]), (&json!("pull_request"), &json!(pr)));

    // The chosen custom pipeline instead, on the source branch.
    patch_options(&s, "sandbox", json!({"pull_request_pipeline": "review"})).await;
    let other = sandbox.open_pull_request("develop", "main", "Changelog").await;
    let run =
        eventually(&s, "the custom run", async || runs(&s).await.into_iter().find(|r| r["pull_request"] == other))
            .await;
    let sent = sandbox_run(&s, run["uuid"].as_str().unwrap());
    assert_eq!(
        (&sent["target"]["type"], &sent["target"]["ref_name"]),
        (&json!("pipeline_ref_target"), &json!("develop"))
    );
    assert_eq!(sent["target"]["selector"], json!({"type": "custom", "pattern": "review"}));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bitbucket_s_own_pull_request_run_is_adopted_not_doubled() {
    let s = stack("pull-requests").await;
    let sandbox = &s.running.sandbox;
    // The repository has a `pull-requests:` pipeline: Bitbucket starts a run by itself.
    sandbox.set_pull_request_pipelines(Some("**"));
    let pr = sandbox.open_pull_request("feature/login", "main", "Login page").await;
    let run = eventually(&s, "the adopted run", async || runs(&s).await.into_iter().next()).await;
    quiet(&s).await;
    assert_eq!(sandbox.pipelines().len(), 1, "one run in Bitbucket: {:?}", sandbox.pipelines());
    assert_eq!(sandbox.pipelines()[0]["trigger"]["type"], "pipeline_trigger_push", "Bitbucket's own");
    assert_eq!((&run["pull_request"], &run["trigger"]), (&json!(pr), &json!("pull_request")));
    assert_eq!(run["origin"]["action"].as_str().map(|a| a.starts_with(&format!("pr-{pr}-opened"))), Some(true));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_head_stops_the_older_heads_run_unless_turned_off() {
    let s = stack("pull-requests").await;
    let sandbox = &s.running.sandbox;
    let pr = sandbox.open_pull_request("feature/login", "main", "Login page").await;
    let first = eventually(&s, "the first run", async || runs(&s).await.into_iter().next()).await;
    let first = first["uuid"].as_str().unwrap().to_owned();
    sandbox.start_pipeline(&first).unwrap();
    // A push to the source branch: Bitbucket sends `pullrequest:updated` by itself.
    sandbox.push("feature/login", &[("src/login.txt", "v2\n")], "Second head").await;
    let page = eventually(&s, "the second run and the first stopped", async || {
        let all = runs(&s).await;
        (all.len() == 2 && all.iter().any(|r| r["uuid"] == first.as_str() && r["status"] == "STOPPED")).then_some(all)
    })
    .await;
    assert_eq!(page[0]["pull_request"], pr);
    assert_eq!(sandbox_run(&s, &first)["state"]["result"]["name"], "STOPPED");

    patch_options(&s, "sandbox", json!({"cancel_superseded_runs": false})).await;
    let second = page[0]["uuid"].as_str().unwrap().to_owned();
    sandbox.start_pipeline(&second).unwrap();
    sandbox.push("feature/login", &[("src/login.txt", "v3\n")], "Third head").await;
    eventually(&s, "the third run", async || (runs(&s).await.len() == 3).then_some(())).await;
    quiet(&s).await;
    assert_eq!(sandbox_run(&s, &second)["state"]["name"], "IN_PROGRESS", "left running when the option is off");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn drafts_build_once_ready_and_forks_never_with_the_reason_in_the_feed() {
    let s = stack("pull-requests").await;
    let sandbox = &s.running.sandbox;
    let draft = PullRequestOptions { draft: true, fork: None };
    let pr = sandbox.open_pull_request_with("feature/login", "main", "WIP", draft).await;
    let skipped = eventually(&s, "the draft's skip", async || {
        of_type(&activity(&s, "sandbox").await, "build.skipped").first().map(|e| (*e).clone())
    })
    .await;
    assert_eq!((&skipped["data"]["code"], &skipped["data"]["pull_request"]), (&json!("draft"), &json!(pr)));
    assert!(skipped["data"]["reason"].as_str().unwrap().contains("build_draft_pull_requests"), "{skipped}");
    assert!(runs(&s).await.is_empty() && sandbox.pipelines().is_empty(), "a draft is not built");

    sandbox.mark_pull_request_ready(pr).await.unwrap();
    let run = eventually(&s, "the ready pull request's run", async || runs(&s).await.into_iter().next()).await;
    assert_eq!(run["pull_request"], pr);

    let fork = PullRequestOptions { draft: false, fork: Some("someone/demo".into()) };
    let forked = sandbox.open_pull_request_with("develop", "main", "From a fork", fork).await;
    let skipped = eventually(&s, "the fork's skip", async || {
        let events = activity(&s, "sandbox").await;
        events.iter().find(|e| e["type"] == "build.skipped" && e["data"]["pull_request"] == forked).cloned()
    })
    .await;
    assert_eq!(skipped["data"]["code"], "fork");
    assert!(skipped["data"]["reason"].as_str().unwrap().contains("someone/demo"), "{skipped}");
    quiet(&s).await;
    assert_eq!(sandbox.pipelines().len(), 1, "the fork started nothing");

    // Drafts build from the start when the option says so.
    patch_options(&s, "sandbox", json!({"build_draft_pull_requests": true})).await;
    let draft = PullRequestOptions { draft: true, fork: None };
    let built = sandbox.open_pull_request_with("develop", "feature/login", "Draft, built", draft).await;
    eventually(&s, "the draft's run", async || runs(&s).await.into_iter().find(|r| r["pull_request"] == built)).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_moved_destination_rebuilds_its_open_pull_requests_with_resync() {
    let s = stack("pull-requests").await;
    let sandbox = &s.running.sandbox;
    let pr = sandbox.open_pull_request("feature/login", "main", "Login page").await;
    eventually(&s, "the first run", async || (runs(&s).await.len() == 1).then_some(())).await;
    // Without resync, main moving builds nothing.
    sandbox.push("main", &[("README.md", "moved\n")], "Main moves").await;
    quiet(&s).await;
    assert_eq!(runs(&s).await.len(), 1);

    patch_options(&s, "sandbox", json!({"resync_pull_requests": true})).await;
    let main = sandbox.push("main", &[("README.md", "moved again\n")], "Main moves again").await;
    let page = eventually(&s, "the resync run", async || {
        let all = runs(&s).await;
        (all.len() == 2).then_some(all)
    })
    .await;
    assert_eq!(page[0]["pull_request"], pr);
    assert!(page[0]["origin"]["action"].as_str().unwrap().starts_with(&format!("pr-{pr}-resync-")), "{}", page[0]);
    let sent = sandbox_run(&s, page[0]["uuid"].as_str().unwrap());
    assert_eq!(sent["target"]["destination_commit"]["hash"], main, "built against the new destination");
    assert_eq!(page[1]["status"], "STOPPED", "the older build of the pull request is superseded");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failed_test_cases_show_in_the_builds_view_fetched_once() {
    let s = stack("pull-requests").await;
    let sandbox = &s.running.sandbox;
    let (status, run) = s.post_json(PIPELINES, json!({"branch": "develop"})).await;
    assert_eq!(status, 201, "{run}");
    let uuid = run["uuid"].as_str().unwrap().to_owned();
    let failures = vec![FailedTest {
        name: "rejects_an_empty_password".into(),
        suite: Some("auth.LoginTest".into()),
        reason: Some("AssertionError: expected 400, got 200".into()),
    }];
    let tests = TestCounts { total: 5, passed: 3, failed: 2, skipped: 0 };
    sandbox.complete_pipeline_with_failures(&uuid, "FAILED", Some(tests), failures).unwrap();
    let run = eventually(&s, "the failed run with its tests", async || {
        let (_, run) = s.get(&format!("{PIPELINES}/{uuid}")).await;
        (run["status"] == "FAILED" && run["tests"].is_object()).then_some(run)
    })
    .await;
    let failures = run["tests"]["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 2, "{run}");
    assert_eq!(
        failures[0],
        json!({"name": "rejects_an_empty_password", "suite": "auth.LoginTest", "step": "Build",
               "reason": "AssertionError: expected 400, got 200"})
    );
    assert_eq!((&failures[1]["name"], &failures[1]["step"]), (&json!("test_2"), &json!("Build")));
    // Fetched once: a poll reads nothing more of them.
    quiet(&s).await;
    sandbox.clear_requests();
    s.post(&format!("{PIPELINES}/refresh")).await;
    assert_eq!(s.count("/test_cases"), 0, "test cases are fetched once");
    s.stop().await;
}

/// docs/events/{type}.json, compiled.
fn event_schema(kind: &str) -> jsonschema::Validator {
    let path = format!("{}/../docs/events/{kind}.json", env!("CARGO_MANIFEST_DIR"));
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    jsonschema::draft202012::new(&schema).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn assert_valid(event: &Value) {
    let kind = event["type"].as_str().expect("a type");
    let validator = event_schema(kind);
    let errors: Vec<String> = validator.iter_errors(event).map(|e| format!("{} at {}", e, e.instance_path())).collect();
    assert!(errors.is_empty(), "{kind} does not fit docs/events/{kind}.json: {errors:?}\n{event}");
}

/// Every event type has its schema (titled as the type), a row in docs/events/README.md and its
/// place in the activity listing's description; no schema is left for a type that is gone.
#[test]
fn every_event_type_is_documented() {
    let dir = format!("{}/../docs/events", env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(format!("{dir}/README.md")).unwrap();
    let openapi: Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{dir}/../openapi.json")).unwrap()).unwrap();
    let described = &openapi["components"]["schemas"]["DomainEvent"]["properties"]["type"]["enum"];
    let kinds: Vec<&str> = domain::outbox::EventType::ALL.iter().map(|k| k.as_str()).collect();
    for kind in &kinds {
        let path = format!("{dir}/{kind}.json");
        let schema: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(schema["title"], *kind, "{path}");
        event_schema(kind);
        assert!(readme.contains(&format!("[`{kind}`]({kind}.json)")), "{kind} in docs/events/README.md");
    }
    assert_eq!(described.as_array().unwrap().iter().filter_map(Value::as_str).collect::<Vec<_>>(), kinds);
    let mut schemas: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().to_str()?.strip_suffix(".json").map(str::to_owned))
        .collect();
    schemas.sort();
    let mut expected: Vec<String> = kinds.iter().map(|k| k.to_string()).collect();
    expected.sort();
    assert_eq!(schemas, expected, "one schema per event type");
}

/// What a receiver of `EVENTS_URL` got: (headers, body).
type Received = Arc<Mutex<Vec<(http::HeaderMap, Vec<u8>)>>>;

async fn receiver() -> (String, Received) {
    let received: Received = Arc::default();
    let kept = received.clone();
    let app = axum::Router::new().route(
        "/events",
        axum::routing::post(move |headers: http::HeaderMap, body: axum::body::Bytes| {
            let kept = kept.clone();
            async move {
                kept.lock().unwrap().push((headers, body.to_vec()));
                http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/events", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, received)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_change_is_an_event_listed_signed_and_true_to_its_schema() {
    let (url, received) = receiver().await;
    let temp = temp_dir("pull-requests");
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let config = local_stack::Config {
        events_url: Some(url),
        events_secret: Some(domain::secrets::Secret::new(secret)),
        ..local_stack::Config::for_tests(temp.path().to_path_buf())
    };
    let running = local_stack::start(config, false).await.unwrap();
    let token = running.seeded.api_token.expose().to_owned();
    let s = Stack { running, http: reqwest::Client::new(), token, dir: temp.path().to_path_buf(), temp: None };
    let sandbox = &s.running.sandbox;
    let pr = sandbox.open_pull_request("feature/login", "main", "Login page").await;
    let run = eventually(&s, "the run", async || runs(&s).await.into_iter().next()).await;
    let uuid = run["uuid"].as_str().unwrap().to_owned();
    sandbox
        .complete_pipeline(&uuid, "SUCCESSFUL", Some(TestCounts { total: 2, passed: 2, failed: 0, skipped: 0 }))
        .unwrap();
    sandbox.merge_pull_request(pr).await.unwrap();
    // Webhooks may arrive in any order: the deletion after the merge was acted on.
    eventually(&s, "the deactivation", async || {
        (!of_type(&activity(&s, "sandbox").await, "environment.deactivated").is_empty()).then_some(())
    })
    .await;
    sandbox.delete_branch("feature/login").await.unwrap();
    let wanted = [
        "environment.created",
        "environment.activated",
        "build.started",
        "build.finished",
        "environment.deactivated",
        "environment.pruned",
    ];
    let events = eventually(&s, "every event", async || {
        let events = activity(&s, "sandbox").await;
        wanted.iter().all(|kind| !of_type(&events, kind).is_empty()).then_some(events)
    })
    .await;
    for event in &events {
        assert_valid(event);
    }
    let times: Vec<&str> = events.iter().map(|e| e["occurred_at"].as_str().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "newest first: {times:?}");
    assert_eq!(of_type(&events, "build.finished")[0]["data"]["tests"]["passed"], 2);

    // Cursor paging walks the same feed.
    let (_, first) = s.get("/integrations/sandbox/activity?limit=2").await;
    let cursor = first["next_cursor"].as_str().expect("more than two events").to_owned();
    let (_, next) = s.get(&format!("/integrations/sandbox/activity?limit=2&cursor={cursor}")).await;
    assert_eq!(next["activity"][0]["id"], events[2]["id"]);

    // Each was POSTed once, signed per Standard Webhooks, its id the webhook-id.
    let published = eventually(&s, "every event posted", async || {
        let got = received.lock().unwrap().clone();
        (got.len() >= events.len()).then_some(got)
    })
    .await;
    let verifier = standardwebhooks::Webhook::new(secret).unwrap();
    for (headers, body) in &published {
        verifier.verify(body, headers).unwrap_or_else(|e| panic!("bad signature: {e}"));
        let event: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(headers["webhook-id"].to_str().unwrap(), event["id"]);
        assert!(headers["webhook-signature"].to_str().unwrap().starts_with("v1,"));
        assert_valid(&event);
    }
    let mut ids: Vec<_> = published.iter().map(|(h, _)| h["webhook-id"].to_str().unwrap().to_owned()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), published.len(), "each event posted once");
    eventually(&s, "published marks", async || {
        let events = activity(&s, "sandbox").await;
        events.iter().all(|e| e["published_at"].is_string()).then_some(())
    })
    .await;
    s.stop().await;
}

/// An event recorded while nothing published it (the process stopped before its relay ran, or
/// `EVENTS_URL` was set later) is published on the next start: the feed that lost it is in
/// memory, and a stream would have kept it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_left_unpublished_at_a_stop_are_published_on_the_next_start() {
    let temp = temp_dir("pull-requests");
    let first = stack_on(temp.path(), &StateBackend::Sqlite, false).await;
    let data = json!({"pull_request": 1, "reason": "left behind"});
    let event = domain::outbox::DomainEvent::new(domain::outbox::EventType::BuildSkipped, "sandbox", "left", data);
    assert!(domain::outbox::record(first.running.backends.store.as_ref(), &event).await.unwrap());
    first.stop().await;

    let (url, received) = receiver().await;
    let config = local_stack::Config {
        events_url: Some(url),
        events_secret: Some(domain::secrets::Secret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")),
        ..local_stack::Config::for_tests(temp.path().to_path_buf())
    };
    let running = local_stack::start(config, false).await.unwrap();
    let token = running.seeded.api_token.expose().to_owned();
    let s = Stack { running, http: reqwest::Client::new(), token, dir: temp.path().to_path_buf(), temp: None };
    let posted = |id: &str| {
        let got = received.lock().unwrap().clone();
        got.iter().filter(|(headers, _)| headers["webhook-id"].to_str().unwrap() == id).count()
    };
    eventually(&s, "the left-behind event posted", async || (posted(&event.id) > 0).then_some(())).await;
    eventually(&s, "its published mark", async || {
        let events = activity(&s, "sandbox").await;
        events.iter().find(|e| e["id"] == event.id.as_str()).filter(|e| e["published_at"].is_string()).map(drop)
    })
    .await;
    assert_eq!(posted(&event.id), 1);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reported_deployment_shows_on_the_head_commit_and_a_pruned_environment_ends_stopped() {
    let s = stack("pull-requests").await;
    let sandbox = &s.running.sandbox;
    sandbox.open_pull_request("feature/login", "main", "Login page").await;
    let head = tip(&s, "feature/login");
    eventually(&s, "the environment active", async || {
        let (_, page) = s.get("/integrations/sandbox/environments").await;
        page["environments"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["branch"] == "feature/login" && e["status"] == "active")
            .cloned()
    })
    .await;
    let path = "/integrations/sandbox/environments/feature%2Flogin/status";
    let (status, env) = s
        .put(
            path,
            json!({"state": "in_progress", "url": "https://feature-login.example.com", "description": "Deploying"}),
        )
        .await;
    assert_eq!(status, 200, "{env}");
    let key = env["deployment"]["key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("bba-env-"), "{env}");
    let statuses = sandbox.commit_statuses(&head);
    let shown: Vec<_> = statuses.iter().filter(|st| st["key"] == key.as_str()).collect();
    assert_eq!(shown.len(), 1);
    assert_eq!(
        (&shown[0]["state"], &shown[0]["url"]),
        (&json!("INPROGRESS"), &json!("https://feature-login.example.com"))
    );
    let (status, _) = s.put(path, json!({"state": "successful", "url": "https://feature-login.example.com"})).await;
    assert_eq!(status, 200);
    let shown: Vec<_> = sandbox.commit_statuses(&head).into_iter().filter(|st| st["key"] == key.as_str()).collect();
    assert_eq!((shown.len(), &shown[0]["state"]), (1, &json!("SUCCESSFUL")), "the same key: replaced");

    for (body, code) in [
        (json!({"state": "deployed"}), 400),
        (json!({"state": "failed", "url": "ftp://x"}), 400),
        (json!({"state": "failed", "extra": 1}), 400),
    ] {
        assert_eq!(s.put(path, body.clone()).await.0, code, "{body}");
    }
    assert_eq!(s.put("/integrations/sandbox/environments/nope/status", json!({"state": "failed"})).await.0, 404);

    sandbox.delete_branch("feature/login").await.unwrap();
    eventually(&s, "the stopped status", async || {
        let shown = sandbox.commit_statuses(&head).into_iter().find(|st| st["key"] == key.as_str())?;
        (shown["state"] == "STOPPED").then_some(())
    })
    .await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn environment_url_shows_an_active_environment_and_data_center_gets_build_statuses() {
    let s = stack("pull-requests").await;
    let sandbox = &s.running.sandbox;
    patch_options(&s, "sandbox", json!({"environment_url": "https://{branch_slug}.preview.example.com"})).await;
    sandbox.open_pull_request("feature/login", "main", "Login page").await;
    let head = tip(&s, "feature/login");
    let shown = eventually(&s, "the template status", async || {
        sandbox
            .commit_statuses(&head)
            .into_iter()
            .find(|st| st["key"].as_str().is_some_and(|k| k.starts_with("bba-env-")))
    })
    .await;
    assert_eq!(
        (&shown["state"], &shown["url"]),
        (&json!("SUCCESSFUL"), &json!("https://feature-login.preview.example.com"))
    );
    let (status, _) = s
        .call(reqwest::Method::PATCH, "/integrations/sandbox", Some(json!({"options": {"environment_url": "ftp://x"}})))
        .await;
    assert_eq!(status, 400, "a template that is no http(s) URL is refused");

    // Data Center: environments from reconciliation, the report as a build status.
    let id = s.data_center_integration(json!({})).await;
    let (status, report) = s.post_json(&format!("/integrations/{id}/prune"), json!({"mode": "environments"})).await;
    assert_eq!(status, 200, "{report}");
    let develop = tip(&s, "develop");
    let (status, env) = s
        .put(
            &format!("/integrations/{id}/environments/develop/status"),
            json!({"state": "stopped", "url": "https://d.example.com"}),
        )
        .await;
    assert_eq!(status, 200, "{env}");
    let builds = sandbox.build_statuses(&develop);
    assert_eq!(builds.len(), 1, "{builds:?}");
    assert_eq!(
        (&builds[0]["key"], &builds[0]["state"], &builds[0]["url"], &builds[0]["ref"]),
        (&env["deployment"]["key"], &json!("CANCELLED"), &json!("https://d.example.com"), &json!("refs/heads/develop"))
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_missed_pull_request_webhook_is_built_on_the_next_reconcile_and_a_missed_merge_closed_out() {
    let s = stack("pull-requests").await;
    let sandbox = &s.running.sandbox;
    sandbox.drop_webhooks("pullrequest:created", 1);
    let pr = sandbox.open_pull_request("feature/login", "main", "Login page").await;
    quiet(&s).await;
    assert!(runs(&s).await.is_empty(), "the webhook never came");

    let reports = s.running.pruner.run_scheduled(chrono::Utc::now()).await.unwrap();
    let report = reports.iter().find(|r| r.integration == "sandbox").unwrap();
    let caught = report.pull_requests.as_ref().expect("pull requests reconciled");
    assert_eq!((caught.caught_up.clone(), caught.builds.len()), (vec![pr], 1), "{report:?}");
    let all = runs(&s).await;
    assert_eq!((all.len(), &all[0]["pull_request"]), (1, &json!(pr)));
    let (_, page) = s.get("/integrations/sandbox/environments").await;
    let env = page["environments"].as_array().unwrap().iter().find(|e| e["branch"] == "feature/login").unwrap().clone();
    assert_eq!((&env["status"], &env["pull_request"]), (&json!("active"), &json!(pr)));

    // Nothing is done twice.
    let reports = s.running.pruner.run_scheduled(chrono::Utc::now()).await.unwrap();
    let again = reports.iter().find(|r| r.integration == "sandbox").unwrap().pull_requests.clone().unwrap();
    assert!(again.caught_up.is_empty() && again.builds.is_empty(), "{again:?}");
    assert_eq!(sandbox.pipelines().len(), 1);

    // Merged with its webhook lost: closed out on the next reconcile.
    let uuid = all[0]["uuid"].as_str().unwrap().to_owned();
    sandbox.start_pipeline(&uuid).unwrap();
    sandbox.drop_webhooks("pullrequest:fulfilled", 1);
    sandbox.merge_pull_request(pr).await.unwrap();
    quiet(&s).await;
    let reports = s.running.pruner.run_scheduled(chrono::Utc::now()).await.unwrap();
    let closed = reports.iter().find(|r| r.integration == "sandbox").unwrap().pull_requests.clone().unwrap();
    assert_eq!(closed.closed, vec![pr]);
    assert_eq!(sandbox_run(&s, &uuid)["state"]["result"]["name"], "STOPPED");
    let (_, page) = s.get("/integrations/sandbox/environments").await;
    let env = page["environments"].as_array().unwrap().iter().find(|e| e["branch"] == "feature/login").unwrap().clone();
    assert_eq!(env["status"], "inactive");
    s.stop().await;
}

/// The outbox on the DynamoDB path: recorded in the table (moto), listed, and relayed by the
/// event-publisher's stream handler onto an EventBridge bus (moto routes it to an SQS queue).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_outbox_on_dynamodb_is_published_to_eventbridge() {
    let state = StateBackend::dynamodb().await;
    let temp = temp_dir("pull-requests");
    let s = stack_on(temp.path(), &state, true).await;
    s.running.sandbox.open_pull_request("feature/login", "main", "Login page").await;
    let events = eventually(&s, "events in the table", async || {
        let events = activity(&s, "sandbox").await;
        (!of_type(&events, "build.started").is_empty() && !of_type(&events, "environment.activated").is_empty())
            .then_some(events)
    })
    .await;
    for event in &events {
        assert_valid(event);
    }

    let config = cross_function_tests::emulator_config().await;
    let bridge = aws_sdk_eventbridge::Client::new(&config);
    let sqs = aws_sdk_sqs::Client::new(&config);
    let bus = cross_function_tests::unique("events");
    bridge.create_event_bus().name(&bus).send().await.unwrap();
    let queue = sqs.create_queue().queue_name(cross_function_tests::unique("events")).send().await.unwrap();
    let queue_url = queue.queue_url().unwrap().to_owned();
    let attributes = sqs
        .get_queue_attributes()
        .queue_url(&queue_url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap();
    let queue_arn = attributes.attributes().unwrap()[&aws_sdk_sqs::types::QueueAttributeName::QueueArn].clone();
    let pattern = json!({"source": ["bitbucket-automation"], "detail-type": ["environment.activated"]}).to_string();
    bridge.put_rule().name("activated").event_bus_name(&bus).event_pattern(pattern).send().await.unwrap();
    let target = aws_sdk_eventbridge::types::Target::builder().id("queue").arn(queue_arn).build().unwrap();
    bridge.put_targets().rule("activated").event_bus_name(&bus).targets(target).send().await.unwrap();

    // The event-publisher function, on the stream images of the table's outbox records.
    let relay = domain::outbox::Relay {
        store: s.running.backends.store.clone(),
        publisher: Arc::new(aws_adapters::EventBridgePublisher::new(bridge.clone(), &bus)),
    };
    // As event_publisher::function builds it: no routes (so nothing to guard), the relay.
    let function = entry::lambda::Function {
        access: entry::lambda::Access::Public,
        relay: Some(Arc::new(relay)),
        ..entry::lambda::Function::http(axum::Router::new())
    };
    let guard = entry::http::AdminGuard { secrets: s.running.backends.secrets.clone(), token_secret: None, feed: None };
    let function = entry::lambda::Served::new(function, guard);
    let items = domain::tables::OUTBOX.items(s.running.backends.store.as_ref(), "sandbox", &[]).await.unwrap();
    let records: Vec<Value> = items
        .iter()
        .enumerate()
        .map(|(n, item)| {
            json!({"eventName": "INSERT", "eventSource": "aws:dynamodb",
                   "dynamodb": {"SequenceNumber": n.to_string(), "NewImage": aws_adapters::stream_image_from_item(item).unwrap()}})
        })
        .collect();
    let answer = entry::lambda::handle(
        &function,
        lambda_http::lambda_runtime::LambdaEvent::new(json!({"Records": records}), Default::default()),
    )
    .await
    .unwrap();
    assert_eq!(answer["batchItemFailures"], json!([]), "{answer}");

    let received = sqs.receive_message().queue_url(&queue_url).max_number_of_messages(10).send().await.unwrap();
    let messages = received.messages();
    assert_eq!(messages.len(), 1, "only the rule's detail-type reaches the queue: {messages:?}");
    let delivered: Value = serde_json::from_str(messages[0].body().unwrap()).unwrap();
    assert_eq!(
        (&delivered["source"], &delivered["detail-type"]),
        (&json!("bitbucket-automation"), &json!("environment.activated"))
    );
    let activated = of_type(&events, "environment.activated")[0];
    assert_eq!(delivered["detail"]["id"], activated["id"]);
    assert_valid(&delivered["detail"]);
    let listed = activity(&s, "sandbox").await;
    assert!(listed.iter().all(|e| e["published_at"].is_string()), "marked published in the table");
    s.stop().await;
}
