//! Bitbucket Cloud payloads (`X-Event-Key`, `X-Request-UUID`, `X-Hook-UUID`, `X-Attempt-Number`).
//! Lenient: unknown fields are ignored, and only what the system acts on is required.

use serde::Deserialize;

use super::{ParsedPayload, PayloadError, PullRequest, RepoEvent, other};

#[derive(Debug, Deserialize)]
pub struct Repository {
    pub full_name: Option<String>,
}

/// Any Cloud payload, read only for its repository.
#[derive(Debug, Deserialize)]
pub struct Envelope {
    pub repository: Option<Repository>,
}

#[derive(Debug, Deserialize)]
pub struct PushEvent {
    pub push: Push,
    pub repository: Option<Repository>,
}

#[derive(Debug, Deserialize)]
pub struct Push {
    #[serde(default)]
    pub changes: Vec<Change>,
}

/// One entry of `push.changes[]`: `new` is null when a ref was deleted, `old` when created.
#[derive(Debug, Deserialize)]
pub struct Change {
    pub new: Option<Ref>,
    pub old: Option<Ref>,
    #[serde(default)]
    pub created: bool,
    #[serde(default)]
    pub closed: bool,
    #[serde(default)]
    pub forced: bool,
    #[serde(default)]
    pub truncated: bool,
}

#[derive(Debug, Deserialize)]
pub struct Ref {
    /// `branch`, `tag` (and, historically, `named_branch`/`bookmark`).
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub target: Option<Commit>,
}

impl Ref {
    fn is_tag(&self) -> bool {
        self.kind == "tag"
    }
    fn hash(&self) -> Option<String> {
        self.target.as_ref().and_then(|t| t.hash.clone())
    }
}

#[derive(Debug, Deserialize)]
pub struct Commit {
    pub hash: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct PullRequestEvent {
    pub pullrequest: PullRequestBody,
    pub repository: Option<Repository>,
}

#[derive(Debug, Deserialize)]
pub struct PullRequestBody {
    pub id: u64,
    pub title: Option<String>,
    pub state: Option<String>,
    #[serde(default)]
    pub draft: bool,
    pub source: Endpoint,
    pub destination: Endpoint,
}

#[derive(Debug, Deserialize)]
pub struct Endpoint {
    pub branch: Option<BranchName>,
    pub commit: Option<Commit>,
    pub repository: Option<Repository>,
}

#[derive(Debug, Deserialize)]
pub struct BranchName {
    pub name: String,
}

#[derive(Debug, Deserialize)]
pub struct CommitStatusEvent {
    pub commit_status: CommitStatus,
    pub repository: Option<Repository>,
}

#[derive(Debug, Deserialize)]
pub struct CommitStatus {
    pub key: Option<String>,
    pub state: String,
    pub url: Option<String>,
    pub refname: Option<String>,
    pub commit: Option<Commit>,
}

impl From<PullRequestBody> for PullRequest {
    fn from(p: PullRequestBody) -> Self {
        let branch = |e: &Endpoint| e.branch.as_ref().map(|b| b.name.clone()).unwrap_or_default();
        PullRequest {
            id: p.id,
            title: p.title,
            source_branch: branch(&p.source),
            destination_branch: branch(&p.destination),
            head: p.source.commit.and_then(|c| c.hash),
            state: p.state,
            destination_head: p.destination.commit.and_then(|c| c.hash),
            draft: p.draft,
            source_repository: p.source.repository.and_then(|r| r.full_name),
            destination_repository: p.destination.repository.and_then(|r| r.full_name),
        }
    }
}

fn push_events(push: Push) -> Vec<RepoEvent> {
    push.changes
        .into_iter()
        .filter_map(|c| match (c.new, c.old) {
            (Some(new), _) if new.is_tag() => Some(RepoEvent::TagCreated { target: new.hash(), tag: new.name }),
            (Some(new), Some(old)) if !c.created => Some(RepoEvent::BranchUpdated {
                head: new.hash(),
                previous: old.hash(),
                forced: c.forced,
                branch: new.name,
            }),
            (Some(new), _) => Some(RepoEvent::BranchCreated { head: new.hash(), branch: new.name }),
            (None, Some(old)) if old.is_tag() => Some(RepoEvent::TagDeleted { tag: old.name }),
            (None, Some(old)) => Some(RepoEvent::BranchDeleted { previous: old.hash(), branch: old.name }),
            (None, None) => None,
        })
        .collect()
}

fn repo(r: Option<Repository>) -> Option<String> {
    r.and_then(|r| r.full_name)
}

pub fn normalize(event_key: &str, body: &[u8]) -> Result<ParsedPayload, PayloadError> {
    let pull_request = |make: fn(PullRequest) -> RepoEvent| -> Result<ParsedPayload, PayloadError> {
        let e: PullRequestEvent = serde_json::from_slice(body)?;
        Ok(ParsedPayload { repository: repo(e.repository), events: vec![make(e.pullrequest.into())] })
    };
    match event_key {
        "repo:push" => {
            let e: PushEvent = serde_json::from_slice(body)?;
            Ok(ParsedPayload { repository: repo(e.repository), events: push_events(e.push) })
        }
        "pullrequest:created" => pull_request(|pull_request| RepoEvent::PullRequestOpened { pull_request }),
        "pullrequest:updated" => pull_request(|pull_request| RepoEvent::PullRequestUpdated { pull_request }),
        "pullrequest:fulfilled" => pull_request(|pull_request| RepoEvent::PullRequestMerged { pull_request }),
        "pullrequest:rejected" => pull_request(|pull_request| RepoEvent::PullRequestDeclined { pull_request }),
        "repo:commit_status_created" | "repo:commit_status_updated" => {
            let e: CommitStatusEvent = serde_json::from_slice(body)?;
            let s = e.commit_status;
            Ok(ParsedPayload {
                repository: repo(e.repository),
                events: vec![RepoEvent::CommitStatus {
                    commit: s.commit.and_then(|c| c.hash),
                    state: s.state,
                    key: s.key,
                    refname: s.refname,
                    url: s.url,
                }],
            })
        }
        _ => {
            let e: Envelope = serde_json::from_slice(body)?;
            Ok(other(event_key, repo(e.repository)))
        }
    }
}
