//! Environments mirrored from branches (`fetch_branches`), pruned when their branch is gone
//! (`prune_branches`), active while a pull request from them is open (`build_pull_requests`);
//! and the stale-branch cleanup that deletes merged or abandoned branches from Bitbucket itself,
//! dry run by default.
//!
//! Records in the integration's partition `INT#{id}`:
//! - `ENV#{branch}` an [`Environment`];
//! - `AUD#…` an [`AuditEntry`] for every environment pruned and every branch deleted:
//!   `AUD#DLV#{delivery id}#{branch}` when a delivery caused it (so processing the delivery
//!   again writes no second one), else `AUD#{µs}#{branch}#{action}`; all sorted on the LSI by
//!   `AUD#{µs}#{branch}` so they list newest first.

mod events;
mod plan;
mod reconcile;
mod stale;

pub use events::DeliveryEffects;
pub use plan::{BranchPlan, Decision, PlanInput, plan, restriction_matches};
pub use reconcile::{ReconcileReport, ScheduledReport};
pub use stale::{Outcome, StaleEntry, StaleReport};

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::connection::{self, ConnectionError};
use super::integration::{self, Integration};
use crate::bitbucket::{Bitbucket, BitbucketError, Connector};
use crate::secrets::{SecretError, SecretStore};
use crate::store::{Condition, Index, Item, Key, Query, StateStore, StoreError, compose, query_all};

/// Bitbucket calls for one request or one integration's scheduled run, retries included: 60
/// pages of branches fit, and API Gateway's 30 s still answers first.
const CALL_BUDGET: Duration = Duration::from_secs(25);
const ENVIRONMENT_KIND: &str = "environment";
const AUDIT_KIND: &str = "prune_audit";
/// Writes of one environment retried when another writer got there first.
const WRITE_ATTEMPTS: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum PrunerError {
    #[error("{field}: {problem}")]
    Invalid { field: &'static str, problem: String },
    #[error("integration `{0}` does not mirror branches as environments (options.fetch_branches is false)")]
    NotMirrored(String),
    #[error("the {0} listing stopped at its page bound before its end, so nothing was pruned or deleted")]
    Incomplete(&'static str),
    #[error(transparent)]
    Connection(#[from] ConnectionError),
    #[error("{0}")]
    Bitbucket(#[from] BitbucketError),
    #[error(transparent)]
    Secrets(#[from] SecretError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

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

impl AuditEntry {
    fn item(&self, id: &str) -> Result<Item, StoreError> {
        let micros = self.at.timestamp_micros();
        let micros = format!("{micros:016}");
        let sk = match &self.delivery_id {
            Some(delivery) => compose(&["AUD", "DLV", delivery, &self.branch]),
            None => compose(&["AUD", &micros, &self.branch, self.action.as_str()]),
        };
        let key = Key::new(integration::partition(id), sk);
        Ok(Item::from_record(key, AUDIT_KIND, self)?.with_sort(compose(&["AUD", &micros, &self.branch])))
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
    pub fn validate(self) -> Result<PruneAction, PrunerError> {
        match (self.mode, self.dry_run) {
            (PruneMode::Environments, None) => Ok(PruneAction::Reconcile),
            (PruneMode::Environments, Some(_)) => {
                Err(PrunerError::Invalid { field: "dry_run", problem: "applies to mode `stale-branches` only".into() })
            }
            (PruneMode::StaleBranches, dry_run) => Ok(PruneAction::StaleBranches { dry_run: dry_run.unwrap_or(true) }),
        }
    }
}

fn environment_key(id: &str, branch: &str) -> Key {
    Key::new(integration::partition(id), format!("ENV#{branch}"))
}

/// The pruning service, built once per process.
#[derive(Clone)]
pub struct Pruner {
    pub store: Arc<dyn StateStore>,
    pub secrets: Arc<dyn SecretStore>,
    pub connector: Connector,
}

impl Pruner {
    async fn integration(&self, id: &str) -> Result<Integration, PrunerError> {
        Ok(connection::existing(self.store.as_ref(), id).await?.0)
    }

    async fn client(&self, integration: &Integration) -> Result<Arc<dyn Bitbucket>, PrunerError> {
        Ok(connection::client_for(&*self.secrets, &self.connector, integration, CALL_BUDGET).await?)
    }

    /// Keeps a failed listing on the integration (a refused credential also moves it to
    /// `error`), then passes the error on.
    async fn noted(&self, id: &str, e: BitbucketError) -> PrunerError {
        connection::record_failure(self.store.as_ref(), id, &e).await;
        e.into()
    }

    /// Keeps a listing cut short by its page bound on the integration.
    async fn incomplete(&self, id: &str, listing: &'static str) -> PrunerError {
        let error = PrunerError::Incomplete(listing);
        connection::record_problem(self.store.as_ref(), id, "incomplete_listing", &error.to_string()).await;
        error
    }

    async fn environment(&self, id: &str, branch: &str) -> Result<Option<(Environment, u64)>, PrunerError> {
        match self.store.get(&environment_key(id, branch)).await? {
            Some(item) => Ok(Some((item.record()?, item.version))),
            None => Ok(None),
        }
    }

    /// Writes `env` if `condition` holds; `false` when another writer got there first.
    async fn put_environment(&self, id: &str, env: &Environment, condition: Condition) -> Result<bool, PrunerError> {
        let item = Item::from_record(environment_key(id, &env.branch), ENVIRONMENT_KIND, env)?;
        match self.store.put(item, condition).await {
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
    ) -> Result<bool, PrunerError> {
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
    async fn audit(&self, id: &str, entry: &AuditEntry) -> Result<(), PrunerError> {
        match self.store.put(entry.item(id)?, Condition::Absent).await {
            Ok(_) | Err(StoreError::ConditionFailed { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Every environment of the integration with its version, by branch.
    async fn all_environments(&self, id: &str) -> Result<HashMap<String, (Environment, u64)>, PrunerError> {
        let items = query_all(self.store.as_ref(), &integration::partition(id), "ENV#").await?;
        let mut out = HashMap::with_capacity(items.len());
        for item in &items {
            let env: Environment = item.record()?;
            out.insert(env.branch.clone(), (env, item.version));
        }
        Ok(out)
    }

    /// `GET /integrations/{id}/environments`: by branch name, cursor paging.
    pub async fn list_environments(
        &self,
        id: &str,
        limit: usize,
        cursor: Option<String>,
    ) -> Result<(Vec<Environment>, Option<String>), PrunerError> {
        self.integration(id).await?;
        let page = self
            .store
            .query(&Query {
                pk: integration::partition(id),
                index: Index::Primary { sk_prefix: "ENV#".into() },
                descending: false,
                limit,
                cursor,
            })
            .await?;
        let environments = page.items.iter().map(Item::record).collect::<Result<_, _>>()?;
        Ok((environments, page.cursor))
    }

    /// `GET /integrations/{id}/prune-audit`: what was pruned or deleted, newest first.
    pub async fn list_audit(
        &self,
        id: &str,
        limit: usize,
        cursor: Option<String>,
    ) -> Result<(Vec<AuditEntry>, Option<String>), PrunerError> {
        self.integration(id).await?;
        let page = self
            .store
            .query(&Query {
                pk: integration::partition(id),
                index: Index::Sorted { prefix: "AUD#".into() },
                descending: true,
                limit,
                cursor,
            })
            .await?;
        let entries = page.items.iter().map(Item::record).collect::<Result<_, _>>()?;
        Ok((entries, page.cursor))
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
        let item = entry.item("int").unwrap();
        assert_eq!(
            (item.key.sk.as_str(), item.sort.as_deref()),
            ("AUD#DLV#d-1#topic", Some("AUD#1767323045000000#topic"))
        );
        entry.delivery_id = None;
        assert_eq!(entry.item("int").unwrap().key.sk, "AUD#1767323045000000#topic#environment_pruned");
        // Delivery ids and branch names may hold `#`: their parts never run together.
        let keyed = |delivery: &str, branch: &str| {
            let entry = AuditEntry { delivery_id: Some(delivery.into()), branch: branch.into(), ..entry.clone() };
            entry.item("int").unwrap().key.sk
        };
        assert_ne!(keyed("D", "k#z"), keyed("D#k", "z"));
    }
}
