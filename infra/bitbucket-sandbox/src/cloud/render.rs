//! Bitbucket Cloud's JSON: the repository, its commits, branches, hooks, pull requests and build
//! statuses as the Cloud API (and Cloud's webhook payloads) show them.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

use crate::state::{ACCOUNT_ID, BuildStatus, Commit, Hook, MAIN, PrState, REPO_UUID, State, USER_UUID, WORKSPACE_UUID};
use crate::{REPOSITORY, WORKSPACE};

pub(crate) fn iso(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, false)
}

pub(crate) fn href(url: String) -> Value {
    json!({ "href": url })
}

/// The uuid every fork's repository shows.
const FORK_UUID: &str = "{9c8b7a6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d}";

/// How many hex digits of a commit hash Cloud shows in pull requests (API and webhooks).
pub const PULL_REQUEST_HASH_DIGITS: usize = 12;

pub(crate) fn short_hash(hash: &str) -> &str {
    hash.get(..PULL_REQUEST_HASH_DIGITS).unwrap_or(hash)
}

/// One path segment, percent-encoded (all but RFC 3986 unreserved characters).
pub(crate) fn escape(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Each `/`-separated segment of a path, percent-encoded.
pub(crate) fn escape_path(path: &str) -> String {
    path.split('/').map(escape).collect::<Vec<_>>().join("/")
}

/// The workspace `sandbox`, as `GET /2.0/workspaces/{workspace}` shows it.
pub fn workspace_json(base: &str) -> Value {
    json!({
        "type": "workspace",
        "uuid": WORKSPACE_UUID,
        "name": "Sandbox",
        "slug": WORKSPACE,
        "is_private": true,
        "created_on": "2024-01-01T00:00:00.000000+00:00",
        "links": {
            "self": href(format!("{base}/2.0/workspaces/{WORKSPACE}")),
            "html": href(format!("{base}/{WORKSPACE}/")),
            "repositories": href(format!("{base}/2.0/repositories/{WORKSPACE}")),
        },
    })
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

    /// A `commit_file` or `commit_directory` at `path` (relative) of `commit`, as `src` lists them.
    pub fn tree_entry_json(&self, c: &Commit, path: &str, directory: bool) -> Value {
        let commit = json!({
            "type": "commit",
            "hash": c.hash,
            "links": { "self": href(self.api(&format!("/commit/{}", c.hash))) },
        });
        let src = self.api(&format!("/src/{}/{}", c.hash, escape_path(path)));
        if directory {
            return json!({
                "type": "commit_directory",
                "path": path,
                "commit": commit,
                "links": {
                    "self": href(format!("{src}/")),
                    "meta": href(format!("{src}/?format=meta")),
                },
            });
        }
        let size = c.tree.get(path).map_or(0, Vec::len);
        json!({
            "type": "commit_file",
            "path": path,
            "escaped_path": path,
            "commit": commit,
            "size": size,
            "links": {
                "self": href(src.clone()),
                "meta": href(format!("{src}?format=meta")),
                "history": href(self.api(&format!("/filehistory/{}/{}", c.hash, escape_path(path)))),
            },
        })
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
            "links": { "self": href(self.api(&format!("/hooks/{}", escape(&h.uuid)))) },
        })
    }

    pub fn pull_json(&self, id: u64) -> Option<Value> {
        let p = self.pulls.get(&id)?;
        let (source_hash, destination_hash) = self.pull_heads(p);
        let endpoint = |branch: &str, hash: String, fork: Option<&str>| {
            let repository = match fork {
                // A fork: another repository (its own name and uuid).
                Some(full_name) => json!({ "type": "repository", "full_name": full_name,
                    "name": full_name.rsplit('/').next().unwrap_or(full_name), "uuid": FORK_UUID }),
                None => {
                    json!({ "type": "repository", "full_name": format!("{WORKSPACE}/{REPOSITORY}"), "name": REPOSITORY, "uuid": REPO_UUID })
                }
            };
            json!({
                "branch": { "name": branch },
                // Schema `pullrequest_endpoint`: `{hash}` only, and live Cloud sends 12 digits.
                "commit": { "hash": short_hash(&hash) },
                "repository": repository,
            })
        };
        Some(json!({
            "type": "pullrequest",
            "id": p.id,
            "title": p.title,
            "description": "",
            "state": p.state.as_str(),
            "author": user_json(),
            "source": endpoint(&p.source, source_hash, p.fork.as_deref()),
            "destination": endpoint(&p.destination, destination_hash, None),
            "draft": p.draft,
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
            "links": {
                "self": href(self.api(&format!("/commit/{}/statuses/build/{}", s.commit, escape(&i.key)))),
                "commit": href(self.api(&format!("/commit/{}", s.commit))),
            },
        })
    }

    /// The status of `rev` with `key`.
    pub fn status_json_by_key(&self, rev: &str, key: &str) -> Option<Value> {
        let hash = &self.resolve(rev)?.hash;
        self.statuses.iter().find(|s| &s.commit == hash && s.input.key == key).map(|s| self.status_json(s))
    }

    pub(crate) fn status_input(&self, rev: &str, key: &str) -> Option<crate::state::StatusInput> {
        let hash = &self.resolve(rev)?.hash;
        self.statuses.iter().find(|s| &s.commit == hash && s.input.key == key).map(|s| s.input.clone())
    }

    pub fn statuses_json(&self, rev: &str) -> Option<Vec<Value>> {
        let hash = &self.resolve(rev)?.hash;
        Some(self.statuses.iter().filter(|s| &s.commit == hash).map(|s| self.status_json(s)).collect())
    }
}
