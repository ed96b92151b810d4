//! Bitbucket Cloud's request limit per user: requests are counted per credential over a rolling
//! hour (on the sandbox clock), and, once a limit is set ([`crate::Sandbox::set_rate_limit`]),
//! every answer carries `X-RateLimit-Limit`, `X-RateLimit-Resource` and `X-RateLimit-NearLimit`
//! (`true` once less than 20% is left) as Cloud's scaled rate limits do, and a request over the
//! limit is answered 429. The counts per credential are kept either way (the benchmarks read them).

use std::collections::{HashMap, VecDeque};

use axum::http::{HeaderMap, HeaderValue, header};
use base64::Engine as _;
use chrono::{DateTime, Duration, Utc};
use sha2::{Digest, Sha256};

#[derive(Default)]
pub struct Limiter {
    /// Requests an hour per credential; `None`: counted, never limited, no headers.
    pub per_hour: Option<u64>,
    recent: HashMap<String, VecDeque<DateTime<Utc>>>,
    totals: HashMap<String, u64>,
}

/// What the limiter decided for one request.
pub struct Verdict {
    pub limited: bool,
    pub headers: Vec<(&'static str, String)>,
}

/// Who a request acts as: the user of Basic credentials, a digest of a Bearer token.
pub fn credential_of(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    if let Some(basic) = value.strip_prefix("Basic ") {
        let decoded = base64::engine::general_purpose::STANDARD.decode(basic.trim()).ok()?;
        let text = String::from_utf8(decoded).ok()?;
        return Some(text.split_once(':').map_or(text.clone(), |(user, _)| user.to_owned()));
    }
    let token = value.strip_prefix("Bearer ")?;
    Some(format!("bearer:{}", &hex::encode(Sha256::digest(token.trim().as_bytes()))[..12]))
}

impl Limiter {
    /// Counts one request of `credential` at `now`.
    pub fn count(&mut self, credential: &str, now: DateTime<Utc>) -> Verdict {
        *self.totals.entry(credential.to_owned()).or_default() += 1;
        let Some(limit) = self.per_hour else { return Verdict { limited: false, headers: Vec::new() } };
        let recent = self.recent.entry(credential.to_owned()).or_default();
        while recent.front().is_some_and(|t| *t <= now - Duration::hours(1)) {
            recent.pop_front();
        }
        let limited = recent.len() as u64 >= limit;
        if !limited {
            recent.push_back(now);
        }
        let remaining = limit.saturating_sub(recent.len() as u64);
        let near = (remaining as f64) < limit as f64 * 0.2;
        let headers = vec![
            ("x-ratelimit-limit", limit.to_string()),
            ("x-ratelimit-resource", "api".to_owned()),
            ("x-ratelimit-nearlimit", near.to_string()),
        ];
        Verdict { limited, headers }
    }

    pub fn totals(&self) -> HashMap<String, u64> {
        self.totals.clone()
    }

    pub fn reset(&mut self) {
        self.recent.clear();
        self.totals.clear();
    }
}

pub fn apply(headers: &mut HeaderMap, verdict: &Verdict) {
    for (name, value) in &verdict.headers {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(*name, value);
        }
    }
}
