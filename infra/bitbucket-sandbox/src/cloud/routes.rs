//! The Bitbucket Cloud 2.0 routes, plus the OAuth token endpoint under `/site`.

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use crate::cloud::auth::{self, Caller};
use crate::cloud::render;
use crate::cloud::{query, scopes};
use crate::error::{Error, PathParams, parse_json};
use crate::form::{FormField, form_fields};
use crate::paging::{MAX_PULL_REQUEST_PAGELEN, page_range, paginate, paginate_up_to, param, params};
use crate::state::{DEFAULT_AUTHOR, HOOK_EVENTS, Hook, MAIN, NewCommit, PrState, StatusInput, TreeEntry};
use crate::{REPOSITORY, Sandbox, WORKSPACE};

type RepoPath = PathParams<(String, String)>;
type RepoItemPath<T = String> = PathParams<(String, String, T)>;

pub fn routes() -> Router<Sandbox> {
    let repo = |rest: &str| format!("/2.0/repositories/{{workspace}}/{{repo_slug}}{rest}");
    let mut router = Router::new()
        .route("/site/oauth2/access_token", post(auth::access_token))
        .route("/2.0/user", get(user))
        .route("/2.0/workspaces/{workspace}", get(workspace))
        .route(&repo(""), get(repository))
        .route(&repo("/hooks/{uid}"), get(get_hook).put(update_hook).delete(delete_hook))
        .route(&repo("/refs/branches/{*name}"), get(get_branch).delete(delete_branch))
        .route(&repo("/branch-restrictions/{id}"), get(get_branch_restriction))
        .route(&repo("/src"), get(src_root).post(create_commit))
        // The root listing: "the trailing slash is required" (the operation's text).
        .route(&repo("/src/{rev}/"), get(read_root))
        .route(&repo("/src/{rev}/{*path}"), get(read_src))
        .route(&repo("/commits/{revision}"), get(list_commits_at))
        .route(&repo("/commit/{hash}"), get(get_commit))
        .route(&repo("/commit/{hash}/statuses"), get(list_statuses))
        .route(&repo("/commit/{hash}/statuses/build"), post(create_status))
        .route(&repo("/commit/{hash}/statuses/build/{key}"), get(get_status).put(update_status))
        .route(&repo("/pullrequests/{id}"), get(get_pull_request));
    // Collections answer with or without a trailing slash, as live Cloud does.
    for slash in ["", "/"] {
        router = router
            .route(&repo(&format!("/hooks{slash}")), get(list_hooks).post(create_hook))
            .route(&repo(&format!("/refs/branches{slash}")), get(list_branches).post(create_branch))
            .route(&repo(&format!("/branch-restrictions{slash}")), get(list_branch_restrictions))
            .route(&repo(&format!("/commits{slash}")), get(list_commits))
            .route(&repo(&format!("/pullrequests{slash}")), get(list_pull_requests));
    }
    router
}

fn check_repo(workspace: &str, repo: &str) -> Result<(), Error> {
    if workspace.eq_ignore_ascii_case(WORKSPACE) && repo.eq_ignore_ascii_case(REPOSITORY) {
        Ok(())
    } else {
        Err(Error::not_found(format!("Repository {workspace}/{repo} not found")))
    }
}

/// One page of a listing; `next` points back at this same URL.
fn listing(sandbox: &Sandbox, uri: &Uri, values: Vec<Value>) -> Result<Json<Value>, Error> {
    let url = format!("{}{}", sandbox.public_base(), uri.path());
    paginate(values, uri.query().unwrap_or_default(), &url).map(Json)
}

async fn workspace(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    PathParams(workspace): PathParams<String>,
) -> Result<Json<Value>, Error> {
    caller.require(&scopes::GET_WORKSPACE)?;
    if !workspace.eq_ignore_ascii_case(WORKSPACE) {
        return Err(Error::not_found(format!("Workspace {workspace} not found")));
    }
    Ok(Json(render::workspace_json(sandbox.public_base())))
}

async fn user(caller: Caller) -> Result<Json<Value>, Error> {
    caller.require(&scopes::GET_USER)?;
    Ok(Json(render::user_json()))
}

async fn repository(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    PathParams((w, r)): RepoPath,
) -> Result<Json<Value>, Error> {
    caller.require(&scopes::GET_REPOSITORY)?;
    check_repo(&w, &r)?;
    Ok(Json(sandbox.state().repository_json()))
}

// ---- hooks ----------------------------------------------------------------------------------

#[derive(Deserialize)]
struct HookBody {
    description: Option<String>,
    url: Option<String>,
    active: Option<bool>,
    events: Option<Vec<String>>,
    /// Absent (keep), `null` or `""` (remove), or the new secret.
    #[serde(default, deserialize_with = "present")]
    secret: Option<Value>,
}

fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

pub(crate) fn check_url(url: &str) -> Result<String, Error> {
    match reqwest::Url::parse(url) {
        Ok(parsed) if matches!(parsed.scheme(), "http" | "https") && parsed.has_host() => Ok(url.to_owned()),
        _ => Err(Error::bad_request(format!("url: {url:?} is not a valid http(s) URL"))),
    }
}

/// Sorted and deduplicated; each one of `supported`.
pub(crate) fn check_events(mut events: Vec<String>, supported: &[&str]) -> Result<Vec<String>, Error> {
    if events.is_empty() {
        return Err(Error::bad_request("events: at least one event is required"));
    }
    if let Some(bad) = events.iter().find(|e| !supported.contains(&e.as_str())) {
        return Err(Error::bad_request(format!("events: {bad} is not a supported event")));
    }
    events.sort();
    events.dedup();
    Ok(events)
}

/// `None` when the body does not mention the secret, `Some(None)` to remove it.
fn check_secret(secret: Option<Value>) -> Result<Option<Option<String>>, Error> {
    match secret {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(Value::String(s)) => Ok(Some(Some(s).filter(|s| !s.is_empty()))),
        Some(_) => Err(Error::bad_request("secret: expected a string")),
    }
}

async fn list_hooks(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    PathParams((w, r)): RepoPath,
    uri: Uri,
) -> Result<Json<Value>, Error> {
    caller.require(&scopes::LIST_HOOKS)?;
    check_repo(&w, &r)?;
    listing(&sandbox, &uri, sandbox.hooks())
}

async fn create_hook(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    PathParams((w, r)): RepoPath,
    body: Bytes,
) -> Result<Response, Error> {
    caller.require(&scopes::CREATE_HOOK)?;
    check_repo(&w, &r)?;
    let body: HookBody = parse_json(&body)?;
    let hook = Hook {
        uuid: format!("{{{}}}", uuid::Uuid::new_v4()),
        url: check_url(body.url.as_deref().unwrap_or_default())?,
        description: body.description.unwrap_or_default(),
        active: body.active.unwrap_or(true),
        events: check_events(body.events.unwrap_or_default(), HOOK_EVENTS)?,
        secret: check_secret(body.secret)?.flatten(),
        created_at: chrono::Utc::now(),
    };
    let mut state = sandbox.state();
    let json = state.hook_json(&hook);
    state.hooks.push(hook);
    Ok((StatusCode::CREATED, Json(json)).into_response())
}

async fn get_hook(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    PathParams((w, r, uid)): RepoItemPath,
) -> Result<Json<Value>, Error> {
    caller.require(&scopes::GET_HOOK)?;
    check_repo(&w, &r)?;
    let state = sandbox.state();
    let index = state.hook_index(&uid).ok_or_else(|| hook_not_found(&uid))?;
    Ok(Json(state.hook_json(&state.hooks[index])))
}

fn hook_not_found(uid: &str) -> Error {
    Error::not_found(format!("Webhook {uid} not found"))
}

async fn update_hook(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    PathParams((w, r, uid)): RepoItemPath,
    body: Bytes,
) -> Result<Json<Value>, Error> {
    caller.require(&scopes::UPDATE_HOOK)?;
    check_repo(&w, &r)?;
    let body: HookBody = parse_json(&body)?;
    // Validate everything before changing anything.
    let url = body.url.as_deref().map(check_url).transpose()?;
    let events = body.events.map(|e| check_events(e, HOOK_EVENTS)).transpose()?;
    let secret = check_secret(body.secret)?;
    let mut state = sandbox.state();
    let index = state.hook_index(&uid).ok_or_else(|| hook_not_found(&uid))?;
    let hook = &mut state.hooks[index];
    if let Some(url) = url {
        hook.url = url;
    }
    if let Some(events) = events {
        hook.events = events;
    }
    if let Some(description) = body.description {
        hook.description = description;
    }
    if let Some(active) = body.active {
        hook.active = active;
    }
    if let Some(secret) = secret {
        hook.secret = secret;
    }
    Ok(Json(state.hook_json(&state.hooks[index])))
}

async fn delete_hook(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    PathParams((w, r, uid)): RepoItemPath,
) -> Result<StatusCode, Error> {
    caller.require(&scopes::DELETE_HOOK)?;
    check_repo(&w, &r)?;
    let mut state = sandbox.state();
    let index = state.hook_index(&uid).ok_or_else(|| hook_not_found(&uid))?;
    state.hooks.remove(index);
    Ok(StatusCode::NO_CONTENT)
}

// ---- branches -------------------------------------------------------------------------------

/// What `q` and `sort` may name on branches.
const BRANCH_FIELDS: &[&str] = &["name", "target.hash", "target.date", "target.message", "target.author.raw"];

async fn list_branches(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    PathParams((w, r)): RepoPath,
    uri: Uri,
) -> Result<Json<Value>, Error> {
    caller.require(&scopes::LIST_BRANCHES)?;
    check_repo(&w, &r)?;
    let query = uri.query().unwrap_or_default();
    // Without a filter or an order only the page asked for is rendered (a null stands for each
    // other branch): thousands of branches are listed page by page, each page as cheap as one.
    let shown = match (param(query, "q"), param(query, "sort")) {
        (None, None) => Some(page_range(query)?),
        _ => None,
    };
    let values: Vec<Value> = {
        let state = sandbox.state();
        state
            .branch_names()
            .enumerate()
            .filter_map(|(i, n)| match &shown {
                Some(page) if !page.contains(&i) => Some(Value::Null),
                _ => state.branch_json(n),
            })
            .collect()
    };
    let mut values = query::filter(values, param(query, "q").as_deref(), BRANCH_FIELDS)?;
    query::sort(&mut values, param(query, "sort").as_deref(), BRANCH_FIELDS)?;
    listing(&sandbox, &uri, values)
}

async fn get_branch(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    PathParams((w, r, name)): RepoItemPath,
) -> Result<Json<Value>, Error> {
    caller.require(&scopes::GET_BRANCH)?;
    check_repo(&w, &r)?;
    let json = sandbox.state().branch_json(&name);
    json.map(Json).ok_or_else(|| Error::not_found(format!("Branch {name} not found")))
}

#[derive(Deserialize)]
struct NewBranch {
    name: String,
    target: Target,
}

#[derive(Deserialize)]
struct Target {
    hash: String,
}

async fn create_branch(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    PathParams((w, r)): RepoPath,
    body: Bytes,
) -> Result<Response, Error> {
    caller.require(&scopes::CREATE_BRANCH)?;
    check_repo(&w, &r)?;
    let body: NewBranch = parse_json(&body)?;
    sandbox.apply(|s| s.create_branch(&body.name, &body.target.hash))?;
    let json = sandbox.state().branch_json(&body.name);
    Ok((StatusCode::CREATED, Json(json)).into_response())
}

async fn delete_branch(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    PathParams((w, r, name)): RepoItemPath,
) -> Result<StatusCode, Error> {
    caller.require(&scopes::DELETE_BRANCH)?;
    check_repo(&w, &r)?;
    sandbox.apply(|s| {
        // The main branch (400), an unknown one (404), one under a `delete` restriction (403).
        s.check_branch_deletion(&name)?;
        s.delete_branch(&name).map(|events| ((), events))
    })?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- branch restrictions --------------------------------------------------------------------

/// `kind` and `pattern` filter.
async fn list_branch_restrictions(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    PathParams((w, r)): RepoPath,
    uri: Uri,
) -> Result<Json<Value>, Error> {
    caller.require(&scopes::LIST_RESTRICTIONS)?;
    check_repo(&w, &r)?;
    let query = uri.query().unwrap_or_default();
    let (kind, pattern) = (param(query, "kind"), param(query, "pattern"));
    let values = sandbox.state().cloud_restrictions_json(kind.as_deref(), pattern.as_deref());
    listing(&sandbox, &uri, values)
}

async fn get_branch_restriction(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    PathParams((w, r, id)): RepoItemPath<u64>,
) -> Result<Json<Value>, Error> {
    caller.require(&scopes::GET_RESTRICTION)?;
    check_repo(&w, &r)?;
    let json = sandbox.state().cloud_restriction_json(id);
    json.map(Json).ok_or_else(|| Error::not_found(format!("Branch restriction {id} not found")))
}

// ---- source and commits ---------------------------------------------------------------------

/// Reads a form into a commit as Bitbucket does: a file field (one with a `filename`) is
/// always a file; otherwise `message`, `author`, `branch`, `parents` and `files` are the
/// commit's metadata and every other name is a file's path. A path is absolute with or without
/// its leading `/`, and with one it is never metadata (`/message` is a file named `message`).
fn new_commit(fields: Vec<FormField>) -> Result<NewCommit, Error> {
    let text = |name: &str, value: Vec<u8>| {
        String::from_utf8(value).map_err(|_| Error::bad_request(format!("{name}: expected UTF-8 text")))
    };
    let mut commit = NewCommit {
        branch: MAIN.to_owned(),
        message: "Commit via the API".to_owned(),
        author: DEFAULT_AUTHOR.to_owned(),
        parents: None,
        files: Vec::new(),
        deletes: Vec::new(),
    };
    for FormField { name, value, is_file, .. } in fields {
        match name.as_str() {
            _ if is_file => commit.files.push((name, value)),
            "message" => commit.message = text(&name, value)?,
            "author" => commit.author = text(&name, value)?,
            "branch" => commit.branch = text(&name, value)?,
            "parents" => commit.parents = Some(text(&name, value)?),
            "files" => commit.deletes.push(text(&name, value)?),
            _ => commit.files.push((name, value)),
        }
    }
    // An empty field means "not given", as with the form's other optional fields.
    if commit.branch.trim().is_empty() {
        commit.branch = MAIN.to_owned();
    }
    commit.parents = commit.parents.map(|p| p.trim().to_owned()).filter(|p| !p.is_empty());
    Ok(commit)
}

async fn create_commit(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    PathParams((w, r)): RepoPath,
    request: Request,
) -> Result<Response, Error> {
    caller.require(&scopes::CREATE_COMMIT)?;
    check_repo(&w, &r)?;
    let commit = new_commit(form_fields(request).await?)?;
    let hash = sandbox.apply(|s| s.commit_files(commit))?;
    sandbox.count_src_commit();
    let location = format!("{}/2.0/repositories/{WORKSPACE}/{REPOSITORY}/commit/{hash}", sandbox.public_base());
    Ok((StatusCode::CREATED, [(header::LOCATION, location)]).into_response())
}

/// `GET …/src`: a redirect to the root listing of the main branch's tip, as the operation's text
/// says.
async fn src_root(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    PathParams((w, r)): RepoPath,
) -> Result<Response, Error> {
    caller.require(&scopes::GET_SRC_ROOT)?;
    check_repo(&w, &r)?;
    let tip = sandbox.state().tip(MAIN).map(str::to_owned).ok_or_else(|| Error::not_found("No main branch"))?;
    let location = format!("{}/2.0/repositories/{WORKSPACE}/{REPOSITORY}/src/{tip}/", sandbox.public_base());
    Ok((StatusCode::FOUND, [(header::LOCATION, location)]).into_response())
}

async fn read_root(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    PathParams((w, r, rev)): RepoItemPath,
    uri: Uri,
) -> Result<Response, Error> {
    src(&sandbox, &caller, &w, &r, &rev, "", &uri)
}

async fn read_src(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    PathParams((w, r, rev, path)): PathParams<(String, String, String, String)>,
    uri: Uri,
) -> Result<Response, Error> {
    src(&sandbox, &caller, &w, &r, &rev, &path, &uri)
}

/// A file's raw bytes, a directory's listing (`paginated_treeentries`), or either's meta data with
/// `format=meta`. `rev` is a commit hash (7 digits or more) or a branch name: live Cloud refuses a
/// branch whose name has a `/` here (the path cannot tell where the name ends), so does the
/// sandbox, encoded (`feature%2Fx`) or not.
fn src(
    sandbox: &Sandbox,
    caller: &Caller,
    w: &str,
    r: &str,
    rev: &str,
    path: &str,
    uri: &Uri,
) -> Result<Response, Error> {
    caller.require(&scopes::GET_SRC)?;
    check_repo(w, r)?;
    let state = sandbox.state();
    let not_found = || Error::not_found(format!("Commit {rev} not found"));
    let commit = if rev.contains('/') { None } else { state.resolve(rev) };
    let commit = commit.ok_or_else(not_found)?;
    let query = uri.query().unwrap_or_default();
    let meta = match param(query, "format").as_deref() {
        None => false,
        Some("meta") => true,
        Some(other) => return Err(Error::bad_request(format!("format: {other:?} is not supported; use meta"))),
    };
    let path = path.trim_matches('/');
    let entry = state.tree_entry(commit, path);
    let entry = entry.ok_or_else(|| Error::not_found(format!("No such file or directory: {path}")))?;
    match entry {
        TreeEntry::File(content) if !meta => {
            Ok(([(header::CONTENT_TYPE, "text/plain")], content.to_vec()).into_response())
        }
        TreeEntry::File(_) => Ok(Json(state.tree_entry_json(commit, path, false)).into_response()),
        TreeEntry::Directory(_) if meta => Ok(Json(state.tree_entry_json(commit, path, true)).into_response()),
        TreeEntry::Directory(children) => {
            let values = children
                .into_iter()
                .map(|(name, is_dir)| {
                    let child = if path.is_empty() { name } else { format!("{path}/{name}") };
                    state.tree_entry_json(commit, &child, is_dir)
                })
                .collect();
            drop(state);
            listing(sandbox, uri, values).map(IntoResponse::into_response)
        }
    }
}

/// What `q` and `sort` may name on commits.
const COMMIT_FIELDS: &[&str] = &["hash", "date", "message", "author.raw"];

/// `include` and `exclude` revisions (repeatable), then a page of the history they give.
fn commits(sandbox: &Sandbox, uri: &Uri, revision: Option<&str>) -> Result<Json<Value>, Error> {
    let query = uri.query().unwrap_or_default();
    let values = {
        let state = sandbox.state();
        let resolve = |rev: &str| state.resolve(rev).ok_or_else(|| Error::not_found(format!("Commit {rev} not found")));
        let mut include = params(query, "include").iter().map(|r| resolve(r)).collect::<Result<Vec<_>, _>>()?;
        include.extend(revision.map(resolve).transpose()?);
        let exclude = params(query, "exclude").iter().map(|r| resolve(r)).collect::<Result<Vec<_>, _>>()?;
        let history = state.history(&include, &exclude);
        let repository = state.repository_json();
        history
            .into_iter()
            .map(|c| {
                let mut json = state.commit_json(c);
                json["repository"] = repository.clone();
                json
            })
            .collect()
    };
    let mut values = query::filter(values, param(query, "q").as_deref(), COMMIT_FIELDS)?;
    query::sort(&mut values, param(query, "sort").as_deref(), COMMIT_FIELDS)?;
    // Iterator paging, as the narrative says of commits: no `size`.
    let mut page = listing(sandbox, uri, values)?;
    page.0.as_object_mut().map(|o| o.remove("size"));
    Ok(page)
}

async fn list_commits(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    PathParams((w, r)): RepoPath,
    uri: Uri,
) -> Result<Json<Value>, Error> {
    caller.require(&scopes::LIST_COMMITS)?;
    check_repo(&w, &r)?;
    commits(&sandbox, &uri, None)
}

async fn list_commits_at(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    PathParams((w, r, revision)): RepoItemPath,
    uri: Uri,
) -> Result<Json<Value>, Error> {
    caller.require(&scopes::LIST_COMMITS_AT)?;
    check_repo(&w, &r)?;
    commits(&sandbox, &uri, Some(&revision))
}

async fn get_commit(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    PathParams((w, r, hash)): RepoItemPath,
) -> Result<Json<Value>, Error> {
    caller.require(&scopes::GET_COMMIT)?;
    check_repo(&w, &r)?;
    let state = sandbox.state();
    let commit = state.resolve(&hash).ok_or_else(|| Error::not_found(format!("Commit {hash} not found")))?;
    let mut json = state.commit_json(commit);
    json["repository"] = state.repository_json();
    Ok(Json(json))
}

async fn list_statuses(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    PathParams((w, r, hash)): RepoItemPath,
    uri: Uri,
) -> Result<Json<Value>, Error> {
    caller.require(&scopes::LIST_STATUSES)?;
    check_repo(&w, &r)?;
    let values = sandbox.state().statuses_json(&hash);
    let values = values.ok_or_else(|| Error::not_found(format!("Commit {hash} not found")))?;
    listing(&sandbox, &uri, values)
}

async fn create_status(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    PathParams((w, r, hash)): RepoItemPath,
    body: Bytes,
) -> Result<Response, Error> {
    caller.require(&scopes::CREATE_STATUS)?;
    check_repo(&w, &r)?;
    let input: StatusInput = parse_json(&body)?;
    let json = sandbox.apply(|s| s.set_status(&hash, input))?;
    Ok((StatusCode::CREATED, Json(json)).into_response())
}

type StatusPath = PathParams<(String, String, String, String)>;

async fn get_status(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    PathParams((w, r, hash, key)): StatusPath,
) -> Result<Json<Value>, Error> {
    caller.require(&scopes::GET_STATUS)?;
    check_repo(&w, &r)?;
    let found = sandbox.state().status_json_by_key(&hash, &key);
    found.map(Json).ok_or_else(|| Error::not_found(format!("No build status {key} on commit {hash}")))
}

/// `PUT …/statuses/build/{key}`: changes the status with that key (the key itself cannot change).
async fn update_status(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    PathParams((w, r, hash, key)): StatusPath,
    body: Bytes,
) -> Result<Json<Value>, Error> {
    caller.require(&scopes::UPDATE_STATUS)?;
    check_repo(&w, &r)?;
    #[derive(Deserialize)]
    struct Update {
        key: Option<String>,
        state: Option<String>,
        name: Option<String>,
        url: Option<String>,
        refname: Option<String>,
        description: Option<String>,
    }
    let update: Update = parse_json(&body)?;
    if update.key.as_ref().is_some_and(|k| k != &key) {
        return Err(Error::bad_request("key: the key of a build status cannot be changed"));
    }
    let current = sandbox.state().status_input(&hash, &key);
    let current = current.ok_or_else(|| Error::not_found(format!("No build status {key} on commit {hash}")))?;
    let input = StatusInput {
        key,
        state: update.state.unwrap_or(current.state),
        name: update.name.or(current.name),
        url: update.url.or(current.url),
        refname: update.refname.or(current.refname),
        description: update.description.or(current.description),
    };
    Ok(Json(sandbox.apply(|s| s.set_status(&hash, input))?))
}

// ---- pull requests --------------------------------------------------------------------------

/// What `q` and `sort` may name on pull requests.
const PULL_REQUEST_FIELDS: &[&str] = &[
    "id",
    "title",
    "description",
    "state",
    "created_on",
    "updated_on",
    "source.branch.name",
    "destination.branch.name",
    "source.commit.hash",
    "destination.commit.hash",
    "author.username",
    "author.display_name",
];

/// `state` (repeatable; OPEN when not given), `q`, `sort`, and pages of at most 50, as live Cloud
/// answers. With `q`, live Cloud ignores `state` and its OPEN default: the query alone decides
/// (MunifTanjim/node-bitbucket#16 shows it).
async fn list_pull_requests(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    PathParams((w, r)): RepoPath,
    uri: Uri,
) -> Result<Json<Value>, Error> {
    caller.require(&scopes::LIST_PULL_REQUESTS)?;
    check_repo(&w, &r)?;
    let query = uri.query().unwrap_or_default();
    let q = param(query, "q").filter(|q| !q.trim().is_empty());
    let filter = q.as_deref().map(|q| query::parse(q, PULL_REQUEST_FIELDS)).transpose()?;
    let mut states = Vec::new();
    for raw in params(query, "state") {
        states.push(PrState::parse(&raw).ok_or_else(|| Error::bad_request(format!("state: unknown state {raw:?}")))?);
    }
    if filter.is_some() {
        states = vec![PrState::Open, PrState::Merged, PrState::Declined];
    } else if states.is_empty() {
        states.push(PrState::Open);
    }
    let mut values = sandbox.state().pulls_json(&states);
    if let Some(filter) = &filter {
        values.retain(|v| filter.matches(v));
    }
    query::sort(&mut values, param(query, "sort").as_deref(), PULL_REQUEST_FIELDS)?;
    let url = format!("{}{}", sandbox.public_base(), uri.path());
    paginate_up_to(values, query, &url, MAX_PULL_REQUEST_PAGELEN).map(Json)
}

async fn get_pull_request(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    PathParams((w, r, id)): RepoItemPath<u64>,
) -> Result<Json<Value>, Error> {
    caller.require(&scopes::GET_PULL_REQUEST)?;
    check_repo(&w, &r)?;
    let json = sandbox.state().pull_json(id);
    json.map(Json).ok_or_else(|| Error::not_found(format!("Pull request {id} not found")))
}
