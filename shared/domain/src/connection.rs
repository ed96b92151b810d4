//! Connecting a Bitbucket repository: validation of what a person sends, the connection test,
//! credentials into the secret store, the webhook registered in Bitbucket, and the lifecycle
//! (disconnect/reconnect, archive/unarchive, secret rotation, deletion). Every step that can
//! fail happens before anything is stored, or is undone.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde::{Deserialize, Serialize};

use crate::bitbucket::capabilities::{self, FeatureReport, Probe, Vocabulary};
use crate::bitbucket::{Access, Bitbucket, BitbucketError, CLOUD_API, Credential, RepoTarget, WebhookSpec};
use crate::context::{IntegrationContext, note_error};
use crate::error::{Error, invalid};
use crate::integration::{Integration, IntegrationStatus, LastError, Options, RegisteredWebhook};
use crate::secrets::{Secret, SecretError};
use crate::store::{Condition, StateStore, StoreError};
use crate::tables::{INTEGRATIONS, LOCKS, Record, Versioned};
use crate::webhook::Flavor;
use crate::webhook_secret::WebhookSecrets;

/// How long Bitbucket calls made for one API request may take, retries included.
pub const CALL_BUDGET: Duration = Duration::from_secs(20);
/// How long a deletion waits for a backup commit already under way (its Bitbucket calls are
/// bounded by 15 s) before answering `Busy`.
const COMMIT_WAIT: Duration = Duration::from_secs(18);
/// How long the previous webhook secret stays valid after a rotation.
pub const ROTATION_WINDOW: chrono::Duration = chrono::Duration::hours(24);
/// How long a lifecycle operation holds its integration: longer than any operation (two
/// Bitbucket call budgets and the wait for in-flight commits), so an expired lock means its
/// holder died.
const LOCK_TTL: chrono::Duration = chrono::Duration::seconds(120);
/// The lock's operation while an integration is being deleted: work that finds it stops.
pub const DELETING: &str = "delete";

/// Who holds an integration's lifecycle lock ([`LOCKS`]).
#[derive(Debug, Serialize, Deserialize)]
pub struct LifecycleLock {
    owner: String,
    operation: String,
    since: chrono::DateTime<Utc>,
}

impl Record for LifecycleLock {
    const KIND: &'static str = "lifecycle_lock";
}

/// The operation holding the integration's lifecycle lock, if any.
pub async fn lifecycle_operation(store: &dyn StateStore, id: &str) -> Result<Option<String>, StoreError> {
    Ok(LOCKS.get(store, id, &[]).await?.map(|lock| lock.record.operation))
}

/// `POST /integrations`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewIntegration {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(deserialize_with = "crate::objects::name")]
    pub flavor: Flavor,
    pub base_url: Option<String>,
    pub workspace: Option<String>,
    pub project_key: Option<String>,
    pub repository: Option<String>,
    pub repository_url: Option<String>,
    #[serde(deserialize_with = "crate::objects::object")]
    pub credential: Credential,
    #[serde(default, deserialize_with = "crate::objects::object")]
    pub options: Options,
    #[serde(default = "yes")]
    pub register_webhook: bool,
}

fn yes() -> bool {
    true
}

/// `PATCH /integrations/{id}`: only what is given changes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntegrationPatch {
    pub name: Option<String>,
    pub description: Option<String>,
    #[serde(default, deserialize_with = "crate::objects::optional_object")]
    pub options: Option<Options>,
    #[serde(default, deserialize_with = "crate::objects::optional_object")]
    pub credential: Option<Credential>,
}

fn check_name(name: &str) -> Result<String, Error> {
    let name = name.trim();
    match name.chars().count() {
        0 => Err(invalid("name", "must not be empty")),
        1..=50 => Ok(name.to_owned()),
        _ => Err(invalid("name", "must be at most 50 characters")),
    }
}

fn check_description(description: &str) -> Result<String, Error> {
    if description.chars().count() > 255 {
        return Err(invalid("description", "must be at most 255 characters"));
    }
    Ok(description.trim().to_owned())
}

/// A workspace, project key or repository slug: it becomes a URL path segment, so `.` and `..`
/// (which a URL resolves away, pointing the credential at another resource) are refused.
fn slug_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-~".contains(&b))
        && s != "."
        && s != ".."
}

/// Whether the URL's host is this machine (loopback, unspecified) or its link (link-local, the
/// metadata range), however it is written (`127.1`, `2130706433`, `[::1]`, `localhost.`).
fn this_machine(url: &url::Url) -> bool {
    use std::net::IpAddr;
    let local = |ip: IpAddr| match ip {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_unspecified() || v4.is_link_local(),
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6.is_unspecified()
                || (v6.segments()[0] & 0xffc0) == 0xfe80
                || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback() || v4.is_unspecified() || v4.is_link_local())
        }
    };
    match url.host() {
        Some(url::Host::Ipv4(v4)) => local(IpAddr::V4(v4)),
        Some(url::Host::Ipv6(v6)) => local(IpAddr::V6(v6)),
        Some(url::Host::Domain(name)) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            name == "localhost" || name.ends_with(".localhost")
        }
        None => false,
    }
}

/// `https://…`, or — where allowed (the local stack and its sandbox) — `http://` to a loopback
/// host. Inside Lambda a loopback address is the Runtime API, never Bitbucket.
fn check_base_url(raw: &str, allow_loopback_http: bool) -> Result<String, Error> {
    let url = url::Url::parse(raw.trim()).map_err(|e| invalid("base_url", format!("not a URL: {e}")))?;
    let loopback = this_machine(&url);
    match url.scheme() {
        "https" if !loopback || allow_loopback_http => {}
        "http" if loopback && allow_loopback_http => {}
        _ if loopback => return Err(invalid("base_url", "must not be a loopback address here")),
        _ => return Err(invalid("base_url", "must use https")),
    }
    // API paths are appended to the base URL: a query or fragment would swallow them.
    if !url.username().is_empty() || url.password().is_some() || url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("base_url", "must not carry credentials, a query or a fragment"));
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

/// Fills owner/slug (and, for Data Center, the base URL) from a browser URL of the repository:
/// `https://bitbucket.org/{workspace}/{repo}[/…]` or
/// `https://host[/ctx]/projects/{KEY}/repos/{slug}[/…]` (`/users/{user}/repos/…` → `~user`).
pub fn parse_repository_url(flavor: Flavor, raw: &str) -> Result<(Option<String>, String, String), Error> {
    let bad = |why: &str| invalid("repository_url", why.to_owned());
    let url = url::Url::parse(raw.trim()).map_err(|_| bad("not a URL"))?;
    let segments: Vec<&str> = url.path_segments().map(|s| s.filter(|p| !p.is_empty()).collect()).unwrap_or_default();
    match flavor {
        Flavor::Cloud => {
            if url.host_str() != Some("bitbucket.org") {
                return Err(bad("a Cloud repository URL looks like https://bitbucket.org/{workspace}/{repository}"));
            }
            match segments.as_slice() {
                [workspace, repo, ..] => Ok((None, workspace.to_string(), repo.trim_end_matches(".git").to_owned())),
                _ => Err(bad("names no workspace and repository")),
            }
        }
        Flavor::DataCenter => {
            let at = segments
                .windows(4)
                .position(|w| matches!(w[0], "projects" | "users") && w[2] == "repos")
                .ok_or_else(|| bad("a Data Center repository URL contains /projects/{KEY}/repos/{slug}"))?;
            let owner =
                if segments[at] == "users" { format!("~{}", segments[at + 1]) } else { segments[at + 1].to_owned() };
            let mut base = url.clone();
            base.set_path(&segments[..at].join("/"));
            base.set_query(None);
            base.set_fragment(None);
            Ok((Some(base.as_str().trim_end_matches('/').to_owned()), owner, segments[at + 3].to_owned()))
        }
    }
}

impl NewIntegration {
    /// Checks every field and settles the target; the first problem is reported by field name.
    /// `allow_loopback_http`: whether a plain-http loopback base URL is acceptable (see
    /// [`Connections::allow_loopback_http`]).
    pub fn validate(&self, allow_loopback_http: bool) -> Result<(String, String, RepoTarget), Error> {
        let name = check_name(&self.name)?;
        let description = check_description(&self.description)?;
        let (url_base, url_owner, url_slug) = match &self.repository_url {
            Some(u) => {
                let (b, o, s) = parse_repository_url(self.flavor, u)?;
                (b, Some(o), Some(s))
            }
            None => (None, None, None),
        };
        let owner = match self.flavor {
            Flavor::Cloud => self
                .workspace
                .clone()
                .or(url_owner)
                .ok_or_else(|| invalid("workspace", "is required (or give repository_url)"))?,
            Flavor::DataCenter => self
                .project_key
                .clone()
                .or(url_owner)
                .ok_or_else(|| invalid("project_key", "is required (or give repository_url)"))?,
        };
        let slug = self
            .repository
            .clone()
            .or(url_slug)
            .ok_or_else(|| invalid("repository", "is required (or give repository_url)"))?;
        if !slug_ok(&owner) {
            let field = if self.flavor == Flavor::Cloud { "workspace" } else { "project_key" };
            return Err(invalid(field, "may contain only letters, digits and . _ - ~"));
        }
        if !slug_ok(&slug) {
            return Err(invalid("repository", "may contain only letters, digits and . _ - ~"));
        }
        let base_url = match (&self.base_url, url_base, self.flavor) {
            (Some(b), _, _) => check_base_url(b, allow_loopback_http)?,
            (None, Some(b), _) => check_base_url(&b, allow_loopback_http)?,
            (None, None, Flavor::Cloud) => CLOUD_API.to_owned(),
            (None, None, Flavor::DataCenter) => return Err(invalid("base_url", "is required for Data Center")),
        };
        if !self.credential.fits(self.flavor) {
            return Err(invalid(
                "credential.kind",
                format!("`{}` cannot be used with {}", self.credential.kind(), self.flavor.as_str()),
            ));
        }
        if let Some(field) = self.credential.empty_field() {
            return Err(invalid(field, "must not be empty"));
        }
        self.options.validate()?;
        Ok((name, description, RepoTarget { flavor: self.flavor, base_url, owner, slug }))
    }
}

/// What `POST /integrations/{id}/test` reports: the connection test's outcome (`ok`: what
/// creation requires), and what the credential can do feature by feature.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TestReport {
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access: Option<Access>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Absent when the credential or the repository failed (nothing else can be known).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub features: Option<Features>,
}

/// Feature name → its report, in [`capabilities::FEATURES`]' order (a JSON object).
#[derive(Debug, Clone, Default)]
pub struct Features(pub Vec<(&'static str, FeatureReport)>);

impl Features {
    pub fn get(&self, name: &str) -> Option<&FeatureReport> {
        self.0.iter().find(|(n, _)| *n == name).map(|(_, r)| r)
    }
}

impl Serialize for Features {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (name, report) in &self.0 {
            map.serialize_entry(name, report)?;
        }
        map.end()
    }
}

/// The connections service, built once per process.
#[derive(Clone)]
pub struct Connections {
    pub ctx: IntegrationContext,
    /// `$PUBLIC_BASE_URL`: where Bitbucket reaches the receiver.
    pub public_base_url: String,
    /// Secret names are `{secret_prefix}/{integration id}/…`.
    pub secret_prefix: String,
    /// Whether a base URL may be plain `http://` to a loopback address (the local stack's
    /// sandbox); never in Lambda, where loopback is the Runtime API.
    pub allow_loopback_http: bool,
}

impl Connections {
    fn client(&self, target: &RepoTarget, credential: Credential) -> Arc<dyn Bitbucket> {
        self.ctx.connector.connect(target, credential, CALL_BUDGET)
    }

    fn webhook_url(&self, id: &str) -> String {
        format!("{}/webhooks/{id}", self.public_base_url.trim_end_matches('/'))
    }

    fn spec(&self, integration: &Integration, secret: Secret, active: bool) -> WebhookSpec {
        WebhookSpec {
            url: self.webhook_url(&integration.id),
            secret,
            active,
            description: format!("bitbucket-automation: {}", integration.name),
        }
    }

    /// The connection test: the credential works, the repository is readable, and (when a
    /// webhook is wanted) webhooks may be managed.
    async fn test(&self, client: &dyn Bitbucket, webhooks: bool) -> Result<Access, BitbucketError> {
        let access = client.verify_access().await?;
        if webhooks {
            client.list_webhooks().await?;
        }
        Ok(access)
    }

    pub async fn get(&self, id: &str) -> Result<Integration, Error> {
        Ok(self.ctx.get(id).await?.record)
    }

    async fn credential(&self, integration: &Integration) -> Result<Credential, Error> {
        self.ctx.credential(integration).await
    }

    async fn webhook_secrets(&self, integration: &Integration) -> Result<WebhookSecrets, Error> {
        let name = &integration.webhook_secret_name;
        let secret = self.ctx.secrets.get(name).await?.ok_or_else(|| SecretError::Corrupt(name.clone()))?;
        Ok(WebhookSecrets::from_secret(name, &secret)?)
    }

    pub async fn create(&self, request: NewIntegration) -> Result<Integration, Error> {
        let (name, description, target) = request.validate(self.allow_loopback_http)?;
        let client = self.client(&target, request.credential.clone());
        self.test(client.as_ref(), request.register_webhook).await?;

        let id = new_id(&name);
        let mut integration = Integration {
            description,
            options: request.options,
            ..Integration::new(&id, &name, target, &request.credential, &self.secret_prefix)
        };
        let webhook_secret = Secret::generate();
        self.ctx.secrets.put(&integration.credential_secret_name, &request.credential.to_secret()).await?;
        let stored = async {
            self.ctx
                .secrets
                .put(&integration.webhook_secret_name, &WebhookSecrets::new(&webhook_secret).to_secret())
                .await?;
            if request.register_webhook {
                let hook = client.create_webhook(&self.spec(&integration, webhook_secret, true)).await?;
                integration.webhook = Some(RegisteredWebhook { id: hook.id, url: hook.url, active: true });
            }
            INTEGRATIONS.put(self.ctx.store.as_ref(), "", &[&id], &integration, Condition::Absent).await?;
            Ok::<_, Error>(())
        }
        .await;
        if let Err(e) = stored {
            // Undo what was done so a failed create leaves nothing behind.
            if let Some(hook) = &integration.webhook {
                let _ = client.delete_webhook(&hook.id).await;
            } else if request.register_webhook
                && matches!(e, Error::Bitbucket(BitbucketError::Unavailable(_) | BitbucketError::Network(_)))
            {
                // The registration's answer was lost (a timeout, a 5xx): Bitbucket may hold the
                // webhook anyway. Only this never-stored integration's URL points at it.
                let url = self.webhook_url(&integration.id);
                if let Ok(hooks) = client.list_webhooks().await {
                    for hook in hooks.iter().filter(|h| h.url == url) {
                        let _ = client.delete_webhook(&hook.id).await;
                    }
                }
            }
            let _ = self.ctx.secrets.delete(&integration.webhook_secret_name).await;
            let _ = self.ctx.secrets.delete(&integration.credential_secret_name).await;
            return Err(e);
        }
        Ok(integration)
    }

    pub async fn list(&self) -> Result<Vec<Integration>, Error> {
        self.ctx.list().await
    }

    /// The integration's recorded deliveries, newest first.
    pub async fn deliveries(
        &self,
        id: &str,
        limit: usize,
        cursor: Option<String>,
    ) -> Result<(Vec<crate::Delivery>, Option<String>), Error> {
        self.ctx.get(id).await?;
        Ok(crate::list_deliveries(self.ctx.store.as_ref(), id, limit, cursor).await?)
    }

    /// The integration's domain events, newest first.
    pub async fn activity(
        &self,
        id: &str,
        limit: usize,
        cursor: Option<String>,
    ) -> Result<(Vec<crate::outbox::OutboxEntry>, Option<String>), Error> {
        self.ctx.get(id).await?;
        Ok(crate::outbox::list(self.ctx.store.as_ref(), id, limit, cursor).await?)
    }

    /// The integration's parked deliveries, newest first.
    pub async fn parked(
        &self,
        id: &str,
        limit: usize,
        cursor: Option<String>,
    ) -> Result<(Vec<crate::parked::Parked>, Option<String>), Error> {
        self.ctx.get(id).await?;
        Ok(crate::parked::list(self.ctx.store.as_ref(), id, limit, cursor).await?)
    }

    /// Takes the integration's lifecycle lock, or answers `Busy` having changed nothing.
    async fn lock(&self, id: &str, operation: &str) -> Result<u64, Error> {
        let now = Utc::now();
        let lock =
            LifecycleLock { owner: uuid::Uuid::new_v4().to_string(), operation: operation.to_owned(), since: now };
        let item = LOCKS.item(id, &[], &lock)?.with_expiry((now + LOCK_TTL).timestamp());
        match self.ctx.store.put(item, Condition::Absent).await {
            Ok(version) => Ok(version),
            Err(StoreError::ConditionFailed { current }) => {
                let holder = current.and_then(|i| i.record::<LifecycleLock>().ok());
                let busy_with = holder.map_or_else(|| "another operation".to_owned(), |l| l.operation);
                Err(Error::Busy { id: id.to_owned(), busy_with })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Runs a lifecycle operation holding the integration's lock, so operations on one
    /// integration never interleave: one that finds the lock held answers `Busy` (409) before it
    /// changes anything. Released whatever the outcome (an expired lock frees a dead holder's).
    async fn exclusive<T, F>(&self, id: &str, operation: &str, work: impl FnOnce() -> F) -> Result<T, Error>
    where
        F: Future<Output = Result<T, Error>>,
    {
        self.get(id).await?;
        let held = self.lock(id, operation).await?;
        let outcome = work().await;
        if let Err(e) = LOCKS.delete(self.ctx.store.as_ref(), id, &[], Condition::Version(held)).await {
            tracing::warn!(integration = id, error = %e, "lifecycle lock not released; it expires by itself");
        }
        outcome
    }

    /// Applies `change` to the stored integration and writes it. Background work may note a
    /// failure (`last_error`) meanwhile; then `change` is applied to what it wrote, so neither
    /// is lost and an operation whose Bitbucket steps are done never fails on that race.
    async fn save_with(&self, id: &str, change: impl Fn(&mut Integration)) -> Result<Integration, Error> {
        for _ in 0..5 {
            let Versioned { record: mut integration, version } = self.ctx.get(id).await?;
            let before = integration.status;
            change(&mut integration);
            match self.ctx.save(&mut integration, version, before).await {
                Ok(_) => return Ok(integration),
                Err(StoreError::ConditionFailed { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(StoreError::Unavailable(format!("integration `{id}` keeps changing concurrently; retry")).into())
    }

    pub async fn update(&self, id: &str, patch: IntegrationPatch) -> Result<Integration, Error> {
        let name = patch.name.as_deref().map(check_name).transpose()?;
        let description = patch.description.as_deref().map(check_description).transpose()?;
        if let Some(options) = &patch.options {
            options.validate()?;
        }
        self.exclusive(id, "edit", || async {
            let integration = self.get(id).await?;
            let mut summary = None;
            if let Some(credential) = patch.credential {
                if !credential.fits(integration.flavor()) {
                    return Err(invalid(
                        "credential.kind",
                        format!("`{}` cannot be used with {}", credential.kind(), integration.flavor().as_str()),
                    ));
                }
                if let Some(field) = credential.empty_field() {
                    return Err(invalid(field, "must not be empty"));
                }
                // A new credential is tested before it replaces the old one.
                let client = self.client(&integration.target, credential.clone());
                self.test(client.as_ref(), integration.webhook.is_some()).await?;
                self.ctx.secrets.put(&integration.credential_secret_name, &credential.to_secret()).await?;
                summary = Some(credential.summary());
            }
            self.save_with(id, |integration| {
                if let Some(name) = &name {
                    integration.name = name.clone();
                }
                if let Some(description) = &description {
                    integration.description = description.clone();
                }
                if let Some(options) = &patch.options {
                    integration.options = options.clone();
                }
                if let Some(summary) = &summary {
                    integration.credential = summary.clone();
                    integration.last_error = None;
                    if integration.status == IntegrationStatus::Error {
                        integration.status = IntegrationStatus::Active;
                    }
                }
            })
            .await
        })
        .await
    }

    /// Runs the connection test with the stored credential, then probes what each feature needs
    /// with read requests (one item each, no side effect). A credential Bitbucket refuses moves
    /// an active integration to `error`; a passing test clears the error; a feature the
    /// credential lacks a scope or permission for is reported, and changes nothing. It changes
    /// no secret and no webhook, so it needs no lock: its outcome is applied to the stored record.
    pub async fn test_connection(&self, id: &str) -> Result<(Integration, TestReport), Error> {
        let integration = self.get(id).await?;
        let credential = self.credential(&integration).await?;
        let vocabulary = Vocabulary::of(&credential);
        let flavor = integration.flavor();
        let client = self.client(&integration.target, credential);
        let (outcome, features) = match client.verify_access().await {
            Err(e) => (Err(e), None),
            Ok(access) => {
                // verify_access read the repository already.
                let mut answers = vec![(Probe::Repository, Ok(()))];
                for probe in capabilities::probes(flavor).into_iter().filter(|p| *p != Probe::Repository) {
                    answers.push((probe, client.probe(probe).await));
                }
                // The gate creation applies: webhooks may be managed when one is registered.
                let webhooks = answers.iter().find(|(p, _)| *p == Probe::Webhooks).map(|(_, a)| a.clone());
                let outcome = match webhooks {
                    Some(Err(e)) if integration.webhook.is_some() => Err(e),
                    _ => Ok(access),
                };
                (outcome, Some(Features(capabilities::assess(flavor, vocabulary, &answers))))
            }
        };
        let integration = self
            .save_with(id, |integration| match &outcome {
                Ok(_) => {
                    integration.last_error = None;
                    if integration.status == IntegrationStatus::Error {
                        integration.status = IntegrationStatus::Active;
                    }
                }
                Err(e) => note_error(integration, e),
            })
            .await?;
        let report = match outcome {
            Ok(access) => TestReport { ok: true, access: Some(access), reason: None, message: None, features },
            Err(e) => TestReport {
                ok: false,
                access: None,
                reason: Some(e.reason().into()),
                message: Some(e.to_string()),
                features,
            },
        };
        Ok((integration, report))
    }

    /// Turns the registered webhook on or off in Bitbucket; the hook as it is now.
    async fn set_webhook_active(
        &self,
        integration: &Integration,
        active: bool,
    ) -> Result<Option<RegisteredWebhook>, Error> {
        let Some(hook) = integration.webhook.clone() else { return Ok(None) };
        let secret = self.webhook_secrets(integration).await?.current();
        let client = self.client(&integration.target, self.credential(integration).await?);
        client.update_webhook(&hook.id, &self.spec(integration, secret, active)).await?;
        Ok(Some(RegisteredWebhook { active, ..hook }))
    }

    /// Turns the webhook off on the way out of `active`. Bitbucket may refuse (a revoked
    /// credential): the integration changes state anyway — deliveries are answered 410 — and the
    /// failure is kept as its last error.
    async fn leave(
        &self,
        id: &str,
        action: &'static str,
        allowed: impl Fn(IntegrationStatus) -> bool,
        to: IntegrationStatus,
    ) -> Result<Integration, Error> {
        self.exclusive(id, action, || async {
            let integration = self.get(id).await?;
            if !allowed(integration.status) {
                return Err(Error::WrongState { id: id.into(), status: integration.status, action });
            }
            let turned_off = if integration.webhook.as_ref().is_some_and(|h| h.active) {
                self.set_webhook_active(&integration, false).await
            } else {
                Ok(None)
            };
            let failure = match turned_off {
                Ok(_) => None,
                Err(Error::Bitbucket(e)) => Some(e),
                Err(e) => return Err(e),
            };
            self.save_with(id, |integration| {
                if failure.is_none()
                    && let Some(hook) = &mut integration.webhook
                {
                    hook.active = false;
                }
                if let Some(e) = &failure {
                    note_error(integration, e);
                }
                integration.status = to;
            })
            .await
        })
        .await
    }

    pub async fn disconnect(&self, id: &str) -> Result<Integration, Error> {
        let active = |s| matches!(s, IntegrationStatus::Active | IntegrationStatus::Error);
        self.leave(id, "disconnect", active, IntegrationStatus::Inactive).await
    }

    pub async fn archive(&self, id: &str) -> Result<Integration, Error> {
        self.leave(id, "archive", |s| s != IntegrationStatus::Archived, IntegrationStatus::Archived).await
    }

    pub async fn reconnect(&self, id: &str) -> Result<Integration, Error> {
        self.exclusive(id, "reconnect", || async {
            let integration = self.get(id).await?;
            if !matches!(integration.status, IntegrationStatus::Inactive | IntegrationStatus::Error) {
                return Err(Error::WrongState { id: id.into(), status: integration.status, action: "reconnect" });
            }
            let client = self.client(&integration.target, self.credential(&integration).await?);
            let outcome = match self.test(client.as_ref(), integration.webhook.is_some()).await {
                Ok(_) => self.set_webhook_active(&integration, true).await,
                Err(e) => Err(e.into()),
            };
            let outcome = match outcome {
                Ok(hook) => Ok(hook),
                Err(Error::Bitbucket(e)) => Err(e),
                Err(e) => return Err(e),
            };
            self.save_with(id, |integration| match &outcome {
                Ok(hook) => {
                    integration.status = IntegrationStatus::Active;
                    integration.last_error = None;
                    if hook.is_some() {
                        integration.webhook.clone_from(hook);
                    }
                }
                Err(e) => {
                    integration.status = IntegrationStatus::Error;
                    integration.last_error =
                        Some(LastError { reason: e.reason().into(), message: e.to_string(), at: Utc::now() });
                }
            })
            .await
        })
        .await
    }

    /// Unarchiving does not re-enable anything by itself: the integration comes back
    /// `inactive`, and `reconnect` re-tests it and turns its webhook back on.
    pub async fn unarchive(&self, id: &str) -> Result<Integration, Error> {
        self.exclusive(id, "unarchive", || async {
            let integration = self.get(id).await?;
            if integration.status != IntegrationStatus::Archived {
                let status = integration.status;
                return Err(Error::WrongState { id: id.into(), status, action: "unarchive" });
            }
            self.save_with(id, |integration| integration.status = IntegrationStatus::Inactive).await
        })
        .await
    }

    /// A new webhook secret, set in Bitbucket; the previous one stays valid for
    /// [`ROTATION_WINDOW`] so deliveries already signed with it are still accepted. Under the
    /// lifecycle lock: two rotations at once would each keep a secret the other replaced.
    pub async fn rotate_webhook_secret(&self, id: &str) -> Result<Integration, Error> {
        self.exclusive(id, "rotate its webhook secret", || async {
            let integration = self.get(id).await?;
            if integration.status == IntegrationStatus::Archived {
                return Err(Error::WrongState {
                    id: id.into(),
                    status: integration.status,
                    action: "rotate its webhook secret",
                });
            }
            let before = self.webhook_secrets(&integration).await?;
            let next = Secret::generate();
            let rotated = before.rotate(&next, Utc::now() + ROTATION_WINDOW);
            // Accept the new secret before Bitbucket starts signing with it; undo if Bitbucket refuses.
            self.ctx.secrets.put(&integration.webhook_secret_name, &rotated.to_secret()).await?;
            if let Some(hook) = integration.webhook.clone() {
                let client = self.client(&integration.target, self.credential(&integration).await?);
                if let Err(e) = client.update_webhook(&hook.id, &self.spec(&integration, next, hook.active)).await {
                    self.ctx.secrets.put(&integration.webhook_secret_name, &before.to_secret()).await?;
                    return Err(e.into());
                }
            }
            self.save_with(id, |_| {}).await
        })
        .await
    }

    /// Removes the webhook from Bitbucket, schedules the secrets for deletion and deletes the
    /// record; recorded events stay until they expire. With `force`, a Bitbucket failure does
    /// not stop the deletion. The lock it holds stops new commits; one already under way is
    /// waited for, so nothing is committed for the integration once this has answered.
    pub async fn delete(&self, id: &str, force: bool) -> Result<(), Error> {
        self.exclusive(id, DELETING, || async {
            if !crate::backup::commits_finished(self.ctx.store.as_ref(), id, COMMIT_WAIT).await? {
                return Err(Error::Busy { id: id.to_owned(), busy_with: "a backup commit".into() });
            }
            let integration = self.get(id).await?;
            if let Some(hook) = &integration.webhook {
                let removed = async {
                    let client = self.client(&integration.target, self.credential(&integration).await?);
                    client.delete_webhook(&hook.id).await?;
                    Ok::<_, Error>(())
                }
                .await;
                if let Err(e) = removed
                    && !force
                {
                    return Err(e);
                }
            }
            loop {
                let version = self.ctx.get(id).await?.version;
                match INTEGRATIONS.delete(self.ctx.store.as_ref(), "", &[id], Condition::Version(version)).await {
                    Ok(()) => break,
                    // A background note changed it meanwhile: delete what is there now.
                    Err(StoreError::ConditionFailed { .. }) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            self.ctx.secrets.delete(&integration.webhook_secret_name).await?;
            self.ctx.secrets.delete(&integration.credential_secret_name).await?;
            Ok(())
        })
        .await
    }
}

/// `{slug of the name}-{6 hex}`: readable in URLs and logs, unique enough with the condition.
fn new_id(name: &str) -> String {
    let mut slug: String = name
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect::<String>()
        .split('-')
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("-");
    slug.truncate(40);
    let slug = slug.trim_end_matches('-');
    let suffix = hex::encode(rand::random::<[u8; 3]>());
    if slug.is_empty() { format!("int-{suffix}") } else { format!("{slug}-{suffix}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_urls() {
        assert_eq!(
            parse_repository_url(Flavor::Cloud, "https://bitbucket.org/ws/repo/src/main/dir").unwrap(),
            (None, "ws".into(), "repo".into())
        );
        assert_eq!(
            parse_repository_url(Flavor::DataCenter, "https://git.example.com/bb/projects/PRJ/repos/app/browse")
                .unwrap(),
            (Some("https://git.example.com/bb".into()), "PRJ".into(), "app".into())
        );
        assert_eq!(parse_repository_url(Flavor::DataCenter, "https://h/users/jo/repos/dots").unwrap().1, "~jo");
        assert!(parse_repository_url(Flavor::Cloud, "https://github.com/a/b").is_err());
        assert!(parse_repository_url(Flavor::Cloud, "https://bitbucket.org/ws").is_err());
    }

    #[test]
    fn slugs_are_one_plain_path_segment() {
        assert!(slug_ok("demo") && slug_ok("my.repo-1_x~") && slug_ok(".github") && slug_ok("a..b"));
        for bad in ["", ".", "..", "a/b", "a%2Fb", "a b", &"x".repeat(129)] {
            assert!(!slug_ok(bad), "{bad:?}");
        }
    }

    #[test]
    fn base_url_fragment_is_refused() {
        // Found by fuzz/admin_bodies: `#…` was kept, so every API path landed in the fragment.
        for bad in ["http://127.0.0.1/#:7990", "https://git.example.com/ctx#x", "https://git.example.com/#"] {
            assert!(matches!(check_base_url(bad, true), Err(Error::Invalid { field: "base_url", .. })), "{bad}");
        }
        assert_eq!(check_base_url("https://git.example.com/ctx/", true).unwrap(), "https://git.example.com/ctx");
    }

    #[test]
    fn base_urls_and_ids() {
        assert!(check_base_url("https://api.bitbucket.org/2.0/", false).is_ok());
        assert!(check_base_url("http://127.0.0.1:3000/sandbox/bitbucket/2.0", true).is_ok());
        assert!(check_base_url("http://example.com", true).is_err());
        // Inside Lambda, loopback is the Runtime API (127.0.0.1:9001): never a Bitbucket.
        for lambda_loopback in [
            "http://127.0.0.1:9001/2018-06-01",
            "https://localhost/x",
            "http://[::1]:3000",
            "https://127.1:9001",
            "https://2130706433/",
            "https://0.0.0.0/",
            "https://169.254.169.254/latest",
            "https://[::ffff:127.0.0.1]/",
            "https://LOCALHOST./",
            "https://api.localhost/",
        ] {
            assert!(check_base_url(lambda_loopback, false).is_err(), "{lambda_loopback}");
        }
        assert!(check_base_url("https://user:pw@example.com", true).is_err());
        let id = new_id("My Repo!!");
        assert!(id.starts_with("my-repo-") && crate::integration::valid_id(&id), "{id}");
        assert!(new_id("///").starts_with("int-"));
    }
}
