//! Environments following the recorded webhook events: a branch created or pushed has one, a
//! deleted branch's is pruned (with an audit record naming the delivery), a pull request opened
//! from it makes it active until the pull request is merged, declined or deleted. Tags are not
//! environments. Safe to process the same delivery more than once: each write compares with
//! what is stored, and a prune's audit key is the delivery's.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{AuditAction, AuditEntry, Environment, EnvironmentStatus, Pruner, PrunerError, WRITE_ATTEMPTS};
use crate::domain::integration::{self, IntegrationStatus};
use crate::domain::{Delivery, parked};
use crate::store::{Condition, StoreError};
use crate::webhook::RepoEvent;

/// What one delivery changed (for logs and tests).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DeliveryEffects {
    pub upserted: Vec<String>,
    pub activated: Vec<String>,
    pub deactivated: Vec<String>,
    pub pruned: Vec<String>,
    /// Why the delivery was parked instead (see [`crate::domain::parked`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parked: Option<String>,
}

/// The consumer name environments park deliveries under.
pub const CONSUMER: &str = "environments";

impl Pruner {
    /// Acts on a recorded delivery for an active integration that mirrors branches. Makes no
    /// Bitbucket call.
    pub async fn on_delivery(&self, delivery: &Delivery) -> Result<DeliveryEffects, PrunerError> {
        let mut effects = DeliveryEffects::default();
        let Some((integration, _)) = integration::get(self.store.as_ref(), &delivery.integration_id).await? else {
            return Ok(effects);
        };
        let options = &integration.options;
        if !options.fetch_branches {
            return Ok(effects);
        }
        if integration.status != IntegrationStatus::Active {
            // Recorded while it could act; its environments follow once it can again.
            let reason = format!("integration is {}", integration.status.as_str());
            parked::park(self.store.as_ref(), CONSUMER, delivery, &reason).await?;
            effects.parked = Some(reason);
            return Ok(effects);
        }
        let (id, at) = (integration.id.as_str(), delivery.received_at);
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
                    if self.update_environment(id, branch, pushed).await? {
                        effects.upserted.push(branch.clone());
                    }
                }
                RepoEvent::BranchDeleted { branch, .. } if options.prune_branches => {
                    let pruned = self.prune_for_delivery(id, branch, &delivery.delivery_id, at).await?;
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
                    if self.update_environment(id, &pr.source_branch, opened).await? {
                        effects.activated.push(pr.source_branch.clone());
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
                    if self.update_environment(id, &pr.source_branch, closed).await? {
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
        id: &str,
        branch: &str,
        delivery_id: &str,
        at: DateTime<Utc>,
    ) -> Result<bool, PrunerError> {
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
                    self.store.delete(&entry.item(id)?.key, Condition::None).await?;
                }
                return Ok(false);
            }
            if !audited {
                self.audit(id, &entry).await?;
                audited = true;
            }
            match self.store.delete(&super::environment_key(id, branch), Condition::Version(version)).await {
                Ok(()) => return Ok(true),
                Err(StoreError::ConditionFailed { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(StoreError::Unavailable(format!("environment `{branch}` keeps changing concurrently; retry")).into())
    }
}
