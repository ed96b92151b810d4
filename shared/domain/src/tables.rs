//! The record tables: every record type the system stores, with the key prefix, the sort key
//! and the `kind` it is stored under, and its reads and versioned writes. No key string is built
//! anywhere else.
//!
//! Keys: integrations share one partition (`INTEGRATIONS`, so listing them is one query); every
//! other record lives in its integration's partition (`INT#{id}`). A sort key is the table's
//! prefix and the record's key parts joined by `#`. A key of one part is the prefix and that
//! part as it is (injective: the prefix ends at the first `#`); a key of several parts escapes
//! each one ([`compose`]), so no two lists of parts share a key. Each table keeps one arity.

use std::marker::PhantomData;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::store::{Condition, Index, Item, Key, Query, StateStore, StoreError, compose, query_all};

/// A type stored as records of one table.
pub trait Record: Serialize + DeserializeOwned {
    /// The `kind` attribute (stream filters select on it).
    const KIND: &'static str;

    /// The parts of the secondary sort key (after the table's sort prefix), for tables listed
    /// in another order than their keys'.
    fn sort_parts(&self) -> Vec<String> {
        Vec::new()
    }
}

/// A record and the version the store gave it (for the next conditional write).
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned<R> {
    pub record: R,
    pub version: u64,
}

#[derive(Debug, Clone, Copy)]
enum Partition {
    /// One partition for every record of the table.
    Shared(&'static str),
    /// The partition of the integration the record belongs to.
    Integration,
}

/// One record type's place in the state table.
#[derive(Debug)]
pub struct Table<R> {
    partition: Partition,
    prefix: &'static str,
    sort_prefix: Option<&'static str>,
    record: PhantomData<fn() -> R>,
}

impl<R> Clone for Table<R> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<R> Copy for Table<R> {}

/// The partition holding an integration's own records.
pub fn partition(integration_id: &str) -> String {
    format!("INT#{integration_id}")
}

/// Every record of an integration's partition, whatever its table (tests and tools).
pub async fn integration_items(store: &dyn StateStore, integration_id: &str) -> Result<Vec<Item>, StoreError> {
    query_all(store, &partition(integration_id), "").await
}

impl<R: Record> Table<R> {
    /// A table in each integration's partition.
    const fn scoped(prefix: &'static str) -> Self {
        Table { partition: Partition::Integration, prefix, sort_prefix: None, record: PhantomData }
    }

    /// A table whose records all share `partition`.
    const fn shared(partition: &'static str, prefix: &'static str) -> Self {
        Table { partition: Partition::Shared(partition), prefix, sort_prefix: None, record: PhantomData }
    }

    /// Also sorted on the secondary index, by `sort_prefix` and [`Record::sort_parts`].
    const fn sorted(self, sort_prefix: &'static str) -> Self {
        Table { sort_prefix: Some(sort_prefix), ..self }
    }

    fn pk(&self, integration_id: &str) -> String {
        match self.partition {
            Partition::Shared(pk) => pk.to_owned(),
            Partition::Integration => partition(integration_id),
        }
    }

    fn sk(&self, parts: &[&str]) -> String {
        match parts {
            [] => self.prefix.to_owned(),
            [one] => format!("{}#{one}", self.prefix),
            many => compose(&[&[self.prefix], many].concat()),
        }
    }

    /// The key of the record with these parts.
    pub fn key(&self, integration_id: &str, parts: &[&str]) -> Key {
        Key::new(self.pk(integration_id), self.sk(parts))
    }

    /// The item for `record` under `parts` (its kind and sort key set), to write as it is or
    /// with an expiry.
    pub fn item(&self, integration_id: &str, parts: &[&str], record: &R) -> Result<Item, StoreError> {
        let item = Item::from_record(self.key(integration_id, parts), R::KIND, record)?;
        Ok(match self.sort_prefix {
            Some(prefix) => {
                let sort_parts = record.sort_parts();
                let mut all = vec![prefix];
                all.extend(sort_parts.iter().map(String::as_str));
                item.with_sort(compose(&all))
            }
            None => item,
        })
    }

    pub async fn get(
        &self,
        store: &dyn StateStore,
        integration_id: &str,
        parts: &[&str],
    ) -> Result<Option<Versioned<R>>, StoreError> {
        match store.get(&self.key(integration_id, parts)).await? {
            Some(item) => Ok(Some(Versioned { record: item.record()?, version: item.version })),
            None => Ok(None),
        }
    }

    /// Writes `record` if `condition` holds; the new version.
    pub async fn put(
        &self,
        store: &dyn StateStore,
        integration_id: &str,
        parts: &[&str],
        record: &R,
        condition: Condition,
    ) -> Result<u64, StoreError> {
        store.put(self.item(integration_id, parts, record)?, condition).await
    }

    pub async fn delete(
        &self,
        store: &dyn StateStore,
        integration_id: &str,
        parts: &[&str],
        condition: Condition,
    ) -> Result<(), StoreError> {
        store.delete(&self.key(integration_id, parts), condition).await
    }

    /// The prefix of every key that extends `parts` (all of the table's keys for none).
    fn key_prefix(&self, parts: &[&str]) -> String {
        format!("{}#", self.sk(parts))
    }

    /// Every record whose key extends `parts`, in key order, all pages read.
    pub async fn all(
        &self,
        store: &dyn StateStore,
        integration_id: &str,
        parts: &[&str],
    ) -> Result<Vec<Versioned<R>>, StoreError> {
        let items = query_all(store, &self.pk(integration_id), &self.key_prefix(parts)).await?;
        items.iter().map(|i| Ok(Versioned { record: i.record()?, version: i.version })).collect()
    }

    /// The stored items (store attributes included) whose key extends `parts`, in key order:
    /// for tests and tools that compare what is stored, byte for byte.
    pub async fn items(
        &self,
        store: &dyn StateStore,
        integration_id: &str,
        parts: &[&str],
    ) -> Result<Vec<Item>, StoreError> {
        query_all(store, &self.pk(integration_id), &self.key_prefix(parts)).await
    }

    /// One page of the records whose key extends `parts`, in key order (or reversed).
    pub async fn page(
        &self,
        store: &dyn StateStore,
        integration_id: &str,
        parts: &[&str],
        descending: bool,
        limit: usize,
        cursor: Option<String>,
    ) -> Result<(Vec<R>, Option<String>), StoreError> {
        let index = Index::Primary { sk_prefix: self.key_prefix(parts) };
        self.query(store, integration_id, index, descending, limit, cursor).await
    }

    /// One page in the secondary order: the records whose sort key starts with the table's
    /// sort prefix and `sort_parts` (all of them for none).
    pub async fn page_sorted(
        &self,
        store: &dyn StateStore,
        integration_id: &str,
        sort_parts: &[&str],
        descending: bool,
        limit: usize,
        cursor: Option<String>,
    ) -> Result<(Vec<R>, Option<String>), StoreError> {
        let prefix = self.sort_prefix.expect("a table listed in sort order has a sort prefix");
        let mut all = vec![prefix];
        all.extend_from_slice(sort_parts);
        let prefix = if sort_parts.is_empty() { format!("{prefix}#") } else { compose(&all) };
        self.query(store, integration_id, Index::Sorted { prefix }, descending, limit, cursor).await
    }

    async fn query(
        &self,
        store: &dyn StateStore,
        integration_id: &str,
        index: Index,
        descending: bool,
        limit: usize,
        cursor: Option<String>,
    ) -> Result<(Vec<R>, Option<String>), StoreError> {
        let query = Query { pk: self.pk(integration_id), index, descending, limit, cursor };
        let page = store.query(&query).await?;
        Ok((page.items.iter().map(Item::record).collect::<Result<_, _>>()?, page.cursor))
    }
}

use crate::backup::{BackupTarget, Head, StoredEntry};
use crate::connection::LifecycleLock;
use crate::delivery::{Delivery, FeedMark};
use crate::integration::Integration;
use crate::outbox::OutboxEntry;
use crate::parked::Parked;
use crate::pipelines::{ActionClaim, OpenRun, PrHead, Run};
use crate::pruning::{AuditEntry, Environment};

/// Integrations, all in one partition: listing them (people, schedules) is one query.
pub const INTEGRATIONS: Table<Integration> = Table::shared("INTEGRATIONS", "INT");
/// The lifecycle lock of an integration (`LCK`, no parts).
pub const LOCKS: Table<LifecycleLock> = Table::scoped("LCK");
/// Deliveries by id (written once, `Absent`), listed newest first by `EVT#{received}#{event id}`.
pub const DELIVERIES: Table<Delivery> = Table::scoped("DLV").sorted("EVT");
/// Local stack only: a delivery both consumers handled (`FED#{delivery id}`).
pub const FEED_MARKS: Table<FeedMark> = Table::scoped("FED");
/// Deliveries parked per consumer, oldest first in the key, newest first on the index.
pub const PARKED: Table<Parked> = Table::scoped("PRK").sorted("PRK");
pub const BACKUP_TARGETS: Table<BackupTarget> = Table::scoped("BKT");
pub const BACKUP_HEADS: Table<Head> = Table::scoped("BKH");
/// One entry per commit, `BKC#{target}#{committed µs}`.
pub const BACKUP_HISTORY: Table<StoredEntry> = Table::scoped("BKC");
/// The builds view, listed by build number on the index.
pub const RUNS: Table<Run> = Table::scoped("RUN").sorted("RUN");
/// A marker per unfinished run, so a poll finds them in one query.
pub const OPEN_RUNS: Table<OpenRun> = Table::scoped("OPEN");
/// At most one run per (delivery, action): `ACT#{delivery id}#{action}`.
pub const ACTION_CLAIMS: Table<ActionClaim> = Table::scoped("ACT");
/// The head commit last built for a pull request.
pub const PR_HEADS: Table<PrHead> = Table::scoped("PRH");
pub const ENVIRONMENTS: Table<Environment> = Table::scoped("ENV");
/// Everything pruned or deleted, newest first on the index (`AUD#{µs}#{branch}`).
pub const AUDIT: Table<AuditEntry> = Table::scoped("AUD").sorted("AUD");

use crate::failures::Failure;
use crate::fanout::ScheduleCycle;
use crate::rate::RateWindow;

/// Consumer work that failed (delivery, consumer): kept until a later attempt or a replay
/// succeeds, listed newest attempt first (`FAIL#{last attempt µs}#{delivery}#{consumer}`).
pub const FAILURES: Table<Failure> = Table::scoped("FAIL").sorted("FAIL");
/// One request counter per credential (a hash naming who it acts as), for its current window.
pub const RATE_WINDOWS: Table<RateWindow> = Table::shared("RATES", "RATE");
/// How many cycles each schedule has enqueued (the rotation of its order).
pub const SCHEDULE_CYCLES: Table<ScheduleCycle> = Table::shared("SCHEDULES", "CYC");
/// Domain events, recorded once each (`Absent`, by event id), newest first on the index
/// (`OBX#{occurred}#{id}`): the activity feed, and what the relay publishes.
pub const OUTBOX: Table<OutboxEntry> = Table::scoped("OBX").sorted("OBX");
