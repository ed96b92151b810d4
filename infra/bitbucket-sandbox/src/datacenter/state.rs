//! The same repository as Bitbucket Data Center shows it (`SANDBOX/demo`): its own list of hooks,
//! and event payloads shaped like the real Data Center ones.

use chrono::{DateTime, Utc};
use domain::webhook::Flavor;
use serde_json::{Value, json};

use crate::error::{DcError, Error};
use crate::state::{Commit, DEFAULT_AUTHOR, Event, MAIN, NewCommit, PrState, State, clean_path, short_branch};
use crate::webhooks::Delivery;
use crate::{DC_PROJECT, REPOSITORY};

pub const DC_HOOK_EVENTS: &[&str] =
    &["repo:refs_changed", "pr:opened", "pr:from_ref_updated", "pr:modified", "pr:merged", "pr:declined", "pr:deleted"];
/// The user the HTTP access token belongs to (`X-AUSERNAME`, and the actor of every event).
pub const DC_USER: &str = "sandbox-dev";
/// Data Center's hash for the side of a ref change that does not exist (ADD, DELETE).
const NO_HASH: &str = "0000000000000000000000000000000000000000";
/// Where `details=true` puts a branch's tip commit.
pub const LATEST_COMMIT_METADATA: &str = "com.atlassian.bitbucket.server.bitbucket-branch:latest-commit-metadata";
/// The exception Data Center names when a file edit is based on a stale commit.
const COMMIT_CONFLICT: &str = "com.atlassian.bitbucket.scm.git.GitCommitConflictException";

/// A file edit through `PUT …/browse/{path}`.
pub struct DcFileEdit {
    pub path: String,
    pub content: Vec<u8>,
    /// The branch to commit to; created when missing.
    pub branch: String,
    pub message: Option<String>,
    /// The commit the caller believes the branch is at: required to change an existing file.
    pub source_commit: Option<String>,
    /// Where a missing `branch` starts (default: the default branch).
    pub source_branch: Option<String>,
}

/// How `GET …/branches` orders them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BranchOrder {
    Alphabetical,
    /// Most recently changed first (the tip commit's date), then by name.
    Modification,
}

/// A full hash, or a prefix of at least 7 hex digits of it.
fn same_commit(tip: &str, given: &str) -> bool {
    tip == given || (given.len() >= 7 && tip.starts_with(given))
}

/// `("Name", "email")` from git's `Name <email>`.
fn split_author(author: &str) -> (&str, &str) {
    match author.split_once('<') {
        Some((name, rest)) => (name.trim(), rest.trim_end().trim_end_matches('>').trim()),
        None => (author.trim(), ""),
    }
}

fn display_id(hash: &str) -> &str {
    hash.get(..11).unwrap_or(hash)
}

fn conflict(message: String) -> DcError {
    DcError { error: Error::conflict(message), exception: Some(COMMIT_CONFLICT) }
}

/// A Data Center build status (`…/commits/{commitId}/builds`), one per (commit, key).
pub struct DcBuild {
    pub commit: String,
    pub key: String,
    pub state: String,
    pub url: String,
    pub name: Option<String>,
    pub description: Option<String>,
    pub reference: Option<String>,
    pub created: DateTime<Utc>,
    pub updated: DateTime<Utc>,
}

impl DcBuild {
    /// As `RestBuildStatus` shows it.
    pub fn json(&self) -> Value {
        let mut json = json!({
            "key": self.key,
            "state": self.state,
            "url": self.url,
            "createdDate": self.created.timestamp_millis(),
            "updatedDate": self.updated.timestamp_millis(),
        });
        for (field, value) in [("name", &self.name), ("description", &self.description), ("ref", &self.reference)] {
            if let Some(value) = value {
                json[field] = json!(value);
            }
        }
        json
    }
}

/// The body of `POST …/commits/{commitId}/builds` (`RestBuildStatusSetRequest`).
#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DcBuildInput {
    pub key: Option<String>,
    pub state: Option<String>,
    pub url: Option<String>,
    pub name: Option<String>,
    pub description: Option<String>,
    #[serde(rename = "ref")]
    pub reference: Option<String>,
}

const DC_BUILD_STATES: &[&str] = &["CANCELLED", "FAILED", "INPROGRESS", "SUCCESSFUL", "UNKNOWN"];

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
    pub(crate) fn dc_refs_changed(&self, branch: &str, old: Option<&str>, new: Option<&str>) -> DcEvent {
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
    pub(crate) fn dc_pull_event(&self, key: &'static str, id: u64) -> Option<DcEvent> {
        let pull = self.dc_pull_json(id)?;
        Some(self.dc_event(key, json!({ "pullRequest": pull })))
    }

    /// A pull request as Data Center shows it, in its events and its `pull-requests` listing.
    pub fn dc_pull_json(&self, id: u64) -> Option<Value> {
        let p = self.pulls.get(&id)?;
        let (source_hash, destination_hash) = self.pull_heads(p);
        let reference = |branch: &str, hash: String, fork: Option<&str>| {
            let mut repository = self.dc_repository_json();
            if let Some((owner, slug)) = fork.and_then(|f| f.split_once('/')) {
                // A fork: the same repository shape, in the forker's project.
                repository["slug"] = json!(slug);
                repository["name"] = json!(slug);
                repository["project"]["key"] = json!(owner.to_ascii_uppercase());
            }
            json!({
                "id": format!("refs/heads/{branch}"),
                "displayId": branch,
                "latestCommit": hash,
                "repository": repository,
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
            "fromRef": reference(&p.source, source_hash, p.fork.as_deref()),
            "toRef": reference(&p.destination, destination_hash, None),
            "draft": p.draft,
            "locked": false,
            "author": { "user": actor_json(), "role": "AUTHOR", "approved": false, "status": "UNAPPROVED" },
            "reviewers": [],
            "participants": [],
            "links": { "self": [{ "href": self.dc_html(&format!("/pull-requests/{}", p.id)) }] },
        });
        if p.state != PrState::Open {
            pull["closedDate"] = json!(p.updated_on.timestamp_millis());
        }
        Some(pull)
    }

    /// One delivery per active Data Center hook subscribed to the event.
    pub(crate) fn dc_deliveries(&self, event: &DcEvent) -> Vec<Delivery> {
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

impl State {
    /// A commit as Data Center's REST API returns it.
    pub fn dc_commit_json(&self, c: &Commit) -> Value {
        let (name, email) = split_author(&c.author);
        let person = json!({ "name": name, "emailAddress": email });
        let millis = c.date.timestamp_millis();
        let parents: Vec<Value> = c.parents.iter().map(|p| json!({ "id": p, "displayId": display_id(p) })).collect();
        json!({
            "id": c.hash,
            "displayId": display_id(&c.hash),
            "message": c.message,
            "author": person,
            "authorTimestamp": millis,
            "committer": person,
            "committerTimestamp": millis,
            "parents": parents,
        })
    }

    /// A branch name (`x` or `refs/heads/x`), a full hash or a prefix of at least 7 digits.
    pub fn dc_resolve(&self, rev: &str) -> Option<&Commit> {
        self.resolve(rev).or_else(|| self.resolve(short_branch(rev)))
    }

    /// One branch as `RestBranch` (`GET …/branches/default`, branch creation).
    pub fn dc_branch_json(&self, name: &str) -> Option<Value> {
        let hash = self.tip(name)?;
        Some(json!({
            "id": format!("refs/heads/{name}"),
            "displayId": name,
            "type": "BRANCH",
            "latestCommit": hash,
            "latestChangeset": hash,
            "isDefault": name == MAIN,
        }))
    }

    /// The branches whose name contains `filter` (any case), as `GET …/branches` lists them.
    pub fn dc_branches_json(&self, filter: &str, order: BranchOrder, details: bool) -> Vec<Value> {
        let filter = filter.to_lowercase();
        let mut branches: Vec<(&str, &Commit)> = self
            .branches
            .iter()
            .filter(|(name, _)| name.to_lowercase().contains(&filter))
            .filter_map(|(name, hash)| Some((name.as_str(), self.commits.get(hash)?)))
            .collect();
        if order == BranchOrder::Modification {
            // Stable: equal dates stay in name order.
            branches.sort_by_key(|b| std::cmp::Reverse(b.1.date));
        }
        branches
            .into_iter()
            .map(|(name, c)| {
                let mut json = json!({
                    "id": format!("refs/heads/{name}"),
                    "displayId": name,
                    "type": "BRANCH",
                    "latestCommit": c.hash,
                    "latestChangeset": c.hash,
                    "isDefault": name == MAIN,
                });
                if details {
                    json["metadata"] = json!({ LATEST_COMMIT_METADATA: self.dc_commit_json(c) });
                }
                json
            })
            .collect()
    }

    /// Pull requests in `states`; with `at` (a branch), those from it (`outgoing`) or into it.
    pub fn dc_pulls_json(
        &self,
        states: &[PrState],
        at: Option<&str>,
        outgoing: bool,
        newest_first: bool,
    ) -> Vec<Value> {
        let at = at.map(short_branch);
        let mut pulls: Vec<Value> = self
            .pulls
            .values()
            .filter(|p| states.contains(&p.state))
            .filter(|p| at.is_none_or(|b| if outgoing { p.source == b } else { p.destination == b }))
            .filter_map(|p| self.dc_pull_json(p.id))
            .collect();
        if newest_first {
            pulls.reverse();
        }
        pulls
    }

    /// Commits one file as `PUT …/browse/{path}` does: on the branch's tip (which
    /// `source_commit` must name when given, and must be given to change an existing file),
    /// or on a new branch started at `source_branch`'s tip.
    pub fn dc_edit_file(&mut self, edit: DcFileEdit) -> Result<(String, Vec<Event>), DcError> {
        let path = clean_path(&edit.path)?;
        let branch = short_branch(edit.branch.trim()).to_owned();
        let source_commit = edit.source_commit.as_deref().map(str::trim).filter(|s| !s.is_empty());
        let base = match self.tip(&branch) {
            Some(tip) => {
                let exists = self.commits.get(tip).is_some_and(|c| c.tree.contains_key(&path));
                match source_commit {
                    Some(given) if !same_commit(tip, given) => {
                        return Err(conflict(format!(
                            "Could not commit '{path}': branch '{branch}' has been modified since {given} \
                             (its tip is now {})",
                            display_id(tip)
                        )));
                    }
                    None if exists => {
                        return Err(conflict(format!(
                            "'{path}' already exists on branch '{branch}': editing it needs the sourceCommitId \
                             it was read at"
                        )));
                    }
                    _ => tip.to_owned(),
                }
            }
            None => {
                let from = edit.source_branch.as_deref().map(|b| short_branch(b.trim())).filter(|b| !b.is_empty());
                let from = from.unwrap_or(MAIN);
                let tip = self.tip(from).ok_or_else(|| Error::not_found(format!("Branch '{from}' does not exist.")))?;
                if let Some(given) = source_commit.filter(|given| !same_commit(tip, given)) {
                    return Err(conflict(format!(
                        "Could not create branch '{branch}' from '{from}': it has been modified since {given} \
                         (its tip is now {})",
                        display_id(tip)
                    )));
                }
                tip.to_owned()
            }
        };
        let message = edit.message.filter(|m| !m.trim().is_empty());
        let commit = NewCommit {
            branch,
            message: message.unwrap_or_else(|| format!("{path} edited online with Bitbucket")),
            author: DEFAULT_AUTHOR.to_owned(),
            parents: Some(base),
            files: vec![(path, edit.content)],
            deletes: Vec::new(),
        };
        Ok(self.commit_files(commit)?)
    }
}

/// The default branch as `GET …/default-branch` returns it.
impl State {
    /// Stores a build status, replacing the one of the same commit and key; the checks the
    /// operation's description lists (key 1-255, a known state, url 1-450, `ref` under `refs/`).
    pub fn set_dc_build(&mut self, commit: &str, input: DcBuildInput) -> Result<(), Error> {
        let hash = self
            .resolve(commit)
            .ok_or_else(|| Error::bad_request(format!("Commit {commit} does not exist")))?
            .hash
            .clone();
        let key = input.key.filter(|k| !k.trim().is_empty() && k.len() <= 255);
        let key = key.ok_or_else(|| Error::bad_request("key: a build key of 1 to 255 characters is required"))?;
        let state = input.state.filter(|s| DC_BUILD_STATES.contains(&s.as_str()));
        let state = state.ok_or_else(|| Error::bad_request(format!("state: one of {}", DC_BUILD_STATES.join(", "))))?;
        let url = input.url.filter(|u| !u.trim().is_empty() && u.len() <= 450);
        let url = url.ok_or_else(|| Error::bad_request("url: a build URL of 1 to 450 characters is required"))?;
        if input.reference.as_ref().is_some_and(|r| !r.starts_with("refs/")) {
            return Err(Error::bad_request("ref: a fully qualified reference (refs/heads/…) is expected"));
        }
        let now = self.now();
        let build = DcBuild {
            commit: hash,
            key,
            state,
            url,
            name: input.name,
            description: input.description,
            reference: input.reference,
            created: now,
            updated: now,
        };
        match self.dc_builds.iter_mut().find(|b| b.commit == build.commit && b.key == build.key) {
            Some(existing) => *existing = DcBuild { created: existing.created, ..build },
            None => self.dc_builds.push(build),
        }
        Ok(())
    }

    /// The build status of `commit` with `key`.
    pub fn dc_build(&self, commit: &str, key: &str) -> Option<Value> {
        let hash = &self.resolve(commit)?.hash;
        self.dc_builds.iter().find(|b| &b.commit == hash && b.key == key).map(DcBuild::json)
    }

    /// Every build status of `commit`, oldest first.
    pub fn dc_builds_of(&self, commit: &str) -> Vec<Value> {
        let Some(hash) = self.resolve(commit).map(|c| c.hash.clone()) else { return Vec::new() };
        self.dc_builds.iter().filter(|b| b.commit == hash).map(DcBuild::json).collect()
    }
}

pub fn default_branch_json() -> Value {
    let mut json = branch_ref(MAIN);
    json["isDefault"] = json!(true);
    json
}
