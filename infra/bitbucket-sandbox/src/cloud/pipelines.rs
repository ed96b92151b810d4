//! Bitbucket Cloud Pipelines (a subset) on `sandbox/demo`: runs triggered through the API on a
//! branch, each with one step (`Build`), moved by hand (the default: `Sandbox::start_pipeline`,
//! `Sandbox::complete_pipeline`, `/_admin/pipelines/...`) or on a timer
//! (`Sandbox::set_pipeline_timing`). Like Pipelines, every start and finish is also a build
//! status (`pipeline-<build number>`) on the run's commit, so status webhooks go out.
//!
//! Runs live beside the repository `State`, in their own lock, always taken before the state's.
//! Automatic runs move lazily, whenever anything here looks at the runs, and a timer per run
//! looks at the moment each move is due, so the status webhooks leave on time without polling.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State as AxumState;
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::cloud::auth::Caller;
use crate::cloud::scopes::{self, Operation};
use crate::error::{AdminError, Error, PathParams, parse_json};
use crate::paging::{paginate, param, percent_decode};
use crate::state::{Event, State, StatusInput};
use crate::{REPOSITORY, Sandbox, WORKSPACE, lock};

const STEP_NAME: &str = "Build";
/// What an automatic run reports when it completes.
const AUTOMATIC_TESTS: TestCounts = TestCounts { total: 12, passed: 12, failed: 0, skipped: 0 };
/// Timers wake this much after a move is due, so the clock has surely passed it.
const TIMER_SLACK: Duration = Duration::from_millis(5);

/// The test report of a completed run's step (`…/steps/{uuid}/test_reports`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TestCounts {
    pub total: u32,
    pub passed: u32,
    pub failed: u32,
    pub skipped: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Successful,
    Failed,
    Error,
    Stopped,
    Expired,
}

impl Outcome {
    const ALL: [Outcome; 5] =
        [Outcome::Successful, Outcome::Failed, Outcome::Error, Outcome::Stopped, Outcome::Expired];

    fn name(self) -> &'static str {
        match self {
            Outcome::Successful => "SUCCESSFUL",
            Outcome::Failed => "FAILED",
            Outcome::Error => "ERROR",
            Outcome::Stopped => "STOPPED",
            Outcome::Expired => "EXPIRED",
        }
    }

    fn parse(s: &str) -> Result<Self, Error> {
        Outcome::ALL.into_iter().find(|o| o.name().eq_ignore_ascii_case(s.trim())).ok_or_else(|| {
            let names: Vec<_> = Outcome::ALL.iter().map(|o| o.name()).collect();
            Error::bad_request(format!("result: {s:?} is not one of {}", names.join(", ")))
        })
    }

    /// The build status Pipelines sets for it.
    fn status_state(self) -> &'static str {
        match self {
            Outcome::Successful => "SUCCESSFUL",
            Outcome::Stopped => "STOPPED",
            Outcome::Failed | Outcome::Error | Outcome::Expired => "FAILED",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Pending,
    Running,
    Completed(Outcome),
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Pending => "PENDING",
            Phase::Running => "IN_PROGRESS",
            Phase::Completed(_) => "COMPLETED",
        }
    }

    /// `prefix` is `pipeline_state` for a run, `pipeline_step_state` for its step (as on Cloud).
    fn json(self, prefix: &str) -> Value {
        match self {
            Phase::Pending => json!({ "name": "PENDING", "type": format!("{prefix}_pending") }),
            Phase::Running if prefix == "pipeline_state" => json!({
                "name": "IN_PROGRESS",
                "type": "pipeline_state_in_progress",
                "stage": { "name": "RUNNING", "type": "pipeline_state_in_progress_running" },
            }),
            Phase::Running => json!({ "name": "IN_PROGRESS", "type": format!("{prefix}_in_progress") }),
            Phase::Completed(outcome) => json!({
                "name": "COMPLETED",
                "type": format!("{prefix}_completed"),
                "result": {
                    "name": outcome.name(),
                    "type": format!("{prefix}_completed_{}", outcome.name().to_ascii_lowercase()),
                },
            }),
        }
    }
}

struct Variable {
    key: String,
    value: String,
    secured: bool,
}

/// What a `pipeline_pullrequest_target` names besides the commit.
struct PullRequestTarget {
    id: String,
    source: String,
    destination: String,
    destination_commit: Option<String>,
}

/// A failed test case of a completed run (`…/test_reports/test_cases`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct FailedTest {
    pub name: String,
    pub suite: Option<String>,
    pub reason: Option<String>,
}

struct Run {
    uuid: String,
    step_uuid: String,
    build_number: u64,
    /// `(ref_type, ref_name)` of a `pipeline_ref_target`; `None` for a `pipeline_commit_target`
    /// or a `pipeline_pullrequest_target`.
    reference: Option<(String, String)>,
    pull_request: Option<PullRequestTarget>,
    /// Started by Bitbucket itself (a `pull-requests:` pipeline on push), not through the API.
    automatic: bool,
    failures: Vec<FailedTest>,
    commit: String,
    selector: Value,
    variables: Vec<Variable>,
    phase: Phase,
    created_on: DateTime<Utc>,
    started_on: Option<DateTime<Utc>>,
    completed_on: Option<DateTime<Utc>>,
    tests: Option<TestCounts>,
    /// Automatic runs: how long they stay pending, then in progress.
    timing: Option<(chrono::Duration, chrono::Duration)>,
}

/// Every run, oldest first, and the timing new runs get (`None`: they wait to be driven).
#[derive(Default)]
pub(crate) struct Pipelines {
    runs: Vec<Run>,
    timing: Option<(Duration, Duration)>,
    /// `bitbucket-pipelines.yml`'s `pull-requests:` pattern, when the repository has one: pull
    /// requests from a matching branch get a run by themselves whenever their head changes.
    pull_requests: Option<String>,
    /// The head each pull request's automatic run was started for.
    pull_request_heads: std::collections::HashMap<u64, String>,
}

/// `{uuid}`, `uuid` or `%7Buuid%7D`, any case, as one comparable form.
fn bare(uuid: &str) -> String {
    percent_decode(uuid.trim()).trim_start_matches('{').trim_end_matches('}').to_ascii_lowercase()
}

fn new_uuid() -> String {
    format!("{{{}}}", uuid::Uuid::new_v4())
}

fn iso(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, false)
}

fn seconds(from: DateTime<Utc>, to: DateTime<Utc>) -> i64 {
    (to - from).num_seconds().max(0)
}

fn chrono_duration(d: Duration) -> chrono::Duration {
    // Beyond chrono's range means "never", as far as anyone can wait.
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::days(365 * 1000))
}

impl Run {
    fn api_url(&self, base: &str) -> String {
        format!("{base}/2.0/repositories/{WORKSPACE}/{REPOSITORY}/pipelines/{}", self.uuid)
    }

    fn html_url(&self, base: &str) -> String {
        format!("{base}/{WORKSPACE}/{REPOSITORY}/pipelines/results/{}", self.build_number)
    }

    /// Seconds spent running: to completion, or to `now` while in progress; 0 until it starts.
    fn duration(&self, now: DateTime<Utc>) -> i64 {
        match (self.started_on, self.completed_on) {
            (Some(start), Some(end)) => seconds(start, end),
            (Some(start), None) => seconds(start, now),
            (None, _) => 0,
        }
    }

    /// When an automatic run moves next.
    fn deadline(&self) -> Option<DateTime<Utc>> {
        let (pending, running) = self.timing?;
        match self.phase {
            Phase::Pending => self.created_on.checked_add_signed(pending),
            Phase::Running => self.started_on?.checked_add_signed(running),
            Phase::Completed(_) => None,
        }
    }

    fn json(&self, state: &State, base: &str, now: DateTime<Utc>) -> Value {
        let repository = state.repository_json();
        let variables: Vec<Value> = self
            .variables
            .iter()
            .map(|v| {
                let mut json = json!({ "type": "pipeline_variable", "key": v.key, "secured": v.secured });
                if !v.secured {
                    json["value"] = json!(v.value);
                }
                json
            })
            .collect();
        let duration = self.duration(now);
        let mut json = json!({
            "type": "pipeline",
            "uuid": self.uuid,
            "build_number": self.build_number,
            "creator": crate::cloud::render::user_json(),
            "repository": {
                "type": "repository",
                "full_name": repository["full_name"],
                "name": repository["name"],
                "uuid": repository["uuid"],
            },
            "target": self.target_json(),
            // Only `type`: schema `pipeline_trigger` defines no `name`, and live Cloud sends none.
            "trigger": { "type": if self.automatic { "pipeline_trigger_push" } else { "pipeline_trigger_manual" } },
            "variables": variables,
            "state": self.phase.json("pipeline_state"),
            "created_on": iso(&self.created_on),
            "duration_in_seconds": duration,
            "build_seconds_used": duration,
            "links": {
                "self": { "href": self.api_url(base) },
                "html": { "href": self.html_url(base) },
            },
        });
        if let Some(completed) = &self.completed_on {
            json["completed_on"] = json!(iso(completed));
        }
        json
    }

    fn target_json(&self) -> Value {
        let commit = json!({ "type": "commit", "hash": self.commit });
        if let Some(pr) = &self.pull_request {
            let mut target = json!({
                "type": "pipeline_pullrequest_target",
                "source": pr.source,
                "destination": pr.destination,
                "commit": commit,
                "pullrequest": { "type": "pullrequest", "id": pr.id.parse::<u64>().map_or(json!(pr.id), |id| json!(id)) },
                "selector": self.selector,
            });
            if let Some(hash) = &pr.destination_commit {
                target["destination_commit"] = json!({ "type": "commit", "hash": hash });
            }
            return target;
        }
        match &self.reference {
            Some((ref_type, ref_name)) => json!({
                "type": "pipeline_ref_target",
                "ref_type": ref_type,
                "ref_name": ref_name,
                "commit": commit,
                "selector": self.selector,
            }),
            None => json!({ "type": "pipeline_commit_target", "commit": commit, "selector": self.selector }),
        }
    }

    fn step_json(&self, now: DateTime<Utc>) -> Value {
        let mut json = json!({
            "type": "pipeline_step",
            "uuid": self.step_uuid,
            "name": STEP_NAME,
            "pipeline": { "type": "pipeline", "uuid": self.uuid },
            "state": self.phase.json("pipeline_step_state"),
        });
        if let Some(started) = &self.started_on {
            json["started_on"] = json!(iso(started));
            json["duration_in_seconds"] = json!(self.duration(now));
        }
        if let Some(completed) = &self.completed_on {
            json["completed_on"] = json!(iso(completed));
        }
        json
    }

    /// Sets the run's build status on its commit; the events it causes go to `events`.
    fn set_status(&self, state: &mut State, base: &str, status: &str, events: &mut Vec<Event>) {
        let description = match self.phase {
            Phase::Completed(outcome) => format!("Pipeline #{} {}", self.build_number, outcome.name().to_lowercase()),
            _ => format!("Pipeline #{} in progress", self.build_number),
        };
        let input = StatusInput {
            key: format!("pipeline-{}", self.build_number),
            state: status.to_owned(),
            name: Some(format!("Pipeline #{}", self.build_number)),
            url: Some(self.html_url(base)),
            refname: self
                .reference
                .as_ref()
                .map(|(_, name)| name.clone())
                .or_else(|| self.pull_request.as_ref().map(|pr| pr.source.clone())),
            description: Some(description),
        };
        // Commits are never removed, so this only fails if that changes.
        match state.set_status(&self.commit, input) {
            Ok((_, caused)) => events.extend(caused),
            Err(e) => tracing::warn!(error = %e.message, "could not set a pipeline's build status"),
        }
    }
}

/// Everything a change to the runs needs: the repository state, the public base URL, and where
/// the webhook events caused go.
struct Ctx<'a> {
    state: &'a mut State,
    base: &'a str,
    events: &'a mut Vec<Event>,
}

impl Pipelines {
    fn index(&self, uuid: &str) -> Result<usize, Error> {
        let wanted = bare(uuid);
        self.runs
            .iter()
            .position(|r| bare(&r.uuid) == wanted)
            .ok_or_else(|| Error::not_found(format!("Pipeline {uuid} not found")))
    }

    fn run(&self, uuid: &str) -> Result<&Run, Error> {
        self.index(uuid).map(|i| &self.runs[i])
    }

    fn start(&mut self, i: usize, at: DateTime<Utc>, ctx: &mut Ctx) -> Result<(), Error> {
        let run = &mut self.runs[i];
        if run.phase != Phase::Pending {
            return Err(Error::bad_request(format!(
                "Pipeline #{} is not pending (it is {})",
                run.build_number,
                run.phase.name()
            )));
        }
        run.phase = Phase::Running;
        run.started_on = Some(at);
        run.set_status(ctx.state, ctx.base, "INPROGRESS", ctx.events);
        Ok(())
    }

    fn complete(
        &mut self,
        i: usize,
        outcome: Outcome,
        tests: Option<TestCounts>,
        failures: Vec<FailedTest>,
        at: DateTime<Utc>,
        ctx: &mut Ctx,
    ) -> Result<(), Error> {
        let run = &mut self.runs[i];
        if let Phase::Completed(_) = run.phase {
            return Err(Error::bad_request(format!("Pipeline #{} has already completed", run.build_number)));
        }
        if let Some(t) = tests {
            let counted = u64::from(t.passed) + u64::from(t.failed) + u64::from(t.skipped);
            if counted != u64::from(t.total) {
                return Err(Error::bad_request("tests: passed + failed + skipped must equal total"));
            }
        }
        let failed = tests.map_or(0, |t| t.failed as usize);
        if failures.len() > failed {
            return Err(Error::bad_request("failures: more failed tests named than tests.failed counts"));
        }
        run.phase = Phase::Completed(outcome);
        run.completed_on = Some(at);
        run.tests = tests;
        // Failed tests not named get a name of their own.
        run.failures = failures;
        for n in run.failures.len()..failed {
            run.failures.push(FailedTest {
                name: format!("test_{}", n + 1),
                suite: Some("sandbox.Suite".into()),
                reason: Some(format!("AssertionError: test {} failed", n + 1)),
            });
        }
        run.set_status(ctx.state, ctx.base, outcome.status_state(), ctx.events);
        Ok(())
    }

    /// Moves every automatic run whose time has come, dating each move when it was due.
    fn advance(&mut self, ctx: &mut Ctx) {
        let now = ctx.state.now();
        for i in 0..self.runs.len() {
            while let Some(due) = self.runs[i].deadline().filter(|due| *due <= now) {
                let moved = match self.runs[i].phase {
                    Phase::Pending => self.start(i, due, ctx),
                    _ => self.complete(i, Outcome::Successful, Some(AUTOMATIC_TESTS), Vec::new(), due, ctx),
                };
                if moved.is_err() {
                    break;
                }
            }
        }
    }
}

impl Sandbox {
    /// Starts a pending run (`PENDING` → `IN_PROGRESS`), setting an `INPROGRESS` build status on
    /// its commit. `uuid` with or without braces. Call it inside a Tokio runtime: webhooks are
    /// sent from tasks on it.
    pub fn start_pipeline(&self, uuid: &str) -> Result<(), String> {
        self.drive(uuid, Drive::Start).map(drop).map_err(|e| e.message)
    }

    /// Completes a pending or running run with `result` (`SUCCESSFUL`, `FAILED`, `ERROR`,
    /// `EXPIRED` or `STOPPED`) and, optionally, a test report (`passed + failed + skipped` must
    /// be `total`); sets the matching build status (`FAILED` for `ERROR` and `EXPIRED`).
    pub fn complete_pipeline(&self, uuid: &str, result: &str, tests: Option<TestCounts>) -> Result<(), String> {
        self.complete_pipeline_with_failures(uuid, result, tests, Vec::new())
    }

    /// [`Sandbox::complete_pipeline`] naming the failed test cases (at most `tests.failed`; the
    /// others get names of their own), as `…/test_reports/test_cases` then lists them.
    pub fn complete_pipeline_with_failures(
        &self,
        uuid: &str,
        result: &str,
        tests: Option<TestCounts>,
        failures: Vec<FailedTest>,
    ) -> Result<(), String> {
        let outcome = Outcome::parse(result).map_err(|e| e.message)?;
        self.drive(uuid, Drive::Complete(outcome, tests, failures)).map(drop).map_err(|e| e.message)
    }

    /// `Some(pattern)`: the repository has a `pull-requests:` pipeline for `pattern` (`**`), so
    /// pull requests from a matching branch (not from forks) get a run by themselves when they
    /// open and whenever their head changes, as Bitbucket starts them; `None` (the default): none.
    pub fn set_pull_request_pipelines(&self, pattern: Option<&str>) {
        let _ = self.with_pipelines(|p, _| {
            p.pull_requests = pattern.map(str::to_owned);
            Ok(())
        });
    }

    /// Starts the automatic pull-request runs `events` call for (see
    /// [`Sandbox::set_pull_request_pipelines`]).
    pub(crate) fn pull_request_pipelines(&self, events: &[Event]) {
        let opened: Vec<u64> = events
            .iter()
            .filter(|e| matches!(e.key, "pullrequest:created" | "pullrequest:updated"))
            .filter_map(|e| e.payload.pointer("/pullrequest/id").and_then(Value::as_u64))
            .collect();
        if opened.is_empty() {
            return;
        }
        let base = self.public_base();
        let started = self.with_pipelines(|p, ctx| {
            let Some(pattern) = p.pull_requests.clone() else { return Ok(Vec::new()) };
            let mut started = Vec::new();
            for id in opened {
                let Some(pull) = ctx.state.pulls.get(&id) else { continue };
                if pull.fork.is_some() || !domain::glob::matches(&pattern, &pull.source) {
                    continue;
                }
                let (head, destination_head) = ctx.state.pull_heads(pull);
                if p.pull_request_heads.get(&id) == Some(&head) {
                    continue;
                }
                let mut run =
                    automatic_pull_request_run(&p.runs, &pattern, pull, head.clone(), destination_head, ctx.state);
                run.timing = p.timing.map(|(pending, running)| (chrono_duration(pending), chrono_duration(running)));
                let _ = run.json(ctx.state, base, run.created_on);
                started.push((run.uuid.clone(), run.timing.is_some()));
                p.pull_request_heads.insert(id, head);
                p.runs.push(run);
            }
            Ok(started)
        });
        for (uuid, automatic) in started.unwrap_or_default() {
            if automatic {
                self.schedule(uuid);
            }
        }
    }

    /// Every run, oldest first, as `GET …/pipelines/{uuid}` shows it.
    pub fn pipelines(&self) -> Vec<Value> {
        let base = self.public_base();
        self.with_pipelines(|p, ctx| {
            let now = ctx.state.now();
            Ok(p.runs.iter().map(|r| r.json(ctx.state, base, now)).collect())
        })
        .unwrap_or_default()
    }

    /// `Some((pending, running))`: runs created from now on are automatic, `PENDING` for
    /// `pending`, then `IN_PROGRESS` for `running`, then `COMPLETED` `SUCCESSFUL` with 12 passing
    /// tests. `None` (the default): new runs wait for [`Sandbox::start_pipeline`] and
    /// [`Sandbox::complete_pipeline`]. Runs already created keep the timing they had.
    pub fn set_pipeline_timing(&self, timing: Option<(Duration, Duration)>) {
        let _ = self.with_pipelines(|p, _| {
            p.timing = timing;
            Ok(())
        });
    }

    /// Runs `change` on the runs and the repository state together, after moving the automatic
    /// runs that are due, then sends the webhooks the build statuses caused, even when `change`
    /// fails.
    fn with_pipelines<T>(&self, change: impl FnOnce(&mut Pipelines, &mut Ctx) -> Result<T, Error>) -> Result<T, Error> {
        let mut pipelines = lock(&self.inner.pipelines);
        let base = self.public_base();
        self.apply(|state| {
            let mut events = Vec::new();
            let mut ctx = Ctx { state, base, events: &mut events };
            pipelines.advance(&mut ctx);
            let out = change(&mut pipelines, &mut ctx);
            Ok((out, events))
        })
        .and_then(|out| out)
    }

    /// Starts, completes or stops a run; answers with the run as the API shows it.
    fn drive(&self, uuid: &str, drive: Drive) -> Result<Value, Error> {
        let base = self.public_base();
        self.with_pipelines(|p, ctx| {
            let i = p.index(uuid)?;
            let now = ctx.state.now();
            match drive {
                Drive::Start => p.start(i, now, ctx)?,
                Drive::Complete(outcome, tests, failures) => p.complete(i, outcome, tests, failures, now, ctx)?,
            }
            Ok(p.runs[i].json(ctx.state, base, now))
        })
    }

    /// Wakes when each move of the automatic run `uuid` is due, until it completes or the
    /// sandbox is gone. Outside a Tokio runtime, runs still move when next looked at.
    fn schedule(&self, uuid: String) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let sandbox = Arc::downgrade(&self.inner);
        runtime.spawn(async move {
            loop {
                let Some(inner) = sandbox.upgrade() else { return };
                let wait = Sandbox { inner }.with_pipelines(|p, ctx| {
                    let due = p.run(&uuid)?.deadline();
                    Ok(due.map(|due| (due - ctx.state.now()).to_std().unwrap_or_default()))
                });
                match wait {
                    Ok(Some(wait)) => tokio::time::sleep(wait + TIMER_SLACK).await,
                    _ => return,
                }
            }
        });
    }
}

#[derive(Clone)]
enum Drive {
    Start,
    Complete(Outcome, Option<TestCounts>, Vec<FailedTest>),
}

/// The run Bitbucket starts by itself for a pull request's head.
fn automatic_pull_request_run(
    runs: &[Run],
    pattern: &str,
    pull: &crate::state::PullRequest,
    head: String,
    destination_head: String,
    state: &State,
) -> Run {
    Run {
        uuid: new_uuid(),
        step_uuid: new_uuid(),
        build_number: runs.len() as u64 + 1,
        reference: None,
        pull_request: Some(PullRequestTarget {
            id: pull.id.to_string(),
            source: pull.source.clone(),
            destination: pull.destination.clone(),
            destination_commit: Some(destination_head),
        }),
        automatic: true,
        failures: Vec::new(),
        commit: head,
        selector: json!({ "type": "pull-requests", "pattern": pattern }),
        variables: Vec::new(),
        phase: Phase::Pending,
        created_on: state.now(),
        started_on: None,
        completed_on: None,
        tests: None,
        timing: None,
    }
}

// ---- routes ---------------------------------------------------------------------------------

pub fn routes() -> Router<Sandbox> {
    let repo = |rest: &str| format!("/2.0/repositories/{{workspace}}/{{repo_slug}}/pipelines{rest}");
    Router::new()
        .route(&repo(""), get(list).post(create))
        .route(&repo("/"), get(list).post(create))
        .route(&repo("/{uuid}"), get(get_run))
        .route(&repo("/{uuid}/stopPipeline"), post(stop))
        .route(&repo("/{uuid}/steps"), get(list_steps))
        .route(&repo("/{uuid}/steps/"), get(list_steps))
        .route(&repo("/{uuid}/steps/{step}"), get(get_step))
        .route(&repo("/{uuid}/steps/{step}/test_reports"), get(test_reports))
        .route(&repo("/{uuid}/steps/{step}/test_reports/test_cases"), get(test_cases))
        .route(&repo("/{uuid}/steps/{step}/test_reports/test_cases/{case}/test_case_reasons"), get(test_case_reasons))
        .route("/_admin/pipelines/pull-requests", axum::routing::put(admin_set_pull_requests))
        .route("/_admin/pipelines", get(admin_list))
        .route("/_admin/pipelines/timing", get(admin_timing).put(admin_set_timing))
        .route("/_admin/pipelines/{uuid}/{action}", post(admin_drive))
}

type RunPath = PathParams<(String, String, String)>;
type StepPath = PathParams<(String, String, String, String)>;

/// The operation's scopes, on `sandbox/demo` only.
fn check(caller: &Caller, operation: &Operation, workspace: &str, repo: &str) -> Result<(), Error> {
    caller.require(operation)?;
    if workspace.eq_ignore_ascii_case(WORKSPACE) && repo.eq_ignore_ascii_case(REPOSITORY) {
        Ok(())
    } else {
        Err(Error::not_found(format!("Repository {workspace}/{repo} not found")))
    }
}

#[derive(Deserialize)]
struct NewRun {
    target: Option<TargetBody>,
    #[serde(default)]
    variables: Vec<VariableBody>,
}

#[derive(Deserialize)]
struct TargetBody {
    #[serde(rename = "type")]
    kind: Option<String>,
    ref_type: Option<String>,
    ref_name: Option<String>,
    commit: Option<CommitBody>,
    selector: Option<SelectorBody>,
    // `pipeline_pullrequest_target`
    source: Option<String>,
    destination: Option<String>,
    destination_commit: Option<CommitBody>,
    pullrequest: Option<PullRequestBody>,
}

#[derive(Deserialize)]
struct PullRequestBody {
    /// The operation's example sends it as a string (`"3"`); a number is taken too.
    id: Option<Value>,
}

#[derive(Deserialize)]
struct CommitBody {
    hash: Option<String>,
}

#[derive(Deserialize)]
struct SelectorBody {
    #[serde(rename = "type")]
    kind: Option<String>,
    pattern: Option<String>,
}

#[derive(Deserialize)]
struct VariableBody {
    #[serde(rename = "type")]
    kind: Option<String>,
    key: Option<String>,
    value: Option<String>,
    #[serde(default)]
    secured: bool,
}

/// The commit a trigger names: a full hash or an unambiguous prefix, hex only.
fn pinned(state: &State, commit: Option<CommitBody>) -> Result<Option<String>, Error> {
    let Some(commit) = commit else { return Ok(None) };
    let hash = commit.hash.unwrap_or_default();
    let found = state.resolve(&hash).filter(|_| !hash.is_empty() && hash.bytes().all(|b| b.is_ascii_hexdigit()));
    Ok(Some(found.ok_or_else(|| Error::bad_request(format!("Commit {hash:?} does not exist")))?.hash.clone()))
}

/// The selectors of schema `pipeline_selector`; `default` has no pattern, `custom` needs one.
fn selector(selector: Option<SelectorBody>, fallback: Value) -> Result<Value, Error> {
    let Some(selector) = selector else { return Ok(fallback) };
    let pattern = selector.pattern.filter(|p| !p.trim().is_empty());
    match (selector.kind.as_deref(), pattern) {
        (Some("default"), _) => Ok(json!({ "type": "default" })),
        (Some("custom"), None) => Err(Error::bad_request("target.selector.pattern: a custom pipeline needs a pattern")),
        (Some(kind @ ("custom" | "branches" | "tags" | "bookmarks" | "pull-requests")), Some(pattern)) => {
            Ok(json!({ "type": kind, "pattern": pattern }))
        }
        (Some("branches" | "tags" | "bookmarks") | None, None) => Ok(fallback),
        (None, Some(pattern)) => Ok(json!({ "type": fallback["type"], "pattern": pattern })),
        (Some(other), _) => Err(Error::bad_request(format!(
            "target.selector.type: {other:?} is not one of branches, tags, bookmarks, pull-requests, default, custom"
        ))),
    }
}

/// Checks a trigger against the repository and makes the pending run (not yet stored): a
/// `pipeline_ref_target` (a branch — `branch` or `named_branch`; the sandbox has no tags or
/// bookmarks) or a `pipeline_commit_target` (a commit and, usually, a custom selector).
fn new_run(body: NewRun, state: &State, build_number: u64) -> Result<Run, Error> {
    let target = body.target.ok_or_else(|| Error::bad_request("target: This field is required."))?;
    let mut pull_request = None;
    let (reference, commit, selector) = match target.kind.as_deref().unwrap_or("pipeline_ref_target") {
        "pipeline_pullrequest_target" => {
            let required = |field: &str| Error::bad_request(format!("target.{field}: This field is required."));
            let source = target.source.filter(|s| !s.is_empty()).ok_or_else(|| required("source"))?;
            let destination = target.destination.filter(|s| !s.is_empty()).ok_or_else(|| required("destination"))?;
            let id = match target.pullrequest.and_then(|p| p.id) {
                Some(Value::String(id)) if id.parse::<u64>().is_ok() => id,
                Some(Value::Number(id)) if id.is_u64() => id.to_string(),
                _ => return Err(required("pullrequest.id")),
            };
            let tip =
                state.tip(&source).ok_or_else(|| Error::bad_request(format!("Branch {source} does not exist")))?;
            let commit = pinned(state, target.commit)?.unwrap_or_else(|| tip.to_owned());
            let destination_commit = pinned(state, target.destination_commit)?;
            let selector = selector(target.selector, json!({ "type": "pull-requests", "pattern": "**" }))?;
            pull_request = Some(PullRequestTarget { id, source, destination, destination_commit });
            (None, commit, selector)
        }
        "pipeline_ref_target" => {
            let ref_type = target.ref_type.unwrap_or_else(|| "branch".to_owned());
            let ref_name = target.ref_name.filter(|n| !n.is_empty());
            let ref_name = ref_name.ok_or_else(|| Error::bad_request("target.ref_name: This field is required."))?;
            let tip = match ref_type.as_str() {
                "branch" | "named_branch" => state.tip(&ref_name),
                "tag" | "bookmark" => None,
                other => {
                    return Err(Error::bad_request(format!(
                        "target.ref_type: {other:?} is not one of branch, named_branch, tag, bookmark"
                    )));
                }
            };
            let kind = if ref_type == "tag" {
                "Tag"
            } else if ref_type == "bookmark" {
                "Bookmark"
            } else {
                "Branch"
            };
            let tip = tip.ok_or_else(|| Error::bad_request(format!("{kind} {ref_name} does not exist")))?;
            let commit = pinned(state, target.commit)?.unwrap_or_else(|| tip.to_owned());
            let fallback = json!({ "type": "branches", "pattern": ref_name });
            (Some((ref_type, ref_name)), commit, selector(target.selector, fallback)?)
        }
        "pipeline_commit_target" => {
            let commit = pinned(state, target.commit)?;
            let commit = commit.ok_or_else(|| Error::bad_request("target.commit: This field is required."))?;
            (None, commit, selector(target.selector, json!({ "type": "default" }))?)
        }
        other => {
            return Err(Error::bad_request(format!(
                "target.type: {other:?} is not one of pipeline_ref_target, pipeline_commit_target, pipeline_pullrequest_target"
            )));
        }
    };
    let mut variables = Vec::new();
    for (i, v) in body.variables.into_iter().enumerate() {
        let key = v.key.filter(|k| !k.trim().is_empty());
        let key = key.ok_or_else(|| Error::bad_request(format!("variables[{i}].key: This field is required.")))?;
        // The operation's own examples leave `type` out; a wrong one is refused.
        if let Some(kind) = v.kind.as_deref().filter(|k| *k != "pipeline_variable") {
            return Err(Error::bad_request(format!("variables[{i}].type: {kind:?} is not pipeline_variable")));
        }
        variables.push(Variable { key, value: v.value.unwrap_or_default(), secured: v.secured });
    }
    Ok(Run {
        uuid: new_uuid(),
        step_uuid: new_uuid(),
        build_number,
        reference,
        pull_request,
        automatic: false,
        failures: Vec::new(),
        commit,
        selector,
        variables,
        phase: Phase::Pending,
        created_on: state.now(),
        started_on: None,
        completed_on: None,
        tests: None,
        timing: None,
    })
}

async fn create(
    AxumState(sandbox): AxumState<Sandbox>,
    caller: Caller,
    PathParams((w, r)): PathParams<(String, String)>,
    body: Bytes,
) -> Result<Response, Error> {
    check(&caller, &scopes::CREATE_PIPELINE, &w, &r)?;
    let body: NewRun = parse_json(&body)?;
    let base = sandbox.public_base();
    let (uuid, location, json, automatic) = sandbox.with_pipelines(|p, ctx| {
        let mut run = new_run(body, ctx.state, p.runs.len() as u64 + 1)?;
        run.timing = p.timing.map(|(pending, running)| (chrono_duration(pending), chrono_duration(running)));
        let json = run.json(ctx.state, base, run.created_on);
        let out = (run.uuid.clone(), run.api_url(base), json, run.timing.is_some());
        p.runs.push(run);
        Ok(out)
    })?;
    if automatic {
        sandbox.schedule(uuid);
    }
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(json)).into_response())
}

async fn list(
    AxumState(sandbox): AxumState<Sandbox>,
    caller: Caller,
    PathParams((w, r)): PathParams<(String, String)>,
    uri: Uri,
) -> Result<Json<Value>, Error> {
    check(&caller, &scopes::LIST_PIPELINES, &w, &r)?;
    let query = uri.query().unwrap_or_default();
    let newest_first = match param(query, "sort").as_deref() {
        None | Some("created_on" | "build_number") => false,
        Some("-created_on" | "-build_number") => true,
        Some(other) => {
            return Err(Error::bad_request(format!(
                "sort: {other:?} is not supported; use created_on or build_number, optionally with -"
            )));
        }
    };
    let ref_name = param(query, "target.ref_name");
    let base = sandbox.public_base();
    let mut values: Vec<Value> = sandbox.with_pipelines(|p, ctx| {
        let now = ctx.state.now();
        let wanted =
            |run: &&Run| ref_name.as_ref().is_none_or(|name| run.reference.as_ref().is_some_and(|(_, r)| r == name));
        Ok(p.runs.iter().filter(wanted).map(|run| run.json(ctx.state, base, now)).collect())
    })?;
    // Runs are stored in creation order, which is also `created_on` and `build_number` order.
    if newest_first {
        values.reverse();
    }
    let url = format!("{base}{}", uri.path());
    paginate(values, query, &url).map(Json)
}

async fn get_run(
    AxumState(sandbox): AxumState<Sandbox>,
    caller: Caller,
    PathParams((w, r, uuid)): RunPath,
) -> Result<Json<Value>, Error> {
    check(&caller, &scopes::GET_PIPELINE, &w, &r)?;
    let base = sandbox.public_base();
    sandbox.with_pipelines(|p, ctx| Ok(p.run(&uuid)?.json(ctx.state, base, ctx.state.now()))).map(Json)
}

async fn stop(
    AxumState(sandbox): AxumState<Sandbox>,
    caller: Caller,
    PathParams((w, r, uuid)): RunPath,
) -> Result<StatusCode, Error> {
    check(&caller, &scopes::STOP_PIPELINE, &w, &r)?;
    sandbox.drive(&uuid, Drive::Complete(Outcome::Stopped, None, Vec::new()))?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_steps(
    AxumState(sandbox): AxumState<Sandbox>,
    caller: Caller,
    PathParams((w, r, uuid)): RunPath,
    uri: Uri,
) -> Result<Json<Value>, Error> {
    check(&caller, &scopes::LIST_STEPS, &w, &r)?;
    let steps = sandbox.with_pipelines(|p, ctx| Ok(vec![p.run(&uuid)?.step_json(ctx.state.now())]))?;
    let url = format!("{}{}", sandbox.public_base(), uri.path());
    paginate(steps, uri.query().unwrap_or_default(), &url).map(Json)
}

/// The run and its step; 404 when either is unknown.
fn find_step<'a>(p: &'a Pipelines, uuid: &str, step: &str) -> Result<&'a Run, Error> {
    let run = p.run(uuid)?;
    if bare(&run.step_uuid) != bare(step) {
        return Err(Error::not_found(format!("Step {step} not found")));
    }
    Ok(run)
}

async fn get_step(
    AxumState(sandbox): AxumState<Sandbox>,
    caller: Caller,
    PathParams((w, r, uuid, step)): StepPath,
) -> Result<Json<Value>, Error> {
    check(&caller, &scopes::GET_STEP, &w, &r)?;
    sandbox.with_pipelines(|p, ctx| Ok(find_step(p, &uuid, &step)?.step_json(ctx.state.now()))).map(Json)
}

async fn test_reports(
    AxumState(sandbox): AxumState<Sandbox>,
    caller: Caller,
    PathParams((w, r, uuid, step)): StepPath,
) -> Result<Json<Value>, Error> {
    check(&caller, &scopes::GET_TEST_REPORTS, &w, &r)?;
    let tests = sandbox.with_pipelines(|p, _| {
        let run = find_step(p, &uuid, &step)?;
        match (run.phase, run.tests) {
            (Phase::Completed(_), Some(tests)) => Ok(tests),
            _ => Err(Error::not_found(format!("No test report for step {step}"))),
        }
    })?;
    Ok(Json(json!({
        "number_of_test_cases": tests.total,
        "number_of_successful_test_cases": tests.passed,
        "number_of_failed_test_cases": tests.failed,
        "number_of_error_test_cases": 0,
        "number_of_skipped_test_cases": tests.skipped,
    })))
}

/// Every test case of a completed run's step: the failed ones as named, then the passed and
/// skipped ones (`test_{n}`), as `…/test_reports/test_cases` lists them (undocumented beyond its
/// 200: the fields live Cloud sends).
fn test_case_values(run: &Run) -> Vec<Value> {
    let Some(tests) = run.tests else { return Vec::new() };
    let case = |n: usize, name: &str, suite: Option<&str>, status: &str| {
        let suite = suite.unwrap_or("sandbox.Suite");
        json!({
            "uuid": format!("{{{}}}", uuid::Uuid::from_u128((run.build_number as u128) << 64 | n as u128)),
            "name": name,
            "fully_qualified_name": format!("{suite}.{name}"),
            "package_name": suite,
            "status": status,
            "duration": "PT0.01S",
        })
    };
    let mut values: Vec<Value> =
        run.failures.iter().enumerate().map(|(n, f)| case(n, &f.name, f.suite.as_deref(), "FAILED")).collect();
    let offset = values.len();
    for n in 0..tests.passed as usize {
        values.push(case(offset + n, &format!("passes_{}", n + 1), None, "SUCCESSFUL"));
    }
    let offset = values.len();
    for n in 0..tests.skipped as usize {
        values.push(case(offset + n, &format!("skipped_{}", n + 1), None, "SKIPPED"));
    }
    values
}

async fn test_cases(
    AxumState(sandbox): AxumState<Sandbox>,
    caller: Caller,
    PathParams((w, r, uuid, step)): StepPath,
    uri: Uri,
) -> Result<Json<Value>, Error> {
    check(&caller, &scopes::GET_TEST_CASES, &w, &r)?;
    let values = sandbox.with_pipelines(|p, _| {
        let run = find_step(p, &uuid, &step)?;
        match run.phase {
            Phase::Completed(_) if run.tests.is_some() => Ok(test_case_values(run)),
            _ => Err(Error::not_found(format!("No test report for step {step}"))),
        }
    })?;
    let url = format!("{}{}", sandbox.public_base(), uri.path());
    paginate(values, uri.query().unwrap_or_default(), &url).map(Json)
}

async fn test_case_reasons(
    AxumState(sandbox): AxumState<Sandbox>,
    caller: Caller,
    PathParams((w, r, uuid, step, case)): PathParams<(String, String, String, String, String)>,
    uri: Uri,
) -> Result<Json<Value>, Error> {
    check(&caller, &scopes::GET_TEST_CASE_REASONS, &w, &r)?;
    let values = sandbox.with_pipelines(|p, _| {
        let run = find_step(p, &uuid, &step)?;
        let found =
            test_case_values(run).into_iter().position(|c| c["uuid"].as_str().is_some_and(|u| bare(u) == bare(&case)));
        let n = found.ok_or_else(|| Error::not_found(format!("Test case {case} not found")))?;
        Ok(match run.failures.get(n).and_then(|f| f.reason.clone()) {
            Some(reason) => vec![json!({ "message": reason })],
            None => Vec::new(),
        })
    })?;
    let url = format!("{}{}", sandbox.public_base(), uri.path());
    paginate(values, uri.query().unwrap_or_default(), &url).map(Json)
}

// ---- admin ----------------------------------------------------------------------------------

#[derive(Deserialize)]
struct PullRequestPipelines {
    pattern: Option<String>,
}

/// `{"pattern": "**"}`: pull requests get Bitbucket's own `pull-requests:` runs; `{"pattern":
/// null}`: none.
async fn admin_set_pull_requests(
    AxumState(sandbox): AxumState<Sandbox>,
    bytes: Bytes,
) -> Result<Json<Value>, AdminError> {
    let body: PullRequestPipelines = parse_json(&bytes)?;
    sandbox.set_pull_request_pipelines(body.pattern.as_deref().filter(|p| !p.trim().is_empty()));
    Ok(Json(json!({ "pattern": body.pattern })))
}

async fn admin_list(AxumState(sandbox): AxumState<Sandbox>) -> Json<Vec<Value>> {
    Json(sandbox.pipelines())
}

#[derive(Deserialize, Default)]
struct Completion {
    result: Option<String>,
    tests: Option<TestCounts>,
    #[serde(default)]
    failures: Vec<FailedTest>,
}

/// `start`, `complete` (optional `{"result", "tests"}`, `SUCCESSFUL` by default) or `stop`;
/// answers with the run.
async fn admin_drive(
    AxumState(sandbox): AxumState<Sandbox>,
    PathParams((uuid, action)): PathParams<(String, String)>,
    bytes: Bytes,
) -> Result<Json<Value>, AdminError> {
    let drive = match action.as_str() {
        "start" => Drive::Start,
        "stop" => Drive::Complete(Outcome::Stopped, None, Vec::new()),
        "complete" => {
            let completion: Completion = if bytes.is_empty() { Completion::default() } else { parse_json(&bytes)? };
            let outcome = Outcome::parse(completion.result.as_deref().unwrap_or("SUCCESSFUL"))?;
            Drive::Complete(outcome, completion.tests, completion.failures)
        }
        other => {
            return Err(Error::not_found(format!("Unknown action {other:?}; use start, complete or stop")).into());
        }
    };
    Ok(Json(sandbox.drive(&uuid, drive)?))
}

fn timing_json(timing: Option<(Duration, Duration)>) -> Value {
    match timing {
        None => json!({ "manual": true }),
        Some((pending, running)) => json!({
            "manual": false,
            "pending_seconds": pending.as_secs_f64(),
            "running_seconds": running.as_secs_f64(),
        }),
    }
}

async fn admin_timing(AxumState(sandbox): AxumState<Sandbox>) -> Json<Value> {
    Json(timing_json(lock(&sandbox.inner.pipelines).timing))
}

#[derive(Deserialize)]
struct TimingBody {
    #[serde(default)]
    manual: bool,
    pending_seconds: Option<f64>,
    running_seconds: Option<f64>,
}

/// `{"pending_seconds", "running_seconds"}` for automatic runs; `null`, an empty body or
/// `{"manual": true}` for manual ones. Answers with the timing now in force.
async fn admin_set_timing(AxumState(sandbox): AxumState<Sandbox>, bytes: Bytes) -> Result<Json<Value>, AdminError> {
    let body: Option<TimingBody> = if bytes.is_empty() { None } else { parse_json(&bytes)? };
    let timing = match body {
        None | Some(TimingBody { manual: true, .. }) => None,
        Some(TimingBody { pending_seconds: Some(pending), running_seconds: Some(running), .. }) => {
            let duration = |name: &str, secs: f64| {
                Duration::try_from_secs_f64(secs)
                    .map_err(|_| Error::bad_request(format!("{name}: expected a non-negative number of seconds")))
            };
            Some((duration("pending_seconds", pending)?, duration("running_seconds", running)?))
        }
        Some(_) => {
            let message = "Expected {\"pending_seconds\", \"running_seconds\"}, or {\"manual\": true}";
            return Err(Error::bad_request(message).into());
        }
    };
    sandbox.set_pipeline_timing(timing);
    Ok(Json(timing_json(timing)))
}
