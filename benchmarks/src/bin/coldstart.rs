//! Cold start, memory and size of every function's release binary next to the hello-world
//! floor, in one run. Each binary is started as Lambda starts it, against a local Runtime API
//! (`benchmarks::runtime_api`) and the AWS emulator seeded with the `demo` integration:
//!
//! - init: spawn → first `GET /invocation/next`;
//! - first and warm invoke: event handed over → response posted (the function's sample event);
//! - peak RSS: the process's `VmHWM` after the warm invokes;
//! - size: the stripped binary, and the arm64 `bootstrap.zip` when `cargo lambda build` made one.
//!
//! `make bench` builds and runs it (see BENCHMARKS.md). Options: `--runs N` cold starts per
//! binary (default 10), `--warm N` warm invokes per start (default 20), `--bin-dir DIR`
//! (default `target/release`), `--json FILE` to also write the figures as JSON.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use aws_adapters::DynamoStore;
use benchmarks::runtime_api::RuntimeApi;
use serde_json::{Value, json};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// (binary, sample event under `events/`); the floor first, with any HTTP event, then the
/// floor on the functions' current-thread runtime.
const SUBJECTS: [(&str, &str); 8] = [
    ("hello-floor", "integrations-api/list-integrations.json"),
    ("hello-floor-current-thread", "integrations-api/list-integrations.json"),
    ("webhook-receiver", "webhook-receiver/signed-push.json"),
    ("integrations-api", "integrations-api/list-integrations.json"),
    ("backup-committer", "backup-committer/list-backup-targets.json"),
    ("pipeline-trigger", "pipeline-trigger/stream-delivery.json"),
    ("status-poller", "status-poller/list-pipelines.json"),
    ("branch-pruner", "branch-pruner/list-environments.json"),
];

struct Options {
    runs: usize,
    warm: usize,
    bin_dir: PathBuf,
    json: Option<PathBuf>,
}

fn options() -> Result<Options, Error> {
    let mut options = Options { runs: 10, warm: 20, bin_dir: PathBuf::from("target/release"), json: None };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--runs" => options.runs = value()?.parse()?,
            "--warm" => options.warm = value()?.parse()?,
            "--bin-dir" => options.bin_dir = value()?.into(),
            "--json" => options.json = Some(value()?.into()),
            other => return Err(format!("unknown option {other}").into()),
        }
    }
    if options.runs == 0 {
        return Err("--runs must be at least 1".into());
    }
    Ok(options)
}

/// The figures of one binary.
#[derive(Default)]
struct Figures {
    init_ms: Vec<f64>,
    first_ms: Vec<f64>,
    warm_ms: Vec<f64>,
    peak_rss_kb: u64,
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN)
}

/// `VmHWM` of a live process: its peak resident set.
fn peak_rss_kb(pid: u32) -> Result<u64, Error> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).ok_or("no VmHWM in /proc status")?;
    Ok(line.split_whitespace().nth(1).ok_or("bad VmHWM line")?.parse()?)
}

/// The same event with fresh request ids, so every webhook invocation is a new delivery and
/// measures a recorded one, not a duplicate.
fn fresh(event: &Value) -> Vec<u8> {
    let mut event = event.clone();
    let id = uuid::Uuid::new_v4().to_string();
    if let Some(context) = event.get_mut("requestContext") {
        context["requestId"] = json!(id);
    }
    if let Some(headers) = event.get_mut("headers").and_then(Value::as_object_mut)
        && headers.contains_key("x-request-uuid")
    {
        headers.insert("x-request-uuid".into(), json!(id));
    }
    event.to_string().into_bytes()
}

/// An HTTP answer must not be an error; a stream answer must report no failed record.
fn check(name: &str, response: &[u8]) -> Result<(), Error> {
    let value: Value = serde_json::from_slice(response)?;
    let failed = match value.get("statusCode").and_then(Value::as_u64) {
        Some(status) => status >= 400,
        None => value.get("batchItemFailures").and_then(Value::as_array).is_some_and(|f| !f.is_empty()),
    };
    if failed {
        return Err(format!("{name} answered {value}").into());
    }
    Ok(())
}

async fn cold_start(
    binary: &Path,
    env: &[(String, String)],
    event: &Value,
    warm: usize,
    figures: &mut Figures,
) -> Result<(), Error> {
    let name = binary.file_name().and_then(|n| n.to_str()).unwrap_or("function").to_owned();
    let api = RuntimeApi::start().await?;
    let deadline = Duration::from_secs(15);
    let spawned = std::time::Instant::now();
    let mut child = tokio::process::Command::new(binary)
        .env_clear()
        .envs(env.iter().cloned())
        .env("AWS_LAMBDA_RUNTIME_API", api.addr.to_string())
        .env("AWS_LAMBDA_FUNCTION_NAME", &name)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("{}: {e} (build it first: make bench)", binary.display()))?;
    let pid = child.id().ok_or("the process ended at once")?;
    let initialized = api.initialized(deadline).await.map_err(|e| format!("{name}: {e}"))?;
    figures.init_ms.push((initialized - spawned).as_secs_f64() * 1e3);
    let (took, response) = api.invoke(fresh(event), deadline).await.map_err(|e| format!("{name}: {e}"))?;
    check(&name, &response)?;
    figures.first_ms.push(took.as_secs_f64() * 1e3);
    for _ in 0..warm {
        let (took, response) = api.invoke(fresh(event), deadline).await.map_err(|e| format!("{name}: {e}"))?;
        check(&name, &response)?;
        figures.warm_ms.push(took.as_secs_f64() * 1e3);
    }
    figures.peak_rss_kb = figures.peak_rss_kb.max(peak_rss_kb(pid)?);
    child.kill().await?;
    Ok(())
}

/// The emulator's table, created and seeded like `seed-emulator` does for `cargo lambda watch`.
async fn seeded_environment() -> Result<Vec<(String, String)>, Error> {
    let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap_or_default();
    if !(endpoint.starts_with("http://127.0.0.1:") || endpoint.starts_with("http://localhost:")) {
        return Err(format!("AWS_ENDPOINT_URL must be the local emulator (got {endpoint:?}); run `make bench`").into());
    }
    let table = format!("bench-{}", uuid::Uuid::new_v4().simple());
    let env: Vec<(String, String)> = [
        ("STATE_TABLE", table.as_str()),
        ("SECRET_PREFIX", "bench"),
        ("PUBLIC_BASE_URL", "https://hooks.example.invalid"),
        ("RETENTION_DAYS", "30"),
        ("AWS_ENDPOINT_URL", endpoint.as_str()),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_SESSION_TOKEN", "testing"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("AWS_CONFIG_FILE", "/dev/null"),
        ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null"),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128"),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
        ("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/bench"),
        ("AWS_LAMBDA_LOG_STREAM_NAME", "bench"),
        ("AWS_LAMBDA_LOG_FORMAT", "JSON"),
        ("AWS_LAMBDA_LOG_LEVEL", "INFO"),
        ("_HANDLER", "bootstrap"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    for (k, v) in &env {
        // SAFETY: set before any other thread reads the environment (the SDK below reads it).
        unsafe { std::env::set_var(k, v) };
    }
    let root = entry::Root::aws(entry::Settings::from_env()?)?;
    let aws = entry::settings::aws_backends()?;
    let config = aws_adapters::sdk_config(&aws.sdk)?;
    DynamoStore::new(aws_sdk_dynamodb::Client::new(&config), table).create_table().await?;
    local_stack::demo::seed(&root.backends, "http://127.0.0.1:9/2.0", "bench").await?;
    Ok(env)
}

fn size_of(path: &Path) -> Option<u64> {
    std::fs::metadata(path).ok().map(|m| m.len())
}

fn mb(bytes: f64) -> String {
    format!("{:.2} MB", bytes / 1e6)
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let options = options()?;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let env = seeded_environment().await?;
    let mut subjects = Vec::new();
    for (binary, event_file) in SUBJECTS {
        let event: Value = serde_json::from_str(&std::fs::read_to_string(root.join("events").join(event_file))?)?;
        let path = options.bin_dir.join(binary);
        // One start first, not counted: the page cache then holds the binary, as it would be
        // on a warm Lambda host; every counted start is a new process all the same.
        cold_start(&path, &env, &event, 0, &mut Figures::default()).await?;
        subjects.push((binary, event_file, path, event, Figures::default()));
    }
    // Round after round over every binary, so a change in the machine's load falls on all of
    // them alike, the floor included.
    for _ in 0..options.runs {
        for (_, _, path, event, figures) in &mut subjects {
            cold_start(path, &env, event, options.warm, figures).await?;
        }
    }
    let mut rows = Vec::new();
    for (binary, event_file, path, _, figures) in subjects {
        let zip = root.join("target/lambda").join(binary).join("bootstrap.zip");
        rows.push(json!({
            "binary": binary,
            "event": event_file,
            "init_ms": median(&figures.init_ms),
            "first_invoke_ms": median(&figures.first_ms),
            "warm_invoke_ms": median(&figures.warm_ms),
            "peak_rss_kb": figures.peak_rss_kb,
            "binary_bytes": size_of(&path),
            "arm64_zip_bytes": size_of(&zip),
        }));
    }
    // Ratios to the canonical floor, and init also to the floor on the functions' runtime.
    let (floor, same_runtime) = (rows[0].clone(), rows[1].clone());
    let ratio = |row: &Value, base: &Value, field: &str| {
        row[field].as_f64().unwrap_or(f64::NAN) / base[field].as_f64().unwrap_or(f64::NAN)
    };
    println!(
        "| binary | init (median) | × floor | × current-thread floor | first invoke | warm invoke | peak RSS | × floor | binary | arm64 zip |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for row in &mut rows {
        let init_ratio = ratio(row, &floor, "init_ms");
        let same_runtime_ratio = ratio(row, &same_runtime, "init_ms");
        let rss_ratio = ratio(row, &floor, "peak_rss_kb");
        row["init_vs_floor"] = json!(init_ratio);
        row["init_vs_current_thread_floor"] = json!(same_runtime_ratio);
        row["rss_vs_floor"] = json!(rss_ratio);
        println!(
            "| {} | {:.2} ms | {:.2} | {:.2} | {:.2} ms | {:.3} ms | {} | {:.2} | {} | {} |",
            row["binary"].as_str().unwrap_or_default(),
            row["init_ms"].as_f64().unwrap_or(f64::NAN),
            init_ratio,
            same_runtime_ratio,
            row["first_invoke_ms"].as_f64().unwrap_or(f64::NAN),
            row["warm_invoke_ms"].as_f64().unwrap_or(f64::NAN),
            mb(row["peak_rss_kb"].as_f64().unwrap_or(f64::NAN) * 1024.0),
            rss_ratio,
            row["binary_bytes"].as_f64().map(mb).unwrap_or_else(|| "-".into()),
            row["arm64_zip_bytes"].as_f64().map(mb).unwrap_or_else(|| "-".into()),
        );
    }
    println!("({} cold starts per binary, {} warm invokes per start; medians)", options.runs, options.warm);
    if let Some(path) = options.json {
        std::fs::write(
            path,
            serde_json::to_string_pretty(&json!({"runs": options.runs, "warm": options.warm, "rows": rows}))?,
        )?;
    }
    Ok(())
}
