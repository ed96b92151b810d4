//! Branch administration: restrictions (one list, shown as Cloud's branch restrictions and as
//! Data Center's ref restrictions) and quiet bulk changes that send no webhooks, for tests.
//!
//! Patterns are globs: `*` matches any run of characters, `/` included (`release/*` matches
//! `release/1.0` and `release/1/hotfix`); every other character is literal. A pattern without
//! `*` is an exact branch name.

use axum::http::StatusCode;
use serde_json::{Value, json};

use super::{MAIN, State, check_branch_name};
use crate::error::Error;

/// Cloud's restriction kinds, each with the Data Center ref-restriction type that means the
/// same thing (`None`: Cloud only, not shown on Data Center).
pub const RESTRICTION_KINDS: &[(&str, Option<&str>)] = &[
    ("push", Some("read-only")),
    ("delete", Some("no-deletes")),
    ("force", Some("fast-forward-only")),
    ("restrict_merges", None),
    ("require_tasks_to_be_completed", None),
    ("require_approvals_to_merge", None),
    ("require_default_reviewer_approvals_to_merge", None),
    ("require_no_changes_requested", None),
    ("require_passing_builds_to_merge", None),
    ("require_commits_behind", None),
    ("reset_pullrequest_approvals_on_change", None),
    ("enforce_merge_checks", None),
];

/// Data Center's type for a Cloud kind.
pub fn dc_type(kind: &str) -> Option<&'static str> {
    RESTRICTION_KINDS.iter().find(|(k, _)| *k == kind).and_then(|(_, t)| *t)
}

pub struct BranchRestriction {
    pub id: u64,
    /// Cloud's kind, e.g. `delete`.
    pub kind: String,
    pub pattern: String,
}

/// The restrictions of `sandbox/demo`, numbered from 1 (ids are never reused).
#[derive(Default)]
pub struct Restrictions {
    list: Vec<BranchRestriction>,
    last_id: u64,
}

/// `*` matches any run of characters (`/` included); everything else is literal.
pub fn glob_matches(pattern: &str, name: &str) -> bool {
    let (p, n) = (pattern.as_bytes(), name.as_bytes());
    let (mut pi, mut ni) = (0, 0);
    // The last `*` seen, and where in `name` its match currently ends.
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ni));
            pi += 1;
        } else if pi < p.len() && p[pi] == n[ni] {
            pi += 1;
            ni += 1;
        } else if let Some((star_pi, star_ni)) = star {
            // Let the last `*` swallow one more character and retry from there.
            star = Some((star_pi, star_ni + 1));
            pi = star_pi + 1;
            ni = star_ni + 1;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&b| b == b'*')
}

/// `x` from `refs/heads/x`; anything else as it is.
pub fn short_branch(name: &str) -> &str {
    name.strip_prefix("refs/heads/").unwrap_or(name)
}

impl BranchRestriction {
    pub fn matches(&self, branch: &str) -> bool {
        glob_matches(&self.pattern, branch)
    }

    fn cloud_json(&self, state: &State) -> Value {
        json!({
            "type": "branchrestriction",
            "id": self.id,
            "kind": self.kind,
            "branch_match_kind": "glob",
            "pattern": self.pattern,
            "users": [],
            "groups": [],
            "links": { "self": { "href": state.api(&format!("/branch-restrictions/{}", self.id)) } },
        })
    }

    /// `None` for a kind Data Center has no equivalent of.
    fn dc_json(&self) -> Option<Value> {
        let kind = dc_type(&self.kind)?;
        let matcher = if self.pattern.contains('*') {
            json!({
                "id": self.pattern,
                "displayId": self.pattern,
                "type": { "id": "PATTERN", "name": "Pattern" },
                "active": true,
            })
        } else {
            json!({
                "id": format!("refs/heads/{}", self.pattern),
                "displayId": self.pattern,
                "type": { "id": "BRANCH", "name": "Branch" },
                "active": true,
            })
        };
        Some(json!({ "id": self.id, "type": kind, "matcher": matcher, "users": [], "groups": [], "accessKeys": [] }))
    }
}

impl State {
    /// Adds a restriction of a Cloud `kind` on the branches `pattern` matches; returns its id.
    pub fn add_branch_restriction(&mut self, kind: &str, pattern: &str) -> Result<u64, Error> {
        if !RESTRICTION_KINDS.iter().any(|(k, _)| *k == kind) {
            let kinds: Vec<&str> = RESTRICTION_KINDS.iter().map(|(k, _)| *k).collect();
            return Err(Error::bad_request(format!("kind: {kind:?} is not one of {}", kinds.join(", "))));
        }
        let pattern = short_branch(pattern.trim());
        if pattern.is_empty() {
            return Err(Error::bad_request("pattern: a branch name or glob is required"));
        }
        let restrictions = &mut self.restrictions;
        restrictions.last_id += 1;
        let id = restrictions.last_id;
        restrictions.list.push(BranchRestriction { id, kind: kind.to_owned(), pattern: pattern.to_owned() });
        Ok(id)
    }

    /// Whether a restriction of `kind` covers `branch`.
    pub fn branch_restricted(&self, kind: &str, branch: &str) -> bool {
        self.restrictions.list.iter().any(|r| r.kind == kind && r.matches(branch))
    }

    /// What the API checks before deleting a branch: 400 for the main branch, 404 for an
    /// unknown one, 403 for one under a `delete` restriction. Returns the branch's tip.
    pub fn check_branch_deletion(&self, name: &str) -> Result<String, Error> {
        if name == MAIN {
            return Err(Error::bad_request("Cannot delete the main branch"));
        }
        let tip = self.tip(name).ok_or_else(|| Error::not_found(format!("Branch {name} not found")))?.to_owned();
        if self.branch_restricted("delete", name) {
            return Err(Error::new(
                StatusCode::FORBIDDEN,
                format!("Branch {name} cannot be deleted: a branch restriction forbids it"),
            ));
        }
        Ok(tip)
    }

    /// Cloud's `branch-restrictions` listing, optionally of one kind and/or pattern.
    pub fn cloud_restrictions_json(&self, kind: Option<&str>, pattern: Option<&str>) -> Vec<Value> {
        self.restrictions
            .list
            .iter()
            .filter(|r| kind.is_none_or(|k| r.kind == k) && pattern.is_none_or(|p| r.pattern == p))
            .map(|r| r.cloud_json(self))
            .collect()
    }

    pub fn cloud_restriction_json(&self, id: u64) -> Option<Value> {
        self.restrictions.list.iter().find(|r| r.id == id).map(|r| r.cloud_json(self))
    }

    /// Data Center's ref restrictions: those with a Data Center type, optionally filtered by
    /// type (`no-deletes`…), matcher type (`BRANCH`, `PATTERN`) and matcher id.
    pub fn dc_restrictions_json(
        &self,
        dc_kind: Option<&str>,
        matcher_type: Option<&str>,
        matcher_id: Option<&str>,
    ) -> Vec<Value> {
        self.restrictions
            .list
            .iter()
            .filter_map(BranchRestriction::dc_json)
            .filter(|r| dc_kind.is_none_or(|t| r["type"] == t))
            .filter(|r| matcher_type.is_none_or(|t| r["matcher"]["type"]["id"].as_str() == Some(&t.to_uppercase())))
            .filter(|r| matcher_id.is_none_or(|m| r["matcher"]["id"] == m))
            .collect()
    }

    /// Creates every branch of `names` at `from` (a branch or commit) without any event: all
    /// or nothing.
    pub fn seed_branches(&mut self, names: &[String], from: &str) -> Result<(), Error> {
        let hash = self.resolve(from).ok_or_else(|| Error::not_found(format!("Commit {from} not found")))?.hash.clone();
        let mut seen = std::collections::HashSet::new();
        for name in names {
            check_branch_name(name)?;
            if self.branches.contains_key(name) || !seen.insert(name.as_str()) {
                return Err(Error::bad_request(format!("Branch {name} already exists")));
            }
        }
        for name in names {
            self.branches.insert(name.clone(), hash.clone());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        for (pattern, name) in [
            ("release/*", "release/1.0"),
            ("release/*", "release/1/hotfix"),
            ("release/*", "release/"),
            ("*", "anything/at/all"),
            ("*-hotfix", "prod-hotfix"),
            ("a*b*c", "aXXbYYbc"),
            ("main", "main"),
            ("**", ""),
        ] {
            assert!(glob_matches(pattern, name), "{pattern} should match {name}");
        }
        for (pattern, name) in
            [("release/*", "release"), ("release/*", "xrelease/1"), ("main", "main2"), ("a*b", "ac"), ("?", "a")]
        {
            assert!(!glob_matches(pattern, name), "{pattern} should not match {name}");
        }
    }

    #[test]
    fn restrictions_show_on_both_flavors() {
        let mut state = State::new("http://sandbox.test".to_owned());
        assert_eq!(state.add_branch_restriction("delete", "release/*").unwrap(), 1);
        assert_eq!(state.add_branch_restriction("require_tasks_to_be_completed", "main").unwrap(), 2);
        assert_eq!(state.add_branch_restriction("push", "refs/heads/develop").unwrap(), 3);
        assert!(state.add_branch_restriction("nope", "main").is_err());
        assert!(state.add_branch_restriction("delete", " ").is_err());

        assert_eq!(state.cloud_restrictions_json(None, None).len(), 3);
        let deletes = state.cloud_restrictions_json(Some("delete"), None);
        assert_eq!((deletes.len(), &deletes[0]["pattern"]), (1, &json!("release/*")));

        let dc = state.dc_restrictions_json(None, None, None);
        let types: Vec<_> = dc.iter().map(|r| (r["id"].clone(), r["type"].clone())).collect();
        assert_eq!(types, [(json!(1), json!("no-deletes")), (json!(3), json!("read-only"))], "Cloud-only kinds hidden");
        assert_eq!(dc[1]["matcher"]["id"], "refs/heads/develop");
        assert_eq!(state.dc_restrictions_json(None, Some("pattern"), None).len(), 1);
        assert_eq!(state.dc_restrictions_json(Some("no-deletes"), None, Some("release/*")).len(), 1);

        assert!(state.branch_restricted("delete", "release/2"));
        assert!(!state.branch_restricted("delete", "develop"));
    }

    #[test]
    fn deletion_checks_and_quiet_seeding() {
        let mut state = State::new("http://sandbox.test".to_owned());
        state.add_branch_restriction("delete", "release/*").unwrap();
        let names = vec!["release/1".to_owned(), "topic".to_owned()];
        state.seed_branches(&names, "develop").unwrap();
        assert_eq!(state.tip("topic"), state.tip("develop"));
        let status = |r: Result<String, Error>| r.err().map(|e| e.status.as_u16());
        assert_eq!(status(state.check_branch_deletion("main")), Some(400));
        assert_eq!(status(state.check_branch_deletion("nope")), Some(404));
        assert_eq!(status(state.check_branch_deletion("release/1")), Some(403));
        assert_eq!(status(state.check_branch_deletion("topic")), None);

        // All or nothing: one bad name creates none.
        let bad = vec!["fresh".to_owned(), "topic".to_owned()];
        assert!(state.seed_branches(&bad, "main").is_err());
        assert!(state.tip("fresh").is_none());
        assert!(state.seed_branches(&["a b".to_owned()], "main").is_err());
        assert!(state.seed_branches(&["x".to_owned()], "nope").is_err());
    }
}
