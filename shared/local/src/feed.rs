//! A change feed over any store, as DynamoDB Streams is for the table: every successful write's
//! new image goes to a channel. The local stack's in-process worker consumes it the way the
//! stream-triggered Lambdas consume the table's stream, with the same filters (by `kind`).

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::mpsc;

use domain::store::{Condition, Item, Key, Page, Query, StateStore, StoreError, Write};

pub struct FeedStore {
    inner: Arc<dyn StateStore>,
    feed: mpsc::UnboundedSender<Item>,
}

impl FeedStore {
    /// The decorated store and the receiving end of its feed.
    pub fn new(inner: Arc<dyn StateStore>) -> (Self, mpsc::UnboundedReceiver<Item>) {
        let (feed, rx) = mpsc::unbounded_channel();
        (FeedStore { inner, feed }, rx)
    }
}

#[async_trait]
impl StateStore for FeedStore {
    async fn get(&self, key: &Key) -> Result<Option<Item>, StoreError> {
        self.inner.get(key).await
    }

    async fn put(&self, mut item: Item, condition: Condition) -> Result<u64, StoreError> {
        let version = self.inner.put(item.clone(), condition).await?;
        item.version = version;
        // Nobody listening (the worker stopped) is not the writer's problem.
        let _ = self.feed.send(item);
        Ok(version)
    }

    async fn delete(&self, key: &Key, condition: Condition) -> Result<(), StoreError> {
        self.inner.delete(key, condition).await
    }

    async fn write_all(&self, writes: Vec<Write>) -> Result<Vec<u64>, StoreError> {
        let versions = self.inner.write_all(writes.clone()).await?;
        for (write, version) in writes.into_iter().zip(&versions) {
            if let Write::Put(mut item, _) = write {
                item.version = *version;
                let _ = self.feed.send(item);
            }
        }
        Ok(versions)
    }

    async fn query(&self, query: &Query) -> Result<Page, StoreError> {
        self.inner.query(query).await
    }
}
