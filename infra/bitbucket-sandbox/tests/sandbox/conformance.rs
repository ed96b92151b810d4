//! The conformance suite: every route the sandbox serves is called (expecting success), then with
//! reduced credentials (expecting the refusal the description documents), then a few documented
//! errors and deliberate probes, with `SANDBOX_TRAFFIC_LOG` set; then `infra/conformance/check.py`
//! holds the log to Atlassian's descriptions and must find no violation outside its allow-list.
//!
//! The sweep runs in a child process (this test binary again, `conformance::sweep` alone) so that
//! `SANDBOX_TRAFFIC_LOG` is set the way a test run sets it, for that process only.

use std::path::PathBuf;
use std::process::Command;

use bitbucket_sandbox::{
    ACCESS_TOKEN, DC_READ_TOKEN, DC_WRITE_TOKEN, ExtraCredential, Grant, NO_ADMIN_API_TOKEN, NO_ADMIN_API_TOKEN_EMAIL,
    NO_PULLREQUEST_ACCESS_TOKEN, OAUTH_CONSUMER_KEY, OAUTH_CONSUMER_SECRET, PROBE_HEADER, PullRequestOptions,
    READONLY_ACCESS_TOKEN, TEST_HEADER, TRAFFIC_LOG_VARIABLE, TestCounts,
};
use reqwest::multipart::{Form, Part};
use reqwest::{Method, RequestBuilder};
use serde_json::{Value, json};

use crate::common::{Harness, TempPath, start};

fn conformance_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../conformance")
}

/// Set by `make test` (and so CI): the checker must run, a missing python3 or package fails.
const REQUIRED: &str = "SANDBOX_CONFORMANCE_REQUIRED";

/// `None` when python3 or the checker's packages are missing (the reason is printed) — a failure
/// instead when [`REQUIRED`] is set.
fn python() -> Option<&'static str> {
    let probe =
        Command::new("python3").args(["-c", "import jsonschema, referencing, openapi_schema_validator, yaml"]).output();
    let missing = match probe {
        Ok(out) if out.status.success() => return Some("python3"),
        Ok(out) => format!(
            "the checker's packages are missing ({}); pip install -r infra/conformance/requirements.txt",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => format!("python3 is not available ({e})"),
    };
    assert!(std::env::var_os(REQUIRED).is_none(), "{REQUIRED} is set and the conformance check cannot run: {missing}");
    eprintln!("SKIPPED conformance: {missing}");
    None
}

#[test]
fn every_route_conforms_to_the_descriptions() {
    let Some(python) = python() else { return };
    let log = TempPath::new("conformance");
    let sweep = Command::new(std::env::current_exe().unwrap())
        .args(["conformance::sweep", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
        .env(TRAFFIC_LOG_VARIABLE, &log.0)
        .output()
        .expect("the test binary runs again");
    assert!(
        sweep.status.success(),
        "the sweep failed:\n{}\n{}",
        String::from_utf8_lossy(&sweep.stdout),
        String::from_utf8_lossy(&sweep.stderr)
    );
    let lines = log.json_lines();
    assert!(lines.len() > 100, "the sweep logged only {} exchanges", lines.len());
    assert_eq!(lines.iter().filter(|l| l["probe"] == true).count(), 3, "the probes are marked");
    let api = lines.iter().filter(|l| l["root"] == "/2.0" && l["status"] != 401 && l.get("probe").is_none());
    assert!(api.clone().all(|l| l["auth"]["kind"].is_string()), "every Cloud API line names its credential");
    let dc = lines.iter().filter(|l| {
        l["flavor"] == "datacenter"
            && l["response_body"]["errors"][0]["exceptionName"]
                != "com.atlassian.bitbucket.auth.IncorrectPasswordAuthenticationException"
    });
    assert!(dc.clone().all(|l| l["auth"]["permission"].is_string()), "every Data Center line names its permission");

    let check = Command::new(python)
        .arg(conformance_dir().join("check.py"))
        .arg("--json")
        .arg(&log.0)
        .output()
        .expect("check.py runs");
    let stdout = String::from_utf8_lossy(&check.stdout);
    let summary: Value = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find_map(|v| v.get("summary").cloned())
        .unwrap_or_else(|| panic!("no summary from check.py:\n{stdout}\n{}", String::from_utf8_lossy(&check.stderr)));
    eprintln!("check.py: {summary}");
    assert_eq!(summary["unusable_lines"], 0, "{stdout}");
    assert_eq!(summary["violations"], 0, "violations outside the allow-list:\n{stdout}");
    assert!(check.status.success(), "check.py exited {:?}:\n{stdout}", check.status);
}

/// Every request of the sweep, checked for the status it must get and labelled in the log.
struct Sweep {
    h: Harness,
    count: usize,
}

impl Sweep {
    async fn expect(&mut self, label: &str, request: RequestBuilder, status: u16) -> reqwest::Response {
        self.count += 1;
        let response = request.header(TEST_HEADER, format!("conformance::{label}")).send().await.unwrap();
        assert_eq!(response.status().as_u16(), status, "{label}: {}", response.url());
        response
    }
    async fn json(&mut self, label: &str, request: RequestBuilder, status: u16) -> Value {
        self.expect(label, request, status).await.json().await.unwrap()
    }
    fn cloud(&self, method: Method, rest: &str) -> RequestBuilder {
        self.h.cloud(method, &self.h.repo(rest))
    }
    fn dc(&self, method: Method, version: &str, rest: &str) -> RequestBuilder {
        self.h.dc_request(method, &self.h.dc_api(&format!("api/{version}"), rest))
    }
}

#[tokio::test]
#[ignore = "run by every_route_conforms_to_the_descriptions, with SANDBOX_TRAFFIC_LOG set"]
async fn sweep() {
    let h = start().await;
    let mut s = Sweep { h, count: 0 };
    cloud_sweep(&mut s).await;
    pipelines_sweep(&mut s).await;
    data_center_sweep(&mut s).await;
    refusals(&mut s).await;
    errors_and_probes(&mut s).await;
    eprintln!("sweep: {} requests", s.count);
}

async fn cloud_sweep(s: &mut Sweep) {
    let h = &s.h;
    let token_request = h
        .http
        .post(h.url("/site/oauth2/access_token"))
        .basic_auth(OAUTH_CONSUMER_KEY, Some(OAUTH_CONSUMER_SECRET))
        .form(&[("grant_type", "client_credentials")]);
    let token = s.json("oauth token", token_request, 200).await;
    let oauth = token["access_token"].as_str().unwrap().to_owned();
    let user = s.h.get(&s.h.url("/2.0/user"));
    s.expect("user (API token)", user, 200).await;
    let user = s.h.http.get(s.h.url("/2.0/user")).bearer_auth(ACCESS_TOKEN);
    s.expect("user (access token)", user, 200).await;
    let user = s.h.http.get(s.h.url("/2.0/user")).bearer_auth(&oauth);
    s.expect("user (OAuth consumer)", user, 200).await;
    let workspace = s.h.get(&s.h.url("/2.0/workspaces/sandbox"));
    s.expect("workspace", workspace, 200).await;
    s.expect("repository", s.cloud(Method::GET, ""), 200).await;

    // Hooks.
    let body = json!({ "description": "ci", "url": "https://example.test/hook", "active": true, "secret": "s3cret",
        "events": ["repo:push", "pullrequest:created", "pullrequest:updated", "pullrequest:fulfilled",
                   "pullrequest:rejected", "repo:commit_status_created", "repo:commit_status_updated"] });
    let hook = s.json("hook create", s.cloud(Method::POST, "/hooks").json(&body), 201).await;
    let uid = hook["uuid"].as_str().unwrap().replace('{', "%7B").replace('}', "%7D");
    s.expect("hook create (slash)", s.cloud(Method::POST, "/hooks/").json(&body), 201).await;
    s.expect("hooks", s.cloud(Method::GET, "/hooks?pagelen=100"), 200).await;
    s.expect("hooks (slash)", s.cloud(Method::GET, "/hooks/"), 200).await;
    s.expect("hook", s.cloud(Method::GET, &format!("/hooks/{uid}")), 200).await;
    s.expect("hook update", s.cloud(Method::PUT, &format!("/hooks/{uid}")).json(&body), 200).await;
    s.expect("hook delete", s.cloud(Method::DELETE, &format!("/hooks/{uid}")), 204).await;

    // Branches and restrictions.
    let main = s.h.tip("main").await;
    let branch = json!({ "name": "release/1.0", "target": { "hash": main } });
    s.expect("branch create", s.cloud(Method::POST, "/refs/branches").json(&branch), 201).await;
    let branch = json!({ "name": "topic", "target": { "hash": main } });
    s.expect("branch create (slash)", s.cloud(Method::POST, "/refs/branches/").json(&branch), 201).await;
    s.expect("branches", s.cloud(Method::GET, "/refs/branches?pagelen=100"), 200).await;
    s.expect("branches (slash)", s.cloud(Method::GET, "/refs/branches/"), 200).await;
    let q = "/refs/branches?q=name%20~%20%22release%22&sort=-name";
    s.expect("branches q sort", s.cloud(Method::GET, q), 200).await;
    s.expect("branch", s.cloud(Method::GET, "/refs/branches/feature/login"), 200).await;
    s.expect("branch delete", s.cloud(Method::DELETE, "/refs/branches/topic"), 204).await;
    s.h.sandbox.add_branch_restriction("delete", "release/*");
    s.h.sandbox.add_branch_restriction("push", "main");
    let restrictions = "/branch-restrictions?kind=delete&pagelen=100";
    s.expect("restrictions", s.cloud(Method::GET, restrictions), 200).await;
    s.expect("restrictions (slash)", s.cloud(Method::GET, "/branch-restrictions/"), 200).await;
    s.expect("restriction", s.cloud(Method::GET, "/branch-restrictions/1"), 200).await;

    // Source and commits.
    let form = Form::new()
        .part("/docs/guide.md", Part::bytes(b"# Guide\n".to_vec()).file_name("guide.md"))
        .text("message", "Add the guide")
        .text("branch", "main")
        .text("parents", main.clone());
    let created = s.expect("src commit (multipart)", s.cloud(Method::POST, "/src").multipart(form), 201).await;
    let hash = created.headers()["location"].to_str().unwrap().rsplit('/').next().unwrap().to_owned();
    let form = [("message", "Notes"), ("branch", "develop"), ("notes.txt", "n")];
    s.expect("src commit (form)", s.cloud(Method::POST, "/src").form(&form), 201).await;
    s.expect("src (redirected to the root listing)", s.cloud(Method::GET, "/src"), 200).await;
    s.expect("src root", s.cloud(Method::GET, &format!("/src/{hash}/")), 200).await;
    s.expect("src directory", s.cloud(Method::GET, &format!("/src/{hash}/docs/")), 200).await;
    s.expect("src file", s.cloud(Method::GET, &format!("/src/{hash}/docs/guide.md")), 200).await;
    s.expect("src file meta", s.cloud(Method::GET, &format!("/src/{hash}/docs/guide.md?format=meta")), 200).await;
    s.expect("src directory meta", s.cloud(Method::GET, &format!("/src/{hash}/docs?format=meta")), 200).await;
    s.expect("src by branch", s.cloud(Method::GET, "/src/main/README.md"), 200).await;
    s.expect("commit", s.cloud(Method::GET, &format!("/commit/{hash}")), 200).await;
    s.expect("commits", s.cloud(Method::GET, "/commits"), 200).await;
    s.expect("commits (slash)", s.cloud(Method::GET, "/commits/?pagelen=2"), 200).await;
    s.expect("commits include exclude", s.cloud(Method::GET, "/commits?include=develop&exclude=main"), 200).await;
    s.expect("commits of a revision", s.cloud(Method::GET, "/commits/develop"), 200).await;
    let status = json!({ "key": "ci", "state": "INPROGRESS", "name": "CI", "url": "https://ci.test/1", "refname": "main",
        "description": "Building" });
    s.expect("status create", s.cloud(Method::POST, &format!("/commit/{hash}/statuses/build")).json(&status), 201)
        .await;
    s.expect("statuses", s.cloud(Method::GET, &format!("/commit/{hash}/statuses")), 200).await;
    s.expect("status by key", s.cloud(Method::GET, &format!("/commit/{hash}/statuses/build/ci")), 200).await;
    let update = json!({ "key": "ci", "state": "SUCCESSFUL", "name": "CI", "url": "https://ci.test/1", "refname": "main",
        "description": "Built" });
    s.expect("status update", s.cloud(Method::PUT, &format!("/commit/{hash}/statuses/build/ci")).json(&update), 200)
        .await;

    // Pull requests.
    let open = s.h.sandbox.open_pull_request("develop", "main", "Develop").await;
    let draft = PullRequestOptions { draft: true, fork: None };
    let draft = s.h.sandbox.open_pull_request_with("develop", "feature/login", "Draft", draft).await;
    let fork = PullRequestOptions { draft: false, fork: Some("someone/demo".into()) };
    s.h.sandbox.open_pull_request_with("feature/login", "develop", "From a fork", fork).await;
    s.expect("pull request (draft)", s.cloud(Method::GET, &format!("/pullrequests/{draft}")), 200).await;
    let merged = s.h.sandbox.open_pull_request("feature/login", "main", "Login").await;
    s.h.sandbox.merge_pull_request(merged).await.unwrap();
    let pulls = "/pullrequests?state=OPEN&state=MERGED&state=DECLINED&sort=-updated_on&pagelen=50";
    s.expect("pull requests (as the client asks)", s.cloud(Method::GET, pulls), 200).await;
    s.expect("pull requests (slash)", s.cloud(Method::GET, "/pullrequests/"), 200).await;
    let q = "/pullrequests?q=state%3D%22MERGED%22%20OR%20source.branch.name%3D%22develop%22&sort=id";
    s.expect("pull requests q", s.cloud(Method::GET, q), 200).await;
    s.expect("pull request", s.cloud(Method::GET, &format!("/pullrequests/{open}")), 200).await;
}

async fn pipelines_sweep(s: &mut Sweep) {
    let trigger = json!({ "target": { "type": "pipeline_ref_target", "ref_type": "branch", "ref_name": "main",
        "selector": { "type": "custom", "pattern": "deploy" } },
        "variables": [{ "type": "pipeline_variable", "key": "ENV", "value": "staging", "secured": false },
                      { "type": "pipeline_variable", "key": "TOKEN", "value": "hunter2", "secured": true }] });
    let run = s.json("pipeline create (slash)", s.cloud(Method::POST, "/pipelines/").json(&trigger), 201).await;
    let uuid = run["uuid"].as_str().unwrap().replace('{', "%7B").replace('}', "%7D");
    let develop = s.h.tip("develop").await;
    let commit_target = json!({ "target": { "type": "pipeline_commit_target",
        "commit": { "type": "commit", "hash": develop }, "selector": { "type": "custom", "pattern": "nightly" } } });
    let other =
        s.json("pipeline create (commit target)", s.cloud(Method::POST, "/pipelines").json(&commit_target), 201).await;
    let other = other["uuid"].as_str().unwrap().replace('{', "%7B").replace('}', "%7D");
    s.h.sandbox.start_pipeline(run["uuid"].as_str().unwrap()).unwrap();
    let tests = TestCounts { total: 3, passed: 2, failed: 1, skipped: 0 };
    s.h.sandbox.complete_pipeline(run["uuid"].as_str().unwrap(), "FAILED", Some(tests)).unwrap();
    s.expect(
        "pipelines (as the client asks)",
        s.cloud(Method::GET, "/pipelines/?sort=-created_on&page=1&pagelen=25"),
        200,
    )
    .await;
    s.expect("pipelines", s.cloud(Method::GET, "/pipelines?target.ref_name=main"), 200).await;
    s.expect("pipeline", s.cloud(Method::GET, &format!("/pipelines/{uuid}")), 200).await;
    let steps =
        s.json("steps (slash)", s.cloud(Method::GET, &format!("/pipelines/{uuid}/steps/?pagelen=100")), 200).await;
    s.expect("steps", s.cloud(Method::GET, &format!("/pipelines/{uuid}/steps")), 200).await;
    let step = steps["values"][0]["uuid"].as_str().unwrap().replace('{', "%7B").replace('}', "%7D");
    s.expect("step", s.cloud(Method::GET, &format!("/pipelines/{uuid}/steps/{step}")), 200).await;
    s.expect("test reports", s.cloud(Method::GET, &format!("/pipelines/{uuid}/steps/{step}/test_reports")), 200).await;
    s.expect("pipeline stop", s.cloud(Method::POST, &format!("/pipelines/{other}/stopPipeline")), 204).await;
    let cases = format!("/pipelines/{uuid}/steps/{step}/test_reports/test_cases");
    let listed = s.json("test cases", s.cloud(Method::GET, &cases), 200).await;
    let failed = listed["values"].as_array().unwrap().iter().find(|c| c["status"] == "FAILED").unwrap();
    let case = failed["uuid"].as_str().unwrap().replace('{', "%7B").replace('}', "%7D");
    s.expect("test case reasons", s.cloud(Method::GET, &format!("{cases}/{case}/test_case_reasons")), 200).await;

    // A pull request's pipeline, as the operation's own example triggers it.
    let pr = s.h.sandbox.open_pull_request("feature/login", "main", "Login").await;
    let (head, main) = (s.h.tip("feature/login").await, s.h.tip("main").await);
    let target = json!({ "target": { "type": "pipeline_pullrequest_target", "source": "feature/login",
        "destination": "main", "destination_commit": { "hash": &main[..7] }, "commit": { "hash": &head[..7] },
        "pullrequest": { "id": pr.to_string() }, "selector": { "type": "pull-requests", "pattern": "**" } } });
    let run = s.json("pipeline create (pull request)", s.cloud(Method::POST, "/pipelines/").json(&target), 201).await;
    let run = run["uuid"].as_str().unwrap().replace('{', "%7B").replace('}', "%7D");
    s.expect("pipeline (pull request)", s.cloud(Method::GET, &format!("/pipelines/{run}")), 200).await;
}

async fn data_center_sweep(s: &mut Sweep) {
    for version in ["latest", "1.0"] {
        let v = |label: &str| format!("dc {label} ({version})");
        s.expect(&v("repository"), s.dc(Method::GET, version, ""), 200).await;
        s.expect(&v("default branch"), s.dc(Method::GET, version, "/default-branch"), 200).await;
        s.expect(&v("branches/default"), s.dc(Method::GET, version, "/branches/default"), 200).await;
        let hook = json!({ "name": "ci", "url": "https://example.test/dc", "active": true,
            "events": ["repo:refs_changed", "pr:opened", "pr:from_ref_updated", "pr:modified", "pr:merged", "pr:declined", "pr:deleted"],
            "configuration": { "secret": "s3cret" } });
        let created = s.json(&v("webhook create"), s.dc(Method::POST, version, "/webhooks").json(&hook), 201).await;
        let id = created["id"].as_u64().unwrap();
        s.expect(&v("webhooks"), s.dc(Method::GET, version, "/webhooks?limit=100"), 200).await;
        s.expect(&v("webhook"), s.dc(Method::GET, version, &format!("/webhooks/{id}")), 200).await;
        s.expect(&v("webhook update"), s.dc(Method::PUT, version, &format!("/webhooks/{id}")).json(&hook), 200).await;
        s.expect(&v("webhook delete"), s.dc(Method::DELETE, version, &format!("/webhooks/{id}")), 204).await;

        let path = format!("backups/{version}/state.json");
        let form = Form::new()
            .part("content", Part::bytes(b"{}".to_vec()).file_name("state.json"))
            .text("branch", "main")
            .text("message", "Back up");
        let commit =
            s.json(&v("browse put"), s.dc(Method::PUT, version, &format!("/browse/{path}")).multipart(form), 200).await;
        let id = commit["id"].as_str().unwrap().to_owned();
        let form = Form::new()
            .text("content", "{\"v\":2}")
            .text("branch", "main")
            .text("message", "Again")
            .text("sourceCommitId", id.clone());
        s.expect(&v("browse put (edit)"), s.dc(Method::PUT, version, &format!("/browse/{path}")).multipart(form), 200)
            .await;
        s.expect(&v("raw"), s.dc(Method::GET, version, &format!("/raw/{path}?at={id}")), 200).await;
        s.expect(&v("commit"), s.dc(Method::GET, version, &format!("/commits/{id}")), 200).await;
        s.expect(&v("branches"), s.dc(Method::GET, version, "/branches?details=true&limit=100"), 200).await;
        s.expect(
            &v("branches filtered"),
            s.dc(Method::GET, version, "/branches?filterText=feature&orderBy=MODIFICATION"),
            200,
        )
        .await;
        let branch = json!({ "name": format!("created-{version}"), "startPoint": "main", "message": "A branch" });
        s.expect(&v("branch create"), s.dc(Method::POST, version, "/branches").json(&branch), 200).await;
        let tip = s.h.tip("main").await;
        let build = json!({ "key": format!("bba-{version}"), "state": "INPROGRESS", "url": "https://ci.example.test/1",
            "name": "Environment", "description": "Deploying", "ref": "refs/heads/main" });
        s.expect(
            &v("build status set"),
            s.dc(Method::POST, version, &format!("/commits/{tip}/builds")).json(&build),
            204,
        )
        .await;
        let key = format!("/commits/{tip}/builds?key=bba-{version}");
        s.expect(&v("build status"), s.dc(Method::GET, version, &key), 200).await;
        s.expect(
            &v("pull requests"),
            s.dc(Method::GET, version, "/pull-requests?state=ALL&order=NEWEST&limit=100"),
            200,
        )
        .await;
    }
    for version in ["latest", "1.0"] {
        let utils = s.h.dc_api(&format!("branch-utils/{version}"), "/branches");
        let branch = json!({ "name": format!("utils-{version}"), "startPoint": s.h.tip("main").await });
        s.expect(
            &format!("dc branch-utils create ({version})"),
            s.h.dc_request(Method::POST, &utils).json(&branch),
            201,
        )
        .await;
        let delete = json!({ "name": format!("refs/heads/utils-{version}"), "dryRun": false });
        s.expect(
            &format!("dc branch-utils delete ({version})"),
            s.h.dc_request(Method::DELETE, &utils).json(&delete),
            204,
        )
        .await;
    }
    let gone = json!({ "name": "refs/heads/never-was" });
    let utils = s.h.dc_api("branch-utils/latest", "/branches");
    s.expect("dc branch-utils delete (absent: no error)", s.h.dc_request(Method::DELETE, &utils).json(&gone), 204)
        .await;
    for version in ["latest", "2.0"] {
        let url = s.h.dc_api(&format!("branch-permissions/{version}"), "/restrictions?type=no-deletes&limit=100");
        s.expect(&format!("dc restrictions ({version})"), s.h.dc_request(Method::GET, &url), 200).await;
    }
}

/// Reduced credentials: each refusal as the description documents it (the checker's `scope` and
/// `permission` checks see the credential in the log).
async fn refusals(s: &mut Sweep) {
    let h = &s.h;
    let no_admin =
        h.http.get(h.repo("/branch-restrictions")).basic_auth(NO_ADMIN_API_TOKEN_EMAIL, Some(NO_ADMIN_API_TOKEN));
    let no_pulls = h.http.get(h.repo("/pullrequests")).bearer_auth(NO_PULLREQUEST_ACCESS_TOKEN);
    let readonly_hooks = h.http.get(h.repo("/hooks")).bearer_auth(READONLY_ACCESS_TOKEN);
    let readonly_src =
        h.http.post(h.repo("/src")).bearer_auth(READONLY_ACCESS_TOKEN).form(&[("message", "x"), ("a.txt", "a")]);
    s.expect("refused: restrictions without admin (API token)", no_admin, 403).await;
    s.expect("refused: pull requests without pullrequest", no_pulls, 403).await;
    s.expect("refused: hooks without webhook", readonly_hooks, 403).await;
    s.expect("refused: src commit without repository:write", readonly_src, 403).await;
    let h = &s.h;
    h.sandbox
        .accept_credential_with(ExtraCredential::AccessToken("pipeline-only".into()), Grant::scopes(&["pipeline"]));
    let body = json!({ "target": { "type": "pipeline_ref_target", "ref_type": "branch", "ref_name": "main" } });
    let started = h.http.post(h.repo("/pipelines/")).bearer_auth("pipeline-only").json(&body);
    let created = s.json("pipeline create with pipeline only", started, 201).await;
    let uuid = created["uuid"].as_str().unwrap().replace('{', "%7B").replace('}', "%7D");
    let stop = s.h.http.post(s.h.repo(&format!("/pipelines/{uuid}/stopPipeline"))).bearer_auth("pipeline-only");
    s.expect("refused: stop without pipeline:write", stop, 403).await;
    let api = ExtraCredential::ApiToken { email: "hooks@sandbox.test".into(), token: "hooks".into() };
    s.h.sandbox.accept_credential_with(api, Grant::scopes(&["read:webhook:bitbucket", "write:webhook:bitbucket"]));
    let hook = json!({ "url": "https://example.test/h", "events": ["repo:push"] });
    let created = s.h.http.post(s.h.repo("/hooks")).basic_auth("hooks@sandbox.test", Some("hooks")).json(&hook);
    let created = s.json("hook create with read+write webhook", created, 201).await;
    let uid = created["uuid"].as_str().unwrap().replace('{', "%7B").replace('}', "%7D");
    let delete = s.h.http.delete(s.h.repo(&format!("/hooks/{uid}"))).basic_auth("hooks@sandbox.test", Some("hooks"));
    s.expect("refused: hook delete without delete:webhook", delete, 403).await;

    // Data Center: 401 for a missing permission.
    let h = &s.h;
    let read = |method: Method, url: &str| h.http.request(method, url).bearer_auth(DC_READ_TOKEN);
    let requests = vec![
        ("dc read: repository", read(Method::GET, &h.dc("")), 200),
        ("dc read: branches", read(Method::GET, &h.dc("/branches")), 200),
        ("dc refused: webhooks (REPO_READ)", read(Method::GET, &h.dc("/webhooks")), 401),
        (
            "dc refused: restrictions (REPO_READ)",
            read(Method::GET, &h.dc_api("branch-permissions/2.0", "/restrictions")),
            401,
        ),
        (
            "dc refused: browse put (REPO_READ)",
            read(Method::PUT, &h.dc("/browse/x.txt"))
                .multipart(Form::new().text("content", "x").text("branch", "main")),
            401,
        ),
        (
            "dc refused: branch create (REPO_READ)",
            read(Method::POST, &h.dc("/branches")).json(&json!({ "name": "x", "startPoint": "main" })),
            401,
        ),
        (
            "dc refused: branch delete (REPO_READ)",
            read(Method::DELETE, &h.dc_api("branch-utils/latest", "/branches")).json(&json!({ "name": "develop" })),
            401,
        ),
        ("dc refused: webhooks (REPO_WRITE)", h.http.get(h.dc("/webhooks")).bearer_auth(DC_WRITE_TOKEN), 401),
        (
            "dc refused: restricted branch (branch permission)",
            h.http
                .delete(h.dc_api("branch-utils/latest", "/branches"))
                .bearer_auth(DC_WRITE_TOKEN)
                .json(&json!({ "name": "release/1.0" })),
            401,
        ),
    ];
    for (label, request, status) in requests {
        s.expect(label, request, status).await;
    }
}

/// Documented errors, in each flavor's envelope, and probes of what is not described.
async fn errors_and_probes(s: &mut Sweep) {
    s.expect("error: unknown branch", s.cloud(Method::GET, "/refs/branches/no-such-branch"), 404).await;
    s.expect("error: unknown repository", s.h.get(&s.h.url("/2.0/repositories/sandbox/nope")), 404).await;
    s.expect("error: the main branch stays", s.cloud(Method::DELETE, "/refs/branches/main"), 400).await;
    s.expect("error: slashed branch in src", s.cloud(Method::GET, "/src/feature/login/src/login.txt"), 404).await;
    let bad_q = "/pullrequests?q=colour%3D1";
    s.expect(
        "error: pull requests q on an unknown field",
        s.h.http.get(s.h.repo(bad_q)).bearer_auth(ACCESS_TOKEN),
        400,
    )
    .await;
    let unknown = s.h.dc_request(Method::GET, &s.h.url("/rest/api/latest/projects/SANDBOX/repos/nope"));
    s.expect("dc error: unknown repository", unknown, 404).await;
    let endpoint = json!({ "name": "develop", "endPoint": "0000000000000000000000000000000000000000" });
    let moved = s.h.dc_request(Method::DELETE, &s.h.dc_api("branch-utils/latest", "/branches")).json(&endpoint);
    s.expect("dc error: endPoint mismatch", moved, 400).await;
    let main = json!({ "name": "refs/heads/main" });
    let default = s.h.dc_request(Method::DELETE, &s.h.dc_api("branch-utils/latest", "/branches")).json(&main);
    s.expect("dc error: the default branch stays", default, 400).await;
    let wrong = s.h.http.get(s.h.dc("")).bearer_auth("not-a-token");
    s.expect("dc error: a refused token", wrong, 401).await;

    let probe = |r: RequestBuilder| r.header(PROBE_HEADER, "1");
    s.expect("probe: unknown Cloud route", probe(s.h.get(&s.h.url("/2.0/nothing"))), 404).await;
    s.expect("probe: unknown Data Center route", probe(s.dc(Method::GET, "latest", "/nothing")), 404).await;
    s.expect("probe: Data Center wrong method", probe(s.dc(Method::PATCH, "latest", "/webhooks")), 405).await;
}
