//! One error vocabulary for every domain service. Each variant says what kind of failure it is
//! (the entry glue maps each kind to one HTTP status, once); its message says what went wrong
//! and never carries a secret.

use crate::bitbucket::BitbucketError;
use crate::integration::IntegrationStatus;
use crate::secrets::SecretError;
use crate::signature::SignatureError;
use crate::store::StoreError;
use crate::webhook::RepeatedHeader;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A field of a request is not acceptable.
    #[error("{field}: {problem}")]
    Invalid { field: &'static str, problem: String },
    /// A request or delivery is malformed as a whole (not one field of it).
    #[error("{0}")]
    Malformed(String),
    /// A webhook delivery whose signature does not authenticate it.
    #[error(transparent)]
    Signature(#[from] SignatureError),
    /// A header a delivery carries once came more than once.
    #[error(transparent)]
    RepeatedHeader(#[from] RepeatedHeader),
    /// What was asked for does not exist (an integration, a backup target, a run).
    #[error("{0}")]
    NotFound(String),
    /// The integration is disconnected or archived: it takes no deliveries.
    #[error("integration `{id}` is {} and does not accept deliveries", status.as_str())]
    NotAccepting { id: String, status: IntegrationStatus },
    /// The integration's state does not allow the action.
    #[error("integration `{id}` is {}: cannot {action}", status.as_str())]
    WrongState { id: String, status: IntegrationStatus, action: &'static str },
    /// Another lifecycle operation holds the integration (or a commit must finish before it is
    /// deleted): nothing was changed; retry shortly.
    #[error("integration `{id}` is busy ({busy_with}); nothing was changed, retry shortly")]
    Busy { id: String, busy_with: String },
    /// The request contradicts what is recorded (a finished run, a reused delivery id…).
    #[error("{0}")]
    Conflict(String),
    #[error("the document is {size} bytes, over the {limit}-byte limit")]
    TooLarge { size: usize, limit: usize },
    /// Not now: another worker holds it, a listing was cut short, a secret is not there yet.
    /// Retrying later may succeed.
    #[error("{0}")]
    Retry(String),
    /// Bitbucket refused or failed.
    #[error("{0}")]
    Bitbucket(#[from] BitbucketError),
    #[error(transparent)]
    Secrets(#[from] SecretError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A field error: `invalid("name", "must not be empty")`.
pub fn invalid(field: &'static str, problem: impl Into<String>) -> Error {
    Error::Invalid { field, problem: problem.into() }
}
