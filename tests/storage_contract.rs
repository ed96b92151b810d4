//! One contract, every state adapter: in-memory, SQLite (a real file) and DynamoDB (moto).
//! Includes the receiver's core promise: 50 concurrent copies of one delivery → 1 record.

use std::sync::Arc;

use chrono::Utc;
use cross_function_tests::{emulator_table, temp_dir};
use domain::delivery::{self, Delivery, Ingested};
use domain::store::{Condition, Index, Item, Key, MemoryStore, Page, Query, StateStore, StoreError, Write};
use domain::webhook::{Flavor, RepoEvent};
use local_adapters::SqliteStore;
use serde_json::{Value, json};

/// A SQLite store in a temp dir that lives (and is removed) with it.
struct InDir {
    store: SqliteStore,
    _dir: tempfile::TempDir,
}

impl InDir {
    fn sqlite() -> Self {
        let dir = temp_dir("sqlite");
        InDir { store: SqliteStore::open(&dir.path().join("state.sqlite3")).unwrap(), _dir: dir }
    }
}

#[async_trait::async_trait]
impl StateStore for InDir {
    async fn get(&self, key: &Key) -> Result<Option<Item>, StoreError> {
        self.store.get(key).await
    }
    async fn put(&self, item: Item, condition: Condition) -> Result<u64, StoreError> {
        self.store.put(item, condition).await
    }
    async fn delete(&self, key: &Key, condition: Condition) -> Result<(), StoreError> {
        self.store.delete(key, condition).await
    }
    async fn write_all(&self, writes: Vec<Write>) -> Result<Vec<u64>, StoreError> {
        self.store.write_all(writes).await
    }
    async fn query(&self, query: &Query) -> Result<Page, StoreError> {
        self.store.query(query).await
    }
}

fn item(pk: &str, sk: &str, attrs: Value) -> Item {
    Item::from_record(Key::new(pk, sk), "test", &attrs).unwrap()
}

fn query(pk: &str, index: Index, descending: bool, limit: usize, cursor: Option<String>) -> Query {
    Query { pk: pk.into(), index, descending, limit, cursor }
}

async fn conditional_writes(store: &dyn StateStore) {
    let key = Key::new("P", "a");
    assert!(store.get(&key).await.unwrap().is_none());
    assert_eq!(store.put(item("P", "a", json!({"n": 1})), Condition::Absent).await.unwrap(), 1);
    match store.put(item("P", "a", json!({"n": 2})), Condition::Absent).await {
        Err(StoreError::ConditionFailed { current: Some(current) }) => assert_eq!(current.attrs["n"], 1),
        other => panic!("expected a failed condition with the current item, got {other:?}"),
    }
    assert_eq!(store.put(item("P", "a", json!({"n": 3})), Condition::Version(1)).await.unwrap(), 2);
    assert!(matches!(
        store.put(item("P", "a", json!({"n": 4})), Condition::Version(1)).await,
        Err(StoreError::ConditionFailed { .. })
    ));
    assert_eq!(store.put(item("P", "a", json!({"n": 5})), Condition::None).await.unwrap(), 3);
    assert_eq!(store.put(item("P", "fresh", json!({})), Condition::None).await.unwrap(), 1);
    let got = store.get(&key).await.unwrap().unwrap();
    assert_eq!((got.version, got.kind.as_str(), &got.attrs["n"]), (3, "test", &json!(5)));
    assert!(matches!(
        store.put(item("P", "b", json!({})), Condition::Version(1)).await,
        Err(StoreError::ConditionFailed { current: None })
    ));

    assert!(matches!(store.delete(&key, Condition::Version(2)).await, Err(StoreError::ConditionFailed { .. })));
    store.delete(&key, Condition::Version(3)).await.unwrap();
    assert!(store.get(&key).await.unwrap().is_none());
    store.delete(&key, Condition::None).await.unwrap();
}

async fn records_round_trip(store: &dyn StateStore) {
    let attrs = json!({
        "text": "héllo ✓", "empty": "", "int": 42, "neg": -7, "big": 9_007_199_254_740_993_u64, "float": 1.5,
        "yes": true, "none": null, "list": [1, "two", {"three": 3}], "nested": {"a": {"b": []}}
    });
    store.put(item("R", "x", attrs.clone()), Condition::Absent).await.unwrap();
    let got = store.get(&Key::new("R", "x")).await.unwrap().unwrap();
    assert_eq!(Value::Object(got.attrs), attrs);
    assert!(Item::from_record(Key::new("R", "y"), "t", &json!({"version": 1})).is_err(), "reserved names are refused");
    assert!(Item::from_record(Key::new("R", "y"), "t", &json!([1])).is_err(), "records are objects");
}

/// A prefix query is exact on every store, whatever characters follow the prefix — up to the
/// highest code point (U+10FFFF), which a range query ending at `prefix + U+10FFFF` missed.
async fn prefixes_are_exact(store: &dyn StateStore) {
    let keys = ["E#", "E#a", "E#\u{10FFFF}", "E#\u{10FFFF}x", "E#\u{10FFFF}\u{10FFFF}", "E#\u{FFFF}"];
    for sk in keys.iter().chain(&["E$", "D#", "E", "F"]) {
        store.put(item("X", sk, json!({})).with_sort(format!("S{sk}")), Condition::None).await.unwrap();
    }
    for (index, strip) in
        [(Index::Primary { sk_prefix: "E#".into() }, ""), (Index::Sorted { prefix: "SE#".into() }, "S")]
    {
        let page = store.query(&query("X", index, false, 100, None)).await.unwrap();
        let mut found: Vec<&str> = page.items.iter().map(|i| i.key.sk.as_str()).collect();
        found.sort_unstable();
        let mut expected = keys.to_vec();
        expected.sort_unstable();
        assert_eq!(found, expected, "sort-key prefix {strip:?}");
    }
}

async fn expired_items_are_absent(store: &dyn StateStore) {
    let past = Utc::now().timestamp() - 10;
    let future = Utc::now().timestamp() + 3600;
    store.put(item("E", "old", json!({})).with_expiry(past).with_sort("S#1"), Condition::None).await.unwrap();
    store.put(item("E", "new", json!({})).with_expiry(future).with_sort("S#2"), Condition::None).await.unwrap();
    assert!(store.get(&Key::new("E", "old")).await.unwrap().is_none(), "expired reads as absent");
    assert!(store.get(&Key::new("E", "new")).await.unwrap().is_some());
    for index in [Index::Primary { sk_prefix: String::new() }, Index::Sorted { prefix: "S#".into() }] {
        let page = store.query(&query("E", index, false, 10, None)).await.unwrap();
        assert_eq!(page.items.iter().map(|i| i.key.sk.as_str()).collect::<Vec<_>>(), ["new"]);
    }
    // An expired item does not block Absent, and its replacement starts at version 1.
    assert_eq!(store.put(item("E", "old", json!({"again": true})), Condition::Absent).await.unwrap(), 1);
    assert!(matches!(
        store.put(item("E", "x", json!({})), Condition::Version(1)).await,
        Err(StoreError::ConditionFailed { .. })
    ));
    // Its version no longer matches anything, and an unconditional overwrite starts at 1 too.
    store.put(item("E", "gone", json!({})).with_expiry(past), Condition::None).await.unwrap();
    assert!(matches!(
        store.put(item("E", "gone", json!({})), Condition::Version(1)).await,
        Err(StoreError::ConditionFailed { current: None })
    ));
    assert_eq!(store.put(item("E", "gone", json!({"n": 2})), Condition::None).await.unwrap(), 1);
    assert_eq!(store.put(item("E", "gone", json!({"n": 3})), Condition::None).await.unwrap(), 2);
}

async fn queries_order_filter_and_page(store: &dyn StateStore) {
    for i in 0..25 {
        // sk order is the reverse of sort order, so the two indexes are told apart.
        let it = item("Q", &format!("A#{:02}", 24 - i), json!({"i": i})).with_sort(format!("T#{i:02}"));
        store.put(it, Condition::Absent).await.unwrap();
    }
    store.put(item("Q", "B#other", json!({})), Condition::Absent).await.unwrap();
    store.put(item("Q2", "A#99", json!({})).with_sort("T#99"), Condition::Absent).await.unwrap();

    for (index, descending, expected_first) in [
        (Index::Primary { sk_prefix: "A#".into() }, false, 24),
        (Index::Primary { sk_prefix: "A#".into() }, true, 0),
        (Index::Sorted { prefix: "T#".into() }, false, 0),
        (Index::Sorted { prefix: "T#".into() }, true, 24),
    ] {
        let mut seen = Vec::new();
        let mut cursor = None;
        let mut pages = 0;
        loop {
            let page = store.query(&query("Q", index.clone(), descending, 10, cursor)).await.unwrap();
            pages += 1;
            seen.extend(page.items.iter().map(|i| i.attrs["i"].as_i64().unwrap()));
            match page.cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
            assert!(pages < 10, "paging must end");
        }
        assert_eq!(seen.len(), 25, "{index:?} desc={descending}: {seen:?}");
        assert_eq!(seen[0], expected_first, "{index:?} desc={descending}");
        let mut sorted = seen.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 25, "no item twice");
        assert!(seen.windows(2).all(|w| (w[0] < w[1]) == (seen[0] < seen[1])), "monotonic: {seen:?}");
    }
    let unsorted = store.query(&query("Q", Index::Sorted { prefix: String::new() }, false, 100, None)).await.unwrap();
    assert_eq!(unsorted.items.len(), 25, "items without a sort value are not in the sorted index");
    assert!(matches!(
        store.query(&query("Q", Index::Sorted { prefix: "T#".into() }, false, 5, Some("not-a-cursor".into()))).await,
        Err(StoreError::BadCursor)
    ));
}

fn delivery(integration: &str, delivery_id: &str) -> Delivery {
    Delivery {
        event_id: uuid::Uuid::new_v4().to_string(),
        integration_id: integration.into(),
        delivery_id: delivery_id.into(),
        event_key: "repo:push".into(),
        flavor: Flavor::Cloud,
        received_at: Utc::now(),
        hook_uuid: None,
        attempt: Some(1),
        repository: Some("ws/repo".into()),
        events: vec![RepoEvent::BranchCreated { branch: "main".into(), head: Some("abc".into()) }],
        summary: "branch main created".into(),
        body_xxh3: None,
    }
}

async fn concurrent_duplicates_record_once(store: Arc<dyn StateStore>) {
    const COPIES: usize = 50;
    let tasks: Vec<_> = (0..COPIES)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                delivery::record(store.as_ref(), delivery("int-1", "same-delivery"), chrono::Duration::days(30)).await
            })
        })
        .collect();
    let (mut recorded, mut duplicates, mut event_ids) = (0, 0, Vec::new());
    for task in tasks {
        match task.await.unwrap().unwrap() {
            Ingested::Recorded(d) => {
                recorded += 1;
                event_ids.push(d.event_id)
            }
            Ingested::Duplicate(d) => {
                duplicates += 1;
                event_ids.push(d.event_id)
            }
            Ingested::Ping => unreachable!(),
        }
    }
    assert_eq!((recorded, duplicates), (1, COPIES - 1));
    event_ids.dedup();
    assert_eq!(event_ids.len(), 1, "every duplicate answer names the one recorded event");
    let (listed, _) = delivery::list_deliveries(store.as_ref(), "int-1", 100, None).await.unwrap();
    assert_eq!(listed.len(), 1);
    println!("concurrent duplicates: {COPIES} copies -> {recorded} recorded, {duplicates} duplicates");
}

/// All or none: a batch whose conditions all hold makes every write (puts, deletes, versions as
/// single writes make them); one failed condition anywhere makes none and names the live item;
/// a batch writing one key twice, or too many keys, is refused before anything is written.
async fn batches_are_all_or_none(store: &dyn StateStore) {
    store.put(item("B", "kept", json!({"n": 1})), Condition::Absent).await.unwrap();
    store.put(item("B", "gone", json!({})), Condition::Absent).await.unwrap();
    let versions = store
        .write_all(vec![
            Write::Put(item("B", "kept", json!({"n": 2})), Condition::Version(1)),
            Write::Put(item("B", "new", json!({"n": 1})), Condition::Absent),
            Write::Put(item("B", "blind", json!({})), Condition::None),
            Write::Delete(Key::new("B", "gone"), Condition::Version(1)),
        ])
        .await
        .unwrap();
    assert_eq!(versions, [2, 1, 1, 0]);
    let got = |sk: &'static str| async move { store.get(&Key::new("B", sk)).await.unwrap() };
    assert_eq!(got("kept").await.map(|i| (i.version, i.attrs["n"].clone())), Some((2, json!(2))));
    assert_eq!(got("new").await.map(|i| i.version), Some(1));
    assert!(got("gone").await.is_none());

    // The last write's condition fails: the first is not made either.
    let failed = store
        .write_all(vec![
            Write::Put(item("B", "kept", json!({"n": 3})), Condition::Version(2)),
            Write::Put(item("B", "other", json!({})), Condition::Absent),
            Write::Put(item("B", "new", json!({"n": 2})), Condition::Absent),
        ])
        .await;
    match failed {
        Err(StoreError::ConditionFailed { current: Some(current) }) => assert_eq!(current.key, Key::new("B", "new")),
        other => panic!("expected the failed condition of B/new, got {other:?}"),
    }
    assert_eq!(got("kept").await.map(|i| i.attrs["n"].clone()), Some(json!(2)), "nothing written");
    assert!(got("other").await.is_none(), "nothing written");
    // A failed delete condition (the item is absent) undoes the puts beside it.
    let failed = store
        .write_all(vec![
            Write::Put(item("B", "other", json!({})), Condition::Absent),
            Write::Delete(Key::new("B", "gone"), Condition::Version(1)),
        ])
        .await;
    assert!(matches!(failed, Err(StoreError::ConditionFailed { .. })), "{failed:?}");
    assert!(got("other").await.is_none(), "nothing written");

    let twice = vec![
        Write::Put(item("B", "twice", json!({})), Condition::None),
        Write::Delete(Key::new("B", "twice"), Condition::None),
    ];
    assert!(matches!(store.write_all(twice).await, Err(StoreError::Corrupt(_))));
    let many = (0..=domain::store::MAX_WRITES)
        .map(|i| Write::Put(item("B", &format!("many-{i}"), json!({})), Condition::None))
        .collect();
    assert!(matches!(store.write_all(many).await, Err(StoreError::Corrupt(_))));
    assert!(got("twice").await.is_none() && got("many-0").await.is_none());
}

macro_rules! contract {
    ($adapter:ident, $make:expr) => {
        mod $adapter {
            use super::*;

            async fn store() -> Arc<dyn StateStore> {
                $make
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn conditional_writes() {
                super::conditional_writes(store().await.as_ref()).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn records_round_trip() {
                super::records_round_trip(store().await.as_ref()).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn prefixes_are_exact() {
                super::prefixes_are_exact(store().await.as_ref()).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn expired_items_are_absent() {
                super::expired_items_are_absent(store().await.as_ref()).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn queries_order_filter_and_page() {
                super::queries_order_filter_and_page(store().await.as_ref()).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn batches_are_all_or_none() {
                super::batches_are_all_or_none(store().await.as_ref()).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 8)]
            async fn concurrent_duplicates_record_once() {
                super::concurrent_duplicates_record_once(store().await).await
            }
        }
    };
}

contract!(memory, Arc::new(MemoryStore::new()));
contract!(sqlite, Arc::new(InDir::sqlite()));
contract!(dynamodb, Arc::new(emulator_table().await));
