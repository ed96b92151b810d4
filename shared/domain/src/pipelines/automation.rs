//! Automatic runs from recorded webhook events, as each integration's options say: a run for a
//! pull request opened or given a new head commit (`build_pull_requests`), for a push to a
//! branch matching `build_branches`; running runs of a merged or declined pull request are
//! stopped; a `repo:commit_status_*` for a pipeline refreshes that run at once.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use async_trait::async_trait;

use super::{Origin, Pipelines, Run, run_sort};
use crate::Delivery;
use crate::bitbucket::{Bitbucket, BitbucketError, PipelineRequest, PipelineRun};
use crate::consumers::{DeliveryConsumer, Readiness};
use crate::context::IntegrationContext;
use crate::error::Error;
use crate::integration::{Integration, IntegrationStatus};
use crate::outbox::{DomainEvent, EventType};
use crate::store::{Condition, StoreError};
use crate::tables::{ACTION_CLAIMS, PR_HEADS, RUNS, Record};
use crate::webhook::{Flavor, PullRequest, RepoEvent};
/// A claim older than this whose run is unknown was abandoned (its worker died): longer than
/// any function run, so a live worker is never overtaken. [`Pipelines::claim_timeout`] defaults to it.
pub const CLAIM_TIMEOUT: chrono::Duration = chrono::Duration::seconds(60);

/// The claim on one (delivery, action).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ActionClaim {
    pub claimed_at: DateTime<Utc>,
    /// The run started for it, once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
    /// The start request failed in a way that does not say whether Bitbucket started the run
    /// (a 5xx, a timeout, a lost answer): the next processing looks in Bitbucket first.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub outcome_unknown: bool,
}

impl Record for ActionClaim {
    const KIND: &'static str = "pipeline_action";
}

/// The head commit last built for a pull request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PrHead {
    head: String,
}

impl Record for PrHead {
    const KIND: &'static str = "pull_request_head";
}

/// What one delivery caused (for logs and tests).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Effects {
    pub started: Vec<String>,
    pub stopped: Vec<String>,
    pub refreshed: Vec<String>,
    /// Runs Bitbucket had already started for the same pull request and commit.
    pub adopted: Vec<String>,
    /// Pull requests not built, with the reason.
    pub skipped: Vec<String>,
    /// Actions already done by an earlier processing of the same delivery.
    pub repeated: Vec<String>,
}

/// The consumer name pipelines park deliveries under.
pub const CONSUMER: &str = "pipelines";

/// The same commit, whether abbreviated (Cloud sends 12 characters) or full.
pub(crate) fn same_commit(a: &str, b: &str) -> bool {
    let n = a.len().min(b.len());
    n >= 7 && a[..n].eq_ignore_ascii_case(&b[..n])
}

/// How a head commit appears in an action's name: its hash, or `tip` when the event named none
/// (or something that is not a hash). Never a `-`, so the name splits back into its parts at
/// its last `-`: `push-{branch}-{head}` is one name per (branch, head), whatever the branch holds.
fn head_in_name(head: &Option<String>) -> &str {
    head.as_deref().filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_hexdigit())).unwrap_or("tip")
}

/// A full hash can pin a run; an abbreviation cannot, so the branch tip is built instead.
fn full_hash(head: &Option<String>) -> Option<String> {
    head.clone().filter(|h| h.len() == 40)
}

/// The build number in a Pipelines result link (`…/pipelines/results/12`, or Cloud's
/// `…/addon/pipelines/home#!/results/12`).
fn build_number_in(url: &str) -> Option<u64> {
    let (_, rest) = url.rsplit_once("/results/")?;
    rest.split(['/', '?', '#']).next()?.parse().ok()
}

#[async_trait]
impl DeliveryConsumer for Pipelines {
    fn name(&self) -> &'static str {
        CONSUMER
    }

    fn context(&self) -> &IntegrationContext {
        &self.ctx
    }

    /// Cloud integrations that are active; one disconnected or whose credential is refused
    /// starts its runs once it can again (parked, not dropped).
    fn readiness(&self, integration: &Integration) -> Readiness {
        match (integration.flavor(), integration.status) {
            (Flavor::DataCenter, _) => Readiness::Never,
            (_, IntegrationStatus::Active) => Readiness::Act,
            (_, status) => Readiness::Later(format!("integration is {}", status.as_str())),
        }
    }

    async fn act(&self, integration: &Integration, delivery: &Delivery) -> Result<serde_json::Value, Error> {
        Ok(serde_json::json!(self.on_delivery(integration, delivery).await?))
    }
}

impl Pipelines {
    /// The runs a delivery of an active Cloud integration causes.
    pub(crate) async fn on_delivery(&self, integration: &Integration, delivery: &Delivery) -> Result<Effects, Error> {
        let mut effects = Effects::default();
        let integration = integration.clone();
        let mut client: Option<std::sync::Arc<dyn Bitbucket>> = None;
        for event in &delivery.events {
            for action in self.wanted_actions(&integration, event).await? {
                if let Action::Skip { pull_request, head, reason, code } = &action {
                    self.skipped(&integration, pull_request, head, reason, code).await?;
                    effects.skipped.push(format!("pull request #{}: {reason}", pull_request.id));
                    continue;
                }
                if let Action::Repeated(name) = action {
                    effects.repeated.push(name);
                    continue;
                }
                if client.is_none() {
                    client = Some(self.client(&integration).await?);
                }
                let client = client.as_deref().expect("set above");
                match action {
                    Action::Start { name, request, pull_request, head, supersede } => {
                        let origin = Origin { delivery_id: delivery.delivery_id.clone(), action: name.clone() };
                        let started = self.start_once(&integration, client, &origin, &request, pull_request).await?;
                        if let (Some(pr), Some(head)) = (pull_request, head.as_ref()) {
                            self.remember_head(&integration.id, pr, head).await?;
                        }
                        let kept = match started {
                            Started::New(run) => {
                                effects.started.push(run.uuid.clone());
                                Some(run)
                            }
                            Started::Adopted(run) => {
                                effects.adopted.push(run.uuid.clone());
                                Some(run)
                            }
                            Started::Repeated => {
                                effects.repeated.push(name);
                                None
                            }
                        };
                        if let (true, Some(pr), Some(kept)) = (supersede, pull_request, kept) {
                            let stopped = self.stop_superseded(&integration, client, pr, &kept).await?;
                            effects.stopped.extend(stopped);
                        }
                    }
                    Action::StopFor(pull_request) => {
                        for open in self.open_runs(&integration.id).await? {
                            if open.pull_request == Some(pull_request) {
                                let _ = client.stop_pipeline(&open.uuid).await;
                                if let Ok(fresh) = client.get_pipeline(&open.uuid).await {
                                    self.record(&integration, client, &fresh, "bitbucket").await?;
                                }
                                effects.stopped.push(open.uuid);
                            }
                        }
                    }
                    Action::Refresh(build_number) => {
                        if let Some(run) = self.by_build_number(&integration.id, build_number).await?
                            && let Ok(fresh) = client.get_pipeline(&run.uuid).await
                        {
                            self.record(&integration, client, &fresh, "bitbucket").await?;
                            effects.refreshed.push(run.uuid);
                        }
                    }
                    Action::Skip { .. } | Action::Repeated(_) => unreachable!("handled above"),
                }
            }
        }
        Ok(effects)
    }

    async fn wanted_actions(&self, integration: &Integration, event: &RepoEvent) -> Result<Vec<Action>, Error> {
        let options = &integration.options;
        Ok(match event {
            RepoEvent::PullRequestOpened { pull_request: pr } if options.build_pull_requests => {
                self.pull_request_action(integration, pr, "opened").await?.into_iter().collect()
            }
            RepoEvent::PullRequestUpdated { pull_request: pr } if options.build_pull_requests => {
                self.pull_request_action(integration, pr, "updated").await?.into_iter().collect()
            }
            RepoEvent::PullRequestMerged { pull_request: pr } | RepoEvent::PullRequestDeclined { pull_request: pr } => {
                vec![Action::StopFor(pr.id)]
            }
            RepoEvent::BranchCreated { branch, head } | RepoEvent::BranchUpdated { branch, head, .. } => {
                let mut actions = Vec::new();
                if crate::glob::any_matches(&options.build_branches, branch) {
                    actions.push(Action::Start {
                        name: format!("push-{branch}-{}", head_in_name(head)),
                        request: PipelineRequest {
                            branch: branch.clone(),
                            commit: full_hash(head),
                            custom: None,
                            variables: Vec::new(),
                            pull_request: None,
                        },
                        pull_request: None,
                        head: None,
                        supersede: false,
                    });
                }
                if matches!(event, RepoEvent::BranchUpdated { .. })
                    && options.build_pull_requests
                    && options.resync_pull_requests
                {
                    actions.extend(self.resync_actions(integration, branch, head).await?);
                }
                actions
            }
            RepoEvent::CommitStatus { url: Some(url), .. } => {
                build_number_in(url).map(Action::Refresh).into_iter().collect()
            }
            _ => Vec::new(),
        })
    }

    /// The run a pull request's new head (or its opening) asks for, or why it is not built.
    async fn pull_request_action(
        &self,
        integration: &Integration,
        pr: &PullRequest,
        why: &str,
    ) -> Result<Option<Action>, Error> {
        let options = &integration.options;
        let Some(head) = &pr.head else { return Ok(None) };
        let name = format!("pr-{}-{why}-{}", pr.id, head_in_name(&pr.head));
        // Only a new head builds (a title edit does not), whichever delivery (or reconciliation)
        // brings it; a draft skipped before has no built head, so marking it ready builds it.
        let known = PR_HEADS.get(self.store(), &integration.id, &[&pr.id.to_string()]).await?;
        if known.is_some_and(|k| same_commit(&k.record.head, head)) {
            return Ok((why == "opened").then_some(Action::Repeated(name)));
        }
        if let Some((code, reason)) = skip_reason(options, pr) {
            return Ok(Some(Action::Skip { pull_request: pr.clone(), head: head.clone(), reason, code }));
        }
        Ok(Some(Action::Start {
            name,
            request: pull_request_run(options, pr),
            pull_request: Some(pr.id),
            head: Some(head.clone()),
            supersede: options.cancel_superseded_runs && why != "opened",
        }))
    }

    /// `resync_pull_requests`: the destination `branch` moved to `head`, so each open pull
    /// request into it (not skipped) is built again against it.
    async fn resync_actions(
        &self,
        integration: &Integration,
        branch: &str,
        head: &Option<String>,
    ) -> Result<Vec<Action>, Error> {
        let client = self.client(integration).await?;
        let listing = match client.list_pull_requests().await {
            Ok(listing) => listing,
            Err(e) => return Err(self.noted(&integration.id, e).await),
        };
        let options = &integration.options;
        let mut actions = Vec::new();
        for info in listing.items.iter().filter(|p| p.is_open() && p.destination_branch.as_deref() == Some(branch)) {
            let mut pr = info.as_event();
            pr.destination_head = head.clone().or(pr.destination_head);
            if pr.head.is_none() || skip_reason(options, &pr).is_some() {
                continue;
            }
            actions.push(Action::Start {
                name: format!("pr-{}-resync-{}-{}", pr.id, head_in_name(&pr.head), head_in_name(head)),
                request: pull_request_run(options, &pr),
                pull_request: Some(pr.id),
                head: None,
                supersede: options.cancel_superseded_runs,
            });
        }
        Ok(actions)
    }

    /// `build.skipped`, once per pull request, head and reason.
    async fn skipped(
        &self,
        integration: &Integration,
        pr: &PullRequest,
        head: &str,
        reason: &str,
        code: &str,
    ) -> Result<(), Error> {
        let data = serde_json::json!({
            "pull_request": pr.id,
            "source_branch": pr.source_branch,
            "destination_branch": pr.destination_branch,
            "head": head,
            "code": code,
            "reason": reason,
        });
        let cause = format!("pr-{}-{head}-{code}", pr.id);
        self.ctx.emit(DomainEvent::new(EventType::BuildSkipped, &integration.id, &cause, data)).await
    }

    /// Stops the pull request's unfinished runs older than `kept` (a newer build supersedes them).
    async fn stop_superseded(
        &self,
        integration: &Integration,
        client: &dyn Bitbucket,
        pull_request: u64,
        kept: &Run,
    ) -> Result<Vec<String>, Error> {
        let mut stopped = Vec::new();
        for open in self.open_runs(&integration.id).await? {
            if open.pull_request != Some(pull_request)
                || open.uuid == kept.uuid
                || open.build_number > kept.build_number
            {
                continue;
            }
            let _ = client.stop_pipeline(&open.uuid).await;
            if let Ok(fresh) = client.get_pipeline(&open.uuid).await {
                self.record(integration, client, &fresh, "bitbucket").await?;
            }
            tracing::info!(run = %open.uuid, superseded_by = %kept.uuid, "superseded run stopped");
            stopped.push(open.uuid);
        }
        Ok(stopped)
    }

    async fn remember_head(&self, id: &str, pull_request: u64, head: &str) -> Result<(), Error> {
        let known = PrHead { head: head.to_owned() };
        PR_HEADS.put(self.store(), id, &[&pull_request.to_string()], &known, Condition::None).await?;
        Ok(())
    }

    /// Whether the head a pull request was last built at is `head` (reconciliation asks).
    pub async fn built_head(&self, id: &str, pull_request: u64, head: &str) -> Result<bool, Error> {
        let known = PR_HEADS.get(self.store(), id, &[&pull_request.to_string()]).await?;
        Ok(known.is_some_and(|k| same_commit(&k.record.head, head)))
    }

    /// Starts the run for `origin` unless that (delivery, action) already has one. `None` when
    /// it had. A claim left by a worker that died mid-way is taken over after checking that
    /// Bitbucket has no run it started; a claim still being worked on is an error, so the
    /// record is retried later rather than counted as done.
    async fn start_once(
        &self,
        integration: &Integration,
        client: &dyn Bitbucket,
        origin: &Origin,
        request: &PipelineRequest,
        pull_request: Option<u64>,
    ) -> Result<Started, Error> {
        let id = &integration.id;
        let parts = [origin.delivery_id.as_str(), origin.action.as_str()];
        let now = Utc::now();
        let claim = ActionClaim { claimed_at: now, run: None, outcome_unknown: false };
        match ACTION_CLAIMS.put(self.store(), id, &parts, &claim, Condition::Absent).await {
            Ok(_) => {}
            Err(StoreError::ConditionFailed { current: Some(current) }) => {
                let held: ActionClaim = current.record()?;
                if held.run.is_some() {
                    return Ok(Started::Repeated);
                }
                if !held.outcome_unknown && now - held.claimed_at < self.claim_timeout {
                    // Its worker is starting the run, or died moments ago. Answering "done" here
                    // would lose the run for good when it died (the redelivery was the only
                    // one); a retry after the timeout takes the claim over instead.
                    return Err(in_progress(&origin.action));
                }
                // Abandoned, or its outcome unknown: did its run reach Bitbucket?
                if let Some(fresh) = self.started_since(client, request, held.claimed_at).await? {
                    // Started, but its worker never recorded it: record it now, or the builds
                    // view would never show the run (a poll only refreshes runs it knows of).
                    self.adopt(integration, &fresh, origin, pull_request).await?;
                    self.finish_claim(id, &parts, &fresh.uuid).await?;
                    return Ok(Started::Repeated);
                }
                let retake = ActionClaim { claimed_at: now, run: None, outcome_unknown: false };
                match ACTION_CLAIMS.put(self.store(), id, &parts, &retake, Condition::Version(current.version)).await {
                    Ok(_) => {}
                    // Another redelivery took it over first and is starting the run now.
                    Err(StoreError::ConditionFailed { .. }) => return Err(in_progress(&origin.action)),
                    Err(e) => return Err(e.into()),
                }
            }
            Err(e) => return Err(e.into()),
        }
        if let Some(target) = &request.pull_request
            && let Some(existing) = self.started_by_bitbucket(client, id, target, request.commit.as_deref()).await?
        {
            // Bitbucket's own `pull-requests:` run for this commit: adopted, not doubled.
            let run = self.adopt(integration, &existing, origin, pull_request).await?;
            self.finish_claim(id, &parts, &existing.uuid).await?;
            tracing::info!(run = %existing.uuid, "Bitbucket's own pull-request run adopted");
            return Ok(Started::Adopted(run));
        }
        let fresh = match client.run_pipeline(request).await {
            Ok(fresh) => fresh,
            Err(e) => {
                if refused(&e) {
                    // Nothing started: free the claim so a redelivery tries again.
                    let _ = ACTION_CLAIMS.delete(self.store(), id, &parts, Condition::None).await;
                } else {
                    // The run may exist (freeing the claim here made a redelivery start a
                    // second one): keep the claim, marked for the redelivery to check first.
                    let unknown = ActionClaim { claimed_at: now, run: None, outcome_unknown: true };
                    let _ = ACTION_CLAIMS.put(self.store(), id, &parts, &unknown, Condition::None).await;
                }
                return Err(self.noted(id, e).await);
            }
        };
        let run = automatic_run(integration, &fresh, origin, pull_request);
        self.save(id, &run, None).await?;
        self.finish_claim(id, &parts, &run.uuid).await?;
        Ok(Started::New(run))
    }

    /// A run Bitbucket started by itself (a `pull-requests:` pipeline on push) for the pull
    /// request at `commit`, among its recent runs, that no automatic action of ours holds yet.
    async fn started_by_bitbucket(
        &self,
        client: &dyn Bitbucket,
        id: &str,
        target: &crate::bitbucket::PullRequestTarget,
        commit: Option<&str>,
    ) -> Result<Option<PipelineRun>, Error> {
        let Some(commit) = commit else { return Ok(None) };
        let recent = match client.list_pipelines(1, 30).await {
            Ok(recent) => recent,
            Err(e) => return Err(self.noted(id, e).await),
        };
        for run in recent {
            let same =
                run.pull_request == Some(target.id) && run.commit.as_deref().is_some_and(|c| same_commit(c, commit));
            if same && self.stored(id, &run.uuid).await?.is_none_or(|(known, _)| known.origin.is_none()) {
                return Ok(Some(run));
            }
        }
        Ok(None)
    }

    /// The run a claim's worker started, if Bitbucket's recent runs hold one: same branch (and
    /// commit, when pinned), created after the claim (less some clock skew).
    async fn started_since(
        &self,
        client: &dyn Bitbucket,
        request: &PipelineRequest,
        claimed_at: DateTime<Utc>,
    ) -> Result<Option<PipelineRun>, Error> {
        let recent = client.list_pipelines(1, 30).await?;
        Ok(recent.into_iter().find(|r| {
            r.branch.as_deref() == Some(request.branch.as_str())
                && r.created_on.is_some_and(|t| t >= claimed_at - chrono::Duration::seconds(5))
                && request.commit.as_ref().is_none_or(|c| r.commit.as_ref().is_some_and(|rc| same_commit(c, rc)))
        }))
    }

    /// Records a run found in Bitbucket as the automatic run of `origin`, keeping what a poll
    /// may have stored of it meanwhile.
    async fn adopt(
        &self,
        integration: &Integration,
        fresh: &PipelineRun,
        origin: &Origin,
        pull_request: Option<u64>,
    ) -> Result<Run, Error> {
        let ours = automatic_run(integration, fresh, origin, pull_request);
        let before = self.stored(&integration.id, &fresh.uuid).await?.map(|(known, _)| known);
        let run = match &before {
            Some(known) => Run { trigger: ours.trigger, pull_request, origin: ours.origin, ..known.clone() },
            None => ours,
        };
        self.save(&integration.id, &run, before.as_ref()).await?;
        Ok(run)
    }

    async fn finish_claim(&self, id: &str, parts: &[&str], run: &str) -> Result<(), Error> {
        let done = ActionClaim { claimed_at: Utc::now(), run: Some(run.to_owned()), outcome_unknown: false };
        ACTION_CLAIMS.put(self.store(), id, parts, &done, Condition::None).await?;
        Ok(())
    }

    pub(super) async fn by_build_number(&self, id: &str, build_number: u64) -> Result<Option<Run>, Error> {
        let (runs, _) = RUNS.page_sorted(self.store(), id, &[&run_sort(build_number)], false, 1, None).await?;
        Ok(runs.into_iter().next())
    }
}

/// A run started for `origin`, as the builds view keeps it.
fn automatic_run(integration: &Integration, fresh: &PipelineRun, origin: &Origin, pull_request: Option<u64>) -> Run {
    let trigger = if pull_request.is_some() { "pull_request" } else { "push" };
    let mut run = Run::new(fresh, &integration.target.html_url(), trigger);
    run.pull_request = pull_request;
    run.origin = Some(origin.clone());
    run
}

const IN_PROGRESS: &str = "is being started by another worker; retry later";

/// Another processing of the same delivery holds the action's claim: retry later.
fn in_progress(action: &str) -> Error {
    Error::Retry(format!("the automatic action `{action}` {IN_PROGRESS}"))
}

/// Whether `e` says another worker holds an action's claim (it ends with the run started, or the
/// claim is taken over after [`CLAIM_TIMEOUT`]): waiting a little and trying again pays off.
pub fn claim_in_progress(e: &Error) -> bool {
    matches!(e, Error::Retry(message) if message.ends_with(IN_PROGRESS))
}

/// Whether Bitbucket answered that it did not start the run (so starting it again is safe).
/// 5xx, timeouts, broken connections and unreadable answers leave it open.
fn refused(e: &BitbucketError) -> bool {
    matches!(
        e,
        BitbucketError::BadCredentials(_)
            | BitbucketError::AppPasswordRemoved
            | BitbucketError::Forbidden { .. }
            | BitbucketError::NotFound(_)
            | BitbucketError::Conflict(_)
            | BitbucketError::Rejected(_)
            | BitbucketError::RateLimited
            | BitbucketError::Unsupported(_)
    )
}

enum Action {
    Start {
        name: String,
        request: PipelineRequest,
        pull_request: Option<u64>,
        /// The pull request's head it builds, remembered once started.
        head: Option<String>,
        supersede: bool,
    },
    /// A pull request not built, and why (`code`: `draft`, `fork`).
    Skip {
        pull_request: PullRequest,
        head: String,
        reason: String,
        code: &'static str,
    },
    StopFor(u64),
    Refresh(u64),
    /// Built already at this head (an earlier processing, or reconciliation).
    Repeated(String),
}

/// What became of an automatic start.
enum Started {
    New(Run),
    /// Bitbucket had started it by itself.
    Adopted(Run),
    /// An earlier processing of the same delivery started it.
    Repeated,
}

/// Why a pull request is not built, if it is not: from a fork (its code is not this
/// repository's to run with this repository's secrets), or a draft without
/// `build_draft_pull_requests`.
fn skip_reason(options: &crate::integration::Options, pr: &PullRequest) -> Option<(&'static str, String)> {
    if pr.from_fork() {
        let source = pr.source_repository.as_deref().unwrap_or("another repository");
        return Some(("fork", format!("the pull request comes from a fork ({source}); forks are not built")));
    }
    if pr.draft && !options.build_draft_pull_requests {
        return Some((
            "draft",
            "the pull request is a draft (options.build_draft_pull_requests is off); it builds once marked ready"
                .into(),
        ));
    }
    None
}

/// The run a pull request builds: the `pull-requests:` pipeline on a pull-request target, or
/// the chosen custom pipeline on its source branch.
fn pull_request_run(options: &crate::integration::Options, pr: &PullRequest) -> PipelineRequest {
    match &options.pull_request_pipeline {
        Some(custom) => PipelineRequest {
            branch: pr.source_branch.clone(),
            commit: full_hash(&pr.head),
            custom: Some(custom.clone()),
            variables: Vec::new(),
            pull_request: None,
        },
        None => PipelineRequest {
            branch: pr.source_branch.clone(),
            commit: pr.head.clone(),
            custom: None,
            variables: Vec::new(),
            pull_request: Some(crate::bitbucket::PullRequestTarget {
                id: pr.id,
                destination: pr.destination_branch.clone(),
                destination_commit: pr.destination_head.clone(),
                // Matches every source branch, as `bitbucket-pipelines.yml`'s usual `'**'` does.
                pattern: "**".into(),
            }),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_and_result_links() {
        assert!(same_commit("0123456789ab", "0123456789abcdef0123456789abcdef01234567"));
        assert!(!same_commit("0123456789ab", "0123456789ac"));
        assert!(!same_commit("01", "01"));
        assert_eq!(build_number_in("https://bitbucket.org/w/r/addon/pipelines/home#!/results/12"), Some(12));
        assert_eq!(
            build_number_in("http://127.0.0.1:3000/sandbox/bitbucket/sandbox/demo/pipelines/results/7"),
            Some(7)
        );
        assert_eq!(build_number_in("https://ci.example.com/job/1"), None);
    }

    #[test]
    fn action_names_have_one_reading() {
        let push =
            |branch: &str, head: Option<&str>| format!("push-{branch}-{}", head_in_name(&head.map(String::from)));
        assert_ne!(push("a-b", Some("c")), push("a", Some("b-c")));
        assert_eq!(push("a", Some("b-c")), "push-a-tip", "a head that is not a hash is not part of a name");
        assert_eq!(push("x", Some("0123abc")), "push-x-0123abc");
        // Claim keys escape the delivery id and the name, so neither can run into the other.
        let claim = |delivery: &str, name: &str| ACTION_CLAIMS.key("i", &[delivery, name]);
        assert_ne!(claim("D", "k#push-z-tip"), claim("D#k", "push-z-tip"));
    }
}
