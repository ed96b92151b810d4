//! The Bitbucket port's HTTP adapters: Cloud REST 2.0 and Data Center REST 1.0 on one
//! [`Transport`] (credentials, the OAuth token cache, retries within a deadline, bounded
//! same-origin paging, typed errors). [`Connector`] is the domain's `Connect`.

mod cloud;
mod datacenter;
mod parse;
mod transport;

pub use parse::pipeline_body;
pub use transport::{RetryPolicy, Transport};

use std::sync::Arc;
use std::time::Duration;

use domain::bitbucket::{Bitbucket, BitbucketError, Connect, Credential, RepoTarget};
use domain::rate::{Priority, RateBudget, credential_key};
use domain::webhook::Flavor;
use tokio::time::Instant;

/// Builds per-connection clients on one shared [`Transport`] (created once at cold start).
#[derive(Clone)]
pub struct Connector {
    transport: Arc<Transport>,
}

impl Default for Connector {
    fn default() -> Self {
        Connector::new(RetryPolicy::default())
    }
}

impl Connector {
    pub fn new(policy: RetryPolicy) -> Self {
        Connector { transport: Arc::new(Transport::new(policy)) }
    }

    /// Every request taken from the credentials' shared `rate` budget ([`domain::rate`]).
    pub fn with_budget(policy: RetryPolicy, rate: Arc<dyn RateBudget>) -> Self {
        Connector { transport: Arc::new(Transport::with_budget(policy, rate)) }
    }
}

impl Connect for Connector {
    /// A client for `target` acting with `credential`, giving up after `budget`.
    fn connect(&self, target: &RepoTarget, credential: Credential, budget: Duration) -> Arc<dyn Bitbucket> {
        self.connect_as(target, credential, budget, Priority::Interactive)
    }

    fn connect_as(
        &self,
        target: &RepoTarget,
        credential: Credential,
        budget: Duration,
        priority: Priority,
    ) -> Arc<dyn Bitbucket> {
        let rate = self.transport.budget.as_ref().map(|_| (credential_key(target, &credential), priority));
        let session = transport::Session {
            transport: self.transport.clone(),
            flavor: target.flavor,
            credential,
            oauth_token_url: target.oauth_token_url(),
            deadline: Instant::now() + budget,
            rate,
        };
        match target.flavor {
            Flavor::Cloud => Arc::new(cloud::CloudClient::new(session, target)),
            Flavor::DataCenter => Arc::new(datacenter::DataCenterClient::new(session, target)),
        }
    }
}

/// Percent-encodes one URL path segment (branch names and paths carry `/`, spaces, `#`…).
pub(crate) fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A `/`-separated path (branch names, file paths) with each segment percent-encoded.
pub(crate) fn segments(path: &str) -> String {
    path.split('/').map(segment).collect::<Vec<_>>().join("/")
}

/// `Ok(None)` for a 404, so "absent" is an answer rather than an error.
pub(crate) fn absent_as_none<T>(result: Result<T, BitbucketError>) -> Result<Option<T>, BitbucketError> {
    match result {
        Ok(v) => Ok(Some(v)),
        Err(BitbucketError::NotFound(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_encoded_per_segment() {
        assert_eq!(segment("feature/a b"), "feature%2Fa%20b");
        assert_eq!(segments("feature/a b"), "feature/a%20b");
    }
}
