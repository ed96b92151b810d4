//! The Bitbucket Data Center (Server) REST subset under `/rest/api/latest`, over the same
//! repository as the Cloud routes, seen as `SANDBOX/demo`: only `Bearer DC_HTTP_TOKEN` (or an
//! accepted [`crate::ExtraCredential`]) gets in.

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::Utc;
use serde::Deserialize;
use serde_json::Value;

use crate::cloud::routes::{check_events, check_url};
use crate::datacenter::state::{DC_HOOK_EVENTS, DC_USER, DcHook, default_branch_json};
use crate::error::{DcError, Error, PathParams, parse_json};
use crate::paging::dc_paginate;
use crate::{DC_HTTP_TOKEN, DC_PROJECT, ExtraCredential, REPOSITORY, Sandbox};

mod content;
mod refs;

type Result<T> = std::result::Result<T, DcError>;
type RepoPath = PathParams<(String, String)>;
type HookPath = PathParams<(String, String, String)>;

pub fn routes(sandbox: Sandbox) -> Router<Sandbox> {
    let repo = |rest: &str| format!("/rest/api/latest/projects/{{project}}/repos/{{slug}}{rest}");
    Router::new()
        .route(&repo(""), get(repository))
        .route(&repo("/default-branch"), get(default_branch))
        .route(&repo("/webhooks"), get(list_hooks).post(create_hook))
        .route(&repo("/webhooks/{id}"), get(get_hook).put(update_hook).delete(delete_hook))
        // File content, branches, pull requests, `branch-utils` and `branch-permissions`: all
        // behind the same token check.
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

/// Refuses anything but the HTTP access token (Cloud credentials included); names the user in
/// `X-AUSERNAME` on every answer to it, as Data Center does.
async fn authenticate(State(sandbox): State<Sandbox>, request: Request, next: Next) -> Response {
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    let known =
        token.is_some_and(|t| t == DC_HTTP_TOKEN || sandbox.accepts(&ExtraCredential::DcHttpToken(t.to_owned())));
    if !known {
        return DcError::authentication_failed().into_response();
    }
    let mut response = next.run(request).await;
    response.headers_mut().insert("x-ausername", HeaderValue::from_static(DC_USER));
    response
}

fn check_repo(project: &str, slug: &str) -> Result<()> {
    if project.eq_ignore_ascii_case(DC_PROJECT) && slug.eq_ignore_ascii_case(REPOSITORY) {
        Ok(())
    } else {
        Err(Error::not_found(format!("Repository {project}/{slug} does not exist.")).into())
    }
}

async fn repository(State(sandbox): State<Sandbox>, PathParams((p, s)): RepoPath) -> Result<Json<Value>> {
    check_repo(&p, &s)?;
    Ok(Json(sandbox.state().dc_repository_json()))
}

async fn default_branch(PathParams((p, s)): RepoPath) -> Result<Json<Value>> {
    check_repo(&p, &s)?;
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
    Error::not_found(format!("Webhook {id} does not exist.")).into()
}

async fn list_hooks(State(sandbox): State<Sandbox>, PathParams((p, s)): RepoPath, uri: Uri) -> Result<Json<Value>> {
    check_repo(&p, &s)?;
    Ok(Json(dc_paginate(sandbox.dc_hooks(), uri.query().unwrap_or_default())?))
}

async fn create_hook(State(sandbox): State<Sandbox>, PathParams((p, s)): RepoPath, body: Bytes) -> Result<Response> {
    check_repo(&p, &s)?;
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

async fn get_hook(State(sandbox): State<Sandbox>, PathParams((p, s, id)): HookPath) -> Result<Json<Value>> {
    check_repo(&p, &s)?;
    let state = sandbox.state();
    let index = state.dc_hook_index(&id).ok_or_else(|| hook_not_found(&id))?;
    Ok(Json(state.dc_hooks[index].json()))
}

/// Replaces the fields the body gives; the secret only when `configuration.secret` is given.
async fn update_hook(
    State(sandbox): State<Sandbox>,
    PathParams((p, s, id)): HookPath,
    body: Bytes,
) -> Result<Json<Value>> {
    check_repo(&p, &s)?;
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

async fn delete_hook(State(sandbox): State<Sandbox>, PathParams((p, s, id)): HookPath) -> Result<StatusCode> {
    check_repo(&p, &s)?;
    let mut state = sandbox.state();
    let index = state.dc_hook_index(&id).ok_or_else(|| hook_not_found(&id))?;
    state.dc_hooks.remove(index);
    Ok(StatusCode::NO_CONTENT)
}
