//! Data Center file content: committing one file (`PUT …/browse/{path}`), reading raw files
//! and commits.

use axum::extract::{Request, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use serde_json::Value;

use super::{API_VERSIONS, Result, apply_dc, check, repo_path};
use crate::datacenter::auth::DcCaller;
use crate::datacenter::state::DcFileEdit;
use crate::error::{DcError, DcPath, Error};
use crate::form::{FormField, form_fields};
use crate::paging::param;
use crate::state::MAIN;
use crate::{DcPermission, Sandbox};

type FilePath = DcPath<(String, String, String)>;

pub fn routes() -> Router<Sandbox> {
    let mut router = Router::new();
    for version in API_VERSIONS {
        let repo = |rest: &str| repo_path(version, rest);
        router = router
            .route(&repo("/browse/{*path}"), put(edit_file))
            // No path at all: Data Center refuses the edit rather than not finding the route.
            .route(&repo("/browse"), put(no_path))
            .route(&repo("/browse/"), put(no_path))
            .route(&repo("/raw/{*path}"), get(raw))
            .route(&repo("/commits/{commit_id}"), get(commit));
    }
    router
}

async fn no_path() -> DcError {
    Error::bad_request("A file path is required").into()
}

/// Multipart (or URL-encoded) `content` (text or a file part), `branch`, and optional
/// `message`, `sourceCommitId` and `sourceBranch`; answers with the new commit.
async fn edit_file(
    State(sandbox): State<Sandbox>,
    caller: DcCaller,
    DcPath((p, s, path)): FilePath,
    request: Request,
) -> Result<Json<Value>> {
    check(caller, DcPermission::RepoWrite, &p, &s)?;
    let mut edit = DcFileEdit {
        path,
        content: Vec::new(),
        branch: String::new(),
        message: None,
        source_commit: None,
        source_branch: None,
    };
    let mut content = None;
    for FormField { name, value, .. } in form_fields(request).await? {
        let text = || String::from_utf8(value.clone()).map_err(|_| Error::bad_request(format!("{name}: not UTF-8")));
        match name.as_str() {
            "content" => content = Some(value),
            "branch" => edit.branch = text()?,
            "message" => edit.message = Some(text()?),
            "sourceCommitId" => edit.source_commit = Some(text()?),
            "sourceBranch" => edit.source_branch = Some(text()?),
            _ => {}
        }
    }
    edit.content = content.ok_or_else(|| Error::bad_request("content: the file's content is required"))?;
    if edit.branch.trim().is_empty() {
        return Err(Error::bad_request("branch: the branch to commit to is required").into());
    }
    let hash = apply_dc(&sandbox, |s| s.dc_edit_file(edit))?;
    sandbox.count_src_commit();
    let state = sandbox.state();
    let commit = state.resolve(&hash).ok_or_else(|| Error::not_found(format!("Commit {hash} vanished")))?;
    Ok(Json(state.dc_commit_json(commit)))
}

/// The file's bytes at `at` (a branch, `refs/heads/…` or a commit; default the default branch).
async fn raw(
    State(sandbox): State<Sandbox>,
    caller: DcCaller,
    DcPath((p, s, path)): FilePath,
    uri: axum::http::Uri,
) -> Result<Response> {
    check(caller, DcPermission::RepoRead, &p, &s)?;
    let at = param(uri.query().unwrap_or_default(), "at").filter(|a| !a.trim().is_empty());
    let at = at.as_deref().unwrap_or(MAIN);
    let state = sandbox.state();
    let commit = state.dc_resolve(at).ok_or_else(|| Error::not_found(format!("Object '{at}' does not exist.")))?;
    let path = path.trim_start_matches('/');
    let content = commit
        .tree
        .get(path)
        .ok_or_else(|| Error::not_found(format!("The path \"{path}\" does not exist at revision \"{at}\"")))?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], content.clone()).into_response())
}

async fn commit(State(sandbox): State<Sandbox>, caller: DcCaller, DcPath((p, s, id)): FilePath) -> Result<Json<Value>> {
    check(caller, DcPermission::RepoRead, &p, &s)?;
    let state = sandbox.state();
    let commit = state
        .dc_resolve(&id)
        .ok_or_else(|| Error::not_found(format!("Commit '{id}' does not exist in repository '{s}'.")))?;
    Ok(Json(state.dc_commit_json(commit)))
}
