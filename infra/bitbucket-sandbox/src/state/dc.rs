//! The same repository as Bitbucket Data Center shows it (`SANDBOX/demo`): its own list of hooks,
//! and event payloads shaped like the real Data Center ones.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use shared::webhook::Flavor;

use super::{MAIN, PrState, State};
use crate::webhooks::Delivery;
use crate::{DC_PROJECT, REPOSITORY};

pub const DC_HOOK_EVENTS: &[&str] =
    &["repo:refs_changed", "pr:opened", "pr:from_ref_updated", "pr:modified", "pr:merged", "pr:declined", "pr:deleted"];
/// The user the HTTP access token belongs to (`X-AUSERNAME`, and the actor of every event).
pub const DC_USER: &str = "sandbox-dev";
/// Data Center's hash for the side of a ref change that does not exist (ADD, DELETE).
const NO_HASH: &str = "0000000000000000000000000000000000000000";

pub struct DcHook {
    pub id: u64,
    pub name: String,
    pub url: String,
    pub active: bool,
    pub events: Vec<String>,
    pub secret: Option<String>,
    pub created: DateTime<Utc>,
    pub updated: DateTime<Utc>,
}

impl DcHook {
    /// As the API returns it: the secret is never shown.
    pub fn json(&self) -> Value {
        json!({
            "id": self.id,
            "name": self.name,
            "url": self.url,
            "active": self.active,
            "events": self.events,
            "configuration": {},
            "scopeType": "repository",
            "createdDate": self.created.timestamp_millis(),
            "updatedDate": self.updated.timestamp_millis(),
        })
    }
}

/// A change as Data Center hooks hear of it: `X-Event-Key` and payload.
pub struct DcEvent {
    pub key: &'static str,
    pub payload: Value,
}

fn actor_json() -> Value {
    json!({
        "name": DC_USER,
        "slug": DC_USER,
        "id": 1,
        "displayName": "Sandbox Developer",
        "emailAddress": "dev@sandbox.test",
        "active": true,
        "type": "NORMAL",
    })
}

fn branch_ref(branch: &str) -> Value {
    json!({ "id": format!("refs/heads/{branch}"), "displayId": branch, "type": "BRANCH" })
}

impl State {
    fn dc_html(&self, rest: &str) -> String {
        format!("{}/projects/{DC_PROJECT}/repos/{REPOSITORY}{rest}", self.base)
    }

    pub fn dc_repository_json(&self) -> Value {
        json!({
            "slug": REPOSITORY,
            "id": 1,
            "name": REPOSITORY,
            "project": { "key": DC_PROJECT, "name": "Sandbox" },
            "links": { "self": [{ "href": self.dc_html("/browse") }] },
        })
    }

    /// Numbers the hook (ids are never reused) and keeps it; returns it as the API shows it.
    pub fn add_dc_hook(&mut self, mut hook: DcHook) -> Value {
        self.dc_hook_ids += 1;
        hook.id = self.dc_hook_ids;
        let json = hook.json();
        self.dc_hooks.push(hook);
        json
    }

    pub fn dc_hook_index(&self, id: &str) -> Option<usize> {
        let id: u64 = id.trim().parse().ok()?;
        self.dc_hooks.iter().position(|h| h.id == id)
    }

    /// Every payload carries its key, a date, the actor and (except pull requests) the repository.
    fn dc_event(&self, key: &'static str, mut payload: Value) -> DcEvent {
        payload["eventKey"] = json!(key);
        payload["date"] = json!(Utc::now().format("%Y-%m-%dT%H:%M:%S%z").to_string());
        payload["actor"] = actor_json();
        DcEvent { key, payload }
    }

    /// `repo:refs_changed` with one branch change: ADD, UPDATE or DELETE.
    pub(super) fn dc_refs_changed(&self, branch: &str, old: Option<&str>, new: Option<&str>) -> DcEvent {
        let kind = match (old, new) {
            (None, _) => "ADD",
            (_, None) => "DELETE",
            _ => "UPDATE",
        };
        let change = json!({
            "ref": branch_ref(branch),
            "refId": format!("refs/heads/{branch}"),
            "fromHash": old.unwrap_or(NO_HASH),
            "toHash": new.unwrap_or(NO_HASH),
            "type": kind,
        });
        let repository = self.dc_repository_json();
        self.dc_event("repo:refs_changed", json!({ "repository": repository, "changes": [change] }))
    }

    /// A `pr:*` event; `None` for an unknown pull request.
    pub(super) fn dc_pull_event(&self, key: &'static str, id: u64) -> Option<DcEvent> {
        let p = self.pulls.get(&id)?;
        let (source_hash, destination_hash) = self.pull_heads(p);
        let reference = |branch: &str, hash: String| {
            json!({
                "id": format!("refs/heads/{branch}"),
                "displayId": branch,
                "latestCommit": hash,
                "repository": self.dc_repository_json(),
            })
        };
        let mut pull = json!({
            "id": p.id,
            "title": p.title,
            "description": "",
            "state": p.state.as_str(),
            "open": p.state == PrState::Open,
            "closed": p.state != PrState::Open,
            "createdDate": p.created_on.timestamp_millis(),
            "updatedDate": p.updated_on.timestamp_millis(),
            "fromRef": reference(&p.source, source_hash),
            "toRef": reference(&p.destination, destination_hash),
            "locked": false,
            "author": { "user": actor_json(), "role": "AUTHOR", "approved": false, "status": "UNAPPROVED" },
            "reviewers": [],
            "participants": [],
            "links": { "self": [{ "href": self.dc_html(&format!("/pull-requests/{}", p.id)) }] },
        });
        if p.state != PrState::Open {
            pull["closedDate"] = json!(p.updated_on.timestamp_millis());
        }
        Some(self.dc_event(key, json!({ "pullRequest": pull })))
    }

    /// One delivery per active Data Center hook subscribed to the event.
    pub(super) fn dc_deliveries(&self, event: &DcEvent) -> Vec<Delivery> {
        let body = event.payload.to_string().into_bytes();
        self.dc_hooks
            .iter()
            .filter(|h| h.active && h.events.iter().any(|e| e == event.key))
            .map(|h| Delivery {
                flavor: Flavor::DataCenter,
                hook_id: h.id.to_string(),
                url: h.url.clone(),
                secret: h.secret.clone(),
                event_key: event.key.to_owned(),
                body: body.clone(),
            })
            .collect()
    }
}

/// The default branch as `GET …/default-branch` returns it.
pub fn default_branch_json() -> Value {
    let mut json = branch_ref(MAIN);
    json["isDefault"] = json!(true);
    json
}
