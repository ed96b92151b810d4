//! Data Center branches (listing, the default branch, creation through the core API and through
//! `branch-utils`), branch deletion (`branch-utils`), pull request listing and ref restrictions
//! (`branch-permissions`).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::Value;

use super::{API_VERSIONS, Result, apply_dc, check};
use crate::datacenter::auth::DcCaller;
use crate::datacenter::state::BranchOrder;
use crate::error::{DcError, DcPath, Error, parse_json};
use crate::paging::{dc_paginate, param};
use crate::state::{MAIN, PrState, short_branch};
use crate::{DcPermission, Sandbox};

type RepoPath = DcPath<(String, String)>;

pub fn routes() -> Router<Sandbox> {
    let repo = |api: &str, rest: &str| format!("/rest/{api}/projects/{{project}}/repos/{{slug}}{rest}");
    let mut router = Router::new();
    for version in API_VERSIONS {
        let api = format!("api/{version}");
        router = router
            .route(&repo(&api, "/branches"), get(list_branches).post(create_branch))
            .route(&repo(&api, "/branches/default"), get(default_branch))
            .route(&repo(&api, "/pull-requests"), get(list_pull_requests));
    }
    for version in ["latest", "1.0"] {
        let utils = format!("branch-utils/{version}");
        router =
            router.route(&repo(&utils, "/branches"), axum::routing::post(create_utils_branch).delete(delete_branch));
    }
    for version in ["latest", "2.0"] {
        router = router.route(&repo(&format!("branch-permissions/{version}"), "/restrictions"), get(list_restrictions));
    }
    router
}

fn query(uri: &Uri) -> &str {
    uri.query().unwrap_or_default()
}

/// `true`/`false` (any case); absent is `false`.
fn flag(uri: &Uri, name: &str) -> Result<bool> {
    match param(query(uri), name) {
        None => Ok(false),
        Some(v) if v.eq_ignore_ascii_case("true") => Ok(true),
        Some(v) if v.eq_ignore_ascii_case("false") || v.is_empty() => Ok(false),
        Some(v) => Err(Error::bad_request(format!("{name}: expected true or false, got {v:?}")).into()),
    }
}

/// `filterText` (contains, any case), `orderBy` (`ALPHABETICAL`, the default, or
/// `MODIFICATION`: most recently changed first), `details=true` (the tip commit in `metadata`).
async fn list_branches(
    State(sandbox): State<Sandbox>,
    caller: DcCaller,
    DcPath((p, s)): RepoPath,
    uri: Uri,
) -> Result<Json<Value>> {
    check(caller, DcPermission::RepoRead, &p, &s)?;
    let filter = param(query(&uri), "filterText").unwrap_or_default();
    let order = match param(query(&uri), "orderBy").map(|o| o.to_ascii_uppercase()).as_deref() {
        None | Some("ALPHABETICAL") => BranchOrder::Alphabetical,
        Some("MODIFICATION") => BranchOrder::Modification,
        Some(other) => {
            return Err(
                Error::bad_request(format!("orderBy: expected ALPHABETICAL or MODIFICATION, got {other}")).into()
            );
        }
    };
    let details = flag(&uri, "details")?;
    let values = sandbox.state().dc_branches_json(&filter, order, details);
    Ok(Json(dc_paginate(values, query(&uri))?))
}

/// The deprecated `GET …/branches/default`: the default branch with its tip, as `RestBranch`.
async fn default_branch(
    State(sandbox): State<Sandbox>,
    caller: DcCaller,
    DcPath((p, s)): RepoPath,
) -> Result<Json<Value>> {
    check(caller, DcPermission::RepoRead, &p, &s)?;
    let json = sandbox.state().dc_branch_json(MAIN);
    // The seeded repository always has its default branch; Data Center answers 204 when empty.
    json.map(Json).ok_or_else(|| Error::not_found("The repository has no default branch").into())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct NewBranch {
    name: Option<String>,
    start_point: Option<String>,
}

/// Creates `name` at `startPoint` (a branch, `refs/heads/…` or a commit); `overlap` is the status
/// for a name that already exists (the `branch-utils` plugin answers 400 for that and 409 for a
/// name overlapping another branch's, `a` and `a/b`; the core API answers 409 for both).
fn create(sandbox: &Sandbox, body: &Bytes, exists: StatusCode) -> Result<Value> {
    let body: NewBranch = parse_json(body)?;
    let name = short_branch(body.name.as_deref().unwrap_or_default().trim()).to_owned();
    if name.is_empty() {
        return Err(Error::bad_request("name: a branch name is required").into());
    }
    let start = body.start_point.as_deref().map(str::trim).filter(|s| !s.is_empty());
    let start = start.ok_or_else(|| Error::bad_request("startPoint: the commit to start from is required"))?;
    apply_dc(sandbox, |state| {
        if state.tip(&name).is_some() {
            return Err(Error::new(exists, format!("Branch '{name}' already exists in {}.", crate::REPOSITORY)).into());
        }
        if let Some(other) =
            state.branch_names().find(|b| b.starts_with(&format!("{name}/")) || name.starts_with(&format!("{b}/")))
        {
            return Err(Error::conflict(format!("Branch '{name}' overlaps with the existing branch '{other}'.")).into());
        }
        let hash = state.dc_resolve(start).map(|c| c.hash.clone());
        let hash = hash.ok_or_else(|| Error::not_found(format!("Object '{start}' does not exist.")))?;
        let (_, events) = state.create_branch(&name, &hash)?;
        Ok(((), events))
    })?;
    let json = sandbox.state().dc_branch_json(&name);
    json.ok_or_else(|| Error::not_found(format!("Branch {name} vanished")).into())
}

/// `POST /rest/api/…/branches` (`createBranchForRepository`): 200 with the branch.
async fn create_branch(
    State(sandbox): State<Sandbox>,
    caller: DcCaller,
    DcPath((p, s)): RepoPath,
    body: Bytes,
) -> Result<Json<Value>> {
    check(caller, DcPermission::RepoWrite, &p, &s)?;
    create(&sandbox, &body, StatusCode::CONFLICT).map(Json)
}

/// `POST /rest/branch-utils/…/branches` (`createBranch`): 201 with the branch.
async fn create_utils_branch(
    State(sandbox): State<Sandbox>,
    caller: DcCaller,
    DcPath((p, s)): RepoPath,
    body: Bytes,
) -> Result<Response> {
    check(caller, DcPermission::RepoWrite, &p, &s)?;
    let json = create(&sandbox, &body, StatusCode::BAD_REQUEST)?;
    Ok((StatusCode::CREATED, Json(json)).into_response())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeleteBranch {
    name: String,
    end_point: Option<String>,
    #[serde(default)]
    dry_run: bool,
}

/// `{"name", "endPoint"?, "dryRun"?}` as the description says: 204, also for a branch that does
/// not exist ("will not raise an error"); 400 for the default branch and for an `endPoint` the
/// branch is not at; 401 without REPO_WRITE or when a `delete` restriction covers the branch (a
/// missing branch permission). A dry run checks everything and changes nothing.
async fn delete_branch(
    State(sandbox): State<Sandbox>,
    caller: DcCaller,
    DcPath((p, s)): RepoPath,
    body: Bytes,
) -> Result<StatusCode> {
    check(caller, DcPermission::RepoWrite, &p, &s)?;
    let body: DeleteBranch = parse_json(&body)?;
    let name = short_branch(body.name.trim()).to_owned();
    apply_dc(&sandbox, |state| {
        if name == MAIN {
            return Err(Error::bad_request(format!("{name} is the default branch and cannot be deleted.")).into());
        }
        let Some(tip) = state.tip(&name).map(str::to_owned) else {
            return Ok(((), Vec::new()));
        };
        if state.branch_restricted("delete", &name) {
            return Err(DcError::not_permitted(format!(
                "You do not have permission to delete refs/heads/{name}: a branch permission prevents deletion."
            )));
        }
        let end = body.end_point.as_deref().map(str::trim).filter(|e| !e.is_empty());
        if let Some(end) = end.filter(|end| !(tip == *end || (end.len() >= 7 && tip.starts_with(end)))) {
            return Err(Error::bad_request(format!("Branch {name} is at {tip}, not at the endPoint {end}")).into());
        }
        if body.dry_run {
            return Ok(((), Vec::new()));
        }
        Ok(((), state.delete_branch(&name)?))
    })?;
    Ok(StatusCode::NO_CONTENT)
}

/// `state` (`OPEN`, the default, `MERGED`, `DECLINED`, `ALL`), `at` (a branch) with `direction`
/// (`INCOMING`, the default: into `at`; `OUTGOING`: from it), `order` (`NEWEST`, the default, or
/// `OLDEST`).
async fn list_pull_requests(
    State(sandbox): State<Sandbox>,
    caller: DcCaller,
    DcPath((p, s)): RepoPath,
    uri: Uri,
) -> Result<Json<Value>> {
    check(caller, DcPermission::RepoRead, &p, &s)?;
    let q = query(&uri);
    let states = match param(q, "state").map(|s| s.to_ascii_uppercase()).as_deref() {
        None | Some("") => vec![PrState::Open],
        Some("ALL") => vec![PrState::Open, PrState::Merged, PrState::Declined],
        Some(other) => vec![PrState::parse(other).ok_or_else(|| {
            Error::bad_request(format!("state: expected OPEN, MERGED, DECLINED or ALL, got {other}"))
        })?],
    };
    let outgoing = match param(q, "direction").map(|d| d.to_ascii_uppercase()).as_deref() {
        None | Some("INCOMING") => false,
        Some("OUTGOING") => true,
        Some(other) => {
            return Err(Error::bad_request(format!("direction: expected INCOMING or OUTGOING, got {other}")).into());
        }
    };
    let newest_first = match param(q, "order").map(|o| o.to_ascii_uppercase()).as_deref() {
        None | Some("NEWEST") => true,
        Some("OLDEST") => false,
        Some(other) => return Err(Error::bad_request(format!("order: expected NEWEST or OLDEST, got {other}")).into()),
    };
    let at = param(q, "at").filter(|a| !a.trim().is_empty());
    let values = sandbox.state().dc_pulls_json(&states, at.as_deref(), outgoing, newest_first);
    Ok(Json(dc_paginate(values, q)?))
}

const DC_RESTRICTION_TYPES: &[&str] = &["read-only", "no-deletes", "fast-forward-only", "pull-request-only"];

/// `type` (`no-deletes`…), `matcherType` (`BRANCH`, `PATTERN`) and `matcherId` filter.
async fn list_restrictions(
    State(sandbox): State<Sandbox>,
    caller: DcCaller,
    DcPath((p, s)): RepoPath,
    uri: Uri,
) -> Result<Json<Value>> {
    check(caller, DcPermission::RepoAdmin, &p, &s)?;
    let q = query(&uri);
    let kind = param(q, "type").filter(|t| !t.is_empty());
    if let Some(kind) = kind.as_deref().filter(|t| !DC_RESTRICTION_TYPES.contains(t)) {
        let types = DC_RESTRICTION_TYPES.join(", ");
        return Err(Error::bad_request(format!("type: {kind:?} is not one of {types}")).into());
    }
    let matcher_type = param(q, "matcherType").filter(|t| !t.is_empty());
    let matcher_id = param(q, "matcherId").filter(|t| !t.is_empty());
    let values = sandbox.state().dc_restrictions_json(kind.as_deref(), matcher_type.as_deref(), matcher_id.as_deref());
    Ok(Json(dc_paginate(values, q)?))
}
