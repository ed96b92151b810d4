//! Bitbucket Cloud Pipelines as the port sees them: a run request, a run, its test summary, and
//! the mapping from Cloud's nested state objects to one status word.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

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

impl PipelineRequest {
    pub fn body(&self) -> Value {
        let mut target = json!({"type": "pipeline_ref_target", "ref_type": "branch", "ref_name": self.branch});
        if let Some(commit) = &self.commit {
            target["commit"] = json!({"type": "commit", "hash": commit});
        }
        if let Some(pattern) = &self.custom {
            target["selector"] = json!({"type": "custom", "pattern": pattern});
        }
        let mut body = json!({"target": target});
        if !self.variables.is_empty() {
            body["variables"] = json!(self.variables);
        }
        body
    }
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

/// One word for Cloud's `state`: `{name: COMPLETED, result: {name: SUCCESSFUL}}` → SUCCESSFUL;
/// a paused or halted run is still IN_PROGRESS.
fn status_of(state: &Value) -> String {
    let name = state.get("name").and_then(Value::as_str).unwrap_or("PENDING");
    match name {
        "COMPLETED" => state.pointer("/result/name").and_then(Value::as_str).unwrap_or("ERROR").to_owned(),
        "PENDING" => "PENDING".to_owned(),
        _ => "IN_PROGRESS".to_owned(),
    }
}

impl PipelineRun {
    pub fn from_cloud(v: &Value) -> Option<Self> {
        let text = |p: &str| v.pointer(p).and_then(Value::as_str).map(str::to_owned);
        let time = |p: &str| text(p).and_then(|t| DateTime::parse_from_rfc3339(&t).ok()).map(|t| t.with_timezone(&Utc));
        let selector = match (text("/target/selector/type"), text("/target/selector/pattern")) {
            (Some(kind), Some(pattern)) => Some(format!("{kind}: {pattern}")),
            (Some(kind), None) => Some(kind),
            _ => None,
        };
        Some(PipelineRun {
            uuid: text("/uuid")?,
            build_number: v.get("build_number").and_then(Value::as_u64)?,
            branch: text("/target/ref_name"),
            commit: text("/target/commit/hash"),
            selector,
            trigger: text("/trigger/name"),
            status: status_of(v.get("state").unwrap_or(&Value::Null)),
            created_on: time("/created_on"),
            completed_on: time("/completed_on"),
            duration_seconds: v.get("duration_in_seconds").and_then(Value::as_u64),
        })
    }

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

impl StepTests {
    /// From Cloud's `test_reports` summary; errors count as failures.
    pub fn from_cloud(step: String, v: &Value) -> Self {
        let n = |k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
        StepTests {
            step,
            total: n("number_of_test_cases"),
            passed: n("number_of_successful_test_cases"),
            failed: n("number_of_failed_test_cases") + n("number_of_error_test_cases"),
            skipped: n("number_of_skipped_test_cases"),
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cloud_states_map_to_one_word() {
        assert_eq!(status_of(&json!({"name": "PENDING"})), "PENDING");
        assert_eq!(status_of(&json!({"name": "IN_PROGRESS", "stage": {"name": "PAUSED"}})), "IN_PROGRESS");
        assert_eq!(status_of(&json!({"name": "COMPLETED", "result": {"name": "STOPPED"}})), "STOPPED");
        let run = PipelineRun::from_cloud(&json!({
            "uuid": "{u}", "build_number": 4,
            "target": {"ref_name": "main", "commit": {"hash": "abc"}, "selector": {"type": "custom", "pattern": "deploy"}},
            "trigger": {"name": "MANUAL"}, "state": {"name": "COMPLETED", "result": {"name": "SUCCESSFUL"}},
            "created_on": "2026-11-22T10:00:00.000000Z", "duration_in_seconds": 42
        }))
        .unwrap();
        assert_eq!(
            (run.build_number, run.status.as_str(), run.selector.as_deref()),
            (4, "SUCCESSFUL", Some("custom: deploy"))
        );
        assert!(run.is_final() && run.created_on.is_some() && run.completed_on.is_none());
        let request = PipelineRequest {
            branch: "main".into(),
            commit: None,
            custom: Some("deploy".into()),
            variables: vec![PipelineVariable { key: "K".into(), value: "v".into(), secured: true }],
        };
        assert_eq!(request.body()["target"]["selector"]["pattern"], "deploy");
        assert_eq!(request.body()["variables"][0]["secured"], true);
    }
}
