//! The Bitbucket port: what the domain asks of Bitbucket ([`Bitbucket`]), how it gets a client
//! for an integration ([`Connect`]), and the models both speak. The HTTP adapters (Cloud REST
//! 2.0, Data Center REST 1.0) live in the `bitbucket-client` crate; the domain never builds a URL.

pub mod capabilities;
pub mod credentials;
mod error;
pub mod pipelines;
pub mod refs;

pub use capabilities::{Feature, FeatureReport, Operation, Permission, Probe, Vocabulary};
pub use credentials::Credential;
pub use error::BitbucketError;
pub use pipelines::{
    MAX_TEST_FAILURES, PipelineRequest, PipelineRun, PipelineVariable, PullRequestTarget, StepTests, TestFailure,
    TestSummary,
};
pub use refs::{BranchInfo, PullRequestInfo};

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::secrets::Secret;
use crate::webhook::Flavor;

pub const CLOUD_API: &str = "https://api.bitbucket.org/2.0";
pub const CLOUD_OAUTH_TOKEN_URL: &str = "https://bitbucket.org/site/oauth2/access_token";

/// Which repository a connection points at (never a secret; stored on the integration).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoTarget {
    pub flavor: Flavor,
    /// Cloud: `https://api.bitbucket.org/2.0`; Data Center: `https://host[/context]`.
    pub base_url: String,
    /// Cloud workspace, or Data Center project key.
    pub owner: String,
    pub slug: String,
}

impl RepoTarget {
    /// A repository on Bitbucket Cloud (`api.bitbucket.org`).
    pub fn cloud(workspace: &str, slug: &str) -> Self {
        RepoTarget {
            flavor: Flavor::Cloud,
            base_url: CLOUD_API.to_owned(),
            owner: workspace.to_owned(),
            slug: slug.to_owned(),
        }
    }

    pub fn full_name(&self) -> String {
        format!("{}/{}", self.owner, self.slug)
    }

    /// The repository's web page: bitbucket.org for the real Cloud API, the same path beside
    /// `/2.0` for another base (the sandbox), `/projects/{KEY}/repos/{slug}` on Data Center.
    pub fn html_url(&self) -> String {
        let base = self.base_url.trim_end_matches('/');
        match self.flavor {
            Flavor::Cloud if base == CLOUD_API => format!("https://bitbucket.org/{}/{}", self.owner, self.slug),
            Flavor::Cloud => format!("{}/{}/{}", base.trim_end_matches("/2.0"), self.owner, self.slug),
            Flavor::DataCenter => format!("{base}/projects/{}/repos/{}", self.owner, self.slug),
        }
    }

    pub fn commit_url(&self, hash: &str) -> String {
        format!("{}/commits/{hash}", self.html_url())
    }

    /// The OAuth token endpoint: bitbucket.org's for the real Cloud API; for another base
    /// (a proxy or the sandbox) the same path beside its `/2.0`.
    pub fn oauth_token_url(&self) -> String {
        let base = self.base_url.trim_end_matches('/');
        if base == CLOUD_API {
            CLOUD_OAUTH_TOKEN_URL.to_owned()
        } else {
            format!("{}/site/oauth2/access_token", base.trim_end_matches("/2.0"))
        }
    }
}

/// What a successful connection test learned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Access {
    /// Who the credential acts as (display name or user slug), when Bitbucket says.
    pub account: Option<String>,
    pub repository: String,
    pub main_branch: Option<String>,
    pub html_url: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Webhook {
    pub id: String,
    pub url: String,
    pub active: bool,
    pub events: Vec<String>,
}

/// A webhook as this project registers it; the adapter chooses the flavor's event keys.
#[derive(Debug, Clone)]
pub struct WebhookSpec {
    pub url: String,
    pub secret: Secret,
    pub active: bool,
    pub description: String,
}

/// One commit that writes one file on a branch.
#[derive(Debug, Clone)]
pub struct FileCommit {
    pub branch: String,
    /// Repository-relative, `/`-separated, already validated.
    pub path: String,
    pub content: Vec<u8>,
    pub message: String,
    /// `Name <email>` (Cloud only; Data Center commits as the credential's user).
    pub author: Option<String>,
    /// The branch tip the caller read: Bitbucket refuses the commit (409) if the branch has
    /// moved since. `None` creates the branch from `from_branch` (or the main branch).
    pub parent: Option<String>,
    pub from_branch: Option<String>,
}

#[async_trait]
pub trait Bitbucket: Send + Sync {
    /// Checks the credential and that the repository is readable.
    async fn verify_access(&self) -> Result<Access, BitbucketError>;
    /// Lists the repository's webhooks (needs the webhook permission).
    async fn list_webhooks(&self) -> Result<Vec<Webhook>, BitbucketError>;
    async fn create_webhook(&self, spec: &WebhookSpec) -> Result<Webhook, BitbucketError>;
    async fn update_webhook(&self, id: &str, spec: &WebhookSpec) -> Result<(), BitbucketError>;
    /// Deleting a webhook that is already gone succeeds.
    async fn delete_webhook(&self, id: &str) -> Result<(), BitbucketError>;
    /// The repository's main (default) branch, if it has one.
    async fn main_branch(&self) -> Result<Option<String>, BitbucketError>;
    /// The commit `branch` points at; `None` when there is no such branch.
    async fn branch_tip(&self, branch: &str) -> Result<Option<String>, BitbucketError>;
    /// A file's bytes at `rev` (a commit hash); `None` when it does not exist there.
    async fn read_file(&self, rev: &str, path: &str) -> Result<Option<Vec<u8>>, BitbucketError>;
    /// Makes `commit`; returns the new commit's hash. A moved branch is `Conflict`.
    async fn commit_file(&self, commit: &FileCommit) -> Result<String, BitbucketError>;
    /// Every branch, all pages (bounded: `complete` is false when the bound stopped it).
    async fn list_branches(&self) -> Result<Listing<BranchInfo>, BitbucketError>;
    /// Open, merged and declined pull requests, newest first, all pages (bounded).
    async fn list_pull_requests(&self) -> Result<Listing<PullRequestInfo>, BitbucketError>;
    /// Globs of the branches a restriction forbids deleting (`refs/heads/` stripped); one that
    /// cannot be read exactly is [`refs::EVERY_BRANCH`].
    async fn delete_restricted_patterns(&self) -> Result<Vec<String>, BitbucketError>;
    /// Deletes a branch; one already gone is `Ok`. The main branch or a restricted one is
    /// refused (`Rejected` / `Forbidden`).
    async fn delete_branch(&self, name: &str) -> Result<(), BitbucketError>;
    /// Sends `probe`'s read request (one item, no side effect): `Ok` when Bitbucket answers it.
    async fn probe(&self, probe: Probe) -> Result<(), BitbucketError>;

    // Pipelines exist on Cloud only; Data Center keeps these defaults.
    async fn run_pipeline(&self, _request: &PipelineRequest) -> Result<PipelineRun, BitbucketError> {
        Err(BitbucketError::Unsupported(NO_PIPELINES.into()))
    }
    /// Stopping a finished run is `Rejected`.
    async fn stop_pipeline(&self, _uuid: &str) -> Result<(), BitbucketError> {
        Err(BitbucketError::Unsupported(NO_PIPELINES.into()))
    }
    async fn get_pipeline(&self, _uuid: &str) -> Result<PipelineRun, BitbucketError> {
        Err(BitbucketError::Unsupported(NO_PIPELINES.into()))
    }
    /// One page of runs, newest first (`page` from 1).
    async fn list_pipelines(&self, _page: u32, _pagelen: u32) -> Result<Vec<PipelineRun>, BitbucketError> {
        Err(BitbucketError::Unsupported(NO_PIPELINES.into()))
    }
    /// The test reports of a completed run's steps, summed, with its failed test cases (at most
    /// [`MAX_TEST_FAILURES`]); `None` when no step has a report.
    async fn test_summary(&self, _uuid: &str) -> Result<Option<TestSummary>, BitbucketError> {
        Err(BitbucketError::Unsupported(NO_PIPELINES.into()))
    }

    /// Sets (or replaces: same key) a build status on a commit — Cloud's commit status, Data
    /// Center's build status.
    async fn set_commit_status(&self, commit: &str, status: &CommitStatus) -> Result<(), BitbucketError>;
}

/// A build status on a commit, as this project reports environments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitStatus {
    /// Stable per integration and environment, so a new state replaces the previous one.
    pub key: String,
    pub state: StatusState,
    pub name: String,
    pub url: String,
    pub description: String,
    /// The branch (without `refs/heads/`).
    pub branch: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatusState {
    InProgress,
    Successful,
    Failed,
    Stopped,
}

impl StatusState {
    /// Cloud's commit-status state (`INPROGRESS`, `SUCCESSFUL`, `FAILED`, `STOPPED`).
    pub fn cloud(self) -> &'static str {
        match self {
            StatusState::InProgress => "INPROGRESS",
            StatusState::Successful => "SUCCESSFUL",
            StatusState::Failed => "FAILED",
            StatusState::Stopped => "STOPPED",
        }
    }

    /// Data Center's build-status state (`CANCELLED` for a stopped one).
    pub fn data_center(self) -> &'static str {
        match self {
            StatusState::Stopped => "CANCELLED",
            other => other.cloud(),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            StatusState::InProgress => "in_progress",
            StatusState::Successful => "successful",
            StatusState::Failed => "failed",
            StatusState::Stopped => "stopped",
        }
    }
}

pub const NO_PIPELINES: &str =
    "Bitbucket Data Center has no Pipelines; connect a Bitbucket Cloud repository to run builds";

/// Makes a client for one connection (built once per process: it holds the HTTP client and
/// OAuth token cache), giving up after `budget`.
pub trait Connect: Send + Sync {
    fn connect(&self, target: &RepoTarget, credential: Credential, budget: Duration) -> Arc<dyn Bitbucket>;

    /// The same, its requests taken from the credential's rate budget at `priority`
    /// ([`crate::rate`]); a connector without a budget ignores it.
    fn connect_as(
        &self,
        target: &RepoTarget,
        credential: Credential,
        budget: Duration,
        priority: crate::rate::Priority,
    ) -> Arc<dyn Bitbucket> {
        let _ = priority;
        self.connect(target, credential, budget)
    }
}

/// Items of a paged listing, all pages read, unless the page bound stopped it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing<T> {
    pub items: Vec<T>,
    /// False when the listing stopped at its page bound before its end.
    pub complete: bool,
}

/// Branch names as git allows them (roughly `git check-ref-format --branch`).
pub fn valid_branch_name(branch: &str) -> bool {
    let bad_char = |c: char| c.is_whitespace() || c.is_control() || "~^:?*[\\".contains(c);
    !(branch.is_empty()
        || branch.len() > 255
        || branch.contains("..")
        || branch.contains("//")
        || branch.contains("@{")
        || branch.starts_with(['/', '.', '-'])
        || branch.ends_with(['/', '.'])
        || branch.ends_with(".lock")
        || branch.contains(bad_char))
}

/// Whether `text` can be a `multipart/form-data` field name or file name as written: a `"` would
/// end the quoted name, a `\\` or a control character (CR, LF…) change or split it.
pub fn form_safe(text: &str) -> bool {
    !text.chars().any(|c| c == '"' || c == '\\' || c.is_control())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oauth_token_url_follows_the_base() {
        let mut t =
            RepoTarget { flavor: Flavor::Cloud, base_url: CLOUD_API.into(), owner: "w".into(), slug: "r".into() };
        assert_eq!(t.oauth_token_url(), CLOUD_OAUTH_TOKEN_URL);
        t.base_url = "http://127.0.0.1:3000/sandbox/bitbucket/2.0".into();
        assert_eq!(t.oauth_token_url(), "http://127.0.0.1:3000/sandbox/bitbucket/site/oauth2/access_token");
        assert_eq!(t.commit_url("abc"), "http://127.0.0.1:3000/sandbox/bitbucket/w/r/commits/abc");
        t.base_url = CLOUD_API.into();
        assert_eq!(t.html_url(), "https://bitbucket.org/w/r");
        let dc = RepoTarget { flavor: Flavor::DataCenter, base_url: "https://git.example.com/bb/".into(), ..t };
        assert_eq!(dc.commit_url("abc"), "https://git.example.com/bb/projects/w/repos/r/commits/abc");
    }
}
