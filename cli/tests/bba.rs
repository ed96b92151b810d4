//! The real `bba` binary against the local stack started in this process (its own state
//! directory and port). The binary runs on a blocking thread so the server keeps serving.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

use local_stack::{Config, Running, start};
use serde_json::{Value, json};

struct Stack {
    running: Running,
    dir: PathBuf,
    http: reqwest::Client,
}

async fn stack() -> Stack {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let name = format!("bba-cli-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
    let dir = std::env::temp_dir().join(name);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let running = start(Config::for_tests(dir.clone()), false).await.expect("the local stack starts");
    Stack { running, dir, http: reqwest::Client::new() }
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Stack {
    /// `bba --api <stack> --state-dir <its dir> args…`, with none of bba's variables inherited.
    async fn bba(&self, args: &[&str]) -> Run {
        let mut command = Command::new(env!("CARGO_BIN_EXE_bba"));
        command.arg("--api").arg(&self.running.base_url).arg("--state-dir").arg(&self.dir).args(args);
        for name in ["API_TOKEN", "BBA_API", "BBA_WEBHOOK_URL", "STATE_DIR"] {
            command.env_remove(name);
        }
        let output: Output =
            tokio::task::spawn_blocking(move || command.output()).await.expect("joined").expect("bba runs");
        let run = Run {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        };
        for secret in [self.running.seeded.api_token.expose(), self.running.seeded.sandbox_webhook_secret.expose()] {
            assert!(!run.stdout.contains(secret) && !run.stderr.contains(secret), "a secret was printed");
        }
        run
    }

    async fn ok(&self, args: &[&str]) -> String {
        let run = self.bba(args).await;
        assert_eq!(run.code, Some(0), "bba {args:?} failed: {}", run.stderr);
        assert!(run.stderr.is_empty(), "{}", run.stderr);
        run.stdout
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        let response = self
            .http
            .post(format!("{}{path}", self.running.base_url))
            .bearer_auth(self.running.seeded.api_token.expose())
            .json(&body)
            .send()
            .await
            .expect("the stack answers");
        assert!(response.status().is_success(), "{path}: {}", response.status());
        response.json().await.unwrap_or(Value::Null)
    }

    async fn stop(self) {
        self.running.stop().await.expect("the stack stops");
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The row of a table whose first cell is `first`.
fn row<'a>(table: &'a str, first: &str) -> &'a str {
    table
        .lines()
        .find(|l| l.split_whitespace().next() == Some(first))
        .unwrap_or_else(|| panic!("no {first} in\n{table}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_webhook_is_recorded_and_listed_without_flags() {
    let s = stack().await;
    let sent = s.ok(&["webhook", "send", "sandbox", "--delivery-id", "cli-delivery-1"]).await;
    assert!(sent.starts_with("202 "), "{sent}");
    let answer: Value = serde_json::from_str(&sent[4..]).expect("the answer is JSON");
    assert_eq!((answer["duplicate"].clone(), answer["event_key"].clone()), (json!(false), json!("repo:push")));

    // The same delivery id again is a Bitbucket retry: answered, not recorded twice.
    let again = s.ok(&["webhook", "send", "sandbox", "--delivery-id", "cli-delivery-1"]).await;
    assert!(again.starts_with("200 ") && again.contains(r#""duplicate":true"#), "{again}");
    let dc = s.ok(&["--json", "webhook", "send", "sandbox", "--flavor", "data-center"]).await;
    let dc: Value = serde_json::from_str(&dc).expect("--json prints the answer");
    assert_eq!((dc["flavor"].clone(), dc["event_key"].clone()), (json!("datacenter"), json!("repo:refs_changed")));

    let events = s.ok(&["events", "sandbox"]).await;
    assert!(events.starts_with("RECEIVED"), "{events}");
    let cloud = events.lines().find(|l| l.contains("cli-delivery-1")).unwrap_or_else(|| panic!("{events}"));
    assert!(cloud.contains("repo:push") && cloud.contains("branch feature/login updated"), "{cloud}");
    assert!(events.contains("repo:refs_changed"), "{events}");
    assert_eq!(events.lines().count(), 3, "a header and two deliveries: {events}");

    let page: Value = serde_json::from_str(&s.ok(&["--json", "events", "sandbox", "--limit", "1"]).await).unwrap();
    assert_eq!(page["events"].as_array().map(Vec::len), Some(1));
    let cursor = page["next_cursor"].as_str().expect("a second page");
    let older = s.ok(&["events", "sandbox", "--limit", "1", "--cursor", cursor]).await;
    assert!(older.contains("cli-delivery-1") && !older.contains("more:"), "{older}");

    let list = s.ok(&["integrations", "list"]).await;
    let sandbox = row(&list, "sandbox");
    for part in ["Sandbox", "cloud", "active", "sandbox/demo"] {
        assert!(sandbox.contains(part), "{part} in {sandbox}");
    }
    let shown = s.ok(&["integrations", "show", "sandbox"]).await;
    assert!(shown.contains("credential:  api_token (dev@sandbox.test)"), "{shown}");
    let listed: Value = serde_json::from_str(&s.ok(&["--json", "integrations", "list"]).await).unwrap();
    assert_eq!(listed["integrations"][0]["id"], "sandbox");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builds_and_environments_follow_the_sandbox() {
    let s = stack().await;
    assert_eq!(s.ok(&["builds", "sandbox"]).await, "(none)\n");

    let run = s.post("/integrations/sandbox/pipelines", json!({"branch": "main"})).await;
    let uuid = run["uuid"].as_str().expect("a run uuid");
    let builds = s.ok(&["builds", "sandbox"]).await;
    let first = row(&builds, "1");
    for part in ["main", "manual", "PENDING", uuid] {
        assert!(first.contains(part), "{part} in {first}");
    }
    // Finish the run in the sandbox, then poll now rather than wait for a webhook.
    let sandbox = "/sandbox/bitbucket/_admin/pipelines";
    s.post(&format!("{sandbox}/{uuid}/start"), json!({})).await;
    s.post(
        &format!("{sandbox}/{uuid}/complete"),
        json!({"result": "FAILED", "tests": {"total": 5, "passed": 4, "failed": 1, "skipped": 0}}),
    )
    .await;
    s.post("/integrations/sandbox/pipelines/refresh", json!({})).await;
    let failed = s.ok(&["builds", "sandbox", "--status", "failed", "--branch", "main"]).await;
    let first = row(&failed, "1");
    assert!(first.contains("FAILED") && first.contains("4/5 passed, 1 failed"), "{first}");
    assert_eq!(s.ok(&["builds", "sandbox", "--status", "successful"]).await, "(none)\n");
    assert_eq!(s.ok(&["builds", "sandbox", "--branch", "develop"]).await, "(none)\n");

    s.post("/sandbox/bitbucket/_admin/branches", json!({"name": "feature/cli"})).await;
    s.post("/integrations/sandbox/prune", json!({"mode": "environments"})).await;
    let environments = s.ok(&["environments", "sandbox"]).await;
    assert!(environments.starts_with("BRANCH"), "{environments}");
    for branch in ["main", "feature/cli"] {
        assert!(row(&environments, branch).contains("inactive"), "{environments}");
    }
    let listed: Value = serde_json::from_str(&s.ok(&["--json", "environments", "sandbox"]).await).unwrap();
    let names: Vec<&str> =
        listed["environments"].as_array().unwrap().iter().filter_map(|e| e["branch"].as_str()).collect();
    assert!(names.contains(&"feature/cli"), "{names:?}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_one_line_on_stderr_with_exit_code_1() {
    let s = stack().await;
    let failing = |run: Run, expected: &str| {
        assert_eq!(run.code, Some(1), "{}", run.stderr);
        assert!(run.stdout.is_empty(), "{}", run.stdout);
        assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
        assert!(run.stderr.contains(expected), "{expected:?} in {}", run.stderr);
    };
    let wrong = s.bba(&["--token", "not-the-token-42", "integrations", "list"]).await;
    assert!(!wrong.stderr.contains("not-the-token-42"), "the token is not printed");
    failing(wrong, "bba: HTTP 401: the bearer token is not valid (unauthorized)");
    failing(s.bba(&["events", "nobody"]).await, "HTTP 404");
    failing(s.bba(&["builds", "sandbox", "--status", "green"]).await, "HTTP 400: status: must be one of");

    let missing = s.dir.join("missing.json");
    let run = s.bba(&["webhook", "send", "sandbox", "--file", missing.to_str().unwrap()]).await;
    failing(run, &format!("bba: cannot read {}", missing.display()));
    let not_json = s.dir.join("not.json");
    std::fs::write(&not_json, "push: yes").unwrap();
    failing(s.bba(&["webhook", "send", "sandbox", "--file", not_json.to_str().unwrap()]).await, "is not JSON");
    failing(s.bba(&["webhook", "send", "sandbox", "--secret", "wrong"]).await, "HTTP 401");
    failing(s.bba(&["webhook", "send", "other"]).await, "no webhook secret for `other`");
    failing(s.bba(&["webhook", "send", "sandbox", "--secret-env", "BBA_TEST_UNSET_VARIABLE"]).await, "is not set");
    failing(s.bba(&["--state-dir", "/nonexistent", "integrations", "list"]).await, "no API token");
    failing(s.bba(&["--api", "ftp://example", "integrations", "list"]).await, "not a usable URL");
    assert_eq!(s.ok(&["events", "sandbox"]).await, "(none)\n", "nothing was recorded");

    let usage = s.bba(&["builds"]).await;
    assert_eq!(usage.code, Some(2), "clap's usage errors: {}", usage.stderr);
    s.stop().await;
}
