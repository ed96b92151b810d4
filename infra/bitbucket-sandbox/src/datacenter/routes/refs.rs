//! Data Center branches, branch deletion (`branch-utils`), pull request listing and ref
//! restrictions (`branch-permissions`).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::Value;

use super::{Result, apply_dc, check_repo};
use crate::Sandbox;
use crate::datacenter::state::BranchOrder;
use crate::error::{DcError, Error, PathParams, parse_json};
use crate::paging::{dc_paginate, param};
use crate::state::{MAIN, PrState, short_branch};

type RepoPath = PathParams<(String, String)>;

pub fn routes() -> Router<Sandbox> {
    let repo = |api: &str, rest: &str| format!("/rest/{api}/projects/{{project}}/repos/{{slug}}{rest}");
    let mut router = Router::new()
        .route(&repo("api/latest", "/branches"), get(list_branches))
        .route(&repo("api/latest", "/pull-requests"), get(list_pull_requests));
    for version in ["latest", "1.0"] {
        router = router.route(&repo(&format!("branch-utils/{version}"), "/branches"), delete(delete_branch));
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
async fn list_branches(State(sandbox): State<Sandbox>, PathParams((p, s)): RepoPath, uri: Uri) -> Result<Json<Value>> {
    check_repo(&p, &s)?;
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

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeleteBranch {
    name: String,
    end_point: Option<String>,
    #[serde(default)]
    dry_run: bool,
}

/// `{"name", "endPoint"?, "dryRun"?}`: 204, or 400 (the default branch), 404, 403 (a `delete`
/// restriction), 409 (`endPoint` is not the tip). A dry run checks everything and changes nothing.
async fn delete_branch(
    State(sandbox): State<Sandbox>,
    PathParams((p, s)): RepoPath,
    body: Bytes,
) -> Result<StatusCode> {
    check_repo(&p, &s)?;
    let body: DeleteBranch = parse_json(&body)?;
    let name = short_branch(body.name.trim()).to_owned();
    apply_dc(&sandbox, |state| {
        if name == MAIN {
            return Err(Error::bad_request(format!("{name} is the default branch and cannot be deleted.")).into());
        }
        let tip = state.check_branch_deletion(&name).map_err(|mut e| {
            if e.status == StatusCode::NOT_FOUND {
                e.message = format!("Branch refs/heads/{name} does not exist.");
            }
            DcError::from(e)
        })?;
        let end = body.end_point.as_deref().map(str::trim).filter(|e| !e.is_empty());
        if let Some(end) = end.filter(|end| !(tip == *end || (end.len() >= 7 && tip.starts_with(end)))) {
            return Err(Error::conflict(format!("Branch {name} is at {tip}, not at the endPoint {end}")).into());
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
    PathParams((p, s)): RepoPath,
    uri: Uri,
) -> Result<Json<Value>> {
    check_repo(&p, &s)?;
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
    PathParams((p, s)): RepoPath,
    uri: Uri,
) -> Result<Json<Value>> {
    check_repo(&p, &s)?;
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
