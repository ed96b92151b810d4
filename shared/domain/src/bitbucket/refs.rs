//! Branches, pull requests and delete restrictions as the port sees them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Matches every branch: what a restriction we cannot read exactly becomes, so that it
/// protects too much rather than too little.
pub const EVERY_BRANCH: &str = "**";

/// One branch of the repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BranchInfo {
    pub name: String,
    /// The tip commit.
    pub head: String,
    /// When the tip commit was authored, when Bitbucket says.
    pub last_commit: Option<DateTime<Utc>>,
    /// Data Center says which branch is the default; Cloud's listing does not (the main branch
    /// comes from [`super::Bitbucket::main_branch`]), so it is always `false` there.
    pub is_default: bool,
}

/// One pull request (open, merged or declined).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullRequestInfo {
    pub id: u64,
    pub source_branch: String,
    /// `OPEN`, `MERGED`, `DECLINED` (Cloud may also say `SUPERSEDED`).
    pub state: String,
    /// Closed: when it was closed (Data Center `closedDate`, else the last update); open: the
    /// last update.
    pub updated: Option<DateTime<Utc>>,
    /// The source branch's head the pull request knew (Cloud abbreviates it to 12 digits).
    pub head: Option<String>,
    pub destination_branch: Option<String>,
    pub destination_head: Option<String>,
    pub title: Option<String>,
    pub draft: bool,
    /// `workspace/repo` (`PROJECT/repo`) of each side, when the listing names them.
    pub source_repository: Option<String>,
    pub destination_repository: Option<String>,
}

impl PullRequestInfo {
    pub fn is_open(&self) -> bool {
        self.state.eq_ignore_ascii_case("OPEN")
    }

    /// The pull request as webhook events carry it.
    pub fn as_event(&self) -> crate::webhook::PullRequest {
        crate::webhook::PullRequest {
            id: self.id,
            title: self.title.clone(),
            source_branch: self.source_branch.clone(),
            destination_branch: self.destination_branch.clone().unwrap_or_default(),
            head: self.head.clone(),
            state: Some(self.state.clone()),
            destination_head: self.destination_head.clone(),
            draft: self.draft,
            source_repository: self.source_repository.clone(),
            destination_repository: self.destination_repository.clone(),
        }
    }

    pub fn is_closed(&self) -> bool {
        ["MERGED", "DECLINED", "SUPERSEDED"].iter().any(|s| self.state.eq_ignore_ascii_case(s))
    }
}
