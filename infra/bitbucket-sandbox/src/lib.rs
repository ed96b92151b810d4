//! A stateful, in-memory Bitbucket Cloud (REST 2.0 subset) served over real HTTP: repositories,
//! branches with commits and file trees, hooks, pull requests and build statuses, behind Cloud's
//! credentials and scopes, sending real signed webhooks when state changes. The same repository
//! is also served as Bitbucket Data Center (REST subset) shows it, with its own hooks. It is as
//! strict as the live service where the project knows how the service behaves: Atlassian's
//! OpenAPI descriptions (`../shared/bitbucket-openapi/`), and the live differences cited in
//! `infra/conformance/allowlist.yaml` and `live-rules.yaml`. Tests start it on a free port; the
//! local stack mounts it at `/sandbox/bitbucket`.
//!
//! Routes are relative to the mount point: `/2.0/...` and `/site/oauth2/access_token` as on
//! Cloud, `/rest/api/{1.0,latest}/...` (and `/rest/branch-utils/…`, `/rest/branch-permissions/…`)
//! as on Data Center, and `/_admin/...` (no auth) to drive it and inspect what it saw.
//!
//! # Cloud
//!
//! `user`, `workspaces/{ws}`, the repository; hooks; branches (`q`, `sort`), branch creation and
//! deletion; branch restrictions; `src` (commits by form, files, directory listings, `format=meta`;
//! `src/{branch}/…` is refused when the branch name has a `/`, as live Cloud does: read by commit);
//! `commit/{hash}`, `commits[/{revision}]` (`include`, `exclude`); build statuses (created or
//! replaced by key, read and updated by key); pull requests (12-digit `{hash}` commits, pages of at
//! most 50, `q` in a BBQL subset, `sort`; drafts, and forks whose source repository is another),
//! where a push to an open pull request's source branch sends `pullrequest:updated`, as Bitbucket
//! does. Collections answer with a trailing slash too. Pipelines: `…/pipelines/` (trigger by ref,
//! commit or pull request — `pipeline_pullrequest_target` —, list), `…/pipelines/{uuid}`,
//! `…/{uuid}/stopPipeline`, `…/{uuid}/steps/`, `…/steps/{step}`, `…/test_reports`,
//! `…/test_reports/test_cases` and their `test_case_reasons` (failed cases named by hand), runs
//! driven by hand or on a timer; with a `pull-requests:` pattern set, pull requests get
//! Bitbucket's own runs when they open and whenever their head moves. Webhooks of a key can be
//! dropped (a missed delivery). OAuth: the client-credentials grant
//! (`scope` in the answer, no refresh token).
//!
//! # Credentials and scopes
//!
//! Every Cloud operation requires the scopes its description states: granular ones
//! (`read:repository:bitbucket`…) for API tokens, legacy ones (`repository`…, with the narrative's
//! implications: `pullrequest` gives `repository`) for access tokens and OAuth consumers. A
//! missing scope is a 403 `{"type":"error","error":{"message","detail":{"required","granted"}}}`
//! naming the operation's scopes in the credential's vocabulary.
//!
//! | credential | scopes / permission |
//! |---|---|
//! | [`API_TOKEN_EMAIL`]:[`API_TOKEN`] (Basic) | [`API_TOKEN_SCOPES`]: every granular scope the routes need |
//! | [`NO_ADMIN_API_TOKEN_EMAIL`]:[`NO_ADMIN_API_TOKEN`] (Basic) | the same but `admin:repository:bitbucket` |
//! | [`ACCESS_TOKEN`] (Bearer) | [`ACCESS_TOKEN_SCOPES`]: every legacy scope the routes need |
//! | [`READONLY_ACCESS_TOKEN`] (Bearer) | [`READONLY_ACCESS_TOKEN_SCOPES`]: `account`, `repository` |
//! | [`NO_PULLREQUEST_ACCESS_TOKEN`] (Bearer) | [`ACCESS_TOKEN_SCOPES`] but `pullrequest` |
//! | [`OAUTH_CONSUMER_KEY`]/[`OAUTH_CONSUMER_SECRET`] | tokens with [`ACCESS_TOKEN_SCOPES`] |
//! | [`APP_PASSWORD_USER`]:[`APP_PASSWORD`] | always 401 (removed 2026-07-28) |
//! | [`DC_HTTP_TOKEN`] (Bearer, `/rest`) | `REPO_ADMIN` |
//! | [`DC_WRITE_TOKEN`] (Bearer, `/rest`) | `REPO_WRITE` |
//! | [`DC_READ_TOKEN`] (Bearer, `/rest`) | `REPO_READ` |
//!
//! [`Sandbox::accept_credential_with`] adds a credential ([`ExtraCredential`]) with any scope list
//! or Data Center permission ([`Grant`]); [`Sandbox::accept_credential`] with everything.
//!
//! # Data Center
//!
//! The repository, `default-branch` and `branches/default`; webhooks; build statuses
//! (`POST`/`GET …/commits/{commitId}/builds`, `REPO_READ`, one per key); `PUT …/browse/{path}`
//! (multipart commit of one file), `GET …/raw/{path}?at=`, `GET …/commits/{id}`; `GET …/branches`
//! (filterText, orderBy, details) and branch creation (`POST …/branches`, `POST
//! /rest/branch-utils/…/branches`); `DELETE /rest/branch-utils/…/branches` (204 also for a branch
//! that is not there, 400 for the default branch or an `endPoint` it is not at, 401 for a branch
//! permission); `GET …/pull-requests`; `GET /rest/branch-permissions/{2.0,latest}/…/restrictions`.
//! Each route checks the permission its description names; a missing one is 401 with
//! `AuthorisationException` and `X-AUSERNAME` (a refused token: 401
//! `IncorrectPasswordAuthenticationException`, no `X-AUSERNAME`). Every error, unknown routes and
//! methods included, is `{"errors":[{"context","message","exceptionName"}]}`.
//!
//! Branch restrictions are one list for both flavors (Cloud `branch-restrictions`, Data Center ref
//! restrictions, `POST /_admin/branch-restrictions`); a `delete` restriction makes both refuse to
//! delete the branches it matches (Cloud 403, Data Center 401).
//!
//! # The traffic log
//!
//! With [`TRAFFIC_LOG_VARIABLE`] (`SANDBOX_TRAFFIC_LOG`) set to a file path (or
//! [`Sandbox::log_traffic_to`]), every exchange but `/_admin` is appended to it as one JSON line
//! in `infra/conformance/check.py`'s format, secrets redacted; [`PROBE_HEADER`] marks a deliberate
//! probe, [`TEST_HEADER`] labels the line. One `write` per line with `O_APPEND`: many processes can
//! share the file.

mod admin;
mod cloud;
mod datacenter;
mod error;
mod faults;
mod form;
mod paging;
mod rate_limit;
mod state;
mod traffic;
mod webhooks;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::http::{StatusCode, Uri};
use axum::response::IntoResponse;
use tokio::task::JoinHandle;

pub use cloud::pipelines::{FailedTest, TestCounts};
pub use faults::{Fault, FaultKind, RecordedRequest};
pub use traffic::{PROBE_HEADER, TEST_HEADER, TRAFFIC_LOG_VARIABLE};
pub use webhooks::SentWebhook;

use cloud::auth::OAuth;
use datacenter::state::DcHook;
use error::Error;
pub use state::PullRequestOptions;
use state::{DEFAULT_AUTHOR, Event, NewCommit, PrState, State};

pub const WORKSPACE: &str = "sandbox";
pub const REPOSITORY: &str = "demo";

/// Every granular scope the served operations need: what [`API_TOKEN`] and accepted API tokens
/// hold. The project's README list lacks `admin:repository:bitbucket` (branch restrictions),
/// `delete:webhook:bitbucket` (deleting a hook) and `read:workspace:bitbucket` (`/workspaces/{ws}`).
pub const API_TOKEN_SCOPES: &[&str] = &[
    "read:user:bitbucket",
    "read:workspace:bitbucket",
    "read:repository:bitbucket",
    "write:repository:bitbucket",
    "admin:repository:bitbucket",
    "read:pullrequest:bitbucket",
    "read:webhook:bitbucket",
    "write:webhook:bitbucket",
    "delete:webhook:bitbucket",
    "read:pipeline:bitbucket",
    "write:pipeline:bitbucket",
];
/// Every legacy scope the served operations need: what [`ACCESS_TOKEN`], the OAuth consumer and
/// accepted access tokens and consumers hold.
pub const ACCESS_TOKEN_SCOPES: &[&str] = &[
    "account",
    "repository",
    "repository:write",
    "repository:admin",
    "pullrequest",
    "webhook",
    "pipeline",
    "pipeline:write",
];
/// What [`READONLY_ACCESS_TOKEN`] holds.
pub const READONLY_ACCESS_TOKEN_SCOPES: &[&str] = &["account", "repository"];

/// `Basic base64(API_TOKEN_EMAIL:API_TOKEN)`: [`API_TOKEN_SCOPES`].
pub const API_TOKEN_EMAIL: &str = "dev@sandbox.test";
pub const API_TOKEN: &str = "sandbox-token";
/// `Basic base64(NO_ADMIN_API_TOKEN_EMAIL:NO_ADMIN_API_TOKEN)`: [`API_TOKEN_SCOPES`] but
/// `admin:repository:bitbucket`, so listing branch restrictions answers 403.
pub const NO_ADMIN_API_TOKEN_EMAIL: &str = "no-admin@sandbox.test";
pub const NO_ADMIN_API_TOKEN: &str = "sandbox-token-no-admin";
/// `Bearer`: [`ACCESS_TOKEN_SCOPES`].
pub const ACCESS_TOKEN: &str = "sandbox-access-token";
/// `Bearer`: [`READONLY_ACCESS_TOKEN_SCOPES`] (`account`, `repository`).
pub const READONLY_ACCESS_TOKEN: &str = "sandbox-readonly-token";
/// `Bearer`: [`ACCESS_TOKEN_SCOPES`] but `pullrequest`, so listing pull requests answers 403.
pub const NO_PULLREQUEST_ACCESS_TOKEN: &str = "sandbox-no-pullrequest-token";
/// A client-credentials consumer whose tokens hold [`ACCESS_TOKEN_SCOPES`].
pub const OAUTH_CONSUMER_KEY: &str = "sandbox-consumer-key";
pub const OAUTH_CONSUMER_SECRET: &str = "sandbox-consumer-secret";
pub const APP_PASSWORD_USER: &str = "sandbox-dev";
/// Always refused with 401: Cloud removed app passwords on 2026-07-28.
pub const APP_PASSWORD: &str = "sandbox-app-password";
/// The Data Center project holding `REPOSITORY`: `SANDBOX/demo` is `sandbox/demo`.
pub const DC_PROJECT: &str = "SANDBOX";
/// Data Center HTTP access tokens (`Bearer`), the only credentials the `/rest` routes accept:
/// [`DcPermission::RepoAdmin`] on `SANDBOX/demo` (every route)…
pub const DC_HTTP_TOKEN: &str = "sandbox-dc-token";
/// …[`DcPermission::RepoWrite`] (no hooks, no branch restrictions: 401)…
pub const DC_WRITE_TOKEN: &str = "sandbox-dc-write-token";
/// …and [`DcPermission::RepoRead`] (no file edits, branch changes, hooks or restrictions: 401).
pub const DC_READ_TOKEN: &str = "sandbox-dc-read-token";

/// A credential accepted besides the constants above, with a [`Grant`]: tests that look for
/// secret values everywhere use random ones, tests of missing scopes choose the scopes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExtraCredential {
    /// `Basic base64(email:token)`.
    ApiToken { email: String, token: String },
    /// `Bearer`.
    AccessToken(String),
    /// A client-credentials consumer.
    OauthConsumer { key: String, secret: String },
    /// Data Center `Bearer`.
    DcHttpToken(String),
}

/// What an [`ExtraCredential`] may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant {
    /// Everything its kind can hold: [`API_TOKEN_SCOPES`] for an API token,
    /// [`ACCESS_TOKEN_SCOPES`] for an access token or consumer, [`DcPermission::RepoAdmin`] for
    /// a Data Center token.
    Everything,
    /// Exactly these Cloud scopes: granular (`read:repository:bitbucket`…) for an API token,
    /// legacy (`repository`…) for an access token or consumer.
    Scopes(Vec<String>),
    /// A Data Center token's permission on `SANDBOX/demo`.
    Permission(DcPermission),
}

impl Grant {
    /// `Grant::Scopes` from string slices.
    pub fn scopes(scopes: &[&str]) -> Self {
        Grant::Scopes(scopes.iter().map(|s| s.to_string()).collect())
    }
}

/// A Data Center repository permission, weakest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum DcPermission {
    RepoRead,
    RepoWrite,
    RepoAdmin,
}

impl DcPermission {
    /// `REPO_READ`, `REPO_WRITE`, `REPO_ADMIN`, as Data Center names them.
    pub fn as_str(self) -> &'static str {
        match self {
            DcPermission::RepoRead => "REPO_READ",
            DcPermission::RepoWrite => "REPO_WRITE",
            DcPermission::RepoAdmin => "REPO_ADMIN",
        }
    }
}

/// The sandbox; clones share one state.
#[derive(Clone)]
pub struct Sandbox {
    inner: Arc<Inner>,
}

struct Inner {
    public_base: String,
    state: Mutex<State>,
    /// Pipelines runs; locked before `state` whenever both are.
    pipelines: Mutex<cloud::pipelines::Pipelines>,
    oauth: Mutex<OAuth>,
    extra_credentials: Mutex<Vec<(ExtraCredential, Grant)>>,
    faults: Mutex<Vec<Fault>>,
    /// Requests per credential, and Cloud's rate limit once one is set.
    rate_limit: Mutex<rate_limit::Limiter>,
    requests: Mutex<Vec<RecordedRequest>>,
    /// The traffic log's file, opened for appending.
    traffic: Mutex<Option<std::fs::File>>,
    sent: Mutex<Vec<SentWebhook>>,
    /// Webhooks not to send: (event key, how many more).
    dropped: Mutex<Vec<(String, u32)>>,
    deliveries: Mutex<Vec<JoinHandle<()>>>,
    src_commits: AtomicUsize,
    client: reqwest::Client,
}

/// An unknown route (404) or method (405), in the envelope of the API the path belongs to.
fn unrouted(uri: &Uri, status: StatusCode) -> axum::response::Response {
    let message = if status == StatusCode::NOT_FOUND { "Resource not found" } else { "Method not allowed" };
    if uri.path().starts_with("/rest/") {
        let message = format!("{message}: {}", uri.path());
        return error::DcError::from(Error::new(status, message)).into_response();
    }
    Error::new(status, message).into_response()
}

/// Locks, ignoring poisoning: a panicking test thread must not take the sandbox down with it.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Sandbox {
    /// `public_base` is the absolute URL the sandbox is mounted at, e.g.
    /// `http://127.0.0.1:3000/sandbox/bitbucket` (used for `links` and `next` URLs). Seeds
    /// `sandbox/demo` (`SANDBOX/demo` on Data Center) with branches `main` (a README.md),
    /// `develop` and `feature/login`.
    pub fn new(public_base: impl Into<String>) -> Self {
        let public_base = public_base.into().trim_end_matches('/').to_owned();
        let traffic = std::env::var_os(traffic::TRAFFIC_LOG_VARIABLE).filter(|p| !p.is_empty()).map(|path| {
            traffic::open(std::path::Path::new(&path)).unwrap_or_else(|e| {
                panic!(
                    "{}={}: cannot open it for appending: {e}",
                    traffic::TRAFFIC_LOG_VARIABLE,
                    path.to_string_lossy()
                )
            })
        });
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("the webhook HTTP client builds with static settings");
        Sandbox {
            inner: Arc::new(Inner {
                state: Mutex::new(State::new(public_base.clone())),
                public_base,
                pipelines: Mutex::default(),
                oauth: Mutex::default(),
                extra_credentials: Mutex::default(),
                faults: Mutex::default(),
                rate_limit: Mutex::default(),
                requests: Mutex::default(),
                traffic: Mutex::new(traffic),
                sent: Mutex::default(),
                dropped: Mutex::default(),
                deliveries: Mutex::default(),
                src_commits: AtomicUsize::new(0),
                client,
            }),
        }
    }

    /// Routes relative to the mount point: `/2.0/...`, `/site/oauth2/access_token`,
    /// `/rest/api/latest/...`, `/_admin/...`.
    pub fn router(&self) -> Router {
        Router::new()
            .merge(cloud::routes::routes())
            .merge(datacenter::routes::routes(self.clone()))
            .merge(admin::routes())
            .merge(cloud::pipelines::routes())
            .fallback(|uri: Uri| async move { unrouted(&uri, StatusCode::NOT_FOUND) })
            .method_not_allowed_fallback(|uri: Uri| async move { unrouted(&uri, StatusCode::METHOD_NOT_ALLOWED) })
            .layer(axum::middleware::from_fn_with_state(self.clone(), faults::middleware))
            .with_state(self.clone())
    }

    /// Lifetime of OAuth tokens issued from now on (default 7200 s).
    pub fn set_oauth_token_lifetime(&self, secs: u64) {
        self.oauth().lifetime = Duration::from_secs(secs);
    }

    /// The sandbox clock (wall clock plus whatever [`Sandbox::advance_clock`] added).
    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.state().now()
    }

    /// Moves the sandbox clock forward: commits, pull requests and statuses made from now on
    /// carry the later time, so tests can age branches without waiting.
    pub fn advance_clock(&self, by: chrono::Duration) {
        self.state().advance_clock(by);
    }

    /// Accepts `credential` from now on with everything its kind can hold ([`Grant::Everything`]).
    pub fn accept_credential(&self, credential: ExtraCredential) {
        self.accept_credential_with(credential, Grant::Everything);
    }

    /// Accepts `credential` from now on with `grant` (registering it again replaces its grant).
    /// Panics on a grant its kind cannot hold: scopes for a Data Center token, a permission for
    /// a Cloud credential.
    pub fn accept_credential_with(&self, credential: ExtraCredential, grant: Grant) {
        let data_center = matches!(credential, ExtraCredential::DcHttpToken(_));
        match &grant {
            Grant::Scopes(_) if data_center => panic!("a Data Center token has a permission, not scopes"),
            Grant::Permission(_) if !data_center => panic!("a Cloud credential has scopes, not a permission"),
            _ => {}
        }
        let mut accepted = lock(&self.inner.extra_credentials);
        accepted.retain(|(c, _)| *c != credential);
        accepted.push((credential, grant));
    }

    /// Every OAuth access token issued and not yet swept (expired ones go at the next grant).
    pub fn issued_oauth_tokens(&self) -> Vec<String> {
        self.oauth().tokens.keys().cloned().collect()
    }

    pub fn inject_fault(&self, fault: Fault) {
        // `times: Some(0)` affects no request at all.
        if fault.times != Some(0) {
            lock(&self.inner.faults).push(fault);
        }
    }

    pub fn clear_faults(&self) {
        lock(&self.inner.faults).clear();
    }

    /// Limits every credential to `per_hour` requests over a rolling hour (the sandbox clock),
    /// announcing it in `X-RateLimit-*` headers as Cloud does; `None` lifts it.
    pub fn set_rate_limit(&self, per_hour: Option<u64>) {
        lock(&self.inner.rate_limit).per_hour = per_hour;
    }

    /// API requests per credential (the user of Basic credentials, `bearer:…` for a token's
    /// digest) since the start or the last [`Sandbox::reset_rate_counts`].
    pub fn requests_per_credential(&self) -> std::collections::HashMap<String, u64> {
        lock(&self.inner.rate_limit).totals()
    }

    pub fn reset_rate_counts(&self) {
        lock(&self.inner.rate_limit).reset();
    }

    pub(crate) fn count_request(&self, headers: &axum::http::HeaderMap) -> Option<rate_limit::Verdict> {
        let credential = rate_limit::credential_of(headers)?;
        let now = self.now();
        Some(lock(&self.inner.rate_limit).count(&credential, now))
    }

    /// Every `/2.0`, `/rest` and `/site` request (not `/_admin`), in order, with its final status.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.inner.requests).clone()
    }

    /// Appends every exchange from now on to `path`, as `SANDBOX_TRAFFIC_LOG` does (see the crate
    /// documentation); replaces the file the variable named.
    pub fn log_traffic_to(&self, path: impl AsRef<std::path::Path>) -> std::io::Result<()> {
        *lock(&self.inner.traffic) = Some(traffic::open(path.as_ref())?);
        Ok(())
    }

    pub fn clear_requests(&self) {
        lock(&self.inner.requests).clear();
    }

    /// The hooks of `sandbox/demo`, as the API returns them.
    pub fn hooks(&self) -> Vec<serde_json::Value> {
        let state = self.state();
        state.hooks.iter().map(|h| state.hook_json(h)).collect()
    }

    /// The Data Center hooks of `SANDBOX/demo`, as the API returns them.
    pub fn dc_hooks(&self) -> Vec<serde_json::Value> {
        self.state().dc_hooks.iter().map(DcHook::json).collect()
    }

    /// Every webhook POST attempt made so far.
    pub fn sent_webhooks(&self) -> Vec<SentWebhook> {
        lock(&self.inner.sent).clone()
    }

    /// Commits created through Cloud's `POST …/src` and Data Center's `PUT …/browse/{path}`
    /// (not through [`Sandbox::push`] or `/_admin`).
    pub fn commit_count(&self) -> usize {
        self.inner.src_commits.load(Ordering::SeqCst)
    }

    /// A new commit on `branch` (created from `main` if missing), emitting `repo:push`
    /// (`repo:refs_changed` to Data Center hooks, as do the branch changes below).
    /// Panics on an invalid branch name or file path.
    pub async fn push(&self, branch: &str, files: &[(&str, &str)], message: &str) -> String {
        let commit = NewCommit {
            branch: branch.to_owned(),
            message: message.to_owned(),
            author: DEFAULT_AUTHOR.to_owned(),
            parents: None,
            files: files.iter().map(|(path, content)| (path.to_string(), content.as_bytes().to_vec())).collect(),
            deletes: Vec::new(),
        };
        self.apply(|s| s.commit_files(commit)).unwrap_or_else(|e| panic!("sandbox push failed: {}", e.message))
    }

    /// Creates `name` at `from` (a branch or commit), emitting `repo:push` (created); returns its tip.
    pub async fn create_branch(&self, name: &str, from: &str) -> Result<String, String> {
        self.apply(|s| s.create_branch(name, from)).map_err(|e| e.message)
    }

    /// Deletes `name`, emitting `repo:push` (closed).
    pub async fn delete_branch(&self, name: &str) -> Result<(), String> {
        self.apply(|s| s.delete_branch(name).map(|events| ((), events))).map_err(|e| e.message)
    }

    /// Creates every branch of `names` at `from` (a branch or commit) WITHOUT any webhook, as if
    /// the webhooks had been missed; all or nothing.
    pub fn seed_branches(&self, names: &[String], from: &str) -> Result<(), String> {
        self.state().seed_branches(names, from).map_err(|e| e.message)
    }

    /// Deletes `name` WITHOUT any webhook (a missed deletion). Ignores branch restrictions, as
    /// [`Sandbox::delete_branch`] does.
    pub fn delete_branch_quietly(&self, name: &str) -> Result<(), String> {
        self.state().delete_branch(name).map(drop).map_err(|e| e.message)
    }

    /// Restricts the branches `pattern` matches (`*` matches any run of characters, `/`
    /// included; otherwise an exact name) with a Cloud `kind` (`delete`, `force`, `push`, …);
    /// returns its id. Shown by both flavors; only the API's deletions obey `delete` ones.
    /// Panics on an unknown kind or an empty pattern.
    pub fn add_branch_restriction(&self, kind: &str, pattern: &str) -> u64 {
        self.state()
            .add_branch_restriction(kind, pattern)
            .unwrap_or_else(|e| panic!("sandbox branch restriction failed: {}", e.message))
    }

    /// Opens a pull request, emitting `pullrequest:created` (`pr:opened`). Panics when a branch
    /// is missing, the branches are the same, or the title is empty.
    pub async fn open_pull_request(&self, source: &str, destination: &str, title: &str) -> u64 {
        self.open_pull_request_with(source, destination, title, PullRequestOptions::default()).await
    }

    /// [`Sandbox::open_pull_request`] as a draft, or from a fork.
    pub async fn open_pull_request_with(
        &self,
        source: &str,
        destination: &str,
        title: &str,
        options: PullRequestOptions,
    ) -> u64 {
        self.apply(|s| s.open_pull_request(source, destination, title, options))
            .unwrap_or_else(|e| panic!("sandbox pull request failed: {}", e.message))
    }

    /// Marks a draft ready for review, emitting `pullrequest:updated` (`pr:from_ref_updated`).
    pub async fn mark_pull_request_ready(&self, id: u64) -> Result<(), String> {
        self.apply(|s| s.mark_ready(id).map(|events| ((), events))).map_err(|e| e.message)
    }

    /// The next `times` webhooks of `event_key` (both flavors) are not sent at all.
    pub fn drop_webhooks(&self, event_key: &str, times: u32) {
        lock(&self.inner.dropped).push((event_key.to_owned(), times));
    }

    /// The commit `branch` points at.
    pub fn branch_tip(&self, branch: &str) -> Option<String> {
        self.state().tip(branch).map(str::to_owned)
    }

    /// A commit's Cloud commit statuses, as `GET …/commit/{hash}/statuses` shows them.
    pub fn commit_statuses(&self, rev: &str) -> Vec<serde_json::Value> {
        self.state().statuses_json(rev).unwrap_or_default()
    }

    /// A commit's Data Center build statuses, as `GET …/commits/{id}/builds?key=` shows each.
    pub fn build_statuses(&self, rev: &str) -> Vec<serde_json::Value> {
        self.state().dc_builds_of(rev)
    }

    /// Emits `pullrequest:updated` (`pr:from_ref_updated`), the head being the source branch's
    /// current tip.
    pub async fn update_pull_request(&self, id: u64, title: Option<&str>) -> Result<(), String> {
        self.apply(|s| s.update_pull_request(id, title).map(|events| ((), events))).map_err(|e| e.message)
    }

    /// Marks the pull request MERGED, emitting `pullrequest:fulfilled` (`pr:merged`).
    pub async fn merge_pull_request(&self, id: u64) -> Result<(), String> {
        self.apply(|s| s.close_pull_request(id, PrState::Merged).map(|events| ((), events))).map_err(|e| e.message)
    }

    /// Marks the pull request DECLINED, emitting `pullrequest:rejected` (`pr:declined`).
    pub async fn decline_pull_request(&self, id: u64) -> Result<(), String> {
        self.apply(|s| s.close_pull_request(id, PrState::Declined).map(|events| ((), events))).map_err(|e| e.message)
    }

    /// Waits until every webhook send started so far has finished, retries included.
    pub async fn settle(&self) {
        loop {
            let pending = std::mem::take(&mut *lock(&self.inner.deliveries));
            if pending.is_empty() {
                return;
            }
            for task in pending {
                let _ = task.await;
            }
        }
    }

    // ---- crate internals ----------------------------------------------------------------------

    /// Whether the event's webhooks are to be dropped (counting it).
    fn dropped(&self, key: &str) -> bool {
        let mut dropped = lock(&self.inner.dropped);
        let Some(entry) = dropped.iter_mut().find(|(k, n)| k == key && *n > 0) else { return false };
        entry.1 -= 1;
        true
    }

    pub(crate) fn public_base(&self) -> &str {
        &self.inner.public_base
    }

    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.inner.state)
    }

    pub(crate) fn oauth(&self) -> MutexGuard<'_, OAuth> {
        lock(&self.inner.oauth)
    }

    /// The grant of an accepted extra credential.
    pub(crate) fn grant_of(&self, credential: &ExtraCredential) -> Option<Grant> {
        lock(&self.inner.extra_credentials).iter().find(|(c, _)| c == credential).map(|(_, g)| g.clone())
    }

    pub(crate) fn faults(&self) -> MutexGuard<'_, Vec<Fault>> {
        lock(&self.inner.faults)
    }

    pub(crate) fn record(&self, request: RecordedRequest) {
        lock(&self.inner.requests).push(request);
    }

    pub(crate) fn logs_traffic(&self) -> bool {
        lock(&self.inner.traffic).is_some()
    }

    pub(crate) fn log_traffic(&self, line: &serde_json::Value) {
        if let Some(file) = lock(&self.inner.traffic).as_mut() {
            traffic::append(file, line);
        }
    }

    pub(crate) fn count_src_commit(&self) {
        self.inner.src_commits.fetch_add(1, Ordering::SeqCst);
    }

    /// Runs a mutation, then sends the webhooks it caused. The hooks are chosen under the same
    /// lock as the change, so a hook sees exactly the events after its creation.
    pub(crate) fn apply<T>(
        &self,
        change: impl FnOnce(&mut State) -> Result<(T, Vec<Event>), Error>,
    ) -> Result<T, Error> {
        let (out, deliveries, events) = {
            let mut state = self.state();
            let (out, events) = change(&mut state)?;
            let deliveries: Vec<_> =
                events.iter().filter(|e| !self.dropped(e.key)).flat_map(|e| state.deliveries(e)).collect();
            (out, deliveries, events)
        };
        // Bitbucket's own `pull-requests:` runs start whether or not a webhook is delivered.
        self.pull_request_pipelines(&events);
        let mut tasks = lock(&self.inner.deliveries);
        tasks.retain(|t| !t.is_finished());
        for delivery in deliveries {
            let sandbox = self.clone();
            tasks.push(tokio::spawn(async move {
                let record = |sent| lock(&sandbox.inner.sent).push(sent);
                webhooks::deliver(&sandbox.inner.client, delivery, record).await;
            }));
        }
        Ok(out)
    }
}
