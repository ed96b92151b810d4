//! Deliveries: each webhook request Bitbucket makes, recorded exactly once per
//! (integration, delivery id) with one conditional write, and listed newest first.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::Backends;
use crate::error::Error;
use crate::integration::{Integration, valid_id};
use crate::secrets::SecretStore;
use crate::signature::{self, SignatureError};
use crate::store::{Condition, StateStore, StoreError};
use crate::tables::{DELIVERIES, INTEGRATIONS, Record};
use crate::webhook::{self, DeliveryHeaders, Flavor, PING_EVENT_KEY, RepoEvent};
use crate::webhook_secret::WebhookSecrets;

/// A recorded delivery: what the headers said and what the payload normalized to. The raw body
/// is not kept: everything that fans out from a delivery works from `events`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    pub event_id: String,
    pub integration_id: String,
    pub delivery_id: String,
    pub event_key: String,
    pub flavor: Flavor,
    pub received_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hook_uuid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    pub events: Vec<RepoEvent>,
    pub summary: String,
    /// A fingerprint of the raw body (XXH3-128), so a retry (the same bytes) is told from a
    /// different body sent under a used delivery id. Not a cryptographic hash: the body is
    /// already authenticated by its HMAC, and this only has to tell honest bodies apart — at
    /// 20 GB/s rather than sha256's 0.5, on the receiver's hot path. Absent on older records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_xxh3: Option<String>,
}

impl Record for Delivery {
    const KIND: &'static str = "delivery";

    /// Newest-first order within the partition: fixed-width UTC time, then the event id.
    fn sort_parts(&self) -> Vec<String> {
        vec![self.received_at.to_rfc3339_opts(SecondsFormat::Micros, true), self.event_id.clone()]
    }
}

/// Local stack only: a delivery both consumers handled, so a restart re-feeds only the others
/// ([`crate::tables::FEED_MARKS`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FeedMark {
    pub delivery_id: String,
    pub processed_at: DateTime<Utc>,
}

impl Record for FeedMark {
    const KIND: &'static str = "local_delivery_processed";
}

/// What became of a delivery.
#[derive(Debug, Clone, PartialEq)]
pub enum Ingested {
    /// First time seen: recorded.
    Recorded(Delivery),
    /// Seen before (a Bitbucket retry): the earlier record, nothing written.
    Duplicate(Delivery),
    /// An unsigned Data Center "test connection" ping: answered, not recorded.
    Ping,
}

/// Delivery ids become part of a key: bounded, printable, no spaces.
fn check_delivery_id(id: &str) -> Result<(), Error> {
    let bad = |why: &str| Error::Malformed(format!("the delivery id header is not valid: {why}"));
    if id.len() > 128 {
        return Err(bad("longer than 128 characters"));
    }
    if !id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad("only printable ASCII without spaces is allowed"));
    }
    Ok(())
}

/// What the receiver records deliveries with: the ports, how long records are kept, and a
/// short-lived cache of the integration records it read.
pub struct Intake {
    pub store: Arc<dyn StateStore>,
    pub secrets: Arc<dyn SecretStore>,
    pub retention: chrono::Duration,
    integrations: IntegrationCache,
}

impl Intake {
    /// `integration_cache`: how long an integration record read stays trusted (zero: never).
    pub fn new(backends: Backends, retention: chrono::Duration, integration_cache: Duration) -> Self {
        Intake {
            store: backends.store,
            secrets: backends.secrets,
            retention,
            integrations: IntegrationCache::new(integration_cache),
        }
    }

    /// Verifies, parses and records one delivery. Bitbucket is never called here: this is the
    /// hot path. What the request alone shows wrong is answered before anything is read, so a
    /// flood of malformed or unsigned requests costs no table or secret read; then one
    /// integration read (cached), one secret read (cached) and one conditional write.
    pub async fn ingest(
        &self,
        integration_id: &str,
        headers: &DeliveryHeaders,
        body: &[u8],
    ) -> Result<Ingested, Error> {
        let unknown = || Error::NotFound(format!("no integration `{integration_id}`"));
        if !valid_id(integration_id) {
            return Err(unknown());
        }
        let event_key =
            headers.event_key.as_deref().ok_or_else(|| Error::Malformed("the X-Event-Key header is missing".into()))?;
        // Data Center sends its test ping unsigned; everything else must be signed, well-formed.
        let unsigned_ping = event_key == PING_EVENT_KEY && headers.signature.is_none();
        if !unsigned_ping {
            signature::parse_header(headers.signature.as_deref().ok_or(SignatureError::Missing)?)?;
        }
        if let Some(id) = &headers.delivery_id {
            check_delivery_id(id)?;
        }
        let integration = self.integrations.get(self.store.as_ref(), integration_id).await?.ok_or_else(unknown)?;
        if !integration.status.accepts_deliveries() {
            return Err(Error::NotAccepting { id: integration.id, status: integration.status });
        }
        if unsigned_ping {
            // It proves reachability and writes nothing.
            return Ok(Ingested::Ping);
        }
        let now = Utc::now();
        verify(self.secrets.as_ref(), &integration, headers, body, now).await?;
        let flavor = headers.flavor_hint.unwrap_or(integration.flavor());
        let parsed = webhook::parse(flavor, event_key, body)
            .map_err(|e| Error::Malformed(format!("the body is not a valid {event_key} payload: {e}")))?;
        if parsed.events == [RepoEvent::Ping] {
            return Ok(Ingested::Ping);
        }
        // Retries resend the body byte for byte: its fingerprint tells one from a different body
        // under the same delivery id; without a delivery id header, its sha256 identifies retries.
        let body_xxh3 = format!("{:032x}", xxhash_rust::xxh3::xxh3_128(body));
        let delivery_id =
            headers.delivery_id.clone().unwrap_or_else(|| format!("sha256-{}", hex::encode(Sha256::digest(body))));
        let delivery = Delivery {
            event_id: uuid::Uuid::new_v4().to_string(),
            integration_id: integration.id.clone(),
            delivery_id,
            event_key: event_key.to_owned(),
            flavor,
            received_at: now,
            hook_uuid: headers.hook_uuid.clone(),
            attempt: headers.attempt,
            repository: parsed.repository,
            summary: webhook::summarize(&parsed.events),
            events: parsed.events,
            body_xxh3: Some(body_xxh3),
        };
        record(self.store.as_ref(), delivery, self.retention).await
    }
}

/// Integration records as the receiver last read them, for `ttl` (an unknown id for at most
/// [`ABSENT_FOR`]): a warm instance answers a flood for one integration — or for one unknown id —
/// without a read each. A disconnect or deletion is seen at most `ttl` late; the deliveries taken
/// meanwhile are recorded, and their consumers park or skip them.
struct IntegrationCache {
    ttl: Duration,
    entries: Mutex<HashMap<String, (Instant, Option<Integration>)>>,
}

/// How long "no such integration" is believed: one created just now must get its first delivery.
const ABSENT_FOR: Duration = Duration::from_secs(2);
/// Entries kept at most; past that the cache starts over (a flood of distinct ids cannot grow it).
const CACHE_ENTRIES: usize = 4096;

impl IntegrationCache {
    fn new(ttl: Duration) -> Self {
        IntegrationCache { ttl, entries: Mutex::new(HashMap::new()) }
    }

    async fn get(&self, store: &dyn StateStore, id: &str) -> Result<Option<Integration>, StoreError> {
        if self.ttl.is_zero() {
            return Ok(INTEGRATIONS.get(store, "", &[id]).await?.map(|v| v.record));
        }
        let entries = || self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((at, known)) = entries().get(id) {
            let trusted_for = if known.is_some() { self.ttl } else { self.ttl.min(ABSENT_FOR) };
            if at.elapsed() < trusted_for {
                return Ok(known.clone());
            }
        }
        let read = INTEGRATIONS.get(store, "", &[id]).await?.map(|v| v.record);
        let mut entries = entries();
        if entries.len() >= CACHE_ENTRIES {
            entries.clear();
        }
        entries.insert(id.to_owned(), (Instant::now(), read.clone()));
        Ok(read)
    }
}

async fn verify(
    secrets: &dyn SecretStore,
    integration: &Integration,
    headers: &DeliveryHeaders,
    body: &[u8],
    now: DateTime<Utc>,
) -> Result<(), Error> {
    let name = &integration.webhook_secret_name;
    // Our configuration is missing, not the sender's fault: retryable (Bitbucket retries a 5xx).
    let missing = || Error::Retry(format!("the webhook secret of integration `{}` is not available", integration.id));
    let secret = secrets.get(name).await?.ok_or_else(missing)?;
    let verified = signature::verify(
        headers.signature.as_deref(),
        body,
        WebhookSecrets::from_secret(name, &secret)?.accepted(now),
    );
    match verified {
        // A cached secret may predate a rotation another instance made: read it again (the
        // store bounds how often) before refusing a delivery Bitbucket will never retry.
        Err(SignatureError::Mismatch) => {
            let fresh = secrets.get_fresh(name).await?.ok_or_else(missing)?;
            if fresh == secret {
                return Err(SignatureError::Mismatch.into());
            }
            let accepted = WebhookSecrets::from_secret(name, &fresh)?;
            Ok(signature::verify(headers.signature.as_deref(), body, accepted.accepted(now))?)
        }
        other => Ok(other?),
    }
}

/// The one conditional write: new → recorded; already there (and not expired) → duplicate.
pub async fn record(
    store: &dyn StateStore,
    delivery: Delivery,
    retention: chrono::Duration,
) -> Result<Ingested, Error> {
    let item = DELIVERIES
        .item(&delivery.integration_id, &[&delivery.delivery_id], &delivery)?
        .with_expiry((delivery.received_at + retention).timestamp());
    match store.put(item, Condition::Absent).await {
        Ok(_) => Ok(Ingested::Recorded(delivery)),
        Err(StoreError::ConditionFailed { current: Some(existing) }) => {
            let existing: Delivery = existing.record()?;
            match (&existing.body_xxh3, &delivery.body_xxh3) {
                (Some(recorded), Some(received)) if recorded != received => {
                    tracing::warn!(
                        delivery_id = %delivery.delivery_id,
                        recorded_xxh3 = %recorded,
                        received_xxh3 = %received,
                        "a different body under a recorded delivery id refused"
                    );
                    Err(Error::Conflict(format!(
                        "delivery `{}` was already recorded with a different body; a retry resends the same bytes",
                        delivery.delivery_id
                    )))
                }
                _ => Ok(Ingested::Duplicate(existing)),
            }
        }
        // The condition failed but the item vanished since (expired between write and read):
        // report the race as retryable rather than guess.
        Err(StoreError::ConditionFailed { current: None }) => {
            Err(StoreError::Unavailable("delivery record changed concurrently, retry".into()).into())
        }
        Err(e) => Err(e.into()),
    }
}

/// Recorded deliveries of one integration, newest first.
pub async fn list_deliveries(
    store: &dyn StateStore,
    integration_id: &str,
    limit: usize,
    cursor: Option<String>,
) -> Result<(Vec<Delivery>, Option<String>), StoreError> {
    DELIVERIES.page_sorted(store, integration_id, &[], true, limit, cursor).await
}
