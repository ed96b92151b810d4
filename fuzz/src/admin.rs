//! The admin API's request bodies, read as the routers read them (`entry::http::parse_json`),
//! then put through the pure validation each route applies. Parse and validation failures must
//! be typed client errors (400), never panics; what validation accepts must be well formed and
//! validate again to itself.

use chrono::{TimeZone, Utc};
use serde::de::DeserializeOwned;
use serde_json::Value;
use domain::bitbucket::{CLOUD_API, Credential, valid_branch_name};
use domain::Error;
use domain::backup::{self, BackupTarget, Snapshot, TargetSpec};
use domain::connection::{IntegrationPatch, NewIntegration};
use domain::integration::{Options, valid_id};
use domain::pipelines::RunRequest;
use domain::pruning::{PruneAction, PruneMode, PruneRequest, restriction_matches};
use entry::http::{ApiError, parse_json, parse_limit};
use domain::webhook::Flavor;

/// What the first input byte selects (modulo 8; `'0'`–`'7'` in the kept corpus).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// `POST /integrations`
    NewIntegration,
    /// `PATCH /integrations/{id}`
    IntegrationPatch,
    /// `PUT /integrations/{id}/backup-targets/{name}`
    TargetSpec,
    /// `POST …/backup-targets/{name}/snapshots`
    Snapshot,
    /// `POST /integrations/{id}/pipelines`
    RunRequest,
    /// `POST /integrations/{id}/prune`
    PruneRequest,
    /// The path and query parameters those routes take, as text: ids, target names, `limit`.
    Params,
    /// An integration's `options` on their own (create and patch both carry them).
    Options,
}

impl Body {
    pub const ALL: [Body; 8] = [
        Body::NewIntegration,
        Body::IntegrationPatch,
        Body::TargetSpec,
        Body::Snapshot,
        Body::RunRequest,
        Body::PruneRequest,
        Body::Params,
        Body::Options,
    ];

    pub fn from_selector(byte: u8) -> Body {
        Body::ALL[usize::from(byte) % Body::ALL.len()]
    }
}

/// Bodies over the routes' limit are refused before parsing (413), so never reach this code.
const MAX_BODY: usize = entry::http::MAX_ADMIN_BODY;

pub fn check(data: &[u8]) {
    let Some((&selector, body)) = data.split_first() else { return };
    if body.len() > MAX_BODY {
        return;
    }
    match Body::from_selector(selector) {
        Body::NewIntegration => {
            if let Some(request) = parsed::<NewIntegration>(body) {
                new_integration(request);
            }
        }
        Body::IntegrationPatch => {
            if let Some(patch) = parsed::<IntegrationPatch>(body) {
                integration_patch(patch);
            }
        }
        Body::TargetSpec => {
            if let Some(spec) = parsed::<TargetSpec>(body) {
                target_spec(spec);
            }
        }
        Body::Snapshot => {
            if let Some(snapshot) = parsed::<Snapshot>(body) {
                snapshot_document(&snapshot);
            }
        }
        Body::RunRequest => {
            if let Some(request) = parsed::<RunRequest>(body) {
                run_request(request);
            }
        }
        Body::PruneRequest => {
            if let Some(request) = parsed::<PruneRequest>(body) {
                prune_request(request);
            }
        }
        Body::Params => params(&String::from_utf8_lossy(body)),
        Body::Options => {
            if let Some(options) = parsed::<Options>(body) {
                options_globs(&options, "main");
            }
        }
    }
}

/// The router's parse: a value, or a 400 that says what is wrong.
fn parsed<T: DeserializeOwned>(body: &[u8]) -> Option<T> {
    match parse_json::<T>(body) {
        Ok(value) => Some(value),
        Err(ApiError::BadRequest(message)) => {
            assert!(!message.is_empty());
            None
        }
        Err(other) => panic!("a body that does not parse must be a 400, got {other:?}"),
    }
}

/// A validation failure must reach the caller as a 400, like a parse failure.
fn bad_request(e: impl Into<ApiError>) {
    let e = e.into();
    assert!(matches!(e, ApiError::BadRequest(_)), "validation failure mapped to {e:?}");
}

fn new_integration(request: NewIntegration) {
    let flavor = request.flavor;
    options_globs(&request.options, &request.name);
    credential(&request.credential);
    let (name, description, target) = match request.validate(true) {
        Ok(valid) => valid,
        Err(e) => {
            assert!(matches!(e, Error::Invalid { .. }), "{e:?}");
            return bad_request(e);
        }
    };
    assert!(name == name.trim() && (1..=50).contains(&name.chars().count()), "name {name:?}");
    assert!(description == description.trim() && description.chars().count() <= 255);
    assert_eq!(target.flavor, flavor);
    for part in [&target.owner, &target.slug] {
        assert!(
            !part.is_empty()
                && part.len() <= 128
                && part.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-~".contains(&b))
        );
    }
    assert!(
        target.base_url.starts_with("https://") || target.base_url.starts_with("http://"),
        "base_url {:?}",
        target.base_url
    );
    assert!(!target.base_url.ends_with('/'), "base_url {:?} keeps a trailing slash", target.base_url);
    // API paths are appended to the base URL, so it can carry no query or fragment.
    assert!(!target.base_url.contains(['?', '#']), "base_url {:?} ends in a query or fragment", target.base_url);
    if flavor == Flavor::Cloud && request.base_url.is_none() && request.repository_url.is_none() {
        assert_eq!(target.base_url, CLOUD_API);
    }
    // What validation settled, sent again field by field, validates to itself.
    let again = NewIntegration {
        name: name.clone(),
        description: description.clone(),
        flavor,
        base_url: Some(target.base_url.clone()),
        workspace: (flavor == Flavor::Cloud).then(|| target.owner.clone()),
        project_key: (flavor == Flavor::DataCenter).then(|| target.owner.clone()),
        repository: Some(target.slug.clone()),
        repository_url: None,
        credential: request.credential.clone(),
        options: Options::default(),
        register_webhook: request.register_webhook,
    };
    match again.validate(true) {
        Ok(settled) => assert_eq!(settled, (name, description, target), "validation is not idempotent"),
        Err(e) => panic!("validated integration refused when sent again: {e}"),
    }
}

fn integration_patch(patch: IntegrationPatch) {
    if let Some(options) = &patch.options {
        options_globs(options, patch.name.as_deref().unwrap_or("main"));
    }
    if let Some(c) = &patch.credential {
        credential(c);
    }
}

/// A credential survives the secret store's round trip, and its summary never shows a secret.
fn credential(c: &Credential) {
    let back = Credential::from_secret("fuzz", &c.to_secret()).expect("a stored credential reads back");
    assert_eq!(back.kind(), c.kind());
    assert_eq!(back.summary(), c.summary());
    assert_eq!(back.empty_field(), c.empty_field());
    assert!(c.fits(Flavor::Cloud) != c.fits(Flavor::DataCenter), "each kind fits exactly one flavor");
    let summary = c.summary();
    assert!(summary.get("kind").and_then(Value::as_str) == Some(c.kind()));
    let allowed = ["kind", "email", "key", "username"];
    assert!(summary.as_object().is_some_and(|o| o.keys().all(|k| allowed.contains(&k.as_str()))), "{summary}");
}

/// The options' globs are matched against branch names on every push and prune: matching
/// must end (quickly) for any pattern and name the API accepts.
fn options_globs(options: &Options, name: &str) {
    let names = [name, "main", "feature/a/b"];
    for pattern in options.build_branches.iter().chain(&options.stale_branches.protected) {
        for name in names {
            let narrow = domain::glob::matches(pattern, name);
            let broad = restriction_matches(pattern, name);
            // Reading stars as `**` only widens a match.
            assert!(!narrow || broad, "{pattern:?} matches {name:?} but its broad reading does not");
        }
        assert!(domain::glob::matches(pattern, pattern) || pattern.contains('*'), "{pattern:?} must match itself");
    }
}

fn target_spec(spec: TargetSpec) {
    let now = Utc.timestamp_opt(1_795_000_000, 0).single().expect("a fixed instant");
    // The target name comes from the path; try a plain one and the filename itself.
    for name in ["backup", spec.filename.as_str()] {
        match spec.clone().into_target(name, now) {
            Ok(target) => backup_target(&target, now),
            Err(e) => {
                assert!(matches!(e, Error::Invalid { .. }), "{e:?}");
                bad_request(e);
            }
        }
    }
}

fn backup_target(target: &BackupTarget, now: chrono::DateTime<Utc>) {
    let path = target.path();
    assert!(path.len() <= 1025, "path of {} bytes", path.len());
    for segment in path.split('/') {
        assert!(!segment.is_empty() && segment != "." && segment != "..", "path {path:?}");
        assert!(!segment.chars().any(|c| c == '\\' || c.is_control()), "path {path:?}");
    }
    assert!(valid_branch_name(&target.branch), "branch {:?}", target.branch);
    if let Some(author) = &target.author {
        assert!(author.contains(" <") && author.ends_with('>') && author.contains('@'), "author {author:?}");
    }
    let sha = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let message = target.commit_message(None, u64::MAX, sha);
    assert!(!message.trim().is_empty(), "empty commit message from {:?}", target.message);
    // The settled target, defined again, is the same target.
    let again = TargetSpec {
        directory: target.directory.clone(),
        filename: target.filename.clone(),
        branch: target.branch.clone(),
        author: target.author.clone(),
        message: target.message.clone(),
    };
    match again.into_target(&target.name, now) {
        Ok(settled) => assert_eq!(&settled, target, "target validation is not idempotent"),
        Err(e) => panic!("validated target refused when defined again: {e}"),
    }
}

/// The canonical form: deterministic, and a fixed point (committing the committed file again
/// changes nothing).
fn snapshot_document(snapshot: &Snapshot) {
    let Ok(bytes) = backup::canonical(&snapshot.document) else { return };
    assert_eq!(bytes.last(), Some(&b'\n'));
    let reread: Box<serde_json::value::RawValue> = serde_json::from_slice(&bytes).expect("the canonical form is JSON");
    assert_eq!(backup::canonical(&reread).ok(), Some(bytes), "canonical form is not a fixed point");
}

fn run_request(request: RunRequest) {
    match request.validate() {
        Ok(settled) => {
            assert!(valid_branch_name(&settled.branch), "branch {:?}", settled.branch);
            if let Some(commit) = &settled.commit {
                assert!((7..=40).contains(&commit.len()));
                assert!(commit.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)), "{commit:?}");
            }
            assert!(settled.variables.len() <= 100);
            let body = bitbucket_client::pipeline_body(&settled);
            assert_eq!(body.pointer("/target/ref_name").and_then(Value::as_str), Some(settled.branch.as_str()));
        }
        Err(e) => {
            assert!(matches!(e, Error::Invalid { .. }), "{e:?}");
            bad_request(e);
        }
    }
}

fn prune_request(request: PruneRequest) {
    let (mode, dry_run) = (request.mode, request.dry_run);
    match request.validate() {
        Ok(PruneAction::Reconcile) => assert!(mode == PruneMode::Environments && dry_run.is_none()),
        Ok(PruneAction::StaleBranches { dry_run: settled }) => {
            assert_eq!(mode, PruneMode::StaleBranches);
            assert_eq!(settled, dry_run.unwrap_or(true), "a prune is a dry run unless asked otherwise");
        }
        Err(e) => {
            assert!(matches!(e, Error::Invalid { .. }), "{e:?}");
            bad_request(e);
        }
    }
}

/// Path and query parameters: the integration id, the backup target name, `?limit=`.
fn params(text: &str) {
    if valid_id(text) {
        assert!((1..=64).contains(&text.len()) && !text.contains('/'));
    }
    match backup::check_name(text) {
        Ok(()) => assert!(text != "." && text != ".." && !text.contains('/') && !text.is_empty()),
        Err(e) => bad_request(e),
    }
    match parse_limit(Some(text), 20, 100) {
        Ok(limit) => assert!((1..=100).contains(&limit)),
        Err(e) => assert!(matches!(e, ApiError::BadRequest(_)), "{e:?}"),
    }
}
