//! The stale-branch cleanup: gathers what the plan needs from Bitbucket, plans, and — unless it
//! is a dry run — deletes each planned branch, auditing each deletion with its reason. A failed
//! deletion is reported with the others, not fatal; a failed or cut-short listing plans nothing.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{AuditAction, AuditEntry, BranchPlan, Decision, PlanInput, Pruner, plan};
use crate::error::Error;
use crate::integration::{Integration, StalePolicy};
use crate::store::StoreError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Deleted,
    Failed,
}

/// A branch's decision and, in a real run, what became of a planned deletion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StaleEntry {
    #[serde(flatten)]
    pub plan: BranchPlan,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StaleReport {
    pub integration: String,
    pub dry_run: bool,
    /// The time the ages were measured against.
    pub evaluated_at: DateTime<Utc>,
    pub main_branch: Option<String>,
    pub policy: StalePolicy,
    /// Branches the plan deletes (a dry run deletes none of them).
    pub planned_deletions: usize,
    pub deleted: usize,
    pub failed: usize,
    /// Every branch, by name, with its decision and reason.
    pub branches: Vec<StaleEntry>,
}

impl Pruner {
    /// `POST /integrations/{id}/prune` with `{"mode": "stale-branches", "dry_run": …}`, ages
    /// measured at `now`.
    pub async fn stale_branches(&self, id: &str, dry_run: bool, now: DateTime<Utc>) -> Result<StaleReport, Error> {
        let action = if dry_run { "plan stale branches" } else { "delete stale branches" };
        let integration = self.ctx.active(id, action).await?;
        self.stale_for(&integration, dry_run, now).await
    }

    pub(super) async fn stale_for(
        &self,
        integration: &Integration,
        dry_run: bool,
        now: DateTime<Utc>,
    ) -> Result<StaleReport, Error> {
        let id = integration.id.as_str();
        let client = self.client(integration).await?;
        let gathered = tokio::try_join!(
            client.list_branches(),
            client.list_pull_requests(),
            client.delete_restricted_patterns(),
            client.main_branch(),
        );
        let (branches, pull_requests, restricted, main_branch) = match gathered {
            Ok(gathered) => gathered,
            Err(e) => return Err(self.noted(id, e).await),
        };
        // A branch or an open pull request not seen could be deleted or unprotected: plan nothing.
        if !branches.complete {
            return Err(self.incomplete(id, "branch").await);
        }
        if !pull_requests.complete {
            return Err(self.incomplete(id, "pull request").await);
        }
        let policy = &integration.options.stale_branches;
        let plans = plan(&PlanInput {
            branches: &branches.items,
            pull_requests: &pull_requests.items,
            restricted: &restricted,
            main_branch: main_branch.as_deref(),
            policy,
            now,
        });
        let mut report = StaleReport {
            integration: id.to_owned(),
            dry_run,
            evaluated_at: now,
            main_branch,
            policy: policy.clone(),
            planned_deletions: plans.iter().filter(|p| p.decision == Decision::Delete).count(),
            deleted: 0,
            failed: 0,
            branches: Vec::with_capacity(plans.len()),
        };
        for plan in plans {
            let mut entry = StaleEntry { plan, outcome: None, error: None };
            if !dry_run && entry.plan.decision == Decision::Delete {
                let branch = entry.plan.branch.clone();
                match client.delete_branch(&branch).await {
                    Ok(()) => {
                        let deleted = AuditEntry {
                            branch: branch.clone(),
                            action: AuditAction::BranchDeleted,
                            reason: entry.plan.reason.clone(),
                            delivery_id: None,
                            at: Utc::now(),
                        };
                        self.audit_with_event(id, &deleted).await?;
                        self.forget_environment(integration, &branch).await?;
                        entry.outcome = Some(Outcome::Deleted);
                        report.deleted += 1;
                    }
                    Err(e) => {
                        tracing::warn!(integration = id, branch, reason = e.reason(), error = %e, "branch not deleted");
                        if e.is_credential_problem() {
                            self.ctx.noted(id, e.clone()).await;
                        }
                        entry.outcome = Some(Outcome::Failed);
                        entry.error = Some(e.to_string());
                        report.failed += 1;
                    }
                }
            }
            report.branches.push(entry);
        }
        tracing::info!(
            integration = id,
            dry_run,
            planned = report.planned_deletions,
            deleted = report.deleted,
            failed = report.failed,
            "stale branches"
        );
        Ok(report)
    }

    /// Prunes a deleted branch's environment now rather than when the webhook (if any) arrives.
    async fn forget_environment(&self, integration: &Integration, branch: &str) -> Result<(), Error> {
        let options = &integration.options;
        if !(options.fetch_branches && options.prune_branches) {
            return Ok(());
        }
        let id = integration.id.as_str();
        let Some((env, version)) = self.environment(id, branch).await? else { return Ok(()) };
        let reason = "branch deleted (stale-branch cleanup)";
        match self.prune_environment(id, &env, version, reason, &format!("stale-v{version}")).await {
            Ok(()) => {}
            // Changed since it was read (a push re-created it): the webhook's turn to decide.
            Err(StoreError::ConditionFailed { .. }) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        let entry = AuditEntry {
            branch: branch.to_owned(),
            action: AuditAction::EnvironmentPruned,
            reason: reason.into(),
            delivery_id: None,
            at: Utc::now(),
        };
        self.audit(id, &entry).await?;
        self.post_stopped(integration, &env).await;
        Ok(())
    }
}
