//! The work queue port on SQS: a schedule's messages sent ten to a `SendMessageBatch`, a few
//! batches at a time. The client is built at its first use, so only the functions whose
//! schedule enqueues (status-poller, branch-pruner) ever build it.

use std::sync::LazyLock;

use async_trait::async_trait;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use domain::fanout::{QueueError, Work, WorkQueue};
use futures_util::future::try_join_all;

type LazyClient = LazyLock<Client, Box<dyn FnOnce() -> Client + Send>>;

/// SQS takes at most ten messages a batch.
const BATCH: usize = 10;
/// Batches in flight at once: a schedule's run enqueues 10,000 integrations in ~1,000 requests.
const IN_FLIGHT: usize = 8;

pub struct SqsQueue {
    client: LazyClient,
    url: String,
}

impl SqsQueue {
    pub fn new(client: Client, url: impl Into<String>) -> Self {
        SqsQueue { client: LazyLock::new(Box::new(move || client)), url: url.into() }
    }

    /// Builds the client with `build` at its first use.
    pub fn lazy(build: impl FnOnce() -> Client + Send + 'static, url: impl Into<String>) -> Self {
        SqsQueue { client: LazyLock::new(Box::new(build)), url: url.into() }
    }

    async fn send_batch(&self, batch: &[Work]) -> Result<(), QueueError> {
        let mut entries = Vec::with_capacity(batch.len());
        for (i, work) in batch.iter().enumerate() {
            let body = serde_json::to_string(work).map_err(|e| QueueError(e.to_string()))?;
            let entry = SendMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .message_body(body)
                .build()
                .map_err(|e| QueueError(e.to_string()))?;
            entries.push(entry);
        }
        let sent = self
            .client
            .send_message_batch()
            .queue_url(&self.url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| QueueError(crate::describe_sdk_error(&e)))?;
        // A batch can half succeed: the failed entries are sent once more, one by one.
        for failed in sent.failed() {
            let index: usize = failed.id().parse().map_err(|_| QueueError("an unknown batch entry failed".into()))?;
            let body = serde_json::to_string(&batch[index]).map_err(|e| QueueError(e.to_string()))?;
            self.client
                .send_message()
                .queue_url(&self.url)
                .message_body(body)
                .send()
                .await
                .map_err(|e| QueueError(crate::describe_sdk_error(&e)))?;
        }
        Ok(())
    }
}

#[async_trait]
impl WorkQueue for SqsQueue {
    async fn send(&self, work: &[Work]) -> Result<(), QueueError> {
        for group in work.chunks(BATCH * IN_FLIGHT) {
            try_join_all(group.chunks(BATCH).map(|batch| self.send_batch(batch))).await?;
        }
        Ok(())
    }
}
