//! Reconciliation: the repository's branches (every page) against the stored environments —
//! missing ones added, moved heads updated, and (with `prune_branches`) those whose branch is
//! gone pruned. This heals missed webhooks. A listing that fails or is cut short by its page
//! bound prunes nothing and is kept as the integration's last error.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{AuditAction, AuditEntry, Environment, EnvironmentStatus, Pruner, StaleReport};
use crate::consumers;
use crate::error::Error;
use crate::integration::{Integration, IntegrationStatus};
use crate::store::{Condition, StoreError};
use crate::webhook::RepoEvent;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReconcileReport {
    pub integration: String,
    /// Branches in the repository.
    pub listed: usize,
    /// Environments created for branches that had none.
    pub added: usize,
    /// Environments whose head commit moved.
    pub updated: usize,
    /// Branches whose environment was pruned.
    pub pruned: Vec<String>,
}

/// The pull requests reconciled: what webhooks missed, acted on as if they had arrived.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PullRequestReport {
    /// Pull requests in the repository (open and closed).
    pub listed: usize,
    /// Open ones never seen or whose head moved, handed to the consumers.
    pub caught_up: Vec<u64>,
    /// Runs started (or adopted) for them.
    pub builds: Vec<String>,
    /// Merged or declined meanwhile: environment deactivated, runs stopped.
    pub closed: Vec<u64>,
}

/// One integration's scheduled run.
#[derive(Debug, Clone, Serialize)]
pub struct ScheduledReport {
    pub integration: String,
    /// Parked deliveries acted on (see [`crate::parked`]).
    pub parked_handled: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environments: Option<ReconcileReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stale_branches: Option<StaleReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pull_requests: Option<PullRequestReport>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    /// The credential's rate budget deferred (part of) the run to the next cycle.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub deferred: bool,
}

fn deferred(e: &Error) -> bool {
    matches!(e, Error::Bitbucket(crate::bitbucket::BitbucketError::Deferred(_)))
}

impl Pruner {
    /// `POST /integrations/{id}/prune` with `{"mode": "environments"}`.
    pub async fn reconcile(&self, id: &str) -> Result<ReconcileReport, Error> {
        let integration = self.ctx.active(id, "reconcile environments").await?;
        if !integration.options.fetch_branches {
            return Err(Error::Conflict(format!(
                "integration `{id}` does not mirror branches as environments (options.fetch_branches is false)"
            )));
        }
        self.reconcile_integration(&integration).await
    }

    async fn reconcile_integration(&self, integration: &Integration) -> Result<ReconcileReport, Error> {
        let id = integration.id.as_str();
        // Environments written after this instant came from deliveries newer than the listing:
        // they are left alone, so a branch created meanwhile is never pruned.
        let started = Utc::now();
        let client = self.client(integration).await?;
        let listing = match client.list_branches().await {
            Ok(listing) => listing,
            Err(e) => return Err(self.noted(id, e).await),
        };
        if !listing.complete {
            return Err(self.incomplete(id, "branch").await);
        }
        let known = self.all_environments(id).await?;
        let mut report =
            ReconcileReport { integration: id.to_owned(), listed: listing.items.len(), ..Default::default() };
        for branch in &listing.items {
            match known.get(&branch.name) {
                None => {
                    let activity = branch.last_commit.unwrap_or(started);
                    let env = Environment::new(&branch.name, Some(branch.head.clone()), activity);
                    // Absent: a delivery that created it meanwhile wins.
                    if self.put_environment(id, &env, Condition::Absent, None, "reconcile").await?.is_some() {
                        report.added += 1;
                    }
                }
                Some((env, version)) if env.head.as_deref() != Some(&branch.head) && env.updated_at < started => {
                    let moved = Environment {
                        head: Some(branch.head.clone()),
                        last_activity: env.last_activity.max(branch.last_commit.unwrap_or(env.last_activity)),
                        updated_at: Utc::now(),
                        ..env.clone()
                    };
                    if self
                        .put_environment(id, &moved, Condition::Version(*version), Some(env), "reconcile")
                        .await?
                        .is_some()
                    {
                        report.updated += 1;
                        self.post_template_status(integration, &moved).await;
                    }
                }
                Some(_) => {}
            }
        }
        if integration.options.prune_branches {
            let listed: HashSet<&str> = listing.items.iter().map(|b| b.name.as_str()).collect();
            let mut gone: Vec<_> = known
                .values()
                .filter(|(env, _)| !listed.contains(env.branch.as_str()) && env.updated_at < started)
                .collect();
            gone.sort_by(|a, b| a.0.branch.cmp(&b.0.branch));
            for (env, version) in gone {
                let reason = "branch gone (reconciliation)";
                match self.prune_environment(id, env, *version, reason, &format!("reconcile-v{version}")).await {
                    Ok(()) => {}
                    // Changed since it was read (a push re-created it): not gone after all.
                    Err(StoreError::ConditionFailed { .. }) => continue,
                    Err(e) => return Err(e.into()),
                }
                let entry = AuditEntry {
                    branch: env.branch.clone(),
                    action: AuditAction::EnvironmentPruned,
                    reason: reason.into(),
                    delivery_id: None,
                    at: Utc::now(),
                };
                self.audit(id, &entry).await?;
                self.post_stopped(integration, env).await;
                report.pruned.push(env.branch.clone());
            }
        }
        Ok(report)
    }

    /// Open pull requests against what is stored: one never seen, or whose head moved, is handed
    /// to the consumers (environments, builds) as the missed `pullrequest:updated` would have
    /// been; one merged or declined meanwhile is closed out (environment inactive, runs stopped).
    /// Each is a synthetic delivery whose id names the pull request and head (or its end), so a
    /// second reconciliation acts on nothing twice.
    pub async fn reconcile_pull_requests(&self, integration: &Integration) -> Result<PullRequestReport, Error> {
        let id = integration.id.as_str();
        let options = &integration.options;
        let client = self.client(integration).await?;
        let listing = match client.list_pull_requests().await {
            Ok(listing) => listing,
            Err(e) => return Err(self.noted(id, e).await),
        };
        if !listing.complete {
            return Err(self.incomplete(id, "pull request").await);
        }
        let builds = self.builds.as_ref().filter(|_| integration.flavor() == crate::webhook::Flavor::Cloud);
        let environments = if options.fetch_branches { self.all_environments(id).await? } else { Default::default() };
        let open_runs = match builds {
            Some(builds) => builds.open_runs(id).await?,
            None => Vec::new(),
        };
        let mut report = PullRequestReport { listed: listing.items.len(), ..Default::default() };
        for info in &listing.items {
            let active_for_it = environments
                .get(&info.source_branch)
                .is_some_and(|(env, _)| env.status == EnvironmentStatus::Active && env.pull_request == Some(info.id));
            let pr = info.as_event();
            let (event, delivery_id, wants_env, wants_build) = if info.is_open() {
                let Some(head) = &info.head else { continue };
                let wants_build = match builds {
                    Some(builds) if options.build_pull_requests => !builds.built_head(id, info.id, head).await?,
                    _ => false,
                };
                let wants_env = options.fetch_branches && options.build_pull_requests && !active_for_it;
                let delivery_id = format!("reconcile-pr-{}-{head}", info.id);
                (RepoEvent::PullRequestUpdated { pull_request: pr }, delivery_id, wants_env, wants_build)
            } else if info.is_closed() {
                let runs_open = open_runs.iter().any(|open| open.pull_request == Some(info.id));
                let event = if info.state.eq_ignore_ascii_case("MERGED") {
                    RepoEvent::PullRequestMerged { pull_request: pr }
                } else {
                    RepoEvent::PullRequestDeclined { pull_request: pr }
                };
                let delivery_id = format!("reconcile-pr-{}-{}", info.id, info.state.to_ascii_lowercase());
                (event, delivery_id, active_for_it, runs_open)
            } else {
                continue;
            };
            if !wants_env && !wants_build {
                continue;
            }
            let delivery = synthetic(integration, &delivery_id, event);
            if wants_env {
                self.on_delivery(integration, &delivery).await?;
            }
            if let (true, Some(builds)) = (wants_build, builds) {
                let effects = builds.on_delivery(integration, &delivery).await?;
                report.builds.extend(effects.started.into_iter().chain(effects.adopted));
            }
            if info.is_open() { report.caught_up.push(info.id) } else { report.closed.push(info.id) }
        }
        Ok(report)
    }

    /// The scheduled run: for every active integration, its parked deliveries; for one that
    /// mirrors branches, reconciliation, then the stale-branch cleanup (a dry run unless its
    /// policy is enabled; skipped when the reconciliation failed); then its pull requests
    /// against what is stored. One failing integration does not stop the others.
    pub async fn run_scheduled(&self, now: DateTime<Utc>) -> Result<Vec<ScheduledReport>, Error> {
        let mut reports = Vec::new();
        for integration in self.ctx.list().await? {
            if !self.schedulable(&integration) {
                continue;
            }
            reports.push(self.run_integration(&integration, now).await);
        }
        Ok(reports)
    }

    /// Whether the scheduled run applies to an integration: active, mirroring branches or with
    /// pull requests to reconcile.
    pub fn schedulable(&self, integration: &Integration) -> bool {
        integration.status == IntegrationStatus::Active
            && (integration.options.fetch_branches || self.reconciles_pull_requests(integration))
    }

    fn reconciles_pull_requests(&self, integration: &Integration) -> bool {
        integration.options.build_pull_requests
            && (integration.options.fetch_branches
                || (self.builds.is_some() && integration.flavor() == crate::webhook::Flavor::Cloud))
    }

    /// One integration's scheduled run (one message of the fanned-out schedule): nothing for one
    /// that is gone or not eligible any more.
    pub async fn run_one(&self, id: &str, now: DateTime<Utc>) -> Result<Option<ScheduledReport>, Error> {
        let Some(integration) = self.ctx.find(id).await? else { return Ok(None) };
        if !self.schedulable(&integration.record) {
            return Ok(None);
        }
        Ok(Some(self.run_integration(&integration.record, now).await))
    }

    async fn run_integration(&self, integration: &Integration, now: DateTime<Utc>) -> ScheduledReport {
        let pull_requests = self.reconciles_pull_requests(integration);
        let mut report = ScheduledReport {
            integration: integration.id.clone(),
            parked_handled: 0,
            environments: None,
            stale_branches: None,
            pull_requests: None,
            errors: Vec::new(),
            deferred: false,
        };
        if integration.options.fetch_branches {
            // Deliveries parked while it could not act come first: reconciliation then sees
            // the environments they make.
            match consumers::drain(self, integration).await {
                Ok(count) => report.parked_handled = count,
                Err(e) => {
                    report.deferred |= deferred(&e);
                    report.errors.push(format!("parked deliveries: {e}"))
                }
            }
            match self.reconcile_integration(integration).await {
                Ok(done) => {
                    report.environments = Some(done);
                    let dry_run = !integration.options.stale_branches.enabled;
                    match self.stale_for(integration, dry_run, now).await {
                        Ok(done) => report.stale_branches = Some(done),
                        Err(e) => {
                            report.deferred |= deferred(&e);
                            report.errors.push(format!("stale branches: {e}"))
                        }
                    }
                }
                // Bitbucket (or the listing) failed: the cleanup would meet the same failure.
                Err(e) => {
                    report.deferred |= deferred(&e);
                    report.errors.push(format!("environments: {e}"))
                }
            }
        }
        if pull_requests && report.errors.is_empty() {
            match self.reconcile_pull_requests(integration).await {
                Ok(done) => report.pull_requests = Some(done),
                Err(e) => {
                    report.deferred |= deferred(&e);
                    report.errors.push(format!("pull requests: {e}"))
                }
            }
        }
        report
    }
}

/// A delivery made by reconciliation (never recorded): what a missed webhook would have said.
fn synthetic(integration: &Integration, delivery_id: &str, event: RepoEvent) -> crate::Delivery {
    let summary = crate::webhook::summarize(std::slice::from_ref(&event));
    crate::Delivery {
        event_id: delivery_id.to_owned(),
        integration_id: integration.id.clone(),
        delivery_id: delivery_id.to_owned(),
        event_key: "reconciliation".into(),
        flavor: integration.flavor(),
        received_at: Utc::now(),
        hook_uuid: None,
        attempt: None,
        repository: Some(integration.target.full_name()),
        events: vec![event],
        summary,
        body_xxh3: None,
    }
}
