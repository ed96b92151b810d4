//! Typed Bitbucket failures. Messages name what went wrong and what to do; they never carry a
//! credential or a response body verbatim beyond Bitbucket's own short error message.

use super::capabilities::{Operation, Vocabulary, every_scope};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BitbucketError {
    #[error("Bitbucket refused the credential (401){}", detail(.0))]
    BadCredentials(Option<String>),
    #[error(
        "Bitbucket Cloud removed app passwords on 2026-07-28, so this credential can no longer sign in. \
         Create an Atlassian API token (account settings → Security → API tokens, \"with scopes\", app Bitbucket) \
         with the scopes {}, then reconnect with credential kind `api_token` (email + token).",
        every_scope(Vocabulary::Granular).join(", ")
    )]
    AppPasswordRemoved,
    /// A scope (Cloud, 403) or a permission (Data Center, 401 naming the user) is missing.
    #[error("the credential lacks a permission Bitbucket requires{}", refusal(.missing, .message, .operation))]
    Forbidden {
        /// As Bitbucket named it: the operation's scopes the credential was not granted
        /// (Cloud), or the operation's permission (Data Center).
        missing: Vec<String>,
        /// Every scope the credential holds, when Bitbucket said (Cloud's 403 `detail.granted`).
        granted: Option<Vec<String>>,
        message: Option<String>,
        /// The refused operation, when the client knows it.
        operation: Option<&'static Operation>,
    },
    #[error("not found in Bitbucket (404): {0}")]
    NotFound(String),
    #[error("Bitbucket reported a conflict (409){}", detail(.0))]
    Conflict(Option<String>),
    #[error("Bitbucket rejected the request (400){}", detail(.0))]
    Rejected(Option<String>),
    #[error("Bitbucket is rate limiting requests (429) and the deadline left no room to retry")]
    RateLimited,
    #[error("Bitbucket is unavailable: {0}")]
    Unavailable(String),
    #[error("cannot reach Bitbucket: {0}")]
    Network(String),
    #[error("Bitbucket answered unexpectedly: {0}")]
    Unexpected(String),
    /// The product cannot do this at all (e.g. Pipelines on Data Center).
    #[error("{0}")]
    Unsupported(String),
}

fn detail(message: &Option<String>) -> String {
    message.as_ref().map(|m| format!(": {m}")).unwrap_or_default()
}

fn refusal(missing: &[String], message: &Option<String>, operation: &Option<&'static Operation>) -> String {
    let mut text = String::new();
    if !missing.is_empty() {
        text.push_str(&format!(": missing {}", missing.join(", ")));
    }
    if let Some(o) = operation {
        text.push_str(&format!(" for \"{}\", needed for {}", o.summary.trim_end_matches('.'), o.features()));
        if !o.also.is_empty() {
            text.push_str(&format!(" {}", o.also));
        }
    }
    match message {
        Some(m) if text.is_empty() => text.push_str(&format!(": {m}")),
        Some(m) => text.push_str(&format!(" (Bitbucket: {m})")),
        None => {}
    }
    text
}

impl BitbucketError {
    /// A short machine-readable reason (stored on integrations, used in API answers).
    pub fn reason(&self) -> &'static str {
        match self {
            BitbucketError::BadCredentials(_) => "bad_credentials",
            BitbucketError::AppPasswordRemoved => "app_password_removed",
            BitbucketError::Forbidden { .. } => "forbidden",
            BitbucketError::NotFound(_) => "not_found",
            BitbucketError::Conflict(_) => "conflict",
            BitbucketError::Rejected(_) => "rejected",
            BitbucketError::RateLimited => "rate_limited",
            BitbucketError::Unavailable(_) => "unavailable",
            BitbucketError::Network(_) => "network",
            BitbucketError::Unexpected(_) => "unexpected_response",
            BitbucketError::Unsupported(_) => "unsupported",
        }
    }

    /// Whether the credential itself is the problem (an integration goes to `error`).
    pub fn is_credential_problem(&self) -> bool {
        matches!(self, BitbucketError::BadCredentials(_) | BitbucketError::AppPasswordRemoved)
    }
}
