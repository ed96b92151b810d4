//! `/_admin`: unauthenticated routes for people and tests to drive the sandbox (push, branch,
//! pull request activity; faults; the request and webhook logs).

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::Sandbox;
use crate::error::{AdminError, Error, PathParams, parse_json};
use crate::faults::{Fault, FaultKind};
use crate::state::{DEFAULT_AUTHOR, MAIN, NewCommit, PrState, PullRequestOptions};

type Result<T> = std::result::Result<T, AdminError>;

pub fn routes() -> Router<Sandbox> {
    Router::new()
        .route("/_admin/push", post(push))
        .route("/_admin/branches", post(create_branch))
        .route("/_admin/branches/{*name}", delete(delete_branch))
        .route("/_admin/branch-restrictions", post(add_branch_restriction))
        .route("/_admin/pullrequests", post(open_pull_request))
        .route("/_admin/pullrequests/{id}/{action}", post(pull_request_action))
        .route("/_admin/faults", get(list_faults).post(add_fault).delete(clear_faults))
        .route("/_admin/requests", get(requests).delete(clear_requests))
        .route("/_admin/webhooks", get(webhooks))
        .route("/_admin/webhooks/drop", post(drop_webhooks))
        .route("/_admin/statuses/{commit}", get(statuses))
}

#[derive(Deserialize)]
struct Drop {
    event_key: String,
    times: Option<u32>,
}

/// `{"event_key": "pullrequest:created", "times": 1}`: the next such webhooks are not sent at all
/// (a missed delivery, as when a receiver was down past Bitbucket's retries).
async fn drop_webhooks(State(sandbox): State<Sandbox>, bytes: Bytes) -> Result<StatusCode> {
    let drop: Drop = body(&bytes)?;
    sandbox.drop_webhooks(&drop.event_key, drop.times.unwrap_or(1));
    Ok(StatusCode::NO_CONTENT)
}

/// A commit's Cloud commit statuses and Data Center build statuses, as each API shows them.
async fn statuses(State(sandbox): State<Sandbox>, PathParams(commit): PathParams<String>) -> Result<Json<Value>> {
    let state = sandbox.state();
    let cloud = state.statuses_json(&commit).ok_or_else(|| Error::not_found(format!("Commit {commit} not found")))?;
    Ok(Json(json!({ "cloud": cloud, "datacenter": state.dc_builds_of(&commit) })))
}

/// Admin bodies go through the API's parser, answering in the admin shape.
fn body<T: serde::de::DeserializeOwned>(bytes: &Bytes) -> Result<T> {
    Ok(parse_json(bytes)?)
}

#[derive(Deserialize)]
struct Push {
    branch: Option<String>,
    message: Option<String>,
    #[serde(default)]
    files: BTreeMap<String, String>,
}

async fn push(State(sandbox): State<Sandbox>, bytes: Bytes) -> Result<Json<Value>> {
    let push: Push = body(&bytes)?;
    let commit = NewCommit {
        branch: push.branch.unwrap_or_else(|| MAIN.to_owned()),
        message: push.message.unwrap_or_else(|| "Pushed through the sandbox".to_owned()),
        author: DEFAULT_AUTHOR.to_owned(),
        parents: None,
        files: push.files.into_iter().map(|(path, content)| (path, content.into_bytes())).collect(),
        deletes: Vec::new(),
    };
    let hash = sandbox.apply(|s| s.commit_files(commit))?;
    Ok(Json(json!({ "commit": hash })))
}

#[derive(Deserialize)]
struct NewBranch {
    name: String,
    from: Option<String>,
}

async fn create_branch(State(sandbox): State<Sandbox>, bytes: Bytes) -> Result<Response> {
    let branch: NewBranch = body(&bytes)?;
    let from = branch.from.as_deref().unwrap_or(MAIN);
    let hash = sandbox.apply(|s| s.create_branch(&branch.name, from))?;
    Ok((StatusCode::CREATED, Json(json!({ "name": branch.name, "commit": hash }))).into_response())
}

async fn delete_branch(State(sandbox): State<Sandbox>, PathParams(name): PathParams<String>) -> Result<StatusCode> {
    sandbox.apply(|s| s.delete_branch(&name).map(|events| ((), events)))?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct NewRestriction {
    kind: String,
    pattern: String,
}

/// `{"kind": "delete", "pattern": "release/*"}` (a Cloud kind; a glob or an exact name) → 201 `{"id"}`.
async fn add_branch_restriction(State(sandbox): State<Sandbox>, bytes: Bytes) -> Result<Response> {
    let restriction: NewRestriction = body(&bytes)?;
    let id = sandbox.state().add_branch_restriction(&restriction.kind, &restriction.pattern)?;
    Ok((StatusCode::CREATED, Json(json!({ "id": id }))).into_response())
}

#[derive(Deserialize)]
struct NewPullRequest {
    source: String,
    destination: Option<String>,
    title: String,
    /// Opened as a draft (`"draft": true`); `…/{id}/ready` marks it ready.
    #[serde(default)]
    draft: bool,
    /// `workspace/slug` of a fork the source branch comes from.
    fork: Option<String>,
}

async fn open_pull_request(State(sandbox): State<Sandbox>, bytes: Bytes) -> Result<Response> {
    let pr: NewPullRequest = body(&bytes)?;
    let destination = pr.destination.as_deref().unwrap_or(MAIN);
    if pr.fork.as_ref().is_some_and(|f| f.split('/').filter(|p| !p.is_empty()).count() != 2) {
        return Err(Error::bad_request("fork: expected workspace/slug").into());
    }
    let options = PullRequestOptions { draft: pr.draft, fork: pr.fork.clone() };
    let id = sandbox.apply(|s| s.open_pull_request(&pr.source, destination, &pr.title, options))?;
    Ok((StatusCode::CREATED, Json(json!({ "id": id }))).into_response())
}

#[derive(Deserialize, Default)]
struct Update {
    title: Option<String>,
}

/// `update` (optional `{"title"}`), `ready` (a draft), `merge` or `decline`; answers with the pull request.
async fn pull_request_action(
    State(sandbox): State<Sandbox>,
    PathParams((id, action)): PathParams<(u64, String)>,
    bytes: Bytes,
) -> Result<Json<Value>> {
    let events = match action.as_str() {
        "update" => {
            let update: Update = if bytes.is_empty() { Update::default() } else { body(&bytes)? };
            sandbox.apply(|s| s.update_pull_request(id, update.title.as_deref()).map(|e| ((), e)))
        }
        "ready" => sandbox.apply(|s| s.mark_ready(id).map(|e| ((), e))),
        "merge" => sandbox.apply(|s| s.close_pull_request(id, PrState::Merged).map(|e| ((), e))),
        "decline" => sandbox.apply(|s| s.close_pull_request(id, PrState::Declined).map(|e| ((), e))),
        other => Err(Error::not_found(format!("Unknown action {other:?}; use update, ready, merge or decline"))),
    };
    events?;
    Ok(Json(sandbox.state().pull_json(id).unwrap_or(Value::Null)))
}

async fn list_faults(State(sandbox): State<Sandbox>) -> Json<Vec<Fault>> {
    Json(sandbox.faults().clone())
}

async fn add_fault(State(sandbox): State<Sandbox>, bytes: Bytes) -> Result<Response> {
    let fault: Fault = body(&bytes)?;
    if matches!(fault.kind, FaultKind::Status { status } if !(400..=599).contains(&status)) {
        return Err(Error::bad_request("kind.status: expected an error status (400-599)").into());
    }
    sandbox.inject_fault(fault.clone());
    Ok((StatusCode::CREATED, Json(fault)).into_response())
}

async fn clear_faults(State(sandbox): State<Sandbox>) -> StatusCode {
    sandbox.clear_faults();
    StatusCode::NO_CONTENT
}

async fn requests(State(sandbox): State<Sandbox>) -> impl IntoResponse {
    Json(sandbox.requests())
}

async fn clear_requests(State(sandbox): State<Sandbox>) -> StatusCode {
    sandbox.clear_requests();
    StatusCode::NO_CONTENT
}

async fn webhooks(State(sandbox): State<Sandbox>) -> impl IntoResponse {
    Json(sandbox.sent_webhooks())
}
