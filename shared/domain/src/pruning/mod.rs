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
pub use reconcile::{PullRequestReport, ReconcileReport, ScheduledReport};
pub use stale::{Outcome, StaleEntry, StaleReport};

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::bitbucket::{Bitbucket, BitbucketError, CommitStatus, StatusState};
use crate::context::IntegrationContext;
use crate::error::{Error, invalid};
use crate::integration::Integration;
use crate::outbox::{DomainEvent, EventType};
use crate::store::{Condition, StateStore, StoreError, Write};
use crate::tables::{AUDIT, ENVIRONMENTS, Record};

/// Bitbucket calls for one request or one integration's scheduled run, retries included: 60
/// pages of branches fit, and API Gateway's 30 s still answers first.
const CALL_BUDGET: Duration = Duration::from_secs(25);

/// What `environment.*` events say of an environment.
fn environment_data(env: &Environment, pull_request: Option<u64>) -> serde_json::Value {
    serde_json::json!({
        "branch": env.branch,
        "head": env.head,
        "status": env.status,
        "pull_request": env.pull_request.or(pull_request),
        "url": env.deployment.as_ref().map(|d| d.url.clone()),
    })
}

/// `environment.created`, `.activated`, `.deactivated` for a write from `before` to `after`.
fn environment_events(id: &str, before: Option<&Environment>, after: &Environment, cause: &str) -> Vec<DomainEvent> {
    let active = |env: Option<&Environment>| env.is_some_and(|e| e.status == EnvironmentStatus::Active);
    let mut kinds = Vec::new();
    if before.is_none() {
        kinds.push(EventType::EnvironmentCreated);
    }
    match (active(before), after.status == EnvironmentStatus::Active) {
        (false, true) => kinds.push(EventType::EnvironmentActivated),
        (true, false) => kinds.push(EventType::EnvironmentDeactivated),
        _ => {}
    }
    let data = environment_data(after, before.and_then(|b| b.pull_request));
    kinds
        .into_iter()
        .map(|kind| DomainEvent::new(kind, id, &format!("{cause}#{}", after.branch), data.clone()))
        .collect()
}

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
    /// The deployment status last shown in Bitbucket on its head commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<Deployment>,
    pub updated_at: DateTime<Utc>,
}

/// An environment's deployment status, as posted to Bitbucket (a commit status on Cloud, a build
/// status on Data Center) under [`status_key`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployment {
    pub state: StatusState,
    pub url: String,
    #[serde(default)]
    pub description: String,
    /// The commit it was posted on.
    pub commit: String,
    pub key: String,
    /// Reported by the service that deploys it (`PUT …/status`), not from `environment_url`.
    pub reported: bool,
    pub at: DateTime<Utc>,
}

/// The status key of an environment: stable per integration and branch, so each new state
/// replaces the previous one in Bitbucket.
pub fn status_key(integration_id: &str, branch: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::new().chain_update(integration_id).chain_update([0u8]).chain_update(branch).finalize();
    format!("bba-env-{}", &hex::encode(digest)[..16])
}

/// `PUT /integrations/{id}/environments/{branch}/status`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusReport {
    #[serde(deserialize_with = "crate::objects::name")]
    pub state: StatusState,
    pub url: Option<String>,
    pub description: Option<String>,
}

impl StatusReport {
    fn validate(&self) -> Result<(), Error> {
        if let Some(url) = &self.url {
            let ok = url::Url::parse(url).is_ok_and(|u| matches!(u.scheme(), "http" | "https"));
            if !ok || url.len() > 450 {
                return Err(invalid("url", "must be an http(s) URL of at most 450 characters"));
            }
        }
        if self.description.as_ref().is_some_and(|d| d.chars().count() > 255) {
            return Err(invalid("description", "must be at most 255 characters"));
        }
        Ok(())
    }
}

impl Environment {
    fn new(branch: &str, head: Option<String>, last_activity: DateTime<Utc>) -> Self {
        Environment {
            branch: branch.to_owned(),
            head,
            last_activity,
            status: EnvironmentStatus::Inactive,
            pull_request: None,
            deployment: None,
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
    /// The pipelines service, when this process builds (the scheduled pull-request
    /// reconciliation builds what webhooks missed).
    pub builds: Option<Arc<crate::pipelines::Pipelines>>,
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

    /// Writes `env` if `condition` holds (its new version); `None` when another writer got there
    /// first. `before` (what the condition was written against) and `cause` (what made the
    /// change: a delivery id, `reconcile`…) make its events.
    async fn put_environment(
        &self,
        id: &str,
        env: &Environment,
        condition: Condition,
        before: Option<&Environment>,
        cause: &str,
    ) -> Result<Option<u64>, Error> {
        // The version this write makes names its events, so a retried cause records none twice.
        let version =
            condition.next_version().ok_or_else(|| Error::Retry("an environment write needs a condition".into()))?;
        let events = environment_events(id, before, env, &format!("{cause}#v{version}"));
        let change = Write::Put(ENVIRONMENTS.item(id, &[&env.branch], env)?, condition);
        match self.ctx.write_with_events(change, &events).await {
            Ok(version) => Ok(Some(version)),
            Err(StoreError::ConditionFailed { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Applies `change` to a branch's environment (`None`: there is none) and writes what it
    /// returns when that differs; retried when another writer got there first. What it wrote:
    /// (before, after).
    async fn update_environment(
        &self,
        id: &str,
        branch: &str,
        cause: &str,
        change: impl Fn(Option<&Environment>) -> Option<Environment>,
    ) -> Result<Option<(Option<Environment>, Environment)>, Error> {
        for _ in 0..WRITE_ATTEMPTS {
            let current = self.environment(id, branch).await?;
            let Some(mut next) = change(current.as_ref().map(|(env, _)| env)) else { return Ok(None) };
            if current.as_ref().is_some_and(|(env, _)| env.same_as(&next)) {
                return Ok(None);
            }
            next.updated_at = Utc::now();
            let condition = current.as_ref().map_or(Condition::Absent, |(_, version)| Condition::Version(*version));
            let before = current.map(|(env, _)| env);
            if self.put_environment(id, &next, condition, before.as_ref(), cause).await?.is_some() {
                return Ok(Some((before, next)));
            }
        }
        Err(StoreError::Unavailable(format!("environment `{branch}` keeps changing concurrently; retry")).into())
    }

    /// Removes a branch's environment at `version` together with its `environment.pruned` event.
    async fn prune_environment(
        &self,
        id: &str,
        env: &Environment,
        version: u64,
        reason: &str,
        cause: &str,
    ) -> Result<(), StoreError> {
        let mut data = environment_data(env, env.pull_request);
        data["reason"] = serde_json::json!(reason);
        let event = DomainEvent::new(EventType::EnvironmentPruned, id, &format!("{cause}#{}", env.branch), data);
        let change = Write::Delete(ENVIRONMENTS.key(id, &[&env.branch]), Condition::Version(version));
        self.ctx.write_with_events(change, &[event]).await.map(|_| ())
    }

    /// Shows `state` for the environment in Bitbucket, on its head commit, under its key.
    async fn post_status(
        &self,
        integration: &Integration,
        env: &Environment,
        state: StatusState,
        url: String,
        description: String,
        reported: bool,
    ) -> Result<Deployment, Error> {
        let commit = env.head.clone().ok_or_else(|| {
            Error::Conflict(format!("environment `{}` has no known head commit to show a status on", env.branch))
        })?;
        let key = status_key(&integration.id, &env.branch);
        let status = CommitStatus {
            key: key.clone(),
            state,
            name: format!("Environment {}", env.branch),
            url: url.clone(),
            description: description.clone(),
            branch: Some(env.branch.clone()),
        };
        let client = self.client(integration).await?;
        if let Err(e) = client.set_commit_status(&commit, &status).await {
            return Err(self.noted(&integration.id, e).await);
        }
        Ok(Deployment { state, url, description, commit, key, reported, at: Utc::now() })
    }

    /// Keeps `deployment` on the environment (unless it changed meanwhile in a way that makes it
    /// stale: another head).
    async fn keep_deployment(
        &self,
        id: &str,
        branch: &str,
        deployment: &Deployment,
    ) -> Result<Option<Environment>, Error> {
        let kept = self
            .update_environment(id, branch, "status", |current| {
                let env = current?;
                Some(Environment { deployment: Some(deployment.clone()), ..env.clone() })
            })
            .await?;
        Ok(kept.map(|(_, after)| after))
    }

    /// With `environment_url`, an active environment nobody reported on shows that URL as its
    /// status on its head commit. Best effort: a failure is noted on the integration.
    async fn post_template_status(&self, integration: &Integration, env: &Environment) {
        let Some(template) = &integration.options.environment_url else { return };
        if env.status != EnvironmentStatus::Active || env.head.is_none() {
            return;
        }
        if env.deployment.as_ref().is_some_and(|d| d.reported || Some(&d.commit) == env.head.as_ref()) {
            return;
        }
        let url = crate::integration::environment_url(template, &env.branch);
        let description = format!("Environment {} is active", env.branch);
        match self.post_status(integration, env, StatusState::Successful, url, description, false).await {
            Ok(deployment) => {
                if let Err(e) = self.keep_deployment(&integration.id, &env.branch, &deployment).await {
                    tracing::warn!(integration = %integration.id, error = %e, "environment status not kept");
                }
            }
            Err(e) => tracing::warn!(integration = %integration.id, branch = %env.branch, error = %e,
                "environment status not shown in Bitbucket"),
        }
    }

    /// A pruned environment that showed a status ends `stopped`. Best effort.
    async fn post_stopped(&self, integration: &Integration, env: &Environment) {
        let Some(deployment) = &env.deployment else { return };
        let env = Environment { head: Some(deployment.commit.clone()), ..env.clone() };
        let description = format!("Environment {} was pruned", env.branch);
        if let Err(e) = self
            .post_status(
                integration,
                &env,
                StatusState::Stopped,
                deployment.url.clone(),
                description,
                deployment.reported,
            )
            .await
        {
            tracing::warn!(integration = %integration.id, branch = %env.branch, error = %e, "stopped status not shown");
        }
    }

    /// `PUT /integrations/{id}/environments/{branch}/status`: what the service that deploys the
    /// environment reports, shown in Bitbucket on its head commit.
    pub async fn report_status(&self, id: &str, branch: &str, report: StatusReport) -> Result<Environment, Error> {
        report.validate()?;
        let integration = self.ctx.active(id, "report an environment status").await?;
        let (env, _) =
            self.environment(id, branch).await?.ok_or_else(|| Error::NotFound(format!("no environment `{branch}`")))?;
        let url = match (&report.url, &integration.options.environment_url) {
            (Some(url), _) => url.clone(),
            (None, Some(template)) => crate::integration::environment_url(template, branch),
            (None, None) => match &env.head {
                Some(head) => integration.target.commit_url(head),
                None => integration.target.html_url(),
            },
        };
        let description =
            report.description.clone().unwrap_or_else(|| format!("Environment {branch}: {}", report.state.as_str()));
        let deployment = self.post_status(&integration, &env, report.state, url, description, true).await?;
        Ok(self
            .keep_deployment(id, branch, &deployment)
            .await?
            .unwrap_or(Environment { deployment: Some(deployment), ..env }))
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

    /// [`Self::audit`] of a deleted branch with its `branch.deleted` event, all-or-none.
    async fn audit_with_event(&self, id: &str, entry: &AuditEntry) -> Result<(), Error> {
        let parts = entry.parts();
        let data = serde_json::json!({"branch": entry.branch, "reason": entry.reason});
        let event = DomainEvent::new(EventType::BranchDeleted, id, &parts.join("#"), data);
        let change = Write::Put(AUDIT.item(id, &parts.each_ref().map(String::as_str), entry)?, Condition::Absent);
        match self.ctx.write_with_events(change, &[event]).await {
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
