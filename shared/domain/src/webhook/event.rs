//! The one event type both flavors normalize into.

use serde::{Deserialize, Serialize};

/// A pull request as the rest of the system needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullRequest {
    pub id: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    pub source_branch: String,
    pub destination_branch: String,
    /// The source head commit (Cloud sends a 12-character abbreviation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// The destination branch's head the pull request knew (Cloud abbreviates it too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_head: Option<String>,
    /// A draft: not ready for review (Bitbucket's `draft`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub draft: bool,
    /// The repositories of the two sides (`workspace/repo`, `PROJECT/repo`), when the payload
    /// names them: they differ for a pull request from a fork.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_repository: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_repository: Option<String>,
}

impl PullRequest {
    /// From a fork: its source branch lives in another repository.
    pub fn from_fork(&self) -> bool {
        matches!((&self.source_repository, &self.destination_repository),
            (Some(source), Some(destination)) if !source.eq_ignore_ascii_case(destination))
    }
}

/// What happened in the repository, whatever product reported it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RepoEvent {
    BranchCreated {
        branch: String,
        head: Option<String>,
    },
    BranchUpdated {
        branch: String,
        head: Option<String>,
        previous: Option<String>,
        forced: bool,
    },
    BranchDeleted {
        branch: String,
        previous: Option<String>,
    },
    TagCreated {
        tag: String,
        target: Option<String>,
    },
    TagDeleted {
        tag: String,
    },
    PullRequestOpened {
        pull_request: PullRequest,
    },
    PullRequestUpdated {
        pull_request: PullRequest,
    },
    PullRequestMerged {
        pull_request: PullRequest,
    },
    PullRequestDeclined {
        pull_request: PullRequest,
    },
    PullRequestDeleted {
        pull_request: PullRequest,
    },
    CommitStatus {
        commit: Option<String>,
        state: String,
        key: Option<String>,
        refname: Option<String>,
        url: Option<String>,
    },
    Ping,
    Other {
        event_key: String,
    },
}

impl RepoEvent {
    /// One short human line, e.g. `branch main updated (forced)`.
    pub fn describe(&self) -> String {
        let pr = |verb: &str, p: &PullRequest| {
            format!("pull request #{} {verb} ({} -> {})", p.id, p.source_branch, p.destination_branch)
        };
        match self {
            RepoEvent::BranchCreated { branch, .. } => format!("branch {branch} created"),
            RepoEvent::BranchUpdated { branch, forced, .. } => {
                format!("branch {branch} updated{}", if *forced { " (forced)" } else { "" })
            }
            RepoEvent::BranchDeleted { branch, .. } => format!("branch {branch} deleted"),
            RepoEvent::TagCreated { tag, .. } => format!("tag {tag} created"),
            RepoEvent::TagDeleted { tag } => format!("tag {tag} deleted"),
            RepoEvent::PullRequestOpened { pull_request } => pr("opened", pull_request),
            RepoEvent::PullRequestUpdated { pull_request } => pr("updated", pull_request),
            RepoEvent::PullRequestMerged { pull_request } => pr("merged", pull_request),
            RepoEvent::PullRequestDeclined { pull_request } => pr("declined", pull_request),
            RepoEvent::PullRequestDeleted { pull_request } => pr("deleted", pull_request),
            RepoEvent::CommitStatus { commit, state, .. } => {
                format!("commit {} status {state}", commit.as_deref().unwrap_or("?"))
            }
            RepoEvent::Ping => "ping".to_owned(),
            RepoEvent::Other { event_key } => format!("{event_key} (not acted on)"),
        }
    }
}

/// The summary stored with a delivery: its events' descriptions, bounded in length.
pub fn summarize(events: &[RepoEvent]) -> String {
    const MAX: usize = 300;
    if events.is_empty() {
        return "no changes".to_owned();
    }
    let mut out = String::new();
    for (i, event) in events.iter().enumerate() {
        let part = event.describe();
        // Leave room for the "; and N more" tail.
        if i > 0 && out.len() + part.len() + 2 > MAX - 20 {
            out.push_str(&format!("; and {} more", events.len() - i));
            break;
        }
        if i > 0 {
            out.push_str("; ");
        }
        out.push_str(&part);
    }
    // One description alone can exceed the bound (Git allows very long ref names).
    if let Some((cut, _)) = out.char_indices().nth(MAX) {
        out.truncate(cut);
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_are_bounded_and_never_empty() {
        let branch = |name: String| RepoEvent::BranchDeleted { branch: name, previous: None };
        let long = summarize(&[branch("é".repeat(400))]);
        assert!(long.starts_with("branch éé") && long.chars().count() == 301, "{long}");
        let many: Vec<_> = (0..40).map(|i| branch(format!("feature/{i}"))).collect();
        let s = summarize(&many);
        assert!(s.starts_with("branch feature/0 deleted; ") && s.ends_with(" more") && s.chars().count() <= 301, "{s}");
        assert_eq!(summarize(&[]), "no changes");
    }
}
