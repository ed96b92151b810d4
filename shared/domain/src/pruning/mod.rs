//! Environments mirrored from branches (`fetch_branches`), pruned when their branch is gone
//! (`prune_branches`), active while a pull request from them is open (`build_pull_requests`);
//! and the stale-branch cleanup that deletes merged or abandoned branches from Bitbucket itself,
//! dry run by default.
//!
//! Records (see [`crate::tables`]): an [`Environment`] per mirrored branch (`ENVIRONMENTS`), and
//! an [`AuditEntry`] for every environment pruned and every branch deleted (`AUDIT`): keyed by
//! (`DLV`, delivery id, branch) when a delivery caused it (so processing the delivery again
//! writes no second one), else by (µs, branch, action); listed newest first by (µs, branch).

mod events;
mod plan;
mod reconcile;
mod stale;

pub use events::{CONSUMER, DeliveryEffects};
pub use plan::{BranchPlan, Decision, PlanInput, plan, restriction_matches};
pub use reconcile::{ReconcileReport, ScheduledReport};
pub use stale::{Outcome, StaleEntry, StaleReport};

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::bitbucket::{Bitbucket, BitbucketError};
use crate::context::IntegrationContext;
use crate::error::{Error, invalid};
use crate::integration::Integration;
use crate::store::{Condition, StateStore, StoreError};
use crate::tables::{AUDIT, ENVIRONMENTS, Record};

/// Bitbucket calls for one request or one integration's scheduled run, retries included: 60
/// pages of branches fit, and API Gateway's 30 s still answers first.
const CALL_BUDGET: Duration = Duration::from_secs(25);
/// Writes of one environment retried when another writer got there first.
const WRITE_ATTEMPTS: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EnvironmentStatus {
    /// A pull request from the branch is open.
    Active,
    Inactive,
}

/// One branch mirrored as an environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Environment {
    pub branch: String,
    /// The branch's head commit, when known.
    pub head: Option<String>,
    /// The last push (the delivery's time), or the last commit when reconciliation found it.
    pub last_activity: DateTime<Utc>,
    pub status: EnvironmentStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_request: Option<u64>,
    pub updated_at: DateTime<Utc>,
}

impl Environment {
    fn new(branch: &str, head: Option<String>, last_activity: DateTime<Utc>) -> Self {
        Environment {
            branch: branch.to_owned(),
            head,
            last_activity,
            status: EnvironmentStatus::Inactive,
            pull_request: None,
            updated_at: Utc::now(),
        }
    }

    /// Equal but for when it was written: such a write would change nothing.
    fn same_as(&self, other: &Environment) -> bool {
        Environment { updated_at: other.updated_at, ..self.clone() } == *other
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditAction {
    EnvironmentPruned,
    BranchDeleted,
}

impl AuditAction {
    fn as_str(self) -> &'static str {
        match self {
            AuditAction::EnvironmentPruned => "environment_pruned",
            AuditAction::BranchDeleted => "branch_deleted",
        }
    }
}

/// What was pruned or deleted, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub branch: String,
    pub action: AuditAction,
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery_id: Option<String>,
    pub at: DateTime<Utc>,
}

impl Record for Environment {
    const KIND: &'static str = "environment";
}

impl Record for AuditEntry {
    const KIND: &'static str = "prune_audit";

    fn sort_parts(&self) -> Vec<String> {
        vec![self.micros(), self.branch.clone()]
    }
}

impl AuditEntry {
    fn micros(&self) -> String {
        format!("{:016}", self.at.timestamp_micros())
    }

    /// Its key: the delivery's when one caused it, else the moment's.
    fn parts(&self) -> [String; 3] {
        match &self.delivery_id {
            Some(delivery) => ["DLV".into(), delivery.clone(), self.branch.clone()],
            None => [self.micros(), self.branch.clone(), self.action.as_str().into()],
        }
    }
}

/// `POST /integrations/{id}/prune`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PruneRequest {
    #[serde(deserialize_with = "crate::objects::name")]
    pub mode: PruneMode,
    pub dry_run: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PruneMode {
    Environments,
    StaleBranches,
}

/// What a prune request asks for, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PruneAction {
    Reconcile,
    /// Dry run unless the request says `"dry_run": false`.
    StaleBranches {
        dry_run: bool,
    },
}

impl PruneRequest {
    pub fn validate(self) -> Result<PruneAction, Error> {
        match (self.mode, self.dry_run) {
            (PruneMode::Environments, None) => Ok(PruneAction::Reconcile),
            (PruneMode::Environments, Some(_)) => Err(invalid("dry_run", "applies to mode `stale-branches` only")),
            (PruneMode::StaleBranches, dry_run) => Ok(PruneAction::StaleBranches { dry_run: dry_run.unwrap_or(true) }),
        }
    }
}

/// The pruning service, built once per process.
#[derive(Clone)]
pub struct Pruner {
    pub ctx: IntegrationContext,
}

impl Pruner {
    fn store(&self) -> &dyn StateStore {
        self.ctx.store.as_ref()
    }

    async fn client(&self, integration: &Integration) -> Result<Arc<dyn Bitbucket>, Error> {
        self.ctx.client(integration, CALL_BUDGET).await
    }

    /// Keeps a failed listing on the integration (a refused credential also moves it to
    /// `error`), then passes the error on.
    async fn noted(&self, id: &str, e: BitbucketError) -> Error {
        self.ctx.noted(id, e).await
    }

    /// Keeps a listing cut short by its page bound on the integration: nothing was pruned; a
    /// later run (or a retry) may read the whole listing.
    async fn incomplete(&self, id: &str, listing: &'static str) -> Error {
        let message =
            format!("the {listing} listing stopped at its page bound before its end, so nothing was pruned or deleted");
        self.ctx.note_problem(id, "incomplete_listing", &message).await;
        Error::Retry(message)
    }

    async fn environment(&self, id: &str, branch: &str) -> Result<Option<(Environment, u64)>, Error> {
        Ok(ENVIRONMENTS.get(self.store(), id, &[branch]).await?.map(|env| (env.record, env.version)))
    }

    /// Removes a branch's environment if `condition` holds.
    async fn delete_environment(&self, id: &str, branch: &str, condition: Condition) -> Result<(), StoreError> {
        ENVIRONMENTS.delete(self.store(), id, &[branch], condition).await
    }

    /// Writes `env` if `condition` holds; `false` when another writer got there first.
    async fn put_environment(&self, id: &str, env: &Environment, condition: Condition) -> Result<bool, Error> {
        match ENVIRONMENTS.put(self.store(), id, &[&env.branch], env, condition).await {
            Ok(_) => Ok(true),
            Err(StoreError::ConditionFailed { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Applies `change` to a branch's environment (`None`: there is none) and writes what it
    /// returns when that differs; retried when another writer got there first. Whether it wrote.
    async fn update_environment(
        &self,
        id: &str,
        branch: &str,
        change: impl Fn(Option<&Environment>) -> Option<Environment>,
    ) -> Result<bool, Error> {
        for _ in 0..WRITE_ATTEMPTS {
            let current = self.environment(id, branch).await?;
            let Some(mut next) = change(current.as_ref().map(|(env, _)| env)) else { return Ok(false) };
            if current.as_ref().is_some_and(|(env, _)| env.same_as(&next)) {
                return Ok(false);
            }
            next.updated_at = Utc::now();
            let condition = current.map_or(Condition::Absent, |(_, version)| Condition::Version(version));
            if self.put_environment(id, &next, condition).await? {
                return Ok(true);
            }
        }
        Err(StoreError::Unavailable(format!("environment `{branch}` keeps changing concurrently; retry")).into())
    }

    /// Writes an audit entry once: an entry is never overwritten. Its key is the delivery's
    /// (or the moment's), so finding one there means this very entry was written before.
    async fn audit(&self, id: &str, entry: &AuditEntry) -> Result<(), Error> {
        let parts = entry.parts();
        match AUDIT.put(self.store(), id, &parts.each_ref().map(String::as_str), entry, Condition::Absent).await {
            Ok(_) | Err(StoreError::ConditionFailed { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Every environment of the integration with its version, by branch.
    async fn all_environments(&self, id: &str) -> Result<HashMap<String, (Environment, u64)>, Error> {
        let all = ENVIRONMENTS.all(self.store(), id, &[]).await?;
        Ok(all.into_iter().map(|env| (env.record.branch.clone(), (env.record, env.version))).collect())
    }

    /// `GET /integrations/{id}/environments`: by branch name, cursor paging.
    pub async fn list_environments(
        &self,
        id: &str,
        limit: usize,
        cursor: Option<String>,
    ) -> Result<(Vec<Environment>, Option<String>), Error> {
        self.ctx.get(id).await?;
        Ok(ENVIRONMENTS.page(self.store(), id, &[], false, limit, cursor).await?)
    }

    /// `GET /integrations/{id}/prune-audit`: what was pruned or deleted, newest first.
    pub async fn list_audit(
        &self,
        id: &str,
        limit: usize,
        cursor: Option<String>,
    ) -> Result<(Vec<AuditEntry>, Option<String>), Error> {
        self.ctx.get(id).await?;
        Ok(AUDIT.page_sorted(self.store(), id, &[], true, limit, cursor).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_audit_keys() {
        let parse = |v: serde_json::Value| serde_json::from_value::<PruneRequest>(v).map_err(|e| e.to_string());
        let action = |v| parse(v).unwrap().validate().unwrap();
        assert_eq!(action(serde_json::json!({"mode": "environments"})), PruneAction::Reconcile);
        assert_eq!(
            action(serde_json::json!({"mode": "stale-branches"})),
            PruneAction::StaleBranches { dry_run: true },
            "dry run unless asked otherwise"
        );
        assert_eq!(
            action(serde_json::json!({"mode": "stale-branches", "dry_run": false})),
            PruneAction::StaleBranches { dry_run: false }
        );
        assert!(parse(serde_json::json!({"mode": "everything"})).is_err());
        assert!(parse(serde_json::json!({"mode": "environments", "force": true})).is_err());
        assert!(parse(serde_json::json!({"mode": "environments", "dry_run": true})).unwrap().validate().is_err());

        let at = DateTime::parse_from_rfc3339("2026-01-02T03:04:05Z").unwrap().with_timezone(&Utc);
        let mut entry = AuditEntry {
            branch: "topic".into(),
            action: AuditAction::EnvironmentPruned,
            reason: "branch deleted".into(),
            delivery_id: Some("d-1".into()),
            at,
        };
        let item =
            |entry: &AuditEntry| AUDIT.item("int", &entry.parts().each_ref().map(String::as_str), entry).unwrap();
        assert_eq!(
            (item(&entry).key.sk.as_str(), item(&entry).sort.as_deref()),
            ("AUD#DLV#d-1#topic", Some("AUD#1767323045000000#topic"))
        );
        entry.delivery_id = None;
        assert_eq!(item(&entry).key.sk, "AUD#1767323045000000#topic#environment_pruned");
        // Delivery ids and branch names may hold `#`: their parts never run together.
        let keyed = |delivery: &str, branch: &str| {
            let entry = AuditEntry { delivery_id: Some(delivery.into()), branch: branch.into(), ..entry.clone() };
            item(&entry).key.sk
        };
        assert_ne!(keyed("D", "k#z"), keyed("D#k", "z"));
    }
}
