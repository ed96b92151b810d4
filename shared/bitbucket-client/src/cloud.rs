//! Bitbucket Cloud REST 2.0 adapter.

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{Value, json};

use domain::bitbucket::capabilities::{
    C_COMMIT_FILE, C_CREATE_HOOK, C_DELETE_BRANCH, C_DELETE_HOOK, C_GET_BRANCH, C_GET_PIPELINE, C_LIST_BRANCHES,
    C_LIST_HOOKS, C_LIST_PIPELINES, C_LIST_PULL_REQUESTS, C_LIST_RESTRICTIONS, C_LIST_STEPS, C_READ_FILE, C_REPOSITORY,
    C_RUN_PIPELINE, C_SET_STATUS, C_STOP_PIPELINE, C_TEST_CASE_REASONS, C_TEST_CASES, C_TEST_REPORTS, C_UPDATE_HOOK,
    C_USER,
};
use domain::bitbucket::{
    Access, Bitbucket, BitbucketError, BranchInfo, CommitStatus, FileCommit, Listing, MAX_TEST_FAILURES,
    PipelineRequest, PipelineRun, Probe, PullRequestInfo, RepoTarget, TestFailure, TestSummary, Webhook, WebhookSpec,
    form_safe,
};

use crate::parse::{
    self as refs, pipeline_body, pipeline_run, step_tests, test_case_failed, test_case_reason, test_failure,
};
use crate::transport::{Body, FormPart, Session};
use crate::{absent_as_none, segment, segments};

/// The events this project acts on (no comments or approvals).
pub const EVENTS: &[&str] = &[
    "repo:push",
    "pullrequest:created",
    "pullrequest:updated",
    "pullrequest:fulfilled",
    "pullrequest:rejected",
    "repo:commit_status_created",
    "repo:commit_status_updated",
];

const MAX_PAGES: usize = 50;
/// 100 branches a page: 60 pages cover 6,000 branches.
const BRANCH_PAGES: usize = 60;
/// Cloud caps pull request pages at 50: 100 pages cover 5,000 pull requests.
const PULL_REQUEST_PAGES: usize = 100;
const RESTRICTION_PAGES: usize = 10;

pub struct CloudClient {
    session: Session,
    repo_url: String,
    base: String,
}

impl CloudClient {
    pub fn new(session: Session, target: &RepoTarget) -> Self {
        let base = target.base_url.trim_end_matches('/').to_owned();
        let repo_url = format!("{base}/repositories/{}/{}", segment(&target.owner), segment(&target.slug));
        CloudClient { session, repo_url, base }
    }

    fn hook_body(spec: &WebhookSpec) -> Value {
        json!({
            "description": spec.description,
            "url": spec.url,
            "active": spec.active,
            "secret": spec.secret.expose(),
            "events": EVENTS,
        })
    }
}

#[derive(Deserialize)]
struct CloudHook {
    uuid: String,
    url: String,
    #[serde(default)]
    active: bool,
    #[serde(default)]
    events: Vec<String>,
}

impl From<CloudHook> for Webhook {
    fn from(h: CloudHook) -> Self {
        Webhook { id: h.uuid, url: h.url, active: h.active, events: h.events }
    }
}

fn next_link(page: &Value, _current: &str) -> Option<String> {
    page.get("next").and_then(Value::as_str).map(str::to_owned)
}

#[async_trait]
impl Bitbucket for CloudClient {
    async fn verify_access(&self) -> Result<Access, BitbucketError> {
        // Access tokens act as the repository/workspace, not a user: /user may be refused.
        let user: Option<Value> = match self.session.json(&C_USER, &format!("{}/user", self.base), &Body::Empty).await {
            Ok(v) => Some(v),
            Err(BitbucketError::Forbidden { .. }) => None,
            Err(e) => return Err(e),
        };
        let repo: Value = self.session.json(&C_REPOSITORY, &self.repo_url, &Body::Empty).await?;
        let text = |v: &Value, p: &str| v.pointer(p).and_then(Value::as_str).map(str::to_owned);
        Ok(Access {
            account: user.and_then(|u| text(&u, "/display_name").or_else(|| text(&u, "/username"))),
            repository: text(&repo, "/full_name").unwrap_or_default(),
            main_branch: text(&repo, "/mainbranch/name"),
            html_url: text(&repo, "/links/html/href"),
        })
    }

    async fn list_webhooks(&self) -> Result<Vec<Webhook>, BitbucketError> {
        let url = format!("{}/hooks?pagelen=100", self.repo_url);
        let listing = self.session.list::<CloudHook>(&C_LIST_HOOKS, &url, MAX_PAGES, next_link).await?;
        Ok(listing.items.into_iter().map(Webhook::from).collect())
    }

    async fn create_webhook(&self, spec: &WebhookSpec) -> Result<Webhook, BitbucketError> {
        let hook: CloudHook = self
            .session
            .json(&C_CREATE_HOOK, &format!("{}/hooks", self.repo_url), &Body::Json(Self::hook_body(spec)))
            .await?;
        Ok(hook.into())
    }

    async fn update_webhook(&self, id: &str, spec: &WebhookSpec) -> Result<(), BitbucketError> {
        let url = format!("{}/hooks/{}", self.repo_url, segment(id));
        self.session.send(&C_UPDATE_HOOK, &url, &Body::Json(Self::hook_body(spec)), false).await?;
        Ok(())
    }

    async fn delete_webhook(&self, id: &str) -> Result<(), BitbucketError> {
        let url = format!("{}/hooks/{}", self.repo_url, segment(id));
        match self.session.send(&C_DELETE_HOOK, &url, &Body::Empty, false).await {
            Ok(_) | Err(BitbucketError::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn main_branch(&self) -> Result<Option<String>, BitbucketError> {
        let repo: Value = self.session.json(&C_REPOSITORY, &self.repo_url, &Body::Empty).await?;
        Ok(repo.pointer("/mainbranch/name").and_then(Value::as_str).map(str::to_owned))
    }

    async fn branch_tip(&self, branch: &str) -> Result<Option<String>, BitbucketError> {
        let url = format!("{}/refs/branches/{}", self.repo_url, segments(branch));
        let found: Option<Value> = absent_as_none(self.session.json(&C_GET_BRANCH, &url, &Body::Empty).await)?;
        found
            .map(|b| {
                b.pointer("/target/hash")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .ok_or_else(|| BitbucketError::Unexpected("a branch without a target commit".into()))
            })
            .transpose()
    }

    async fn read_file(&self, rev: &str, path: &str) -> Result<Option<Vec<u8>>, BitbucketError> {
        let url = format!("{}/src/{}/{}", self.repo_url, segment(rev), segments(path));
        self.session.bytes(&C_READ_FILE, &url).await
    }

    /// `POST …/src` (multipart): the file, plus `message`, `branch`, `author` and `parents`.
    /// Bitbucket reads a field's name as the file's path, and those four (and `files`) as the
    /// commit's metadata, so the path goes with a leading `/` and as a file field (with a
    /// `filename`) — the two ways its description gives to tell a file from metadata — and a
    /// path that would end or change the quoted field name is refused before anything is sent.
    /// Cloud answers 201 with the new commit in `Location`.
    async fn commit_file(&self, commit: &FileCommit) -> Result<String, BitbucketError> {
        if !form_safe(&commit.path) {
            return Err(BitbucketError::Rejected(Some(format!(
                "the path {:?} cannot be sent as a form field name (it holds a `\"`, `\\` or control character)",
                commit.path
            ))));
        }
        let file_name = commit.path.rsplit('/').next().unwrap_or(&commit.path).to_owned();
        let mut parts = vec![
            FormPart { name: format!("/{}", commit.path), bytes: commit.content.clone(), file_name: Some(file_name) },
            FormPart::text("message", &commit.message),
            FormPart::text("branch", &commit.branch),
        ];
        if let Some(author) = &commit.author {
            parts.push(FormPart::text("author", author));
        }
        // With a parent the commit is guarded (a repeat after a lost answer is a 409, never a
        // second commit), so it may be retried; without one it is created from the main branch.
        let guarded = commit.parent.is_some();
        if let Some(parent) = &commit.parent {
            parts.push(FormPart::text("parents", parent));
        }
        let url = format!("{}/src", self.repo_url);
        let response = self.session.send(&C_COMMIT_FILE, &url, &Body::Multipart(parts), guarded).await?;
        response
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|l| l.trim_end_matches('/').rsplit('/').next())
            .filter(|hash| !hash.is_empty() && hash.bytes().all(|b| b.is_ascii_hexdigit()))
            .map(str::to_owned)
            .ok_or_else(|| BitbucketError::Unexpected("the commit answer named no commit".into()))
    }

    async fn list_branches(&self) -> Result<Listing<BranchInfo>, BitbucketError> {
        let url = format!("{}/refs/branches?pagelen=100", self.repo_url);
        let listing = self.session.list::<Value>(&C_LIST_BRANCHES, &url, BRANCH_PAGES, next_link).await?;
        let items = listing.items.iter().map(refs::cloud_branch).collect::<Result<_, _>>()?;
        Ok(Listing { items, complete: listing.complete })
    }

    async fn list_pull_requests(&self) -> Result<Listing<PullRequestInfo>, BitbucketError> {
        let url = format!(
            "{}/pullrequests?state=OPEN&state=MERGED&state=DECLINED&sort=-updated_on&pagelen=50",
            self.repo_url
        );
        let listing = self.session.list::<Value>(&C_LIST_PULL_REQUESTS, &url, PULL_REQUEST_PAGES, next_link).await?;
        let items = listing.items.iter().map(refs::cloud_pull_request).collect::<Result<_, _>>()?;
        Ok(Listing { items, complete: listing.complete })
    }

    async fn delete_restricted_patterns(&self) -> Result<Vec<String>, BitbucketError> {
        let url = format!("{}/branch-restrictions?kind=delete&pagelen=100", self.repo_url);
        let listing = self.session.list::<Value>(&C_LIST_RESTRICTIONS, &url, RESTRICTION_PAGES, next_link).await?;
        if !listing.complete {
            // A restriction not read could be the one protecting a branch.
            return Err(BitbucketError::Unexpected("more branch restrictions than this client reads".into()));
        }
        Ok(listing.items.iter().map(refs::cloud_restriction_pattern).collect())
    }

    async fn delete_branch(&self, name: &str) -> Result<(), BitbucketError> {
        let url = format!("{}/refs/branches/{}", self.repo_url, segments(name));
        match self.session.send(&C_DELETE_BRANCH, &url, &Body::Empty, false).await {
            Ok(_) | Err(BitbucketError::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn probe(&self, probe: Probe) -> Result<(), BitbucketError> {
        let (operation, url) = match probe {
            Probe::Repository => (&C_REPOSITORY, self.repo_url.clone()),
            Probe::Webhooks => (&C_LIST_HOOKS, format!("{}/hooks?pagelen=1", self.repo_url)),
            Probe::Branches => (&C_LIST_BRANCHES, format!("{}/refs/branches?pagelen=1", self.repo_url)),
            Probe::PullRequests => (&C_LIST_PULL_REQUESTS, format!("{}/pullrequests?pagelen=1", self.repo_url)),
            Probe::BranchRestrictions => {
                (&C_LIST_RESTRICTIONS, format!("{}/branch-restrictions?kind=delete&pagelen=1", self.repo_url))
            }
            Probe::Pipelines => (&C_LIST_PIPELINES, format!("{}/pipelines/?pagelen=1", self.repo_url)),
        };
        self.session.send(operation, &url, &Body::Empty, false).await.map(drop)
    }

    async fn run_pipeline(&self, request: &PipelineRequest) -> Result<PipelineRun, BitbucketError> {
        let url = format!("{}/pipelines/", self.repo_url);
        // Not retried after an ambiguous failure: a repeat would start a second run.
        let run: Value = self.session.json(&C_RUN_PIPELINE, &url, &Body::Json(pipeline_body(request))).await?;
        pipeline_run(&run).ok_or_else(|| BitbucketError::Unexpected("a run without uuid or number".into()))
    }

    async fn stop_pipeline(&self, uuid: &str) -> Result<(), BitbucketError> {
        let url = format!("{}/pipelines/{}/stopPipeline", self.repo_url, segment(uuid));
        // Stopping twice is harmless, so a lost answer may be retried.
        self.session.send(&C_STOP_PIPELINE, &url, &Body::Empty, true).await?;
        Ok(())
    }

    async fn get_pipeline(&self, uuid: &str) -> Result<PipelineRun, BitbucketError> {
        let url = format!("{}/pipelines/{}", self.repo_url, segment(uuid));
        let run: Value = self.session.json(&C_GET_PIPELINE, &url, &Body::Empty).await?;
        pipeline_run(&run).ok_or_else(|| BitbucketError::Unexpected("a run without uuid or number".into()))
    }

    async fn list_pipelines(&self, page: u32, pagelen: u32) -> Result<Vec<PipelineRun>, BitbucketError> {
        let url = format!("{}/pipelines/?sort=-created_on&page={page}&pagelen={pagelen}", self.repo_url);
        let body: Value = self.session.json(&C_LIST_PIPELINES, &url, &Body::Empty).await?;
        let values = body.get("values").and_then(Value::as_array).cloned().unwrap_or_default();
        Ok(values.iter().filter_map(pipeline_run).collect())
    }

    async fn test_summary(&self, uuid: &str) -> Result<Option<TestSummary>, BitbucketError> {
        let steps_url = format!("{}/pipelines/{}/steps/?pagelen=100", self.repo_url, segment(uuid));
        let steps = self.session.list::<Value>(&C_LIST_STEPS, &steps_url, 2, next_link).await?;
        let mut summary = TestSummary::default();
        for step in &steps.items {
            let Some(step_uuid) = step.get("uuid").and_then(Value::as_str) else { continue };
            let reports =
                format!("{}/pipelines/{}/steps/{}/test_reports", self.repo_url, segment(uuid), segment(step_uuid));
            let report: Option<Value> =
                absent_as_none(self.session.json(&C_TEST_REPORTS, &reports, &Body::Empty).await)?;
            if let Some(report) = report {
                let name = step.get("name").and_then(Value::as_str).unwrap_or("step").to_owned();
                let tests = step_tests(name.clone(), &report);
                if tests.failed > 0 && summary.failures.len() < MAX_TEST_FAILURES {
                    let failures =
                        self.failed_cases(&reports, &name, MAX_TEST_FAILURES - summary.failures.len()).await?;
                    summary.failures.extend(failures);
                }
                summary.add(tests);
            }
        }
        Ok((!summary.steps.is_empty()).then_some(summary))
    }

    /// `POST …/commit/{hash}/statuses/build`: creates the status, or updates the one with its key.
    async fn set_commit_status(&self, commit: &str, status: &CommitStatus) -> Result<(), BitbucketError> {
        let url = format!("{}/commit/{}/statuses/build", self.repo_url, segment(commit));
        let body = json!({
            "key": status.key,
            "state": status.state.cloud(),
            "name": status.name,
            "url": status.url,
            "description": status.description,
            "refname": status.branch,
        });
        // Setting the same state twice is harmless: a lost answer may be retried.
        self.session.send(&C_SET_STATUS, &url, &Body::Json(body), true).await?;
        Ok(())
    }
}

impl CloudClient {
    /// At most `limit` failed test cases of a step, each with its reason (`…/test_case_reasons`).
    /// One page of `…/test_reports/test_cases`, asked without `page`/`pagelen`: the description
    /// documents neither for it (its 200 has no schema).
    async fn failed_cases(&self, reports: &str, step: &str, limit: usize) -> Result<Vec<TestFailure>, BitbucketError> {
        let cases: Option<Value> =
            absent_as_none(self.session.json(&C_TEST_CASES, &format!("{reports}/test_cases"), &Body::Empty).await)?;
        let values =
            cases.as_ref().and_then(|c| c.get("values")).and_then(Value::as_array).cloned().unwrap_or_default();
        let mut failures = Vec::new();
        for case in values.iter().filter(|c| test_case_failed(c)).take(limit) {
            let reason = match case.get("uuid").and_then(Value::as_str) {
                Some(case_uuid) => {
                    let url = format!("{reports}/test_cases/{}/test_case_reasons", segment(case_uuid));
                    let page: Option<Value> =
                        absent_as_none(self.session.json(&C_TEST_CASE_REASONS, &url, &Body::Empty).await)?;
                    page.as_ref().and_then(test_case_reason)
                }
                None => None,
            };
            failures.push(test_failure(step, case, reason));
        }
        Ok(failures)
    }
}
