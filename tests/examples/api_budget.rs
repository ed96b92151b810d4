//! Counts the Bitbucket requests each operation costs, as the sandbox sees them, on a fresh
//! local stack (SQLite state, sandbox Bitbucket over real HTTP). Prints a Markdown table for
//! BENCHMARKS.md. Run: `cargo run -p cross-function-tests --example api_budget`.

use bitbucket_sandbox::Sandbox;
use cross_function_tests::stack::{Stack, stack};
use serde_json::{Value, json};

/// Runs `op` and returns what it answered and the sandbox requests it made (`METHOD path`).
async fn counted<F: Future<Output = (u16, Value)>>(sandbox: &Sandbox, op: F) -> (u16, Vec<String>) {
    sandbox.clear_requests();
    let (status, _) = op.await;
    let requests = sandbox.requests().iter().map(|r| format!("{} {}", r.method, short(&r.path))).collect();
    (status, requests)
}

fn short(path: &str) -> String {
    path.replace("/2.0/repositories/sandbox/demo", "").replace("/rest/api/latest/projects/SANDBOX/repos/demo", "")
}

fn row(operation: &str, status: u16, requests: &[String]) -> String {
    let writes = requests.iter().filter(|r| !r.starts_with("GET ")).count();
    format!("| {operation} | {status} | {} | {writes} | {} |", requests.len(), requests.join(", "))
}

async fn snapshot(s: &Stack, integration: &str, version: u64) -> (u16, Value) {
    let body = json!({"document": {"info": {"name": "Orders"}, "version": version}});
    s.post_json(&format!("/integrations/{integration}/backup-targets/bench/snapshots"), body).await
}

#[tokio::main]
async fn main() {
    let s = stack("api-budget").await;
    let sandbox = &s.running.sandbox;
    let mut rows = vec![
        "| operation | answer | Bitbucket requests | of which writes | requests |".to_owned(),
        "|---|---|---|---|---|".to_owned(),
    ];

    let (status, _) =
        s.put("/integrations/sandbox/backup-targets/bench", json!({"filename": "b.json", "branch": "main"})).await;
    assert_eq!(status, 201);
    let (st, r) = counted(sandbox, snapshot(&s, "sandbox", 1)).await;
    rows.push(row("Cloud backup, changed", st, &r));
    let (st, r) = counted(sandbox, snapshot(&s, "sandbox", 1)).await;
    rows.push(row("Cloud backup, unchanged", st, &r));
    let (st, r) = counted(sandbox, snapshot(&s, "sandbox", 2)).await;
    rows.push(row("Cloud backup, changed again", st, &r));

    let dc = s.data_center_integration(json!({})).await;
    s.put(&format!("/integrations/{dc}/backup-targets/bench"), json!({"filename": "dc.json", "branch": "main"})).await;
    let (st, r) = counted(sandbox, snapshot(&s, &dc, 1)).await;
    rows.push(row("Data Center backup, changed", st, &r));
    let (st, r) = counted(sandbox, snapshot(&s, &dc, 1)).await;
    rows.push(row("Data Center backup, unchanged", st, &r));

    for _ in 0..3 {
        let (status, run) = s.post_json("/integrations/sandbox/pipelines", json!({"branch": "main"})).await;
        assert_eq!(status, 201);
        sandbox.complete_pipeline(run["uuid"].as_str().unwrap(), "SUCCESSFUL", None).unwrap();
    }
    // Let the commit-status webhooks and the worker's refreshes finish before counting.
    sandbox.settle().await;
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let (st, r) = counted(sandbox, s.post("/integrations/sandbox/pipelines/refresh")).await;
    rows.push(row("Pipelines poll after 3 runs completed (webhooks applied)", st, &r));
    let (st, r) = counted(sandbox, s.post("/integrations/sandbox/pipelines/refresh")).await;
    rows.push(row("Pipelines poll, steady state", st, &r));

    // Reconciliation of 250 branches (the 3 seeded plus 247 created without webhooks).
    let names: Vec<String> = (0..247).map(|i| format!("bench/{i:03}")).collect();
    sandbox.seed_branches(&names, "main").unwrap();
    let (st, r) = counted(sandbox, s.post_json("/integrations/sandbox/prune", json!({"mode": "environments"}))).await;
    rows.push(row("Reconcile 250 branches into environments", st, &r));
    let (st, r) = counted(
        sandbox,
        s.post_json("/integrations/sandbox/prune", json!({"mode": "stale-branches", "dry_run": true})),
    )
    .await;
    rows.push(row("Stale-branch plan (dry run), 250 branches", st, &r));

    println!("{}", rows.join("\n"));
    s.stop().await;
}
