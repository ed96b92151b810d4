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
    /// When a destination branch moves, its open pull requests are built again (a pull-request
    /// pipeline tests the merge of both sides).
    pub resync_pull_requests: bool,
    /// Drafts build too; otherwise a draft builds once it is marked ready.
    pub build_draft_pull_requests: bool,
    /// A new head stops the unfinished runs of the pull request's older heads.
    pub cancel_superseded_runs: bool,
    /// Pull requests build this custom pipeline (`custom:` in `bitbucket-pipelines.yml`) on
    /// their source branch instead of the `pull-requests:` pipeline.
    pub pull_request_pipeline: Option<String>,
    /// Where an environment is served, `{branch}` and `{branch_slug}` filled in
    /// (`https://{branch_slug}.example.com`): posted as its status on its head commit while it is
    /// active and nothing reported otherwise.
    pub environment_url: Option<String>,
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
            build_draft_pull_requests: false,
            cancel_superseded_runs: true,
            pull_request_pipeline: None,
            environment_url: None,
            build_branches: Vec::new(),
            stale_branches: StalePolicy::default(),
        }
    }
}

impl Options {
    /// Checks what a person sets; the first problem by field name.
    pub fn validate(&self) -> Result<(), crate::Error> {
        use crate::error::invalid;
        if let Some(name) = &self.pull_request_pipeline
            && (name.trim().is_empty() || name.len() > 255)
        {
            return Err(invalid("options.pull_request_pipeline", "must name a custom pipeline (1-255 characters)"));
        }
        if let Some(template) = &self.environment_url {
            let sample = environment_url(template, "feature/sample");
            let parsed = url::Url::parse(&sample).map_err(|e| {
                invalid("options.environment_url", format!("is not a URL once `{{branch_slug}}` is filled in: {e}"))
            })?;
            if !matches!(parsed.scheme(), "http" | "https") || template.len() > 400 {
                return Err(invalid("options.environment_url", "must be an http(s) URL of at most 400 characters"));
            }
            let unknown = template.replace("{branch_slug}", "").replace("{branch}", "");
            if unknown.contains(['{', '}']) {
                return Err(invalid("options.environment_url", "may use only {branch} and {branch_slug}"));
            }
        }
        Ok(())
    }
}

/// The environment URL of `branch` from a template: `{branch}` percent-encoded, `{branch_slug}`
/// a DNS label (lower case, runs of anything but letters and digits as one `-`, at most 63).
pub fn environment_url(template: &str, branch: &str) -> String {
    let encoded: String = url::form_urlencoded::byte_serialize(branch.as_bytes()).collect();
    template.replace("{branch_slug}", &branch_slug(branch)).replace("{branch}", &encoded)
}

pub fn branch_slug(branch: &str) -> String {
    let mut slug = String::new();
    for c in branch.chars() {
        if c.is_ascii_alphanumeric() {
            slug.push(c.to_ascii_lowercase());
        } else if !slug.ends_with('-') {
            slug.push('-');
        }
    }
    let mut slug = slug.trim_matches('-').to_owned();
    slug.truncate(63);
    let slug = slug.trim_end_matches('-');
    if slug.is_empty() { "branch".to_owned() } else { slug.to_owned() }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_urls_from_the_template() {
        let template = "https://{branch_slug}.example.com/?b={branch}";
        assert_eq!(
            environment_url(template, "feature/Login_Page"),
            "https://feature-login-page.example.com/?b=feature%2FLogin_Page"
        );
        assert_eq!(branch_slug("--/--"), "branch");
        assert_eq!(branch_slug(&"a".repeat(80)).len(), 63);
        let mut options = Options { environment_url: Some(template.into()), ..Options::default() };
        assert!(options.validate().is_ok());
        for bad in ["ftp://{branch_slug}.x", "https://{branch_slug}.x/{nope}", "not a url"] {
            options.environment_url = Some(bad.into());
            assert!(options.validate().is_err(), "{bad}");
        }
        options.environment_url = None;
        options.pull_request_pipeline = Some(" ".into());
        assert!(options.validate().is_err());
    }
}
