//! The repository model: commits that keep their full file tree, branches, hooks, pull requests
//! and build statuses. Each mutation returns the webhook events it causes; `Sandbox` sends them.
//! How each flavor shows the model is elsewhere: Cloud's JSON in [`crate::cloud::render`], Data
//! Center's (and its own hooks and file edits) in [`crate::datacenter::state`].

mod branch_admin;

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use domain::webhook::Flavor;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

pub use crate::cloud::render::user_json;
use crate::datacenter::state::{DcEvent, DcHook};
use crate::error::Error;
use crate::webhooks::Delivery;

pub use branch_admin::short_branch;

pub const MAIN: &str = "main";
pub const DEFAULT_AUTHOR: &str = "Sandbox Developer <dev@sandbox.test>";
// Fixed ids, so links and payloads look the same from one run to the next.
pub(crate) const REPO_UUID: &str = "{2b9d3e4f-6a71-4c5e-9f08-1d2c3b4a5e6f}";
pub(crate) const USER_UUID: &str = "{7e1c2d3b-4a5f-4e6d-8c9b-0a1f2e3d4c5b}";
pub(crate) const WORKSPACE_UUID: &str = "{5a4b3c2d-1e0f-4a9b-8c7d-6e5f4a3b2c1d}";
pub(crate) const ACCOUNT_ID: &str = "712020:7e1c2d3b-4a5f-4e6d-8c9b-0a1f2e3d4c5b";

pub const HOOK_EVENTS: &[&str] = &[
    "repo:push",
    "pullrequest:created",
    "pullrequest:updated",
    "pullrequest:fulfilled",
    "pullrequest:rejected",
    "repo:commit_status_created",
    "repo:commit_status_updated",
];
const STATUS_STATES: &[&str] = &["INPROGRESS", "SUCCESSFUL", "FAILED", "STOPPED"];

pub type Tree = BTreeMap<String, Vec<u8>>;

pub struct Commit {
    pub hash: String,
    pub message: String,
    pub author: String,
    pub date: DateTime<Utc>,
    pub parents: Vec<String>,
    pub tree: Tree,
    /// Creation order: newer commits have larger numbers.
    pub seq: usize,
}

/// What a path names in a commit's tree.
pub enum TreeEntry<'a> {
    File(&'a [u8]),
    /// A directory: its immediate children, `(name, is_directory)`, in name order.
    Directory(Vec<(String, bool)>),
}

pub struct Hook {
    pub uuid: String,
    pub url: String,
    pub description: String,
    pub active: bool,
    pub events: Vec<String>,
    pub secret: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrState {
    Open,
    Merged,
    Declined,
}

impl PrState {
    pub fn as_str(self) -> &'static str {
        match self {
            PrState::Open => "OPEN",
            PrState::Merged => "MERGED",
            PrState::Declined => "DECLINED",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        [PrState::Open, PrState::Merged, PrState::Declined].into_iter().find(|p| p.as_str().eq_ignore_ascii_case(s))
    }
}

pub(crate) struct PullRequest {
    pub(crate) id: u64,
    pub(crate) title: String,
    pub(crate) state: PrState,
    pub(crate) source: String,
    pub(crate) destination: String,
    // The tips when last touched: what a closed pull request keeps showing.
    pub(crate) source_hash: String,
    pub(crate) destination_hash: String,
    pub(crate) created_on: DateTime<Utc>,
    pub(crate) updated_on: DateTime<Utc>,
    /// Opened as a draft (not ready for review) until marked ready.
    pub(crate) draft: bool,
    /// `workspace/slug` of the fork the source branch lives in (`None`: this repository).
    pub(crate) fork: Option<String>,
}

/// How a pull request is opened.
#[derive(Debug, Clone, Default)]
pub struct PullRequestOptions {
    pub draft: bool,
    /// `workspace/slug` of a fork holding the source branch.
    pub fork: Option<String>,
}

pub(crate) struct BuildStatus {
    pub(crate) commit: String,
    pub(crate) input: StatusInput,
    pub(crate) created_on: DateTime<Utc>,
    pub(crate) updated_on: DateTime<Utc>,
}

/// The body of `POST …/commit/{hash}/statuses/build`.
#[derive(Debug, Clone, Deserialize)]
pub struct StatusInput {
    pub key: String,
    pub state: String,
    pub name: Option<String>,
    pub url: Option<String>,
    pub refname: Option<String>,
    pub description: Option<String>,
}

/// One commit to make on a branch: files written and paths deleted on top of its tip.
pub struct NewCommit {
    pub branch: String,
    pub message: String,
    pub author: String,
    /// The tip the caller believes the branch has (`parents` of `POST …/src`).
    pub parents: Option<String>,
    pub files: Vec<(String, Vec<u8>)>,
    pub deletes: Vec<String>,
}

/// A webhook event: its `X-Event-Key` and full payload, and the same change as Data Center hooks
/// hear of it (`None` when they do not, as for build statuses).
pub struct Event {
    pub key: &'static str,
    pub payload: Value,
    pub dc: Option<DcEvent>,
}

pub struct State {
    pub(crate) base: String,
    pub(crate) branches: BTreeMap<String, String>,
    pub(crate) commits: HashMap<String, Commit>,
    pub hooks: Vec<Hook>,
    /// Data Center's hooks: their own list, numbered from 1.
    pub dc_hooks: Vec<DcHook>,
    pub(crate) dc_hook_ids: u64,
    /// Branch restrictions, shown to both flavors.
    pub(crate) restrictions: branch_admin::Restrictions,
    pub(crate) pulls: BTreeMap<u64, PullRequest>,
    pub(crate) statuses: Vec<BuildStatus>,
    /// Data Center build statuses (`…/commits/{id}/builds`), one per (commit, key).
    pub(crate) dc_builds: Vec<crate::datacenter::state::DcBuild>,
    /// How far the sandbox clock runs ahead of the wall clock (tests age branches with it).
    pub(crate) clock_offset: chrono::Duration,
}

/// Branch names as git allows them (roughly): no spaces, control characters or `..`.
pub(crate) fn check_branch_name(name: &str) -> Result<(), Error> {
    let bad_char = |c: char| c.is_whitespace() || c.is_control() || "~^:?*[\\".contains(c);
    if name.is_empty() || name.contains("..") || name.starts_with('/') || name.ends_with('/') || name.contains(bad_char)
    {
        return Err(Error::bad_request(format!("Invalid branch name: {name:?}")));
    }
    Ok(())
}

/// `a/b.txt` from `/a/b.txt`; empty, `.` and `..` segments are refused.
pub(crate) fn clean_path(path: &str) -> Result<String, Error> {
    let path = path.trim_start_matches('/');
    if path.is_empty() || path.split('/').any(|s| s.is_empty() || s == "." || s == "..") {
        return Err(Error::bad_request(format!("Invalid file path: {path:?}")));
    }
    Ok(path.to_owned())
}

impl State {
    /// The seeded repository: `main` with a README, and `develop` and `feature/login` one
    /// commit ahead of it.
    pub fn new(base: String) -> Self {
        let mut state = State {
            base,
            branches: BTreeMap::new(),
            commits: HashMap::new(),
            hooks: Vec::new(),
            dc_hooks: Vec::new(),
            dc_hook_ids: 0,
            restrictions: Default::default(),
            pulls: BTreeMap::new(),
            statuses: Vec::new(),
            dc_builds: Vec::new(),
            clock_offset: chrono::Duration::zero(),
        };
        let readme = "# demo\n\nThe Bitbucket sandbox's seeded repository.\n";
        let tree = Tree::from([("README.md".to_owned(), readme.as_bytes().to_vec())]);
        let initial = state.add_commit(None, tree, "Initial commit", DEFAULT_AUTHOR);
        state.branches.insert(MAIN.to_owned(), initial.clone());
        for (branch, path, content, message) in [
            ("develop", "CHANGELOG.md", "# Changelog\n", "Start the changelog"),
            ("feature/login", "src/login.txt", "A login form.\n", "Sketch the login page"),
        ] {
            let mut tree = state.commits[&initial].tree.clone();
            tree.insert(path.to_owned(), content.as_bytes().to_vec());
            let hash = state.add_commit(Some(&initial), tree, message, DEFAULT_AUTHOR);
            state.branches.insert(branch.to_owned(), hash);
        }
        state
    }

    fn add_commit(&mut self, parent: Option<&str>, tree: Tree, message: &str, author: &str) -> String {
        // Random but hash-shaped: 40 hex digits, like a git SHA-1.
        let mut hasher = Sha256::new();
        hasher.update(uuid::Uuid::new_v4().as_bytes());
        hasher.update(message.as_bytes());
        let hash = hex::encode(hasher.finalize())[..40].to_owned();
        let commit = Commit {
            hash: hash.clone(),
            message: message.to_owned(),
            author: author.to_owned(),
            date: self.now(),
            parents: parent.map(str::to_owned).into_iter().collect(),
            tree,
            seq: self.commits.len(),
        };
        self.commits.insert(hash.clone(), commit);
        hash
    }

    /// The sandbox clock: every timestamp the sandbox writes comes from it.
    pub fn now(&self) -> DateTime<Utc> {
        Utc::now() + self.clock_offset
    }

    pub fn advance_clock(&mut self, by: chrono::Duration) {
        self.clock_offset += by;
    }

    pub fn tip(&self, branch: &str) -> Option<&str> {
        self.branches.get(branch).map(String::as_str)
    }

    /// A branch name, a full hash, or an unambiguous prefix of at least 7 hex digits.
    pub fn resolve(&self, rev: &str) -> Option<&Commit> {
        if let Some(hash) = self.branches.get(rev) {
            return self.commits.get(hash);
        }
        if let Some(commit) = self.commits.get(rev) {
            return Some(commit);
        }
        if rev.len() < 7 || !rev.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let mut found = self.commits.values().filter(|c| c.hash.starts_with(rev));
        match (found.next(), found.next()) {
            (Some(commit), None) => Some(commit),
            _ => None,
        }
    }

    /// The commits reachable from `include` (every branch when empty) and not from `exclude`,
    /// newest first, as `git log` lists them.
    pub fn history<'a>(&'a self, include: &[&'a Commit], exclude: &[&'a Commit]) -> Vec<&'a Commit> {
        let reach = |starts: Vec<&'a str>| -> std::collections::HashSet<&'a str> {
            let mut seen = std::collections::HashSet::new();
            let mut todo = starts;
            while let Some(hash) = todo.pop() {
                if let Some(commit) = self.commits.get(hash).filter(|_| seen.insert(hash)) {
                    todo.extend(commit.parents.iter().map(String::as_str));
                }
            }
            seen
        };
        let starts = if include.is_empty() {
            self.branches.values().map(String::as_str).collect()
        } else {
            include.iter().map(|c| c.hash.as_str()).collect()
        };
        let excluded = reach(exclude.iter().map(|c| c.hash.as_str()).collect());
        let mut commits: Vec<&Commit> =
            reach(starts).into_iter().filter(|h| !excluded.contains(h)).filter_map(|h| self.commits.get(h)).collect();
        commits.sort_by_key(|c| std::cmp::Reverse(c.seq));
        commits
    }

    /// What `path` (relative, `""` for the root, a trailing `/` allowed) names at `commit`.
    pub fn tree_entry<'a>(&self, commit: &'a Commit, path: &str) -> Option<TreeEntry<'a>> {
        let path = path.trim_matches('/');
        if let Some(content) = commit.tree.get(path) {
            return Some(TreeEntry::File(content));
        }
        let prefix = if path.is_empty() { String::new() } else { format!("{path}/") };
        let mut children: Vec<(String, bool)> = commit
            .tree
            .keys()
            .filter_map(|file| file.strip_prefix(&prefix))
            .map(|rest| match rest.split_once('/') {
                Some((dir, _)) => (dir.to_owned(), true),
                None => (rest.to_owned(), false),
            })
            .collect();
        children.dedup();
        if children.is_empty() {
            return None;
        }
        children.sort();
        children.dedup();
        Some(TreeEntry::Directory(children))
    }

    pub fn branch_names(&self) -> impl Iterator<Item = &str> {
        self.branches.keys().map(String::as_str)
    }

    // ---- mutations -------------------------------------------------------------------------

    pub fn commit_files(&mut self, new: NewCommit) -> Result<(String, Vec<Event>), Error> {
        check_branch_name(&new.branch)?;
        let old = self.branches.get(&new.branch).cloned();
        let base = match (&old, &new.parents) {
            (Some(tip), Some(parent))
                if !(tip == parent || (parent.len() >= 7 && tip.starts_with(parent.as_str()))) =>
            {
                return Err(Error::conflict(format!("Commit not on branch tip: {parent} (the branch moved)")));
            }
            (Some(tip), _) => tip.clone(),
            // A new branch starts from the given parent, or from the main branch.
            (None, Some(parent)) => self
                .resolve(parent)
                .map(|c| c.hash.clone())
                .ok_or_else(|| Error::bad_request(format!("Unknown parent commit: {parent}")))?,
            (None, None) => self.tip(MAIN).map(str::to_owned).ok_or_else(|| Error::not_found("No main branch"))?,
        };
        let mut tree = self.commits.get(&base).map(|c| c.tree.clone()).unwrap_or_default();
        for path in &new.deletes {
            tree.remove(&clean_path(path)?);
        }
        for (path, content) in new.files {
            tree.insert(clean_path(&path)?, content);
        }
        let hash = self.add_commit(Some(&base), tree, &new.message, &new.author);
        self.branches.insert(new.branch.clone(), hash.clone());
        let mut events = vec![self.push_event(&new.branch, old.as_deref(), Some(&hash), &[&hash])];
        events.extend(self.source_moved(&new.branch));
        Ok((hash, events))
    }

    /// As Bitbucket does: a push to the source branch of open pull requests updates each one
    /// (`pullrequest:updated`, `pr:from_ref_updated`) with the new head.
    fn source_moved(&mut self, branch: &str) -> Vec<Event> {
        let ids: Vec<u64> =
            self.pulls.values().filter(|p| p.state == PrState::Open && p.source == branch).map(|p| p.id).collect();
        let mut events = Vec::new();
        for id in ids {
            if self.touch_open_pull(id, |_| {}).is_ok() {
                events.push(self.pull_event("pullrequest:updated", "pr:from_ref_updated", id));
            }
        }
        events
    }

    pub fn create_branch(&mut self, name: &str, from: &str) -> Result<(String, Vec<Event>), Error> {
        check_branch_name(name)?;
        if self.branches.contains_key(name) {
            return Err(Error::bad_request(format!("Branch {name} already exists")));
        }
        let hash = self.resolve(from).ok_or_else(|| Error::not_found(format!("Commit {from} not found")))?.hash.clone();
        self.branches.insert(name.to_owned(), hash.clone());
        let event = self.push_event(name, None, Some(&hash), &[]);
        Ok((hash, vec![event]))
    }

    pub fn delete_branch(&mut self, name: &str) -> Result<Vec<Event>, Error> {
        if name == MAIN {
            return Err(Error::bad_request("Cannot delete the main branch"));
        }
        let old = self.branches.remove(name).ok_or_else(|| Error::not_found(format!("Branch {name} not found")))?;
        Ok(vec![self.push_event(name, Some(&old), None, &[])])
    }

    pub fn open_pull_request(
        &mut self,
        source: &str,
        destination: &str,
        title: &str,
        options: PullRequestOptions,
    ) -> Result<(u64, Vec<Event>), Error> {
        let tip = |branch: &str| {
            self.tip(branch).map(str::to_owned).ok_or_else(|| Error::not_found(format!("Branch {branch} not found")))
        };
        let (source_hash, destination_hash) = (tip(source)?, tip(destination)?);
        if source == destination {
            return Err(Error::bad_request("Source and destination branches must differ"));
        }
        if title.trim().is_empty() {
            return Err(Error::bad_request("A pull request needs a title"));
        }
        let id = self.pulls.keys().next_back().map_or(1, |last| last + 1);
        let now = self.now();
        let pull = PullRequest {
            id,
            title: title.to_owned(),
            state: PrState::Open,
            source: source.to_owned(),
            destination: destination.to_owned(),
            source_hash,
            destination_hash,
            created_on: now,
            updated_on: now,
            draft: options.draft,
            fork: options.fork,
        };
        self.pulls.insert(id, pull);
        Ok((id, vec![self.pull_event("pullrequest:created", "pr:opened", id)]))
    }

    /// Retitles (optionally) an open pull request and moves its head to the source tip.
    pub fn update_pull_request(&mut self, id: u64, title: Option<&str>) -> Result<Vec<Event>, Error> {
        self.touch_open_pull(id, |pull| {
            if let Some(title) = title {
                pull.title = title.to_owned();
            }
        })?;
        Ok(vec![self.pull_event("pullrequest:updated", "pr:from_ref_updated", id)])
    }

    /// A draft marked ready for review (`pullrequest:updated`, `pr:from_ref_updated`).
    pub fn mark_ready(&mut self, id: u64) -> Result<Vec<Event>, Error> {
        if !self.pulls.get(&id).is_some_and(|p| p.draft) {
            return Err(Error::bad_request(format!("Pull request {id} is not a draft")));
        }
        self.touch_open_pull(id, |pull| pull.draft = false)?;
        Ok(vec![self.pull_event("pullrequest:updated", "pr:from_ref_updated", id)])
    }

    pub fn close_pull_request(&mut self, id: u64, to: PrState) -> Result<Vec<Event>, Error> {
        self.touch_open_pull(id, |pull| pull.state = to)?;
        let (key, dc_key) = match to {
            PrState::Merged => ("pullrequest:fulfilled", "pr:merged"),
            _ => ("pullrequest:rejected", "pr:declined"),
        };
        Ok(vec![self.pull_event(key, dc_key, id)])
    }

    fn touch_open_pull(&mut self, id: u64, change: impl FnOnce(&mut PullRequest)) -> Result<(), Error> {
        let now = self.now();
        let branches = &self.branches;
        let pull = self.pulls.get_mut(&id).ok_or_else(|| Error::not_found(format!("Pull request {id} not found")))?;
        if pull.state != PrState::Open {
            return Err(Error::bad_request(format!("Pull request {id} is {}", pull.state.as_str())));
        }
        if let Some(tip) = branches.get(&pull.source) {
            pull.source_hash = tip.clone();
        }
        if let Some(tip) = branches.get(&pull.destination) {
            pull.destination_hash = tip.clone();
        }
        pull.updated_on = now;
        change(pull);
        Ok(())
    }

    pub fn set_status(&mut self, rev: &str, input: StatusInput) -> Result<(Value, Vec<Event>), Error> {
        let commit = self.resolve(rev).ok_or_else(|| Error::not_found(format!("Commit {rev} not found")))?.hash.clone();
        if input.key.trim().is_empty() {
            return Err(Error::bad_request("key: This field is required."));
        }
        if !STATUS_STATES.contains(&input.state.as_str()) {
            return Err(Error::bad_request(format!("state: must be one of {}", STATUS_STATES.join(", "))));
        }
        let now = self.now();
        let existing = self.statuses.iter().position(|s| s.commit == commit && s.input.key == input.key);
        let (index, key) = match existing {
            Some(index) => {
                let status = &mut self.statuses[index];
                status.input = input;
                status.updated_on = now;
                (index, "repo:commit_status_updated")
            }
            None => {
                self.statuses.push(BuildStatus { commit, input, created_on: now, updated_on: now });
                (self.statuses.len() - 1, "repo:commit_status_created")
            }
        };
        let status = self.status_json(&self.statuses[index]);
        let event = self.event(key, json!({ "commit_status": status }));
        Ok((status, vec![event]))
    }

    // ---- hooks ------------------------------------------------------------------------------

    /// Finds a hook by uuid, with or without braces.
    pub fn hook_index(&self, uid: &str) -> Option<usize> {
        let bare = |s: &str| s.trim().trim_start_matches('{').trim_end_matches('}').to_ascii_lowercase();
        let wanted = bare(uid);
        self.hooks.iter().position(|h| bare(&h.uuid) == wanted)
    }

    /// One delivery per active hook subscribed to the event, Cloud's hooks then Data Center's.
    pub fn deliveries(&self, event: &Event) -> Vec<Delivery> {
        let body = event.payload.to_string().into_bytes();
        self.hooks
            .iter()
            .filter(|h| h.active && h.events.iter().any(|e| e == event.key))
            .map(|h| Delivery {
                flavor: Flavor::Cloud,
                hook_id: h.uuid.clone(),
                url: h.url.clone(),
                secret: h.secret.clone(),
                event_key: event.key.to_owned(),
                body: body.clone(),
            })
            .chain(event.dc.iter().flat_map(|dc| self.dc_deliveries(dc)))
            .collect()
    }

    // ---- views -----------------------------------------------------------------------------

    pub(crate) fn resolve_branch(&self, name: &str) -> Option<&Commit> {
        self.branches.get(name).and_then(|h| self.commits.get(h))
    }

    /// The source and destination commits: an open pull request follows its branches, a closed
    /// one keeps what it had.
    pub(crate) fn pull_heads(&self, p: &PullRequest) -> (String, String) {
        let current = |branch: &str, stored: &str| match (p.state, self.tip(branch)) {
            (PrState::Open, Some(tip)) => tip.to_owned(),
            _ => stored.to_owned(),
        };
        (current(&p.source, &p.source_hash), current(&p.destination, &p.destination_hash))
    }

    // ---- events -----------------------------------------------------------------------------

    /// Every payload names the repository and the actor, as Cloud's do.
    fn event(&self, key: &'static str, mut payload: Value) -> Event {
        payload["repository"] = self.repository_json();
        payload["actor"] = user_json();
        Event { key, payload, dc: None }
    }

    fn pull_event(&self, key: &'static str, dc_key: &'static str, id: u64) -> Event {
        let dc = self.dc_pull_event(dc_key, id);
        Event { dc, ..self.event(key, json!({ "pullrequest": self.pull_json(id) })) }
    }

    /// `repo:push` with one change: `old`/`new` are the branch before and after (null when absent).
    fn push_event(&self, branch: &str, old: Option<&str>, new: Option<&str>, commits: &[&str]) -> Event {
        let reference = |hash: Option<&str>| {
            hash.and_then(|h| self.commits.get(h)).map_or(Value::Null, |c| self.ref_json(branch, c))
        };
        let commits: Vec<Value> =
            commits.iter().filter_map(|h| self.commits.get(*h)).map(|c| self.commit_json(c)).collect();
        let change = json!({
            "old": reference(old),
            "new": reference(new),
            "created": old.is_none(),
            "closed": new.is_none(),
            "forced": false,
            "truncated": false,
            "commits": commits,
        });
        let dc = Some(self.dc_refs_changed(branch, old, new));
        Event { dc, ..self.event("repo:push", json!({ "push": { "changes": [change] } })) }
    }
}

#[cfg(test)]
mod tests {
    use domain::webhook::{Flavor, PullRequest as ParsedPr, RepoEvent, parse};

    use super::*;
    use crate::datacenter::state::DC_USER;

    fn sandbox_state() -> State {
        State::new("http://sandbox.test/sandbox/bitbucket".to_owned())
    }

    /// The payload as the project's receiver reads it, after checking the repository name.
    fn parsed(events: Vec<Event>) -> RepoEvent {
        assert_eq!(events.len(), 1);
        let event = &events[0];
        let body = serde_json::to_vec(&event.payload).unwrap();
        let parsed = parse(Flavor::Cloud, event.key, &body).unwrap();
        assert_eq!(parsed.repository.as_deref(), Some("sandbox/demo"));
        assert_eq!(event.payload["actor"]["type"], "user");
        assert_eq!(parsed.events.len(), 1);
        parsed.events.into_iter().next().unwrap()
    }

    fn commit(branch: &str, parents: Option<String>) -> NewCommit {
        NewCommit {
            branch: branch.to_owned(),
            message: "Change".to_owned(),
            author: DEFAULT_AUTHOR.to_owned(),
            parents,
            files: vec![("a.txt".to_owned(), b"a".to_vec())],
            deletes: vec![],
        }
    }

    #[test]
    fn seeded_branches_have_hash_shaped_commits() {
        let state = sandbox_state();
        assert_eq!(state.branch_names().collect::<Vec<_>>(), ["develop", "feature/login", "main"]);
        for name in ["main", "develop", "feature/login"] {
            let tip = state.tip(name).unwrap();
            assert!(tip.len() == 40 && tip.bytes().all(|b| b.is_ascii_hexdigit()), "{tip}");
        }
        assert!(state.resolve("main").unwrap().tree.contains_key("README.md"));
    }

    #[test]
    fn push_to_a_branch_is_branch_updated() {
        let mut state = sandbox_state();
        let previous = state.tip("develop").unwrap().to_owned();
        let (hash, events) = state.commit_files(commit("develop", Some(previous.clone()))).unwrap();
        let change = &events[0].payload["push"]["changes"][0];
        assert_eq!(change["commits"][0]["hash"], hash.as_str());
        assert_eq!(change["new"]["target"]["parents"][0]["hash"], previous.as_str());
        let expected = RepoEvent::BranchUpdated {
            branch: "develop".into(),
            head: Some(hash),
            previous: Some(previous),
            forced: false,
        };
        assert_eq!(parsed(events), expected);
    }

    #[test]
    fn commit_to_a_new_branch_is_branch_created() {
        let mut state = sandbox_state();
        let (hash, events) = state.commit_files(commit("feature/new", None)).unwrap();
        assert_eq!(parsed(events), RepoEvent::BranchCreated { branch: "feature/new".into(), head: Some(hash) });
        let tree = &state.resolve("feature/new").unwrap().tree;
        assert!(tree.contains_key("README.md") && tree.contains_key("a.txt"), "based on main");
    }

    #[test]
    fn stale_parent_is_a_conflict_and_changes_nothing() {
        let mut state = sandbox_state();
        let old = state.tip("main").unwrap().to_owned();
        state.commit_files(commit("main", None)).unwrap();
        let tip = state.tip("main").unwrap().to_owned();
        let error = state.commit_files(commit("main", Some(old.clone()))).err().unwrap();
        assert_eq!(error.status, axum::http::StatusCode::CONFLICT);
        assert_eq!(error.message, format!("Commit not on branch tip: {old} (the branch moved)"));
        assert_eq!(state.tip("main"), Some(tip.as_str()));
    }

    #[test]
    fn branch_created_and_deleted() {
        let mut state = sandbox_state();
        let main = state.tip("main").unwrap().to_owned();
        let (hash, events) = state.create_branch("release/1", "main").unwrap();
        assert_eq!(hash, main);
        assert_eq!(parsed(events), RepoEvent::BranchCreated { branch: "release/1".into(), head: Some(main.clone()) });
        let events = state.delete_branch("release/1").unwrap();
        assert!(events[0].payload["push"]["changes"][0]["new"].is_null());
        assert_eq!(events[0].payload["push"]["changes"][0]["closed"], true);
        assert_eq!(parsed(events), RepoEvent::BranchDeleted { branch: "release/1".into(), previous: Some(main) });
        assert!(state.delete_branch("main").is_err(), "the main branch stays");
    }

    fn pr(state: &State, id: u64, title: &str, pr_state: &str) -> ParsedPr {
        ParsedPr {
            id,
            title: Some(title.into()),
            source_branch: "feature/login".into(),
            destination_branch: "main".into(),
            head: state.tip("feature/login").map(str::to_owned),
            state: Some(pr_state.into()),
            destination_head: state.tip("main").map(str::to_owned),
            draft: false,
            source_repository: Some("SANDBOX/demo".into()),
            destination_repository: Some("SANDBOX/demo".into()),
        }
    }

    /// As Cloud shows it: the head's first 12 digits.
    fn cloud_pr(state: &State, id: u64, title: &str, pr_state: &str) -> ParsedPr {
        let mut pr = pr(state, id, title, pr_state);
        pr.head = pr.head.map(|h| h[..12].to_owned());
        pr.destination_head = pr.destination_head.map(|h| h[..12].to_owned());
        pr.source_repository = Some("sandbox/demo".into());
        pr.destination_repository = Some("sandbox/demo".into());
        pr
    }

    #[test]
    fn pull_request_lifecycle() {
        let mut state = sandbox_state();
        let (id, events) = state.open_pull_request("feature/login", "main", "Login", Default::default()).unwrap();
        assert_eq!(
            parsed(events),
            RepoEvent::PullRequestOpened { pull_request: cloud_pr(&state, id, "Login", "OPEN") }
        );

        state.commit_files(commit("feature/login", None)).unwrap();
        let events = state.update_pull_request(id, Some("Login page")).unwrap();
        let expected = cloud_pr(&state, id, "Login page", "OPEN");
        assert_eq!(parsed(events), RepoEvent::PullRequestUpdated { pull_request: expected });

        let events = state.close_pull_request(id, PrState::Merged).unwrap();
        let expected = cloud_pr(&state, id, "Login page", "MERGED");
        assert_eq!(parsed(events), RepoEvent::PullRequestMerged { pull_request: expected });
        assert!(state.close_pull_request(id, PrState::Declined).is_err(), "only open ones close");
    }

    #[test]
    fn a_push_to_the_source_updates_its_open_pull_requests_and_drafts_forks_show() {
        let mut state = sandbox_state();
        let options = PullRequestOptions { draft: true, fork: None };
        let (id, events) = state.open_pull_request("feature/login", "main", "Login", options).unwrap();
        let RepoEvent::PullRequestOpened { pull_request } = parsed(events) else { panic!("not opened") };
        assert!(pull_request.draft && !pull_request.from_fork());
        let (hash, events) = state.commit_files(commit("feature/login", None)).unwrap();
        let keys: Vec<_> = events.iter().map(|e| e.key).collect();
        assert_eq!(keys, ["repo:push", "pullrequest:updated"], "as Bitbucket sends them");
        let RepoEvent::PullRequestUpdated { pull_request } = parsed(events.into_iter().skip(1).collect()) else {
            panic!("not updated")
        };
        assert_eq!((pull_request.id, pull_request.head.as_deref()), (id, Some(&hash[..12])));
        let RepoEvent::PullRequestUpdated { pull_request } = parsed(state.mark_ready(id).unwrap()) else { panic!() };
        assert!(!pull_request.draft);
        assert!(state.mark_ready(id).is_err(), "only a draft is marked ready");

        let fork = PullRequestOptions { draft: false, fork: Some("someone/demo".into()) };
        let (_, events) = state.open_pull_request("develop", "main", "Fork", fork).unwrap();
        let RepoEvent::PullRequestOpened { pull_request } = parsed(events) else { panic!("not opened") };
        assert!(pull_request.from_fork());
        assert_eq!(pull_request.source_repository.as_deref(), Some("someone/demo"));
    }

    #[test]
    fn pull_request_declined() {
        let mut state = sandbox_state();
        let (id, _) = state.open_pull_request("feature/login", "develop", "Login", Default::default()).unwrap();
        let events = state.close_pull_request(id, PrState::Declined).unwrap();
        let RepoEvent::PullRequestDeclined { pull_request } = parsed(events) else { panic!("not declined") };
        assert_eq!(
            (pull_request.state.as_deref(), pull_request.destination_branch.as_str()),
            (Some("DECLINED"), "develop")
        );
    }

    #[test]
    fn commit_status_created_then_updated() {
        let mut state = sandbox_state();
        let hash = state.tip("main").unwrap().to_owned();
        let input = |s: &str| StatusInput {
            key: "ci".into(),
            state: s.into(),
            name: Some("CI".into()),
            url: Some("https://ci.test/1".into()),
            refname: Some("main".into()),
            description: None,
        };
        let (_, events) = state.set_status(&hash, input("INPROGRESS")).unwrap();
        assert_eq!(events[0].key, "repo:commit_status_created");
        let expected = |s: &str| RepoEvent::CommitStatus {
            commit: Some(hash.clone()),
            state: s.into(),
            key: Some("ci".into()),
            refname: Some("main".into()),
            url: Some("https://ci.test/1".into()),
        };
        assert_eq!(parsed(events), expected("INPROGRESS"));
        let (_, events) = state.set_status(&hash, input("SUCCESSFUL")).unwrap();
        assert_eq!(events[0].key, "repo:commit_status_updated");
        assert_eq!(parsed(events), expected("SUCCESSFUL"));
        assert_eq!(state.statuses_json(&hash).unwrap().len(), 1);
        assert!(state.set_status(&hash, input("DONE")).is_err());
        let (_, events) = state.set_status(&hash, input("FAILED")).unwrap();
        assert!(events[0].dc.is_none(), "Data Center hooks do not hear of build statuses");
    }

    /// The Data Center side of the events, as the project's receiver reads it.
    fn dc_parsed(events: &[Event]) -> RepoEvent {
        assert_eq!(events.len(), 1);
        let dc = events[0].dc.as_ref().expect("Data Center hooks hear of it");
        assert_eq!(dc.payload["eventKey"], dc.key);
        assert_eq!(dc.payload["actor"]["name"], DC_USER);
        let body = serde_json::to_vec(&dc.payload).unwrap();
        let parsed = parse(Flavor::DataCenter, dc.key, &body).unwrap();
        assert_eq!(parsed.repository.as_deref(), Some("SANDBOX/demo"));
        assert_eq!(parsed.events.len(), 1);
        parsed.events.into_iter().next().unwrap()
    }

    #[test]
    fn data_center_hears_of_branch_changes_as_refs_changed() {
        let mut state = sandbox_state();
        let previous = state.tip("develop").unwrap().to_owned();
        let (hash, events) = state.commit_files(commit("develop", None)).unwrap();
        let change = &events[0].dc.as_ref().unwrap().payload["changes"][0];
        assert_eq!((&change["type"], &change["refId"]), (&json!("UPDATE"), &json!("refs/heads/develop")));
        let expected = RepoEvent::BranchUpdated {
            branch: "develop".into(),
            head: Some(hash),
            previous: Some(previous),
            forced: false,
        };
        assert_eq!(dc_parsed(&events), expected);

        let (main, events) = state.create_branch("release/1", "main").unwrap();
        let change = &events[0].dc.as_ref().unwrap().payload["changes"][0];
        assert_eq!((&change["type"], &change["fromHash"]), (&json!("ADD"), &json!("0".repeat(40))));
        assert_eq!(change["ref"], json!({ "id": "refs/heads/release/1", "displayId": "release/1", "type": "BRANCH" }));
        assert_eq!(
            dc_parsed(&events),
            RepoEvent::BranchCreated { branch: "release/1".into(), head: Some(main.clone()) }
        );

        let events = state.delete_branch("release/1").unwrap();
        let change = &events[0].dc.as_ref().unwrap().payload["changes"][0];
        assert_eq!((&change["type"], &change["toHash"]), (&json!("DELETE"), &json!("0".repeat(40))));
        assert_eq!(dc_parsed(&events), RepoEvent::BranchDeleted { branch: "release/1".into(), previous: Some(main) });
    }

    #[test]
    fn data_center_hears_of_the_pull_request_lifecycle() {
        let mut state = sandbox_state();
        let (id, events) = state.open_pull_request("feature/login", "main", "Login", Default::default()).unwrap();
        assert_eq!(events[0].dc.as_ref().unwrap().key, "pr:opened");
        let expected = pr(&state, id, "Login", "OPEN");
        assert_eq!(dc_parsed(&events), RepoEvent::PullRequestOpened { pull_request: expected });

        state.commit_files(commit("feature/login", None)).unwrap();
        let events = state.update_pull_request(id, None).unwrap();
        assert_eq!(events[0].dc.as_ref().unwrap().key, "pr:from_ref_updated");
        let expected = pr(&state, id, "Login", "OPEN");
        assert_eq!(dc_parsed(&events), RepoEvent::PullRequestUpdated { pull_request: expected });

        let events = state.close_pull_request(id, PrState::Merged).unwrap();
        let payload = &events[0].dc.as_ref().unwrap().payload;
        assert_eq!(
            (&payload["pullRequest"]["closed"], payload["pullRequest"]["closedDate"].is_i64()),
            (&json!(true), true)
        );
        let expected = pr(&state, id, "Login", "MERGED");
        assert_eq!(dc_parsed(&events), RepoEvent::PullRequestMerged { pull_request: expected });

        let (id, _) = state.open_pull_request("develop", "main", "Dev", Default::default()).unwrap();
        let events = state.close_pull_request(id, PrState::Declined).unwrap();
        let RepoEvent::PullRequestDeclined { pull_request } = dc_parsed(&events) else { panic!("not declined") };
        assert_eq!((pull_request.id, pull_request.source_branch.as_str()), (id, "develop"));
    }

    #[test]
    fn data_center_hooks_get_only_their_events() {
        let mut state = sandbox_state();
        let now = Utc::now();
        let hook = |events: &[&str], active| DcHook {
            id: 0,
            name: "ci".into(),
            url: "http://127.0.0.1:9/hook".into(),
            active,
            events: events.iter().map(|e| e.to_string()).collect(),
            secret: None,
            created: now,
            updated: now,
        };
        assert_eq!(state.add_dc_hook(hook(&["repo:refs_changed"], true))["id"], 1);
        assert_eq!(state.add_dc_hook(hook(&["pr:opened"], true))["id"], 2);
        state.add_dc_hook(hook(&["repo:refs_changed"], false));
        let (_, events) = state.create_branch("topic", "main").unwrap();
        let deliveries = state.deliveries(&events[0]);
        let ids: Vec<_> = deliveries.iter().map(|d| (d.flavor, d.hook_id.as_str(), d.event_key.as_str())).collect();
        assert_eq!(ids, [(Flavor::DataCenter, "1", "repo:refs_changed")]);
    }
}
