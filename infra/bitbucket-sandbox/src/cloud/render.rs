//! Bitbucket Cloud's JSON: the repository, its commits, branches, hooks, pull requests and build
//! statuses as the Cloud API (and Cloud's webhook payloads) show them.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

use crate::state::{ACCOUNT_ID, BuildStatus, Commit, Hook, MAIN, PrState, REPO_UUID, State, USER_UUID};
use crate::{REPOSITORY, WORKSPACE};

pub(crate) fn iso(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, false)
}

fn href(url: String) -> Value {
    json!({ "href": url })
}

pub fn user_json() -> Value {
    json!({
        "type": "user",
        "uuid": USER_UUID,
        "account_id": ACCOUNT_ID,
        "display_name": "Sandbox Developer",
        "nickname": "sandbox-dev",
        "username": "sandbox-dev",
    })
}

impl State {
    pub(crate) fn api(&self, rest: &str) -> String {
        format!("{}/2.0/repositories/{WORKSPACE}/{REPOSITORY}{rest}", self.base)
    }

    pub(crate) fn html(&self, rest: &str) -> String {
        format!("{}/{WORKSPACE}/{REPOSITORY}{rest}", self.base)
    }

    pub fn repository_json(&self) -> Value {
        json!({
            "type": "repository",
            "uuid": REPO_UUID,
            "full_name": format!("{WORKSPACE}/{REPOSITORY}"),
            "name": REPOSITORY,
            "slug": REPOSITORY,
            "is_private": true,
            "scm": "git",
            "mainbranch": { "type": "branch", "name": MAIN },
            "workspace": { "type": "workspace", "slug": WORKSPACE, "name": WORKSPACE },
            "links": { "self": href(self.api("")), "html": href(self.html("")) },
        })
    }

    pub fn commit_json(&self, c: &Commit) -> Value {
        let parents: Vec<Value> = c
            .parents
            .iter()
            .map(|p| json!({ "type": "commit", "hash": p, "links": { "self": href(self.api(&format!("/commit/{p}"))) } }))
            .collect();
        json!({
            "type": "commit",
            "hash": c.hash,
            "date": c.date.to_rfc3339_opts(SecondsFormat::Secs, false),
            "message": c.message,
            "author": { "type": "author", "raw": c.author },
            "parents": parents,
            "links": {
                "self": href(self.api(&format!("/commit/{}", c.hash))),
                "html": href(self.html(&format!("/commits/{}", c.hash))),
            },
        })
    }

    /// A branch as `refs/branches` returns it, and as push changes carry it in `old`/`new`.
    pub fn ref_json(&self, name: &str, c: &Commit) -> Value {
        json!({
            "type": "branch",
            "name": name,
            "target": self.commit_json(c),
            "links": {
                "self": href(self.api(&format!("/refs/branches/{name}"))),
                "html": href(self.html(&format!("/branch/{name}"))),
            },
        })
    }

    pub fn branch_json(&self, name: &str) -> Option<Value> {
        self.resolve_branch(name).map(|c| self.ref_json(name, c))
    }

    pub fn hook_json(&self, h: &Hook) -> Value {
        json!({
            "type": "webhook_subscription",
            "uuid": h.uuid,
            "url": h.url,
            "description": h.description,
            "subject_type": "repository",
            "subject": { "type": "repository", "full_name": format!("{WORKSPACE}/{REPOSITORY}"), "uuid": REPO_UUID },
            "active": h.active,
            "events": h.events,
            "secret_set": h.secret.is_some(),
            "skip_cert_verification": false,
            "created_at": iso(&h.created_at),
        })
    }

    pub fn pull_json(&self, id: u64) -> Option<Value> {
        let p = self.pulls.get(&id)?;
        let (source_hash, destination_hash) = self.pull_heads(p);
        let endpoint = |branch: &str, hash: String| {
            json!({
                "branch": { "name": branch },
                "commit": { "type": "commit", "hash": hash },
                "repository": { "type": "repository", "full_name": format!("{WORKSPACE}/{REPOSITORY}"), "name": REPOSITORY, "uuid": REPO_UUID },
            })
        };
        Some(json!({
            "type": "pullrequest",
            "id": p.id,
            "title": p.title,
            "description": "",
            "state": p.state.as_str(),
            "author": user_json(),
            "source": endpoint(&p.source, source_hash),
            "destination": endpoint(&p.destination, destination_hash),
            "close_source_branch": false,
            "created_on": iso(&p.created_on),
            "updated_on": iso(&p.updated_on),
            "links": {
                "self": href(self.api(&format!("/pullrequests/{}", p.id))),
                "html": href(self.html(&format!("/pull-requests/{}", p.id))),
            },
        }))
    }

    pub fn pulls_json(&self, states: &[PrState]) -> Vec<Value> {
        self.pulls.values().filter(|p| states.contains(&p.state)).filter_map(|p| self.pull_json(p.id)).collect()
    }

    pub(crate) fn status_json(&self, s: &BuildStatus) -> Value {
        let i = &s.input;
        json!({
            "type": "build",
            "key": i.key,
            "state": i.state,
            "name": i.name.clone().unwrap_or_else(|| i.key.clone()),
            "url": i.url,
            "refname": i.refname,
            "description": i.description.clone().unwrap_or_default(),
            "created_on": iso(&s.created_on),
            "updated_on": iso(&s.updated_on),
            "commit": { "type": "commit", "hash": s.commit, "links": { "self": href(self.api(&format!("/commit/{}", s.commit))) } },
            "links": { "commit": href(self.api(&format!("/commit/{}", s.commit))) },
        })
    }

    pub fn statuses_json(&self, rev: &str) -> Option<Vec<Value>> {
        let hash = &self.resolve(rev)?.hash;
        Some(self.statuses.iter().filter(|s| &s.commit == hash).map(|s| self.status_json(s)).collect())
    }
}
