//! A rate budget per credential, shared by every process that calls Bitbucket with it.
//!
//! Bitbucket Cloud allows 1,000 requests an hour per user on repository routes (scaled up for
//! some token kinds and announced in `X-RateLimit-Limit`), counted over a rolling hour. Every
//! Lambda environment (and the local stack) takes each request from one counter per credential
//! in the state table ([`RATE_WINDOWS`]): a conditional write reserves a small block of requests
//! at a time, so a busy process writes once per block, and concurrent writers never lose a count
//! (a failed condition reads again and retries).
//!
//! Requests people make ([`Priority::Interactive`]: the API, and the work a webhook causes) are
//! counted but never held back here: Bitbucket itself answers them, and they come first.
//! Scheduled work ([`Priority::Scheduled`]: polls, reconciliation, the stale-branch plan) may use
//! only the share people leave ([`BudgetConfig::people_share`] is kept for them), paced over the
//! window, and defers to its next cycle ([`BitbucketError::Deferred`]) once that is used, or once
//! Bitbucket says the credential is near its limit (`X-RateLimit-NearLimit`, a low
//! `X-RateLimit-Remaining`, a 429).
//!
//! Windows are fixed (aligned to the epoch); Bitbucket's is rolling. Pacing bounds what scheduled
//! work takes in any rolling hour: at most `share × (1 + lead / window)` of the limit — with the
//! defaults 0.8 × 1.25 = 1.0 — so scheduled work alone never makes Bitbucket refuse people.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::bitbucket::{BitbucketError, Credential, RepoTarget};
use crate::store::{Condition, StateStore, StoreError};
use crate::tables::{RATE_WINDOWS, Record};

/// Who is asking: people first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Priority {
    /// A person's request, or work a webhook caused: counted, never held back.
    #[default]
    Interactive,
    /// Scheduled work: defers when the credential's budget runs low.
    Scheduled,
}

/// What Bitbucket said about a credential's budget in one answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RateSignal {
    /// `X-RateLimit-Limit`: requests allowed an hour (scaled for some token kinds).
    pub limit: Option<u64>,
    /// `X-RateLimit-Remaining`, where sent.
    pub remaining: Option<u64>,
    /// `X-RateLimit-NearLimit: true` (less than 20% left), or a 429.
    pub near_limit: bool,
}

impl RateSignal {
    pub fn is_empty(&self) -> bool {
        *self == RateSignal::default()
    }
}

/// The budget port: the Bitbucket client takes every request from it and tells it what
/// Bitbucket's answers said.
#[async_trait]
pub trait RateBudget: Send + Sync {
    /// Takes one request from the credential's budget; `Deferred` when scheduled work must wait
    /// for its next cycle (never for [`Priority::Interactive`]).
    async fn take(&self, credential: &str, priority: Priority) -> Result<(), BitbucketError>;
    /// Keeps what an answer said about the budget (best effort).
    async fn observe(&self, credential: &str, signal: &RateSignal);
}

/// The key a credential's budget is kept under: a hash of the host and who the credential acts
/// as (the email of an API token, a consumer's key; a hash of a token), so integrations sharing a
/// user share its budget. Never the secret itself.
pub fn credential_key(target: &RepoTarget, credential: &Credential) -> String {
    let host = url::Url::parse(&target.base_url).ok().and_then(|u| u.host_str().map(str::to_owned)).unwrap_or_default();
    let who = match credential {
        Credential::ApiToken { email, .. } => format!("user:{}", email.to_ascii_lowercase()),
        Credential::AppPassword { username, .. } => format!("user:{}", username.to_ascii_lowercase()),
        Credential::OauthConsumer { key, .. } => format!("consumer:{key}"),
        Credential::AccessToken { token } | Credential::HttpToken { token } => {
            format!("token:{}", hex::encode(Sha256::digest(token.expose().as_bytes())))
        }
    };
    let digest = Sha256::digest(format!("{host}\n{who}").as_bytes());
    hex::encode(&digest[..16])
}

/// The budget's shape.
#[derive(Debug, Clone, Copy)]
pub struct BudgetConfig {
    /// Requests an hour until Bitbucket announces another limit (Cloud: 1,000).
    pub hourly_limit: u64,
    /// The share of the limit kept for people: scheduled work uses the rest.
    pub people_share: f64,
    pub window: Duration,
    /// How far ahead of an even pace scheduled work may run within a window.
    pub lead: Duration,
    /// Requests reserved per conditional write.
    pub block: u64,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        BudgetConfig {
            hourly_limit: 1000,
            people_share: 0.2,
            window: Duration::from_secs(3600),
            lead: Duration::from_secs(900),
            block: 5,
        }
    }
}

impl BudgetConfig {
    /// What scheduled work may have taken `elapsed` into a window.
    pub fn scheduled_allowance(&self, limit: u64, elapsed: Duration) -> u64 {
        let share = limit as f64 * (1.0 - self.people_share);
        let paced = ((elapsed + self.lead).as_secs_f64() / self.window.as_secs_f64()).min(1.0);
        (share * paced).floor() as u64
    }
}

/// One credential's counter in its current window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RateWindow {
    /// The window's start, epoch seconds.
    pub window_start: i64,
    /// Requests taken (reserved) in the window, by every process.
    pub taken: u64,
    /// Requests an hour, as last announced by Bitbucket (or the default).
    pub limit: u64,
    /// Bitbucket said the credential is near its limit: scheduled work waits for the next window.
    #[serde(default)]
    pub near_limit: bool,
}

impl Record for RateWindow {
    const KIND: &'static str = "rate_window";
}

pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// What this process reserved and has not used yet, per credential.
#[derive(Debug, Clone, Copy, Default)]
struct Reserved {
    window_start: i64,
    left: u64,
    /// The limit and near-limit flag last written, so an answer repeating them writes nothing.
    limit: u64,
    near_limit: bool,
}

/// The budget on the state table.
pub struct StoreBudget {
    store: Arc<dyn StateStore>,
    config: BudgetConfig,
    clock: Clock,
    reserved: Mutex<HashMap<String, Reserved>>,
}

/// Conditional writes tried before giving up on one reservation.
const ATTEMPTS: usize = 8;

impl StoreBudget {
    pub fn new(store: Arc<dyn StateStore>, config: BudgetConfig) -> Self {
        Self::with_clock(store, config, Arc::new(Utc::now))
    }

    /// With another clock (benchmarks simulate an hour in seconds).
    pub fn with_clock(store: Arc<dyn StateStore>, config: BudgetConfig, clock: Clock) -> Self {
        StoreBudget { store, config, clock, reserved: Mutex::new(HashMap::new()) }
    }

    fn window_of(&self, now: DateTime<Utc>) -> (i64, Duration) {
        let length = self.config.window.as_secs().max(1) as i64;
        let start = now.timestamp().div_euclid(length) * length;
        let elapsed = (now - DateTime::from_timestamp(start, 0).unwrap_or(now)).to_std().unwrap_or_default();
        (start, elapsed)
    }

    /// Kept two windows past the later of the window and now (the clock may be simulated).
    fn expiry(&self, window_start: i64) -> i64 {
        window_start.max(crate::now_epoch()) + 2 * self.config.window.as_secs() as i64
    }

    /// The stored counter as of `window_start` (a new window starts from nothing, keeping the
    /// limit Bitbucket announced), with the version to write against.
    async fn current(&self, credential: &str, window_start: i64) -> Result<(RateWindow, Condition), StoreError> {
        Ok(match RATE_WINDOWS.get(self.store.as_ref(), "", &[credential]).await? {
            Some(stored) if stored.record.window_start == window_start => {
                (stored.record, Condition::Version(stored.version))
            }
            Some(stored) => (
                RateWindow { window_start, taken: 0, limit: stored.record.limit, near_limit: false },
                Condition::Version(stored.version),
            ),
            None => (
                RateWindow { window_start, taken: 0, limit: self.config.hourly_limit, near_limit: false },
                Condition::Absent,
            ),
        })
    }

    async fn write(&self, credential: &str, window: &RateWindow, condition: Condition) -> Result<bool, StoreError> {
        let item = RATE_WINDOWS.item("", &[credential], window)?.with_expiry(self.expiry(window.window_start));
        match self.store.put(item, condition).await {
            Ok(_) => Ok(true),
            Err(StoreError::ConditionFailed { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn local(&self, credential: &str) -> Reserved {
        self.reserved.lock().expect("lock").get(credential).copied().unwrap_or_default()
    }

    fn set_local(&self, credential: &str, reserved: Reserved) {
        self.reserved.lock().expect("lock").insert(credential.to_owned(), reserved);
    }

    async fn reserve(&self, credential: &str, priority: Priority) -> Result<bool, StoreError> {
        let (window_start, elapsed) = self.window_of((self.clock)());
        for _ in 0..ATTEMPTS {
            let (mut window, condition) = self.current(credential, window_start).await?;
            let mut block = self.config.block.max(1);
            if priority == Priority::Scheduled {
                let allowance = self.config.scheduled_allowance(window.limit, elapsed);
                if window.near_limit || window.taken >= allowance {
                    return Ok(false);
                }
                block = block.min(allowance - window.taken);
            }
            window.taken += block;
            if self.write(credential, &window, condition).await? {
                let local =
                    Reserved { window_start, left: block - 1, limit: window.limit, near_limit: window.near_limit };
                self.set_local(credential, local);
                return Ok(true);
            }
        }
        Err(StoreError::Unavailable("the rate budget keeps changing concurrently".into()))
    }
}

#[async_trait]
impl RateBudget for StoreBudget {
    async fn take(&self, credential: &str, priority: Priority) -> Result<(), BitbucketError> {
        let (window_start, _) = self.window_of((self.clock)());
        {
            let mut reserved = self.reserved.lock().expect("lock");
            if let Some(local) = reserved.get_mut(credential)
                && local.window_start == window_start
                && local.left > 0
                && !(priority == Priority::Scheduled && local.near_limit)
            {
                local.left -= 1;
                return Ok(());
            }
        }
        match (self.reserve(credential, priority).await, priority) {
            (Ok(true), _) | (_, Priority::Interactive) => Ok(()),
            (Ok(false), Priority::Scheduled) => Err(BitbucketError::Deferred(
                "the credential's request budget for scheduled work is used up for now; the next cycle goes on".into(),
            )),
            (Err(e), Priority::Scheduled) => {
                tracing::warn!(error = %e, "rate budget unavailable; scheduled work defers");
                Err(BitbucketError::Deferred(format!("the rate budget could not be read: {e}")))
            }
        }
    }

    async fn observe(&self, credential: &str, signal: &RateSignal) {
        if signal.is_empty() {
            return;
        }
        let local = self.local(credential);
        let (window_start, _) = self.window_of((self.clock)());
        let same_window = local.window_start == window_start;
        let limit_known = signal.limit.is_none_or(|limit| same_window && limit == local.limit);
        let low = signal.near_limit || signal.remaining.is_some_and(|r| (r as f64) < self.low_mark(signal, local));
        if limit_known && (!low || (same_window && local.near_limit)) {
            return;
        }
        for _ in 0..3 {
            let Ok((mut window, condition)) = self.current(credential, window_start).await else { return };
            let before = window.clone();
            if let Some(limit) = signal.limit.filter(|l| *l > 0) {
                window.limit = limit;
            }
            if let Some(remaining) = signal.remaining {
                window.taken = window.taken.max(window.limit.saturating_sub(remaining));
            }
            window.near_limit |= low;
            let written = window == before || self.write(credential, &window, condition).await.unwrap_or(true);
            if written {
                let mut reserved = self.reserved.lock().expect("lock");
                let entry = reserved.entry(credential.to_owned()).or_default();
                if entry.window_start != window_start {
                    *entry = Reserved { window_start, ..Reserved::default() };
                }
                entry.limit = window.limit;
                entry.near_limit = window.near_limit;
                return;
            }
        }
    }
}

impl StoreBudget {
    /// Remaining requests under which the credential counts as near its limit.
    fn low_mark(&self, signal: &RateSignal, local: Reserved) -> f64 {
        let limit = signal.limit.unwrap_or(if local.limit > 0 { local.limit } else { self.config.hourly_limit });
        limit as f64 * self.config.people_share
    }
}

/// The budget as a shared port.
pub fn shared(budget: StoreBudget) -> Arc<dyn RateBudget> {
    Arc::new(budget)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    fn at(seconds: i64) -> Clock {
        Arc::new(move || DateTime::from_timestamp(seconds, 0).unwrap())
    }

    #[tokio::test]
    async fn scheduled_work_defers_people_never_do() {
        let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
        let config = BudgetConfig { hourly_limit: 100, block: 3, ..BudgetConfig::default() };
        // 30 minutes into a window: 80 × 45/60 = 60 requests for scheduled work.
        let budget = StoreBudget::with_clock(store.clone(), config, at(3600 * 10 + 1800));
        let mut granted = 0;
        while budget.take("c", Priority::Scheduled).await.is_ok() {
            granted += 1;
            assert!(granted <= 100, "never unbounded");
        }
        assert_eq!(granted, 60);
        assert!(matches!(budget.take("c", Priority::Scheduled).await, Err(BitbucketError::Deferred(_))));
        for _ in 0..50 {
            budget.take("c", Priority::Interactive).await.unwrap();
        }
        // Another credential has its own budget; another process shares this one's counter.
        budget.take("d", Priority::Scheduled).await.unwrap();
        let other = StoreBudget::with_clock(store.clone(), config, at(3600 * 10 + 1800));
        assert!(other.take("c", Priority::Scheduled).await.is_err());
        let stored = RATE_WINDOWS.get(store.as_ref(), "", &["c"]).await.unwrap().unwrap().record;
        assert!(stored.taken >= 110, "people's requests are counted too: {stored:?}");
        // The next window starts again (paced: 80 × 15/60 = 20 at its start).
        let next = StoreBudget::with_clock(store, config, at(3600 * 11));
        let mut granted = 0;
        while next.take("c", Priority::Scheduled).await.is_ok() {
            granted += 1;
        }
        assert_eq!(granted, 20);
    }

    #[tokio::test]
    async fn bitbucket_announcements_are_honoured() {
        let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
        let config = BudgetConfig { hourly_limit: 100, block: 1, ..BudgetConfig::default() };
        let budget = StoreBudget::with_clock(store.clone(), config, at(7200 + 3599));
        // A scaled limit: more room for scheduled work (80% of 1,000).
        budget.observe("c", &RateSignal { limit: Some(1000), ..Default::default() }).await;
        let mut granted = 0;
        while budget.take("c", Priority::Scheduled).await.is_ok() {
            granted += 1;
        }
        assert_eq!(granted, 800);
        // Near the limit: scheduled work stops at once, in every process; people go on.
        let fresh = StoreBudget::with_clock(store.clone(), config, at(3 * 3600 + 3599));
        fresh.take("e", Priority::Scheduled).await.unwrap();
        fresh.observe("e", &RateSignal { near_limit: true, ..Default::default() }).await;
        assert!(fresh.take("e", Priority::Scheduled).await.is_err());
        let other = StoreBudget::with_clock(store.clone(), config, at(3 * 3600 + 3599));
        assert!(other.take("e", Priority::Scheduled).await.is_err());
        fresh.take("e", Priority::Interactive).await.unwrap();
        // Remaining counts as taken.
        let third = StoreBudget::with_clock(store, config, at(5 * 3600 + 3599));
        third.observe("f", &RateSignal { limit: Some(100), remaining: Some(30), near_limit: false }).await;
        let mut granted = 0;
        while third.take("f", Priority::Scheduled).await.is_ok() {
            granted += 1;
        }
        assert_eq!(granted, 10, "80 for scheduled work, 70 already used");
    }

    #[test]
    fn keys_name_who_acts_never_the_secret() {
        let target = RepoTarget::cloud("w", "r");
        let token = |t: &str| Credential::ApiToken { email: "A@b.c".into(), token: crate::secrets::Secret::new(t) };
        assert_eq!(credential_key(&target, &token("one")), credential_key(&target, &token("two")), "one user");
        let other = Credential::ApiToken { email: "x@b.c".into(), token: crate::secrets::Secret::new("one") };
        assert_ne!(credential_key(&target, &token("one")), credential_key(&target, &other));
        let access = Credential::AccessToken { token: crate::secrets::Secret::new("secret-token") };
        assert!(!credential_key(&target, &access).contains("secret"));
        assert_eq!(credential_key(&target, &access).len(), 32);
    }
}
