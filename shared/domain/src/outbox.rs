//! Domain events and their outbox: every state change the system makes (an environment created,
//! activated, deactivated or pruned, a build started, finished or skipped, a backup committed, a
//! branch deleted, an integration's status changed, an admin's change) is one [`DomainEvent`], recorded once in the
//! state table ([`crate::tables::OUTBOX`], written `Absent` under an id derived from what caused
//! it, so processing the same cause again records nothing new) and listed as the integration's
//! activity feed. A relay publishes each new record through a [`Publisher`] — EventBridge on AWS
//! (the table's stream), a signed webhook locally — at least once: consumers deduplicate by `id`.

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::Error;
use crate::store::{Condition, Item, StateStore, StoreError, Write};
use crate::tables::{OUTBOX, Record};

/// The `source` of every published event.
pub const SOURCE: &str = "bitbucket-automation";
/// How long an event stays in the activity feed.
pub const RETENTION: chrono::Duration = chrono::Duration::days(30);

/// The kinds of events (EventBridge's `detail-type`); each has a JSON Schema in `docs/events/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventType {
    #[serde(rename = "environment.created")]
    EnvironmentCreated,
    #[serde(rename = "environment.activated")]
    EnvironmentActivated,
    #[serde(rename = "environment.deactivated")]
    EnvironmentDeactivated,
    #[serde(rename = "environment.pruned")]
    EnvironmentPruned,
    #[serde(rename = "build.started")]
    BuildStarted,
    #[serde(rename = "build.finished")]
    BuildFinished,
    /// A pull request that was not built (a draft, a fork), with the reason.
    #[serde(rename = "build.skipped")]
    BuildSkipped,
    #[serde(rename = "backup.committed")]
    BackupCommitted,
    #[serde(rename = "branch.deleted")]
    BranchDeleted,
    #[serde(rename = "integration.status_changed")]
    IntegrationStatusChanged,
    /// An admin request changed something of the integration: who, what, with which answer.
    #[serde(rename = "admin.change")]
    AdminChange,
}

impl EventType {
    pub const ALL: [EventType; 11] = [
        EventType::EnvironmentCreated,
        EventType::EnvironmentActivated,
        EventType::EnvironmentDeactivated,
        EventType::EnvironmentPruned,
        EventType::BuildStarted,
        EventType::BuildFinished,
        EventType::BuildSkipped,
        EventType::BackupCommitted,
        EventType::BranchDeleted,
        EventType::IntegrationStatusChanged,
        EventType::AdminChange,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::EnvironmentCreated => "environment.created",
            EventType::EnvironmentActivated => "environment.activated",
            EventType::EnvironmentDeactivated => "environment.deactivated",
            EventType::EnvironmentPruned => "environment.pruned",
            EventType::BuildStarted => "build.started",
            EventType::BuildFinished => "build.finished",
            EventType::BuildSkipped => "build.skipped",
            EventType::BackupCommitted => "backup.committed",
            EventType::BranchDeleted => "branch.deleted",
            EventType::IntegrationStatusChanged => "integration.status_changed",
            EventType::AdminChange => "admin.change",
        }
    }
}

/// One event, as stored, listed and published (the EventBridge `detail`, the webhook body).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DomainEvent {
    /// `evt_` and 32 hex digits, derived from the event's type, integration and cause.
    pub id: String,
    #[serde(rename = "type")]
    pub kind: EventType,
    pub integration_id: String,
    pub occurred_at: DateTime<Utc>,
    pub data: Value,
}

impl DomainEvent {
    /// An event whose id is derived from `cause`: the same cause makes the same id, so recording
    /// it again is a no-op.
    pub fn new(kind: EventType, integration_id: &str, cause: &str, data: Value) -> Self {
        let mut hasher = Sha256::new();
        for part in [kind.as_str(), integration_id, cause] {
            hasher.update(part.as_bytes());
            hasher.update([0]);
        }
        let digest = hex::encode(hasher.finalize());
        DomainEvent {
            id: format!("evt_{}", &digest[..32]),
            kind,
            integration_id: integration_id.to_owned(),
            occurred_at: Utc::now(),
            data,
        }
    }
}

/// An event in the outbox: when it was published, once it was.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxEntry {
    #[serde(flatten)]
    pub event: DomainEvent,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published_at: Option<DateTime<Utc>>,
}

impl Record for OutboxEntry {
    const KIND: &'static str = "outbox_event";

    /// Newest first on the index: the moment, then the id.
    fn sort_parts(&self) -> Vec<String> {
        vec![self.event.occurred_at.to_rfc3339_opts(SecondsFormat::Micros, true), self.event.id.clone()]
    }
}

/// The outbox record of `entry`, kept for [`RETENTION`].
fn outbox_item(entry: &OutboxEntry) -> Result<Item, StoreError> {
    let event = &entry.event;
    let expires = (event.occurred_at + RETENTION).timestamp();
    Ok(OUTBOX.item(&event.integration_id, &[&event.id], entry)?.with_expiry(expires))
}

fn unpublished_item(event: &DomainEvent) -> Result<Item, StoreError> {
    outbox_item(&OutboxEntry { event: event.clone(), published_at: None })
}

/// Records an event that stands alone (no state change goes with it) once: `true` when it is
/// new, `false` when an event with its id is there.
pub async fn record(store: &dyn StateStore, event: &DomainEvent) -> Result<bool, StoreError> {
    match store.put(unpublished_item(event)?, Condition::Absent).await {
        Ok(_) => Ok(true),
        Err(StoreError::ConditionFailed { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Makes a state change and records the events it causes in one all-or-none write, so no crash
/// can leave the change without its events (or events of a change never made). An event
/// already recorded (its cause processed before) is left as it is. The change's new version;
/// `ConditionFailed` when the change's own condition does not hold (nothing is written then).
pub async fn write_with_events(
    store: &dyn StateStore,
    change: Write,
    events: &[DomainEvent],
) -> Result<u64, StoreError> {
    if events.is_empty() {
        // A single write is atomic by itself, and DynamoDB bills a transaction's items twice.
        return match change {
            Write::Put(item, condition) => store.put(item, condition).await,
            Write::Delete(key, condition) => store.delete(&key, condition).await.map(|()| 0),
        };
    }
    let mut pending = events.iter().map(unpublished_item).collect::<Result<Vec<_>, _>>()?;
    loop {
        let mut writes = Vec::with_capacity(pending.len() + 1);
        writes.push(change.clone());
        writes.extend(pending.iter().map(|item| Write::Put(item.clone(), Condition::Absent)));
        match store.write_all(writes).await {
            Ok(versions) => return Ok(versions[0]),
            Err(StoreError::ConditionFailed { current }) => {
                // Whose condition failed: events found recorded are dropped and the rest tried
                // again (each round drops one at least, so this ends); else it was the change's.
                let before = pending.len();
                let mut kept = Vec::with_capacity(before);
                for item in pending {
                    if store.get(&item.key).await?.is_none() {
                        kept.push(item);
                    }
                }
                if kept.len() == before {
                    return Err(StoreError::ConditionFailed { current });
                }
                pending = kept;
            }
            Err(e) => return Err(e),
        }
    }
}

/// The activity feed: an integration's events, newest first.
pub async fn list(
    store: &dyn StateStore,
    integration_id: &str,
    limit: usize,
    cursor: Option<String>,
) -> Result<(Vec<OutboxEntry>, Option<String>), StoreError> {
    OUTBOX.page_sorted(store, integration_id, &[], true, limit, cursor).await
}

#[derive(Debug, thiserror::Error)]
#[error("publishing failed: {0}")]
pub struct PublishError(pub String);

/// Where events go: EventBridge on AWS, a signed webhook locally. At least once.
#[async_trait]
pub trait Publisher: Send + Sync {
    async fn publish(&self, event: &DomainEvent) -> Result<(), PublishError>;
}

/// Publishes an outbox record the table's stream (or the local feed) handed over, then marks
/// it published. Other records are ignored; one already published is not published again.
pub async fn relay(store: &dyn StateStore, publisher: &dyn Publisher, item: &Item) -> Result<bool, Error> {
    if item.kind != OutboxEntry::KIND {
        return Ok(false);
    }
    let entry: OutboxEntry = item.record()?;
    if entry.published_at.is_some() {
        return Ok(false);
    }
    publisher.publish(&entry.event).await.map_err(|e| Error::Retry(e.to_string()))?;
    let marked = outbox_item(&OutboxEntry { published_at: Some(Utc::now()), ..entry })?;
    // The mark only saves a second publication after a restart; a lost race changes nothing.
    match store.put(marked, Condition::Version(item.version.max(1))).await {
        Ok(_) | Err(StoreError::ConditionFailed { .. }) => Ok(true),
        Err(e) => Err(e.into()),
    }
}

/// The relay: the state store (to mark records published) and where events go.
#[derive(Clone)]
pub struct Relay {
    pub store: std::sync::Arc<dyn StateStore>,
    pub publisher: std::sync::Arc<dyn Publisher>,
}

impl Relay {
    /// [`relay`] of one new table image; `true` when it was published now.
    pub async fn relay(&self, item: &Item) -> Result<bool, Error> {
        relay(self.store.as_ref(), self.publisher.as_ref(), item).await
    }
}

/// Events recorded but not yet published (a relay that was down), oldest first.
pub async fn unpublished(store: &dyn StateStore, integration_id: &str) -> Result<Vec<Item>, StoreError> {
    let items = OUTBOX.items(store, integration_id, &[]).await?;
    let mut waiting: Vec<(DateTime<Utc>, Item)> = items
        .into_iter()
        .filter_map(|item| {
            let entry: OutboxEntry = item.record().ok()?;
            entry.published_at.is_none().then_some((entry.event.occurred_at, item))
        })
        .collect();
    waiting.sort_by_key(|(at, _)| *at);
    Ok(waiting.into_iter().map(|(_, item)| item).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    #[test]
    fn ids_follow_the_cause() {
        let a = DomainEvent::new(EventType::BuildStarted, "int", "{run}", Value::Null);
        let b = DomainEvent::new(EventType::BuildStarted, "int", "{run}", serde_json::json!({"x": 1}));
        let c = DomainEvent::new(EventType::BuildFinished, "int", "{run}", Value::Null);
        assert_eq!(a.id, b.id);
        assert_ne!(a.id, c.id);
        assert!(a.id.starts_with("evt_") && a.id.len() == 36);
        assert_eq!(serde_json::to_value(&a).unwrap()["type"], "build.started");
        for kind in EventType::ALL {
            assert_eq!(serde_json::to_value(kind).unwrap(), kind.as_str());
        }
    }

    #[tokio::test]
    async fn a_change_is_written_with_its_new_events_or_not_at_all() {
        let store = MemoryStore::default();
        let key = crate::store::Key::new("S", "state");
        let state = |n: u64| Item::from_record(key.clone(), "test", &serde_json::json!({"n": n})).unwrap();
        let recorded = DomainEvent::new(EventType::BuildStarted, "int", "recorded", Value::Null);
        let mut published = OutboxEntry { event: recorded.clone(), published_at: Some(Utc::now()) };
        store.put(outbox_item(&published).unwrap(), Condition::Absent).await.unwrap();
        let fresh = DomainEvent::new(EventType::BuildFinished, "int", "fresh", Value::Null);

        // An event recorded before (and published since) is kept as it is; the new one joins.
        let events = [recorded.clone(), fresh];
        assert_eq!(write_with_events(&store, Write::Put(state(1), Condition::Absent), &events).await.unwrap(), 1);
        let (page, _) = list(&store, "int", 10, None).await.unwrap();
        assert_eq!(page.len(), 2);
        published.event.occurred_at = page.iter().find(|e| e.event.id == recorded.id).unwrap().event.occurred_at;
        assert!(page.contains(&published), "the published record untouched");

        // The change's own condition fails: its event is not recorded either.
        let late = DomainEvent::new(EventType::BuildFinished, "int", "late", Value::Null);
        let failed = write_with_events(&store, Write::Put(state(2), Condition::Absent), &[late]).await;
        assert!(matches!(failed, Err(StoreError::ConditionFailed { .. })), "{failed:?}");
        assert_eq!(list(&store, "int", 10, None).await.unwrap().0.len(), 2);
        assert_eq!(store.get(&key).await.unwrap().unwrap().attrs["n"], 1);
    }

    #[tokio::test]
    async fn recorded_once_listed_newest_first() {
        let store = MemoryStore::default();
        let first = DomainEvent::new(EventType::EnvironmentCreated, "int", "a", Value::Null);
        let mut second = DomainEvent::new(EventType::EnvironmentActivated, "int", "a", Value::Null);
        second.occurred_at = first.occurred_at + chrono::Duration::seconds(1);
        assert!(record(&store, &first).await.unwrap());
        assert!(!record(&store, &first).await.unwrap(), "the same cause again records nothing");
        assert!(record(&store, &second).await.unwrap());
        let (page, _) = list(&store, "int", 10, None).await.unwrap();
        let ids: Vec<_> = page.iter().map(|e| e.event.id.clone()).collect();
        assert_eq!(ids, [second.id.clone(), first.id.clone()]);
        assert_eq!(unpublished(&store, "int").await.unwrap().len(), 2);
    }
}
