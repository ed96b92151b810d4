//! The stale-branch plan: a pure function of the branches, pull requests, delete restrictions,
//! main branch, policy and the time, so it can be checked over many random inputs.
//!
//! Kept, whatever else holds, in this order: the main (default) branch; a branch matching a
//! protected glob; a branch with an open pull request; a branch under a delete restriction.
//! Otherwise deleted when its newest closed pull request was merged or declined at least
//! `merged_days` ago and nothing was committed to it since, or its last commit is at least
//! `inactive_days` old. At most `max_deletions` deletions: the oldest activity goes first, the
//! rest are kept with the cap as their reason.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::bitbucket::{BranchInfo, PullRequestInfo};
use crate::integration::StalePolicy;

pub struct PlanInput<'a> {
    pub branches: &'a [BranchInfo],
    pub pull_requests: &'a [PullRequestInfo],
    /// Globs of delete restrictions (as [`crate::bitbucket::Bitbucket::delete_restricted_patterns`]).
    pub restricted: &'a [String],
    pub main_branch: Option<&'a str>,
    pub policy: &'a StalePolicy,
    pub now: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    Delete,
    Keep,
}

/// One branch's decision and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BranchPlan {
    pub branch: String,
    pub decision: Decision,
    pub reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_commit: Option<DateTime<Utc>>,
    /// The pull request the decision rests on, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pull_request: Option<u64>,
}

/// Whether a delete restriction's glob covers `branch`. Bitbucket's restriction globs let `*`
/// cross `/` (`release/*` covers `release/1/fix`), so every run of stars is read as `**`:
/// reading it too broadly keeps a branch, too narrowly could delete a protected one.
pub fn restriction_matches(pattern: &str, branch: &str) -> bool {
    let mut broad = String::with_capacity(pattern.len() + 2);
    let mut stars = false;
    for c in pattern.chars() {
        if c == '*' {
            if !stars {
                broad.push_str("**");
            }
            stars = true;
        } else {
            broad.push(c);
            stars = false;
        }
    }
    crate::glob::matches(&broad, branch)
}

/// The same commit, whether abbreviated (Cloud's pull requests carry 12 digits) or full.
fn same_commit(a: &str, b: &str) -> bool {
    let n = a.len().min(b.len());
    n >= 7 && a[..n].eq_ignore_ascii_case(&b[..n])
}

fn days(since: DateTime<Utc>, now: DateTime<Utc>) -> i64 {
    (now - since).num_days()
}

/// Every branch's decision, in branch-name order.
pub fn plan(input: &PlanInput) -> Vec<BranchPlan> {
    let mut open: HashMap<&str, u64> = HashMap::new();
    let mut closed: HashMap<&str, &PullRequestInfo> = HashMap::new();
    for pr in input.pull_requests {
        let branch = pr.source_branch.as_str();
        if pr.is_open() {
            // The lowest id, so the reason does not depend on listing order.
            let id = open.entry(branch).or_insert(pr.id);
            *id = (*id).min(pr.id);
        } else if pr.is_closed() {
            let newest = closed.entry(branch).or_insert(pr);
            if (pr.updated, pr.id) > (newest.updated, newest.id) {
                *newest = pr;
            }
        }
    }
    let mut branches: Vec<&BranchInfo> = input.branches.iter().collect();
    branches.sort_by(|a, b| a.name.cmp(&b.name));
    let mut plans: Vec<BranchPlan> = branches
        .iter()
        .map(|b| decide(input, b, open.get(b.name.as_str()).copied(), closed.get(b.name.as_str())))
        .collect();

    // The cap: oldest activity first (unknown dates count as oldest), then by name.
    let mut deletions: Vec<usize> = (0..plans.len()).filter(|&i| plans[i].decision == Decision::Delete).collect();
    deletions.sort_by(|&a, &b| (plans[a].last_commit, &plans[a].branch).cmp(&(plans[b].last_commit, &plans[b].branch)));
    let cap = input.policy.max_deletions as usize;
    for &i in deletions.iter().skip(cap) {
        let plan = &mut plans[i];
        plan.decision = Decision::Keep;
        plan.reason = format!("deletion cap reached ({cap} per run); otherwise: {}", plan.reason);
    }
    plans
}

fn decide(input: &PlanInput, branch: &BranchInfo, open: Option<u64>, closed: Option<&&PullRequestInfo>) -> BranchPlan {
    let policy = input.policy;
    let name = branch.name.as_str();
    let verdict = |decision, reason: String, pull_request| BranchPlan {
        branch: name.to_owned(),
        decision,
        reason,
        last_commit: branch.last_commit,
        pull_request,
    };
    if branch.is_default || input.main_branch == Some(name) {
        return verdict(Decision::Keep, "main branch".into(), None);
    }
    if let Some(glob) = policy.protected.iter().find(|g| crate::glob::matches(g, name)) {
        return verdict(Decision::Keep, format!("protected (matches `{glob}`)"), None);
    }
    if let Some(id) = open {
        return verdict(Decision::Keep, format!("open pull request #{id}"), Some(id));
    }
    if let Some(pattern) = input.restricted.iter().find(|p| restriction_matches(p, name)) {
        return verdict(Decision::Keep, format!("delete restriction `{pattern}`"), None);
    }
    let mut kept_because = None;
    if let Some(pr) = closed {
        let state = pr.state.to_ascii_lowercase();
        let moved_on = pr.head.as_deref().is_some_and(|head| !same_commit(head, &branch.head));
        match pr.updated.map(|t| days(t, input.now)) {
            _ if moved_on => kept_because = Some(format!("commits since pull request #{} was {state}", pr.id)),
            Some(age) if age >= i64::from(policy.merged_days) => {
                let reason = format!("pull request #{} {state} {age} days ago", pr.id);
                return verdict(Decision::Delete, reason, Some(pr.id));
            }
            Some(age) => {
                let wait = policy.merged_days;
                kept_because = Some(format!("pull request #{} {state} {age} days ago (deleted after {wait})", pr.id));
            }
            None => {}
        }
    }
    match branch.last_commit.map(|t| days(t, input.now)) {
        Some(age) if age >= i64::from(policy.inactive_days) => {
            verdict(Decision::Delete, format!("no commit for {age} days"), None)
        }
        Some(age) => {
            let reason = kept_because.unwrap_or_else(|| {
                format!("last commit {age} days ago (deleted after {} days without commits)", policy.inactive_days)
            });
            verdict(Decision::Keep, reason, closed.map(|pr| pr.id))
        }
        None => {
            let reason = kept_because.unwrap_or_else(|| "last commit date unknown".into());
            verdict(Decision::Keep, reason, closed.map(|pr| pr.id))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    fn branch(name: &str, head: &str, age_days: i64, now: DateTime<Utc>) -> BranchInfo {
        BranchInfo {
            name: name.into(),
            head: head.into(),
            last_commit: Some(now - Duration::days(age_days)),
            is_default: false,
        }
    }

    fn pr(id: u64, source: &str, state: &str, age_days: i64, head: &str, now: DateTime<Utc>) -> PullRequestInfo {
        PullRequestInfo {
            id,
            source_branch: source.into(),
            state: state.into(),
            updated: Some(now - Duration::days(age_days)),
            head: Some(head.into()),
            destination_branch: Some("main".into()),
            destination_head: None,
            title: None,
            draft: false,
            source_repository: None,
            destination_repository: None,
        }
    }

    #[test]
    fn reasons_for_each_rule() {
        let now = Utc::now();
        let branches = vec![
            branch("main", "a000000", 400, now),
            branch("release/1", "a000001", 400, now),
            branch("reviewed", "a000002", 400, now),
            branch("locked/x", "a000003", 400, now),
            branch("merged", "a000004", 1, now),
            branch("merged-recently", "a000005", 1, now),
            branch("merged-then-pushed", "a000006", 1, now),
            branch("abandoned", "a000007", 100, now),
            branch("fresh", "a000008", 3, now),
        ];
        let prs = vec![
            pr(1, "reviewed", "OPEN", 1, "a000002", now),
            pr(2, "merged", "MERGED", 20, "a000004", now),
            pr(3, "merged-recently", "DECLINED", 2, "a000005", now),
            pr(4, "merged-then-pushed", "MERGED", 20, "b999999", now),
            pr(5, "reviewed", "MERGED", 200, "a000002", now),
        ];
        let policy = StalePolicy::default();
        let restricted = vec!["locked/*".to_owned()];
        let input = PlanInput {
            branches: &branches,
            pull_requests: &prs,
            restricted: &restricted,
            main_branch: Some("main"),
            policy: &policy,
            now,
        };
        let got: Vec<(String, Decision, String)> =
            plan(&input).into_iter().map(|p| (p.branch, p.decision, p.reason)).collect();
        let want = [
            ("abandoned", Decision::Delete, "no commit for 100 days"),
            ("fresh", Decision::Keep, "last commit 3 days ago (deleted after 90 days without commits)"),
            ("locked/x", Decision::Keep, "delete restriction `locked/*`"),
            ("main", Decision::Keep, "main branch"),
            ("merged", Decision::Delete, "pull request #2 merged 20 days ago"),
            ("merged-recently", Decision::Keep, "pull request #3 declined 2 days ago (deleted after 14)"),
            ("merged-then-pushed", Decision::Keep, "commits since pull request #4 was merged"),
            ("release/1", Decision::Keep, "protected (matches `release/*`)"),
            ("reviewed", Decision::Keep, "open pull request #1"),
        ];
        let want: Vec<(String, Decision, String)> =
            want.iter().map(|(b, d, r)| (b.to_string(), *d, r.to_string())).collect();
        assert_eq!(got, want);

        let capped = StalePolicy { max_deletions: 1, ..policy.clone() };
        let plans = plan(&PlanInput { policy: &capped, ..input });
        let deleted: Vec<&str> =
            plans.iter().filter(|p| p.decision == Decision::Delete).map(|p| p.branch.as_str()).collect();
        assert_eq!(deleted, ["abandoned"], "the oldest activity goes first");
        let merged = plans.iter().find(|p| p.branch == "merged").unwrap();
        assert!(merged.reason.starts_with("deletion cap reached (1 per run)"), "{}", merged.reason);
    }

    #[test]
    fn restriction_globs_cross_slashes() {
        assert!(restriction_matches("release/*", "release/1/fix"));
        assert!(restriction_matches("**", "anything/at/all"));
        assert!(restriction_matches("develop", "develop") && !restriction_matches("develop", "develop2"));
        assert!(restriction_matches("*-hotfix", "a/b-hotfix") && !restriction_matches("*-hotfix", "hotfix"));
    }
}
