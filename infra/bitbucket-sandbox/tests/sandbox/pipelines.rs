//! Pipelines over real HTTP: triggering, listing, stopping, steps and test reports, runs driven by
//! hand (Rust API and `/_admin`) or on a timer, and the build statuses (and their webhooks) runs set
//! on their commits.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use bitbucket_sandbox::{ACCESS_TOKEN, READONLY_ACCESS_TOKEN, TestCounts};
use domain::webhook::{Flavor, RepoEvent, parse};
use reqwest::RequestBuilder;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::common::{Harness, probe, start};

impl Harness {
    /// Triggers a run on `branch` (default selector, no variables); answers with it.
    async fn trigger(&self, branch: &str) -> Value {
        let body = json!({ "target": { "type": "pipeline_ref_target", "ref_type": "branch", "ref_name": branch } });
        let response = self.post(&self.repo("/pipelines/")).json(&body).send().await.unwrap();
        assert_eq!(response.status(), 201);
        response.json().await.unwrap()
    }
    async fn run(&self, uuid: &str) -> Value {
        self.cloud_get(&self.repo(&format!("/pipelines/{uuid}"))).await
    }
    async fn step(&self, uuid: &str) -> Value {
        let steps = self.cloud_get(&self.repo(&format!("/pipelines/{uuid}/steps/"))).await;
        assert_eq!(steps["size"], 1);
        steps["values"][0].clone()
    }
    async fn report(&self, uuid: &str, step: &str) -> reqwest::Response {
        self.get(&self.repo(&format!("/pipelines/{uuid}/steps/{step}/test_reports"))).send().await.unwrap()
    }
    fn admin(&self, path: &str) -> RequestBuilder {
        self.http.post(self.url(&format!("/_admin/pipelines{path}")))
    }
}

fn uuid_of(run: &Value) -> String {
    run["uuid"].as_str().unwrap().to_owned()
}

fn bare(uuid: &str) -> &str {
    uuid.trim_start_matches('{').trim_end_matches('}')
}

fn state_of(run: &Value) -> (String, Option<String>) {
    let state = &run["state"];
    (state["name"].as_str().unwrap().to_owned(), state["result"]["name"].as_str().map(str::to_owned))
}

async fn error_message(response: reqwest::Response) -> String {
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["type"], "error", "{body}");
    body["error"]["message"].as_str().unwrap().to_owned()
}

async fn admin_error(response: reqwest::Response) -> (String, String) {
    let body: Value = response.json().await.unwrap();
    let code = body["error"]["code"].as_str().unwrap_or_else(|| panic!("not an admin error: {body}"));
    (code.to_owned(), body["error"]["message"].as_str().unwrap().to_owned())
}

fn build_numbers(values: &Value) -> Vec<u64> {
    values.as_array().unwrap().iter().map(|r| r["build_number"].as_u64().unwrap()).collect()
}

// ---- triggering and reading -------------------------------------------------------------------

#[tokio::test]
async fn triggered_runs_are_pending_with_cloud_fields() {
    let h = start().await;
    let main = h.tip("main").await;
    let body = json!({ "target": { "type": "pipeline_ref_target", "ref_type": "branch", "ref_name": "main" } });
    let response = h.post(&h.repo("/pipelines/")).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 201);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let run: Value = response.json().await.unwrap();
    let uuid = uuid_of(&run);
    assert!(uuid.starts_with('{') && uuid.ends_with('}') && uuid::Uuid::parse_str(bare(&uuid)).is_ok(), "{uuid}");
    assert_eq!(location, h.repo(&format!("/pipelines/{uuid}")));
    assert_eq!(run["links"]["self"]["href"], location);
    assert_eq!(run["links"]["html"]["href"], format!("{}/sandbox/demo/pipelines/results/1", h.base));
    assert_eq!((&run["type"], &run["build_number"]), (&json!("pipeline"), &json!(1)));
    assert_eq!(run["creator"]["username"], "sandbox-dev");
    assert_eq!(
        (&run["repository"]["type"], &run["repository"]["full_name"], &run["repository"]["name"]),
        (&json!("repository"), &json!("sandbox/demo"), &json!("demo"))
    );
    assert!(run["repository"]["uuid"].as_str().unwrap().starts_with('{'));
    let target = json!({
        "type": "pipeline_ref_target",
        "ref_type": "branch",
        "ref_name": "main",
        "commit": { "type": "commit", "hash": main },
        "selector": { "type": "branches", "pattern": "main" },
    });
    assert_eq!(run["target"], target);
    // Only `type`: the description's `pipeline_trigger` has no `name`, nor does live Cloud send one.
    assert_eq!(run["trigger"], json!({ "type": "pipeline_trigger_manual" }));
    assert_eq!(run["state"], json!({ "name": "PENDING", "type": "pipeline_state_pending" }));
    assert_eq!(run["variables"], json!([]));
    let created = chrono::DateTime::parse_from_rfc3339(run["created_on"].as_str().unwrap()).unwrap();
    assert!((h.sandbox.now() - created.to_utc()).num_seconds().abs() < 5);
    assert!(run.get("completed_on").is_none());
    assert_eq!((&run["duration_in_seconds"], &run["build_seconds_used"]), (&json!(0), &json!(0)));

    // A pinned commit, a custom selector and variables; build numbers count up.
    let develop = h.tip("develop").await;
    let body = json!({
        "target": {
            "type": "pipeline_ref_target",
            "ref_type": "branch",
            "ref_name": "develop",
            "commit": { "type": "commit", "hash": main },
            "selector": { "type": "custom", "pattern": "deploy" },
        },
        "variables": [
            { "type": "pipeline_variable", "key": "ENV", "value": "staging", "secured": false },
            { "type": "pipeline_variable", "key": "TOKEN", "value": "hunter2", "secured": true },
        ],
    });
    // Without the trailing slash too.
    let response = h.post(&h.repo("/pipelines")).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 201);
    let custom: Value = response.json().await.unwrap();
    assert_eq!(custom["build_number"], 2);
    assert_eq!(custom["target"]["commit"]["hash"], main.as_str());
    assert_ne!(main, develop);
    assert_eq!(custom["target"]["selector"], json!({ "type": "custom", "pattern": "deploy" }));
    let variables = json!([
        { "type": "pipeline_variable", "key": "ENV", "secured": false, "value": "staging" },
        { "type": "pipeline_variable", "key": "TOKEN", "secured": true },
    ]);
    assert_eq!(custom["variables"], variables);
    assert!(!custom.to_string().contains("hunter2"));
    assert_eq!(h.trigger("feature/login").await["build_number"], 3);

    // The run reads back the same, by uuid with or without braces, encoded or not.
    for id in [uuid.clone(), bare(&uuid).to_owned(), format!("%7B{}%7D", bare(&uuid)), uuid.to_uppercase()] {
        assert_eq!(h.run(&id).await, run, "{id}");
    }
    let unknown = h.get(&h.repo(&format!("/pipelines/{{{}}}", uuid::Uuid::new_v4()))).send().await.unwrap();
    assert_eq!(unknown.status(), 404);
    assert!(error_message(unknown).await.starts_with("Pipeline {"));
    let elsewhere = h.get(&h.url(&format!("/2.0/repositories/sandbox/other/pipelines/{uuid}"))).send().await.unwrap();
    assert_eq!(elsewhere.status(), 404);
    assert_eq!(h.sandbox.pipelines().len(), 3);
}

#[tokio::test]
async fn bad_triggers_are_refused_and_store_nothing() {
    let h = start().await;
    let target = |extra: Value| {
        let mut target = json!({ "type": "pipeline_ref_target", "ref_type": "branch", "ref_name": "main" });
        target.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        json!({ "target": target })
    };
    let cases = [
        (target(json!({ "ref_name": "nope" })), "Branch nope does not exist"),
        (target(json!({ "ref_name": "" })), "target.ref_name: This field is required."),
        (target(json!({ "commit": { "hash": "0123456789abcdef0123456789abcdef01234567" } })), "does not exist"),
        (target(json!({ "commit": { "hash": "main" } })), "does not exist"),
        (target(json!({ "selector": { "type": "custom" } })), "needs a pattern"),
        (target(json!({ "selector": { "type": "custom", "pattern": " " } })), "needs a pattern"),
        (target(json!({ "selector": { "type": "nightly" } })), "is not one of"),
        (target(json!({ "ref_type": "tag" })), "Tag main does not exist"),
        (target(json!({ "ref_type": "commit" })), "is not one of"),
        (target(json!({ "type": "pipeline_pullrequest_target" })), "target.source: This field is required."),
        (target(json!({ "type": "pipeline_fancy_target" })), "is not one of"),
        (json!({ "target": { "type": "pipeline_commit_target" } }), "target.commit: This field is required."),
        (json!({ "variables": [] }), "target: This field is required."),
    ];
    for (body, message) in cases {
        let response = probe(h.post(&h.repo("/pipelines/"))).json(&body).send().await.unwrap();
        assert_eq!(response.status(), 400, "{body}");
        let got = error_message(response).await;
        assert!(got.contains(message), "{body}: {got}");
    }
    let mut no_key = target(json!({}));
    no_key["variables"] = json!([{ "key": "A", "value": "1" }, { "key": "", "value": "x" }]);
    let response = probe(h.post(&h.repo("/pipelines/"))).json(&no_key).send().await.unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(error_message(response).await, "variables[1].key: This field is required.");
    let mut bad_type = target(json!({}));
    bad_type["variables"] = json!([{ "type": "variable", "key": "A", "value": "1" }]);
    let response = probe(h.post(&h.repo("/pipelines/"))).json(&bad_type).send().await.unwrap();
    assert_eq!(response.status(), 400);
    assert!(error_message(response).await.contains("is not pipeline_variable"));
    let malformed = probe(h.post(&h.repo("/pipelines/"))).body("{nope").send().await.unwrap();
    assert_eq!(malformed.status(), 400);
    assert!(h.sandbox.pipelines().is_empty());
    // The next good one is still number 1.
    assert_eq!(h.trigger("main").await["build_number"], 1);
}

#[tokio::test]
async fn readonly_token_lacks_the_pipeline_scope() {
    let h = start().await;
    let run = h.trigger("main").await;
    let uuid = uuid_of(&run);
    let body = json!({ "target": { "type": "pipeline_ref_target", "ref_type": "branch", "ref_name": "main" } });
    let requests = [
        h.http.get(h.repo("/pipelines/")),
        h.http.post(h.repo("/pipelines/")).json(&body),
        h.http.get(h.repo(&format!("/pipelines/{uuid}"))),
        h.http.post(h.repo(&format!("/pipelines/{uuid}/stopPipeline"))),
        h.http.get(h.repo(&format!("/pipelines/{uuid}/steps/"))),
    ];
    for (i, request) in requests.into_iter().enumerate() {
        let response = request.bearer_auth(READONLY_ACCESS_TOKEN).send().await.unwrap();
        assert_eq!(response.status(), 403);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["message"], "Your credentials lack one or more required privilege scopes.");
        // Stopping a run takes `pipeline:write`; the rest `pipeline`.
        let required = if i == 3 { json!(["pipeline:write"]) } else { json!(["pipeline"]) };
        assert_eq!(body["error"]["detail"]["required"], required);
    }
    assert_eq!(h.http.get(h.repo("/pipelines/")).send().await.unwrap().status(), 401);
    // Nothing was created or stopped; the access token with every scope reads it.
    let all = h.http.get(h.repo("/pipelines/")).bearer_auth(ACCESS_TOKEN).send().await.unwrap();
    assert_eq!(all.status(), 200);
    let all: Value = all.json().await.unwrap();
    assert_eq!((&all["size"], &all["values"][0]["state"]["name"]), (&json!(1), &json!("PENDING")));
}

#[tokio::test]
async fn listing_pages_newest_first_and_filters_by_branch() {
    let h = start().await;
    for branch in ["main", "develop", "main", "develop", "main"] {
        h.trigger(branch).await;
    }
    let oldest_first = h.cloud_get(&h.repo("/pipelines/")).await;
    assert_eq!(oldest_first["size"], 5);
    assert_eq!(build_numbers(&oldest_first["values"]), [1, 2, 3, 4, 5]);
    let without_slash = h.cloud_get(&h.repo("/pipelines")).await;
    assert_eq!(build_numbers(&without_slash["values"]), [1, 2, 3, 4, 5]);

    let mut seen = Vec::new();
    let mut pages = 0;
    let mut url = Some(h.repo("/pipelines/?sort=-created_on&pagelen=2"));
    while let Some(next) = url {
        let page = h.cloud_get(&next).await;
        pages += 1;
        assert_eq!((&page["size"], &page["page"], &page["pagelen"]), (&json!(5), &json!(pages), &json!(2)));
        seen.extend(build_numbers(&page["values"]));
        url = page["next"].as_str().map(str::to_owned);
        if let Some(next) = &url {
            assert!(next.contains("sort=-created_on") && next.starts_with(&h.repo("/pipelines/?")), "{next}");
        }
    }
    assert_eq!((pages, seen), (3, vec![5, 4, 3, 2, 1]));

    let develop = h.cloud_get(&h.repo("/pipelines/?target.ref_name=develop&sort=-created_on")).await;
    assert_eq!(build_numbers(&develop["values"]), [4, 2]);
    assert!(develop["values"].as_array().unwrap().iter().all(|r| r["target"]["ref_name"] == "develop"));
    let none = h.cloud_get(&h.repo("/pipelines/?target.ref_name=feature%2Flogin")).await;
    assert_eq!(none["size"], 0);
    h.trigger("feature/login").await;
    let login = h.cloud_get(&h.repo("/pipelines/?target.ref_name=feature%2Flogin")).await;
    assert_eq!(build_numbers(&login["values"]), [6]);

    assert_eq!(probe(h.get(&h.repo("/pipelines/?sort=state"))).send().await.unwrap().status(), 400);
    assert_eq!(probe(h.get(&h.repo("/pipelines/?pagelen=0"))).send().await.unwrap().status(), 400);
    let capped: Value = probe(h.get(&h.repo("/pipelines/?pagelen=500"))).send().await.unwrap().json().await.unwrap();
    assert_eq!(capped["pagelen"], 100);
}

// ---- stopping, steps and test reports ---------------------------------------------------------

#[tokio::test]
async fn stopping_pending_and_running_runs() {
    let h = start().await;
    let pending = uuid_of(&h.trigger("main").await);
    let stop = |uuid: &str| h.post(&h.repo(&format!("/pipelines/{uuid}/stopPipeline"))).send();
    let response = stop(&pending).await.unwrap();
    assert_eq!(response.status(), 204);
    assert!(response.bytes().await.unwrap().is_empty());
    let stopped = h.run(&pending).await;
    assert_eq!(
        stopped["state"],
        json!({
            "name": "COMPLETED",
            "type": "pipeline_state_completed",
            "result": { "name": "STOPPED", "type": "pipeline_state_completed_stopped" },
        })
    );
    assert!(stopped["completed_on"].is_string());
    assert_eq!(stopped["duration_in_seconds"], 0, "it never ran");

    let again = stop(&pending).await.unwrap();
    assert_eq!(again.status(), 400);
    assert!(error_message(again).await.contains("already completed"));
    let unknown = stop(&format!("{{{}}}", uuid::Uuid::new_v4())).await.unwrap();
    assert_eq!(unknown.status(), 404);

    let running = uuid_of(&h.trigger("develop").await);
    h.sandbox.start_pipeline(&running).unwrap();
    h.sandbox.advance_clock(chrono::Duration::seconds(30));
    let during = h.run(&running).await;
    assert_eq!(state_of(&during), ("IN_PROGRESS".to_owned(), None));
    assert_eq!(during["state"]["stage"], json!({ "name": "RUNNING", "type": "pipeline_state_in_progress_running" }));
    assert_eq!(during["duration_in_seconds"], 30);
    assert_eq!(stop(&format!("%7B{}%7D", bare(&running))).await.unwrap().status(), 204);
    h.sandbox.advance_clock(chrono::Duration::seconds(100));
    let after = h.run(&running).await;
    assert_eq!(state_of(&after), ("COMPLETED".to_owned(), Some("STOPPED".to_owned())));
    assert_eq!((&after["duration_in_seconds"], &after["build_seconds_used"]), (&json!(30), &json!(30)));

    let completed = uuid_of(&h.trigger("main").await);
    h.sandbox.complete_pipeline(&completed, "SUCCESSFUL", None).unwrap();
    let refused = stop(&completed).await.unwrap();
    assert_eq!(refused.status(), 400);
    assert!(error_message(refused).await.contains("already completed"));
    assert_eq!(state_of(&h.run(&completed).await).1.as_deref(), Some("SUCCESSFUL"));
}

#[tokio::test]
async fn one_build_step_and_its_test_report() {
    let h = start().await;
    let uuid = uuid_of(&h.trigger("main").await);
    let step = h.step(&uuid).await;
    let step_uuid = step["uuid"].as_str().unwrap().to_owned();
    assert!(step_uuid.starts_with('{') && step_uuid != uuid);
    assert_eq!((&step["type"], &step["name"]), (&json!("pipeline_step"), &json!("Build")));
    assert_eq!(step["state"], json!({ "name": "PENDING", "type": "pipeline_step_state_pending" }));
    assert!(step.get("started_on").is_none() && step.get("duration_in_seconds").is_none());
    let without_slash = h.cloud_get(&h.repo(&format!("/pipelines/{uuid}/steps"))).await;
    assert_eq!(without_slash["values"][0], step);
    assert_eq!(h.cloud_get(&h.repo(&format!("/pipelines/{}/steps/{}", bare(&uuid), bare(&step_uuid)))).await, step);
    assert_eq!(h.report(&uuid, &step_uuid).await.status(), 404, "pending: no report");

    h.sandbox.start_pipeline(&uuid).unwrap();
    let step = h.step(&uuid).await;
    assert_eq!(step["state"], json!({ "name": "IN_PROGRESS", "type": "pipeline_step_state_in_progress" }));
    assert!(step["started_on"].is_string() && step.get("completed_on").is_none());
    assert_eq!(h.report(&uuid, &step_uuid).await.status(), 404, "running: no report");

    let tests = TestCounts { total: 10, passed: 7, failed: 2, skipped: 1 };
    h.sandbox.complete_pipeline(&uuid, "FAILED", Some(tests)).unwrap();
    let step = h.step(&uuid).await;
    let expected = json!({
        "name": "COMPLETED",
        "type": "pipeline_step_state_completed",
        "result": { "name": "FAILED", "type": "pipeline_step_state_completed_failed" },
    });
    assert_eq!(step["state"], expected);
    assert!(step["completed_on"].is_string());
    let encoded = format!("%7B{}%7D", bare(&step_uuid));
    for step_id in [step_uuid.as_str(), bare(&step_uuid), encoded.as_str()] {
        let report = h.report(&uuid, step_id).await;
        assert_eq!(report.status(), 200, "{step_id}");
        let expected = json!({
            "number_of_test_cases": 10,
            "number_of_successful_test_cases": 7,
            "number_of_failed_test_cases": 2,
            "number_of_error_test_cases": 0,
            "number_of_skipped_test_cases": 1,
        });
        assert_eq!(report.json::<Value>().await.unwrap(), expected);
    }
    let other_step = format!("{{{}}}", uuid::Uuid::new_v4());
    assert_eq!(h.report(&uuid, &other_step).await.status(), 404);
    assert_eq!(h.get(&h.repo(&format!("/pipelines/{uuid}/steps/{other_step}"))).send().await.unwrap().status(), 404);

    // Completed without tests: no report.
    let untested = uuid_of(&h.trigger("main").await);
    h.sandbox.complete_pipeline(&untested, "SUCCESSFUL", None).unwrap();
    let untested_step = h.step(&untested).await["uuid"].as_str().unwrap().to_owned();
    assert_eq!(h.report(&untested, &untested_step).await.status(), 404);
    let unknown = format!("{{{}}}", uuid::Uuid::new_v4());
    let steps = probe(h.get(&h.repo(&format!("/pipelines/{unknown}/steps/")))).send().await.unwrap();
    assert_eq!(steps.status(), 404, "a run that does not exist (the description documents only 200)");
}

// ---- driving runs -----------------------------------------------------------------------------

#[tokio::test]
async fn rust_api_drives_runs_and_refuses_impossible_moves() {
    let h = start().await;
    let uuid = uuid_of(&h.trigger("main").await);
    let missing = format!("{{{}}}", uuid::Uuid::new_v4());
    assert!(h.sandbox.start_pipeline(&missing).unwrap_err().contains("not found"));
    assert!(h.sandbox.complete_pipeline(&uuid, "DONE", None).unwrap_err().contains("SUCCESSFUL"));
    let bad_counts = TestCounts { total: 3, passed: 1, failed: 1, skipped: 0 };
    assert!(h.sandbox.complete_pipeline(&uuid, "SUCCESSFUL", Some(bad_counts)).unwrap_err().contains("total"));
    assert_eq!(state_of(&h.run(&uuid).await).0, "PENDING", "refused moves change nothing");

    h.sandbox.start_pipeline(bare(&uuid)).unwrap();
    assert!(h.sandbox.start_pipeline(&uuid).unwrap_err().contains("not pending"));
    h.sandbox.advance_clock(chrono::Duration::seconds(42));
    h.sandbox.complete_pipeline(&uuid, "error", None).unwrap();
    assert!(h.sandbox.complete_pipeline(&uuid, "SUCCESSFUL", None).unwrap_err().contains("already completed"));
    let run = h.run(&uuid).await;
    assert_eq!(run["state"]["result"], json!({ "name": "ERROR", "type": "pipeline_state_completed_error" }));
    assert_eq!(run["duration_in_seconds"], 42);
    assert_eq!(h.sandbox.pipelines(), vec![run]);

    for result in ["SUCCESSFUL", "FAILED", "EXPIRED", "STOPPED"] {
        let uuid = uuid_of(&h.trigger("develop").await);
        h.sandbox.complete_pipeline(&uuid, result, None).unwrap();
        let run = h.run(&uuid).await;
        let expected = json!({ "name": result, "type": format!("pipeline_state_completed_{}", result.to_lowercase()) });
        assert_eq!(run["state"]["result"], expected);
        assert_eq!(run["duration_in_seconds"], 0, "completed straight from pending");
    }
}

#[tokio::test]
async fn admin_routes_drive_runs() {
    let h = start().await;
    let uuid = uuid_of(&h.trigger("main").await);
    let started = h.admin(&format!("/{uuid}/start")).send().await.unwrap();
    assert_eq!(started.status(), 200);
    assert_eq!(state_of(&started.json::<Value>().await.unwrap()).0, "IN_PROGRESS");
    let again = h.admin(&format!("/{uuid}/start")).send().await.unwrap();
    assert_eq!(again.status(), 400);
    assert!(admin_error(again).await.1.contains("not pending"));

    let tests = json!({ "total": 5, "passed": 4, "failed": 1, "skipped": 0 });
    let body = json!({ "result": "FAILED", "tests": tests });
    let completed = h.admin(&format!("/{}/complete", bare(&uuid))).json(&body).send().await.unwrap();
    assert_eq!(completed.status(), 200);
    let completed: Value = completed.json().await.unwrap();
    assert_eq!(state_of(&completed), ("COMPLETED".to_owned(), Some("FAILED".to_owned())));
    assert_eq!(completed, h.run(&uuid).await);
    let step = h.step(&uuid).await["uuid"].as_str().unwrap().to_owned();
    let report: Value = h.report(&uuid, &step).await.json().await.unwrap();
    assert_eq!((&report["number_of_test_cases"], &report["number_of_failed_test_cases"]), (&json!(5), &json!(1)));

    // An empty body completes SUCCESSFUL, without a report.
    let second = uuid_of(&h.trigger("develop").await);
    let completed: Value = h.admin(&format!("/{second}/complete")).send().await.unwrap().json().await.unwrap();
    assert_eq!(state_of(&completed).1.as_deref(), Some("SUCCESSFUL"));
    let listed: Value = h.http.get(h.url("/_admin/pipelines")).send().await.unwrap().json().await.unwrap();
    assert_eq!(build_numbers(&listed), [1, 2]);

    let third = uuid_of(&h.trigger("develop").await);
    let cases = [
        (format!("/{uuid}/complete"), json!({ "result": "SUCCESSFUL" }), 400, "bad_request"),
        (format!("/{third}/complete"), json!({ "result": "MAYBE" }), 400, "bad_request"),
        (
            format!("/{third}/complete"),
            json!({ "tests": { "total": 1, "passed": 0, "failed": 0, "skipped": 0 } }),
            400,
            "bad_request",
        ),
        (format!("/{third}/rerun"), json!({}), 404, "not_found"),
        (format!("/{{{}}}/start", uuid::Uuid::new_v4()), json!({}), 404, "not_found"),
    ];
    for (path, body, status, code) in cases {
        let response = h.admin(&path).json(&body).send().await.unwrap();
        assert_eq!(response.status(), status, "{path}");
        assert_eq!(admin_error(response).await.0, code, "{path}");
    }
    assert_eq!(state_of(&h.run(&third).await).0, "PENDING");
    let stopped: Value = h.admin(&format!("/{third}/stop")).send().await.unwrap().json().await.unwrap();
    assert_eq!(state_of(&stopped).1.as_deref(), Some("STOPPED"));
    assert!(h.sandbox.requests().iter().all(|r| !r.path.starts_with("/_admin")));
}

#[tokio::test]
async fn automatic_runs_follow_the_sandbox_clock() {
    let h = start().await;
    let manual = uuid_of(&h.trigger("main").await);
    h.sandbox.set_pipeline_timing(Some((Duration::from_secs(60), Duration::from_secs(120))));
    let auto = uuid_of(&h.trigger("main").await);
    assert_eq!(state_of(&h.run(&auto).await).0, "PENDING");

    h.sandbox.advance_clock(chrono::Duration::seconds(61));
    let running = h.run(&auto).await;
    assert_eq!(state_of(&running).0, "IN_PROGRESS");
    assert_eq!(running["duration_in_seconds"], 1, "started when due, 60 s after creation");
    let step = h.step(&auto).await;
    let step_uuid = step["uuid"].as_str().unwrap().to_owned();
    let created = chrono::DateTime::parse_from_rfc3339(running["created_on"].as_str().unwrap()).unwrap();
    let started = chrono::DateTime::parse_from_rfc3339(step["started_on"].as_str().unwrap()).unwrap();
    assert_eq!((started - created).num_seconds(), 60);

    h.sandbox.advance_clock(chrono::Duration::seconds(500));
    let done = h.run(&auto).await;
    assert_eq!(state_of(&done), ("COMPLETED".to_owned(), Some("SUCCESSFUL".to_owned())));
    assert_eq!(done["duration_in_seconds"], 120);
    let completed = chrono::DateTime::parse_from_rfc3339(done["completed_on"].as_str().unwrap()).unwrap();
    assert_eq!((completed - created).num_seconds(), 180);
    let report: Value = h.report(&auto, &step_uuid).await.json().await.unwrap();
    let expected = json!({
        "number_of_test_cases": 12,
        "number_of_successful_test_cases": 12,
        "number_of_failed_test_cases": 0,
        "number_of_error_test_cases": 0,
        "number_of_skipped_test_cases": 0,
    });
    assert_eq!(report, expected);
    assert_eq!(state_of(&h.run(&manual).await).0, "PENDING", "runs made before keep waiting");

    // Back to manual: new runs wait however long it takes.
    h.sandbox.set_pipeline_timing(None);
    let later = uuid_of(&h.trigger("main").await);
    h.sandbox.advance_clock(chrono::Duration::days(1));
    assert_eq!(state_of(&h.run(&later).await).0, "PENDING");
}

#[tokio::test]
async fn automatic_runs_finish_on_their_own_and_report_their_statuses() {
    let h = start().await;
    let (url, receiver) = start_receiver().await;
    h.create_hook(&url, None, &["repo:commit_status_created", "repo:commit_status_updated"]).await;
    let timing = json!({ "pending_seconds": 0.1, "running_seconds": 0.2 });
    let set = h.http.put(h.url("/_admin/pipelines/timing")).json(&timing).send().await.unwrap();
    assert_eq!(set.status(), 200);
    let set: Value = set.json().await.unwrap();
    assert_eq!(set, json!({ "manual": false, "pending_seconds": 0.1, "running_seconds": 0.2 }));
    let current: Value = h.http.get(h.url("/_admin/pipelines/timing")).send().await.unwrap().json().await.unwrap();
    assert_eq!(current, set);

    let run = h.trigger("main").await;
    let uuid = uuid_of(&run);
    assert_eq!(state_of(&run).0, "PENDING");
    // Nobody looks at the run meanwhile: its timer moves it and sends the statuses.
    tokio::time::sleep(Duration::from_millis(700)).await;
    h.sandbox.settle().await;
    let received = receiver.events();
    let html = format!("{}/sandbox/demo/pipelines/results/1", h.base);
    assert_eq!(
        received,
        [
            ("repo:commit_status_created".to_owned(), status_event(&run, "INPROGRESS", &html)),
            ("repo:commit_status_updated".to_owned(), status_event(&run, "SUCCESSFUL", &html)),
        ]
    );
    let done = h.run(&uuid).await;
    assert_eq!(state_of(&done), ("COMPLETED".to_owned(), Some("SUCCESSFUL".to_owned())));

    for manual in [json!(null), json!({ "manual": true })] {
        let set = h.http.put(h.url("/_admin/pipelines/timing")).json(&manual).send().await.unwrap();
        assert_eq!(set.json::<Value>().await.unwrap(), json!({ "manual": true }));
    }
    let waiting = uuid_of(&h.trigger("main").await);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(state_of(&h.run(&waiting).await).0, "PENDING");
    for bad in [json!({ "pending_seconds": 1 }), json!({ "pending_seconds": -1, "running_seconds": 1 }), json!([])] {
        let response = h.http.put(h.url("/_admin/pipelines/timing")).json(&bad).send().await.unwrap();
        assert_eq!(response.status(), 400, "{bad}");
        assert_eq!(admin_error(response).await.0, "bad_request");
    }
    let current: Value = h.http.get(h.url("/_admin/pipelines/timing")).send().await.unwrap().json().await.unwrap();
    assert_eq!(current, json!({ "manual": true }), "refused changes keep the timing");
}

// ---- build statuses ---------------------------------------------------------------------------

#[derive(Clone, Default)]
struct Receiver {
    received: Arc<Mutex<Vec<(HeaderMap, Bytes)>>>,
}

impl Receiver {
    /// Each delivery's event key and what the project's parser reads from it.
    fn events(&self) -> Vec<(String, RepoEvent)> {
        let received = self.received.lock().unwrap();
        let event = |(headers, body): &(HeaderMap, Bytes)| {
            let key = headers["x-event-key"].to_str().unwrap().to_owned();
            let parsed = parse(Flavor::Cloud, &key, body).unwrap();
            assert_eq!(parsed.repository.as_deref(), Some("sandbox/demo"));
            assert_eq!(parsed.events.len(), 1);
            (key, parsed.events.into_iter().next().unwrap())
        };
        received.iter().map(event).collect()
    }
}

async fn receive(State(receiver): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    receiver.received.lock().unwrap().push((headers, body));
    StatusCode::OK
}

async fn start_receiver() -> (String, Receiver) {
    let receiver = Receiver::default();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let app = Router::new().route("/hook", post(receive)).with_state(receiver.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, receiver)
}

fn status_event(run: &Value, state: &str, url: &str) -> RepoEvent {
    RepoEvent::CommitStatus {
        commit: run["target"]["commit"]["hash"].as_str().map(str::to_owned),
        state: state.into(),
        key: Some(format!("pipeline-{}", run["build_number"])),
        refname: run["target"]["ref_name"].as_str().map(str::to_owned),
        url: Some(url.to_owned()),
    }
}

#[tokio::test]
async fn runs_set_build_statuses_on_their_commits() {
    let h = start().await;
    let (url, receiver) = start_receiver().await;
    h.create_hook(&url, None, &["repo:commit_status_created", "repo:commit_status_updated"]).await;
    let run = h.trigger("develop").await;
    let uuid = uuid_of(&run);
    let html = run["links"]["html"]["href"].as_str().unwrap().to_owned();
    h.sandbox.settle().await;
    assert!(receiver.events().is_empty(), "a pending run sets no status");

    h.sandbox.start_pipeline(&uuid).unwrap();
    h.sandbox.settle().await;
    assert_eq!(receiver.events(), [("repo:commit_status_created".to_owned(), status_event(&run, "INPROGRESS", &html))]);
    h.sandbox.complete_pipeline(&uuid, "EXPIRED", None).unwrap();
    h.sandbox.settle().await;
    let events = receiver.events();
    assert_eq!(events.len(), 2);
    assert_eq!(events[1], ("repo:commit_status_updated".to_owned(), status_event(&run, "FAILED", &html)));

    let commit = run["target"]["commit"]["hash"].as_str().unwrap();
    let statuses = h.cloud_get(&h.repo(&format!("/commit/{commit}/statuses"))).await;
    assert_eq!(statuses["size"], 1);
    let status = &statuses["values"][0];
    assert_eq!(
        (&status["key"], &status["name"], &status["state"], &status["url"], &status["refname"]),
        (&json!("pipeline-1"), &json!("Pipeline #1"), &json!("FAILED"), &json!(html), &json!("develop"))
    );

    // Stopped (or completed) straight from pending: only the final status, created.
    let stopped = h.trigger("develop").await;
    let response = h.post(&h.repo(&format!("/pipelines/{}/stopPipeline", uuid_of(&stopped)))).send().await.unwrap();
    assert_eq!(response.status(), 204);
    let successful = h.trigger("main").await;
    h.sandbox.complete_pipeline(&uuid_of(&successful), "SUCCESSFUL", None).unwrap();
    h.sandbox.settle().await;
    let mut events = receiver.events().split_off(2);
    events.sort_by_key(|(_, event)| format!("{event:?}"));
    let stopped_url = stopped["links"]["html"]["href"].as_str().unwrap();
    let successful_url = successful["links"]["html"]["href"].as_str().unwrap();
    let mut expected = vec![
        ("repo:commit_status_created".to_owned(), status_event(&stopped, "STOPPED", stopped_url)),
        ("repo:commit_status_created".to_owned(), status_event(&successful, "SUCCESSFUL", successful_url)),
    ];
    expected.sort_by_key(|(_, event)| format!("{event:?}"));
    assert_eq!(events, expected);
    let statuses = h.cloud_get(&h.repo(&format!("/commit/{commit}/statuses"))).await;
    let keys: Vec<_> = statuses["values"].as_array().unwrap().iter().map(|s| s["key"].clone()).collect();
    assert_eq!(keys, [json!("pipeline-1"), json!("pipeline-2")], "both develop runs were on the same commit");
}

#[tokio::test]
async fn commit_targets_and_typed_variables_are_accepted() {
    let h = start().await;
    let develop = h.tip("develop").await;
    let body = json!({
        "target": {
            "type": "pipeline_commit_target",
            "commit": { "type": "commit", "hash": develop },
            "selector": { "type": "custom", "pattern": "Deploy to production" },
        },
        "variables": [
            { "type": "pipeline_variable", "key": "ENV", "value": "prod" },
            { "key": "UNTYPED", "value": "as the operation's own example sends it" },
        ],
    });
    // The untyped variable is on purpose (the schema requires `type`; the example omits it).
    let response = probe(h.post(&h.repo("/pipelines/"))).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 201, "{:?}", response.text().await);
    let run: Value = response.json().await.unwrap();
    let target = json!({
        "type": "pipeline_commit_target",
        "commit": { "type": "commit", "hash": develop },
        "selector": { "type": "custom", "pattern": "Deploy to production" },
    });
    assert_eq!(run["target"], target);
    assert!(run["variables"].as_array().unwrap().iter().all(|v| v["type"] == "pipeline_variable"), "{run}");
    assert_eq!(h.run(&uuid_of(&run)).await["target"], target);

    // A commit target has no branch: the build status it sets carries no refname.
    h.sandbox.start_pipeline(&uuid_of(&run)).unwrap();
    let statuses = h.cloud_get(&h.repo(&format!("/commit/{develop}/statuses"))).await;
    assert_eq!(statuses["values"][0]["refname"], Value::Null);
    // Listing by branch leaves it out.
    assert_eq!(h.cloud_get(&h.repo("/pipelines/?target.ref_name=develop")).await["size"], 0);
    // A named branch is a branch.
    let named =
        json!({ "target": { "type": "pipeline_ref_target", "ref_type": "named_branch", "ref_name": "develop" } });
    assert_eq!(h.post(&h.repo("/pipelines/")).json(&named).send().await.unwrap().status(), 201);
}
