//! The Bitbucket Data Center (Server) REST subset under `/rest/api/{1.0,latest}` (and the
//! `branch-utils` and `branch-permissions` plugins), over the same repository as the Cloud routes,
//! seen as `SANDBOX/demo`: only an HTTP access token ([`crate::DC_HTTP_TOKEN`] and its reduced
//! siblings, or an accepted [`crate::ExtraCredential`]) gets in, and each route checks the
//! permission its operation's description names (see [`super::auth`]).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::Utc;
use serde::Deserialize;
use serde_json::Value;

use super::auth::{DcCaller, authenticate};
use crate::cloud::routes::{check_events, check_url};
use crate::datacenter::state::{DC_HOOK_EVENTS, DcHook, default_branch_json};
use crate::error::{DcError, DcPath, Error, parse_json};
use crate::paging::dc_paginate;
use crate::{DC_PROJECT, DcPermission, REPOSITORY, Sandbox};

mod content;
mod refs;

type Result<T> = std::result::Result<T, DcError>;
type RepoPath = DcPath<(String, String)>;
type HookPath = DcPath<(String, String, String)>;

/// The versions every plugin is served under: Data Center serves `latest` as an alias of the
/// current version, and most clients (and the description's own narrative) say `1.0`.
pub(crate) const API_VERSIONS: [&str; 2] = ["latest", "1.0"];

/// `/rest/api/{version}/projects/{project}/repos/{slug}{rest}`.
pub(crate) fn repo_path(version: &str, rest: &str) -> String {
    format!("/rest/api/{version}/projects/{{project}}/repos/{{slug}}{rest}")
}

pub fn routes(sandbox: Sandbox) -> Router<Sandbox> {
    let mut router = Router::new();
    for version in API_VERSIONS {
        let repo = |rest: &str| repo_path(version, rest);
        router = router
            .route(&repo(""), get(repository))
            .route(&repo("/default-branch"), get(default_branch))
            .route(&repo("/webhooks"), get(list_hooks).post(create_hook))
            .route(&repo("/webhooks/{id}"), get(get_hook).put(update_hook).delete(delete_hook))
            .route(&repo("/commits/{commit}/builds"), get(get_build).post(set_build));
    }
    // File content, branches, pull requests, `branch-utils` and `branch-permissions`: all behind
    // the same token check.
    router
        .merge(content::routes())
        .merge(refs::routes())
        .route_layer(middleware::from_fn_with_state(sandbox, authenticate))
}

/// [`Sandbox::apply`] for changes that fail in Data Center's shape (keeping the exception name).
fn apply_dc<T>(
    sandbox: &Sandbox,
    change: impl FnOnce(&mut crate::state::State) -> Result<(T, Vec<crate::state::Event>)>,
) -> Result<T> {
    let mut failure = None;
    let applied = sandbox.apply(|state| {
        change(state).map_err(|e| {
            let error = e.error.clone();
            failure = Some(e);
            error
        })
    });
    applied.map_err(|error| failure.take().unwrap_or_else(|| error.into()))
}

/// What Data Center names a repository that is not there.
const NO_SUCH_REPOSITORY: &str = "com.atlassian.bitbucket.repository.NoSuchRepositoryException";

fn check_repo(project: &str, slug: &str) -> Result<()> {
    if project.eq_ignore_ascii_case(DC_PROJECT) && slug.eq_ignore_ascii_case(REPOSITORY) {
        Ok(())
    } else {
        let error = Error::not_found(format!("Repository {project}/{slug} does not exist."));
        Err(DcError::with_exception(error, NO_SUCH_REPOSITORY))
    }
}

/// The permission first (an unknown repository is no less forbidden), then the repository.
fn check(caller: DcCaller, needed: DcPermission, project: &str, slug: &str) -> Result<()> {
    caller.require(needed)?;
    check_repo(project, slug)
}

async fn repository(State(sandbox): State<Sandbox>, caller: DcCaller, DcPath((p, s)): RepoPath) -> Result<Json<Value>> {
    check(caller, DcPermission::RepoRead, &p, &s)?;
    Ok(Json(sandbox.state().dc_repository_json()))
}

type BuildPath = DcPath<(String, String, String)>;

/// `GET …/commits/{commitId}/builds?key=`: one build status (REPO_READ).
async fn get_build(
    State(sandbox): State<Sandbox>,
    caller: DcCaller,
    DcPath((p, s, commit)): BuildPath,
    uri: Uri,
) -> Result<Json<Value>> {
    check(caller, DcPermission::RepoRead, &p, &s)?;
    let key = crate::paging::param(uri.query().unwrap_or_default(), "key")
        .ok_or_else(|| DcError::from(Error::bad_request("key: the build status key is required")))?;
    let build = sandbox.state().dc_build(&commit, &key);
    build.map(Json).ok_or_else(|| Error::not_found(format!("No build status {key} on commit {commit}")).into())
}

/// `POST …/commits/{commitId}/builds`: stores a build status (REPO_READ, as described), 204.
async fn set_build(
    State(sandbox): State<Sandbox>,
    caller: DcCaller,
    DcPath((p, s, commit)): BuildPath,
    body: Bytes,
) -> Result<StatusCode> {
    check(caller, DcPermission::RepoRead, &p, &s)?;
    let input: crate::datacenter::state::DcBuildInput = parse_json(&body)?;
    sandbox.state().set_dc_build(&commit, input)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn default_branch(caller: DcCaller, DcPath((p, s)): RepoPath) -> Result<Json<Value>> {
    check(caller, DcPermission::RepoRead, &p, &s)?;
    Ok(Json(default_branch_json()))
}

// ---- webhooks -------------------------------------------------------------------------------

#[derive(Deserialize)]
struct HookBody {
    name: Option<String>,
    url: Option<String>,
    active: Option<bool>,
    events: Option<Vec<String>>,
    configuration: Option<Configuration>,
}

#[derive(Deserialize)]
struct Configuration {
    /// `""` removes the secret.
    secret: Option<String>,
}

impl HookBody {
    fn secret(&self) -> Option<Option<String>> {
        let secret = self.configuration.as_ref()?.secret.clone()?;
        Some(Some(secret).filter(|s| !s.is_empty()))
    }
}

fn check_name(name: String) -> Result<String> {
    if name.trim().is_empty() {
        return Err(Error::bad_request("name: a webhook needs a name").into());
    }
    Ok(name)
}

fn hook_not_found(id: &str) -> DcError {
    let error = Error::not_found(format!("Webhook {id} does not exist."));
    DcError::with_exception(error, "com.atlassian.bitbucket.webhook.NoSuchWebhookException")
}

async fn list_hooks(
    State(sandbox): State<Sandbox>,
    caller: DcCaller,
    DcPath((p, s)): RepoPath,
    uri: Uri,
) -> Result<Json<Value>> {
    check(caller, DcPermission::RepoAdmin, &p, &s)?;
    Ok(Json(dc_paginate(sandbox.dc_hooks(), uri.query().unwrap_or_default())?))
}

async fn create_hook(
    State(sandbox): State<Sandbox>,
    caller: DcCaller,
    DcPath((p, s)): RepoPath,
    body: Bytes,
) -> Result<Response> {
    check(caller, DcPermission::RepoAdmin, &p, &s)?;
    let body: HookBody = parse_json(&body)?;
    let now = Utc::now();
    let hook = DcHook {
        id: 0,
        secret: body.secret().flatten(),
        name: check_name(body.name.unwrap_or_default())?,
        url: check_url(body.url.as_deref().unwrap_or_default())?,
        active: body.active.unwrap_or(true),
        events: check_events(body.events.unwrap_or_default(), DC_HOOK_EVENTS)?,
        created: now,
        updated: now,
    };
    let json = sandbox.state().add_dc_hook(hook);
    Ok((StatusCode::CREATED, Json(json)).into_response())
}

async fn get_hook(
    State(sandbox): State<Sandbox>,
    caller: DcCaller,
    DcPath((p, s, id)): HookPath,
) -> Result<Json<Value>> {
    check(caller, DcPermission::RepoAdmin, &p, &s)?;
    let state = sandbox.state();
    let index = state.dc_hook_index(&id).ok_or_else(|| hook_not_found(&id))?;
    Ok(Json(state.dc_hooks[index].json()))
}

/// Replaces the fields the body gives; the secret only when `configuration.secret` is given.
async fn update_hook(
    State(sandbox): State<Sandbox>,
    caller: DcCaller,
    DcPath((p, s, id)): HookPath,
    body: Bytes,
) -> Result<Json<Value>> {
    check(caller, DcPermission::RepoAdmin, &p, &s)?;
    let body: HookBody = parse_json(&body)?;
    // Validate everything before changing anything.
    let secret = body.secret();
    let name = body.name.map(check_name).transpose()?;
    let url = body.url.as_deref().map(check_url).transpose()?;
    let events = body.events.map(|e| check_events(e, DC_HOOK_EVENTS)).transpose()?;
    let mut state = sandbox.state();
    let index = state.dc_hook_index(&id).ok_or_else(|| hook_not_found(&id))?;
    let hook = &mut state.dc_hooks[index];
    if let Some(name) = name {
        hook.name = name;
    }
    if let Some(url) = url {
        hook.url = url;
    }
    if let Some(events) = events {
        hook.events = events;
    }
    if let Some(active) = body.active {
        hook.active = active;
    }
    if let Some(secret) = secret {
        hook.secret = secret;
    }
    hook.updated = Utc::now();
    Ok(Json(hook.json()))
}

async fn delete_hook(
    State(sandbox): State<Sandbox>,
    caller: DcCaller,
    DcPath((p, s, id)): HookPath,
) -> Result<StatusCode> {
    check(caller, DcPermission::RepoAdmin, &p, &s)?;
    let mut state = sandbox.state();
    let index = state.dc_hook_index(&id).ok_or_else(|| hook_not_found(&id))?;
    state.dc_hooks.remove(index);
    Ok(StatusCode::NO_CONTENT)
}
