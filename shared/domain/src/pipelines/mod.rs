//! Bitbucket Pipelines runs: started on request or from webhook events, stopped, polled, and
//! kept as the builds view.
//!
//! Records (see [`crate::tables`]): a [`Run`] per run (`RUNS`, listed by build number, newest
//! first), an [`OpenRun`] while a run is not final (`OPEN_RUNS`, so a poll finds unfinished runs
//! in one query), the [`ActionClaim`] that makes automatic runs at most one per (delivery,
//! action) (`ACTION_CLAIMS`), and the head last built per pull request (`PR_HEADS`).

mod automation;
mod poll;

pub use automation::{ActionClaim, CLAIM_TIMEOUT, PrHead, claim_in_progress};
pub use poll::PollReport;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::bitbucket::{
    Bitbucket, BitbucketError, NO_PIPELINES, PipelineRequest, PipelineRun, PipelineVariable, TestSummary,
    valid_branch_name,
};
use crate::context::IntegrationContext;
use crate::error::{Error, invalid};
use crate::integration::Integration;
use crate::outbox::{DomainEvent, EventType};
use crate::store::{Condition, StateStore, Write};
use crate::tables::{OPEN_RUNS, RUNS, Record};
use crate::webhook::Flavor;

/// Bitbucket calls for one request or one integration's poll, retries included.
const CALL_BUDGET: Duration = Duration::from_secs(20);
/// How far Bitbucket's clock may trail ours when matching a run started by a lost request.
const START_CLOCK_SKEW: chrono::Duration = chrono::Duration::seconds(10);

fn no_run(uuid: &str) -> Error {
    Error::NotFound(format!("no pipeline run `{uuid}`"))
}

fn already_finished(build_number: u64, status: &str) -> Error {
    Error::Conflict(format!("pipeline run #{build_number} has already finished ({status}); there is nothing to stop"))
}

/// What caused an automatic run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    pub delivery_id: String,
    pub action: String,
}

/// A run as the builds view shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    pub uuid: String,
    pub build_number: u64,
    pub branch: Option<String>,
    pub commit: Option<String>,
    pub selector: Option<String>,
    /// `manual` (this API), `pull_request` or `push` (automatic), else Bitbucket's trigger.
    pub trigger: String,
    pub status: String,
    pub started: Option<DateTime<Utc>>,
    pub completed: Option<DateTime<Utc>>,
    pub duration_seconds: Option<u64>,
    pub link: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_request: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
    /// Variable names given to the run (values, secured or not, are never stored).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub variables: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tests: Option<TestSummary>,
    /// Whether the test reports of this (final) run were fetched; they are fetched once.
    #[serde(default)]
    pub tests_fetched: bool,
    pub updated_at: DateTime<Utc>,
}

impl Run {
    pub fn is_final(&self) -> bool {
        crate::bitbucket::pipelines::is_final(&self.status)
    }

    fn new(fresh: &PipelineRun, target_html: &str, trigger: &str) -> Run {
        Run {
            uuid: fresh.uuid.clone(),
            build_number: fresh.build_number,
            branch: fresh.branch.clone(),
            commit: fresh.commit.clone(),
            selector: fresh.selector.clone(),
            trigger: trigger.to_owned(),
            status: fresh.status.clone(),
            started: fresh.created_on,
            completed: fresh.completed_on,
            duration_seconds: fresh.duration_seconds,
            link: format!("{target_html}/pipelines/results/{}", fresh.build_number),
            pull_request: None,
            origin: None,
            variables: Vec::new(),
            tests: None,
            tests_fetched: false,
            updated_at: Utc::now(),
        }
    }

    /// Bitbucket's view of the run, keeping what only we know (trigger, origin, tests).
    fn refreshed(&self, fresh: &PipelineRun) -> Run {
        Run {
            status: fresh.status.clone(),
            started: fresh.created_on.or(self.started),
            completed: fresh.completed_on,
            duration_seconds: fresh.duration_seconds,
            commit: fresh.commit.clone().or_else(|| self.commit.clone()),
            updated_at: Utc::now(),
            ..self.clone()
        }
    }

    fn differs_from(&self, fresh: &PipelineRun) -> bool {
        self.status != fresh.status
            || self.completed != fresh.completed_on
            || self.duration_seconds != fresh.duration_seconds
    }
}

impl Record for Run {
    const KIND: &'static str = "pipeline_run";

    fn sort_parts(&self) -> Vec<String> {
        vec![run_sort(self.build_number)]
    }
}

/// Newest first on the index: the build number, fixed-width.
fn run_sort(build_number: u64) -> String {
    format!("{build_number:012}")
}

impl Record for OpenRun {
    const KIND: &'static str = "pipeline_open";
}

/// A run not final yet.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OpenRun {
    pub(crate) uuid: String,
    pub(crate) build_number: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) pull_request: Option<u64>,
}

/// `POST /integrations/{id}/pipelines`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    pub branch: String,
    pub commit: Option<String>,
    #[serde(default, deserialize_with = "crate::objects::optional_object")]
    pub selector: Option<Selector>,
    #[serde(default, deserialize_with = "crate::objects::objects")]
    pub variables: Vec<PipelineVariable>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Selector {
    #[serde(rename = "type")]
    pub kind: String,
    pub pattern: String,
}

impl RunRequest {
    /// Checks the request and settles what is sent to Bitbucket; the first problem by field name.
    pub fn validate(self) -> Result<PipelineRequest, Error> {
        let branch = self.branch.trim().to_owned();
        if !valid_branch_name(&branch) {
            return Err(invalid("branch", "is not a valid git branch name"));
        }
        let commit = self.commit.map(|c| c.trim().to_ascii_lowercase());
        if let Some(c) = &commit
            && !((7..=40).contains(&c.len()) && c.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err(invalid("commit", "must be a commit hash (7 to 40 hex digits)"));
        }
        let custom = match self.selector {
            None => None,
            Some(s) if s.kind != "custom" => {
                return Err(invalid("selector.type", "must be `custom` (omit the selector for the branch's pipeline)"));
            }
            Some(s) if s.pattern.trim().is_empty() || s.pattern.len() > 255 => {
                return Err(invalid("selector.pattern", "must name the custom pipeline (1-255 characters)"));
            }
            Some(s) => Some(s.pattern.trim().to_owned()),
        };
        if self.variables.len() > 100 {
            return Err(invalid("variables", "at most 100"));
        }
        for v in &self.variables {
            let ok_key = !v.key.is_empty()
                && v.key.len() <= 255
                && !v.key.starts_with(|c: char| c.is_ascii_digit())
                && v.key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !ok_key {
                return Err(invalid("variables.key", "must be letters, digits and _, not starting with a digit"));
            }
        }
        Ok(PipelineRequest { branch, commit, custom, variables: self.variables, pull_request: None })
    }
}

/// Filters of the builds view.
#[derive(Debug, Default, Clone)]
pub struct RunFilter {
    pub branch: Option<String>,
    pub status: Option<String>,
}

/// The pipelines service, built once per process.
#[derive(Clone)]
pub struct Pipelines {
    pub ctx: IntegrationContext,
    /// When an automatic run's claim counts as abandoned ([`CLAIM_TIMEOUT`]; tests shorten it
    /// instead of waiting).
    pub claim_timeout: chrono::Duration,
}

impl Pipelines {
    pub fn new(ctx: IntegrationContext) -> Self {
        Pipelines { ctx, claim_timeout: CLAIM_TIMEOUT }
    }

    fn store(&self) -> &dyn StateStore {
        self.ctx.store.as_ref()
    }

    /// The integration, if it may run builds now: Cloud (else `unsupported`, 409) and active.
    async fn runnable(&self, id: &str, action: &'static str) -> Result<Integration, Error> {
        let integration = self.ctx.active(id, action).await?;
        if integration.flavor() == Flavor::DataCenter {
            return Err(BitbucketError::Unsupported(NO_PIPELINES.into()).into());
        }
        Ok(integration)
    }

    async fn client(&self, integration: &Integration) -> Result<Arc<dyn Bitbucket>, Error> {
        self.ctx.client(integration, CALL_BUDGET).await
    }

    /// Keeps the failure as the integration's last error (a refused credential also moves it
    /// to `error`), so a failed poll or automatic run is visible, then passes the error on.
    async fn noted(&self, id: &str, e: BitbucketError) -> Error {
        self.ctx.noted(id, e).await
    }

    pub async fn run(&self, id: &str, request: RunRequest) -> Result<Run, Error> {
        let request = request.validate()?;
        let integration = self.runnable(id, "run pipelines").await?;
        let client = self.client(&integration).await?;
        let asked = Utc::now();
        let fresh = match client.run_pipeline(&request).await {
            Ok(run) => run,
            Err(e) => match self.started_anyway(id, client.as_ref(), &request, asked, &e).await {
                Some(run) => run,
                None => return Err(self.noted(id, e).await),
            },
        };
        let mut run = Run::new(&fresh, &integration.target.html_url(), "manual");
        run.variables = request.variables.iter().map(|v| v.key.clone()).collect();
        self.save(id, &run, None).await?;
        Ok(run)
    }

    /// After a start whose answer was lost (a timeout or a 5xx: Bitbucket may have started the
    /// run), the run Bitbucket started for `request` since `asked`, if any and not already
    /// stored — so the caller is not told to retry into a second run.
    async fn started_anyway(
        &self,
        id: &str,
        client: &dyn Bitbucket,
        request: &PipelineRequest,
        asked: DateTime<Utc>,
        error: &BitbucketError,
    ) -> Option<PipelineRun> {
        if !matches!(error, BitbucketError::Unavailable(_) | BitbucketError::Network(_)) {
            return None;
        }
        let selector = request.custom.as_ref().map(|pattern| format!("custom: {pattern}"));
        let since = asked - START_CLOCK_SKEW;
        let mut candidates: Vec<PipelineRun> = client
            .list_pipelines(1, 30)
            .await
            .ok()?
            .into_iter()
            .filter(|r| {
                r.branch.as_deref() == Some(request.branch.as_str())
                    && r.trigger.as_deref().is_some_and(|t| t.eq_ignore_ascii_case("MANUAL"))
                    && r.created_on.is_some_and(|t| t >= since)
                    && match &selector {
                        Some(custom) => r.selector.as_ref() == Some(custom),
                        None => r.selector.as_deref().is_none_or(|s| !s.starts_with("custom")),
                    }
                    && request
                        .commit
                        .as_ref()
                        .is_none_or(|c| r.commit.as_ref().is_some_and(|rc| rc.starts_with(c.as_str())))
            })
            .collect();
        candidates.sort_by_key(|r| r.build_number);
        for run in candidates {
            if matches!(self.stored(id, &run.uuid).await, Ok(None)) {
                tracing::info!(run = %run.uuid, "the run started although its answer was lost");
                return Some(run);
            }
        }
        None
    }

    /// Stops a pending or running run; a finished one is `AlreadyFinished`.
    pub async fn stop(&self, id: &str, uuid: &str) -> Result<Run, Error> {
        let integration = self.runnable(id, "stop pipelines").await?;
        let Some(uuid) = braced_uuid(uuid) else { return Err(no_run(uuid)) };
        let uuid = uuid.as_str();
        let known = self.stored(id, uuid).await?;
        if let Some((run, _)) = &known
            && run.is_final()
        {
            return Err(already_finished(run.build_number, &run.status));
        }
        let client = self.client(&integration).await?;
        if known.is_none() {
            // A run not seen yet (started in Bitbucket, not polled): it must exist before
            // anything is asked to stop, so an unknown id never becomes a write.
            match client.get_pipeline(uuid).await {
                Ok(_) => {}
                Err(BitbucketError::NotFound(_)) => return Err(no_run(uuid)),
                Err(e) => return Err(self.noted(id, e).await),
            }
        }
        let stopped = client.stop_pipeline(uuid).await;
        let fresh = match client.get_pipeline(uuid).await {
            Ok(fresh) => fresh,
            Err(BitbucketError::NotFound(_)) => return Err(no_run(uuid)),
            Err(e) => return Err(self.noted(id, e).await),
        };
        let run = self.record(&integration, client.as_ref(), &fresh, "manual").await?;
        match stopped {
            Ok(()) => Ok(run),
            // Bitbucket refuses to stop a run that completed meanwhile.
            Err(BitbucketError::Rejected(_)) if run.is_final() => Err(already_finished(run.build_number, &run.status)),
            Err(e) => Err(self.noted(id, e).await),
        }
    }

    pub async fn get(&self, id: &str, uuid: &str) -> Result<Run, Error> {
        self.ctx.get(id).await?;
        Ok(self.stored(id, uuid).await?.ok_or_else(|| no_run(uuid))?.0)
    }

    async fn stored(&self, id: &str, uuid: &str) -> Result<Option<(Run, u64)>, Error> {
        let Some(braced) = braced_uuid(uuid) else { return Ok(None) };
        Ok(RUNS.get(self.store(), id, &[&braced]).await?.map(|run| (run.record, run.version)))
    }

    /// Stores `run` (`before`: what was stored of it), recording `build.started` for a run seen
    /// the first time and `build.finished` for one that became final.
    async fn save(&self, id: &str, run: &Run, before: Option<&Run>) -> Result<(), Error> {
        let mut events = Vec::new();
        if before.is_none() {
            events.push(DomainEvent::new(EventType::BuildStarted, id, &run.uuid, build_data(run)));
        }
        if run.is_final() && !before.is_some_and(Run::is_final) {
            events.push(DomainEvent::new(EventType::BuildFinished, id, &run.uuid, build_data(run)));
        }
        let change = Write::Put(RUNS.item(id, &[&run.uuid], run)?, Condition::None);
        self.ctx.write_with_events(change, &events).await?;
        if run.is_final() {
            OPEN_RUNS.delete(self.store(), id, &[&run.uuid], Condition::None).await?;
        } else {
            let marker =
                OpenRun { uuid: run.uuid.clone(), build_number: run.build_number, pull_request: run.pull_request };
            OPEN_RUNS.put(self.store(), id, &[&run.uuid], &marker, Condition::None).await?;
        }
        Ok(())
    }

    /// Stores Bitbucket's view of a run (new or known), fetching its test reports once when it
    /// is final. Returns the stored run.
    async fn record(
        &self,
        integration: &Integration,
        client: &dyn Bitbucket,
        fresh: &PipelineRun,
        trigger: &str,
    ) -> Result<Run, Error> {
        let id = &integration.id;
        let before = self.stored(id, &fresh.uuid).await?.map(|(known, _)| known);
        let mut run = match &before {
            Some(known) if !known.differs_from(fresh) && (known.tests_fetched || !known.is_final()) => {
                return Ok(known.clone());
            }
            Some(known) => known.refreshed(fresh),
            None => {
                let mut run = Run::new(fresh, &integration.target.html_url(), &trigger_name(fresh, trigger));
                run.pull_request = fresh.pull_request;
                run
            }
        };
        if run.is_final() && !run.tests_fetched {
            match client.test_summary(&run.uuid).await {
                Ok(tests) => {
                    run.tests = tests;
                    run.tests_fetched = true;
                }
                // The status is still worth keeping; the reports are tried again next time.
                Err(e) => tracing::warn!(run = %run.uuid, reason = e.reason(), "test reports not fetched"),
            }
        }
        self.save(id, &run, before.as_ref()).await?;
        Ok(run)
    }

    /// The builds view: newest first, exact filters, cursor paging. A page may hold fewer than
    /// `limit` runs when filters skip many; `next_cursor` continues after what was examined.
    pub async fn list(
        &self,
        id: &str,
        filter: &RunFilter,
        limit: usize,
        mut cursor: Option<String>,
    ) -> Result<(Vec<Run>, Option<String>), Error> {
        self.ctx.get(id).await?;
        let mut runs = Vec::new();
        for _ in 0..10 {
            let (page, next) = RUNS.page_sorted(self.store(), id, &[], true, limit - runs.len(), cursor.take()).await?;
            for run in page {
                let branch_ok = filter.branch.as_ref().is_none_or(|b| run.branch.as_ref() == Some(b));
                let status_ok = filter.status.as_ref().is_none_or(|s| s.eq_ignore_ascii_case(&run.status));
                if branch_ok && status_ok {
                    runs.push(run);
                }
            }
            cursor = next;
            if cursor.is_none() || runs.len() >= limit {
                break;
            }
        }
        Ok((runs, cursor))
    }

    pub(crate) async fn open_runs(&self, id: &str) -> Result<Vec<OpenRun>, Error> {
        Ok(OPEN_RUNS.all(self.store(), id, &[]).await?.into_iter().map(|open| open.record).collect())
    }
}

/// What `build.*` events say of a run.
fn build_data(run: &Run) -> serde_json::Value {
    let tests = run.tests.as_ref().map(|t| {
        serde_json::json!({"total": t.total, "passed": t.passed, "failed": t.failed, "skipped": t.skipped,
            "failures": t.failures})
    });
    serde_json::json!({
        "uuid": run.uuid,
        "build_number": run.build_number,
        "branch": run.branch,
        "commit": run.commit,
        "trigger": run.trigger,
        "pull_request": run.pull_request,
        "status": run.status,
        "link": run.link,
        "duration_seconds": run.duration_seconds,
        "tests": tests,
    })
}

/// A run id as Bitbucket writes it (`{uuid}`), from one given with or without braces; `None`
/// when it is not a UUID, so it names no run and never becomes part of a Bitbucket URL (where
/// `..` would climb out of `/pipelines/`).
fn braced_uuid(uuid: &str) -> Option<String> {
    let bare = uuid.strip_prefix('{').and_then(|u| u.strip_suffix('}')).unwrap_or(uuid);
    let hyphenated = bare.len() == 36 && uuid::Uuid::try_parse(bare).is_ok();
    hyphenated.then(|| format!("{{{bare}}}"))
}

/// Our trigger word for a run we did not start, from Bitbucket's (`PUSH` → `push`).
fn trigger_name(fresh: &PipelineRun, ours: &str) -> String {
    if ours != "bitbucket" {
        return ours.to_owned();
    }
    fresh.trigger.as_deref().unwrap_or("unknown").to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_are_uuids_with_or_without_braces() {
        let id = "0f4e5b1c-3d2a-4b6e-9c8d-7a6b5c4d3e2f";
        assert_eq!(braced_uuid(id).as_deref(), Some("{0f4e5b1c-3d2a-4b6e-9c8d-7a6b5c4d3e2f}"));
        assert_eq!(braced_uuid(&format!("{{{id}}}")), braced_uuid(id));
        for bad in ["", "..", "../../hooks", "{..}", "not-a-uuid", "0f4e5b1c3d2a4b6e9c8d7a6b5c4d3e2f", "{0f4e5b1c}"] {
            assert_eq!(braced_uuid(bad), None, "{bad:?}");
        }
    }
}
