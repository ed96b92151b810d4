//! Both webhook flavors' parsers on arbitrary event keys and bodies: never a panic, and what a
//! parse returns agrees with the JSON it was read from.

use std::borrow::Cow;

use serde_json::Value;
use domain::webhook::{self, Flavor, ParsedPayload, RepoEvent, summarize};

use crate::split_line;

/// Cloud keys: every one in the fixtures' MANIFEST.tsv, plus the ones `webhook::cloud` models.
pub const CLOUD_KEYS: &[&str] = &[
    "repo:push",
    "pullrequest:created",
    "pullrequest:updated",
    "pullrequest:fulfilled",
    "pullrequest:rejected",
    "pullrequest:comment_created",
    "repo:commit_status_created",
    "repo:commit_status_updated",
];

/// Data Center keys: every one in MANIFEST.tsv, plus the ones `webhook::datacenter` models.
pub const DATACENTER_KEYS: &[&str] = &[
    "repo:refs_changed",
    "mirror:repo_synchronized",
    "pr:opened",
    "pr:from_ref_updated",
    "pr:modified",
    "pr:merged",
    "pr:declined",
    "pr:deleted",
    "diagnostics:ping",
    "pr:comment:added",
    "pr:comment:deleted",
    "pr:comment:edited",
    "pr:reviewer:approved",
    "pr:reviewer:needs_work",
    "pr:reviewer:unapproved",
    "pr:reviewer:updated",
    "repo:comment:added",
    "repo:comment:deleted",
    "repo:comment:edited",
    "repo:forked",
    "repo:modified",
];

/// The event key and body an input stands for (see the crate docs for the layout).
pub fn split_key<'a>(data: &'a [u8], keys: &[&'static str]) -> (Cow<'a, str>, &'a [u8]) {
    match data.first() {
        Some(&b) if b < 0x20 && b != b'\n' => (Cow::Borrowed(keys[usize::from(b) % keys.len()]), &data[1..]),
        _ => {
            let (key, body) = split_line(data);
            (String::from_utf8_lossy(key), body)
        }
    }
}

pub fn check_cloud(data: &[u8]) {
    let (key, body) = split_key(data, CLOUD_KEYS);
    let Some((parsed, json)) = parse(Flavor::Cloud, &key, body) else { return };
    let Some(json) = json else { return };
    assert_eq!(
        parsed.repository.as_deref(),
        json.pointer("/repository/full_name").and_then(Value::as_str),
        "repository is the payload's full_name"
    );
    let events = &parsed.events;
    match key.as_ref() {
        "repo:push" => {
            // One event per change that names a ref on either side; none invented.
            let changes = json.pointer("/push/changes").and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
            let named = changes.iter().filter(|c| present(c, "new") || present(c, "old")).count();
            assert_eq!(events.len(), named, "push events per change");
            assert!(events.iter().all(|e| matches!(
                e,
                RepoEvent::BranchCreated { .. }
                    | RepoEvent::BranchUpdated { .. }
                    | RepoEvent::BranchDeleted { .. }
                    | RepoEvent::TagCreated { .. }
                    | RepoEvent::TagDeleted { .. }
            )));
        }
        "pullrequest:created" | "pullrequest:updated" | "pullrequest:fulfilled" | "pullrequest:rejected" => {
            let [event] = events.as_slice() else { panic!("one event per pull request delivery: {events:?}") };
            let pr = pull_request(event).expect("a pull request event");
            assert_eq!(Some(pr.id), json.pointer("/pullrequest/id").and_then(Value::as_u64));
        }
        "repo:commit_status_created" | "repo:commit_status_updated" => {
            let [RepoEvent::CommitStatus { state, .. }] = events.as_slice() else {
                panic!("one commit status event: {events:?}")
            };
            assert_eq!(Some(state.as_str()), json.pointer("/commit_status/state").and_then(Value::as_str));
        }
        other => assert_eq!(events, &[RepoEvent::Other { event_key: other.to_owned() }]),
    }
}

pub fn check_datacenter(data: &[u8]) {
    let (key, body) = split_key(data, DATACENTER_KEYS);
    let Some((parsed, json)) = parse(Flavor::DataCenter, &key, body) else { return };
    let events = &parsed.events;
    // The all-zero hash DC sends for a missing side never surfaces as a commit.
    for hash in events.iter().flat_map(hashes) {
        assert!(!hash.is_empty() && !hash.bytes().all(|b| b == b'0'), "placeholder hash kept: {hash:?}");
    }
    if key == webhook::PING_EVENT_KEY {
        assert_eq!(parsed, ParsedPayload { repository: None, events: vec![RepoEvent::Ping] });
        return;
    }
    let Some(json) = json else { return };
    let pr_keys = ["pr:opened", "pr:from_ref_updated", "pr:modified", "pr:merged", "pr:declined", "pr:deleted"];
    let repository_at = if pr_keys.contains(&key.as_ref()) { "/pullRequest/toRef/repository" } else { "/repository" };
    let repository = json
        .pointer(repository_at)
        .and_then(|r| Some(format!("{}/{}", r.pointer("/project/key")?.as_str()?, r.get("slug")?.as_str()?)));
    assert_eq!(parsed.repository, repository, "repository is PROJECT/slug");
    match key.as_ref() {
        "repo:refs_changed" | "mirror:repo_synchronized" => {
            let changes = json.get("changes").and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
            let named = changes.iter().filter(|c| present(c, "ref") || present(c, "refId")).count();
            let limited = json.get("refLimitExceeded").and_then(Value::as_bool).unwrap_or(false);
            if named == 0 && limited {
                assert_eq!(events, &[RepoEvent::Other { event_key: key.into_owned() }]);
            } else {
                assert_eq!(events.len(), named, "ref events per change");
            }
        }
        k if pr_keys.contains(&k) => {
            let [event] = events.as_slice() else { panic!("one event per pull request delivery: {events:?}") };
            let pr = pull_request(event).expect("a pull request event");
            assert_eq!(Some(pr.id), json.pointer("/pullRequest/id").and_then(Value::as_u64));
        }
        other => assert_eq!(events, &[RepoEvent::Other { event_key: other.to_owned() }]),
    }
}

/// Parses with both the shared parser and a plain JSON reader, checking what holds for every
/// flavor and key: an accepted body is JSON, its summary is bounded, and the result survives
/// the serde round trip deliveries are stored with. `None` when the parser refused the body.
fn parse(flavor: Flavor, key: &str, body: &[u8]) -> Option<(ParsedPayload, Option<Value>)> {
    let parsed = match webhook::parse(flavor, key, body) {
        Ok(parsed) => parsed,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return None;
        }
    };
    assert!(serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok(), "accepted a body that is not JSON");
    let summary = summarize(&parsed.events);
    assert!(!summary.is_empty() && summary.chars().count() <= 301, "summary unbounded: {} chars", summary.len());
    let stored = serde_json::to_vec(&parsed).expect("a parsed payload serializes");
    let back: ParsedPayload = serde_json::from_slice(&stored).expect("a stored payload reads back");
    assert_eq!(back, parsed, "stored payload round trip");
    // A body the plain reader refuses (e.g. a lone surrogate in an ignored field) is only
    // checked for the above.
    Some((parsed, serde_json::from_slice(body).ok()))
}

/// A field present and not null.
fn present(object: &Value, field: &str) -> bool {
    object.get(field).is_some_and(|v| !v.is_null())
}

fn pull_request(event: &RepoEvent) -> Option<&webhook::PullRequest> {
    match event {
        RepoEvent::PullRequestOpened { pull_request }
        | RepoEvent::PullRequestUpdated { pull_request }
        | RepoEvent::PullRequestMerged { pull_request }
        | RepoEvent::PullRequestDeclined { pull_request }
        | RepoEvent::PullRequestDeleted { pull_request } => Some(pull_request),
        _ => None,
    }
}

fn hashes(event: &RepoEvent) -> Vec<&str> {
    match event {
        RepoEvent::BranchCreated { head, .. } => head.iter().map(String::as_str).collect(),
        RepoEvent::BranchUpdated { head, previous, .. } => head.iter().chain(previous).map(String::as_str).collect(),
        RepoEvent::BranchDeleted { previous, .. } => previous.iter().map(String::as_str).collect(),
        RepoEvent::TagCreated { target, .. } => target.iter().map(String::as_str).collect(),
        _ => Vec::new(),
    }
}
