//! Bitbucket Data Center REST 1.0 adapter (`{base}/rest/api/latest`).

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{Value, json};

use domain::bitbucket::capabilities::{
    D_BRANCHES, D_CREATE_HOOK, D_DEFAULT_BRANCH, D_DELETE_BRANCH, D_DELETE_HOOK, D_EDIT_FILE, D_LIST_HOOKS,
    D_PULL_REQUESTS, D_RAW, D_REPOSITORY, D_RESTRICTIONS, D_SET_BUILD_STATUS, D_UPDATE_HOOK,
};
use domain::bitbucket::{
    Access, Bitbucket, BitbucketError, BranchInfo, CommitStatus, FileCommit, Listing, NO_PIPELINES, Probe,
    PullRequestInfo, RepoTarget, Webhook, WebhookSpec,
};

use crate::parse as refs;
use crate::transport::{Body, FormPart, Session};
use crate::{absent_as_none, segment, segments};

/// The events this project acts on (no comments or reviewer changes).
pub const EVENTS: &[&str] =
    &["repo:refs_changed", "pr:opened", "pr:from_ref_updated", "pr:modified", "pr:merged", "pr:declined", "pr:deleted"];

const MAX_PAGES: usize = 50;
/// 100 branches a page: 60 pages cover 6,000 branches.
const BRANCH_PAGES: usize = 60;
const PULL_REQUEST_PAGES: usize = 50;
const RESTRICTION_PAGES: usize = 10;

pub struct DataCenterClient {
    session: Session,
    repo_url: String,
    /// `{base}/rest`, for the REST plugins beside `api` (branch-utils, branch-permissions).
    rest: String,
    /// `projects/{KEY}/repos/{slug}`, percent-encoded.
    repo_path: String,
}

impl DataCenterClient {
    pub fn new(session: Session, target: &RepoTarget) -> Self {
        let rest = format!("{}/rest", target.base_url.trim_end_matches('/'));
        let repo_path = format!("projects/{}/repos/{}", segment(&target.owner), segment(&target.slug));
        let repo_url = format!("{rest}/api/latest/{repo_path}");
        DataCenterClient { session, repo_url, rest, repo_path }
    }

    /// A repository URL of another REST plugin, e.g. `branch-utils/latest`.
    fn plugin_url(&self, plugin: &str) -> String {
        format!("{}/{plugin}/{}", self.rest, self.repo_path)
    }

    fn hook_body(spec: &WebhookSpec) -> Value {
        json!({
            "name": spec.description,
            "url": spec.url,
            "active": spec.active,
            "events": EVENTS,
            "configuration": {"secret": spec.secret.expose()},
        })
    }
}

#[derive(Deserialize)]
struct DcHook {
    id: u64,
    url: String,
    #[serde(default)]
    active: bool,
    #[serde(default)]
    events: Vec<String>,
}

impl From<DcHook> for Webhook {
    fn from(h: DcHook) -> Self {
        Webhook { id: h.id.to_string(), url: h.url, active: h.active, events: h.events }
    }
}

/// Data Center pages with `isLastPage` / `nextPageStart`.
fn next_start(page: &Value, current: &str) -> Option<String> {
    if page.get("isLastPage").and_then(Value::as_bool).unwrap_or(true) {
        return None;
    }
    let start = page.get("nextPageStart").and_then(Value::as_u64)?;
    let mut url = reqwest::Url::parse(current).ok()?;
    let kept: Vec<(String, String)> =
        url.query_pairs().filter(|(k, _)| k != "start").map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
    url.query_pairs_mut().clear().extend_pairs(kept).append_pair("start", &start.to_string());
    Some(url.into())
}

#[async_trait]
impl Bitbucket for DataCenterClient {
    async fn verify_access(&self) -> Result<Access, BitbucketError> {
        let response = self.session.send(&D_REPOSITORY, &self.repo_url, &Body::Empty, false).await?;
        // Data Center names the authenticated user in a response header.
        let account = response.headers().get("x-ausername").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let repo: Value = response.json().await.map_err(|e| BitbucketError::Unexpected(e.to_string()))?;
        let main_branch = match self
            .session
            .json::<Value>(&D_DEFAULT_BRANCH, &format!("{}/default-branch", self.repo_url), &Body::Empty)
            .await
        {
            Ok(b) => b.get("displayId").and_then(Value::as_str).map(str::to_owned),
            Err(BitbucketError::NotFound(_)) => None,
            Err(e) => return Err(e),
        };
        let text = |p: &str| repo.pointer(p).and_then(Value::as_str).map(str::to_owned);
        Ok(Access {
            account,
            repository: format!("{}/{}", text("/project/key").unwrap_or_default(), text("/slug").unwrap_or_default()),
            main_branch,
            html_url: text("/links/self/0/href"),
        })
    }

    async fn list_webhooks(&self) -> Result<Vec<Webhook>, BitbucketError> {
        let url = format!("{}/webhooks?limit=100", self.repo_url);
        let listing = self.session.list::<DcHook>(&D_LIST_HOOKS, &url, MAX_PAGES, next_start).await?;
        Ok(listing.items.into_iter().map(Webhook::from).collect())
    }

    async fn create_webhook(&self, spec: &WebhookSpec) -> Result<Webhook, BitbucketError> {
        let hook: DcHook = self
            .session
            .json(&D_CREATE_HOOK, &format!("{}/webhooks", self.repo_url), &Body::Json(Self::hook_body(spec)))
            .await?;
        Ok(hook.into())
    }

    async fn update_webhook(&self, id: &str, spec: &WebhookSpec) -> Result<(), BitbucketError> {
        let url = format!("{}/webhooks/{}", self.repo_url, segment(id));
        self.session.send(&D_UPDATE_HOOK, &url, &Body::Json(Self::hook_body(spec)), false).await?;
        Ok(())
    }

    async fn delete_webhook(&self, id: &str) -> Result<(), BitbucketError> {
        let url = format!("{}/webhooks/{}", self.repo_url, segment(id));
        match self.session.send(&D_DELETE_HOOK, &url, &Body::Empty, false).await {
            Ok(_) | Err(BitbucketError::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn main_branch(&self) -> Result<Option<String>, BitbucketError> {
        let url = format!("{}/default-branch", self.repo_url);
        let branch: Option<Value> = absent_as_none(self.session.json(&D_DEFAULT_BRANCH, &url, &Body::Empty).await)?;
        Ok(branch.and_then(|b| b.get("displayId").and_then(Value::as_str).map(str::to_owned)))
    }

    /// Data Center has no "get branch by name": filter the listing and match exactly.
    async fn branch_tip(&self, branch: &str) -> Result<Option<String>, BitbucketError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct DcBranch {
            display_id: String,
            latest_commit: String,
        }
        let mut url = reqwest::Url::parse(&format!("{}/branches", self.repo_url))
            .map_err(|e| BitbucketError::Unexpected(e.to_string()))?;
        url.query_pairs_mut().append_pair("filterText", branch).append_pair("limit", "100");
        let listing = self.session.list::<DcBranch>(&D_BRANCHES, url.as_str(), MAX_PAGES, next_start).await?;
        Ok(listing.items.into_iter().find(|b| b.display_id == branch).map(|b| b.latest_commit))
    }

    async fn read_file(&self, rev: &str, path: &str) -> Result<Option<Vec<u8>>, BitbucketError> {
        let url = format!("{}/raw/{}?at={}", self.repo_url, segments(path), segment(rev));
        self.session.bytes(&D_RAW, &url).await
    }

    async fn list_branches(&self) -> Result<Listing<BranchInfo>, BitbucketError> {
        let url = format!("{}/branches?details=true&limit=100", self.repo_url);
        let listing = self.session.list::<Value>(&D_BRANCHES, &url, BRANCH_PAGES, next_start).await?;
        let items = listing.items.iter().map(refs::dc_branch).collect::<Result<_, _>>()?;
        Ok(Listing { items, complete: listing.complete })
    }

    async fn list_pull_requests(&self) -> Result<Listing<PullRequestInfo>, BitbucketError> {
        let url = format!("{}/pull-requests?state=ALL&order=NEWEST&limit=100", self.repo_url);
        let listing = self.session.list::<Value>(&D_PULL_REQUESTS, &url, PULL_REQUEST_PAGES, next_start).await?;
        let items = listing.items.iter().map(refs::dc_pull_request).collect::<Result<_, _>>()?;
        Ok(Listing { items, complete: listing.complete })
    }

    async fn delete_restricted_patterns(&self) -> Result<Vec<String>, BitbucketError> {
        let url = format!("{}/restrictions?type=no-deletes&limit=100", self.plugin_url("branch-permissions/2.0"));
        let listing = self.session.list::<Value>(&D_RESTRICTIONS, &url, RESTRICTION_PAGES, next_start).await?;
        if !listing.complete {
            // A restriction not read could be the one protecting a branch.
            return Err(BitbucketError::Unexpected("more ref restrictions than this client reads".into()));
        }
        Ok(listing.items.iter().map(refs::dc_restriction_pattern).collect())
    }

    /// `DELETE /rest/branch-utils/latest/…/branches` with `{"name": "refs/heads/…", "dryRun": false}`.
    async fn delete_branch(&self, name: &str) -> Result<(), BitbucketError> {
        let url = format!("{}/branches", self.plugin_url("branch-utils/latest"));
        let body = json!({"name": format!("refs/heads/{name}"), "dryRun": false});
        match self.session.send(&D_DELETE_BRANCH, &url, &Body::Json(body), false).await {
            Ok(_) | Err(BitbucketError::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn probe(&self, probe: Probe) -> Result<(), BitbucketError> {
        let (operation, url) = match probe {
            Probe::Repository => (&D_REPOSITORY, self.repo_url.clone()),
            Probe::Webhooks => (&D_LIST_HOOKS, format!("{}/webhooks?limit=1", self.repo_url)),
            Probe::Branches => (&D_BRANCHES, format!("{}/branches?limit=1", self.repo_url)),
            Probe::PullRequests => (&D_PULL_REQUESTS, format!("{}/pull-requests?state=ALL&limit=1", self.repo_url)),
            Probe::BranchRestrictions => (
                &D_RESTRICTIONS,
                format!("{}/restrictions?type=no-deletes&limit=1", self.plugin_url("branch-permissions/2.0")),
            ),
            Probe::Pipelines => return Err(BitbucketError::Unsupported(NO_PIPELINES.into())),
        };
        self.session.send(operation, &url, &Body::Empty, false).await.map(drop)
    }

    /// `PUT …/browse/{path}` (multipart): `content`, `branch`, `message`, and `sourceCommitId`
    /// (the tip read; a moved branch is a 409) or, for a new branch, `sourceBranch`.
    async fn commit_file(&self, commit: &FileCommit) -> Result<String, BitbucketError> {
        let mut parts = vec![
            FormPart { name: "content".into(), bytes: commit.content.clone(), file_name: None },
            FormPart::text("branch", &commit.branch),
            FormPart::text("message", &commit.message),
        ];
        match (&commit.parent, &commit.from_branch) {
            (Some(parent), _) => parts.push(FormPart::text("sourceCommitId", parent)),
            (None, Some(from)) => parts.push(FormPart::text("sourceBranch", from)),
            (None, None) => {}
        }
        let url = format!("{}/browse/{}", self.repo_url, segments(&commit.path));
        #[derive(Deserialize)]
        struct DcCommit {
            id: String,
        }
        let made: DcCommit = self.session.json(&D_EDIT_FILE, &url, &Body::Multipart(parts)).await?;
        Ok(made.id)
    }

    /// `POST …/commits/{commitId}/builds` (Data Center 7.14+): the build status with its key,
    /// replaced when posted again.
    async fn set_commit_status(&self, commit: &str, status: &CommitStatus) -> Result<(), BitbucketError> {
        let url = format!("{}/commits/{}/builds", self.repo_url, segment(commit));
        let mut body = json!({
            "key": status.key,
            "state": status.state.data_center(),
            "name": status.name,
            "url": status.url,
            "description": status.description,
        });
        if let Some(branch) = &status.branch {
            body["ref"] = json!(format!("refs/heads/{branch}"));
        }
        self.session.send(&D_SET_BUILD_STATUS, &url, &Body::Json(body), true).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_center_paging_moves_start() {
        let page = json!({"isLastPage": false, "nextPageStart": 25});
        let next = next_start(&page, "https://h/rest/api/latest/x?limit=25&start=0").unwrap();
        assert_eq!(next, "https://h/rest/api/latest/x?limit=25&start=25");
        assert_eq!(next_start(&json!({"isLastPage": true}), "https://h/x"), None);
    }
}
