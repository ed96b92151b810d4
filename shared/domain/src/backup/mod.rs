//! Backups: JSON documents committed to a Bitbucket repository, only when they changed, never
//! losing a concurrent update.
//!
//! Records (see [`crate::tables`]): the [`BackupTarget`] (`BACKUP_TARGETS`), the target's
//! [`Head`] (`BACKUP_HEADS`: the last committed snapshot, the newest version any request has
//! claimed, and the commit lease) and one [`HistoryEntry`] per commit (`BACKUP_HISTORY`).
//!
//! Ordering: each snapshot has a version (the caller's, or one more than any seen). Commits to
//! one target are serialized by a lease in the head record (a conditional write, so it holds
//! across Lambda instances); a snapshot whose version is not above the committed one, or below
//! one already waiting, is superseded and commits nothing. So concurrent and late snapshots end
//! with the newest content in Bitbucket, and every commit is one whole document.

mod canonical;
mod target;

pub use canonical::{canonical, is_container};
pub use target::{BackupTarget, DEFAULT_MESSAGE, PLACEHOLDERS, TargetSpec, check_name};

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use crate::bitbucket::{Bitbucket, BitbucketError, FileCommit};
use crate::connection::{self, DELETING};
use crate::context::IntegrationContext;
use crate::error::{Error, invalid};
use crate::integration::{Integration, IntegrationStatus};
use crate::store::{Condition, StateStore, StoreError, Write};
use crate::tables::{BACKUP_HEADS, BACKUP_HISTORY, BACKUP_TARGETS, Record};
use crate::webhook::Flavor;

/// The largest canonical document committed (Lambda's 6 MB synchronous payload, base64
/// included, leaves room for about this much).
pub const MAX_DOCUMENT_BYTES: usize = 4 * 1024 * 1024;
/// Bitbucket calls for one snapshot, retries included (API Gateway gives a request 30 s).
const CALL_BUDGET: Duration = Duration::from_secs(15);
/// How long a snapshot waits for another one's commit to the same target before answering busy.
const WAIT_BUDGET: Duration = Duration::from_secs(10);
/// A lease outlives any function run (timeout 30 s), so an expired lease means its holder died.
const LEASE: chrono::Duration = chrono::Duration::seconds(60);
/// Commit attempts when the branch keeps moving (409).
const COMMIT_ATTEMPTS: u32 = 5;

/// `POST …/snapshots`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    /// Kept as sent: its numbers are committed digit for digit.
    pub document: Box<RawValue>,
    /// Monotonic per target (e.g. the document's revision or a timestamp).
    pub version: Option<u64>,
    pub message: Option<String>,
}

/// The last committed snapshot of a target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Committed {
    pub version: u64,
    pub sha256: String,
    pub size: usize,
    pub commit: String,
    pub url: String,
    pub path: String,
    pub branch: String,
    pub at: DateTime<Utc>,
}

/// Who may commit to a target now (`until` bounds a holder that died).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Lease {
    owner: String,
    version: u64,
    until: DateTime<Utc>,
}

/// The highest snapshot version accepted: the largest integer every JSON client reads exactly.
pub const MAX_VERSION: u64 = (1 << 53) - 1;

/// The newest version waiting for the lease; older snapshots step aside for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Claim {
    owner: String,
    version: u64,
    until: DateTime<Utc>,
}

/// Per-target coordination record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub committed: Option<Committed>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lease: Option<Lease>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    claim: Option<Claim>,
}

impl Head {
    fn committed_version(&self) -> u64 {
        self.committed.as_ref().map_or(0, |c| c.version)
    }

    fn live_lease(&self, now: DateTime<Utc>) -> Option<&Lease> {
        self.lease.as_ref().filter(|l| l.until > now)
    }

    fn live_claim(&self, now: DateTime<Utc>) -> u64 {
        self.claim.as_ref().filter(|c| c.until > now).map_or(0, |c| c.version)
    }

    /// The newest version committed, committing or waiting.
    fn highest(&self, now: DateTime<Utc>) -> u64 {
        let leased = self.live_lease(now).map_or(0, |l| l.version);
        self.committed_version().max(self.live_claim(now)).max(leased)
    }
}

/// One commit made by a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub commit: String,
    pub sha256: String,
    pub size: usize,
    pub version: u64,
    pub committed_at: DateTime<Utc>,
    pub url: String,
    pub path: String,
    pub branch: String,
    pub message: String,
}

/// What a snapshot did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Outcome {
    /// A commit was made (or the branch already held exactly this content).
    Committed {
        changed: bool,
        version: u64,
        sha256: String,
        size: usize,
        commit: String,
        url: String,
        path: String,
        branch: String,
        committed_at: DateTime<Utc>,
    },
    /// Same content as the last committed snapshot: nothing written to Bitbucket.
    Unchanged { changed: bool, version: u64, sha256: String, commit: String },
    /// A newer snapshot was already committed, or is being committed.
    Superseded { changed: bool, superseded: bool, version: u64, latest_version: u64 },
}

impl Record for BackupTarget {
    const KIND: &'static str = "backup_target";
}

impl Record for Head {
    const KIND: &'static str = "backup_head";
}

impl Record for StoredEntry {
    const KIND: &'static str = "backup_commit";
}

fn no_target(id: &str, name: &str) -> Error {
    Error::NotFound(format!("no backup target `{name}` on integration `{id}`"))
}

/// How a history entry is stored (its `version` would collide with the store's own attribute).
#[derive(Serialize, Deserialize)]
pub struct StoredEntry {
    entry: HistoryEntry,
}

/// The backups service, built once per process.
#[derive(Clone)]
pub struct Backups {
    pub ctx: IntegrationContext,
}

impl Backups {
    fn store(&self) -> &dyn StateStore {
        self.ctx.store.as_ref()
    }

    async fn integration(&self, id: &str) -> Result<Integration, Error> {
        Ok(self.ctx.get(id).await?.record)
    }

    /// Creates or replaces a target; `true` when it was created.
    pub async fn put_target(&self, id: &str, name: &str, spec: TargetSpec) -> Result<(BackupTarget, bool), Error> {
        let integration = self.integration(id).await?;
        if integration.status == IntegrationStatus::Archived {
            let status = integration.status;
            return Err(Error::WrongState { id: id.to_owned(), status, action: "change backup targets" });
        }
        let mut target = spec.into_target(name, Utc::now())?;
        let existing = BACKUP_TARGETS.get(self.store(), id, &[name]).await?;
        let condition = match &existing {
            Some(known) => {
                target.created_at = known.record.created_at;
                Condition::Version(known.version)
            }
            None => Condition::Absent,
        };
        BACKUP_TARGETS.put(self.store(), id, &[name], &target, condition).await?;
        Ok((target, existing.is_none()))
    }

    pub async fn target(&self, id: &str, name: &str) -> Result<(BackupTarget, Head), Error> {
        self.integration(id).await?;
        if check_name(name).is_err() {
            return Err(no_target(id, name));
        }
        let target = BACKUP_TARGETS.get(self.store(), id, &[name]).await?.ok_or_else(|| no_target(id, name))?.record;
        let (head, _) = self.head(id, name).await?;
        Ok((target, head))
    }

    pub async fn list_targets(&self, id: &str) -> Result<Vec<BackupTarget>, Error> {
        self.integration(id).await?;
        Ok(BACKUP_TARGETS.all(self.store(), id, &[]).await?.into_iter().map(|t| t.record).collect())
    }

    /// Deletes the target, its head and its history (the commits stay in Bitbucket).
    pub async fn delete_target(&self, id: &str, name: &str) -> Result<(), Error> {
        self.target(id, name).await?;
        for entry in BACKUP_HISTORY.all(self.store(), id, &[name]).await? {
            let micros = history_micros(entry.record.entry.committed_at);
            BACKUP_HISTORY.delete(self.store(), id, &[name, &micros], Condition::None).await?;
        }
        BACKUP_HEADS.delete(self.store(), id, &[name], Condition::None).await?;
        BACKUP_TARGETS.delete(self.store(), id, &[name], Condition::None).await?;
        Ok(())
    }

    /// Committed snapshots, newest first.
    pub async fn history(
        &self,
        id: &str,
        name: &str,
        limit: usize,
        cursor: Option<String>,
    ) -> Result<(Vec<HistoryEntry>, Option<String>), Error> {
        self.target(id, name).await?;
        let (entries, cursor) = BACKUP_HISTORY.page(self.store(), id, &[name], true, limit, cursor).await?;
        Ok((entries.into_iter().map(|stored| stored.entry).collect(), cursor))
    }

    async fn head(&self, id: &str, name: &str) -> Result<(Head, Option<u64>), Error> {
        Ok(match BACKUP_HEADS.get(self.store(), id, &[name]).await? {
            Some(head) => (head.record, Some(head.version)),
            None => (Head::default(), None),
        })
    }

    /// Writes the head if nobody changed it since `version` (`None`: it did not exist);
    /// `Ok(false)` when somebody did.
    async fn save_head(&self, id: &str, name: &str, head: &Head, version: Option<u64>) -> Result<bool, Error> {
        let condition = version.map_or(Condition::Absent, Condition::Version);
        match BACKUP_HEADS.put(self.store(), id, &[name], head, condition).await {
            Ok(_) => Ok(true),
            Err(StoreError::ConditionFailed { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Backs `snapshot` up to the target `name` (see the module docs for the ordering rules).
    pub async fn snapshot(&self, id: &str, name: &str, snapshot: Snapshot) -> Result<Outcome, Error> {
        let integration = self.ctx.active(id, "back up documents").await?;
        let (target, _) = self.target(id, name).await?;
        if snapshot.version.is_some_and(|v| v > MAX_VERSION) {
            // Versions travel as JSON numbers; above 2^53 - 1 clients lose precision, and "one
            // more than any seen" must always exist.
            return Err(invalid("version", format!("must be at most {MAX_VERSION}")));
        }
        if !is_container(&snapshot.document) {
            return Err(invalid("document", "must be a JSON object or array"));
        }
        let content = canonical(&snapshot.document).map_err(|e| invalid("document", e.to_string()))?;
        if content.len() > MAX_DOCUMENT_BYTES {
            return Err(Error::TooLarge { size: content.len(), limit: MAX_DOCUMENT_BYTES });
        }
        let sha256 = hex::encode(Sha256::digest(&content));
        let owner = uuid::Uuid::new_v4().to_string();
        let deadline = Instant::now() + WAIT_BUDGET;
        // Our version, fixed once we wait for it; until then recomputed from each read.
        let mut waiting: Option<u64> = None;
        let (mut head, version, key) = loop {
            let (mut head, stored) = self.head(id, name).await?;
            let now = Utc::now();
            let key = waiting.or(snapshot.version).unwrap_or_else(|| head.highest(now) + 1);
            let same_as_committed = head
                .committed
                .as_ref()
                .filter(|c| c.sha256 == sha256 && c.path == target.path() && c.branch == target.branch)
                .cloned();
            if let Some(last) = same_as_committed.as_ref().filter(|c| key <= c.version) {
                // A repeat of what is committed (a retried request, say): nothing to do.
                let (version, sha256, commit) = (last.version, sha256.clone(), last.commit.clone());
                return Ok(Outcome::Unchanged { changed: false, version, sha256, commit });
            }
            if key <= head.committed_version() || head.live_claim(now) > key {
                let latest_version = head.highest(now);
                return Ok(Outcome::Superseded { changed: false, superseded: true, version: key, latest_version });
            }
            if head.live_lease(now).is_none() {
                if let Some(last) = same_as_committed {
                    // Nobody is committing, so the last commit is what the branch holds.
                    head.committed = Some(Committed { version: key, ..last.clone() });
                    if self.save_head(id, name, &head, stored).await? {
                        return Ok(Outcome::Unchanged { changed: false, version: key, sha256, commit: last.commit });
                    }
                    continue;
                }
                head.lease = Some(Lease { owner: owner.clone(), version: key, until: now + LEASE });
                // Committing `key` serves every claim up to it.
                head.claim = head.claim.filter(|c| c.version > key);
                if self.save_head(id, name, &head, stored).await? {
                    break (head, stored.map_or(1, |v| v + 1), key);
                }
                continue;
            }
            // Another snapshot is committing: claim our version (older ones step aside), wait.
            if head.live_claim(now) < key {
                let until =
                    now + chrono::Duration::from_std(WAIT_BUDGET).unwrap_or(LEASE) + chrono::Duration::seconds(5);
                head.claim = Some(Claim { owner: owner.clone(), version: key, until });
                if !self.save_head(id, name, &head, stored).await? {
                    continue;
                }
            }
            waiting = Some(key);
            if Instant::now() >= deadline {
                self.withdraw_claim(id, name, &owner).await?;
                return Err(Error::Retry(format!(
                    "another snapshot of `{name}` is still being committed; retry shortly"
                )));
            }
            tokio::time::sleep(Duration::from_millis(20 + rand::random::<u64>() % 80)).await;
        };

        let message = target.commit_message(snapshot.message.as_deref(), key, &sha256);
        let made = match self.still_connected(id).await {
            Err(e) => Err(e),
            Ok(()) => match self.ctx.client(&integration, CALL_BUDGET).await {
                Ok(client) => {
                    self.commit(client.as_ref(), &integration, &target, &content, &message).await.map_err(Into::into)
                }
                Err(e) => Err(e),
            },
        };
        // Record the outcome and release the lease, whatever happened in Bitbucket.
        let mut stored = Some(version);
        let committed = loop {
            let committed = match &made {
                Ok(commit) if key > head.committed_version() => Some(Committed {
                    version: key,
                    sha256: sha256.clone(),
                    size: content.len(),
                    commit: commit.clone(),
                    url: integration.target.commit_url(commit),
                    path: target.path(),
                    branch: target.branch.clone(),
                    at: Utc::now(),
                }),
                _ => None,
            };
            if let Some(c) = &committed {
                head.committed = Some(c.clone());
            }
            if head.lease.as_ref().is_some_and(|l| l.owner == owner) {
                head.lease = None;
            }
            if committed.is_some() {
                head.claim = head.claim.filter(|c| c.version > key);
            }
            if self.save_head(id, name, &head, stored).await? {
                break committed;
            }
            (head, stored) = self.head(id, name).await?;
        };
        let commit = match made {
            Ok(commit) => commit,
            Err(e) => {
                // Kept as the integration's last error (a refused credential also moves it to
                // `error`), as every other Bitbucket failure on an integration is.
                return Err(match e {
                    Error::Bitbucket(b) => self.ctx.noted(id, b).await,
                    other => other,
                });
            }
        };
        let Some(c) = committed else {
            // Our lease expired mid-commit and a newer snapshot was recorded meanwhile.
            let latest_version = head.highest(Utc::now());
            return Ok(Outcome::Superseded { changed: false, superseded: true, version: key, latest_version });
        };
        let entry = HistoryEntry {
            commit: commit.clone(),
            sha256: c.sha256.clone(),
            size: c.size,
            version: key,
            committed_at: c.at,
            url: c.url.clone(),
            path: c.path.clone(),
            branch: c.branch.clone(),
            message,
        };
        let micros = history_micros(c.at);
        let data = serde_json::json!({
            "target": name, "commit": commit, "path": c.path, "branch": c.branch, "version": key,
            "sha256": sha256, "size": c.size, "url": c.url,
        });
        let event = crate::outbox::DomainEvent::new(
            crate::outbox::EventType::BackupCommitted,
            id,
            &format!("{name}#{commit}"),
            data,
        );
        // Never overwritten: one entry per commit, at the commit's microsecond.
        let history = BACKUP_HISTORY.item(id, &[name, &micros], &StoredEntry { entry })?;
        self.ctx.write_with_events(Write::Put(history, Condition::Absent), &[event]).await?;
        Ok(Outcome::Committed {
            changed: true,
            version: key,
            sha256,
            size: c.size,
            commit,
            url: c.url,
            path: c.path,
            branch: c.branch,
            committed_at: c.at,
        })
    }

    /// Checked once the lease is held, before Bitbucket is called: the integration is still
    /// there, active, and not being deleted. A deletion takes its lock first, then waits for the
    /// leases already held ([`commits_finished`]); a lease taken after its lock finds the lock
    /// here. So no commit starts once a deletion has begun, and none ends after it answered.
    async fn still_connected(&self, id: &str) -> Result<(), Error> {
        self.ctx.active(id, "back up documents").await?;
        if connection::lifecycle_operation(self.store(), id).await?.as_deref() == Some(DELETING) {
            return Err(Error::Busy { id: id.to_owned(), busy_with: "being deleted".into() });
        }
        Ok(())
    }

    /// A snapshot that gives up waiting takes back its claim, so a retry of it is not
    /// superseded by itself.
    async fn withdraw_claim(&self, id: &str, name: &str, owner: &str) -> Result<(), Error> {
        loop {
            let (mut head, stored) = self.head(id, name).await?;
            if head.claim.as_ref().is_none_or(|c| c.owner != owner) {
                return Ok(());
            }
            head.claim = None;
            if self.save_head(id, name, &head, stored).await? {
                return Ok(());
            }
        }
    }

    /// One commit of `content` on top of the tip it reads; when the branch moved (409), reads
    /// again — and if the branch already holds exactly this content, that is the commit.
    async fn commit(
        &self,
        client: &dyn Bitbucket,
        integration: &Integration,
        target: &BackupTarget,
        content: &[u8],
        message: &str,
    ) -> Result<String, BitbucketError> {
        let path = target.path();
        let mut tip = client.branch_tip(&target.branch).await?;
        // Data Center names the branch a new one starts from; Cloud starts it from the main branch.
        let from_branch = match (&tip, integration.target.flavor) {
            (None, Flavor::DataCenter) => client.main_branch().await?,
            _ => None,
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            let commit = FileCommit {
                branch: target.branch.clone(),
                path: path.clone(),
                content: content.to_vec(),
                message: message.to_owned(),
                author: target.author.clone(),
                parent: tip.clone(),
                from_branch: from_branch.clone(),
            };
            match client.commit_file(&commit).await {
                Err(BitbucketError::Conflict(_)) if attempt < COMMIT_ATTEMPTS => {
                    tip = client.branch_tip(&target.branch).await?;
                    if let Some(tip) = &tip
                        && already_there(client, tip, &path, content).await?
                    {
                        return Ok(tip.clone());
                    }
                }
                // The answer was lost (a timeout, a 5xx): the commit may have landed anyway, and
                // committing again would make a second one.
                Err(e @ (BitbucketError::Unavailable(_) | BitbucketError::Network(_))) => {
                    if let Ok(Some(now)) = client.branch_tip(&target.branch).await
                        && tip.as_deref() != Some(now.as_str())
                        && already_there(client, &now, &path, content).await.unwrap_or(false)
                    {
                        return Ok(now);
                    }
                    return Err(e);
                }
                other => return other,
            }
        }
    }
}

/// Waits (up to `wait`) until no backup target of the integration holds a live commit lease;
/// whether none does. A lease outlives a dead holder by at most [`LEASE`], a live one is
/// released as soon as its commit has an answer.
pub async fn commits_finished(store: &dyn StateStore, id: &str, wait: Duration) -> Result<bool, StoreError> {
    let deadline = Instant::now() + wait;
    loop {
        let now = Utc::now();
        let mut leased = false;
        for head in BACKUP_HEADS.all(store, id, &[]).await? {
            leased |= head.record.live_lease(now).is_some();
        }
        if !leased {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn already_there(client: &dyn Bitbucket, tip: &str, path: &str, content: &[u8]) -> Result<bool, BitbucketError> {
    Ok(client.read_file(tip, path).await?.as_deref() == Some(content))
}

/// A history entry's key part: the commit's time, fixed-width so entries sort by it.
fn history_micros(at: DateTime<Utc>) -> String {
    format!("{:020}", at.timestamp_micros())
}
