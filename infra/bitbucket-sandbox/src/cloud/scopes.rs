//! The scopes each Cloud operation the sandbox serves requires, as Atlassian's description states
//! them (`../shared/bitbucket-openapi/cloud.swagger.v3.json`): the operation's `security` `oauth2`
//! scopes for access tokens and OAuth consumers (legacy scopes, with the implications the
//! description's narrative lists), its `x-atlassian-oauth2-scopes` for API tokens (granular scopes,
//! all required, none implying another). The test `scopes_match_the_description` holds this table
//! to the description.

/// One described operation: `METHOD /template` as the description writes it (relative to `/2.0`).
#[derive(Debug)]
#[cfg_attr(not(test), allow(dead_code))] // `method` and `path` name it for the test
pub struct Operation {
    pub method: &'static str,
    pub path: &'static str,
    /// Access tokens and OAuth consumers; empty: any of them (the description's `oauth2: []`).
    pub legacy: &'static [&'static str],
    /// API tokens.
    pub granular: &'static [&'static str],
}

const fn op(
    method: &'static str,
    path: &'static str,
    legacy: &'static [&'static str],
    granular: &'static [&'static str],
) -> Operation {
    Operation { method, path, legacy, granular }
}

const R: &str = "read:repository:bitbucket";
const W: &str = "write:repository:bitbucket";

pub const GET_USER: Operation = op("GET", "/user", &["account"], &["read:user:bitbucket"]);
pub const GET_WORKSPACE: Operation = op("GET", "/workspaces/{workspace}", &[], &["read:workspace:bitbucket"]);
pub const GET_REPOSITORY: Operation = op("GET", "/repositories/{workspace}/{repo_slug}", &["repository"], &[R]);

pub const LIST_HOOKS: Operation =
    op("GET", "/repositories/{workspace}/{repo_slug}/hooks", &["webhook"], &["read:webhook:bitbucket"]);
pub const CREATE_HOOK: Operation = op(
    "POST",
    "/repositories/{workspace}/{repo_slug}/hooks",
    &["webhook"],
    &["read:webhook:bitbucket", "write:webhook:bitbucket"],
);
pub const GET_HOOK: Operation =
    op("GET", "/repositories/{workspace}/{repo_slug}/hooks/{uid}", &["webhook"], &["read:webhook:bitbucket"]);
pub const UPDATE_HOOK: Operation = op(
    "PUT",
    "/repositories/{workspace}/{repo_slug}/hooks/{uid}",
    &["webhook"],
    &["read:webhook:bitbucket", "write:webhook:bitbucket"],
);
pub const DELETE_HOOK: Operation =
    op("DELETE", "/repositories/{workspace}/{repo_slug}/hooks/{uid}", &["webhook"], &["delete:webhook:bitbucket"]);

pub const LIST_BRANCHES: Operation =
    op("GET", "/repositories/{workspace}/{repo_slug}/refs/branches", &["repository"], &[R]);
pub const CREATE_BRANCH: Operation =
    op("POST", "/repositories/{workspace}/{repo_slug}/refs/branches", &["repository:write"], &[W, R]);
pub const GET_BRANCH: Operation =
    op("GET", "/repositories/{workspace}/{repo_slug}/refs/branches/{name}", &["repository"], &[R]);
pub const DELETE_BRANCH: Operation =
    op("DELETE", "/repositories/{workspace}/{repo_slug}/refs/branches/{name}", &["repository:write"], &[W]);

pub const LIST_RESTRICTIONS: Operation = op(
    "GET",
    "/repositories/{workspace}/{repo_slug}/branch-restrictions",
    &["repository:admin"],
    &["admin:repository:bitbucket"],
);
pub const GET_RESTRICTION: Operation = op(
    "GET",
    "/repositories/{workspace}/{repo_slug}/branch-restrictions/{id}",
    &["repository:admin"],
    &["admin:repository:bitbucket"],
);

pub const CREATE_COMMIT: Operation =
    op("POST", "/repositories/{workspace}/{repo_slug}/src", &["repository:write"], &[W]);
pub const GET_SRC_ROOT: Operation = op("GET", "/repositories/{workspace}/{repo_slug}/src", &["repository"], &[R]);
pub const GET_SRC: Operation =
    op("GET", "/repositories/{workspace}/{repo_slug}/src/{commit}/{path}", &["repository"], &[R]);
pub const GET_COMMIT: Operation =
    op("GET", "/repositories/{workspace}/{repo_slug}/commit/{commit}", &["repository"], &[R]);
pub const LIST_COMMITS: Operation = op("GET", "/repositories/{workspace}/{repo_slug}/commits", &["repository"], &[R]);
pub const LIST_COMMITS_AT: Operation =
    op("GET", "/repositories/{workspace}/{repo_slug}/commits/{revision}", &["repository"], &[R]);
pub const LIST_STATUSES: Operation =
    op("GET", "/repositories/{workspace}/{repo_slug}/commit/{commit}/statuses", &["repository"], &[R]);
/// Read scopes only: the description says so, surprising as it is.
pub const CREATE_STATUS: Operation =
    op("POST", "/repositories/{workspace}/{repo_slug}/commit/{commit}/statuses/build", &["repository"], &[R]);

pub const LIST_PULL_REQUESTS: Operation =
    op("GET", "/repositories/{workspace}/{repo_slug}/pullrequests", &["pullrequest"], &["read:pullrequest:bitbucket"]);
pub const GET_PULL_REQUEST: Operation = op(
    "GET",
    "/repositories/{workspace}/{repo_slug}/pullrequests/{pull_request_id}",
    &["pullrequest"],
    &["read:pullrequest:bitbucket"],
);

pub const LIST_PIPELINES: Operation =
    op("GET", "/repositories/{workspace}/{repo_slug}/pipelines", &["pipeline"], &["read:pipeline:bitbucket"]);
/// `pipeline` for legacy credentials, as the operation's `security` says (the narrative's scope
/// list says triggering manual pipelines takes `pipeline:write`; the operation does not).
pub const CREATE_PIPELINE: Operation = op(
    "POST",
    "/repositories/{workspace}/{repo_slug}/pipelines",
    &["pipeline"],
    &["read:pipeline:bitbucket", "write:pipeline:bitbucket"],
);
pub const GET_PIPELINE: Operation = op(
    "GET",
    "/repositories/{workspace}/{repo_slug}/pipelines/{pipeline_uuid}",
    &["pipeline"],
    &["read:pipeline:bitbucket"],
);
pub const STOP_PIPELINE: Operation = op(
    "POST",
    "/repositories/{workspace}/{repo_slug}/pipelines/{pipeline_uuid}/stopPipeline",
    &["pipeline:write"],
    &["write:pipeline:bitbucket"],
);
pub const LIST_STEPS: Operation = op(
    "GET",
    "/repositories/{workspace}/{repo_slug}/pipelines/{pipeline_uuid}/steps",
    &["pipeline"],
    &["read:pipeline:bitbucket"],
);
pub const GET_STEP: Operation = op(
    "GET",
    "/repositories/{workspace}/{repo_slug}/pipelines/{pipeline_uuid}/steps/{step_uuid}",
    &["pipeline"],
    &["read:pipeline:bitbucket"],
);
pub const GET_TEST_REPORTS: Operation = op(
    "GET",
    "/repositories/{workspace}/{repo_slug}/pipelines/{pipeline_uuid}/steps/{step_uuid}/test_reports",
    &["pipeline"],
    &["read:pipeline:bitbucket"],
);

pub const GET_TEST_CASES: Operation = op(
    "GET",
    "/repositories/{workspace}/{repo_slug}/pipelines/{pipeline_uuid}/steps/{step_uuid}/test_reports/test_cases",
    &["pipeline"],
    &["read:pipeline:bitbucket"],
);
pub const GET_TEST_CASE_REASONS: Operation = op(
    "GET",
    "/repositories/{workspace}/{repo_slug}/pipelines/{pipeline_uuid}/steps/{step_uuid}/test_reports/test_cases/{test_case_uuid}/test_case_reasons",
    &["pipeline"],
    &["read:pipeline:bitbucket"],
);
pub const GET_STATUS: Operation =
    op("GET", "/repositories/{workspace}/{repo_slug}/commit/{commit}/statuses/build/{key}", &["repository"], &[R]);
/// Read scopes only, as creating one.
pub const UPDATE_STATUS: Operation =
    op("PUT", "/repositories/{workspace}/{repo_slug}/commit/{commit}/statuses/build/{key}", &["repository"], &[R]);

/// Every operation above, for the test that holds them to the description.
#[cfg_attr(not(test), allow(dead_code))]
pub const OPERATIONS: &[&Operation] = &[
    &GET_USER,
    &GET_WORKSPACE,
    &GET_REPOSITORY,
    &LIST_HOOKS,
    &CREATE_HOOK,
    &GET_HOOK,
    &UPDATE_HOOK,
    &DELETE_HOOK,
    &LIST_BRANCHES,
    &CREATE_BRANCH,
    &GET_BRANCH,
    &DELETE_BRANCH,
    &LIST_RESTRICTIONS,
    &GET_RESTRICTION,
    &CREATE_COMMIT,
    &GET_SRC_ROOT,
    &GET_SRC,
    &GET_COMMIT,
    &LIST_COMMITS,
    &LIST_COMMITS_AT,
    &LIST_STATUSES,
    &CREATE_STATUS,
    &LIST_PULL_REQUESTS,
    &GET_PULL_REQUEST,
    &LIST_PIPELINES,
    &CREATE_PIPELINE,
    &GET_PIPELINE,
    &STOP_PIPELINE,
    &LIST_STEPS,
    &GET_STEP,
    &GET_TEST_REPORTS,
    &GET_TEST_CASES,
    &GET_TEST_CASE_REASONS,
    &GET_STATUS,
    &UPDATE_STATUS,
];

/// The legacy scopes a legacy scope implies, as the narrative ("Bitbucket OAuth 2.0 scopes")
/// states them: `repository:write` and `pullrequest` give `repository`; `pullrequest:write` gives
/// `pullrequest` and `repository:write`; `repository:admin` gives nothing. Nothing is said of
/// `pipeline:write`, so it gives nothing either.
pub fn implied(scope: &str) -> &'static [&'static str] {
    match scope {
        "repository:write" | "pullrequest" | "project" => &["repository"],
        "pullrequest:write" => &["pullrequest", "repository:write", "repository"],
        "issue:write" => &["issue"],
        "snippet:write" => &["snippet"],
        _ => &[],
    }
}

/// The scopes of `legacy` missing from `granted`, implications applied.
pub fn missing_legacy<'a>(required: &[&'a str], granted: &[String]) -> Vec<&'a str> {
    let has = |scope: &str| granted.iter().any(|g| g == scope || implied(g).contains(&scope));
    required.iter().copied().filter(|scope| !has(scope)).collect()
}

/// The scopes of `required` missing from `granted` (API tokens: no implications).
pub fn missing_granular<'a>(required: &[&'a str], granted: &[String]) -> Vec<&'a str> {
    required.iter().copied().filter(|scope| !granted.iter().any(|g| g == scope)).collect()
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    /// Atlassian's Cloud description: `$BITBUCKET_OPENAPI_DIR` or `../shared/bitbucket-openapi`
    /// next to the repository, as the conformance checker finds it.
    fn description() -> Option<Value> {
        let dir = std::env::var_os("BITBUCKET_OPENAPI_DIR").map(std::path::PathBuf::from).unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/bitbucket-openapi")
        });
        let text = std::fs::read_to_string(dir.join("cloud.swagger.v3.json")).ok()?;
        Some(serde_json::from_str(&text).expect("the Cloud description is JSON"))
    }

    #[test]
    fn scopes_match_the_description() {
        let Some(description) = description() else {
            eprintln!("SKIPPED: the Cloud description is not there (set BITBUCKET_OPENAPI_DIR)");
            return;
        };
        let strings = |v: &Value| -> Vec<String> {
            let mut out: Vec<String> = v.as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_owned()).collect();
            out.sort();
            out
        };
        let sorted = |v: &[&str]| -> Vec<String> {
            let mut out: Vec<String> = v.iter().map(|s| s.to_string()).collect();
            out.sort();
            out
        };
        for operation in OPERATIONS {
            let op = &description["paths"][operation.path][operation.method.to_lowercase()];
            assert!(op.is_object(), "{operation:?} is not described");
            let legacy = op["security"].as_array().unwrap().iter().find_map(|s| s.get("oauth2")).unwrap();
            assert_eq!(strings(legacy), sorted(operation.legacy), "legacy scopes of {operation:?}");
            let granular: Vec<&Value> = op["x-atlassian-oauth2-scopes"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| e.get("state").is_none_or(|s| s == "Current"))
                .map(|e| &e["scopes"])
                .collect();
            assert_eq!(granular.len(), 1, "{operation:?}");
            assert_eq!(strings(granular[0]), sorted(operation.granular), "API-token scopes of {operation:?}");
        }
    }

    fn strings(scopes: &[&str]) -> Vec<String> {
        scopes.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn legacy_scopes_imply_as_the_narrative_says() {
        assert!(missing_legacy(&["repository"], &strings(&["pullrequest"])).is_empty());
        assert!(missing_legacy(&["repository"], &strings(&["repository:write"])).is_empty());
        assert_eq!(missing_legacy(&["repository"], &strings(&["repository:admin"])), ["repository"]);
        assert_eq!(missing_legacy(&["pullrequest"], &strings(&["repository:write"])), ["pullrequest"]);
        assert_eq!(missing_legacy(&["pipeline"], &strings(&["pipeline:write"])), ["pipeline"]);
        assert!(missing_legacy(&[], &strings(&[])).is_empty());
        assert_eq!(
            missing_granular(&[W, R], &strings(&[W])),
            [R],
            "write:repository:bitbucket does not imply read:repository:bitbucket"
        );
    }
}
