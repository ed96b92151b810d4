//! Fault injection, one matrix: every operation that calls Bitbucket × every fault the sandbox
//! can inject (429 without Retry-After, 500, 502, 503 — once, then always —, a response slower
//! than the per-request timeout — held before Bitbucket acts, or after it acted —, a revoked
//! credential). For each pair, on a fresh local stack:
//! - a transient fault is retried and the operation succeeds with its effect exactly once; so
//!   does an answer lost after Bitbucket did the work, where the operation can tell (a run
//!   start, a commit guarded by its parent);
//! - a persistent one (or one the transport may not safely repeat) answers the documented
//!   status with the typed reason, leaves nothing that claims success, is kept as the
//!   integration's `last_error` (no secret in it), and once the fault is cleared the same
//!   request has its effect exactly once;
//! - a revoked credential moves the integration to `error` with the reason; a new credential
//!   through `PATCH /integrations/{id}` brings it back `active` and the work succeeds.
//!
//! Plus the webhook receiver over a DynamoDB table that does not exist (moto): 503, never 2xx.
//! The receiver over injected DynamoDB SDK faults is in `functions/webhook-receiver/tests`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bitbucket_client::RetryPolicy;
use bitbucket_sandbox::{self as sb, FaultKind, TestCounts};
use cross_function_tests::stack::Stack;
use cross_function_tests::{emulator_config, temp_dir, unique};
use local_stack::{Config, start};
use reqwest::Method;
use serde_json::{Value, json};
use tower::ServiceExt;

/// The transport's per-request timeout in these stacks (production: 10 s), so a response slower
/// than it costs a second rather than ten.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a latency fault holds a request (before or after Bitbucket acts): past the timeout,
/// so the client gives up first.
const SLOW: Duration = Duration::from_millis(2_000);

static INJECTED: AtomicUsize = AtomicUsize::new(0);
static OPERATIONS: AtomicUsize = AtomicUsize::new(0);
static LOST: AtomicUsize = AtomicUsize::new(0);

fn policy() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 4,
        base_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(200),
        request_timeout: REQUEST_TIMEOUT,
    }
}

/// The local stack with the short per-request timeout; its seeded integration is disconnected
/// (its webhook turned off) so no background delivery work touches the sandbox during a case.
async fn fast_stack() -> Stack {
    let temp = temp_dir("faults");
    let dir = temp.path().to_path_buf();
    let config = Config { bitbucket_retry: policy(), ..Config::for_tests(dir.clone()) };
    let running = start(config, false).await.expect("local stack starts");
    let token = running.seeded.api_token.expose().to_owned();
    let s = Stack { running, http: reqwest::Client::new(), token, dir, temp: Some(temp) };
    let (status, answer) = s.post("/integrations/sandbox/disconnect").await;
    assert_eq!(status, 200, "{answer}");
    s
}

fn api_token() -> Value {
    json!({"kind": "api_token", "email": sb::API_TOKEN_EMAIL, "token": sb::API_TOKEN})
}

fn access_token() -> Value {
    json!({"kind": "access_token", "token": sb::ACCESS_TOKEN})
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    RateLimitedOnce,
    RateLimitedAlways,
    Error500Once,
    Error500Always,
    BadGatewayOnce,
    BadGatewayAlways,
    UnavailableOnce,
    UnavailableAlways,
    /// Held before Bitbucket does anything: the client gives up, nothing happened.
    SlowOnce,
    SlowAlways,
    /// Bitbucket does the work, then holds the answer past the timeout: the answer is lost.
    SlowAnswerOnce,
    SlowAnswerAlways,
    Revoked,
}

const FAULTS: [Fault; 13] = [
    Fault::RateLimitedOnce,
    Fault::RateLimitedAlways,
    Fault::Error500Once,
    Fault::Error500Always,
    Fault::BadGatewayOnce,
    Fault::BadGatewayAlways,
    Fault::UnavailableOnce,
    Fault::UnavailableAlways,
    Fault::SlowOnce,
    Fault::SlowAlways,
    Fault::SlowAnswerOnce,
    Fault::SlowAnswerAlways,
    Fault::Revoked,
];

impl Fault {
    fn kind(self) -> FaultKind {
        use Fault::*;
        match self {
            RateLimitedOnce | RateLimitedAlways => FaultKind::Status { status: 429 },
            Error500Once | Error500Always => FaultKind::Status { status: 500 },
            BadGatewayOnce | BadGatewayAlways => FaultKind::Status { status: 502 },
            UnavailableOnce | UnavailableAlways => FaultKind::Status { status: 503 },
            SlowOnce | SlowAlways => FaultKind::Latency { millis: SLOW.as_millis() as u64 },
            SlowAnswerOnce | SlowAnswerAlways => FaultKind::LatencyAfter { millis: SLOW.as_millis() as u64 },
            Revoked => FaultKind::Revoke,
        }
    }

    fn once(self) -> bool {
        use Fault::*;
        matches!(self, RateLimitedOnce | Error500Once | BadGatewayOnce | UnavailableOnce | SlowOnce | SlowAnswerOnce)
    }

    /// After a 500 or a timeout Bitbucket may have done the work: only a request that is safe
    /// to repeat is retried.
    fn ambiguous(self) -> bool {
        use Fault::*;
        matches!(self, Error500Once | Error500Always | SlowOnce | SlowAlways | SlowAnswerOnce | SlowAnswerAlways)
    }

    fn slow(self) -> bool {
        use Fault::*;
        matches!(self, SlowOnce | SlowAlways | SlowAnswerOnce | SlowAnswerAlways)
    }

    /// The reason the API and `last_error` give when the fault wins.
    fn reason(self) -> &'static str {
        match self {
            Fault::RateLimitedOnce | Fault::RateLimitedAlways => "rate_limited",
            Fault::Revoked => "bad_credentials",
            _ => "unavailable",
        }
    }

    /// The status Bitbucket answered with, as the sandbox's request log shows it.
    fn logged_status(self) -> Option<u16> {
        match self.kind() {
            FaultKind::Status { status } => Some(status),
            FaultKind::Revoke => Some(401),
            FaultKind::Latency { .. } | FaultKind::LatencyAfter { .. } => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    /// `POST /integrations`: connection test, then the webhook registered in Bitbucket.
    Register,
    /// `POST /integrations/{id}/test`.
    TestConnection,
    /// `POST …/backup-targets/{name}/snapshots`: branch tip, then the commit.
    BackupSnapshot,
    /// `POST /integrations/{id}/pipelines`.
    PipelineRun,
    /// `POST /integrations/{id}/pipelines/refresh`.
    StatusPoll,
    /// `POST /integrations/{id}/prune {"mode": "environments"}`.
    Reconcile,
    /// `POST /integrations/{id}/prune {"mode": "stale-branches", "dry_run": false}`: the plan,
    /// then the deletions it makes.
    StaleBranches,
}

const OPS: [Op; 7] = [
    Op::Register,
    Op::TestConnection,
    Op::BackupSnapshot,
    Op::PipelineRun,
    Op::StatusPoll,
    Op::Reconcile,
    Op::StaleBranches,
];

const BACKUP_TARGET: &str = "faults";
const STALE_BRANCH: &str = "done/a";

/// What a case works on.
struct Ctx {
    /// The integration the operation acts on (`Register` has one only once it succeeded).
    id: Option<String>,
    credential: Value,
    /// The pipeline run a poll should complete.
    run: Option<String>,
}

/// An operation's answer, reduced to success or the failure it reported.
#[derive(Debug)]
enum Answer {
    Done,
    Failed { status: u16, reason: String, message: String, body: Value },
}

impl Op {
    /// The request the fault targets: the one that does the operation's work.
    fn target(self) -> (&'static str, &'static str) {
        match self {
            Op::Register => ("POST", "/hooks"),
            Op::TestConnection => ("GET", "/2.0/user"),
            Op::BackupSnapshot => ("POST", "/src"),
            Op::PipelineRun => ("POST", "/pipelines/"),
            Op::StatusPoll => ("GET", "/pipelines/"),
            Op::Reconcile => ("GET", "/refs/branches"),
            Op::StaleBranches => ("GET", "/pullrequests"),
        }
    }

    /// Whether the targeted request may be repeated after an ambiguous failure: reads, and a
    /// commit guarded by its parent. Creating a webhook or a pipeline run may not.
    fn repeatable(self) -> bool {
        !matches!(self, Op::Register | Op::PipelineRun)
    }

    /// Whether the operation still succeeds, its effect exactly once: a transient fault on a
    /// request it may repeat; or an answer lost after Bitbucket did the work, which a run start
    /// and a commit look for before giving up.
    fn survives(self, fault: Fault) -> bool {
        let lost_answer = matches!(fault, Fault::SlowAnswerOnce | Fault::SlowAnswerAlways);
        (fault.once() && (!fault.ambiguous() || self.repeatable()))
            || (lost_answer && matches!(self, Op::PipelineRun | Op::BackupSnapshot))
    }

    /// The status a failure is answered with: the connection test reports inside a 200.
    fn failure_status(self, fault: Fault) -> u16 {
        match (self, fault) {
            (Op::TestConnection, _) => 200,
            (_, Fault::Revoked) => 422,
            _ => 503,
        }
    }

    async fn setup(self, s: &Stack) -> Ctx {
        let mut ctx = Ctx { id: None, credential: api_token(), run: None };
        if self == Op::Register {
            return ctx;
        }
        // Only the connection test needs a webhook (it checks webhook permission); the others
        // get none, so nothing is delivered to them while a case runs.
        let mut extra = json!({"name": "Faulty", "register_webhook": self == Op::TestConnection});
        if self == Op::StaleBranches {
            extra["options"] = json!({"stale_branches": {"merged_days": 0}});
        }
        let (status, created) = s.create(api_token(), extra).await;
        assert_eq!(status, 201, "{created}");
        let id = created["id"].as_str().expect("an id").to_owned();
        let sandbox = &s.running.sandbox;
        match self {
            Op::BackupSnapshot => {
                let (status, answer) =
                    s.put(&backup_path(&id, ""), json!({"filename": "faults.json", "branch": "main"})).await;
                assert_eq!(status, 201, "{answer}");
            }
            Op::StatusPoll => {
                let (status, run) =
                    s.post_json(&format!("/integrations/{id}/pipelines"), json!({"branch": "main"})).await;
                assert_eq!((status, run["status"].as_str()), (201, Some("PENDING")), "{run}");
                let uuid = run["uuid"].as_str().expect("a uuid").to_owned();
                let tests = TestCounts { total: 12, passed: 12, failed: 0, skipped: 0 };
                sandbox.complete_pipeline(&uuid, "SUCCESSFUL", Some(tests)).expect("the run completes");
                ctx.run = Some(uuid);
            }
            Op::Reconcile => {
                let (status, first) = prune(s, &id, json!({"mode": "environments"})).await;
                assert_eq!((status, first["added"].as_u64()), (200, Some(3)), "{first}");
                // Two missed webhooks: a deletion and a creation.
                sandbox.delete_branch_quietly("develop").expect("develop exists");
                sandbox.seed_branches(&["quiet/new".to_owned()], "main").expect("a new branch");
            }
            Op::StaleBranches => {
                sandbox.create_branch(STALE_BRANCH, "main").await.expect("a branch");
                sandbox.push(STALE_BRANCH, &[("done.txt", "done\n")], "Done").await;
                let pr = sandbox.open_pull_request(STALE_BRANCH, "main", "Done").await;
                sandbox.merge_pull_request(pr).await.expect("merged");
                sandbox.settle().await;
            }
            Op::Register | Op::TestConnection | Op::PipelineRun => {}
        }
        ctx.id = Some(id);
        ctx
    }

    async fn fire(self, s: &Stack, ctx: &Ctx) -> Answer {
        OPERATIONS.fetch_add(1, Ordering::SeqCst);
        let id = ctx.id.as_deref().unwrap_or_default();
        let (status, body) = match self {
            Op::Register => s.create(ctx.credential.clone(), json!({"name": "Registered"})).await,
            Op::TestConnection => s.post(&format!("/integrations/{id}/test")).await,
            Op::BackupSnapshot => {
                s.post_json(&backup_path(id, "/snapshots"), json!({"document": {"collection": "orders", "rev": 1}}))
                    .await
            }
            Op::PipelineRun => s.post_json(&format!("/integrations/{id}/pipelines"), json!({"branch": "main"})).await,
            Op::StatusPoll => s.post(&format!("/integrations/{id}/pipelines/refresh")).await,
            Op::Reconcile => prune(s, id, json!({"mode": "environments"})).await,
            Op::StaleBranches => prune(s, id, json!({"mode": "stale-branches", "dry_run": false})).await,
        };
        let ok = match self {
            Op::Register | Op::PipelineRun => status == 201,
            Op::BackupSnapshot => status == 201 && body["changed"] == true,
            Op::TestConnection => status == 200 && body["test"]["ok"] == true,
            Op::StatusPoll | Op::Reconcile => status == 200,
            Op::StaleBranches => status == 200 && body["deleted"] == 1 && body["failed"] == 0,
        };
        if ok {
            return Answer::Done;
        }
        let (reason, message) = match self {
            Op::TestConnection if status == 200 => (&body["test"]["reason"], &body["test"]["message"]),
            _ => (&body["error"]["code"], &body["error"]["message"]),
        };
        let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
        Answer::Failed { status, reason: text(reason), message: text(message), body }
    }

    /// How many times the operation's effect happened, checking on the way that Bitbucket and
    /// the stored state agree (nothing stored that claims success Bitbucket did not see, and
    /// nothing in Bitbucket that no record knows of).
    async fn effect(self, s: &Stack, ctx: &Ctx) -> usize {
        let id = ctx.id.as_deref().unwrap_or_default();
        let sandbox = &s.running.sandbox;
        match self {
            Op::Register => {
                let (_, list) = s.get("/integrations").await;
                let ours: Vec<String> = list["integrations"]
                    .as_array()
                    .expect("a list")
                    .iter()
                    .filter_map(|i| i["id"].as_str())
                    .filter(|i| *i != "sandbox")
                    .map(str::to_owned)
                    .collect();
                let mut hooked: Vec<String> = sandbox
                    .hooks()
                    .iter()
                    .filter_map(|h| h["url"].as_str()?.rsplit_once("/webhooks/").map(|(_, id)| id.to_owned()))
                    .filter(|id| id != "sandbox")
                    .collect();
                hooked.sort();
                let mut registered = ours.clone();
                registered.sort();
                assert_eq!(hooked, registered, "every webhook in Bitbucket belongs to a stored integration");
                let names: Vec<String> = secrets_file(s).into_keys().collect();
                let expected: Vec<String> = ["local/sandbox/credential".to_owned(), "local/sandbox/webhook".to_owned()]
                    .into_iter()
                    .chain(ours.iter().flat_map(|id| [format!("local/{id}/credential"), format!("local/{id}/webhook")]))
                    .collect();
                let (mut names, mut expected) = (names, expected);
                names.sort();
                expected.sort();
                assert_eq!(names, expected, "no secret outlives a failed registration");
                ours.len()
            }
            Op::TestConnection => {
                let integration = integration(s, id).await;
                usize::from(integration["status"] == "active" && integration["last_error"].is_null())
            }
            Op::BackupSnapshot => {
                let (_, history) = s.get(&backup_path(id, "/history")).await;
                let entries = history["history"].as_array().expect("a history").len();
                let (_, target) = s.get(&backup_path(id, "")).await;
                assert_eq!(sandbox.commit_count(), entries, "every commit in Bitbucket is in the history");
                assert_eq!(target["last_commit"].is_null(), entries == 0, "{target}");
                entries
            }
            Op::PipelineRun => {
                let (_, page) = s.get(&format!("/integrations/{id}/pipelines")).await;
                let stored = page["pipelines"].as_array().expect("runs").len();
                assert_eq!(sandbox.pipelines().len(), stored, "every run in Bitbucket is stored");
                stored
            }
            Op::StatusPoll => {
                let uuid = ctx.run.as_deref().expect("a run");
                let (_, run) = s.get(&format!("/integrations/{id}/pipelines/{uuid}")).await;
                let done = run["status"] == "SUCCESSFUL";
                assert_eq!(done, run["tests"]["total"] == 12, "a final run carries its tests: {run}");
                if !done {
                    assert_eq!(run["status"], "PENDING", "{run}");
                }
                let report_reads =
                    sandbox.requests().iter().filter(|r| r.path.ends_with("/test_reports") && r.status == 200).count();
                assert!(report_reads <= 1, "test reports are read once, not {report_reads} times");
                usize::from(done)
            }
            Op::Reconcile => {
                let pruned = audit(s, id)
                    .await
                    .iter()
                    .filter(|a| a["branch"] == "develop" && a["action"] == "environment_pruned")
                    .count();
                let (_, page) = s.get(&format!("/integrations/{id}/environments")).await;
                let branches: Vec<&str> = page["environments"]
                    .as_array()
                    .expect("environments")
                    .iter()
                    .filter_map(|e| e["branch"].as_str())
                    .collect();
                assert_eq!(branches.contains(&"develop"), pruned == 0, "pruned iff audited: {branches:?}");
                assert_eq!(branches.contains(&"quiet/new"), pruned > 0, "a listing adds and prunes together");
                pruned
            }
            Op::StaleBranches => {
                let audited = audit(s, id)
                    .await
                    .iter()
                    .filter(|a| a["branch"] == STALE_BRANCH && a["action"] == "branch_deleted")
                    .count();
                let deletions = sandbox
                    .requests()
                    .iter()
                    .filter(|r| r.method == "DELETE" && r.path.ends_with("/refs/branches/done/a") && r.status < 300)
                    .count();
                assert_eq!(audited, deletions, "every deletion is audited, and only deletions");
                audited
            }
        }
    }
}

fn backup_path(id: &str, rest: &str) -> String {
    format!("/integrations/{id}/backup-targets/{BACKUP_TARGET}{rest}")
}

async fn prune(s: &Stack, id: &str, body: Value) -> (u16, Value) {
    s.post_json(&format!("/integrations/{id}/prune"), body).await
}

async fn audit(s: &Stack, id: &str) -> Vec<Value> {
    let (status, page) = s.get(&format!("/integrations/{id}/prune-audit?limit=100")).await;
    assert_eq!(status, 200, "{page}");
    page["audit"].as_array().expect("entries").clone()
}

async fn integration(s: &Stack, id: &str) -> Value {
    let (status, integration) = s.get(&format!("/integrations/{id}")).await;
    assert_eq!(status, 200, "{integration}");
    integration
}

fn secrets_file(s: &Stack) -> BTreeMap<String, String> {
    let bytes = std::fs::read(s.dir.join("secrets.json")).expect("the secret file");
    serde_json::from_slice(&bytes).expect("a JSON object of secrets")
}

/// Every secret value the stack holds or was given: credentials, webhook secrets, the admin token.
fn secret_values(s: &Stack) -> Vec<String> {
    let mut values: Vec<String> = [
        sb::API_TOKEN,
        sb::ACCESS_TOKEN,
        sb::READONLY_ACCESS_TOKEN,
        sb::OAUTH_CONSUMER_SECRET,
        sb::APP_PASSWORD,
        sb::DC_HTTP_TOKEN,
    ]
    .map(str::to_owned)
    .to_vec();
    values.push(s.token.clone());
    for (name, value) in secrets_file(s) {
        if name.ends_with("/webhook") {
            let secrets: Value = serde_json::from_str(&value).expect("webhook secrets are JSON");
            values.extend(["current", "previous"].iter().filter_map(|k| secrets[k].as_str().map(str::to_owned)));
        }
    }
    values
}

fn assert_no_secret(s: &Stack, what: &str, value: &Value) {
    let text = value.to_string();
    for secret in secret_values(s) {
        assert!(!text.contains(&secret), "{what} carries a secret: {text}");
    }
}

fn inject(s: &Stack, method: Option<&str>, path: &str, fault: Fault) {
    INJECTED.fetch_add(1, Ordering::SeqCst);
    s.running.sandbox.inject_fault(sb::Fault {
        method: method.map(str::to_owned),
        path_contains: path.to_owned(),
        kind: fault.kind(),
        times: fault.once().then_some(1),
    });
}

async fn faults_left(s: &Stack) -> usize {
    let url = s.url("/sandbox/bitbucket/_admin/faults");
    let faults: Vec<Value> = s.http.get(url).send().await.expect("admin route").json().await.expect("a list");
    faults.len()
}

/// A request the fault held may still be running in the sandbox after the client gave up; let
/// it end before counting effects, so a late one would be seen.
async fn let_held_requests_finish(fault: Fault) {
    if fault.slow() {
        tokio::time::sleep(SLOW + Duration::from_millis(500)).await;
    }
}

/// One (operation, fault) pair on a fresh stack.
async fn case(op: Op, fault: Fault) {
    let label = format!("{op:?} × {fault:?}");
    let s = fast_stack().await;
    let mut ctx = op.setup(&s).await;
    s.running.sandbox.clear_requests();
    let (method, path) = op.target();
    match fault {
        // A revoked credential is refused everywhere, not just on one route.
        Fault::Revoked => inject(&s, None, "/2.0/", fault),
        _ => inject(&s, Some(method), path, fault),
    }
    let answer = op.fire(&s, &ctx).await;
    let_held_requests_finish(fault).await;
    if let Some(status) = fault.logged_status() {
        let hit = s.running.sandbox.requests().iter().any(|r| r.status == status);
        assert!(hit, "{label}: the fault was never met");
    }

    if op.survives(fault) {
        assert!(matches!(answer, Answer::Done), "{label}: should have come through, yet {answer:?}");
        if fault.once() {
            assert_eq!(faults_left(&s).await, 0, "{label}: the fault was used up");
        }
    } else {
        let Answer::Failed { status, reason, message, body } = &answer else {
            panic!("{label}: succeeded through a fault it cannot retry");
        };
        assert_eq!((*status, reason.as_str()), (op.failure_status(fault), fault.reason()), "{label}: {body}");
        assert!(!message.is_empty(), "{label}: a clear message: {body}");
        assert_no_secret(&s, &label, body);
        assert_eq!(op.effect(&s, &ctx).await, 0, "{label}: nothing claims success");
        if let Some(id) = &ctx.id {
            // Visible where people and schedules look: the integration's last error.
            let shown = integration(&s, id).await;
            assert_eq!(shown["last_error"]["reason"], fault.reason(), "{label}: {shown}");
            assert!(shown["last_error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{label}: {shown}");
            let status = if fault == Fault::Revoked { "error" } else { "active" };
            assert_eq!(shown["status"], status, "{label}: {shown}");
            assert_no_secret(&s, &label, &shown);
        }
        // Re-drive: clear the fault (or replace the revoked credential), repeat the request.
        if fault == Fault::Revoked {
            recover_credential(&s, &mut ctx, &label).await;
        } else {
            s.running.sandbox.clear_faults();
        }
        let again = op.fire(&s, &ctx).await;
        assert!(matches!(again, Answer::Done), "{label}: re-driven, yet {again:?}");
    }
    let effect = op.effect(&s, &ctx).await;
    if effect != 1 {
        LOST.fetch_add(1, Ordering::SeqCst);
    }
    assert_eq!(effect, 1, "{label}: the effect happens exactly once");
    s.stop().await;
}

/// The lifecycle for a revoked credential: a new one is tested before it replaces the old one
/// (refused while Bitbucket still refuses), and once accepted the integration is `active`.
async fn recover_credential(s: &Stack, ctx: &mut Ctx, label: &str) {
    let Some(id) = ctx.id.clone() else {
        // Nothing was stored: connect again with the new credential.
        s.running.sandbox.clear_faults();
        ctx.credential = access_token();
        return;
    };
    let path = format!("/integrations/{id}");
    let patch = json!({"credential": access_token()});
    let (status, refused) = s.call(Method::PATCH, &path, Some(patch.clone())).await;
    assert_eq!((status, refused["error"]["code"].as_str()), (422, Some("bad_credentials")), "{label}: {refused}");
    assert_eq!(integration(s, &id).await["status"], "error", "{label}: still in error");
    s.running.sandbox.clear_faults();
    let (status, fixed) = s.call(Method::PATCH, &path, Some(patch)).await;
    assert_eq!(status, 200, "{label}: {fixed}");
    assert_eq!((fixed["status"].as_str(), &fixed["last_error"]), (Some("active"), &Value::Null), "{label}: {fixed}");
    assert_eq!(fixed["credential"]["kind"], "access_token", "{label}: {fixed}");
    ctx.credential = access_token();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_operation_survives_every_bitbucket_fault() {
    let started = Instant::now();
    // One task per operation (its faults in turn), so slow cases overlap; every failing pair is
    // reported, not just the first.
    let mut tasks = tokio::task::JoinSet::new();
    for op in OPS {
        tasks.spawn(async move {
            let mut failed = Vec::new();
            for fault in FAULTS {
                if let Err(e) = tokio::spawn(case(op, fault)).await {
                    let panic = e.into_panic();
                    let message = panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|m| m.to_string()))
                        .unwrap_or_default();
                    failed.push(format!("{op:?} × {fault:?}: {message}"));
                }
            }
            failed
        });
    }
    let mut failed = Vec::new();
    while let Some(done) = tasks.join_next().await {
        failed.extend(done.expect("an operation's task ends"));
    }
    assert!(failed.is_empty(), "{} of {} pairs failed:\n{}", failed.len(), OPS.len() * FAULTS.len(), failed.join("\n"));
    println!(
        "FIGURES faults injected={} operations={} cases={} lost={} seconds={:.1}",
        INJECTED.load(Ordering::SeqCst),
        OPERATIONS.load(Ordering::SeqCst),
        OPS.len() * FAULTS.len(),
        LOST.load(Ordering::SeqCst),
        started.elapsed().as_secs_f64()
    );
}

/// The receiver over a table that does not exist (a wrong `STATE_TABLE`, say): every delivery is
/// answered 503, so Bitbucket redelivers it once the table is there; never a 2xx.
#[tokio::test]
async fn a_missing_table_makes_the_receiver_answer_503() {
    let config = emulator_config().await;
    let store = aws_adapters::DynamoStore::new(aws_sdk_dynamodb::Client::new(&config), unique("missing"));
    let dir = temp_dir("faults-receiver");
    let backends = domain::Backends {
        store: Arc::new(store),
        secrets: Arc::new(local_adapters::FileSecretStore::new(dir.path().join("secrets.json"))),
    };
    let receiver = domain::Intake::new(backends, chrono::Duration::days(30), std::time::Duration::ZERO);
    let router = webhook_receiver::app(Arc::new(receiver));
    let body = br#"{"push":{"changes":[]},"repository":{"full_name":"sandbox/demo"}}"#;
    let request = axum::http::Request::post("/webhooks/sandbox")
        .header("content-type", "application/json")
        .header("x-event-key", "repo:push")
        .header("x-request-uuid", "missing-table-1")
        .header("x-hub-signature", domain::signature::sign(b"whatever", body))
        .body(axum::body::Body::from(body.to_vec()))
        .expect("a request");
    let response = router.oneshot(request).await.expect("an answer");
    let status = response.status().as_u16();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.expect("a body");
    let answer: Value = serde_json::from_slice(&bytes).expect("JSON");
    assert_eq!((status, answer["error"]["code"].as_str()), (503, Some("unavailable")), "{answer}");
    // An anonymous caller learns nothing of the infrastructure (the table's name, the account,
    // AWS's error): the detail goes to the log, the answer carries the request id to find it.
    let message = answer["error"]["message"].as_str().unwrap_or_default();
    assert_eq!(message, "a service this API depends on is unavailable; retry later");
    assert!(!answer.to_string().contains("ResourceNotFound") && !answer.to_string().contains("missing-"), "{answer}");
    assert!(answer["error"]["request_id"].is_string(), "{answer}");
}
