//! What each feature asks of Bitbucket, in one table: feature → the operations it sends → the
//! scopes (Cloud) or permission (Data Center) each operation needs, as Atlassian's descriptions
//! state them (`../shared/bitbucket-openapi/`; `tests/capabilities.rs` holds the table to them
//! and to what the sandbox enforces). The connection test probes it feature by feature, the
//! client names the operation and features in its refusals, and the README's scope table and
//! docs/BITBUCKET.md's operation table are rendered from it (a test fails when they differ).

use std::fmt::Write as _;

use serde::Serialize;

use super::credentials::Credential;
use super::{BitbucketError, NO_PIPELINES};
use crate::webhook::Flavor;

/// A Data Center repository permission, weakest first (each includes the ones before it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Permission {
    #[serde(rename = "REPO_READ")]
    RepoRead,
    #[serde(rename = "REPO_WRITE")]
    RepoWrite,
    #[serde(rename = "REPO_ADMIN")]
    RepoAdmin,
}

impl Permission {
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::RepoRead => "REPO_READ",
            Permission::RepoWrite => "REPO_WRITE",
            Permission::RepoAdmin => "REPO_ADMIN",
        }
    }
}

/// A read request that shows whether the credential may send an operation, with no side
/// effect: one page of one item (the client builds it, [`super::Bitbucket::probe`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Probe {
    Repository,
    Webhooks,
    /// One branch listed: what reading a branch (or listing them) needs.
    Branches,
    PullRequests,
    BranchRestrictions,
    Pipelines,
}

/// One Bitbucket operation the client sends.
#[derive(Debug, PartialEq, Eq)]
pub struct Operation {
    /// `C1`…, `D1`…: how docs/BITBUCKET.md refers to it.
    pub key: &'static str,
    pub flavor: Flavor,
    pub method: &'static str,
    /// The description's path template: Cloud relative to `/2.0`, Data Center to `/rest`.
    pub path: &'static str,
    /// The description's `operationId` (most Cloud operations have none).
    pub operation_id: Option<&'static str>,
    /// The description's `summary`.
    pub summary: &'static str,
    /// The port methods (`super::Bitbucket`) that send it.
    pub port: &'static str,
    /// Access tokens and OAuth consumers: the operation's `security` `oauth2` scopes.
    pub legacy: &'static [&'static str],
    /// API tokens: the operation's `x-atlassian-oauth2-scopes` (all required, none implies another).
    pub granular: &'static [&'static str],
    /// Data Center: the permission its description names (missing → 401).
    pub permission: Option<Permission>,
    /// A refusal is tolerated (the connection test goes on without what it gives).
    pub optional: bool,
    /// Another reason Bitbucket gives the same refusal, said with it.
    pub also: &'static str,
    pub probe: Option<Probe>,
    /// How the project verifies it, and where the live service is known to differ.
    pub verified: &'static str,
}

const fn cloud(key: &'static str, method: &'static str, path: &'static str, summary: &'static str) -> Operation {
    Operation {
        key,
        flavor: Flavor::Cloud,
        method,
        path,
        operation_id: None,
        summary,
        port: "",
        legacy: &[],
        granular: &[],
        permission: None,
        optional: false,
        also: "",
        probe: None,
        verified: "",
    }
}

const fn dc(
    key: &'static str,
    method: &'static str,
    path: &'static str,
    operation_id: &'static str,
    summary: &'static str,
    permission: Permission,
) -> Operation {
    Operation {
        key,
        flavor: Flavor::DataCenter,
        method,
        path,
        operation_id: Some(operation_id),
        summary,
        port: "",
        legacy: &[],
        granular: &[],
        permission: Some(permission),
        optional: false,
        also: "",
        probe: None,
        verified: "",
    }
}

const R: &str = "read:repository:bitbucket";
const W: &str = "write:repository:bitbucket";
const REPO: &str = "/repositories/{workspace}/{repo_slug}";
const SANDBOX: &str = "sandbox tests; traffic check";

macro_rules! cloud_path {
    ($tail:literal) => {
        concat!("/repositories/{workspace}/{repo_slug}", $tail)
    };
}
macro_rules! dc_path {
    ($tail:literal) => {
        concat!("/api/latest/projects/{projectKey}/repos/{repositorySlug}", $tail)
    };
}

pub const C_USER: Operation = Operation {
    port: "verify_access",
    legacy: &["account"],
    granular: &["read:user:bitbucket"],
    optional: true,
    verified: "sandbox tests; traffic check. Repository and project access tokens cannot hold `account`: \
               the 403 is tolerated (no account name shown)",
    ..cloud("C1", "GET", "/user", "Get current user")
};
pub const C_REPOSITORY: Operation = Operation {
    port: "verify_access, main_branch",
    legacy: &["repository"],
    granular: &[R],
    probe: Some(Probe::Repository),
    verified: SANDBOX,
    ..cloud("C2", "GET", REPO, "Get a repository")
};
pub const C_LIST_HOOKS: Operation = Operation {
    port: "list_webhooks",
    legacy: &["webhook"],
    granular: &["read:webhook:bitbucket"],
    probe: Some(Probe::Webhooks),
    verified: "sandbox tests; traffic check. Live hooks carry `links.self` (live rule `cloud-hooks-links`)",
    ..cloud("C3", "GET", cloud_path!("/hooks"), "List webhooks for a repository")
};
pub const C_CREATE_HOOK: Operation = Operation {
    port: "create_webhook",
    legacy: &["webhook"],
    granular: &["read:webhook:bitbucket", "write:webhook:bitbucket"],
    verified: "sandbox tests; traffic check. The description has no request body: the JSON is \
               `webhook_subscription`'s fields (allow-list `cloud-hooks-json-body`)",
    ..cloud("C4", "POST", cloud_path!("/hooks"), "Create a webhook for a repository")
};
pub const C_UPDATE_HOOK: Operation = Operation {
    port: "update_webhook",
    legacy: &["webhook"],
    granular: &["read:webhook:bitbucket", "write:webhook:bitbucket"],
    verified: "sandbox tests; traffic check (allow-list `cloud-hooks-json-body`)",
    ..cloud("C5", "PUT", cloud_path!("/hooks/{uid}"), "Update a webhook for a repository")
};
pub const C_DELETE_HOOK: Operation = Operation {
    port: "delete_webhook",
    legacy: &["webhook"],
    granular: &["delete:webhook:bitbucket"],
    verified: "sandbox tests; traffic check. 404 is taken as done",
    ..cloud("C6", "DELETE", cloud_path!("/hooks/{uid}"), "Delete a webhook for a repository")
};
pub const C_GET_BRANCH: Operation = Operation {
    port: "branch_tip",
    legacy: &["repository"],
    granular: &[R],
    probe: Some(Probe::Branches),
    verified: "sandbox tests; traffic check. `{name}` keeps a branch's `/` (live Cloud accepts it)",
    ..cloud("C7", "GET", cloud_path!("/refs/branches/{name}"), "Get a branch")
};
pub const C_READ_FILE: Operation = Operation {
    port: "read_file",
    legacy: &["repository"],
    granular: &[R],
    verified: "sandbox tests; traffic check. Read by commit hash: live Cloud refuses `src/{branch-with-/}/…`",
    ..cloud("C8", "GET", cloud_path!("/src/{commit}/{path}"), "Get file or directory contents")
};
pub const C_COMMIT_FILE: Operation = Operation {
    port: "commit_file",
    legacy: &["repository:write"],
    granular: &[W],
    verified: "sandbox tests; traffic check. Multipart form as the operation's text says (the description \
               lists the fields as query parameters: allow-list `cloud-src-form-body`); the commit comes \
               back in `Location` (undocumented)",
    ..cloud("C9", "POST", cloud_path!("/src"), "Create a commit by uploading a file")
};
pub const C_LIST_BRANCHES: Operation = Operation {
    port: "list_branches",
    legacy: &["repository"],
    granular: &[R],
    probe: Some(Probe::Branches),
    verified: SANDBOX,
    ..cloud("C10", "GET", cloud_path!("/refs/branches"), "List open branches")
};
pub const C_LIST_PULL_REQUESTS: Operation = Operation {
    port: "list_pull_requests",
    legacy: &["pullrequest"],
    granular: &["read:pullrequest:bitbucket"],
    probe: Some(Probe::PullRequests),
    verified: "sandbox tests; traffic check. Live pages hold at most 50 and hashes are 12 digits (live \
               rules `cloud-pullrequests-*`, `cloud-pullrequest-short-hashes`; the sandbox does both)",
    ..cloud("C11", "GET", cloud_path!("/pullrequests"), "List pull requests")
};
pub const C_LIST_RESTRICTIONS: Operation = Operation {
    port: "delete_restricted_patterns",
    legacy: &["repository:admin"],
    granular: &["admin:repository:bitbucket"],
    probe: Some(Probe::BranchRestrictions),
    verified: SANDBOX,
    ..cloud("C12", "GET", cloud_path!("/branch-restrictions"), "List branch restrictions")
};
pub const C_DELETE_BRANCH: Operation = Operation {
    port: "delete_branch",
    legacy: &["repository:write"],
    granular: &[W],
    verified: "sandbox tests; traffic check. 404 is taken as done; the main branch is 400 (allow-list \
               `cloud-delete-main-branch-400`, to verify live)",
    ..cloud("C13", "DELETE", cloud_path!("/refs/branches/{name}"), "Delete a branch")
};
pub const C_RUN_PIPELINE: Operation = Operation {
    operation_id: Some("createPipelineForRepository"),
    port: "run_pipeline",
    legacy: &["pipeline"],
    granular: &["read:pipeline:bitbucket", "write:pipeline:bitbucket"],
    verified: "sandbox tests; traffic check. Sent to `pipelines/` as the operation's examples do \
               (allow-list `cloud-trailing-slash`); the body has no top-level `type`, as in those \
               examples (`cloud-pipeline-request-top-type`). The narrative says triggering needs \
               `pipeline:write`; the operation's security says `pipeline`",
    ..cloud("C14", "POST", cloud_path!("/pipelines"), "Run a pipeline")
};
pub const C_STOP_PIPELINE: Operation = Operation {
    operation_id: Some("stopPipeline"),
    port: "stop_pipeline",
    legacy: &["pipeline:write"],
    granular: &["write:pipeline:bitbucket"],
    verified: SANDBOX,
    ..cloud("C15", "POST", cloud_path!("/pipelines/{pipeline_uuid}/stopPipeline"), "Stop a pipeline")
};
pub const C_GET_PIPELINE: Operation = Operation {
    operation_id: Some("getPipelineForRepository"),
    port: "get_pipeline",
    legacy: &["pipeline"],
    granular: &["read:pipeline:bitbucket"],
    verified: "sandbox tests; traffic check. The trigger is read from `trigger.type` (the description \
               defines no `trigger.name`; live sends none)",
    ..cloud("C16", "GET", cloud_path!("/pipelines/{pipeline_uuid}"), "Get a pipeline")
};
pub const C_LIST_PIPELINES: Operation = Operation {
    operation_id: Some("getPipelinesForRepository"),
    port: "list_pipelines",
    legacy: &["pipeline"],
    granular: &["read:pipeline:bitbucket"],
    probe: Some(Probe::Pipelines),
    verified: "sandbox tests; traffic check (`pipelines/`: allow-list `cloud-trailing-slash`)",
    ..cloud("C17", "GET", cloud_path!("/pipelines"), "List pipelines")
};
pub const C_LIST_STEPS: Operation = Operation {
    operation_id: Some("getPipelineStepsForRepository"),
    port: "test_summary",
    legacy: &["pipeline"],
    granular: &["read:pipeline:bitbucket"],
    verified: "sandbox tests; traffic check (`steps/`: allow-list `cloud-trailing-slash`)",
    ..cloud("C18", "GET", cloud_path!("/pipelines/{pipeline_uuid}/steps"), "List steps for a pipeline")
};
pub const C_TEST_REPORTS: Operation = Operation {
    operation_id: Some("getPipelineTestReports"),
    port: "test_summary",
    legacy: &["pipeline"],
    granular: &["read:pipeline:bitbucket"],
    verified: "sandbox tests; traffic check. The description documents the 200 without a body; the \
               summary's fields are live-only (allow-list `cloud-test-reports-json`)",
    ..cloud(
        "C19",
        "GET",
        cloud_path!("/pipelines/{pipeline_uuid}/steps/{step_uuid}/test_reports"),
        "Get a summary of test reports for a given step of a pipeline.",
    )
};
pub const C_TEST_CASES: Operation = Operation {
    operation_id: Some("getPipelineTestReportTestCases"),
    port: "test_summary",
    legacy: &["pipeline"],
    granular: &["read:pipeline:bitbucket"],
    verified: "sandbox tests; traffic check. Read only for a step whose summary counts failures; the \
               description documents the 200 without a body: `values` of `{uuid, name, \
               fully_qualified_name, package_name, status}` is what the sandbox serves (allow-list \
               `cloud-test-reports-json`, to verify live)",
    ..cloud(
        "C21",
        "GET",
        cloud_path!("/pipelines/{pipeline_uuid}/steps/{step_uuid}/test_reports/test_cases"),
        "Get test cases for a given step of a pipeline.",
    )
};
pub const C_TEST_CASE_REASONS: Operation = Operation {
    operation_id: Some("getPipelineTestReportTestCaseReasons"),
    port: "test_summary",
    legacy: &["pipeline"],
    granular: &["read:pipeline:bitbucket"],
    verified: "sandbox tests; traffic check. One per failed case, at most 20 a run; documented without \
               a body (allow-list `cloud-test-reports-json`): `values` of `{message}` in the sandbox",
    ..cloud(
        "C22",
        "GET",
        cloud_path!(
            "/pipelines/{pipeline_uuid}/steps/{step_uuid}/test_reports/test_cases/{test_case_uuid}/test_case_reasons"
        ),
        "Get test case reasons (output) for a given test case in a step of a pipeline.",
    )
};
pub const C_SET_STATUS: Operation = Operation {
    port: "set_commit_status",
    legacy: &["repository"],
    granular: &[R],
    verified: "sandbox tests; traffic check. Read scopes only, as the description says; a second POST \
               with the same key replaces the status; no top-level `type` (allow-list \
               `cloud-status-request-top-type`)",
    ..cloud("C23", "POST", cloud_path!("/commit/{commit}/statuses/build"), "Create a build status for a commit")
};
/// On `bitbucket.org` (not under `/2.0`), described by the checker's supplement.
pub const C_OAUTH_TOKEN: Operation = Operation {
    operation_id: Some("oauth2AccessToken"),
    port: "(every call of an `oauth_consumer`)",
    verified: "sandbox tests; traffic check against infra/conformance/supplement/cloud-oauth.openapi.json \
               (the description names only the token URL). Live answers carry `scope` and no refresh \
               token for client credentials (live rules `cloud-oauth-*`); the client reads neither",
    ..cloud("C20", "POST", "/site/oauth2/access_token", "Obtain an access token (RFC 6749 token endpoint)")
};

pub const D_REPOSITORY: Operation = Operation {
    port: "verify_access",
    probe: Some(Probe::Repository),
    verified: "sandbox tests; traffic check. Reads `X-AUSERNAME` (undocumented) for the account",
    ..dc("D1", "GET", dc_path!(""), "getRepository", "Get repository", Permission::RepoRead)
};
pub const D_DEFAULT_BRANCH: Operation = Operation {
    port: "verify_access, main_branch",
    verified: SANDBOX,
    ..dc(
        "D2",
        "GET",
        dc_path!("/default-branch"),
        "getDefaultBranch_2",
        "Get repository default branch",
        Permission::RepoRead,
    )
};
pub const D_LIST_HOOKS: Operation = Operation {
    port: "list_webhooks",
    probe: Some(Probe::Webhooks),
    verified: SANDBOX,
    ..dc("D3", "GET", dc_path!("/webhooks"), "findWebhooks_1", "Find webhooks", Permission::RepoAdmin)
};
pub const D_CREATE_HOOK: Operation = Operation {
    port: "create_webhook",
    verified: "sandbox tests; traffic check. The description documents 200; the sandbox answers 201 \
               (allow-list `datacenter-create-webhook-201`, to verify live); the client takes any 2xx",
    ..dc("D4", "POST", dc_path!("/webhooks"), "createWebhook_1", "Create webhook", Permission::RepoAdmin)
};
pub const D_UPDATE_HOOK: Operation = Operation {
    port: "update_webhook",
    verified: SANDBOX,
    ..dc("D5", "PUT", dc_path!("/webhooks/{webhookId}"), "updateWebhook_1", "Update webhook", Permission::RepoAdmin)
};
pub const D_DELETE_HOOK: Operation = Operation {
    port: "delete_webhook",
    verified: "sandbox tests (a `REPO_WRITE` token is told the missing permission); traffic check",
    ..dc("D6", "DELETE", dc_path!("/webhooks/{webhookId}"), "deleteWebhook_1", "Delete webhook", Permission::RepoAdmin)
};
pub const D_BRANCHES: Operation = Operation {
    port: "branch_tip, list_branches",
    probe: Some(Probe::Branches),
    verified: "sandbox tests; traffic check. Live branches carry `isDefault` where the description \
               says `default` (live rule `datacenter-branches-isDefault`)",
    ..dc("D7", "GET", dc_path!("/branches"), "getBranches", "Find branches", Permission::RepoRead)
};
pub const D_RAW: Operation = Operation {
    port: "read_file",
    verified: "sandbox tests; traffic check (the file's bytes, documented as JSON: allow-list \
               `datacenter-raw-content-type`)",
    ..dc(
        "D8",
        "GET",
        dc_path!("/raw/{path}"),
        "streamRaw",
        "Get raw content of a file at revision",
        Permission::RepoRead,
    )
};
pub const D_PULL_REQUESTS: Operation = Operation {
    port: "list_pull_requests",
    probe: Some(Probe::PullRequests),
    verified: SANDBOX,
    ..dc("D10", "GET", dc_path!("/pull-requests"), "getPage", "Get pull requests for repository", Permission::RepoRead)
};
pub const D_RESTRICTIONS: Operation = Operation {
    port: "delete_restricted_patterns",
    probe: Some(Probe::BranchRestrictions),
    verified: "sandbox tests; traffic check. Sent to `branch-permissions/2.0` (the description's \
               `latest`; live serves both)",
    ..dc(
        "D11",
        "GET",
        "/branch-permissions/latest/projects/{projectKey}/repos/{repositorySlug}/restrictions",
        "getRestrictions_1",
        "Search for ref restrictions",
        Permission::RepoAdmin,
    )
};
pub const D_DELETE_BRANCH: Operation = Operation {
    port: "delete_branch",
    also: "(or a branch permission protects that branch)",
    verified: "sandbox tests (a restricted branch is 401 with the user named: a missing permission, \
               not a bad credential); traffic check. Also needs the branch permission on that ref",
    ..dc(
        "D12",
        "DELETE",
        "/branch-utils/latest/projects/{projectKey}/repos/{repositorySlug}/branches",
        "deleteBranch",
        "Delete branch",
        Permission::RepoWrite,
    )
};
pub const D_EDIT_FILE: Operation = Operation {
    port: "commit_file",
    verified: "sandbox tests; traffic check. A project or repository HTTP access token has no user and \
               is refused with 403: backups need a personal token (or a user's)",
    ..dc("D13", "PUT", dc_path!("/browse/{path}"), "editFile", "Edit file", Permission::RepoWrite)
};

pub const D_SET_BUILD_STATUS: Operation = Operation {
    port: "set_commit_status",
    verified: "sandbox tests; traffic check. Data Center 7.14+; one status per key, replaced when posted \
               again; a stopped environment is `CANCELLED`",
    ..dc("D14", "POST", dc_path!("/commits/{commitId}/builds"), "add", "Store a build status", Permission::RepoRead)
};

/// Every operation, in docs/BITBUCKET.md's order.
pub const OPERATIONS: &[&Operation] = &[
    &C_USER,
    &C_REPOSITORY,
    &C_LIST_HOOKS,
    &C_CREATE_HOOK,
    &C_UPDATE_HOOK,
    &C_DELETE_HOOK,
    &C_GET_BRANCH,
    &C_READ_FILE,
    &C_COMMIT_FILE,
    &C_LIST_BRANCHES,
    &C_LIST_PULL_REQUESTS,
    &C_LIST_RESTRICTIONS,
    &C_DELETE_BRANCH,
    &C_RUN_PIPELINE,
    &C_STOP_PIPELINE,
    &C_GET_PIPELINE,
    &C_LIST_PIPELINES,
    &C_LIST_STEPS,
    &C_TEST_REPORTS,
    &C_OAUTH_TOKEN,
    &C_TEST_CASES,
    &C_TEST_CASE_REASONS,
    &C_SET_STATUS,
    &D_REPOSITORY,
    &D_DEFAULT_BRANCH,
    &D_LIST_HOOKS,
    &D_CREATE_HOOK,
    &D_UPDATE_HOOK,
    &D_DELETE_HOOK,
    &D_BRANCHES,
    &D_RAW,
    &D_PULL_REQUESTS,
    &D_RESTRICTIONS,
    &D_DELETE_BRANCH,
    &D_EDIT_FILE,
    &D_SET_BUILD_STATUS,
];

/// One thing the project does with a repository, and every operation it sends for it.
#[derive(Debug)]
pub struct Feature {
    pub name: &'static str,
    pub what: &'static str,
    pub operations: &'static [&'static Operation],
    /// Said beside its Data Center permission in the README.
    pub dc_note: &'static str,
}

pub const CONNECTION: Feature = Feature {
    name: "connection",
    what: "the connection test: the credential and the repository",
    operations: &[&C_USER, &C_REPOSITORY, &C_OAUTH_TOKEN, &D_REPOSITORY, &D_DEFAULT_BRANCH],
    dc_note: "",
};
pub const WEBHOOKS: Feature = Feature {
    name: "webhooks",
    what: "register, turn on and off, re-key and remove the webhook",
    operations: &[
        &C_LIST_HOOKS,
        &C_CREATE_HOOK,
        &C_UPDATE_HOOK,
        &C_DELETE_HOOK,
        &D_LIST_HOOKS,
        &D_CREATE_HOOK,
        &D_UPDATE_HOOK,
        &D_DELETE_HOOK,
    ],
    dc_note: "",
};
pub const BACKUPS: Feature = Feature {
    name: "backups",
    what: "commit JSON snapshots to a branch",
    operations: &[&C_GET_BRANCH, &C_READ_FILE, &C_COMMIT_FILE, &D_DEFAULT_BRANCH, &D_BRANCHES, &D_RAW, &D_EDIT_FILE],
    dc_note: "a personal token: a project or repository token cannot edit files",
};
pub const PIPELINES: Feature = Feature {
    name: "pipelines",
    what: "run, stop and follow builds, with their test reports",
    operations: &[
        &C_RUN_PIPELINE,
        &C_STOP_PIPELINE,
        &C_GET_PIPELINE,
        &C_LIST_PIPELINES,
        &C_LIST_STEPS,
        &C_TEST_REPORTS,
        &C_TEST_CASES,
        &C_TEST_CASE_REASONS,
    ],
    dc_note: "",
};
pub const BRANCH_CLEANUP: Feature = Feature {
    name: "branch cleanup",
    what: "delete merged and abandoned branches, respecting delete restrictions and open pull requests",
    operations: &[
        &C_REPOSITORY,
        &C_LIST_BRANCHES,
        &C_LIST_PULL_REQUESTS,
        &C_LIST_RESTRICTIONS,
        &C_DELETE_BRANCH,
        &D_DEFAULT_BRANCH,
        &D_BRANCHES,
        &D_PULL_REQUESTS,
        &D_RESTRICTIONS,
        &D_DELETE_BRANCH,
    ],
    dc_note: "and the branch permission to delete each branch",
};
pub const ENVIRONMENTS: Feature = Feature {
    name: "environments",
    what: "mirror branches as environments (the scheduled reconciliation lists branches and pull requests)",
    operations: &[&C_LIST_BRANCHES, &C_LIST_PULL_REQUESTS, &D_BRANCHES, &D_PULL_REQUESTS],
    dc_note: "",
};
pub const STATUSES: Feature = Feature {
    name: "environment statuses",
    what: "show an environment's deployment state on its head commit (reported, or `environment_url`)",
    operations: &[&C_SET_STATUS, &D_SET_BUILD_STATUS],
    dc_note: "",
};

/// Every feature, in the order the connection test reports them.
pub const FEATURES: &[&Feature] =
    &[&CONNECTION, &WEBHOOKS, &BACKUPS, &PIPELINES, &BRANCH_CLEANUP, &ENVIRONMENTS, &STATUSES];

/// The vocabulary a credential's scopes are in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vocabulary {
    /// Atlassian API tokens: `read:repository:bitbucket`…
    Granular,
    /// Access tokens and OAuth consumers: `repository`…
    Legacy,
    /// Data Center: a repository permission.
    Permission,
}

impl Vocabulary {
    pub fn of(credential: &Credential) -> Self {
        match credential {
            Credential::ApiToken { .. } | Credential::AppPassword { .. } => Vocabulary::Granular,
            Credential::AccessToken { .. } | Credential::OauthConsumer { .. } => Vocabulary::Legacy,
            Credential::HttpToken { .. } => Vocabulary::Permission,
        }
    }
}

/// The legacy scopes `scope` gives besides itself, as the description's narrative ("Bitbucket
/// OAuth 2.0 scopes") states them; `repository:admin` and `pipeline:write` give nothing.
pub fn implied(scope: &str) -> &'static [&'static str] {
    match scope {
        "repository:write" | "pullrequest" | "project" => &["repository"],
        "pullrequest:write" => &["pullrequest", "repository:write", "repository"],
        _ => &[],
    }
}

/// Whether `granted` holds `scope`, the narrative's implications applied (granular scopes
/// imply nothing, so for them this is membership).
pub fn holds(granted: &[String], scope: &str) -> bool {
    granted.iter().any(|g| g == scope || implied(g).contains(&scope))
}

impl Operation {
    /// The scopes it needs in `vocabulary` (Data Center: its permission).
    pub fn needs(&self, vocabulary: Vocabulary) -> Vec<&'static str> {
        match vocabulary {
            Vocabulary::Granular => self.granular.to_vec(),
            Vocabulary::Legacy => self.legacy.to_vec(),
            Vocabulary::Permission => self.permission.map(Permission::as_str).into_iter().collect(),
        }
    }

    /// The features that send it, e.g. `webhooks, branch cleanup`.
    pub fn features(&self) -> String {
        FEATURES
            .iter()
            .filter(|f| f.operations.iter().any(|o| o.key == self.key))
            .map(|f| f.name)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl Feature {
    /// Its operations on `flavor`.
    pub fn on(&self, flavor: Flavor) -> impl Iterator<Item = &'static Operation> + '_ {
        self.operations.iter().copied().filter(move |o| o.flavor == flavor)
    }

    /// Whether `flavor` can do it at all (Data Center has no Pipelines).
    pub fn supported(&self, flavor: Flavor) -> bool {
        self.on(flavor).next().is_some()
    }

    /// What a credential in `vocabulary` needs for it (optional operations left out): granular
    /// scopes all listed; legacy ones without those another listed one implies; Data Center the
    /// strongest permission any of its operations names.
    pub fn needs(&self, vocabulary: Vocabulary) -> Vec<&'static str> {
        let flavor = if vocabulary == Vocabulary::Permission { Flavor::DataCenter } else { Flavor::Cloud };
        let required = self.on(flavor).filter(|o| !o.optional);
        match vocabulary {
            Vocabulary::Permission => {
                required.filter_map(|o| o.permission).max().map(Permission::as_str).into_iter().collect()
            }
            _ => {
                let mut scopes = Vec::new();
                for scope in required.flat_map(|o| o.needs(vocabulary)) {
                    if !scopes.contains(&scope) {
                        scopes.push(scope);
                    }
                }
                let all: Vec<String> = scopes.iter().map(|s| s.to_string()).collect();
                scopes.retain(|s| !all.iter().any(|g| g != s && implied(g).contains(s)));
                scopes
            }
        }
    }

    /// What only its optional operations need (shown, not required).
    pub fn optional(&self, vocabulary: Vocabulary) -> Vec<&'static str> {
        let flavor = if vocabulary == Vocabulary::Permission { Flavor::DataCenter } else { Flavor::Cloud };
        self.on(flavor).filter(|o| o.optional).flat_map(|o| o.needs(vocabulary)).collect()
    }

    /// The distinct read requests that show whether it may work on `flavor`.
    pub fn probes(&self, flavor: Flavor) -> Vec<(Probe, &'static Operation)> {
        let mut probes: Vec<(Probe, &'static Operation)> = Vec::new();
        for operation in self.on(flavor).filter(|o| !o.optional) {
            if let Some(probe) = operation.probe
                && !probes.iter().any(|(p, _)| *p == probe)
            {
                probes.push((probe, operation));
            }
        }
        probes
    }
}

/// Every scope a credential in `vocabulary` needs for everything this project does.
pub fn every_scope(vocabulary: Vocabulary) -> Vec<&'static str> {
    let mut scopes = Vec::new();
    for feature in FEATURES {
        for scope in feature.needs(vocabulary).into_iter().chain(feature.optional(vocabulary)) {
            if !scopes.contains(&scope) {
                scopes.push(scope);
            }
        }
    }
    if vocabulary == Vocabulary::Legacy {
        let all: Vec<String> = scopes.iter().map(|s| s.to_string()).collect();
        scopes.retain(|s| !all.iter().any(|g| g != s && implied(g).contains(s)));
    }
    if vocabulary == Vocabulary::Permission {
        let strongest = OPERATIONS.iter().filter_map(|o| o.permission).max();
        return strongest.map(Permission::as_str).into_iter().collect();
    }
    scopes
}

/// The operation `method` + `path` (relative to the Cloud API or to Data Center's `/rest`, as
/// the client sends it: percent-encoded segments, Data Center plugin versions) is, if any.
pub fn operation_for(flavor: Flavor, method: &str, path: &str) -> Option<&'static Operation> {
    let path = path.trim_end_matches('/');
    OPERATIONS.iter().copied().find(|o| o.flavor == flavor && o.method == method && matches_template(o.path, path))
}

/// `{x}` matches one segment, except a last `{path}` / `{name}`, which may span several; a Data
/// Center plugin's version (`2.0`, `1.0`) matches the description's `latest`.
fn matches_template(template: &str, path: &str) -> bool {
    let template: Vec<&str> = template.trim_start_matches('/').split('/').collect();
    let path: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let last_spans = matches!(template.last(), Some(&"{path}" | &"{name}"));
    if path.len() < template.len() || (!last_spans && path.len() != template.len()) {
        return false;
    }
    template.iter().zip(&path).enumerate().all(|(i, (t, p))| {
        (t.starts_with('{') && !p.is_empty())
            || t == p
            || (i == 1 && *t == "latest" && p.starts_with(|c: char| c.is_ascii_digit()))
    })
}

/// One feature's outcome in the connection test.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FeatureReport {
    /// `ok`, `missing` (Bitbucket refused for lack of a scope or permission), `unsupported` (the
    /// product cannot do it), `failed` (another failure: its reason and message).
    pub status: &'static str,
    /// What is missing, as Bitbucket named it (scopes in the credential's vocabulary; on Data
    /// Center the permission).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<String>,
    /// What the feature also needs that only a write would show (none was sent).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_checked: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl FeatureReport {
    fn ok(not_checked: Vec<String>) -> Self {
        FeatureReport { status: "ok", missing: vec![], not_checked, reason: None, message: None }
    }
}

/// The request a probe sends on `flavor` (the clients build these).
pub fn probe_operation(flavor: Flavor, probe: Probe) -> Option<&'static Operation> {
    Some(match (flavor, probe) {
        (Flavor::Cloud, Probe::Repository) => &C_REPOSITORY,
        (Flavor::Cloud, Probe::Webhooks) => &C_LIST_HOOKS,
        (Flavor::Cloud, Probe::Branches) => &C_LIST_BRANCHES,
        (Flavor::Cloud, Probe::PullRequests) => &C_LIST_PULL_REQUESTS,
        (Flavor::Cloud, Probe::BranchRestrictions) => &C_LIST_RESTRICTIONS,
        (Flavor::Cloud, Probe::Pipelines) => &C_LIST_PIPELINES,
        (Flavor::DataCenter, Probe::Repository) => &D_REPOSITORY,
        (Flavor::DataCenter, Probe::Webhooks) => &D_LIST_HOOKS,
        (Flavor::DataCenter, Probe::Branches) => &D_BRANCHES,
        (Flavor::DataCenter, Probe::PullRequests) => &D_PULL_REQUESTS,
        (Flavor::DataCenter, Probe::BranchRestrictions) => &D_RESTRICTIONS,
        (Flavor::DataCenter, Probe::Pipelines) => return None,
    })
}

/// Every probe the features need on `flavor`, each once.
pub fn probes(flavor: Flavor) -> Vec<Probe> {
    let mut all = Vec::new();
    for feature in FEATURES {
        for (probe, _) in feature.probes(flavor) {
            if !all.contains(&probe) {
                all.push(probe);
            }
        }
    }
    all
}

/// Each feature's outcome from the probes' answers. A feature is `missing` what Bitbucket said
/// it lacks: the scopes or permission a refused probe named, and (Cloud) those absent from the
/// scopes a refusal said the credential holds. What only a write would show, and no answer
/// settled, is `not_checked`; a Data Center permission counts as shown by any probe that needed
/// it or a stronger one.
pub fn assess(
    flavor: Flavor,
    vocabulary: Vocabulary,
    answers: &[(Probe, Result<(), BitbucketError>)],
) -> Vec<(&'static str, FeatureReport)> {
    let operation = |probe: Probe| probe_operation(flavor, probe);
    // What the answers showed, whatever feature asked.
    let mut shown: Vec<String> = Vec::new();
    let mut refused: Vec<String> = Vec::new();
    let mut granted: Option<Vec<String>> = None;
    let mut strongest_shown: Option<Permission> = None;
    let mut weakest_refused: Option<Permission> = None;
    for (probe, answer) in answers {
        let Some(operation) = operation(*probe) else { continue };
        match answer {
            Ok(()) => {
                shown.extend(operation.needs(vocabulary).into_iter().map(str::to_owned));
                strongest_shown = strongest_shown.max(operation.permission);
            }
            Err(BitbucketError::Forbidden { missing, granted: said, .. }) => {
                refused.extend(missing.iter().cloned());
                if granted.is_none() {
                    granted.clone_from(said);
                }
                if let Some(p) = operation.permission {
                    weakest_refused = Some(weakest_refused.map_or(p, |w| w.min(p)));
                }
            }
            Err(_) => {}
        }
    }
    let mut reports = Vec::new();
    for feature in FEATURES {
        if !feature.supported(flavor) {
            let report = FeatureReport {
                status: "unsupported",
                missing: vec![],
                not_checked: vec![],
                reason: Some("unsupported"),
                message: Some(NO_PIPELINES.to_owned()),
            };
            reports.push((feature.name, report));
            continue;
        }
        let own: Vec<&BitbucketError> = feature
            .probes(flavor)
            .iter()
            .filter_map(|(probe, _)| answers.iter().find(|(p, _)| p == probe))
            .filter_map(|(_, answer)| answer.as_ref().err())
            .collect();
        if let Some(failure) = own.iter().find(|e| !matches!(e, BitbucketError::Forbidden { .. })) {
            let report = FeatureReport {
                status: "failed",
                missing: vec![],
                not_checked: vec![],
                reason: Some(failure.reason()),
                message: Some(failure.to_string()),
            };
            reports.push((feature.name, report));
            continue;
        }
        let mut missing: Vec<String> = Vec::new();
        let mut add = |scope: &str| {
            if !missing.iter().any(|m| m == scope) {
                missing.push(scope.to_owned());
            }
        };
        for e in &own {
            if let BitbucketError::Forbidden { missing: named, .. } = e {
                named.iter().for_each(|s| add(s));
            }
        }
        let needs = feature.needs(vocabulary);
        let mut not_checked = Vec::new();
        if vocabulary == Vocabulary::Permission {
            let need = feature.on(flavor).filter_map(|o| o.permission).max();
            if let Some(need) = need
                && own.is_empty()
                && strongest_shown.is_none_or(|s| s < need)
            {
                if weakest_refused.is_some_and(|w| w <= need) {
                    add(need.as_str());
                } else {
                    not_checked.push(need.as_str().to_owned());
                }
            }
        } else {
            for scope in &needs {
                if refused.iter().any(|r| r == scope) || granted.as_ref().is_some_and(|g| !holds(g, scope)) {
                    add(scope);
                } else if !holds(&shown, scope) && granted.is_none() {
                    not_checked.push(scope.to_string());
                }
            }
        }
        let report = if missing.is_empty() {
            FeatureReport::ok(not_checked)
        } else {
            let message = own.first().map(|e| e.to_string()).unwrap_or_else(|| {
                format!("not granted (Bitbucket named the credential's scopes): {}", missing.join(", "))
            });
            FeatureReport {
                status: "missing",
                missing,
                not_checked: vec![],
                reason: Some("forbidden"),
                message: Some(message),
            }
        };
        reports.push((feature.name, report));
    }
    reports
}

/// The README's table: feature → what each credential kind needs.
pub fn readme_table() -> String {
    let code = |scopes: Vec<&str>| scopes.iter().map(|s| format!("`{s}`")).collect::<Vec<_>>().join(", ");
    let mut out = String::from(
        "| feature | what it does | API token (`api_token`) | access token, OAuth consumer | Data Center HTTP token |\n\
         |---|---|---|---|---|\n",
    );
    for feature in FEATURES {
        let cell = |vocabulary| {
            let needs = feature.needs(vocabulary);
            let optional = feature.optional(vocabulary);
            let mut cell = if needs.is_empty() && optional.is_empty() { "—".to_owned() } else { code(needs) };
            if !optional.is_empty() {
                let _ = write!(cell, " (optional: {}, shows the account)", code(optional));
            }
            cell
        };
        let dc = if feature.supported(Flavor::DataCenter) {
            let mut cell = code(feature.needs(Vocabulary::Permission));
            if !feature.dc_note.is_empty() {
                let _ = write!(cell, ", {}", feature.dc_note);
            }
            cell
        } else {
            "— (Cloud only)".to_owned()
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} |",
            feature.name,
            feature.what,
            cell(Vocabulary::Granular),
            cell(Vocabulary::Legacy),
            dc
        );
    }
    let _ = write!(
        out,
        "\nEverything: an API token with {}; an access token or OAuth consumer with {}; a Data Center \
         token with {}.\n",
        code(every_scope(Vocabulary::Granular)),
        code(every_scope(Vocabulary::Legacy)),
        code(every_scope(Vocabulary::Permission)),
    );
    out
}

/// docs/BITBUCKET.md's table: every operation, its scopes and how it is verified.
pub fn operations_table() -> String {
    let code = |scopes: &[&str]| {
        if scopes.is_empty() {
            "—".to_owned()
        } else {
            scopes.iter().map(|s| format!("`{s}`")).collect::<Vec<_>>().join(", ")
        }
    };
    let mut out = String::from(
        "| # | request | operation | port method | features | API token | access token, OAuth consumer | Data Center permission | verified |\n\
         |---|---|---|---|---|---|---|---|---|\n",
    );
    for o in OPERATIONS {
        let operation = match o.operation_id {
            Some(id) => format!("`{id}`: {}", o.summary),
            None => o.summary.to_owned(),
        };
        let (granular, legacy, permission) = match o.flavor {
            Flavor::Cloud => (code(o.granular), code(o.legacy), "—".to_owned()),
            Flavor::DataCenter => {
                ("—".to_owned(), "—".to_owned(), o.permission.map(|p| format!("`{}`", p.as_str())).unwrap_or_default())
            }
        };
        let optional = if o.optional { " (optional)" } else { "" };
        let _ = writeln!(
            out,
            "| {} | {} `{}` | {operation} | `{}` | {}{optional} | {granular} | {legacy} | {permission} | {} |",
            o.key,
            o.method,
            o.path,
            o.port,
            o.features(),
            o.verified
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_need_what_their_operations_need() {
        assert_eq!(
            BRANCH_CLEANUP.needs(Vocabulary::Granular),
            [R, "read:pullrequest:bitbucket", "admin:repository:bitbucket", W]
        );
        assert_eq!(BRANCH_CLEANUP.needs(Vocabulary::Legacy), ["pullrequest", "repository:admin", "repository:write"]);
        assert_eq!(BRANCH_CLEANUP.needs(Vocabulary::Permission), ["REPO_ADMIN"]);
        assert_eq!(BACKUPS.needs(Vocabulary::Legacy), ["repository:write"]);
        assert_eq!(BACKUPS.needs(Vocabulary::Permission), ["REPO_WRITE"]);
        assert_eq!(CONNECTION.needs(Vocabulary::Granular), [R]);
        assert_eq!(CONNECTION.optional(Vocabulary::Legacy), ["account"]);
        assert!(!PIPELINES.supported(Flavor::DataCenter));
        assert_eq!(BRANCH_CLEANUP.probes(Flavor::Cloud).len(), 4);
        assert_eq!(BACKUPS.probes(Flavor::Cloud).len(), 1);
        assert!(every_scope(Vocabulary::Granular).contains(&"delete:webhook:bitbucket"));
        assert_eq!(every_scope(Vocabulary::Permission), ["REPO_ADMIN"]);
    }

    #[test]
    fn requests_are_matched_to_their_operation() {
        let find = |flavor, method, path| operation_for(flavor, method, path).map(|o| o.key);
        assert_eq!(find(Flavor::Cloud, "GET", "/repositories/w/r/refs/branches/feature/x%20y"), Some("C7"));
        assert_eq!(find(Flavor::Cloud, "GET", "/repositories/w/r/refs/branches"), Some("C10"));
        assert_eq!(find(Flavor::Cloud, "POST", "/repositories/w/r/pipelines/"), Some("C14"));
        assert_eq!(find(Flavor::Cloud, "GET", "/repositories/w/r/pipelines/%7Bu%7D/steps/"), Some("C18"));
        assert_eq!(find(Flavor::Cloud, "GET", "/repositories/w/r/src/abc/docs/a.json"), Some("C8"));
        assert_eq!(
            find(Flavor::DataCenter, "GET", "/branch-permissions/2.0/projects/P/repos/r/restrictions"),
            Some("D11")
        );
        assert_eq!(find(Flavor::DataCenter, "DELETE", "/api/latest/projects/P/repos/r/webhooks/3"), Some("D6"));
        assert_eq!(find(Flavor::DataCenter, "GET", "/api/latest/projects/P/repos/r/nothing"), None);
        assert_eq!(find(Flavor::Cloud, "DELETE", "/user"), None);
    }

    #[test]
    fn every_operation_belongs_to_a_feature() {
        for o in OPERATIONS {
            assert!(!o.features().is_empty(), "{} is in no feature", o.key);
            assert!(!o.port.is_empty() && !o.verified.is_empty(), "{}", o.key);
        }
    }

    fn forbidden(missing: &[&str], granted: Option<&[&str]>, operation: &'static Operation) -> BitbucketError {
        BitbucketError::Forbidden {
            missing: missing.iter().map(|s| s.to_string()).collect(),
            granted: granted.map(|g| g.iter().map(|s| s.to_string()).collect()),
            message: None,
            operation: Some(operation),
        }
    }

    fn report<'a>(reports: &'a [(&str, FeatureReport)], name: &str) -> &'a FeatureReport {
        &reports.iter().find(|(n, _)| *n == name).expect("every feature is reported").1
    }

    #[test]
    fn a_refusal_names_what_is_missing_and_what_the_credential_holds_settles_the_rest() {
        let granted: Vec<&str> =
            every_scope(Vocabulary::Granular).into_iter().filter(|s| *s != "admin:repository:bitbucket").collect();
        let answers: Vec<(Probe, Result<(), BitbucketError>)> = probes(Flavor::Cloud)
            .into_iter()
            .map(|p| match p {
                Probe::BranchRestrictions => {
                    (p, Err(forbidden(&["admin:repository:bitbucket"], Some(&granted), &C_LIST_RESTRICTIONS)))
                }
                _ => (p, Ok(())),
            })
            .collect();
        let reports = assess(Flavor::Cloud, Vocabulary::Granular, &answers);
        let cleanup = report(&reports, "branch cleanup");
        assert_eq!(
            (cleanup.status, cleanup.missing.as_slice()),
            ("missing", ["admin:repository:bitbucket".to_owned()].as_slice())
        );
        assert!(cleanup.message.as_deref().unwrap().contains("List branch restrictions"), "{cleanup:?}");
        for name in ["connection", "webhooks", "backups", "pipelines", "environments"] {
            assert_eq!(report(&reports, name), &FeatureReport::ok(vec![]), "{name}: the granted list settles writes");
        }
    }

    #[test]
    fn writes_no_answer_settled_are_not_checked() {
        let answers: Vec<_> = probes(Flavor::Cloud).into_iter().map(|p| (p, Ok(()))).collect();
        let reports = assess(Flavor::Cloud, Vocabulary::Legacy, &answers);
        assert_eq!(report(&reports, "backups").not_checked, ["repository:write"]);
        assert_eq!(report(&reports, "pipelines").not_checked, ["pipeline:write"]);
        assert_eq!(report(&reports, "branch cleanup").not_checked, ["repository:write"]);
        assert_eq!(report(&reports, "webhooks"), &FeatureReport::ok(vec![]));
    }

    #[test]
    fn data_center_permissions_are_ordered() {
        let write_token: Vec<_> = probes(Flavor::DataCenter)
            .into_iter()
            .map(|p| match probe_operation(Flavor::DataCenter, p).unwrap().permission {
                Some(Permission::RepoAdmin) => {
                    (p, Err(forbidden(&["REPO_ADMIN"], None, probe_operation(Flavor::DataCenter, p).unwrap())))
                }
                _ => (p, Ok(())),
            })
            .collect();
        let reports = assess(Flavor::DataCenter, Vocabulary::Permission, &write_token);
        assert_eq!(report(&reports, "webhooks").missing, ["REPO_ADMIN"]);
        assert_eq!(report(&reports, "branch cleanup").missing, ["REPO_ADMIN"]);
        assert_eq!(report(&reports, "backups").not_checked, ["REPO_WRITE"], "only a write would show REPO_WRITE");
        assert_eq!(report(&reports, "pipelines").status, "unsupported");
        assert_eq!(report(&reports, "environments"), &FeatureReport::ok(vec![]));

        let admin: Vec<_> = probes(Flavor::DataCenter).into_iter().map(|p| (p, Ok(()))).collect();
        let reports = assess(Flavor::DataCenter, Vocabulary::Permission, &admin);
        assert_eq!(report(&reports, "backups"), &FeatureReport::ok(vec![]), "REPO_ADMIN shown includes REPO_WRITE");

        let down = vec![(Probe::Repository, Ok(())), (Probe::Webhooks, Err(BitbucketError::Network("refused".into())))];
        let reports = assess(Flavor::DataCenter, Vocabulary::Permission, &down);
        assert_eq!(
            (report(&reports, "webhooks").status, report(&reports, "webhooks").reason),
            ("failed", Some("network"))
        );
    }
}
