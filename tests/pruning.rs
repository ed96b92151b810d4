//! branch-pruner end to end on the local stack and its sandbox Bitbucket: environments follow
//! branch and pull request events (tags never), a delivery processed twice prunes once,
//! reconciliation heals missed deletions in exactly one request per page, a failed or cut-short
//! listing prunes nothing and is recorded, the stale-branch plan and cleanup (dry run, reasons,
//! the cap, what is never deleted, the clock), Data Center through branch-utils; and a property
//! test of the pure planner.

use std::collections::HashSet;
use std::time::Duration;

use bitbucket_sandbox::{self as sb, Fault, FaultKind};
use chrono::{DateTime, Utc};
use cross_function_tests::stack::{Stack, stack};
use cross_function_tests::{acted, count};
use domain::StalePolicy;
use domain::bitbucket::{BranchInfo, PullRequestInfo};
use domain::delivery::Delivery;
use domain::pruning::{Decision, Environment, EnvironmentStatus, PlanInput, plan, restriction_matches};
use domain::signature::sign;
use domain::store::Condition;
use domain::tables::ENVIRONMENTS;
use serde_json::{Value, json};

const SANDBOX: &str = "sandbox";

async fn environments(s: &Stack, id: &str) -> Vec<Value> {
    let (status, page) = s.get(&format!("/integrations/{id}/environments?limit=1000")).await;
    assert_eq!(status, 200, "{page}");
    page["environments"].as_array().unwrap().clone()
}

fn names(items: &[Value]) -> Vec<String> {
    items.iter().map(|e| e["branch"].as_str().unwrap().to_owned()).collect()
}

fn find<'a>(items: &'a [Value], branch: &str) -> Option<&'a Value> {
    items.iter().find(|e| e["branch"] == branch)
}

/// Waits (bounded, 20 s: the suite's stacks share two cores in CI) until the environments
/// satisfy `done`; webhooks and the worker are async.
async fn eventually(s: &Stack, id: &str, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    for _ in 0..400 {
        s.running.sandbox.settle().await;
        let envs = environments(s, id).await;
        if done(&envs) {
            return envs;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}: {:?}", environments(s, id).await);
}

async fn prune(s: &Stack, id: &str, body: Value) -> (u16, Value) {
    s.post_json(&format!("/integrations/{id}/prune"), body).await
}

async fn audit(s: &Stack, id: &str) -> Vec<Value> {
    let (status, page) = s.get(&format!("/integrations/{id}/prune-audit?limit=100")).await;
    assert_eq!(status, 200, "{page}");
    page["audit"].as_array().unwrap().clone()
}

async fn set_options(s: &Stack, id: &str, options: Value) {
    let (status, answer) =
        s.call(reqwest::Method::PATCH, &format!("/integrations/{id}"), Some(json!({"options": options}))).await;
    assert_eq!(status, 200, "{answer}");
}

/// The branches Bitbucket has now, through the sandbox's own Cloud API.
async fn bitbucket_branches(s: &Stack) -> HashSet<String> {
    let mut out = HashSet::new();
    let mut url = Some(format!("{}/repositories/sandbox/demo/refs/branches?pagelen=100", s.sandbox_api()));
    while let Some(next) = url {
        let page: Value = s
            .http
            .get(next)
            .basic_auth(sb::API_TOKEN_EMAIL, Some(sb::API_TOKEN))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        out.extend(page["values"].as_array().unwrap().iter().map(|b| b["name"].as_str().unwrap().to_owned()));
        url = page["next"].as_str().map(str::to_owned);
    }
    out
}

/// The sandbox's requests but pipeline-trigger's (it builds the pull requests the scenarios open,
/// in the background).
fn ours(sandbox: &sb::Sandbox) -> Vec<sb::RecordedRequest> {
    sandbox.requests().into_iter().filter(|r| !r.path.contains("/pipelines")).collect()
}

fn entry<'a>(report: &'a Value, branch: &str) -> &'a Value {
    report["branches"].as_array().unwrap().iter().find(|b| b["branch"] == branch).unwrap_or_else(|| {
        panic!("{branch} is not in the report: {report}");
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn branch_events_create_update_and_prune_environments() {
    let s = stack("pruning").await;
    let sandbox = &s.running.sandbox;
    let created = sandbox.create_branch("topic", "main").await.unwrap();
    let envs = eventually(&s, SANDBOX, "the new branch's environment", |e| find(e, "topic").is_some()).await;
    let topic = find(&envs, "topic").unwrap();
    assert_eq!((topic["status"].clone(), topic["head"].clone()), (json!("inactive"), json!(created)), "{topic}");
    assert!(topic.get("pull_request").is_none(), "{topic}");

    let pushed = sandbox.push("topic", &[("notes.md", "more\n")], "More notes").await;
    let envs =
        eventually(&s, SANDBOX, "the pushed head", |e| find(e, "topic").is_some_and(|t| t["head"] == pushed)).await;
    let first_activity: DateTime<Utc> = serde_json::from_value(topic["last_activity"].clone()).unwrap();
    let later: DateTime<Utc> = serde_json::from_value(find(&envs, "topic").unwrap()["last_activity"].clone()).unwrap();
    assert!(later >= first_activity);

    sandbox.delete_branch("topic").await.unwrap();
    eventually(&s, SANDBOX, "the deleted branch's environment pruned", |e| find(e, "topic").is_none()).await;
    let audit = audit(&s, SANDBOX).await;
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert_eq!(
        (audit[0]["branch"].clone(), audit[0]["action"].clone(), audit[0]["reason"].clone()),
        (json!("topic"), json!("environment_pruned"), json!("branch deleted"))
    );
    assert!(audit[0]["delivery_id"].as_str().is_some_and(|d| !d.is_empty()), "{:?}", audit[0]);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pull_requests_activate_and_deactivate_environments() {
    let s = stack("pruning").await;
    let sandbox = &s.running.sandbox;
    let pr = sandbox.open_pull_request("feature/login", "main", "Login").await;
    let envs = eventually(&s, SANDBOX, "the active environment", |e| {
        find(e, "feature/login").is_some_and(|env| env["status"] == "active")
    })
    .await;
    assert_eq!(find(&envs, "feature/login").unwrap()["pull_request"], pr);

    sandbox.merge_pull_request(pr).await.unwrap();
    let envs = eventually(&s, SANDBOX, "inactive after the merge", |e| {
        find(e, "feature/login").is_some_and(|env| env["status"] == "inactive")
    })
    .await;
    assert!(find(&envs, "feature/login").unwrap().get("pull_request").is_none(), "{envs:?}");

    let declined = sandbox.open_pull_request("develop", "main", "Changelog").await;
    eventually(&s, SANDBOX, "develop active", |e| {
        find(e, "develop").is_some_and(|env| env["pull_request"] == declined)
    })
    .await;
    sandbox.decline_pull_request(declined).await.unwrap();
    eventually(&s, SANDBOX, "develop inactive", |e| find(e, "develop").is_some_and(|env| env["status"] == "inactive"))
        .await;

    // Without build_pull_requests a pull request activates nothing.
    set_options(&s, SANDBOX, json!({"build_pull_requests": false})).await;
    sandbox.open_pull_request("develop", "main", "Again").await;
    sandbox.create_branch("marker", "main").await.unwrap();
    let envs = eventually(&s, SANDBOX, "the marker after the pull request", |e| find(e, "marker").is_some()).await;
    assert_eq!(find(&envs, "develop").unwrap()["status"], "inactive", "{envs:?}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tags_are_not_environments() {
    let s = stack("pruning").await;
    let secret = s.running.seeded.sandbox_webhook_secret.clone();
    let fixtures = cross_function_tests::manifest();
    let tags: Vec<_> =
        fixtures.iter().filter(|f| f.file.contains("tag_created") || f.file.contains("tag_deleted")).collect();
    assert!(tags.len() >= 3, "the corpus has tag pushes for both flavors");
    for (n, fixture) in tags.iter().enumerate() {
        let body = fixture.body();
        let response = s
            .http
            .post(s.url("/webhooks/sandbox"))
            .header("Content-Type", "application/json")
            .header("X-Event-Key", &fixture.event_key)
            .header(
                if fixture.flavor.as_str() == "cloud" { "X-Request-UUID" } else { "X-Request-Id" },
                format!("tag-{n}"),
            )
            .header("X-Hub-Signature", sign(secret.expose().as_bytes(), &body))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202, "{}", fixture.file);
    }
    // The worker takes deliveries in order: once a later branch shows, the tags were processed.
    s.running.sandbox.create_branch("after-tags", "main").await.unwrap();
    let envs = eventually(&s, SANDBOX, "the branch after the tags", |e| find(e, "after-tags").is_some()).await;
    assert_eq!(names(&envs), ["after-tags"], "no tag became an environment");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_delivery_processed_twice_prunes_once() {
    let s = stack("pruning").await;
    let sandbox = &s.running.sandbox;
    sandbox.create_branch("twice", "main").await.unwrap();
    eventually(&s, SANDBOX, "the environment", |e| find(e, "twice").is_some()).await;
    sandbox.delete_branch("twice").await.unwrap();
    eventually(&s, SANDBOX, "pruned", |e| find(e, "twice").is_none()).await;

    let store = s.running.backends.store.clone();
    let (deliveries, _) = domain::list_deliveries(store.as_ref(), "sandbox", 100, None).await.unwrap();
    let deleted: Delivery = deliveries
        .into_iter()
        .find(|d| d.summary.contains("twice") && d.summary.contains("deleted"))
        .expect("the deletion delivery was recorded");
    let before = environments(&s, SANDBOX).await;
    let pruner = s.running.pruner.clone();
    let (a, b) = tokio::join!(acted(pruner.as_ref(), &deleted), acted(pruner.as_ref(), &deleted));
    assert!(count(&a, "pruned") == 0 && count(&b, "pruned") == 0, "nothing left to prune");
    assert_eq!(environments(&s, SANDBOX).await, before);

    // As if the stream handed the delivery over again before its first processing finished:
    // the environment is back as it was, and two processings race.
    let env = Environment {
        branch: "twice".into(),
        head: None,
        last_activity: deleted.received_at - chrono::Duration::seconds(1),
        status: EnvironmentStatus::Inactive,
        pull_request: None,
        deployment: None,
        updated_at: deleted.received_at,
    };
    ENVIRONMENTS.put(store.as_ref(), "sandbox", &["twice"], &env, Condition::None).await.unwrap();
    let (a, b) = tokio::join!(acted(pruner.as_ref(), &deleted), acted(pruner.as_ref(), &deleted));
    assert_eq!(count(&a, "pruned") + count(&b, "pruned"), 1, "pruned once");
    assert_eq!(environments(&s, SANDBOX).await, before);
    let audit = audit(&s, SANDBOX).await;
    assert_eq!(audit.iter().filter(|a| a["branch"] == "twice").count(), 1, "one audit record: {audit:?}");

    // Processing it again after a re-creation older than the deletion is not a prune either:
    // a newer push wins over a redelivered deletion.
    sandbox.create_branch("twice", "main").await.unwrap();
    eventually(&s, SANDBOX, "re-created", |e| find(e, "twice").is_some()).await;
    assert_eq!(count(&acted(pruner.as_ref(), &deleted).await, "pruned"), 0);
    assert!(find(&environments(&s, SANDBOX).await, "twice").is_some());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reconciliation_adds_missing_environments_and_heals_a_missed_deletion() {
    let s = stack("pruning").await;
    let sandbox = &s.running.sandbox;
    // The seeded branches predate the integration's webhook: only reconciliation knows them.
    assert!(environments(&s, SANDBOX).await.is_empty());
    let (status, report) = prune(&s, SANDBOX, json!({"mode": "environments"})).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(
        (report["listed"].clone(), report["added"].clone(), report["pruned"].clone()),
        (json!(3), json!(3), json!([]))
    );
    assert_eq!(names(&environments(&s, SANDBOX).await), ["develop", "feature/login", "main"]);

    sandbox.seed_branches(&["quiet/new".to_owned()], "main").unwrap();
    sandbox.delete_branch_quietly("develop").unwrap();
    let (status, report) = prune(&s, SANDBOX, json!({"mode": "environments"})).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!((report["added"].clone(), report["pruned"].clone()), (json!(1), json!(["develop"])), "{report}");
    assert_eq!(names(&environments(&s, SANDBOX).await), ["feature/login", "main", "quiet/new"]);
    let audit = audit(&s, SANDBOX).await;
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert_eq!(
        (audit[0]["branch"].clone(), audit[0]["reason"].clone()),
        (json!("develop"), json!("branch gone (reconciliation)"))
    );
    assert!(audit[0].get("delivery_id").is_none());

    // Again: nothing left to do.
    let (_, report) = prune(&s, SANDBOX, json!({"mode": "environments"})).await;
    assert_eq!(
        (report["added"].clone(), report["updated"].clone(), report["pruned"].clone()),
        (json!(0), json!(0), json!([]))
    );

    // Without prune_branches a gone branch keeps its environment.
    set_options(&s, SANDBOX, json!({"prune_branches": false})).await;
    sandbox.delete_branch_quietly("quiet/new").unwrap();
    let (_, report) = prune(&s, SANDBOX, json!({"mode": "environments"})).await;
    assert_eq!(report["pruned"], json!([]), "{report}");
    assert!(find(&environments(&s, SANDBOX).await, "quiet/new").is_some());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_listing_prunes_nothing_and_is_recorded_on_the_integration() {
    let s = stack("pruning").await;
    let sandbox = &s.running.sandbox;
    assert_eq!(prune(&s, SANDBOX, json!({"mode": "environments"})).await.0, 200);
    sandbox.delete_branch_quietly("develop").unwrap();
    for status in [503, 500] {
        sandbox.inject_fault(Fault {
            method: Some("GET".into()),
            path_contains: "/refs/branches".into(),
            kind: FaultKind::Status { status },
            times: None,
        });
        let (code, answer) = prune(&s, SANDBOX, json!({"mode": "environments"})).await;
        assert_eq!((code, answer["error"]["code"].as_str()), (503, Some("unavailable")), "{status}: {answer}");
        assert_eq!(names(&environments(&s, SANDBOX).await), ["develop", "feature/login", "main"], "nothing pruned");
        let (_, integration) = s.get("/integrations/sandbox").await;
        assert_eq!(integration["last_error"]["reason"], "unavailable", "{integration}");
        assert!(integration["last_error"]["message"].as_str().unwrap().contains(&format!("HTTP {status}")));
        assert_eq!(integration["status"], "active", "an outage is not a credential problem");

        // The stale-branch cleanup refuses just the same, and deletes nothing.
        let (code, _) = prune(&s, SANDBOX, json!({"mode": "stale-branches", "dry_run": false})).await;
        assert_eq!(code, 503);
        sandbox.clear_faults();
    }
    assert!(sandbox.requests().iter().all(|r| r.method != "DELETE"));

    let (status, report) = prune(&s, SANDBOX, json!({"mode": "environments"})).await;
    assert_eq!((status, report["pruned"].clone()), (200, json!(["develop"])), "healed once Bitbucket answers");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_fifty_branches_reconcile_in_three_list_requests() {
    let s = stack("pruning").await;
    let sandbox = &s.running.sandbox;
    let bulk: Vec<String> = (0..247).map(|i| format!("bulk/{i:03}")).collect();
    sandbox.seed_branches(&bulk, "main").unwrap();
    sandbox.clear_requests();
    let (status, report) = prune(&s, SANDBOX, json!({"mode": "environments"})).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!((report["listed"].clone(), report["added"].clone()), (json!(250), json!(250)));
    let lists: Vec<String> = sandbox
        .requests()
        .iter()
        .filter(|r| r.path.contains("/refs/branches"))
        .map(|r| format!("{} {}?{}", r.method, r.path, r.query))
        .collect();
    assert_eq!(lists.len(), 3, "{lists:#?}");
    assert!(lists.iter().all(|l| l.starts_with("GET ") && l.contains("pagelen=100")), "{lists:#?}");
    let (_, page) = s.get("/integrations/sandbox/environments?limit=100").await;
    assert_eq!(page["environments"].as_array().unwrap().len(), 100);
    let cursor = page["next_cursor"].as_str().expect("more pages").to_owned();
    let (_, next) = s.get(&format!("/integrations/sandbox/environments?limit=1000&cursor={cursor}")).await;
    assert_eq!(next["environments"].as_array().unwrap().len(), 150);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_listing_cut_short_by_its_page_bound_prunes_nothing() {
    let s = stack("pruning").await;
    let sandbox = &s.running.sandbox;
    assert_eq!(prune(&s, SANDBOX, json!({"mode": "environments"})).await.0, 200);
    sandbox.delete_branch_quietly("develop").unwrap();
    // 60 pages of 100 are read: one branch more than that cannot all be seen.
    let many: Vec<String> = (0..5999).map(|i| format!("many/{i:04}")).collect();
    sandbox.seed_branches(&many, "main").unwrap();
    let (status, answer) = prune(&s, SANDBOX, json!({"mode": "environments"})).await;
    assert_eq!(status, 503, "{answer}");
    assert!(answer["error"]["message"].as_str().unwrap().contains("nothing was pruned"), "{answer}");
    assert!(find(&environments(&s, SANDBOX).await, "develop").is_some(), "develop's environment is kept");
    let (_, integration) = s.get("/integrations/sandbox").await;
    assert_eq!(integration["last_error"]["reason"], "incomplete_listing", "{integration}");
    s.stop().await;
}

/// Branches for the stale-branch policy, each with the pull requests that make its case.
async fn stale_scenario(s: &Stack) {
    let sandbox = &s.running.sandbox;
    for branch in ["merged/a", "declined/b", "fresh/c", "moved/d", "locked/x", "release/9"] {
        sandbox.create_branch(branch, "main").await.unwrap();
        let file = format!("{branch}.txt");
        sandbox.push(branch, &[(file.as_str(), "work\n")], "Work").await;
    }
    sandbox.add_branch_restriction("delete", "locked/*");
    for branch in ["merged/a", "moved/d", "locked/x", "release/9", "feature/login"] {
        let pr = sandbox.open_pull_request(branch, "main", &format!("Merge {branch}")).await;
        sandbox.merge_pull_request(pr).await.unwrap();
    }
    for (source, destination) in [("declined/b", "main"), ("main", "develop"), ("develop", "main")] {
        let pr = sandbox.open_pull_request(source, destination, "Declined").await;
        sandbox.decline_pull_request(pr).await.unwrap();
    }
    sandbox.open_pull_request("feature/login", "main", "Login, again").await;
    sandbox.push("moved/d", &[("more.txt", "after the merge\n")], "After the merge").await;
    sandbox.settle().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stale_branches_dry_run_gives_reasons_and_a_real_run_deletes_only_eligible_branches() {
    let s = stack("pruning").await;
    set_options(&s, SANDBOX, json!({"stale_branches": {"merged_days": 0}})).await;
    stale_scenario(&s).await;
    let before = bitbucket_branches(&s).await;
    s.running.sandbox.clear_requests();

    let (status, plan) = prune(&s, SANDBOX, json!({"mode": "stale-branches"})).await;
    assert_eq!(status, 200, "{plan}");
    assert_eq!(
        (plan["dry_run"].clone(), plan["planned_deletions"].clone(), plan["deleted"].clone()),
        (json!(true), json!(2), json!(0))
    );
    let reason = |branch: &str| entry(&plan, branch)["reason"].as_str().unwrap().to_owned();
    let decision = |branch: &str| entry(&plan, branch)["decision"].as_str().unwrap().to_owned();
    assert_eq!(reason("main"), "main branch");
    assert_eq!(reason("develop"), "protected (matches `develop`)");
    assert_eq!(reason("release/9"), "protected (matches `release/*`)");
    assert!(reason("feature/login").starts_with("open pull request #"), "{plan}");
    assert_eq!(reason("locked/x"), "delete restriction `locked/*`");
    assert!(reason("moved/d").starts_with("commits since pull request #"), "{plan}");
    assert!(reason("fresh/c").starts_with("last commit 0 days ago"), "{plan}");
    assert!(reason("merged/a").starts_with("pull request #") && reason("merged/a").ends_with("merged 0 days ago"));
    assert!(reason("declined/b").ends_with("declined 0 days ago"), "{plan}");
    let planned: Vec<String> = plan["branches"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["decision"] == "delete")
        .map(|b| b["branch"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(planned, ["declined/b", "merged/a"]);
    assert_eq!(decision("main"), "keep");
    assert!(entry(&plan, "merged/a").get("outcome").is_none(), "a dry run does nothing");
    let reads: Vec<String> = ours(&s.running.sandbox).iter().map(|r| format!("{} {}", r.method, r.path)).collect();
    // Branches, pull requests, delete restrictions, the repository (its main branch): one page each.
    assert_eq!(reads.len(), 4, "{reads:#?}");
    assert!(reads.iter().all(|r| r.starts_with("GET ")), "a dry run only reads: {reads:#?}");
    assert_eq!(bitbucket_branches(&s).await, before);
    assert!(audit(&s, SANDBOX).await.is_empty());

    let (status, done) = prune(&s, SANDBOX, json!({"mode": "stale-branches", "dry_run": false})).await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(
        (done["dry_run"].clone(), done["deleted"].clone(), done["failed"].clone()),
        (json!(false), json!(2), json!(0))
    );
    assert_eq!(entry(&done, "merged/a")["outcome"], "deleted");
    assert!(entry(&done, "main").get("outcome").is_none());
    let after = bitbucket_branches(&s).await;
    let removed: HashSet<String> = before.difference(&after).cloned().collect();
    assert_eq!(removed, HashSet::from(["merged/a".to_owned(), "declined/b".to_owned()]));
    let deletions: Vec<(String, String)> = audit(&s, SANDBOX)
        .await
        .iter()
        .filter(|a| a["action"] == "branch_deleted")
        .map(|a| (a["branch"].as_str().unwrap().to_owned(), a["reason"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(deletions.len(), 2, "{deletions:?}");
    assert!(deletions.iter().all(|(b, r)| r == &reason(b)), "each deletion audited with its reason: {deletions:?}");
    let envs = eventually(&s, SANDBOX, "the deleted branches' environments pruned", |e| {
        find(e, "merged/a").is_none() && find(e, "declined/b").is_none()
    })
    .await;
    assert!(find(&envs, "fresh/c").is_some());

    let (_, again) = prune(&s, SANDBOX, json!({"mode": "stale-branches", "dry_run": false})).await;
    assert_eq!((again["planned_deletions"].clone(), again["deleted"].clone()), (json!(0), json!(0)), "{again}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cap_holds_inactivity_follows_the_clock_and_schedules_honour_the_setting() {
    let s = stack("pruning").await;
    let sandbox = &s.running.sandbox;
    set_options(&s, SANDBOX, json!({"stale_branches": {"max_deletions": 2}})).await;
    let old: Vec<String> = (1..=5).map(|i| format!("old/{i}")).collect();
    sandbox.seed_branches(&old, "main").unwrap();
    sandbox.advance_clock(chrono::Duration::days(100));
    sandbox.push("fresh/x", &[("x.txt", "new\n")], "New work").await;
    let pruner = s.running.pruner.clone();

    let plan = pruner.stale_branches(SANDBOX, true, sandbox.now()).await.unwrap();
    // old/1..5 and feature/login have had no commit for 100 days; the cap allows two.
    assert_eq!((plan.planned_deletions, plan.deleted), (2, 0));
    let capped = plan.branches.iter().filter(|b| b.plan.reason.starts_with("deletion cap reached (2 per run)")).count();
    assert_eq!(capped, 4, "{plan:#?}");
    let fresh = plan.branches.iter().find(|b| b.plan.branch == "fresh/x").unwrap();
    assert_eq!(fresh.plan.decision, Decision::Keep);
    assert!(plan.branches.iter().any(|b| b.plan.reason == "no commit for 100 days"), "{plan:#?}");

    let before = bitbucket_branches(&s).await;
    let done = pruner.stale_branches(SANDBOX, false, sandbox.now()).await.unwrap();
    assert_eq!((done.deleted, done.failed), (2, 0));
    let after = bitbucket_branches(&s).await;
    assert_eq!(before.len() - after.len(), 2);
    assert!(["main", "develop", "fresh/x"].iter().all(|b| after.contains(*b)), "{after:?}");

    // Scheduled: a dry run while the policy is not enabled…
    let reports = pruner.run_scheduled(sandbox.now()).await.unwrap();
    let stale = reports[0].stale_branches.as_ref().unwrap();
    assert_eq!((stale.dry_run, stale.planned_deletions, stale.deleted), (true, 2, 0));
    assert_eq!(bitbucket_branches(&s).await, after);
    // …and deletions once it is.
    set_options(&s, SANDBOX, json!({"stale_branches": {"max_deletions": 2, "enabled": true}})).await;
    let reports = pruner.run_scheduled(sandbox.now()).await.unwrap();
    let stale = reports[0].stale_branches.as_ref().unwrap();
    assert_eq!((stale.dry_run, stale.deleted), (false, 2), "{reports:#?}");
    assert_eq!(after.len() - bitbucket_branches(&s).await.len(), 2);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn data_center_reconciles_and_deletes_through_branch_utils() {
    let s = stack("pruning").await;
    let sandbox = &s.running.sandbox;
    let id = s.data_center_integration(json!({"options": {"stale_branches": {"merged_days": 0}}})).await;
    sandbox.create_branch("dc/topic", "main").await.unwrap();
    sandbox.add_branch_restriction("delete", "dc/locked");
    sandbox.create_branch("dc/locked", "main").await.unwrap();
    for branch in ["dc/topic", "dc/locked"] {
        let pr = sandbox.open_pull_request(branch, "main", "Done").await;
        sandbox.merge_pull_request(pr).await.unwrap();
    }

    let (status, report) = prune(&s, &id, json!({"mode": "environments"})).await;
    assert_eq!((status, report["listed"].clone(), report["added"].clone()), (200, json!(5), json!(5)), "{report}");
    sandbox.clear_requests();
    let (status, done) = prune(&s, &id, json!({"mode": "stale-branches", "dry_run": false})).await;
    assert_eq!(status, 200, "{done}");
    assert_eq!((done["main_branch"].clone(), done["deleted"].clone()), (json!("main"), json!(1)), "{done}");
    assert_eq!(entry(&done, "dc/topic")["outcome"], "deleted");
    assert_eq!(entry(&done, "dc/locked")["reason"], "delete restriction `dc/locked`");
    assert_eq!(entry(&done, "main")["reason"], "main branch");
    let requests = ours(sandbox);
    assert_eq!(requests.len(), 5, "four reads and one deletion: {requests:#?}");
    let deletes: Vec<_> = requests.iter().filter(|r| r.method == "DELETE").collect();
    assert_eq!(deletes.len(), 1, "{deletes:?}");
    assert_eq!(deletes[0].path, "/rest/branch-utils/latest/projects/SANDBOX/repos/demo/branches");
    assert_eq!(deletes[0].status, 204);
    assert!(requests.iter().any(|r| r.path.ends_with("/branches") && r.query.contains("details=true")));
    assert!(
        requests.iter().any(|r| r.path.contains("/rest/branch-permissions/2.0/") && r.query.contains("no-deletes"))
    );
    assert!(!bitbucket_branches(&s).await.contains("dc/topic"));
    assert!(find(&environments(&s, &id).await, "dc/topic").is_none(), "its environment went with it");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refusals() {
    let s = stack("pruning").await;
    for (body, code) in [
        (json!({"mode": "everything"}), 400),
        (json!({"mode": "environments", "dry_run": true}), 400),
        (json!({"mode": "stale-branches", "force": true}), 400),
        (json!({}), 400),
    ] {
        let (status, answer) = prune(&s, SANDBOX, body.clone()).await;
        assert_eq!(status, code, "{body}: {answer}");
    }
    assert_eq!(prune(&s, "nope", json!({"mode": "environments"})).await.0, 404);
    assert_eq!(s.get("/integrations/nope/environments").await.0, 404);
    assert_eq!(s.get("/integrations/sandbox/environments?limit=0").await.0, 400);

    set_options(&s, SANDBOX, json!({"fetch_branches": false})).await;
    let (status, answer) = prune(&s, SANDBOX, json!({"mode": "environments"})).await;
    assert_eq!(status, 409, "{answer}");
    s.running.sandbox.create_branch("unmirrored", "main").await.unwrap();
    s.running.sandbox.settle().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(environments(&s, SANDBOX).await.is_empty(), "without fetch_branches nothing is mirrored");

    assert_eq!(s.post("/integrations/sandbox/disconnect").await.0, 200);
    for body in [json!({"mode": "environments"}), json!({"mode": "stale-branches"})] {
        let (status, answer) = prune(&s, SANDBOX, body).await;
        assert_eq!(status, 409, "{answer}");
    }
    assert_eq!(s.get("/integrations/sandbox/environments").await.0, 200, "reading stays possible");
    assert!(s.running.pruner.run_scheduled(Utc::now()).await.unwrap().is_empty(), "inactive: not scheduled");
    s.stop().await;
}

/// xorshift64: a deterministic stream, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

#[test]
fn the_planner_never_deletes_what_it_must_keep() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let now = Utc::now();
    let prefixes = ["main", "master", "develop", "release/", "hotfix/", "feature/", "topic-", "locked/", "a/b/", ""];
    let glob_pool = ["main", "master", "develop", "release/*", "hotfix/*", "feature/**", "topic-*", "a/*"];
    let restriction_pool = ["locked/*", "a/*", "feature/x1", "*-9", "**"];
    let (mut deletions, mut keeps) = (0, 0);
    for _ in 0..500 {
        let mut names = HashSet::new();
        let mut branches = Vec::new();
        for _ in 0..rng.below(30) {
            let prefix = rng.pick(&prefixes);
            let name = if ["main", "master", "develop"].contains(prefix) {
                prefix.to_string()
            } else {
                format!("{prefix}x{}", rng.below(12))
            };
            if !names.insert(name.clone()) {
                continue;
            }
            branches.push(BranchInfo {
                head: format!("{:040x}", rng.next()),
                last_commit: (rng.below(8) > 0).then(|| now - chrono::Duration::days(rng.below(400) as i64)),
                is_default: rng.below(25) == 0,
                name,
            });
        }
        let mut pull_requests = Vec::new();
        for id in 0..rng.below(25) {
            if branches.is_empty() {
                break;
            }
            let branch = &branches[rng.below(branches.len() as u64) as usize];
            pull_requests.push(PullRequestInfo {
                id,
                source_branch: branch.name.clone(),
                state: rng.pick(&["OPEN", "MERGED", "DECLINED", "SUPERSEDED"]).to_string(),
                updated: (rng.below(6) > 0).then(|| now - chrono::Duration::days(rng.below(60) as i64)),
                head: match rng.below(3) {
                    0 => None,
                    1 => Some(branch.head[..12].to_owned()),
                    _ => Some(format!("{:040x}", rng.next())),
                },
                destination_branch: Some("main".into()),
                destination_head: None,
                title: None,
                draft: false,
                source_repository: None,
                destination_repository: None,
            });
        }
        let mut restricted = Vec::new();
        for _ in 0..rng.below(3) {
            let pattern = rng.pick(&restriction_pool).to_string();
            // A restriction on every branch would make most runs trivially "keep everything".
            if pattern != "**" || rng.below(4) == 0 {
                restricted.push(pattern);
            }
        }
        let protected: Vec<String> = if rng.below(3) == 0 {
            StalePolicy::default().protected
        } else {
            (0..rng.below(4)).map(|_| rng.pick(&glob_pool).to_string()).collect()
        };
        let policy = StalePolicy {
            enabled: rng.below(2) == 0,
            merged_days: rng.below(30) as u32,
            inactive_days: rng.below(120) as u32,
            protected,
            max_deletions: rng.below(8) as u32,
        };
        let main_branch = match rng.below(4) {
            0 => None,
            _ if branches.is_empty() => Some("main".to_owned()),
            _ => Some(branches[rng.below(branches.len() as u64) as usize].name.clone()),
        };
        let plans = plan(&PlanInput {
            branches: &branches,
            pull_requests: &pull_requests,
            restricted: &restricted,
            main_branch: main_branch.as_deref(),
            policy: &policy,
            now,
        });

        assert_eq!(plans.len(), branches.len(), "every branch has one decision");
        let planned: Vec<_> = plans.iter().filter(|p| p.decision == Decision::Delete).collect();
        assert!(planned.len() <= policy.max_deletions as usize, "over the cap: {planned:?}");
        for p in &planned {
            let branch = branches.iter().find(|b| b.name == p.branch).unwrap();
            let why = format!("{} planned for deletion ({}) with {policy:?}, main {main_branch:?}", p.branch, p.reason);
            assert!(main_branch.as_deref() != Some(branch.name.as_str()) && !branch.is_default, "main: {why}");
            assert!(!domain::glob::any_matches(&policy.protected, &branch.name), "protected: {why}");
            assert!(
                !pull_requests.iter().any(|pr| pr.source_branch == branch.name && pr.state == "OPEN"),
                "open pull request: {why}"
            );
            assert!(!restricted.iter().any(|r| restriction_matches(r, &branch.name)), "restricted: {why}");
        }
        deletions += planned.len();
        keeps += plans.len() - planned.len();
    }
    // The property is not vacuous: both outcomes happen.
    assert!(deletions > 100 && keeps > 100, "{deletions} deletions, {keeps} keeps");
}
