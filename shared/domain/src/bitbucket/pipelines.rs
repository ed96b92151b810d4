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
