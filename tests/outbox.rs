//! The outbox: a state change and the events it causes are written all-or-none, so a process
//! that dies at any point between them leaves neither alone — the class of loss where an
//! environment, a run or a backup was recorded and its event never was. The write itself on
//! every store is in `storage_contract`; here the consumers run over a store that dies after
//! its k-th write, for every k until one completes.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use cross_function_tests::stack::stack_with;
use domain::consumers::DeliveryConsumer;
use domain::outbox::{EventType, OutboxEntry};
use domain::store::{Condition, Item, Key, Page, Query, StateStore, StoreError, Write};
use domain::tables::{ENVIRONMENTS, OUTBOX, RUNS};
use local_stack::SANDBOX_ID;
use serde_json::Value;

use crate::idempotency::{
    after_claim_timeout, builds_custom_pipeline, failures, pull_request_opened, recorded, stream_batch,
};

/// A store whose process dies after a number of writes: every later write fails (reads still
/// answer, as the table outlives the process).
struct Dying {
    inner: Arc<dyn StateStore>,
    /// Writes left before the death; `usize::MAX` until armed.
    left: AtomicUsize,
}

impl Dying {
    fn write(&self) -> Result<(), StoreError> {
        match self.left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)) {
            Ok(_) => Ok(()),
            Err(_) => Err(StoreError::Unavailable("the process died".into())),
        }
    }
}

#[async_trait]
impl StateStore for Dying {
    async fn get(&self, key: &Key) -> Result<Option<Item>, StoreError> {
        self.inner.get(key).await
    }
    async fn put(&self, item: Item, condition: Condition) -> Result<u64, StoreError> {
        self.write()?;
        self.inner.put(item, condition).await
    }
    async fn delete(&self, key: &Key, condition: Condition) -> Result<(), StoreError> {
        self.write()?;
        self.inner.delete(key, condition).await
    }
    async fn write_all(&self, writes: Vec<Write>) -> Result<Vec<u64>, StoreError> {
        self.write()?;
        self.inner.write_all(writes).await
    }
    async fn query(&self, query: &Query) -> Result<Page, StoreError> {
        self.inner.query(query).await
    }
}

/// Every stored environment has its `environment.created` event and every stored run its
/// `build.started` (and `build.finished` once final).
async fn each_change_has_its_events(store: &dyn StateStore, when: &str) {
    let events: Vec<OutboxEntry> =
        OUTBOX.all(store, SANDBOX_ID, &[]).await.unwrap().into_iter().map(|e| e.record).collect();
    let has = |kind: EventType, field: &str, value: &str| {
        events.iter().any(|e| e.event.kind == kind && e.event.data[field].as_str() == Some(value))
    };
    for env in ENVIRONMENTS.all(store, SANDBOX_ID, &[]).await.unwrap() {
        let branch = &env.record.branch;
        assert!(has(EventType::EnvironmentCreated, "branch", branch), "{when}: environment {branch} without its event");
    }
    for run in RUNS.all(store, SANDBOX_ID, &[]).await.unwrap() {
        let uuid = &run.record.uuid;
        assert!(has(EventType::BuildStarted, "uuid", uuid), "{when}: run {uuid} without build.started");
        if run.record.is_final() {
            assert!(has(EventType::BuildFinished, "uuid", uuid), "{when}: run {uuid} without build.finished");
        }
    }
}

/// Both consumers of a delivery (a run started; an environment created and activated).
fn consumers(s: &cross_function_tests::stack::Stack) -> [Arc<dyn DeliveryConsumer>; 2] {
    [s.running.pipelines.clone(), s.running.pruner.clone()]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_death_between_a_change_and_its_events_loses_neither() {
    for k in 0.. {
        let temp = cross_function_tests::temp_dir("outbox");
        let sqlite = local_adapters::backends(temp.path()).expect("the SQLite state opens");
        let dying = Arc::new(Dying { inner: sqlite.store, left: AtomicUsize::new(usize::MAX) });
        let backends = domain::Backends { store: dying.clone(), secrets: sqlite.secrets };
        let s = stack_with(temp.path(), backends, false).await;
        builds_custom_pipeline(&s).await;
        let item = recorded(&s, "pullrequest:created", &format!("dies-after-{k}"), &pull_request_opened()).await;
        let batch = stream_batch(&item, "1");
        dying.left.store(k, Ordering::SeqCst);
        let mut failed = 0;
        for consumer in consumers(&s) {
            failed += failures(&cross_function_tests::on_stream(consumer, &batch).await);
        }
        let store = s.running.backends.store.clone();
        each_change_has_its_events(store.as_ref(), &format!("dead after {k} writes")).await;
        // Lambda's retry once the process is back and its claims have expired: everything
        // done, once.
        dying.left.store(usize::MAX, Ordering::SeqCst);
        let retried: [Arc<dyn DeliveryConsumer>; 2] = [Arc::new(after_claim_timeout(&s)), s.running.pruner.clone()];
        for consumer in retried {
            let answer: Value = cross_function_tests::on_stream(consumer, &batch).await;
            assert_eq!(failures(&answer), 0, "after {k} writes: {answer}");
        }
        each_change_has_its_events(store.as_ref(), &format!("retried after {k} writes")).await;
        assert_eq!(s.running.sandbox.pipelines().len(), 1, "after {k} writes: one run");
        s.stop().await;
        if failed == 0 {
            // Every k below died somewhere in the delivery's writes.
            println!("FIGURES outbox deaths={k} writes_for_the_delivery={k}");
            return;
        }
        assert!(k < 100, "the consumers never finished");
    }
}
