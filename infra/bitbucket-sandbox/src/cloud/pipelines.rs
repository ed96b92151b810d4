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

struct Run {
    uuid: String,
    step_uuid: String,
    build_number: u64,
    /// `(ref_type, ref_name)` of a `pipeline_ref_target`; `None` for a `pipeline_commit_target`.
    reference: Option<(String, String)>,
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
            "trigger": { "type": "pipeline_trigger_manual" },
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
            refname: self.reference.as_ref().map(|(_, name)| name.clone()),
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
        run.phase = Phase::Completed(outcome);
        run.completed_on = Some(at);
        run.tests = tests;
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
                    _ => self.complete(i, Outcome::Successful, Some(AUTOMATIC_TESTS), due, ctx),
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
        let outcome = Outcome::parse(result).map_err(|e| e.message)?;
        self.drive(uuid, Drive::Complete(outcome, tests)).map(drop).map_err(|e| e.message)
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
                Drive::Complete(outcome, tests) => p.complete(i, outcome, tests, now, ctx)?,
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

#[derive(Clone, Copy)]
enum Drive {
    Start,
    Complete(Outcome, Option<TestCounts>),
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
        (Some(kind @ ("custom" | "branches" | "tags" | "bookmarks")), Some(pattern)) => {
            Ok(json!({ "type": kind, "pattern": pattern }))
        }
        (Some("branches" | "tags" | "bookmarks") | None, None) => Ok(fallback),
        (None, Some(pattern)) => Ok(json!({ "type": fallback["type"], "pattern": pattern })),
        (Some(other), _) => Err(Error::bad_request(format!(
            "target.selector.type: {other:?} is not one of branches, tags, bookmarks, default, custom"
        ))),
    }
}

/// Checks a trigger against the repository and makes the pending run (not yet stored): a
/// `pipeline_ref_target` (a branch — `branch` or `named_branch`; the sandbox has no tags or
/// bookmarks) or a `pipeline_commit_target` (a commit and, usually, a custom selector).
fn new_run(body: NewRun, state: &State, build_number: u64) -> Result<Run, Error> {
    let target = body.target.ok_or_else(|| Error::bad_request("target: This field is required."))?;
    let (reference, commit, selector) = match target.kind.as_deref().unwrap_or("pipeline_ref_target") {
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
                "target.type: {other:?} is not one of pipeline_ref_target, pipeline_commit_target"
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
    sandbox.drive(&uuid, Drive::Complete(Outcome::Stopped, None))?;
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

// ---- admin ----------------------------------------------------------------------------------

async fn admin_list(AxumState(sandbox): AxumState<Sandbox>) -> Json<Vec<Value>> {
    Json(sandbox.pipelines())
}

#[derive(Deserialize, Default)]
struct Completion {
    result: Option<String>,
    tests: Option<TestCounts>,
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
        "stop" => Drive::Complete(Outcome::Stopped, None),
        "complete" => {
            let completion: Completion = if bytes.is_empty() { Completion::default() } else { parse_json(&bytes)? };
            let outcome = Outcome::parse(completion.result.as_deref().unwrap_or("SUCCESSFUL"))?;
            Drive::Complete(outcome, completion.tests)
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
