//! Scheduled work fanned out one message per integration: a schedule's run only lists the
//! integrations and enqueues a [`Work`] for each eligible one (on AWS an SQS queue, locally an
//! in-process queue); the consumers take them in batches with bounded concurrency, so no
//! invocation walks every integration and one slow integration holds up no other.
//!
//! The order rotates with each cycle ([`rotation`]): when a credential's rate budget defers the
//! last integrations of a cycle, the next cycle starts elsewhere, so none starves.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::context::IntegrationContext;
use crate::error::Error;
use crate::integration::Integration;
use crate::store::{Condition, StateStore, StoreError};
use crate::tables::{Record, SCHEDULE_CYCLES};

/// The scheduled jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Job {
    /// status-poller: the builds view of one Cloud integration.
    Poll,
    /// branch-pruner: reconciliation, then the stale-branch plan or cleanup.
    Prune,
}

impl Job {
    pub fn as_str(self) -> &'static str {
        match self {
            Job::Poll => "poll",
            Job::Prune => "prune",
        }
    }
}

/// One integration's share of one cycle of a schedule: the message body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Work {
    pub job: Job,
    pub integration_id: String,
    pub cycle: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("the work queue failed: {0}")]
pub struct QueueError(pub String);

impl From<QueueError> for Error {
    fn from(e: QueueError) -> Self {
        Error::Retry(e.to_string())
    }
}

/// The queue port: SQS on AWS, an in-process queue locally.
#[async_trait]
pub trait WorkQueue: Send + Sync {
    /// Sends every message, in the batches the queue takes.
    async fn send(&self, work: &[Work]) -> Result<(), QueueError>;
}

/// How many cycles a schedule has enqueued.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleCycle {
    pub cycle: u64,
}

impl Record for ScheduleCycle {
    const KIND: &'static str = "schedule_cycle";
}

/// The next cycle number of `job`'s schedule. Two runs racing may get the same number: only the
/// rotation depends on it.
pub async fn next_cycle(store: &dyn StateStore, job: Job) -> Result<u64, StoreError> {
    for _ in 0..3 {
        let (next, condition) = match SCHEDULE_CYCLES.get(store, "", &[job.as_str()]).await? {
            Some(known) => (known.record.cycle + 1, Condition::Version(known.version)),
            None => (1, Condition::Absent),
        };
        match SCHEDULE_CYCLES.put(store, "", &[job.as_str()], &ScheduleCycle { cycle: next }, condition).await {
            Ok(_) => return Ok(next),
            Err(StoreError::ConditionFailed { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(StoreError::Unavailable("the schedule's cycle keeps changing concurrently".into()))
}

/// 1/φ: successive multiples of it modulo 1 spread as evenly as any sequence can (the three-gap
/// theorem), so every position of the list comes near the front of the order regularly.
const GOLDEN: f64 = 0.618_033_988_749_894_9;

/// Where cycle `cycle` starts in a list of `len` integrations.
pub fn rotation(cycle: u64, len: usize) -> usize {
    if len == 0 {
        return 0;
    }
    let fraction = (cycle as f64 * GOLDEN).fract();
    ((fraction * len as f64) as usize).min(len - 1)
}

/// What a schedule's run enqueued.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Enqueued {
    pub job: Option<Job>,
    pub cycle: u64,
    pub enqueued: usize,
    /// Integrations the job does not apply to (archived, disconnected, not mirroring branches…).
    pub skipped: usize,
    /// The integration the order started with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first: Option<String>,
}

/// One message per integration `eligible` accepts, in id order rotated by the cycle.
pub async fn enqueue(
    ctx: &IntegrationContext,
    queue: &dyn WorkQueue,
    job: Job,
    eligible: impl Fn(&Integration) -> bool,
) -> Result<Enqueued, Error> {
    let all = ctx.list().await?;
    let total = all.len();
    let mut ids: Vec<String> = all.into_iter().filter(|i| eligible(i)).map(|i| i.id).collect();
    ids.sort();
    let cycle = next_cycle(ctx.store.as_ref(), job).await?;
    let start = rotation(cycle, ids.len());
    ids.rotate_left(start);
    let work: Vec<Work> = ids.iter().map(|id| Work { job, integration_id: id.clone(), cycle }).collect();
    queue.send(&work).await?;
    Ok(Enqueued {
        job: Some(job),
        cycle,
        enqueued: work.len(),
        skipped: total - work.len(),
        first: ids.first().cloned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    #[test]
    fn every_integration_comes_near_the_front() {
        // With 1,000 integrations of which each cycle serves only the first 10% (the rest
        // deferred by the budget), every one is served within a bounded number of cycles.
        let len = 1000;
        let mut last_served = vec![0u64; len];
        let mut longest_wait = 0;
        for cycle in 1..=200u64 {
            let start = rotation(cycle, len);
            for k in 0..len / 10 {
                let i = (start + k) % len;
                longest_wait = longest_wait.max(cycle - last_served[i]);
                last_served[i] = cycle;
            }
        }
        assert!(last_served.iter().all(|&c| c > 0), "every integration was served");
        assert!(longest_wait <= 25, "no integration waits long: {longest_wait} cycles");
        assert_eq!(rotation(7, 0), 0);
        assert!((0..100).all(|c| rotation(c, 3) < 3));
    }

    #[tokio::test]
    async fn cycles_count_up() {
        let store = MemoryStore::new();
        assert_eq!(next_cycle(&store, Job::Poll).await.unwrap(), 1);
        assert_eq!(next_cycle(&store, Job::Poll).await.unwrap(), 2);
        assert_eq!(next_cycle(&store, Job::Prune).await.unwrap(), 1);
        let work = Work { job: Job::Prune, integration_id: "a".into(), cycle: 3 };
        let json = serde_json::to_value(&work).unwrap();
        assert_eq!(json, serde_json::json!({"job": "prune", "integration_id": "a", "cycle": 3}));
    }
}
