//! The capability table (`domain::bitbucket::capabilities`: feature → operations → scopes and
//! Data Center permissions) against what it claims to be: Atlassian's descriptions, the README's
//! scope table and docs/BITBUCKET.md (rendered from it), and what the sandbox enforces — the
//! connection test reports each feature `ok` with exactly the scopes the table lists and names
//! the scope Bitbucket says is missing without one; the documented scopes do everything; a missing
//! scope or Data Center permission leaves the integration `active`, a refused token does not.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bitbucket_sandbox as sb;
use cross_function_tests::stack::{Stack, stack};
use domain::bitbucket::capabilities::{self, CONNECTION, FEATURES, OPERATIONS, Permission, Vocabulary};
use domain::bitbucket::{BitbucketError, Credential, RepoTarget};
use domain::secrets::Secret;
use domain::webhook::Flavor;
use serde_json::{Value, json};

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e} (the descriptions live in ../shared beside the repo)", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array().map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default()
}

/// The permission a Data Center operation's text names: `<strong>REPO_ADMIN</strong>`, or
/// "write permission" (editFile's 401 says it in words).
fn described_permission(description: &str) -> Option<Permission> {
    // Most texts say `<strong>REPO_ADMIN</strong>`; the build-status ones `**REPO_READ**`.
    let named = ["REPO_READ", "REPO_WRITE", "REPO_ADMIN"]
        .into_iter()
        .find(|p| description.contains(&format!("<strong>{p}</strong>")) || description.contains(&format!("**{p}**")));
    match named {
        Some("REPO_READ") => Some(Permission::RepoRead),
        Some("REPO_WRITE") => Some(Permission::RepoWrite),
        Some(_) => Some(Permission::RepoAdmin),
        None if description.contains("write permission") => Some(Permission::RepoWrite),
        None => None,
    }
}

#[test]
fn the_table_says_what_the_descriptions_say() {
    let dir = std::env::var_os("BITBUCKET_OPENAPI_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("../shared/bitbucket-openapi"));
    let cloud = read_json(&dir.join("cloud.swagger.v3.json"));
    let dc = read_json(&dir.join("datacenter-9.2.swagger.v3.json"));
    let oauth = read_json(&repo_root().join("infra/conformance/supplement/cloud-oauth.openapi.json"));
    for o in OPERATIONS {
        let (doc, path) = match o.flavor {
            Flavor::Cloud if o.path.starts_with("/site/oauth2") => (&oauth, o.path.trim_start_matches("/site/oauth2")),
            Flavor::Cloud => (&cloud, o.path),
            Flavor::DataCenter => (&dc, o.path),
        };
        let described = &doc["paths"][path][o.method.to_lowercase()];
        assert!(described.is_object(), "{}: {} {} is not described", o.key, o.method, o.path);
        assert_eq!(described["summary"].as_str(), Some(o.summary), "{}: summary", o.key);
        assert_eq!(described["operationId"].as_str(), o.operation_id, "{}: operationId", o.key);
        match o.flavor {
            Flavor::Cloud if std::ptr::eq(doc, &oauth) => assert!(o.legacy.is_empty() && o.granular.is_empty()),
            Flavor::Cloud => {
                let legacy: Vec<&str> = described["security"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .flat_map(|requirement| strings(&requirement["oauth2"]))
                    .collect();
                assert_eq!(legacy, o.legacy, "{}: the operation's oauth2 scopes", o.key);
                let granular = strings(&described["x-atlassian-oauth2-scopes"][0]["scopes"]);
                assert_eq!(granular, o.granular, "{}: x-atlassian-oauth2-scopes", o.key);
            }
            Flavor::DataCenter => {
                // The operation's text, or its 401's ("does not have write permission").
                let text = format!(
                    "{} {}",
                    described["description"].as_str().unwrap_or_default(),
                    described["responses"]["401"]["description"].as_str().unwrap_or_default()
                );
                assert_eq!(described_permission(&text), o.permission, "{}: the permission its text names", o.key);
                assert!(described["responses"]["401"].is_object(), "{}: a missing permission is a 401", o.key);
            }
        }
    }
    // What the sandbox's credentials hold is what the table needs, and the sandbox serves
    // `/workspaces/{ws}` besides (the client does not call it).
    let mut granular = capabilities::every_scope(Vocabulary::Granular);
    granular.push("read:workspace:bitbucket");
    granular.sort();
    let mut sandbox: Vec<&str> = sb::API_TOKEN_SCOPES.to_vec();
    sandbox.sort();
    assert_eq!(granular, sandbox);
}

const README_BEGIN: &str =
    "<!-- scope table: generated from domain::bitbucket::capabilities by tests/capabilities.rs -->";
const README_END: &str = "<!-- end of the scope table -->";
const DOCS_BEGIN: &str =
    "<!-- operation table: generated from domain::bitbucket::capabilities by tests/capabilities.rs -->";
const DOCS_END: &str = "<!-- end of the operation table -->";

/// `file`'s text between `begin` and `end` must be `expected`; with `BLESS=1` it is rewritten.
fn generated(file: &str, begin: &str, end: &str, expected: &str) {
    let path = repo_root().join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    let (Some(start), Some(stop)) = (text.find(begin), text.find(end)) else {
        panic!("{file} lacks the markers {begin:?} … {end:?}")
    };
    let start = start + begin.len() + 1;
    if &text[start..stop] == expected {
        return;
    }
    if std::env::var_os("BLESS").is_some() {
        std::fs::write(&path, format!("{}{expected}{}", &text[..start], &text[stop..])).unwrap();
        return;
    }
    panic!(
        "{file} differs from domain::bitbucket::capabilities; rewrite it with \
         `BLESS=1 cargo test -p cross-function-tests --test system capabilities::`. Expected:\n{expected}"
    );
}

#[test]
fn the_readme_and_docs_tables_are_the_table() {
    generated("README.md", README_BEGIN, README_END, &capabilities::readme_table());
    generated("docs/BITBUCKET.md", DOCS_BEGIN, DOCS_END, &capabilities::operations_table());
}

async fn test_report(s: &Stack, id: &str) -> Value {
    let (status, answer) = s.post(&format!("/integrations/{id}/test")).await;
    assert_eq!(status, 200, "{answer}");
    answer
}

fn feature<'a>(report: &'a Value, name: &str) -> &'a Value {
    &report["test"]["features"][name]
}

fn union(a: &[&'static str], b: &[&'static str]) -> Vec<&'static str> {
    let mut all = a.to_vec();
    all.extend(b.iter().filter(|s| !a.contains(s)));
    all
}

/// For each Cloud feature: exactly the scopes the table lists (with the connection's) make the
/// connection test report it `ok`; without any one scope a probe needs, it is `missing` that
/// scope, named as Bitbucket names it to this kind of credential.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_sandbox_enforces_the_table_feature_by_feature() {
    let s = stack("capabilities").await;
    let sandbox = &s.running.sandbox;
    let kinds = [
        (
            Vocabulary::Granular,
            sb::ExtraCredential::ApiToken { email: "table@sandbox.test".into(), token: "table-token".into() },
            json!({"kind": "api_token", "email": "table@sandbox.test", "token": "table-token"}),
        ),
        (
            Vocabulary::Legacy,
            sb::ExtraCredential::AccessToken("table-access-token".into()),
            json!({"kind": "access_token", "token": "table-access-token"}),
        ),
    ];
    for (vocabulary, extra, credential) in kinds {
        let grant = |scopes: &[&str]| sandbox.accept_credential_with(extra.clone(), sb::Grant::scopes(scopes));
        let connection = CONNECTION.needs(vocabulary);
        grant(&connection);
        let (status, created) = s.create(credential.clone(), json!({"register_webhook": false})).await;
        assert_eq!(status, 201, "{vocabulary:?}: the connection's scopes are enough to connect: {created}");
        let id = created["id"].as_str().unwrap().to_owned();
        for f in FEATURES.iter().filter(|f| f.name != CONNECTION.name && f.supported(Flavor::Cloud)) {
            let scopes = union(&connection, &f.needs(vocabulary));
            grant(&scopes);
            let report = test_report(&s, &id).await;
            assert_eq!(feature(&report, f.name)["status"], "ok", "{vocabulary:?} {}, {scopes:?}: {report}", f.name);
            for (_, operation) in f.probes(Flavor::Cloud) {
                for scope in operation.needs(vocabulary).into_iter().filter(|s| !connection.contains(s)) {
                    let fewer: Vec<&str> = scopes.iter().copied().filter(|s| *s != scope).collect();
                    grant(&fewer);
                    let report = test_report(&s, &id).await;
                    let shown = feature(&report, f.name);
                    assert_eq!(shown["status"], "missing", "{vocabulary:?} {} without {scope}: {report}", f.name);
                    assert!(strings(&shown["missing"]).contains(&scope), "{vocabulary:?} {}: {shown}", f.name);
                    assert_eq!(report["integration"]["status"], "active", "a missing scope is no bad credential");
                }
            }
        }
    }

    // Data Center: a token's permission against each feature's.
    for level in [Permission::RepoRead, Permission::RepoWrite, Permission::RepoAdmin] {
        let token = format!("table-dc-{}", level.as_str());
        let permission = match level {
            Permission::RepoRead => sb::DcPermission::RepoRead,
            Permission::RepoWrite => sb::DcPermission::RepoWrite,
            Permission::RepoAdmin => sb::DcPermission::RepoAdmin,
        };
        sandbox
            .accept_credential_with(sb::ExtraCredential::DcHttpToken(token.clone()), sb::Grant::Permission(permission));
        let id = s.data_center_integration(json!({"credential": {"kind": "http_token", "token": token}})).await;
        let report = test_report(&s, &id).await;
        assert_eq!(report["test"]["ok"], true, "{report}");
        for f in FEATURES {
            let shown = feature(&report, f.name);
            let Some(need) = f.on(Flavor::DataCenter).filter_map(|o| o.permission).max() else {
                assert_eq!(shown["status"], "unsupported", "{}: {shown}", f.name);
                continue;
            };
            let probed = f.probes(Flavor::DataCenter).iter().any(|(_, o)| o.permission == Some(need));
            match (level >= need, probed) {
                (true, _) => assert_eq!(shown["status"], "ok", "{level:?} {}: {shown}", f.name),
                (false, true) => {
                    assert_eq!((&shown["status"], strings(&shown["missing"])), (&json!("missing"), vec![need.as_str()]))
                }
                (false, false) => {
                    assert_eq!(shown["status"], "ok", "{level:?} {}: reads pass: {shown}", f.name);
                    assert!(strings(&shown["not_checked"]).contains(&need.as_str()), "{level:?} {}: {shown}", f.name);
                }
            }
        }
    }
    s.stop().await;
}

/// Makes `branch` a branch whose pull request was merged: the stale-branch cleanup deletes it.
async fn merged_branch(sandbox: &sb::Sandbox, branch: &str) {
    sandbox.create_branch(branch, "main").await.unwrap();
    sandbox.push(branch, &[("done.txt", branch)], "done").await;
    let pr = sandbox.open_pull_request(branch, "main", "Done").await;
    sandbox.merge_pull_request(pr).await.unwrap();
}

/// The README's "everything" scopes, and nothing more, do everything: connect with a webhook,
/// back up, run and stop a build, delete a stale branch, and delete the integration (its webhook).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_documented_scopes_do_everything() {
    let s = stack("capabilities").await;
    let sandbox = &s.running.sandbox;
    let kinds = [
        (
            Vocabulary::Granular,
            sb::ExtraCredential::ApiToken { email: "docs@sandbox.test".into(), token: "docs-token".into() },
            json!({"kind": "api_token", "email": "docs@sandbox.test", "token": "docs-token"}),
        ),
        (
            Vocabulary::Legacy,
            sb::ExtraCredential::AccessToken("docs-access-token".into()),
            json!({"kind": "access_token", "token": "docs-access-token"}),
        ),
    ];
    for (n, (vocabulary, extra, credential)) in kinds.into_iter().enumerate() {
        sandbox.accept_credential_with(extra, sb::Grant::scopes(&capabilities::every_scope(vocabulary)));
        let options = json!({"stale_branches": {"merged_days": 0}});
        let (status, created) = s.create(credential, json!({"name": format!("docs {n}"), "options": options})).await;
        assert_eq!(status, 201, "{vocabulary:?}: {created}");
        let id = created["id"].as_str().unwrap().to_owned();
        let report = test_report(&s, &id).await;
        for f in FEATURES {
            assert_eq!(feature(&report, f.name)["status"], "ok", "{vocabulary:?} {}: {report}", f.name);
        }

        let target = format!("/integrations/{id}/backup-targets/docs");
        assert_eq!(s.put(&target, json!({"filename": "docs.json", "branch": format!("docs-{n}")})).await.0, 201);
        let (status, snapshot) = s.post_json(&format!("{target}/snapshots"), json!({"document": {"n": n}})).await;
        assert_eq!((status, &snapshot["changed"]), (201, &json!(true)), "{vocabulary:?} backup: {snapshot}");

        let (status, run) = s.post_json(&format!("/integrations/{id}/pipelines"), json!({"branch": "develop"})).await;
        assert_eq!(status, 201, "{vocabulary:?} run: {run}");
        let uuid = run["uuid"].as_str().unwrap();
        let (status, stopped) = s.post(&format!("/integrations/{id}/pipelines/{uuid}/stop")).await;
        assert_eq!(status, 202, "{vocabulary:?} stop: {stopped}");

        let branch = format!("done/docs-{n}");
        merged_branch(sandbox, &branch).await;
        let (status, pruned) = s
            .post_json(&format!("/integrations/{id}/prune"), json!({"mode": "stale-branches", "dry_run": false}))
            .await;
        assert_eq!(status, 200, "{vocabulary:?} cleanup: {pruned}");
        let deleted = pruned["branches"].as_array().unwrap().iter().find(|b| b["branch"] == branch.as_str());
        assert_eq!(deleted.map(|b| &b["outcome"]), Some(&json!("deleted")), "{vocabulary:?}: {pruned}");

        let hook = created["webhook"]["id"].as_str().unwrap().to_owned();
        assert_eq!(s.delete(&format!("/integrations/{id}")).await.0, 204, "{vocabulary:?}: delete");
        assert!(s.hook(&hook).is_none(), "{vocabulary:?}: its webhook is deleted");
    }
    s.stop().await;
}

/// A credential without a scope one feature needs: the connection test names it for that feature
/// alone, the feature's own request is refused naming it, and the integration stays `active`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_missing_scope_is_named_for_its_feature_and_leaves_the_integration_active() {
    let s = stack("capabilities").await;
    let no_admin = json!({"kind": "api_token", "email": sb::NO_ADMIN_API_TOKEN_EMAIL, "token": sb::NO_ADMIN_API_TOKEN});
    let (status, created) = s.create(no_admin, json!({})).await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let report = test_report(&s, &id).await;
    assert_eq!(report["test"]["ok"], true, "{report}");
    let cleanup = feature(&report, "branch cleanup");
    assert_eq!((&cleanup["status"], &cleanup["missing"]), (&json!("missing"), &json!(["admin:repository:bitbucket"])));
    assert!(cleanup["message"].as_str().unwrap().contains("List branch restrictions"), "{cleanup}");
    for name in ["connection", "webhooks", "backups", "pipelines", "environments"] {
        // Bitbucket's refusal listed the scopes the token holds: the writes are settled too.
        assert_eq!(feature(&report, name), &json!({"status": "ok"}), "{name}: {report}");
    }
    let (status, refused) =
        s.post_json(&format!("/integrations/{id}/prune"), json!({"mode": "stale-branches", "dry_run": true})).await;
    assert_eq!((status, refused["error"]["code"].as_str()), (422, Some("forbidden")), "{refused}");
    let message = refused["error"]["message"].as_str().unwrap();
    assert!(message.contains("missing admin:repository:bitbucket") && message.contains("branch cleanup"), "{message}");
    let (_, integration) = s.get(&format!("/integrations/{id}")).await;
    assert_eq!(
        (integration["status"].as_str(), integration["last_error"]["reason"].as_str()),
        (Some("active"), Some("forbidden")),
        "{integration}"
    );

    let no_pull_requests = json!({"kind": "access_token", "token": sb::NO_PULLREQUEST_ACCESS_TOKEN});
    let (status, created) = s.create(no_pull_requests, json!({"name": "No PRs"})).await;
    assert_eq!(status, 201, "{created}");
    let report = test_report(&s, created["id"].as_str().unwrap()).await;
    assert_eq!(feature(&report, "branch cleanup")["missing"], json!(["pullrequest"]), "{report}");
    // The environments' scheduled reconciliation lists pull requests too (what webhooks missed).
    assert_eq!(feature(&report, "environments")["missing"], json!(["pullrequest"]), "{report}");
    assert_eq!(feature(&report, "pipelines")["status"], "ok", "{report}");
    s.stop().await;
}

/// Data Center answers a missing permission with 401 naming the user: that is `forbidden`
/// naming the permission, and the integration stays `active`; a refused token is a bad credential.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn data_center_tells_a_missing_permission_from_a_refused_token() {
    let s = stack("capabilities").await;
    let sandbox = &s.running.sandbox;
    let token = sb::ExtraCredential::DcHttpToken("dc-downgraded".into());
    sandbox.accept_credential_with(token.clone(), sb::Grant::Permission(sb::DcPermission::RepoAdmin));
    let id = s
        .data_center_integration(json!({
            "register_webhook": true,
            "credential": {"kind": "http_token", "token": "dc-downgraded"},
        }))
        .await;
    // The token's user loses REPO_ADMIN on the repository.
    sandbox.accept_credential_with(token, sb::Grant::Permission(sb::DcPermission::RepoWrite));

    let report = test_report(&s, &id).await;
    assert_eq!((&report["test"]["ok"], &report["test"]["reason"]), (&json!(false), &json!("forbidden")), "{report}");
    assert!(report["test"]["message"].as_str().unwrap().contains("missing REPO_ADMIN"), "{report}");
    assert_eq!(feature(&report, "webhooks")["missing"], json!(["REPO_ADMIN"]));
    assert_eq!(feature(&report, "branch cleanup")["missing"], json!(["REPO_ADMIN"]));
    assert_eq!(feature(&report, "backups")["not_checked"], json!(["REPO_WRITE"]), "{report}");
    assert_eq!(feature(&report, "pipelines")["status"], "unsupported");
    assert_eq!(report["integration"]["status"], "active", "a missing permission is no bad credential");

    let (status, refused) = s.delete(&format!("/integrations/{id}")).await;
    assert_eq!((status, refused["error"]["code"].as_str()), (422, Some("forbidden")), "{refused}");
    let message = refused["error"]["message"].as_str().unwrap();
    assert!(message.contains("missing REPO_ADMIN") && message.contains("webhooks"), "{message}");
    let (status, refused) =
        s.post_json(&format!("/integrations/{id}/prune"), json!({"mode": "stale-branches", "dry_run": true})).await;
    assert_eq!((status, refused["error"]["code"].as_str()), (422, Some("forbidden")), "{refused}");
    let (_, integration) = s.get(&format!("/integrations/{id}")).await;
    assert_eq!(integration["status"], "active", "{integration}");

    // A token Data Center refuses (no user named): bad credentials, and the integration is `error`.
    sandbox.inject_fault(sb::Fault {
        method: None,
        path_contains: "/rest/".into(),
        kind: sb::FaultKind::Revoke,
        times: None,
    });
    let report = test_report(&s, &id).await;
    assert_eq!(report["test"]["reason"], "bad_credentials", "{report}");
    assert_eq!(report["integration"]["status"], "error");
    sandbox.clear_faults();

    // A branch a ref restriction protects: Data Center's 401 names the user, so it is refused,
    // not a credential problem.
    sandbox.create_branch("locked/x", "main").await.unwrap();
    sandbox.add_branch_restriction("delete", "locked/*");
    let target = RepoTarget {
        flavor: Flavor::DataCenter,
        base_url: s.url("/sandbox/bitbucket"),
        owner: sb::DC_PROJECT.into(),
        slug: sb::REPOSITORY.into(),
    };
    let credential = Credential::HttpToken { token: Secret::new(sb::DC_HTTP_TOKEN) };
    let client = domain::bitbucket::Connect::connect(
        &bitbucket_client::Connector::default(),
        &target,
        credential,
        Duration::from_secs(10),
    );
    let refused = client.delete_branch("locked/x").await.unwrap_err();
    assert!(matches!(refused, BitbucketError::Forbidden { .. }) && !refused.is_credential_problem(), "{refused:?}");
    assert!(refused.to_string().contains("branch permission"), "{refused}");
    s.stop().await;
}
