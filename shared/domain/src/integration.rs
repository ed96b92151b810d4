//! Integrations: one connected Bitbucket repository each (stored in [`crate::tables::INTEGRATIONS`]).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::bitbucket::{Credential, RepoTarget};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IntegrationStatus {
    Active,
    /// Disconnected by a person: deliveries are refused (410).
    Inactive,
    /// Bitbucket refused the credential; deliveries are still accepted.
    Error,
    Archived,
}

impl IntegrationStatus {
    pub fn accepts_deliveries(self) -> bool {
        matches!(self, IntegrationStatus::Active | IntegrationStatus::Error)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            IntegrationStatus::Active => "active",
            IntegrationStatus::Inactive => "inactive",
            IntegrationStatus::Error => "error",
            IntegrationStatus::Archived => "archived",
        }
    }
}

/// What the integration does automatically; defaults as Upsun's Bitbucket integration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Options {
    pub fetch_branches: bool,
    pub prune_branches: bool,
    pub build_pull_requests: bool,
    pub resync_pull_requests: bool,
    /// Branch globs (`main`, `release/*`) whose pushes start a pipeline run.
    pub build_branches: Vec<String>,
    /// Which branches the stale-branch cleanup deletes from Bitbucket.
    #[serde(deserialize_with = "crate::objects::object")]
    pub stale_branches: StalePolicy,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            fetch_branches: true,
            prune_branches: true,
            build_pull_requests: true,
            resync_pull_requests: false,
            build_branches: Vec::new(),
            stale_branches: StalePolicy::default(),
        }
    }
}

/// The stale-branch policy: a branch is deleted when a pull request from it was merged or
/// declined `merged_days` ago, or its last commit is `inactive_days` old — never the main
/// branch, a `protected` glob, a branch with an open pull request or under a delete
/// restriction, and at most `max_deletions` per run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StalePolicy {
    /// Whether scheduled runs delete; when false they only plan (a dry run).
    pub enabled: bool,
    pub merged_days: u32,
    pub inactive_days: u32,
    /// Branch globs never deleted (`*` within a path segment, `**` across).
    pub protected: Vec<String>,
    pub max_deletions: u32,
}

impl Default for StalePolicy {
    fn default() -> Self {
        StalePolicy {
            enabled: false,
            merged_days: 14,
            inactive_days: 90,
            protected: ["main", "master", "develop", "release/*", "hotfix/*"].map(String::from).to_vec(),
            max_deletions: 20,
        }
    }
}

/// The webhook this project registered in Bitbucket for the integration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisteredWebhook {
    pub id: String,
    pub url: String,
    pub active: bool,
}

/// The last thing that went wrong talking to Bitbucket (cleared by a successful test).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastError {
    pub reason: String,
    pub message: String,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Integration {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub status: IntegrationStatus,
    pub target: RepoTarget,
    #[serde(default)]
    pub options: Options,
    /// Kind and non-secret identifier of the credential (e.g. the API token's email).
    pub credential: serde_json::Value,
    /// Names (never values) of the secrets: the credential and the [`super::WebhookSecrets`].
    pub credential_secret_name: String,
    pub webhook_secret_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<RegisteredWebhook>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<LastError>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Integration {
    /// A new active integration with default options, its two secrets named under
    /// `secret_prefix` — `{prefix}/{id}/credential` and `{prefix}/{id}/webhook`, the one place
    /// that names them.
    pub fn new(id: &str, name: &str, target: RepoTarget, credential: &Credential, secret_prefix: &str) -> Self {
        let now = Utc::now();
        Integration {
            id: id.to_owned(),
            name: name.to_owned(),
            description: String::new(),
            status: IntegrationStatus::Active,
            target,
            options: Options::default(),
            credential: credential.summary(),
            credential_secret_name: format!("{secret_prefix}/{id}/credential"),
            webhook_secret_name: format!("{secret_prefix}/{id}/webhook"),
            webhook: None,
            last_error: None,
            created_at: now,
            updated_at: now,
        }
    }

    pub fn flavor(&self) -> crate::webhook::Flavor {
        self.target.flavor
    }
}

/// Integration ids appear in URLs and keys: 1–64 of `[A-Za-z0-9_-]`.
pub fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl crate::tables::Record for Integration {
    const KIND: &'static str = "integration";
}
