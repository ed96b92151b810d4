//! Reconciliation: the repository's branches (every page) against the stored environments —
//! missing ones added, moved heads updated, and (with `prune_branches`) those whose branch is
//! gone pruned. This heals missed webhooks. A listing that fails or is cut short by its page
//! bound prunes nothing and is kept as the integration's last error.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{AuditAction, AuditEntry, Environment, Pruner, StaleReport};
use crate::consumers;
use crate::error::Error;
use crate::integration::{Integration, IntegrationStatus};
use crate::store::{Condition, StoreError};

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
                    if self.put_environment(id, &env, Condition::Absent).await? {
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
                    if self.put_environment(id, &moved, Condition::Version(*version)).await? {
                        report.updated += 1;
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
                match self.delete_environment(id, &env.branch, Condition::Version(*version)).await {
                    Ok(()) => {}
                    // Changed since it was read (a push re-created it): not gone after all.
                    Err(StoreError::ConditionFailed { .. }) => continue,
                    Err(e) => return Err(e.into()),
                }
                let entry = AuditEntry {
                    branch: env.branch.clone(),
                    action: AuditAction::EnvironmentPruned,
                    reason: "branch gone (reconciliation)".into(),
                    delivery_id: None,
                    at: Utc::now(),
                };
                self.audit(id, &entry).await?;
                report.pruned.push(env.branch.clone());
            }
        }
        Ok(report)
    }

    /// The scheduled run: for every active integration that mirrors branches, reconciliation,
    /// then the stale-branch cleanup (a dry run unless its policy is enabled; skipped when the
    /// reconciliation failed). One failing integration does not stop the others.
    pub async fn run_scheduled(&self, now: DateTime<Utc>) -> Result<Vec<ScheduledReport>, Error> {
        let mut reports = Vec::new();
        for integration in self.ctx.list().await? {
            if !Self::schedulable(&integration) {
                continue;
            }
            reports.push(self.run_integration(&integration, now).await);
        }
        Ok(reports)
    }

    /// Whether the scheduled run applies to an integration.
    pub fn schedulable(integration: &Integration) -> bool {
        integration.status == IntegrationStatus::Active && integration.options.fetch_branches
    }

    /// One integration's scheduled run (one message of the fanned-out schedule): nothing for one
    /// that is gone or not eligible any more.
    pub async fn run_one(&self, id: &str, now: DateTime<Utc>) -> Result<Option<ScheduledReport>, Error> {
        let Some(integration) = self.ctx.find(id).await? else { return Ok(None) };
        if !Self::schedulable(&integration.record) {
            return Ok(None);
        }
        Ok(Some(self.run_integration(&integration.record, now).await))
    }

    async fn run_integration(&self, integration: &Integration, now: DateTime<Utc>) -> ScheduledReport {
        {
            let mut report = ScheduledReport {
                integration: integration.id.clone(),
                parked_handled: 0,
                environments: None,
                stale_branches: None,
                errors: Vec::new(),
                deferred: false,
            };
            // Deliveries parked while it could not act come first: reconciliation then sees
            // the environments they make.
            match consumers::drain(self, integration).await {
                Ok(count) => report.parked_handled = count,
                Err(e) => report.errors.push(format!("parked deliveries: {e}")),
            }
            match self.reconcile_integration(integration).await {
                Ok(done) => report.environments = Some(done),
                Err(e) => {
                    // Bitbucket (or the listing) failed: the cleanup would meet the same failure.
                    report.deferred |= deferred(&e);
                    report.errors.push(format!("environments: {e}"));
                    return report;
                }
            }
            let dry_run = !integration.options.stale_branches.enabled;
            match self.stale_for(integration, dry_run, now).await {
                Ok(done) => report.stale_branches = Some(done),
                Err(e) => {
                    report.deferred |= deferred(&e);
                    report.errors.push(format!("stale branches: {e}"))
                }
            }
            report
        }
    }
}
