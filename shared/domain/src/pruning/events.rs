//! Environments following the recorded webhook events: a branch created or pushed has one, a
//! deleted branch's is pruned (with an audit record naming the delivery), a pull request opened
//! from it makes it active until the pull request is merged, declined or deleted. Tags are not
//! environments. Safe to process the same delivery more than once: each write compares with
//! what is stored, and a prune's audit key is the delivery's.

use chrono::{DateTime, Utc};
use serde::Serialize;

use async_trait::async_trait;

use super::{AuditAction, AuditEntry, Environment, EnvironmentStatus, Pruner, WRITE_ATTEMPTS};
use crate::Delivery;
use crate::consumers::{DeliveryConsumer, Readiness};
use crate::context::IntegrationContext;
use crate::error::Error;
use crate::integration::{Integration, IntegrationStatus};
use crate::store::{Condition, StoreError};
use crate::tables::AUDIT;
use crate::webhook::RepoEvent;

/// What one delivery changed (for logs and tests).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DeliveryEffects {
    pub upserted: Vec<String>,
    pub activated: Vec<String>,
    pub deactivated: Vec<String>,
    pub pruned: Vec<String>,
}

/// The consumer name environments park deliveries under.
pub const CONSUMER: &str = "environments";

#[async_trait]
impl DeliveryConsumer for Pruner {
    fn name(&self) -> &'static str {
        CONSUMER
    }

    fn context(&self) -> &IntegrationContext {
        &self.ctx
    }

    /// Integrations that mirror branches, when active; a disconnected one gets its
    /// environments once it is reconnected (parked, not dropped).
    fn readiness(&self, integration: &Integration) -> Readiness {
        match (integration.options.fetch_branches, integration.status) {
            (false, _) => Readiness::Never,
            (true, IntegrationStatus::Active) => Readiness::Act,
            (true, status) => Readiness::Later(format!("integration is {}", status.as_str())),
        }
    }

    async fn act(&self, integration: &Integration, delivery: &Delivery) -> Result<serde_json::Value, Error> {
        Ok(serde_json::json!(self.on_delivery(integration, delivery).await?))
    }
}

impl Pruner {
    /// The environment changes a delivery of an active integration that mirrors branches
    /// causes. Calls Bitbucket only to show an environment's status (`environment_url`, or one
    /// that showed a status ending `stopped` when pruned).
    pub(crate) async fn on_delivery(
        &self,
        integration: &Integration,
        delivery: &Delivery,
    ) -> Result<DeliveryEffects, Error> {
        let mut effects = DeliveryEffects::default();
        let options = &integration.options;
        let (id, at) = (integration.id.as_str(), delivery.received_at);
        let cause = delivery.delivery_id.as_str();
        for event in &delivery.events {
            match event {
                RepoEvent::BranchCreated { branch, head } | RepoEvent::BranchUpdated { branch, head, .. } => {
                    let pushed = |current: Option<&Environment>| match current {
                        // A redelivered older push must not move the environment back.
                        Some(env) if env.last_activity > at => None,
                        Some(env) => Some(Environment {
                            head: head.clone().or_else(|| env.head.clone()),
                            last_activity: at,
                            ..env.clone()
                        }),
                        None => Some(Environment::new(branch, head.clone(), at)),
                    };
                    if let Some((_, after)) = self.update_environment(id, branch, cause, pushed).await? {
                        effects.upserted.push(branch.clone());
                        // An active environment's status follows its head.
                        self.post_template_status(integration, &after).await;
                    }
                }
                RepoEvent::BranchDeleted { branch, .. } if options.prune_branches => {
                    let pruned = self.prune_for_delivery(integration, branch, &delivery.delivery_id, at).await?;
                    effects.pruned.extend(pruned.then(|| branch.clone()));
                }
                RepoEvent::PullRequestOpened { pull_request: pr }
                | RepoEvent::PullRequestUpdated { pull_request: pr }
                    if options.build_pull_requests =>
                {
                    let opened = |current: Option<&Environment>| {
                        let base = current.cloned().unwrap_or_else(|| Environment::new(&pr.source_branch, None, at));
                        Some(Environment {
                            // Cloud abbreviates the pull request's head; a push's full hash wins.
                            head: base.head.clone().or_else(|| pr.head.clone()),
                            last_activity: base.last_activity.max(at),
                            status: EnvironmentStatus::Active,
                            pull_request: Some(pr.id),
                            ..base
                        })
                    };
                    if let Some((_, after)) = self.update_environment(id, &pr.source_branch, cause, opened).await? {
                        effects.activated.push(pr.source_branch.clone());
                        self.post_template_status(integration, &after).await;
                    }
                }
                RepoEvent::PullRequestMerged { pull_request: pr }
                | RepoEvent::PullRequestDeclined { pull_request: pr }
                | RepoEvent::PullRequestDeleted { pull_request: pr } => {
                    let closed = |current: Option<&Environment>| match current {
                        // Only the pull request that activated it deactivates it.
                        Some(env) if env.pull_request == Some(pr.id) => {
                            Some(Environment { status: EnvironmentStatus::Inactive, pull_request: None, ..env.clone() })
                        }
                        _ => None,
                    };
                    if self.update_environment(id, &pr.source_branch, cause, closed).await?.is_some() {
                        effects.deactivated.push(pr.source_branch.clone());
                    }
                }
                _ => {}
            }
        }
        Ok(effects)
    }

    /// Prunes the branch's environment, audited under the delivery's id first so that a
    /// repeat (or a crash between the two writes) leaves one audit record.
    async fn prune_for_delivery(
        &self,
        integration: &Integration,
        branch: &str,
        delivery_id: &str,
        at: DateTime<Utc>,
    ) -> Result<bool, Error> {
        let id = integration.id.as_str();
        let entry = AuditEntry {
            branch: branch.to_owned(),
            action: AuditAction::EnvironmentPruned,
            reason: "branch deleted".into(),
            delivery_id: Some(delivery_id.to_owned()),
            at: Utc::now(),
        };
        let mut audited = false;
        for _ in 0..WRITE_ATTEMPTS {
            let Some((env, version)) = self.environment(id, branch).await? else { return Ok(false) };
            if env.last_activity > at {
                // Pushed again after this deletion: the branch exists anew, nothing was pruned.
                if audited {
                    let parts = entry.parts();
                    AUDIT.delete(self.store(), id, &parts.each_ref().map(String::as_str), Condition::None).await?;
                }
                return Ok(false);
            }
            if !audited {
                self.audit(id, &entry).await?;
                audited = true;
            }
            match self.prune_environment(id, &env, version, &entry.reason, delivery_id).await {
                Ok(()) => {
                    self.post_stopped(integration, &env).await;
                    return Ok(true);
                }
                Err(StoreError::ConditionFailed { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(StoreError::Unavailable(format!("environment `{branch}` keeps changing concurrently; retry")).into())
    }
}
