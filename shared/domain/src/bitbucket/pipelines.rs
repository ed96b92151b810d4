//! Bitbucket Cloud Pipelines as the port sees them: a run request, a run, its test summary.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Where a run comes from: a branch (its tip, or a given commit), optionally a custom pipeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipelineRequest {
    pub branch: String,
    pub commit: Option<String>,
    /// The custom pipeline's name (`selector: {type: custom, pattern}`); `None` runs the
    /// branch's own pipeline.
    pub custom: Option<String>,
    pub variables: Vec<PipelineVariable>,
    /// Runs the repository's `pull-requests:` pipeline for a pull request
    /// (`pipeline_pullrequest_target`): `branch` is its source, `commit` its head.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_request: Option<PullRequestTarget>,
}

/// What `pipeline_pullrequest_target` names besides the source branch and commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullRequestTarget {
    pub id: u64,
    pub destination: String,
    pub destination_commit: Option<String>,
    /// The `pull-requests:` pattern of `bitbucket-pipelines.yml` that matches the source branch.
    pub pattern: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipelineVariable {
    pub key: String,
    pub value: String,
    #[serde(default)]
    pub secured: bool,
}

/// A run as Bitbucket reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipelineRun {
    pub uuid: String,
    pub build_number: u64,
    pub branch: Option<String>,
    pub commit: Option<String>,
    /// `custom: deploy`, `branches: main`, `pull-requests: **`…
    pub selector: Option<String>,
    /// `MANUAL`, `PUSH`, `SCHEDULE`…
    pub trigger: Option<String>,
    /// PENDING, IN_PROGRESS, or the result: SUCCESSFUL, FAILED, ERROR, STOPPED, EXPIRED.
    pub status: String,
    pub created_on: Option<DateTime<Utc>>,
    pub completed_on: Option<DateTime<Utc>>,
    pub duration_seconds: Option<u64>,
    /// The pull request of a `pipeline_pullrequest_target` run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_request: Option<u64>,
}

pub const FINAL_STATUSES: &[&str] = &["SUCCESSFUL", "FAILED", "ERROR", "STOPPED", "EXPIRED"];

pub fn is_final(status: &str) -> bool {
    FINAL_STATUSES.contains(&status)
}

impl PipelineRun {
    pub fn is_final(&self) -> bool {
        is_final(&self.status)
    }
}

/// Test results of a completed run, per step and in total.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestSummary {
    pub total: u64,
    pub passed: u64,
    pub failed: u64,
    pub skipped: u64,
    pub steps: Vec<StepTests>,
    /// The failed test cases, at most [`MAX_TEST_FAILURES`] of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<TestFailure>,
}

/// How many failed test cases a run keeps (their reasons cost one request each).
pub const MAX_TEST_FAILURES: usize = 20;
/// How much of a failure's reason is kept.
pub const MAX_REASON_CHARS: usize = 2000;

/// One failed test case of a completed run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestFailure {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suite: Option<String>,
    pub step: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl TestFailure {
    /// The reason cut to [`MAX_REASON_CHARS`].
    pub fn bounded_reason(reason: &str) -> Option<String> {
        let reason = reason.trim();
        if reason.is_empty() {
            return None;
        }
        Some(match reason.char_indices().nth(MAX_REASON_CHARS) {
            Some((cut, _)) => format!("{}…", &reason[..cut]),
            None => reason.to_owned(),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepTests {
    pub step: String,
    pub total: u64,
    pub passed: u64,
    pub failed: u64,
    pub skipped: u64,
}

impl TestSummary {
    pub fn add(&mut self, step: StepTests) {
        self.total += step.total;
        self.passed += step.passed;
        self.failed += step.failed;
        self.skipped += step.skipped;
        self.steps.push(step);
    }
}
