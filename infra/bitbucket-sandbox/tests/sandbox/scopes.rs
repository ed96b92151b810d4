//! Scopes and permissions as the descriptions state them: granular scopes for API tokens, legacy
//! scopes (with their implications) for access tokens and OAuth consumers, each 403 naming the
//! scopes in the credential's own vocabulary; Data Center permissions answered 401 with Data
//! Center's envelope and `AuthorisationException`.

use bitbucket_sandbox::{
    self as sb, ACCESS_TOKEN, DC_READ_TOKEN, DC_WRITE_TOKEN, DcPermission, ExtraCredential, Grant, NO_ADMIN_API_TOKEN,
    NO_ADMIN_API_TOKEN_EMAIL, NO_PULLREQUEST_ACCESS_TOKEN, READONLY_ACCESS_TOKEN,
};
use reqwest::{Method, RequestBuilder};
use serde_json::{Value, json};

use crate::common::{Harness, dc_error, start};

const MISSING: &str = "Your credentials lack one or more required privilege scopes.";

/// The `required` scopes of a scope 403 (and checks the rest of it).
async fn refused(response: reqwest::Response) -> Value {
    assert_eq!(response.status(), 403);
    let body: Value = response.json().await.unwrap();
    assert_eq!((&body["type"], &body["error"]["message"]), (&json!("error"), &json!(MISSING)), "{body}");
    assert!(body["error"]["detail"]["granted"].is_array(), "{body}");
    body["error"]["detail"]["required"].clone()
}

impl Harness {
    fn api_token(&self, method: Method, url: &str, email: &str, token: &str) -> RequestBuilder {
        self.http.request(method, url).basic_auth(email, Some(token))
    }
    fn bearer(&self, method: Method, url: &str, token: &str) -> RequestBuilder {
        self.http.request(method, url).bearer_auth(token)
    }
}

#[tokio::test]
async fn an_api_token_without_admin_cannot_list_branch_restrictions() {
    let h = start().await;
    let no_admin = |method, url: &str| h.api_token(method, url, NO_ADMIN_API_TOKEN_EMAIL, NO_ADMIN_API_TOKEN);
    assert_eq!(no_admin(Method::GET, &h.repo("/refs/branches")).send().await.unwrap().status(), 200);
    for path in ["/branch-restrictions", "/branch-restrictions/1"] {
        let response = no_admin(Method::GET, &h.repo(path)).send().await.unwrap();
        // Granular names for an API token, never the legacy `repository:admin`.
        assert_eq!(refused(response).await, json!(["admin:repository:bitbucket"]), "{path}");
    }
    let body: Value =
        no_admin(Method::GET, &h.repo("/branch-restrictions")).send().await.unwrap().json().await.unwrap();
    let granted = body["error"]["detail"]["granted"].as_array().unwrap().clone();
    assert!(granted.iter().all(|s| s.as_str().unwrap().ends_with(":bitbucket")), "{granted:?}");
    assert!(!granted.contains(&json!("admin:repository:bitbucket")));
    // The default API token has it.
    assert_eq!(h.get(&h.repo("/branch-restrictions")).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn pull_requests_need_the_pullrequest_scope() {
    let h = start().await;
    let id = h.sandbox.open_pull_request("develop", "main", "Dev").await;
    for token in [NO_PULLREQUEST_ACCESS_TOKEN, READONLY_ACCESS_TOKEN] {
        for path in ["/pullrequests".to_owned(), format!("/pullrequests/{id}")] {
            let response = h.bearer(Method::GET, &h.repo(&path), token).send().await.unwrap();
            assert_eq!(refused(response).await, json!(["pullrequest"]), "{token} {path}");
        }
        // `repository` (which both have) reads the repository, not its pull requests.
        assert_eq!(h.bearer(Method::GET, &h.repo(""), token).send().await.unwrap().status(), 200);
    }
    assert_eq!(h.bearer(Method::GET, &h.repo("/pullrequests"), ACCESS_TOKEN).send().await.unwrap().status(), 200);

    // `pullrequest` implies `repository` for legacy scopes; granular scopes imply nothing.
    let pr_only = ExtraCredential::AccessToken("pr-only".into());
    h.sandbox.accept_credential_with(pr_only, Grant::scopes(&["pullrequest"]));
    assert_eq!(h.bearer(Method::GET, &h.repo("/pullrequests"), "pr-only").send().await.unwrap().status(), 200);
    assert_eq!(h.bearer(Method::GET, &h.repo("/refs/branches"), "pr-only").send().await.unwrap().status(), 200);
    let api = ExtraCredential::ApiToken { email: "pr@sandbox.test".into(), token: "pr-token".into() };
    h.sandbox.accept_credential_with(api, Grant::scopes(&["read:pullrequest:bitbucket"]));
    let pulls = h.api_token(Method::GET, &h.repo("/pullrequests"), "pr@sandbox.test", "pr-token").send().await;
    assert_eq!(pulls.unwrap().status(), 200);
    let branches = h.api_token(Method::GET, &h.repo("/refs/branches"), "pr@sandbox.test", "pr-token").send().await;
    assert_eq!(refused(branches.unwrap()).await, json!(["read:repository:bitbucket"]));
}

#[tokio::test]
async fn stopping_a_run_needs_pipeline_write() {
    let h = start().await;
    h.sandbox.accept_credential_with(ExtraCredential::AccessToken("pipes".into()), Grant::scopes(&["pipeline"]));
    let body = json!({ "target": { "type": "pipeline_ref_target", "ref_type": "branch", "ref_name": "main" } });
    let run = h.bearer(Method::POST, &h.repo("/pipelines/"), "pipes").json(&body).send().await.unwrap();
    assert_eq!(run.status(), 201, "triggering takes `pipeline`, as the operation's security says");
    let uuid = run.json::<Value>().await.unwrap()["uuid"].as_str().unwrap().to_owned();
    let stop = h.bearer(Method::POST, &h.repo(&format!("/pipelines/{uuid}/stopPipeline")), "pipes").send().await;
    assert_eq!(refused(stop.unwrap()).await, json!(["pipeline:write"]));
    assert_eq!(h.sandbox.pipelines()[0]["state"]["name"], "PENDING", "not stopped");

    // An API token needs read and write to trigger, write to stop.
    let reader = ExtraCredential::ApiToken { email: "ci@sandbox.test".into(), token: "ci".into() };
    h.sandbox.accept_credential_with(reader, Grant::scopes(&["read:pipeline:bitbucket"]));
    let trigger = h.api_token(Method::POST, &h.repo("/pipelines/"), "ci@sandbox.test", "ci").json(&body).send();
    assert_eq!(refused(trigger.await.unwrap()).await, json!(["read:pipeline:bitbucket", "write:pipeline:bitbucket"]));
    let stop = h.api_token(Method::POST, &h.repo(&format!("/pipelines/{uuid}/stopPipeline")), "ci@sandbox.test", "ci");
    assert_eq!(refused(stop.send().await.unwrap()).await, json!(["write:pipeline:bitbucket"]));
    let stop = h.bearer(Method::POST, &h.repo(&format!("/pipelines/{uuid}/stopPipeline")), ACCESS_TOKEN).send();
    assert_eq!(stop.await.unwrap().status(), 204);
}

#[tokio::test]
async fn api_token_scopes_are_granular_and_imply_nothing() {
    let h = start().await;
    let credential = ExtraCredential::ApiToken { email: "w@sandbox.test".into(), token: "w".into() };
    h.sandbox.accept_credential_with(
        credential,
        Grant::scopes(&["write:repository:bitbucket", "read:webhook:bitbucket", "write:webhook:bitbucket"]),
    );
    let as_w = |method, url: &str| h.api_token(method, url, "w@sandbox.test", "w");
    let main = h.tip("main").await;
    // Creating a branch needs read as well as write; deleting one only write.
    let create =
        as_w(Method::POST, &h.repo("/refs/branches")).json(&json!({ "name": "x", "target": { "hash": main } }));
    assert_eq!(
        refused(create.send().await.unwrap()).await,
        json!(["write:repository:bitbucket", "read:repository:bitbucket"])
    );
    h.sandbox.create_branch("x", "main").await.unwrap();
    assert_eq!(as_w(Method::DELETE, &h.repo("/refs/branches/x")).send().await.unwrap().status(), 204);
    // Hooks: read and write to create, delete:webhook to delete.
    let hook = json!({ "url": "https://example.test/h", "events": ["repo:push"] });
    let created = as_w(Method::POST, &h.repo("/hooks")).json(&hook).send().await.unwrap();
    assert_eq!(created.status(), 201);
    let uuid = created.json::<Value>().await.unwrap()["uuid"].as_str().unwrap().to_owned();
    let delete = as_w(Method::DELETE, &h.repo(&format!("/hooks/{uuid}"))).send().await.unwrap();
    assert_eq!(refused(delete).await, json!(["delete:webhook:bitbucket"]));
    assert_eq!(h.sandbox.hooks().len(), 1);
    // `/user` and `/workspaces/{ws}` have their own scopes.
    assert_eq!(
        refused(as_w(Method::GET, &h.url("/2.0/user")).send().await.unwrap()).await,
        json!(["read:user:bitbucket"])
    );
}

#[tokio::test]
async fn oauth_consumers_get_their_own_scopes() {
    let h = start().await;
    let consumer = ExtraCredential::OauthConsumer { key: "k".into(), secret: "s".into() };
    h.sandbox.accept_credential_with(consumer, Grant::scopes(&["repository", "webhook"]));
    let response = h
        .http
        .post(h.url("/site/oauth2/access_token"))
        .basic_auth("k", Some("s"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    let token: Value = response.json().await.unwrap();
    assert_eq!(token["scope"], "repository webhook");
    let access = token["access_token"].as_str().unwrap();
    assert_eq!(h.bearer(Method::GET, &h.repo("/hooks"), access).send().await.unwrap().status(), 200);
    let pulls = h.bearer(Method::GET, &h.repo("/pullrequests"), access).send().await.unwrap();
    assert_eq!(refused(pulls).await, json!(["pullrequest"]), "legacy names for a consumer");
}

#[test]
#[should_panic(expected = "a Data Center token has a permission")]
fn scopes_are_not_for_data_center_tokens() {
    let sandbox = sb::Sandbox::new("http://127.0.0.1:9");
    sandbox.accept_credential_with(ExtraCredential::DcHttpToken("t".into()), Grant::scopes(&["repository"]));
}

// ---- Data Center ------------------------------------------------------------------------------

/// 401 for a missing permission: Data Center's envelope, `AuthorisationException`, and the user
/// named in `X-AUSERNAME` (what tells it from a refused credential).
async fn not_permitted(response: reqwest::Response) {
    assert_eq!(response.headers().get("x-ausername").map(|v| v.to_str().unwrap()), Some("sandbox-dev"));
    let error = dc_error(response, 401).await;
    assert_eq!(error["exceptionName"], "com.atlassian.bitbucket.AuthorisationException");
    assert_eq!(error["context"], Value::Null);
}

#[tokio::test]
async fn data_center_permissions_are_answered_401() {
    let h = start().await;
    h.sandbox.add_branch_restriction("delete", "develop");
    let form = || reqwest::multipart::Form::new().text("content", "x").text("branch", "main");
    let utils = h.dc_api("branch-utils/latest", "/branches");
    let restrictions = h.dc_api("branch-permissions/2.0", "/restrictions");
    let hook = json!({ "name": "n", "url": "https://example.test/h", "events": ["repo:refs_changed"] });
    let branch = json!({ "name": "fresh", "startPoint": "main" });
    // (request, the least permission that gets it through)
    let cases = |token: &str| -> Vec<(RequestBuilder, DcPermission)> {
        let r = |method, url: &str| h.http.request(method, url).bearer_auth(token);
        vec![
            (r(Method::GET, &h.dc("")), DcPermission::RepoRead),
            (r(Method::GET, &h.dc("/default-branch")), DcPermission::RepoRead),
            (r(Method::GET, &h.dc("/branches")), DcPermission::RepoRead),
            (r(Method::GET, &h.dc("/raw/README.md")), DcPermission::RepoRead),
            (r(Method::GET, &h.dc("/pull-requests")), DcPermission::RepoRead),
            (r(Method::PUT, &h.dc(&format!("/browse/{token}.txt"))).multipart(form()), DcPermission::RepoWrite),
            (r(Method::POST, &h.dc("/branches")).json(&branch), DcPermission::RepoWrite),
            (r(Method::DELETE, &utils).json(&json!({ "name": "nope" })), DcPermission::RepoWrite),
            (r(Method::GET, &h.dc("/webhooks")), DcPermission::RepoAdmin),
            (r(Method::POST, &h.dc("/webhooks")).json(&hook), DcPermission::RepoAdmin),
            (r(Method::GET, &restrictions), DcPermission::RepoAdmin),
        ]
    };
    h.sandbox.accept_credential_with(
        ExtraCredential::DcHttpToken("reader".into()),
        Grant::Permission(DcPermission::RepoRead),
    );
    for (token, has) in [
        (DC_READ_TOKEN, DcPermission::RepoRead),
        ("reader", DcPermission::RepoRead),
        (DC_WRITE_TOKEN, DcPermission::RepoWrite),
    ] {
        for (request, needs) in cases(token) {
            let response = request.send().await.unwrap();
            let what = format!("{token} {}", response.url());
            if has >= needs {
                assert!(response.status().is_success(), "{what}: {}", response.status());
                h.sandbox.delete_branch_quietly("fresh").ok();
            } else {
                not_permitted(response).await;
            }
        }
    }
    // A branch permission is a permission too: 401 even with REPO_WRITE.
    let restricted = h.http.delete(&utils).bearer_auth(DC_WRITE_TOKEN).json(&json!({ "name": "develop" })).send();
    not_permitted(restricted.await.unwrap()).await;
    // A refused credential is told apart: no X-AUSERNAME, IncorrectPasswordAuthenticationException.
    let wrong = h.http.get(h.dc("/webhooks")).bearer_auth("nope").send().await.unwrap();
    assert!(wrong.headers().get("x-ausername").is_none());
    let error = dc_error(wrong, 401).await;
    assert_eq!(error["exceptionName"], "com.atlassian.bitbucket.auth.IncorrectPasswordAuthenticationException");
}
