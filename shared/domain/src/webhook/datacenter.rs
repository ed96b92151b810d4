//! Bitbucket Data Center payloads (`X-Event-Key`, `X-Request-Id`, body `eventKey`). Lenient like
//! the Cloud models. Ref changes carry an all-zero hash on the missing side of ADD/DELETE.

use serde::Deserialize;

use super::{ParsedPayload, PayloadError, PullRequest, RepoEvent, other, validate_json};

#[derive(Debug, Deserialize)]
pub struct Repository {
    pub slug: Option<String>,
    pub project: Option<Project>,
}

#[derive(Debug, Deserialize)]
pub struct Project {
    pub key: Option<String>,
}

/// Any Data Center payload, read only for its repository.
#[derive(Debug, Deserialize)]
pub struct Envelope {
    pub repository: Option<Repository>,
}

/// `repo:refs_changed` and `mirror:repo_synchronized` share this shape.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RefsChanged {
    #[serde(default)]
    pub changes: Vec<RefChange>,
    pub repository: Option<Repository>,
    #[serde(default)]
    pub ref_limit_exceeded: bool,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RefChange {
    #[serde(rename = "ref")]
    pub reference: Option<Ref>,
    pub ref_id: Option<String>,
    pub from_hash: Option<String>,
    pub to_hash: Option<String>,
    /// `ADD`, `UPDATE` or `DELETE`.
    #[serde(rename = "type")]
    pub kind: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ref {
    pub id: String,
    pub display_id: Option<String>,
    /// `BRANCH` or `TAG`.
    #[serde(rename = "type")]
    pub kind: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PullRequestEvent {
    pub pull_request: PullRequestBody,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PullRequestBody {
    pub id: u64,
    pub title: Option<String>,
    pub state: Option<String>,
    /// Data Center 8.18 and later.
    #[serde(default)]
    pub draft: bool,
    pub from_ref: PrRef,
    pub to_ref: PrRef,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PrRef {
    pub id: String,
    pub display_id: Option<String>,
    pub latest_commit: Option<String>,
    pub repository: Option<Repository>,
}

fn short_name(id: &str, display: Option<&str>) -> String {
    display
        .map(str::to_owned)
        .or_else(|| id.strip_prefix("refs/heads/").or_else(|| id.strip_prefix("refs/tags/")).map(str::to_owned))
        .unwrap_or_else(|| id.to_owned())
}

/// DC marks the side of a change that does not exist with forty zeros.
fn real_hash(hash: Option<String>) -> Option<String> {
    hash.filter(|h| !h.is_empty() && !h.bytes().all(|b| b == b'0'))
}

fn repo_name(r: Option<&Repository>) -> Option<String> {
    let r = r?;
    Some(format!("{}/{}", r.project.as_ref()?.key.as_deref()?, r.slug.as_deref()?))
}

fn ref_events(changes: Vec<RefChange>) -> Vec<RepoEvent> {
    changes
        .into_iter()
        .filter_map(|c| {
            let id = c.reference.as_ref().map(|r| r.id.clone()).or(c.ref_id.clone())?;
            let is_tag = c
                .reference
                .as_ref()
                .and_then(|r| r.kind.as_deref())
                .map(|k| k.eq_ignore_ascii_case("TAG"))
                .unwrap_or_else(|| id.starts_with("refs/tags/"));
            let name = short_name(&id, c.reference.as_ref().and_then(|r| r.display_id.as_deref()));
            let (from, to) = (real_hash(c.from_hash), real_hash(c.to_hash));
            Some(match (c.kind.to_ascii_uppercase().as_str(), is_tag) {
                ("ADD", true) => RepoEvent::TagCreated { tag: name, target: to },
                ("DELETE", true) => RepoEvent::TagDeleted { tag: name },
                ("UPDATE", true) => RepoEvent::TagCreated { tag: name, target: to },
                ("ADD", false) => RepoEvent::BranchCreated { branch: name, head: to },
                ("DELETE", false) => RepoEvent::BranchDeleted { branch: name, previous: from },
                // DC does not say whether an update was forced.
                _ => RepoEvent::BranchUpdated { branch: name, head: to, previous: from, forced: false },
            })
        })
        .collect()
}

impl From<PullRequestBody> for PullRequest {
    fn from(p: PullRequestBody) -> Self {
        PullRequest {
            id: p.id,
            title: p.title,
            source_branch: short_name(&p.from_ref.id, p.from_ref.display_id.as_deref()),
            destination_branch: short_name(&p.to_ref.id, p.to_ref.display_id.as_deref()),
            head: p.from_ref.latest_commit,
            state: p.state,
            destination_head: p.to_ref.latest_commit,
            draft: p.draft,
            source_repository: repo_name(p.from_ref.repository.as_ref()),
            destination_repository: repo_name(p.to_ref.repository.as_ref()),
        }
    }
}

pub fn normalize(event_key: &str, body: &[u8]) -> Result<ParsedPayload, PayloadError> {
    let pull_request = |make: fn(PullRequest) -> RepoEvent| -> Result<ParsedPayload, PayloadError> {
        let e: PullRequestEvent = serde_json::from_slice(body)?;
        let repository = repo_name(e.pull_request.to_ref.repository.as_ref());
        Ok(ParsedPayload { repository, events: vec![make(e.pull_request.into())] })
    };
    match event_key {
        "repo:refs_changed" | "mirror:repo_synchronized" => {
            let e: RefsChanged = serde_json::from_slice(body)?;
            let repository = repo_name(e.repository.as_ref());
            let mut events = ref_events(e.changes);
            if e.ref_limit_exceeded && events.is_empty() {
                // The mirror had too many refs to list: nothing specific to act on here;
                // reconciliation picks the changes up.
                events.push(RepoEvent::Other { event_key: event_key.to_owned() });
            }
            Ok(ParsedPayload { repository, events })
        }
        "pr:opened" => pull_request(|pull_request| RepoEvent::PullRequestOpened { pull_request }),
        "pr:from_ref_updated" | "pr:modified" => {
            pull_request(|pull_request| RepoEvent::PullRequestUpdated { pull_request })
        }
        "pr:merged" => pull_request(|pull_request| RepoEvent::PullRequestMerged { pull_request }),
        "pr:declined" => pull_request(|pull_request| RepoEvent::PullRequestDeclined { pull_request }),
        "pr:deleted" => pull_request(|pull_request| RepoEvent::PullRequestDeleted { pull_request }),
        super::PING_EVENT_KEY => {
            validate_json(body)?;
            Ok(ParsedPayload { repository: None, events: vec![RepoEvent::Ping] })
        }
        _ => {
            let e: Envelope = serde_json::from_slice(body)?;
            Ok(other(event_key, repo_name(e.repository.as_ref())))
        }
    }
}
