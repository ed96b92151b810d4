//! The state store port: a single-table item store with conditional writes, TTL and one
//! secondary sort order — the subset of DynamoDB the domain needs, so that SQLite and an
//! in-memory map can implement it with the same semantics.
//!
//! Rules every adapter keeps (the contract tests in `tests/storage_contract.rs` check them):
//! - an item whose `expires_at` is in the past is absent for reads *and* conditions
//!   (DynamoDB deletes expired items up to two days late; moto never does);
//! - `Condition::Absent` and `Condition::Version` are atomic; a failed condition returns the
//!   current item so callers need no second read;
//! - every successful write bumps `version` by one (1 on creation);
//! - [`StateStore::write_all`] makes all of its writes or none (a state change and the events
//!   it causes are never apart).

mod memory;

pub use memory::{MemoryStore, check, order_value};

use async_trait::async_trait;
use base64::Engine as _;
use serde::{Serialize, de::DeserializeOwned};
use serde_json::{Map, Value};

/// Joins the parts of a key with `#`, each part escaped (`%` → `%25`, `#` → `%23`) so that the
/// joined key names exactly one list of parts: (`D`, `k#z`) and (`D#k`, `z`) give different
/// keys, and the key of a list of parts followed by `#` is a prefix of exactly the keys that
/// extend that list. Parts that hold neither byte are unchanged.
pub fn compose(parts: &[&str]) -> String {
    let mut key = String::with_capacity(parts.iter().map(|p| p.len() + 1).sum());
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            key.push('#');
        }
        for c in part.chars() {
            match c {
                '%' => key.push_str("%25"),
                '#' => key.push_str("%23"),
                c => key.push(c),
            }
        }
    }
    key
}

/// Primary key of an item.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub pk: String,
    pub sk: String,
}

impl Key {
    pub fn new(pk: impl Into<String>, sk: impl Into<String>) -> Self {
        Key { pk: pk.into(), sk: sk.into() }
    }
}

/// A stored record: typed domain data serialized into `attrs`, plus the attributes the store
/// itself interprets. `attrs` must not use the reserved names in [`RESERVED`].
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub key: Key,
    /// The record type (`integration`, `delivery`, …); stream filters select on it.
    pub kind: String,
    /// Secondary sort key within the partition (queried with [`Index::Sorted`]).
    pub sort: Option<String>,
    /// Epoch seconds after which the item is gone.
    pub expires_at: Option<i64>,
    /// Set by the store on every write.
    pub version: u64,
    pub attrs: Map<String, Value>,
}

/// Attribute names the adapters use for the fields above.
pub const RESERVED: [&str; 6] = ["pk", "sk", "kind", "sort", "expires_at", "version"];

impl Item {
    /// Builds an item from a serializable record (which must serialize to a JSON object).
    pub fn from_record<T: Serialize>(key: Key, kind: &str, record: &T) -> Result<Self, StoreError> {
        let attrs = match serde_json::to_value(record).map_err(|e| StoreError::Corrupt(e.to_string()))? {
            Value::Object(map) => map,
            _ => return Err(StoreError::Corrupt("records must serialize to JSON objects".into())),
        };
        if let Some(name) = RESERVED.iter().find(|name| attrs.contains_key(**name)) {
            return Err(StoreError::Corrupt(format!("record field `{name}` collides with a store attribute")));
        }
        Ok(Item { key, kind: kind.to_owned(), sort: None, expires_at: None, version: 0, attrs })
    }

    pub fn with_sort(mut self, sort: impl Into<String>) -> Self {
        self.sort = Some(sort.into());
        self
    }

    pub fn with_expiry(mut self, expires_at: i64) -> Self {
        self.expires_at = Some(expires_at);
        self
    }

    /// The record back out of the item.
    pub fn record<T: DeserializeOwned>(&self) -> Result<T, StoreError> {
        serde_json::from_value(Value::Object(self.attrs.clone()))
            .map_err(|e| StoreError::Corrupt(format!("{} {}/{}: {e}", self.kind, self.key.pk, self.key.sk)))
    }

    pub fn is_expired(&self, now: i64) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }
}

/// What must hold for a write to happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    /// Unconditional.
    None,
    /// No live item has this key (an expired one counts as absent).
    Absent,
    /// The live item has exactly this version (optimistic concurrency).
    Version(u64),
}

impl Condition {
    /// The version a put under this condition writes, when the condition alone decides it.
    pub fn next_version(self) -> Option<u64> {
        match self {
            Condition::None => None,
            Condition::Absent => Some(1),
            Condition::Version(v) => Some(v + 1),
        }
    }
}

/// The most writes one [`StateStore::write_all`] takes (DynamoDB's TransactWriteItems limit).
pub const MAX_WRITES: usize = 100;

/// One write of an all-or-none batch.
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    Put(Item, Condition),
    Delete(Key, Condition),
}

impl Write {
    pub fn key(&self) -> &Key {
        match self {
            Write::Put(item, _) => &item.key,
            Write::Delete(key, _) => key,
        }
    }

    pub fn condition(&self) -> Condition {
        match self {
            Write::Put(_, c) | Write::Delete(_, c) => *c,
        }
    }
}

/// What every adapter refuses in a batch, as DynamoDB does: more than [`MAX_WRITES`] writes, or
/// two writes to one key (which of them would win is not defined).
pub fn check_batch(writes: &[Write]) -> Result<(), StoreError> {
    if writes.len() > MAX_WRITES {
        return Err(StoreError::Corrupt(format!("a batch of {} writes exceeds {MAX_WRITES}", writes.len())));
    }
    let mut keys: Vec<&Key> = writes.iter().map(Write::key).collect();
    keys.sort();
    match keys.windows(2).find(|pair| pair[0] == pair[1]) {
        Some(pair) => Err(StoreError::Corrupt(format!("a batch writes {}/{} twice", pair[0].pk, pair[0].sk))),
        None => Ok(()),
    }
}

/// Which order a query walks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Index {
    /// By `sk`, restricted to keys starting with the prefix.
    Primary { sk_prefix: String },
    /// By `sort`, restricted to values starting with the prefix (items without `sort` are skipped).
    Sorted { prefix: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub pk: String,
    pub index: Index,
    pub descending: bool,
    pub limit: usize,
    /// Opaque cursor from a previous [`Page`].
    pub cursor: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub items: Vec<Item>,
    /// Present when more items may follow.
    pub cursor: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the write's condition did not hold")]
    ConditionFailed {
        /// The live item that made it fail, if any.
        current: Option<Box<Item>>,
    },
    #[error("the state store is throttling requests")]
    Throttled,
    #[error("the state store is unavailable: {0}")]
    Unavailable(String),
    #[error("invalid cursor")]
    BadCursor,
    #[error("stored data could not be read: {0}")]
    Corrupt(String),
}

#[async_trait]
pub trait StateStore: Send + Sync {
    async fn get(&self, key: &Key) -> Result<Option<Item>, StoreError>;
    /// Writes `item` if `condition` holds; returns the new version.
    async fn put(&self, item: Item, condition: Condition) -> Result<u64, StoreError>;
    /// Deletes if `condition` holds (`Condition::Absent` is meaningless here and always fails).
    async fn delete(&self, key: &Key, condition: Condition) -> Result<(), StoreError>;
    /// Makes every write if every condition holds, else none; returns each write's new version
    /// (0 for a delete). A failed condition is `ConditionFailed` with the live item of a write
    /// whose condition failed when there is one. See [`check_batch`] for what is refused.
    async fn write_all(&self, writes: Vec<Write>) -> Result<Vec<u64>, StoreError>;
    async fn query(&self, query: &Query) -> Result<Page, StoreError>;
}

/// Every item of `pk` whose `sk` starts with `sk_prefix`, in `sk` order, all pages read.
pub async fn query_all(store: &dyn StateStore, pk: &str, sk_prefix: &str) -> Result<Vec<Item>, StoreError> {
    let mut items = Vec::new();
    let mut cursor = None;
    loop {
        let page = store
            .query(&Query {
                pk: pk.to_owned(),
                index: Index::Primary { sk_prefix: sk_prefix.to_owned() },
                descending: false,
                limit: 100,
                cursor,
            })
            .await?;
        items.extend(page.items);
        match page.cursor {
            Some(c) => cursor = Some(c),
            None => return Ok(items),
        }
    }
}

/// Cursors are the last returned item's position, base64url-encoded so callers treat them as
/// opaque; each adapter decides what the position holds.
pub fn encode_cursor(position: &Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(position.to_string())
}

pub fn decode_cursor(cursor: &str) -> Result<Value, StoreError> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(cursor).map_err(|_| StoreError::BadCursor)?;
    serde_json::from_slice(&bytes).map_err(|_| StoreError::BadCursor)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::compose;

    /// Parts drawn mostly from the bytes that matter (`#`, `%` and what follows an escape).
    fn parts() -> impl Strategy<Value = Vec<String>> {
        prop::collection::vec("[#%23ab]{0,5}", 1..5)
    }

    fn joined(parts: &[String]) -> String {
        compose(&parts.iter().map(String::as_str).collect::<Vec<_>>())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        /// Injective: two keys are equal only when their parts are.
        #[test]
        fn composed_keys_are_injective(a in parts(), b in parts()) {
            prop_assert_eq!(joined(&a) == joined(&b), a == b);
        }

        /// A prefix query for some leading parts finds exactly the keys that extend them.
        #[test]
        fn prefixes_select_exactly_the_extensions(a in parts(), b in parts()) {
            let prefix = format!("{}#", joined(&a));
            let extends = b.len() > a.len() && b[..a.len()] == a[..];
            prop_assert_eq!(joined(&b).starts_with(&prefix), extends);
        }
    }

    #[test]
    fn plain_parts_are_unchanged() {
        assert_eq!(compose(&["AUD", "DLV", "d-1", "feature/x"]), "AUD#DLV#d-1#feature/x");
        assert_eq!(compose(&["ACT", "a#b", "50%"]), "ACT#a%23b#50%25");
    }
}
