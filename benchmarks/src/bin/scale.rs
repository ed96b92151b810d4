//! Operations at scale (BENCHMARKS.md, "Scale"): a poll cycle and a reconcile cycle over N
//! integrations sharing N/100 credentials, on the local stack (SQLite state, the in-process
//! queues with the template's concurrency) against the sandbox Bitbucket with injected latency
//! and Cloud's 1,000 requests an hour per user; a simulated hour of schedules for the requests
//! per credential against the budget; the receiver's throughput and latency at several
//! concurrencies; and a cost model from the counted requests.
//!
//!   scale                        # every figure, each size in its own process (peak memory)
//!   scale --cycles N             # one size's cycles, as one JSON line
//!   scale --hour N               # a simulated hour of schedules, as one JSON line
//!   scale --receiver C           # the receiver at concurrency C, as one JSON line
//!
//! Flags: `--latency-ms` (100), `--per-credential` (100), `--requests` (receiver, 4000).

use std::collections::HashMap;
use std::process::Command;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bitbucket_sandbox::{Fault, FaultKind};
use chrono::{DateTime, Utc};
use domain::Backends;
use domain::fanout::Job;
use domain::secrets::{Secret, SecretError, SecretStore};
use domain::store::{Condition, Item, Key, Page, Query, StateStore, StoreError, Write};
use local_stack::{BudgetClock, Config, Running};
use serde_json::{Value, json};

/// Counts what the state table would bill: read and write request units, as DynamoDB on-demand
/// counts them (a read: 4 KB units, eventually consistent halved; a write: 1 KB units).
#[derive(Default)]
struct Counts {
    reads: AtomicU64,
    read_units_x2: AtomicU64,
    writes: AtomicU64,
    write_units: AtomicU64,
}

impl Counts {
    fn snapshot(&self) -> (u64, f64, u64, u64) {
        (
            self.reads.load(Ordering::Relaxed),
            self.read_units_x2.load(Ordering::Relaxed) as f64 / 2.0,
            self.writes.load(Ordering::Relaxed),
            self.write_units.load(Ordering::Relaxed),
        )
    }
}

fn size(item: &Item) -> u64 {
    (serde_json::to_vec(&item.attrs).map(|v| v.len()).unwrap_or(0) + item.key.pk.len() + item.key.sk.len() + 64) as u64
}

struct Counting {
    inner: Arc<dyn StateStore>,
    counts: Arc<Counts>,
}

impl Counting {
    fn read(&self, bytes: u64) {
        self.counts.reads.fetch_add(1, Ordering::Relaxed);
        // Strongly consistent reads cost a unit per 4 KB; the adapter's gets are consistent.
        self.counts.read_units_x2.fetch_add(2 * bytes.div_ceil(4096).max(1), Ordering::Relaxed);
    }
    /// One item written; `factor` 2 inside a transaction (DynamoDB bills each item twice there).
    fn write(&self, bytes: u64, factor: u64) {
        self.counts.writes.fetch_add(1, Ordering::Relaxed);
        self.counts.write_units.fetch_add(factor * bytes.div_ceil(1024).max(1), Ordering::Relaxed);
    }
}

#[async_trait]
impl StateStore for Counting {
    async fn get(&self, key: &Key) -> Result<Option<Item>, StoreError> {
        let got = self.inner.get(key).await?;
        self.read(got.as_ref().map_or(0, size));
        Ok(got)
    }
    async fn put(&self, item: Item, condition: Condition) -> Result<u64, StoreError> {
        self.write(size(&item), 1);
        self.inner.put(item, condition).await
    }
    async fn delete(&self, key: &Key, condition: Condition) -> Result<(), StoreError> {
        self.write(0, 1);
        self.inner.delete(key, condition).await
    }
    async fn write_all(&self, writes: Vec<Write>) -> Result<Vec<u64>, StoreError> {
        for write in &writes {
            self.write(if let Write::Put(item, _) = write { size(item) } else { 0 }, 2);
        }
        self.inner.write_all(writes).await
    }
    async fn query(&self, query: &Query) -> Result<Page, StoreError> {
        let page = self.inner.query(query).await?;
        self.read(page.items.iter().map(size).sum());
        Ok(page)
    }
}

/// Secrets in memory, as a warm Lambda's cache serves them (the local file store reads its
/// whole file per read, which would measure nothing of the system at 10,000 integrations).
#[derive(Default)]
struct MemorySecrets(Mutex<HashMap<String, Secret>>);

#[async_trait]
impl SecretStore for MemorySecrets {
    async fn get(&self, name: &str) -> Result<Option<Secret>, SecretError> {
        Ok(self.0.lock().unwrap().get(name).cloned())
    }
    async fn put(&self, name: &str, value: &Secret) -> Result<(), SecretError> {
        self.0.lock().unwrap().insert(name.to_owned(), value.clone());
        Ok(())
    }
    async fn delete(&self, name: &str) -> Result<(), SecretError> {
        self.0.lock().unwrap().remove(name);
        Ok(())
    }
}

#[derive(Clone, Copy)]
struct Args {
    latency_ms: u64,
    per_credential: usize,
    requests: usize,
}

fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    kb / 1000.0
}

/// A simulated clock: real time plus an offset the harness moves forward.
#[derive(Clone)]
struct SimClock {
    offset_secs: Arc<AtomicI64>,
}

impl SimClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now() + chrono::Duration::seconds(self.offset_secs.load(Ordering::Relaxed))
    }
}

struct Bench {
    running: Running,
    counts: Arc<Counts>,
    clock: SimClock,
    _dir: tempfile::TempDir,
}

async fn bench(integrations: usize, args: &Args, worker: bool) -> Bench {
    let dir = tempfile::tempdir().expect("temp dir");
    let sqlite = local_adapters::backends(dir.path()).expect("SQLite opens");
    let counts = Arc::new(Counts::default());
    let store: Arc<dyn StateStore> = Arc::new(Counting { inner: sqlite.store, counts: counts.clone() });
    let backends = Backends { store, secrets: Arc::new(MemorySecrets::default()) };
    // The budget's clock starts at the top of an hour, so its windows are the simulated hours.
    let now = Utc::now().timestamp();
    let clock = SimClock { offset_secs: Arc::new(AtomicI64::new(3600 - now.rem_euclid(3600))) };
    let budget_clock = {
        let clock = clock.clone();
        BudgetClock(Arc::new(move || clock.now()))
    };
    let config = Config { worker, budget_clock: Some(budget_clock), ..Config::for_tests(dir.path().to_path_buf()) };
    let running = local_stack::start_with(config, backends, false).await.expect("the local stack starts");
    // The sandbox's clock (its rate limit's rolling hour) moves with the budget's.
    running.sandbox.advance_clock(chrono::Duration::seconds(clock.offset_secs.load(Ordering::Relaxed)));
    if integrations > 0 {
        let credentials = integrations.div_ceil(args.per_credential);
        let base = format!("{}/sandbox/bitbucket/2.0", running.base_url);
        let backends = running.backends.clone();
        local_stack::demo::seed_fleet(&backends, &running.sandbox, &base, "local", integrations, credentials)
            .await
            .expect("the fleet is seeded");
        // Only the fleet: the seeded sandbox integration is archived out of the schedules.
        let _ = reqwest::Client::new()
            .post(format!("{}/integrations/sandbox/archive", running.base_url))
            .bearer_auth(running.seeded.api_token.expose())
            .send()
            .await;
        running.sandbox.set_rate_limit(Some(1000));
        running.sandbox.inject_fault(Fault {
            method: None,
            path_contains: "/2.0/".into(),
            kind: FaultKind::Latency { millis: args.latency_ms },
            times: None,
        });
    }
    Bench { running, counts, clock, _dir: dir }
}

impl Bench {
    fn advance(&self, by: Duration) {
        self.clock.offset_secs.fetch_add(by.as_secs() as i64, Ordering::Relaxed);
        self.running.sandbox.advance_clock(chrono::Duration::from_std(by).unwrap());
    }

    /// One schedule's run and its queue worked off: wall time, the sandbox's answers, what the
    /// store was asked, the queue's invocations.
    async fn cycle(&self, job: Job) -> Value {
        let (queue, enqueue) = match job {
            Job::Poll => (self.running.poll_queue.clone(), "poll"),
            Job::Prune => (self.running.prune_queue.clone(), "prune"),
        };
        self.running.sandbox.clear_requests();
        self.running.sandbox.reset_rate_counts();
        let (invocations_before, busy_before) = queue.invocations();
        let sent_before = queue.sent();
        let before = self.counts.snapshot();
        let started = Instant::now();
        let enqueued = match job {
            Job::Poll => status_poller::on_schedule(&self.running.scheduled_pipelines, queue.as_ref()).await,
            Job::Prune => branch_pruner::on_schedule(&self.running.scheduled_pruner, queue.as_ref()).await,
        }
        .expect("the schedule enqueues");
        let enqueue_seconds = started.elapsed().as_secs_f64();
        queue.idle().await;
        let wall = started.elapsed().as_secs_f64();
        let after = self.counts.snapshot();
        let requests = self.running.sandbox.requests();
        let served = match job {
            Job::Poll => requests.iter().filter(|r| r.method == "GET" && r.path.ends_with("/pipelines/")).count(),
            Job::Prune => requests.iter().filter(|r| r.path.ends_with("/refs/branches")).count(),
        };
        let per_credential = self.running.sandbox.requests_per_credential();
        let max_per_credential = per_credential.values().copied().max().unwrap_or(0);
        let (invocations, busy) = queue.invocations();
        json!({
            "job": enqueue,
            "enqueued": enqueued["enqueued"],
            "served": served,
            "deferred": enqueued["enqueued"].as_u64().unwrap_or(0) as usize - served.min(enqueued["enqueued"].as_u64().unwrap_or(0) as usize),
            "wall_seconds": wall,
            "enqueue_seconds": enqueue_seconds,
            "bitbucket_requests": requests.len(),
            "status_429": requests.iter().filter(|r| r.status == 429).count(),
            "credentials": per_credential.len(),
            "max_requests_per_credential": max_per_credential,
            "store_reads": after.0 - before.0,
            "store_read_units": after.1 - before.1,
            "store_writes": after.2 - before.2,
            "store_write_units": after.3 - before.3,
            "messages": queue.sent() - sent_before,
            "invocations": invocations - invocations_before,
            "invocation_seconds": (busy - busy_before).as_secs_f64(),
        })
    }
}

/// One size: a poll cycle at the top of a fresh window, a reconcile cycle at the top of the next.
async fn cycles(integrations: usize, args: &Args) -> Value {
    let b = bench(integrations, args, false).await;
    let rss_seeded = peak_rss_mb();
    let poll = b.cycle(Job::Poll).await;
    b.advance(Duration::from_secs(3600));
    let prune = b.cycle(Job::Prune).await;
    let out = json!({"integrations": integrations, "credentials": integrations.div_ceil(args.per_credential),
        "poll": poll, "reconcile": prune, "peak_rss_mb_after_seeding": rss_seeded, "peak_rss_mb": peak_rss_mb()});
    b.running.stop().await.expect("the stack stops");
    out
}

/// A simulated hour: the reconcile at its top, then a poll every 5 minutes.
async fn hour(integrations: usize, args: &Args) -> Value {
    let b = bench(integrations, args, false).await;
    let mut total: HashMap<String, u64> = HashMap::new();
    let mut cycles = Vec::new();
    let (mut polls_served, mut polls_enqueued, mut reconciled) = (0, 0, 0);
    for k in 0..12 {
        if k == 0 {
            let prune = b.cycle(Job::Prune).await;
            reconciled += prune["served"].as_u64().unwrap_or(0);
            for (c, n) in b.running.sandbox.requests_per_credential() {
                *total.entry(c).or_default() += n;
            }
            cycles.push(prune);
        }
        let poll = b.cycle(Job::Poll).await;
        polls_served += poll["served"].as_u64().unwrap_or(0);
        polls_enqueued += poll["enqueued"].as_u64().unwrap_or(0);
        for (c, n) in b.running.sandbox.requests_per_credential() {
            *total.entry(c).or_default() += n;
        }
        cycles.push(poll);
        b.advance(Duration::from_secs(300));
    }
    let per_credential: Vec<u64> = total.values().copied().collect();
    let out = json!({
        "integrations": integrations,
        "credentials": per_credential.len(),
        "requests_per_credential_hour_max": per_credential.iter().max(),
        "requests_per_credential_hour_min": per_credential.iter().min(),
        "polls_enqueued": polls_enqueued, "polls_served": polls_served, "reconciled": reconciled,
        "status_429": cycles.iter().map(|c| c["status_429"].as_u64().unwrap_or(0)).sum::<u64>(),
        "cycles": cycles,
    });
    b.running.stop().await.expect("the stack stops");
    out
}

/// The receiver: `requests` signed deliveries at `concurrency`; throughput and latency.
async fn receiver(concurrency: usize, args: &Args) -> Value {
    let b = bench(0, args, false).await;
    let body = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../events/webhooks/cloud-push.json")).unwrap();
    let secret = b.running.seeded.sandbox_webhook_secret.expose().as_bytes().to_vec();
    let signature = domain::signature::sign(&secret, &body);
    let url = format!("{}/webhooks/sandbox", b.running.base_url);
    let http = reqwest::Client::builder().pool_max_idle_per_host(concurrency).build().unwrap();
    let next = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(args.requests)));
    let before = b.counts.snapshot();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (http, url, body, signature, next, latencies) =
            (http.clone(), url.clone(), body.clone(), signature.clone(), next.clone(), latencies.clone());
        let total = args.requests as u64;
        tasks.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= total {
                    return;
                }
                let sent = Instant::now();
                let response = http
                    .post(&url)
                    .header("Content-Type", "application/json")
                    .header("X-Event-Key", "repo:push")
                    .header("X-Request-UUID", format!("load-{n}"))
                    .header("X-Hub-Signature", &signature)
                    .body(body.clone())
                    .send()
                    .await
                    .expect("the receiver answers");
                assert_eq!(response.status().as_u16(), 202);
                latencies.lock().unwrap().push(sent.elapsed());
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let wall = started.elapsed().as_secs_f64();
    let after = b.counts.snapshot();
    let mut latencies = latencies.lock().unwrap().clone();
    latencies.sort();
    let at =
        |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)].as_secs_f64() * 1000.0;
    let out = json!({
        "concurrency": concurrency, "requests": args.requests, "wall_seconds": wall,
        "per_second": args.requests as f64 / wall, "p50_ms": at(0.50), "p99_ms": at(0.99),
        "store_reads_per_delivery": (after.0 - before.0) as f64 / args.requests as f64,
        "store_read_units_per_delivery": (after.1 - before.1) / args.requests as f64,
        "store_writes_per_delivery": (after.2 - before.2) as f64 / args.requests as f64,
        "store_write_units_per_delivery": (after.3 - before.3) as f64 / args.requests as f64,
        "peak_rss_mb": peak_rss_mb(),
    });
    b.running.stop().await.expect("the stack stops");
    out
}

/// What each delivery costs the consumers: the worker on, `n` pushes to feature branches.
async fn consumers(n: usize, args: &Args) -> Value {
    let b = bench(0, &Args { latency_ms: 0, ..*args }, true).await;
    let secret = b.running.seeded.sandbox_webhook_secret.expose().as_bytes().to_vec();
    let http = reqwest::Client::new();
    let before = b.counts.snapshot();
    let sandbox_before = b.running.sandbox.requests().len();
    let started = Instant::now();
    for i in 0..n {
        let body = json!({"push": {"changes": [{"new": {"type": "branch", "name": format!("load/{}", i % 20),
            "target": {"type": "commit", "hash": format!("{:040x}", i + 1)}}, "old": null,
            "created": true, "closed": false, "forced": false, "truncated": false}]},
            "repository": {"full_name": "sandbox/demo"}});
        let body = serde_json::to_vec(&body).unwrap();
        let response = http
            .post(format!("{}/webhooks/sandbox", b.running.base_url))
            .header("Content-Type", "application/json")
            .header("X-Event-Key", "repo:push")
            .header("X-Request-UUID", format!("consumer-{i}"))
            .header("X-Hub-Signature", domain::signature::sign(&secret, &body))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 202);
    }
    // Until every delivery is marked processed by the worker.
    let store = b.running.backends.store.clone();
    for _ in 0..600 {
        let mut done = 0;
        for i in 0..n {
            if local_stack::is_processed(store.as_ref(), "sandbox", &format!("consumer-{i}")).await.unwrap_or(false) {
                done += 1;
            }
        }
        if done == n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let wall = started.elapsed().as_secs_f64();
    let after = b.counts.snapshot();
    let per = |a: f64| a / n as f64;
    let out = json!({
        "deliveries": n,
        "seconds_per_delivery": wall / n as f64,
        "bitbucket_requests_per_delivery": per((b.running.sandbox.requests().len() - sandbox_before) as f64),
        "store_reads_per_delivery": per((after.0 - before.0) as f64),
        "store_read_units_per_delivery": per(after.1 - before.1),
        "store_writes_per_delivery": per((after.2 - before.2) as f64),
        "store_write_units_per_delivery": per((after.3 - before.3) as f64),
        "note": "the local worker's reads and writes include its processed markers (FEED_MARKS), which Lambda does not write",
    });
    b.running.stop().await.expect("the stack stops");
    out
}

/// On-demand prices, us-east-1, as published in 2025 (arm64 Lambda; DynamoDB after the
/// November 2024 cut; SQS standard). Prices change: the counts are what the model rests on.
const LAMBDA_GB_SECOND: f64 = 0.000_013_333_4;
const LAMBDA_REQUEST: f64 = 0.20 / 1e6;
const DYNAMODB_WRITE_UNIT: f64 = 0.625 / 1e6;
const DYNAMODB_READ_UNIT: f64 = 0.125 / 1e6;
const SQS_REQUEST: f64 = 0.40 / 1e6;
/// Every function's memory (template.yaml Globals; branch-pruner has 256 MB).
const MEMORY_GB: f64 = 0.125;

/// A DynamoDB call as a Lambda waits for it (single-digit milliseconds in-region); the local
/// stack's SQLite answers in microseconds, so each counted call adds this much to a duration.
const DYNAMODB_CALL_SECONDS: f64 = 0.005;
/// The local worker's own reads and writes per delivery (its processed marker and the check of
/// it), which the Lambda consumers do not make.
const WORKER_MARKER_READS: f64 = 1.0;
const WORKER_MARKER_WRITES: f64 = 1.0;

/// The cost model from the measured counts: per million deliveries, and per 1,000 integrations
/// polled every 5 minutes for a month (730 hours).
fn cost(results: &Value) -> Value {
    let f = |v: &Value| v.as_f64().unwrap_or(0.0);
    // Deliveries: the receiver's invocation, then each consumer's (one record a batch: the worst
    // case, light traffic). Durations: the measured time plus the counted DynamoDB calls.
    let receiver = &results["receiver"][0];
    let consumers = &results["consumers"];
    let receiver_calls = f(&receiver["store_reads_per_delivery"]) + f(&receiver["store_writes_per_delivery"]);
    let consumer_reads = f(&consumers["store_reads_per_delivery"]) - WORKER_MARKER_READS;
    let consumer_writes = f(&consumers["store_writes_per_delivery"]) - WORKER_MARKER_WRITES;
    let per_delivery_seconds = f(&receiver["p50_ms"]) / 1000.0
        + receiver_calls * DYNAMODB_CALL_SECONDS
        + f(&consumers["seconds_per_delivery"])
        + (consumer_reads + consumer_writes) * DYNAMODB_CALL_SECONDS;
    let million = 1e6;
    let lambda_seconds = million * per_delivery_seconds;
    let invocations = million * 3.0;
    let read_units = million
        * (f(&receiver["store_read_units_per_delivery"]) + f(&consumers["store_read_units_per_delivery"])
            - WORKER_MARKER_READS);
    let write_units = million
        * (f(&receiver["store_write_units_per_delivery"]) + f(&consumers["store_write_units_per_delivery"])
            - WORKER_MARKER_WRITES);
    let deliveries = json!({
        "lambda_gb_seconds": lambda_seconds * MEMORY_GB, "lambda_invocations": invocations,
        "dynamodb_read_units": read_units, "dynamodb_write_units": write_units, "sqs_requests": 0,
        "usd": lambda_seconds * MEMORY_GB * LAMBDA_GB_SECOND + invocations * LAMBDA_REQUEST
            + read_units * DYNAMODB_READ_UNIT + write_units * DYNAMODB_WRITE_UNIT,
    });
    // Polls: the 1,000-integration cycle (every poll served), 12 an hour for 730 hours. The
    // messages of a batch run 5 at a time, so their DynamoDB calls add a fifth of their sum.
    let cycle = results["cycles"].as_array().into_iter().flatten().find(|c| c["integrations"] == 1000);
    let polls = match cycle {
        Some(c) => {
            let p = &c["poll"];
            let cycles = 12.0 * 730.0;
            let calls = f(&p["store_reads"]) + f(&p["store_writes"]);
            let per_cycle = f(&p["invocation_seconds"])
                + f(&p["enqueue_seconds"])
                + calls * DYNAMODB_CALL_SECONDS / entry::lambda::QUEUE_CONCURRENCY as f64;
            let seconds = cycles * per_cycle;
            let invocations = cycles * (f(&p["invocations"]) + 1.0);
            // SendMessageBatch per 10 messages; the mapping's ReceiveMessage and
            // DeleteMessageBatch per batch (its empty long polls are not counted).
            let sqs = cycles * (f(&p["messages"]) / 10.0 + 2.0 * f(&p["invocations"]));
            let reads = cycles * f(&p["store_read_units"]);
            let writes = cycles * f(&p["store_write_units"]);
            json!({
                "per": "1,000 integrations polled every 5 minutes, one month",
                "lambda_gb_seconds": seconds * MEMORY_GB, "lambda_invocations": invocations,
                "dynamodb_read_units": reads, "dynamodb_write_units": writes, "sqs_requests": sqs,
                "usd": seconds * MEMORY_GB * LAMBDA_GB_SECOND + invocations * LAMBDA_REQUEST
                    + reads * DYNAMODB_READ_UNIT + writes * DYNAMODB_WRITE_UNIT + sqs * SQS_REQUEST,
            })
        }
        None => Value::Null,
    };
    json!({"per_million_deliveries": deliveries, "polls": polls})
}

fn child(mode: &str, value: &str, args: &[String]) -> Value {
    let exe = std::env::current_exe().expect("own path");
    let mut command = Command::new(exe);
    command.arg(mode).arg(value);
    for name in ["--latency-ms", "--per-credential", "--requests"] {
        if let Some(v) = flag(args, name) {
            command.arg(name).arg(v);
        }
    }
    let output = command.output().expect("the child runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().rev().find(|l| l.starts_with('{')).unwrap_or_else(|| {
        panic!("{mode} {value}: no result\n{}", String::from_utf8_lossy(&output.stderr));
    });
    serde_json::from_str(line).expect("a JSON result")
}

fn main() {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let args = Args {
        latency_ms: flag(&raw, "--latency-ms").and_then(|v| v.parse().ok()).unwrap_or(100),
        per_credential: flag(&raw, "--per-credential").and_then(|v| v.parse().ok()).unwrap_or(100),
        requests: flag(&raw, "--requests").and_then(|v| v.parse().ok()).unwrap_or(4000),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let one = |name: &str| flag(&raw, name).and_then(|v| v.parse::<usize>().ok());
    if let Some(n) = one("--cycles") {
        println!("{}", runtime.block_on(cycles(n, &args)));
        return;
    }
    if let Some(n) = one("--hour") {
        println!("{}", runtime.block_on(hour(n, &args)));
        return;
    }
    if let Some(c) = one("--receiver") {
        println!("{}", runtime.block_on(receiver(c, &args)));
        return;
    }
    if let Some(n) = one("--consumers") {
        println!("{}", runtime.block_on(consumers(n, &args)));
        return;
    }
    let sizes = flag(&raw, "--sizes").unwrap_or_else(|| "100,1000,10000".into());
    let mut results = json!({"latency_ms": args.latency_ms, "per_credential": args.per_credential});
    let sizes: Vec<String> = sizes.split(',').map(str::to_owned).collect();
    results["cycles"] = sizes.iter().map(|n| child("--cycles", n, &raw)).collect();
    let hour_size = flag(&raw, "--hour-size").unwrap_or_else(|| "1000".into());
    results["hour"] = child("--hour", &hour_size, &raw);
    results["receiver"] = ["8", "32", "64"].iter().map(|c| child("--receiver", c, &raw)).collect();
    results["consumers"] = child("--consumers", "200", &raw);
    results["cost"] = cost(&results);
    println!("{}", serde_json::to_string_pretty(&results).unwrap());
}
