//! In-memory adapter: the reference semantics, used by unit tests and the hot-path benchmark.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use serde_json::json;

use super::*;
use crate::now_epoch;

#[derive(Default)]
pub struct MemoryStore {
    items: Mutex<BTreeMap<Key, Item>>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }
}

/// Whether `condition` holds for the live item `current` (adapters that check in process).
pub fn check(current: Option<&Item>, condition: Condition) -> Result<(), StoreError> {
    let holds = match (condition, current) {
        (Condition::None, _) => true,
        (Condition::Absent, None) => true,
        (Condition::Version(v), Some(item)) => item.version == v,
        _ => false,
    };
    if holds { Ok(()) } else { Err(StoreError::ConditionFailed { current: current.cloned().map(Box::new) }) }
}

/// The value an item is ordered by in `index` (adapters that order in process).
pub fn order_value<'a>(item: &'a Item, index: &Index) -> Option<&'a str> {
    match index {
        Index::Primary { sk_prefix } => Some(item.key.sk.as_str()).filter(|sk| sk.starts_with(sk_prefix.as_str())),
        Index::Sorted { prefix } => item.sort.as_deref().filter(|s| s.starts_with(prefix.as_str())),
    }
}

#[async_trait]
impl StateStore for MemoryStore {
    async fn get(&self, key: &Key) -> Result<Option<Item>, StoreError> {
        let items = self.items.lock().expect("lock");
        Ok(items.get(key).filter(|i| !i.is_expired(now_epoch())).cloned())
    }

    async fn put(&self, mut item: Item, condition: Condition) -> Result<u64, StoreError> {
        let mut items = self.items.lock().expect("lock");
        let current = items.get(&item.key).filter(|i| !i.is_expired(now_epoch()));
        check(current, condition)?;
        item.version = current.map_or(1, |c| c.version + 1);
        let version = item.version;
        items.insert(item.key.clone(), item);
        Ok(version)
    }

    async fn delete(&self, key: &Key, condition: Condition) -> Result<(), StoreError> {
        let mut items = self.items.lock().expect("lock");
        let current = items.get(key).filter(|i| !i.is_expired(now_epoch()));
        check(current, condition)?;
        items.remove(key);
        Ok(())
    }

    async fn write_all(&self, writes: Vec<Write>) -> Result<Vec<u64>, StoreError> {
        check_batch(&writes)?;
        let mut items = self.items.lock().expect("lock");
        let now = now_epoch();
        // Every condition first, under the one lock: then every write.
        for write in &writes {
            check(items.get(write.key()).filter(|i| !i.is_expired(now)), write.condition())?;
        }
        let mut versions = Vec::with_capacity(writes.len());
        for write in writes {
            match write {
                Write::Put(mut item, _) => {
                    let current = items.get(&item.key).filter(|i| !i.is_expired(now));
                    item.version = current.map_or(1, |c| c.version + 1);
                    versions.push(item.version);
                    items.insert(item.key.clone(), item);
                }
                Write::Delete(key, _) => {
                    items.remove(&key);
                    versions.push(0);
                }
            }
        }
        Ok(versions)
    }

    async fn query(&self, query: &Query) -> Result<Page, StoreError> {
        let after = query.cursor.as_deref().map(decode_cursor).transpose()?;
        let after = match &after {
            Some(v) => Some(
                v.as_array()
                    .and_then(|a| Some((a.first()?.as_str()?, a.get(1)?.as_str()?)))
                    .ok_or(StoreError::BadCursor)?,
            ),
            None => None,
        };
        let now = now_epoch();
        let items = self.items.lock().expect("lock");
        let mut matching: Vec<(&str, &Item)> = items
            .range(Key::new(&query.pk, "")..)
            .take_while(|(k, _)| k.pk == query.pk)
            .filter_map(|(_, item)| order_value(item, &query.index).map(|o| (o, item)))
            .collect();
        // Ties on the sort value are broken by sk, as DynamoDB does for local indexes.
        matching.sort_by(|a, b| (a.0, &a.1.key.sk).cmp(&(b.0, &b.1.key.sk)));
        if query.descending {
            matching.reverse();
        }
        let start = match after {
            Some(pos) => matching
                .iter()
                .position(|(o, i)| {
                    let here = (*o, i.key.sk.as_str());
                    if query.descending { here < pos } else { here > pos }
                })
                .unwrap_or(matching.len()),
            None => 0,
        };
        let page: Vec<&(&str, &Item)> = matching[start..].iter().take(query.limit).collect();
        let more = start + page.len() < matching.len();
        let cursor = more.then(|| page.last().map(|(o, i)| encode_cursor(&json!([o, i.key.sk])))).flatten();
        Ok(Page { items: page.into_iter().map(|(_, i)| (*i).clone()).filter(|i| !i.is_expired(now)).collect(), cursor })
    }
}
