//! Bitbucket's JSON into the port's models. Strict where a mistake could delete something (a
//! branch without a name is an error, never "no branch"), lenient elsewhere.

use chrono::{DateTime, TimeZone, Utc};
use domain::bitbucket::refs::EVERY_BRANCH;
use domain::bitbucket::{
    BitbucketError, BranchInfo, PipelineRequest, PipelineRun, PullRequestInfo, StepTests, TestFailure,
};
use serde_json::{Value, json};

/// Data Center keeps a branch's tip commit under this metadata key (`details=true`).
pub const DC_LATEST_COMMIT: &str = "com.atlassian.bitbucket.server.bitbucket-branch:latest-commit-metadata";

fn text<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer).and_then(Value::as_str).filter(|s| !s.is_empty())
}

fn millis(v: &Value, pointer: &str) -> Option<DateTime<Utc>> {
    v.pointer(pointer).and_then(Value::as_i64).and_then(|ms| Utc.timestamp_millis_opt(ms).single())
}

fn rfc3339(v: &Value, pointer: &str) -> Option<DateTime<Utc>> {
    text(v, pointer).and_then(|t| DateTime::parse_from_rfc3339(t).ok()).map(|t| t.with_timezone(&Utc))
}

fn unexpected(what: &str) -> BitbucketError {
    BitbucketError::Unexpected(format!("a listed {what} without the fields it must have"))
}

/// A Cloud `refs/branches` item: `{name, target: {hash, date}}`.
pub fn cloud_branch(v: &Value) -> Result<BranchInfo, BitbucketError> {
    let name = text(v, "/name").ok_or_else(|| unexpected("branch"))?;
    let head = text(v, "/target/hash").ok_or_else(|| unexpected("branch"))?;
    Ok(BranchInfo {
        name: name.to_owned(),
        head: head.to_owned(),
        last_commit: rfc3339(v, "/target/date"),
        is_default: false,
    })
}

/// A Data Center `branches?details=true` item: `{displayId, latestCommit, isDefault,
/// metadata[DC_LATEST_COMMIT].authorTimestamp}` (milliseconds).
pub fn dc_branch(v: &Value) -> Result<BranchInfo, BitbucketError> {
    let name = text(v, "/displayId").ok_or_else(|| unexpected("branch"))?;
    let head = text(v, "/latestCommit").ok_or_else(|| unexpected("branch"))?;
    let commit = v.get("metadata").and_then(|m| m.get(DC_LATEST_COMMIT));
    let last_commit = commit.and_then(|c| millis(c, "/authorTimestamp").or_else(|| millis(c, "/committerTimestamp")));
    Ok(BranchInfo {
        name: name.to_owned(),
        head: head.to_owned(),
        last_commit,
        is_default: v.get("isDefault").and_then(Value::as_bool).unwrap_or(false),
    })
}

/// A Cloud `pullrequests` item: `{id, state, updated_on, source: {branch: {name}, commit: {hash}}}`.
pub fn cloud_pull_request(v: &Value) -> Result<PullRequestInfo, BitbucketError> {
    let id = v.get("id").and_then(Value::as_u64).ok_or_else(|| unexpected("pull request"))?;
    let source_branch = text(v, "/source/branch/name").ok_or_else(|| unexpected("pull request"))?;
    let owned = |p: &str| text(v, p).map(str::to_owned);
    Ok(PullRequestInfo {
        id,
        source_branch: source_branch.to_owned(),
        state: text(v, "/state").unwrap_or("OPEN").to_ascii_uppercase(),
        updated: rfc3339(v, "/updated_on"),
        head: owned("/source/commit/hash"),
        destination_branch: owned("/destination/branch/name"),
        destination_head: owned("/destination/commit/hash"),
        title: owned("/title"),
        draft: v.get("draft").and_then(Value::as_bool).unwrap_or(false),
        source_repository: owned("/source/repository/full_name"),
        destination_repository: owned("/destination/repository/full_name"),
    })
}

/// A Data Center `pull-requests` item: `{id, state, fromRef: {displayId, latestCommit},
/// closedDate?, updatedDate}` (milliseconds); `closedDate` is preferred for closed ones.
pub fn dc_pull_request(v: &Value) -> Result<PullRequestInfo, BitbucketError> {
    let id = v.get("id").and_then(Value::as_u64).ok_or_else(|| unexpected("pull request"))?;
    let source_branch = text(v, "/fromRef/displayId")
        .or_else(|| text(v, "/fromRef/id").map(|r| r.strip_prefix("refs/heads/").unwrap_or(r)))
        .ok_or_else(|| unexpected("pull request"))?;
    let destination = text(v, "/toRef/displayId")
        .or_else(|| text(v, "/toRef/id").map(|r| r.strip_prefix("refs/heads/").unwrap_or(r)));
    let repository = |side: &str| {
        let key = text(v, &format!("/{side}/repository/project/key"))?;
        Some(format!("{key}/{}", text(v, &format!("/{side}/repository/slug"))?))
    };
    Ok(PullRequestInfo {
        id,
        source_branch: source_branch.to_owned(),
        state: text(v, "/state").unwrap_or("OPEN").to_ascii_uppercase(),
        updated: millis(v, "/closedDate").or_else(|| millis(v, "/updatedDate")),
        head: text(v, "/fromRef/latestCommit").map(str::to_owned),
        destination_branch: destination.map(str::to_owned),
        destination_head: text(v, "/toRef/latestCommit").map(str::to_owned),
        title: text(v, "/title").map(str::to_owned),
        draft: v.get("draft").and_then(Value::as_bool).unwrap_or(false),
        source_repository: repository("fromRef"),
        destination_repository: repository("toRef"),
    })
}

/// The branch glob of a Cloud `branch-restrictions?kind=delete` item. A restriction on a
/// branching-model type protects that type's default prefix (`release` → `release/**`); the
/// development and production types, and anything unreadable, protect every branch.
pub fn cloud_restriction_pattern(v: &Value) -> String {
    let by_model = v.get("branch_match_kind").and_then(Value::as_str) == Some("branching_model");
    match (by_model, text(v, "/pattern"), text(v, "/branch_type")) {
        (false, Some(pattern), _) => pattern.to_owned(),
        (true, _, Some(kind @ ("feature" | "bugfix" | "release" | "hotfix"))) => format!("{kind}/**"),
        _ => EVERY_BRANCH.to_owned(),
    }
}

/// The branch glob of a Data Center `restrictions?type=no-deletes` item: a `BRANCH` matcher's
/// ref without `refs/heads/`, a `PATTERN` matcher's pattern; other matchers (branching-model
/// categories, any ref) protect every branch.
pub fn dc_restriction_pattern(v: &Value) -> String {
    let id = text(v, "/matcher/id");
    match (text(v, "/matcher/type/id"), id) {
        (Some("BRANCH"), Some(id)) => id.strip_prefix("refs/heads/").unwrap_or(id).to_owned(),
        (Some("PATTERN"), Some(id)) => id.to_owned(),
        _ => EVERY_BRANCH.to_owned(),
    }
}

/// The body of Cloud's `POST …/pipelines/`: a `pipeline_pullrequest_target` for a pull request's
/// `pull-requests:` pipeline (the shape of the operation's own example), else a
/// `pipeline_ref_target` on the branch.
pub fn pipeline_body(request: &PipelineRequest) -> Value {
    if let Some(pr) = &request.pull_request {
        let mut target = json!({
            "type": "pipeline_pullrequest_target",
            "source": request.branch,
            "destination": pr.destination,
            "pullrequest": {"id": pr.id.to_string()},
            "selector": {"type": "pull-requests", "pattern": pr.pattern},
        });
        if let Some(commit) = &request.commit {
            target["commit"] = json!({"hash": commit});
        }
        if let Some(commit) = &pr.destination_commit {
            target["destination_commit"] = json!({"hash": commit});
        }
        let mut body = json!({"target": target});
        if !request.variables.is_empty() {
            body["variables"] = json!(request.variables);
        }
        return body;
    }
    let mut target = json!({"type": "pipeline_ref_target", "ref_type": "branch", "ref_name": request.branch});
    if let Some(commit) = &request.commit {
        target["commit"] = json!({"type": "commit", "hash": commit});
    }
    if let Some(pattern) = &request.custom {
        target["selector"] = json!({"type": "custom", "pattern": pattern});
    }
    let mut body = json!({"target": target});
    if !request.variables.is_empty() {
        // Schema `pipeline_variable` requires its `type`, as every typed Cloud object does.
        let variables: Vec<Value> = request
            .variables
            .iter()
            .map(|v| json!({"type": "pipeline_variable", "key": v.key, "value": v.value, "secured": v.secured}))
            .collect();
        body["variables"] = Value::Array(variables);
    }
    body
}

/// One word for Cloud's `state`: `{name: COMPLETED, result: {name: SUCCESSFUL}}` → SUCCESSFUL;
/// a paused or halted run is still IN_PROGRESS.
fn status_of(state: &Value) -> String {
    let name = state.get("name").and_then(Value::as_str).unwrap_or("PENDING");
    match name {
        "COMPLETED" => state.pointer("/result/name").and_then(Value::as_str).unwrap_or("ERROR").to_owned(),
        "PENDING" => "PENDING".to_owned(),
        _ => "IN_PROGRESS".to_owned(),
    }
}

/// The trigger a `trigger.type` names: `pipeline_trigger_manual` → `MANUAL`, `…_push` → `PUSH`,
/// `…_schedule` → `SCHEDULE`. The description defines only `type` (no `name`), and live Cloud
/// sends only `type`.
fn trigger_of_type(kind: &str) -> String {
    kind.strip_prefix("pipeline_trigger_").unwrap_or(kind).to_ascii_uppercase()
}

/// A Cloud pipeline run object.
pub fn pipeline_run(v: &Value) -> Option<PipelineRun> {
    let text = |p: &str| v.pointer(p).and_then(Value::as_str).map(str::to_owned);
    let time = |p: &str| text(p).and_then(|t| DateTime::parse_from_rfc3339(&t).ok()).map(|t| t.with_timezone(&Utc));
    let selector = match (text("/target/selector/type"), text("/target/selector/pattern")) {
        (Some(kind), Some(pattern)) => Some(format!("{kind}: {pattern}")),
        (Some(kind), None) => Some(kind),
        _ => None,
    };
    let pull_request = v.pointer("/target/pullrequest/id").and_then(|id| match id {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    });
    Some(PipelineRun {
        uuid: text("/uuid")?,
        build_number: v.get("build_number").and_then(Value::as_u64)?,
        branch: text("/target/ref_name").or_else(|| text("/target/source")),
        pull_request,
        commit: text("/target/commit/hash"),
        selector,
        trigger: text("/trigger/name").or_else(|| text("/trigger/type").map(|t| trigger_of_type(&t))),
        status: status_of(v.get("state").unwrap_or(&Value::Null)),
        created_on: time("/created_on"),
        completed_on: time("/completed_on"),
        duration_seconds: v.get("duration_in_seconds").and_then(Value::as_u64),
    })
}

/// A step's tests from Cloud's `test_reports` summary; errors count as failures.
pub fn step_tests(step: String, v: &Value) -> StepTests {
    let n = |k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
    StepTests {
        step,
        total: n("number_of_test_cases"),
        passed: n("number_of_successful_test_cases"),
        failed: n("number_of_failed_test_cases") + n("number_of_error_test_cases"),
        skipped: n("number_of_skipped_test_cases"),
    }
}

/// Whether a `test_cases` item failed (or errored).
pub fn test_case_failed(v: &Value) -> bool {
    let status = v.get("status").or_else(|| v.get("result")).and_then(Value::as_str).unwrap_or_default();
    status.eq_ignore_ascii_case("FAILED") || status.eq_ignore_ascii_case("ERROR")
}

/// A failed `test_cases` item: its name and suite (`package_name`, else the part of
/// `fully_qualified_name` before the name).
pub fn test_failure(step: &str, v: &Value, reason: Option<String>) -> TestFailure {
    let name = text(v, "/name").or_else(|| text(v, "/fully_qualified_name")).unwrap_or("unnamed test").to_owned();
    let suite = text(v, "/package_name").map(str::to_owned).or_else(|| {
        text(v, "/fully_qualified_name")
            .and_then(|full| full.strip_suffix(name.as_str()))
            .map(|s| s.trim_end_matches(['.', ':', '/', '#']).to_owned())
            .filter(|s| !s.is_empty())
    });
    TestFailure { name, suite, step: step.to_owned(), reason: reason.as_deref().and_then(TestFailure::bounded_reason) }
}

/// The reason of a failed test case from its `test_case_reasons` page: the messages (and
/// output) of its values, joined.
pub fn test_case_reason(page: &Value) -> Option<String> {
    let values = page.get("values").and_then(Value::as_array)?;
    let parts: Vec<&str> = values
        .iter()
        .flat_map(|r| ["/message", "/output", "/description"].map(|p| r.pointer(p).and_then(Value::as_str)))
        .flatten()
        .filter(|s| !s.trim().is_empty())
        .collect();
    (!parts.is_empty()).then(|| parts.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::bitbucket::PipelineVariable;

    #[test]
    fn cloud_items() {
        let b =
            cloud_branch(&json!({"name": "feature/x", "target": {"hash": "abc", "date": "2026-01-02T03:04:05+00:00"}}))
                .unwrap();
        assert_eq!((b.name.as_str(), b.head.as_str(), b.is_default), ("feature/x", "abc", false));
        assert_eq!(b.last_commit.unwrap().to_rfc3339(), "2026-01-02T03:04:05+00:00");
        assert!(cloud_branch(&json!({"target": {"hash": "abc"}})).is_err(), "a nameless branch is an error");
        assert!(cloud_branch(&json!({"name": "x", "target": {}})).unwrap_err().reason() == "unexpected_response");

        let pr =
            cloud_pull_request(&json!({"id": 7, "state": "MERGED", "updated_on": "2026-01-02T03:04:05.123456+00:00",
            "source": {"branch": {"name": "topic"}, "commit": {"hash": "0123456789ab"}}}))
            .unwrap();
        assert_eq!((pr.id, pr.source_branch.as_str(), pr.is_closed(), pr.is_open()), (7, "topic", true, false));
        assert_eq!(pr.head.as_deref(), Some("0123456789ab"));
        assert!(pr.updated.is_some());
        assert!(cloud_pull_request(&json!({"id": 7, "source": {}})).is_err());

        assert_eq!(cloud_restriction_pattern(&json!({"kind": "delete", "pattern": "release/*"})), "release/*");
        let model = json!({"branch_match_kind": "branching_model", "branch_type": "hotfix"});
        assert_eq!(cloud_restriction_pattern(&model), "hotfix/**");
        let production = json!({"branch_match_kind": "branching_model", "branch_type": "production"});
        assert_eq!(cloud_restriction_pattern(&production), EVERY_BRANCH);
        assert_eq!(cloud_restriction_pattern(&json!({"pattern": ""})), EVERY_BRANCH);
    }

    #[test]
    fn data_center_items() {
        let b = dc_branch(&json!({"displayId": "main", "latestCommit": "abc", "isDefault": true,
            "metadata": {DC_LATEST_COMMIT: {"authorTimestamp": 1_767_322_800_000_i64}}}))
        .unwrap();
        assert_eq!((b.name.as_str(), b.is_default), ("main", true));
        assert_eq!(b.last_commit.unwrap().timestamp(), 1_767_322_800);
        let bare = dc_branch(&json!({"displayId": "x", "latestCommit": "abc"})).unwrap();
        assert_eq!((bare.last_commit, bare.is_default), (None, false));
        assert!(dc_branch(&json!({"latestCommit": "abc"})).is_err());

        let pr = dc_pull_request(&json!({"id": 3, "state": "DECLINED", "updatedDate": 2000, "closedDate": 1000,
            "fromRef": {"id": "refs/heads/topic", "displayId": "topic", "latestCommit": "abc"}}))
        .unwrap();
        assert_eq!((pr.source_branch.as_str(), pr.updated.unwrap().timestamp_millis()), ("topic", 1000));
        let open = dc_pull_request(&json!({"id": 4, "state": "OPEN", "updatedDate": 2000,
            "fromRef": {"id": "refs/heads/a/b"}}))
        .unwrap();
        assert_eq!((open.source_branch.as_str(), open.updated.unwrap().timestamp_millis()), ("a/b", 2000));

        let branch = json!({"matcher": {"id": "refs/heads/develop", "type": {"id": "BRANCH"}}});
        assert_eq!(dc_restriction_pattern(&branch), "develop");
        let pattern = json!({"matcher": {"id": "release/*", "type": {"id": "PATTERN"}}});
        assert_eq!(dc_restriction_pattern(&pattern), "release/*");
        let model = json!({"matcher": {"id": "RELEASE", "type": {"id": "MODEL_CATEGORY"}}});
        assert_eq!(dc_restriction_pattern(&model), EVERY_BRANCH);
    }

    #[test]
    fn cloud_states_map_to_one_word() {
        assert_eq!(status_of(&json!({"name": "PENDING"})), "PENDING");
        assert_eq!(status_of(&json!({"name": "IN_PROGRESS", "stage": {"name": "PAUSED"}})), "IN_PROGRESS");
        assert_eq!(status_of(&json!({"name": "COMPLETED", "result": {"name": "STOPPED"}})), "STOPPED");
        let run = pipeline_run(&json!({
            "uuid": "{u}", "build_number": 4,
            "target": {"ref_name": "main", "commit": {"hash": "abc"}, "selector": {"type": "custom", "pattern": "deploy"}},
            "trigger": {"type": "pipeline_trigger_manual"}, "state": {"name": "COMPLETED", "result": {"name": "SUCCESSFUL"}},
            "created_on": "2026-11-22T10:00:00.000000Z", "duration_in_seconds": 42
        }))
        .unwrap();
        assert_eq!(
            (run.build_number, run.status.as_str(), run.selector.as_deref()),
            (4, "SUCCESSFUL", Some("custom: deploy"))
        );
        assert!(run.is_final() && run.created_on.is_some() && run.completed_on.is_none());
        assert_eq!(run.trigger.as_deref(), Some("MANUAL"), "read from `trigger.type`");
        let pushed = json!({"uuid": "{p}", "build_number": 5, "trigger": {"type": "pipeline_trigger_push"}});
        assert_eq!(pipeline_run(&pushed).unwrap().trigger.as_deref(), Some("PUSH"));
        let named = json!({"uuid": "{n}", "build_number": 6, "trigger": {"name": "SCHEDULE", "type": "x"}});
        assert_eq!(pipeline_run(&named).unwrap().trigger.as_deref(), Some("SCHEDULE"));
        let request = PipelineRequest {
            branch: "main".into(),
            commit: None,
            custom: Some("deploy".into()),
            variables: vec![PipelineVariable { key: "K".into(), value: "v".into(), secured: true }],
            pull_request: None,
        };
        assert_eq!(pipeline_body(&request)["target"]["selector"]["pattern"], "deploy");
        assert_eq!(
            pipeline_body(&request)["variables"][0],
            json!({"type": "pipeline_variable", "key": "K", "value": "v", "secured": true})
        );
    }

    #[test]
    fn pull_request_targets_as_the_operation_documents_them() {
        let request = PipelineRequest {
            branch: "topic".into(),
            commit: Some("1a372fc0ab12".into()),
            custom: None,
            variables: Vec::new(),
            pull_request: Some(domain::bitbucket::PullRequestTarget {
                id: 3,
                destination: "main".into(),
                destination_commit: Some("9f848b7c0d1e".into()),
                pattern: "**".into(),
            }),
        };
        assert_eq!(
            pipeline_body(&request),
            json!({"target": {"type": "pipeline_pullrequest_target", "source": "topic", "destination": "main",
                "destination_commit": {"hash": "9f848b7c0d1e"}, "commit": {"hash": "1a372fc0ab12"},
                "pullrequest": {"id": "3"}, "selector": {"type": "pull-requests", "pattern": "**"}}})
        );
        let run = pipeline_run(&json!({"uuid": "{u}", "build_number": 7,
            "target": {"type": "pipeline_pullrequest_target", "source": "topic", "pullrequest": {"id": "3"},
                       "commit": {"hash": "1a372fc0ab12"}, "selector": {"type": "pull-requests", "pattern": "**"}},
            "trigger": {"type": "pipeline_trigger_push"}, "state": {"name": "PENDING"}}))
        .unwrap();
        assert_eq!(
            (run.branch.as_deref(), run.pull_request, run.trigger.as_deref()),
            (Some("topic"), Some(3), Some("PUSH"))
        );
        assert_eq!(run.selector.as_deref(), Some("pull-requests: **"));
    }

    #[test]
    fn failed_test_cases_and_their_reasons() {
        let case = json!({"uuid": "{c}", "name": "rejects_empty", "fully_qualified_name": "auth.LoginTest.rejects_empty",
            "status": "FAILED"});
        assert!(test_case_failed(&case) && !test_case_failed(&json!({"status": "SUCCESSFUL"})));
        let reason = test_case_reason(&json!({"values": [{"message": "expected 400, got 200"}]}));
        let failure = test_failure("Build", &case, reason);
        assert_eq!(failure.suite.as_deref(), Some("auth.LoginTest"));
        assert_eq!(
            (failure.name.as_str(), failure.reason.as_deref()),
            ("rejects_empty", Some("expected 400, got 200"))
        );
        let long = test_failure("Build", &case, Some("x".repeat(5000)));
        assert_eq!(long.reason.unwrap().chars().count(), domain::bitbucket::pipelines::MAX_REASON_CHARS + 1);
    }
}
