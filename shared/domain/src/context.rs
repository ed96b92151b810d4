//! The integration context every service holds: the ports (state store, secret store,
//! Bitbucket connector) and what every service asks of an integration — look it up, check that
//! its state allows an action, a Bitbucket client acting with its credential, and a failure
//! noted on it for people to see.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;

use crate::Backends;
use crate::bitbucket::{Bitbucket, BitbucketError, Connect, Credential};
use crate::error::Error;
use crate::integration::{Integration, IntegrationStatus, LastError, valid_id};
use crate::outbox::{self, DomainEvent, EventType};
use crate::rate::Priority;
use crate::secrets::SecretStore;
use crate::store::{Condition, StateStore, StoreError, Write};
use crate::tables::{INTEGRATIONS, Versioned};

#[derive(Clone)]
pub struct IntegrationContext {
    pub store: Arc<dyn StateStore>,
    pub secrets: Arc<dyn SecretStore>,
    pub connector: Arc<dyn Connect>,
    /// Whose Bitbucket requests these are: people's (the default) or scheduled work's, which
    /// defers when the credential's rate budget runs low ([`crate::rate`]).
    pub priority: Priority,
}

impl IntegrationContext {
    pub fn new(backends: Backends, connector: Arc<dyn Connect>) -> Self {
        IntegrationContext {
            store: backends.store,
            secrets: backends.secrets,
            connector,
            priority: Priority::default(),
        }
    }

    /// The same context for scheduled work: its Bitbucket requests come after people's.
    pub fn scheduled(&self) -> Self {
        IntegrationContext { priority: Priority::Scheduled, ..self.clone() }
    }

    /// The integration and its version, if there is one (`None` for an id that cannot be one).
    pub async fn find(&self, id: &str) -> Result<Option<Versioned<Integration>>, Error> {
        if !valid_id(id) {
            return Ok(None);
        }
        Ok(INTEGRATIONS.get(self.store.as_ref(), "", &[id]).await?)
    }

    /// The integration and its version, or `NotFound`.
    pub async fn get(&self, id: &str) -> Result<Versioned<Integration>, Error> {
        self.find(id).await?.ok_or_else(|| Error::NotFound(format!("no integration `{id}`")))
    }

    /// Every integration, in id order.
    pub async fn list(&self) -> Result<Vec<Integration>, Error> {
        Ok(INTEGRATIONS.all(self.store.as_ref(), "", &[]).await?.into_iter().map(|v| v.record).collect())
    }

    /// The integration, if it is active — what every action that calls Bitbucket needs.
    pub async fn active(&self, id: &str, action: &'static str) -> Result<Integration, Error> {
        let integration = self.get(id).await?.record;
        if integration.status != IntegrationStatus::Active {
            return Err(Error::WrongState { id: id.to_owned(), status: integration.status, action });
        }
        Ok(integration)
    }

    /// The integration's credential, read from the secret store. It lives as long as the
    /// integration: without it, the integration was deleted while this work was under way.
    pub async fn credential(&self, integration: &Integration) -> Result<Credential, Error> {
        let name = &integration.credential_secret_name;
        let secret = self
            .secrets
            .get(name)
            .await?
            .ok_or_else(|| Error::NotFound(format!("no integration `{}`", integration.id)))?;
        Ok(Credential::from_secret(name, &secret)?)
    }

    /// A client acting with the integration's stored credential, giving up after `budget`.
    pub async fn client(&self, integration: &Integration, budget: Duration) -> Result<Arc<dyn Bitbucket>, Error> {
        let credential = self.credential(integration).await?;
        Ok(self.connector.connect_as(&integration.target, credential, budget, self.priority))
    }

    /// Keeps a Bitbucket failure met by background work (a backup, a poll) on the integration,
    /// so people see it (a refused credential moves an active integration to `error`), and
    /// passes the failure on.
    pub async fn noted(&self, id: &str, e: BitbucketError) -> Error {
        if let BitbucketError::Deferred(_) = e {
            // Not a failure: the work waits for its next cycle.
            tracing::info!(integration = id, error = %e, "Bitbucket call deferred");
            return e.into();
        }
        tracing::warn!(integration = id, reason = e.reason(), error = %e, "Bitbucket call failed");
        self.change(id, |integration| note_error(integration, &e)).await;
        e.into()
    }

    /// Keeps a problem of background work that is not a failed Bitbucket call (e.g. a listing
    /// cut short by its page bound) as the integration's last error; its status is left alone.
    pub async fn note_problem(&self, id: &str, reason: &str, message: &str) {
        tracing::warn!(integration = id, reason, error = message, "background work refused to act");
        let error = LastError { reason: reason.to_owned(), message: message.to_owned(), at: Utc::now() };
        self.change(id, move |integration| integration.last_error = Some(error)).await;
    }

    /// Best effort: a concurrent change wins.
    async fn change(&self, id: &str, change: impl FnOnce(&mut Integration)) {
        if let Ok(Some(Versioned { record: mut integration, version })) = self.find(id).await {
            let before = integration.status;
            change(&mut integration);
            let _ = self.save(&mut integration, version, before).await;
        }
    }

    /// Writes `integration` over the stored `version` (stamping `updated_at`), with its
    /// `integration.status_changed` event when its status moved from `before`, all-or-none.
    pub async fn save(
        &self,
        integration: &mut Integration,
        version: u64,
        before: IntegrationStatus,
    ) -> Result<u64, StoreError> {
        integration.updated_at = Utc::now();
        let condition = Condition::Version(version);
        let change = Write::Put(INTEGRATIONS.item("", &[&integration.id], integration)?, condition);
        let events: Vec<DomainEvent> = (integration.status != before)
            .then(|| {
                let data = serde_json::json!({
                    "from": before.as_str(),
                    "to": integration.status.as_str(),
                    "reason": integration.last_error.as_ref().map(|e| e.reason.clone()),
                });
                // The version this write makes: one event per status change, however often retried.
                let cause = format!("v{}", version + 1);
                DomainEvent::new(EventType::IntegrationStatusChanged, &integration.id, &cause, data)
            })
            .into_iter()
            .collect();
        self.write_with_events(change, &events).await
    }

    /// Records an event that stands alone, once (see [`crate::outbox`]).
    pub async fn emit(&self, event: DomainEvent) -> Result<(), Error> {
        outbox::record(self.store.as_ref(), &event).await?;
        Ok(())
    }

    /// A state change and the events it causes, all-or-none ([`outbox::write_with_events`]).
    pub async fn write_with_events(&self, change: Write, events: &[DomainEvent]) -> Result<u64, StoreError> {
        outbox::write_with_events(self.store.as_ref(), change, events).await
    }
}

/// A Bitbucket failure as the integration's last error; a refused credential moves an active
/// integration to `error`.
pub fn note_error(integration: &mut Integration, e: &BitbucketError) {
    integration.last_error = Some(LastError { reason: e.reason().into(), message: e.to_string(), at: Utc::now() });
    if e.is_credential_problem() && integration.status == IntegrationStatus::Active {
        integration.status = IntegrationStatus::Error;
    }
}
