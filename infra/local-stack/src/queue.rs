//! The in-process work queue: what the SQS queues and their Lambda mappings are on AWS. A
//! schedule's run enqueues one message per integration; up to `invocations` batches of up to
//! [`BATCH`] messages are worked on at once, each through the same handler a Lambda uses
//! (`entry::lambda::on_queue`, [`QUEUE_CONCURRENCY`] messages of a batch at a time) — so the
//! concurrency bound is the template's (`QueueConcurrency` × `QUEUE_CONCURRENCY`).
//!
//! Like SQS: a message its work failed in a way worth retrying comes back (at most
//! [`MAX_RECEIVES`] times, the template's `maxReceiveCount`; then it is logged as dead-lettered).
//! Unlike a standard queue it never holds an integration twice: a cycle that finds one still
//! queued from the last leaves it there.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use domain::fanout::{QueueError, Work, WorkQueue};
use entry::lambda::{QUEUE_CONCURRENCY, QueueMessage, QueueWork, on_queue};
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio::task::JoinHandle;

/// Messages handed to one "invocation", as the template's mappings' `BatchSize`.
pub const BATCH: usize = 10;
/// Deliveries of a message before it is dead-lettered, as the template's `maxReceiveCount`.
pub const MAX_RECEIVES: u32 = 3;

struct Pending {
    work: Work,
    receives: u32,
}

#[derive(Default)]
struct State {
    queued: HashSet<String>,
    /// Messages queued or being worked on.
    outstanding: usize,
    dead_lettered: u64,
}

/// One job's queue.
pub struct LocalQueue {
    sender: mpsc::UnboundedSender<Pending>,
    state: Mutex<State>,
    idle: Notify,
    sent: AtomicU64,
    /// "Invocations" handled and their summed duration in µs (what Lambda bills).
    invocations: AtomicU64,
    busy_micros: AtomicU64,
}

#[async_trait]
impl WorkQueue for LocalQueue {
    async fn send(&self, work: &[Work]) -> Result<(), QueueError> {
        for w in work {
            {
                let mut state = self.state.lock().expect("lock");
                if !state.queued.insert(w.integration_id.clone()) {
                    continue;
                }
                state.outstanding += 1;
            }
            self.sent.fetch_add(1, Ordering::Relaxed);
            self.sender
                .send(Pending { work: w.clone(), receives: 0 })
                .map_err(|_| QueueError("the local queue's consumer stopped".into()))?;
        }
        Ok(())
    }
}

impl LocalQueue {
    /// A queue and its consumer: batches of up to [`BATCH`], `invocations` at once, each message
    /// through `work`.
    pub fn spawn(work: QueueWork, invocations: usize) -> (Arc<LocalQueue>, JoinHandle<()>) {
        let (sender, mut receiver) = mpsc::unbounded_channel::<Pending>();
        let queue = Arc::new(LocalQueue {
            sender,
            state: Mutex::new(State::default()),
            idle: Notify::new(),
            sent: AtomicU64::new(0),
            invocations: AtomicU64::new(0),
            busy_micros: AtomicU64::new(0),
        });
        let consumer = queue.clone();
        let task = tokio::spawn(async move {
            let slots = Arc::new(Semaphore::new(invocations.max(1)));
            let ids = AtomicU64::new(0);
            loop {
                let Ok(slot) = slots.clone().acquire_owned().await else { return };
                let Some(first) = receiver.recv().await else { return };
                let mut batch = vec![first];
                while batch.len() < BATCH {
                    match receiver.try_recv() {
                        Ok(next) => batch.push(next),
                        Err(_) => break,
                    }
                }
                let (queue, work) = (consumer.clone(), work.clone());
                let first_id = ids.fetch_add(batch.len() as u64, Ordering::Relaxed);
                tokio::spawn(async move {
                    queue.invoke(&work, batch, first_id).await;
                    drop(slot);
                });
            }
        });
        (queue, task)
    }

    /// One "invocation": the batch through the Lambda handler; the messages it answers as
    /// failed come back, until their receives run out.
    async fn invoke(&self, work: &QueueWork, batch: Vec<Pending>, first_id: u64) {
        let mut by_id = HashMap::new();
        let messages: Vec<QueueMessage> = batch
            .into_iter()
            .enumerate()
            .map(|(i, mut pending)| {
                pending.receives += 1;
                let id = format!("local-{}", first_id + i as u64);
                let message = QueueMessage {
                    id: id.clone(),
                    body: serde_json::to_string(&pending.work).expect("work serializes"),
                    receive_count: pending.receives,
                };
                by_id.insert(id, pending);
                message
            })
            .collect();
        let started = std::time::Instant::now();
        let answer = on_queue(work, messages, QUEUE_CONCURRENCY).await;
        self.invocations.fetch_add(1, Ordering::Relaxed);
        self.busy_micros.fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        let failed: HashSet<&str> = answer["batchItemFailures"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| f["itemIdentifier"].as_str())
            .collect();
        for (id, pending) in by_id {
            let integration = pending.work.integration_id.clone();
            if failed.contains(id.as_str()) {
                if pending.receives < MAX_RECEIVES {
                    let job = pending.work.job;
                    match self.sender.send(pending) {
                        Ok(()) => continue,
                        Err(_) => tracing::error!(integration, job = job.as_str(), "the local queue stopped"),
                    }
                } else {
                    tracing::error!(
                        integration,
                        job = pending.work.job.as_str(),
                        "work failed on every delivery: dead-lettered"
                    );
                    self.state.lock().expect("lock").dead_lettered += 1;
                }
            }
            self.done(&integration);
        }
    }

    fn done(&self, integration_id: &str) {
        let mut state = self.state.lock().expect("lock");
        state.queued.remove(integration_id);
        state.outstanding -= 1;
        if state.outstanding == 0 {
            self.idle.notify_waiters();
        }
    }

    /// Waits until every message sent has been worked on.
    pub async fn idle(&self) {
        loop {
            let notified = self.idle.notified();
            if self.state.lock().expect("lock").outstanding == 0 {
                return;
            }
            notified.await;
        }
    }

    /// Messages sent so far (each a `SendMessage` entry on SQS).
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Batches worked on ("invocations") and their summed duration.
    pub fn invocations(&self) -> (u64, std::time::Duration) {
        let busy = std::time::Duration::from_micros(self.busy_micros.load(Ordering::Relaxed));
        (self.invocations.load(Ordering::Relaxed), busy)
    }

    /// Messages given up on after [`MAX_RECEIVES`].
    pub fn dead_lettered(&self) -> u64 {
        self.state.lock().expect("lock").dead_lettered
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    use domain::fanout::Job;

    use super::*;

    /// The template's bound: `QueueConcurrency` batches at once, `QUEUE_CONCURRENCY` messages of
    /// a batch at once; a message whose work asks for a retry comes back until its receives run out.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn work_runs_with_the_templates_bounds_and_failed_work_comes_back() {
        let (running, peak, attempts) =
            (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (r, p, a) = (running.clone(), peak.clone(), attempts.clone());
        let work = entry::lambda::queue_work(move |w: Work| {
            let (r, p, a) = (r.clone(), p.clone(), a.clone());
            async move {
                let now = r.fetch_add(1, Ordering::SeqCst) + 1;
                p.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(30)).await;
                r.fetch_sub(1, Ordering::SeqCst);
                if w.integration_id == "flaky" {
                    a.fetch_add(1, Ordering::SeqCst);
                    return Err(domain::Error::Retry("not yet".into()));
                }
                Ok(serde_json::json!({}))
            }
        });
        let (queue, consumer) = LocalQueue::spawn(work, 2);
        let mut batch: Vec<Work> =
            (0..60).map(|i| Work { job: Job::Poll, integration_id: format!("i-{i:02}"), cycle: 1 }).collect();
        batch.push(Work { job: Job::Poll, integration_id: "flaky".into(), cycle: 1 });
        queue.send(&batch).await.unwrap();
        queue.send(&batch[..10]).await.unwrap(); // still queued: not queued twice
        tokio::time::timeout(Duration::from_secs(30), queue.idle()).await.expect("the queue is worked off");
        assert_eq!(peak.load(Ordering::SeqCst), 2 * QUEUE_CONCURRENCY, "2 invocations × {QUEUE_CONCURRENCY} at once");
        assert_eq!(queue.sent(), 61);
        assert_eq!((attempts.load(Ordering::SeqCst), queue.dead_lettered()), (MAX_RECEIVES as usize, 1));
        consumer.abort();
    }
}
