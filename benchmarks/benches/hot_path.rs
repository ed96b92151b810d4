//! The receiver's hot path for the 14.5 KB signed push fixture — verify, parse, normalize and
//! record (`domain::Intake::ingest`) on SQLite and in memory — against its floor: HMAC-SHA256
//! of the same bytes with a constant-time compare, plus a `serde_json` parse into a `Value`.
//! After the runs it prints each path as a ratio to the floor (criterion's own estimates).
//!
//! `cargo bench -p benchmarks --bench hot_path` (CI: `-- --quick`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use criterion::Criterion;
use domain::Backends;
use domain::secrets::{Secret, SecretError, SecretStore};
use domain::store::{MemoryStore, StateStore};
use domain::webhook::{DeliveryHeaders, Flavor};
use hmac::{Hmac, Mac};
use local_adapters::SqliteStore;
use local_stack::demo::{self, DEMO_ID, DEMO_WEBHOOK_SECRET};
use serde_json::Value;
use sha2::Sha256;
use std::time::Duration;

const FIXTURE: &str = "cloud/jenkins-bbs__signed_payload.json";

/// Secrets held in memory: on AWS the adapter caches a secret for minutes, so the hot path
/// never waits for Secrets Manager either.
#[derive(Default)]
struct CachedSecrets(Mutex<HashMap<String, Secret>>);

#[async_trait]
impl SecretStore for CachedSecrets {
    async fn get(&self, name: &str) -> Result<Option<Secret>, SecretError> {
        Ok(self.0.lock().expect("lock").get(name).cloned())
    }
    async fn put(&self, name: &str, value: &Secret) -> Result<(), SecretError> {
        self.0.lock().expect("lock").insert(name.to_owned(), value.clone());
        Ok(())
    }
    async fn delete(&self, name: &str) -> Result<(), SecretError> {
        self.0.lock().expect("lock").remove(name);
        Ok(())
    }
}

fn fixture() -> Vec<u8> {
    let dir = std::env::var_os("BITBUCKET_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/bitbucket-fixtures"));
    std::fs::read(dir.join(FIXTURE)).expect("the fixtures live in ../shared beside the repository")
}

fn main() {
    let body = fixture();
    let signature = domain::signature::sign(DEMO_WEBHOOK_SECRET.as_bytes(), &body);
    let digest = hex::decode(signature.trim_start_matches("sha256=")).expect("hex digest");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let state_dir = std::env::temp_dir().join(format!("hot-path-{}", std::process::id()));
    std::fs::create_dir_all(&state_dir).expect("temp dir");
    let stores: [(&str, Arc<dyn StateStore>); 2] = [
        ("memory", Arc::new(MemoryStore::new())),
        ("sqlite", Arc::new(SqliteStore::open(&state_dir.join("state.sqlite3")).expect("sqlite"))),
    ];

    let mut criterion = Criterion::default().configure_from_args();
    let mut group = criterion.benchmark_group("hot_path");
    group.throughput(criterion::Throughput::Bytes(body.len() as u64));
    group.bench_function("floor_hmac_serde_json", |b| {
        b.iter(|| {
            let mut mac = Hmac::<Sha256>::new_from_slice(DEMO_WEBHOOK_SECRET.as_bytes()).expect("any key length");
            mac.update(&body);
            mac.verify_slice(&digest).expect("the fixture's signature");
            serde_json::from_slice::<Value>(&body).expect("JSON")
        })
    });
    let deliveries = AtomicU64::new(0);
    for (name, store) in stores {
        let backends = Backends { store, secrets: Arc::new(CachedSecrets::default()) };
        runtime.block_on(demo::seed(&backends, "http://127.0.0.1:9/2.0", "bench")).expect("seed");
        // As a warm Lambda runs it: integration reads cached for the default 10 s.
        let intake = domain::Intake::new(backends.clone(), chrono::Duration::days(30), Duration::from_secs(10));
        group.bench_function(format!("receiver_{name}"), |b| {
            b.to_async(&runtime).iter(|| async {
                // A new delivery id each time: every iteration records, none is a duplicate.
                let headers = DeliveryHeaders {
                    event_key: Some("repo:push".into()),
                    delivery_id: Some(format!("bench-{}", deliveries.fetch_add(1, Ordering::Relaxed))),
                    hook_uuid: None,
                    attempt: Some(1),
                    signature: Some(signature.clone()),
                    flavor_hint: Some(Flavor::Cloud),
                };
                let outcome = intake.ingest(DEMO_ID, &headers, &body).await.expect("recorded");
                assert!(matches!(outcome, domain::Ingested::Recorded(_)));
            })
        });
    }
    group.finish();
    criterion.final_summary();
    let _ = std::fs::remove_dir_all(&state_dir);
    print_ratios();
}

/// Criterion's point estimate of the mean, from its own report files.
fn mean_ns(bench: &str) -> Option<f64> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let path = target.join("criterion/hot_path").join(bench).join("new/estimates.json");
    let estimates: Value = serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    estimates.pointer("/mean/point_estimate")?.as_f64()
}

fn print_ratios() {
    let Some(floor) = mean_ns("floor_hmac_serde_json") else { return };
    println!("\n| path | mean | × floor |\n|---|---:|---:|");
    for bench in ["floor_hmac_serde_json", "receiver_memory", "receiver_sqlite"] {
        if let Some(mean) = mean_ns(bench) {
            println!("| {bench} | {:.1} µs | {:.2} |", mean / 1e3, mean / floor);
        }
    }
}
