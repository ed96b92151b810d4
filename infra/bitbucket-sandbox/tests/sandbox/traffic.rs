//! The traffic log (`SANDBOX_TRAFFIC_LOG`, or `Sandbox::log_traffic_to`): one JSON line per
//! exchange, in the conformance checker's format, secrets redacted, appended atomically.

use bitbucket_sandbox::{
    ACCESS_TOKEN, DC_READ_TOKEN, OAUTH_CONSUMER_KEY, OAUTH_CONSUMER_SECRET, PROBE_HEADER, TEST_HEADER,
};
use reqwest::Method;
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};

use crate::common::{TempPath, start};

#[tokio::test]
async fn each_exchange_is_one_line_in_the_checkers_format() {
    let h = start().await;
    let log = TempPath::new("traffic");
    h.sandbox.log_traffic_to(&log.0).unwrap();

    let user = h.get(&h.url("/2.0/user")).header(TEST_HEADER, "traffic::user").send().await.unwrap();
    assert_eq!(user.status(), 200);
    let hook = json!({ "url": "https://example.test/h", "events": ["repo:push"], "secret": "hook-secret" });
    assert_eq!(h.post(&h.repo("/hooks")).json(&hook).send().await.unwrap().status(), 201);
    let form = Form::new()
        .text("message", "Add")
        .text("branch", "main")
        .part("/docs/a.md", Part::bytes(b"file contents".to_vec()).file_name("a.md"));
    assert_eq!(h.post(&h.repo("/src")).multipart(form).send().await.unwrap().status(), 201);
    let pulls = h.http.get(h.repo("/pullrequests?state=OPEN&state=MERGED&pagelen=5")).bearer_auth(ACCESS_TOKEN);
    assert_eq!(pulls.send().await.unwrap().status(), 200);
    let token = h
        .http
        .post(h.url("/site/oauth2/access_token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", OAUTH_CONSUMER_KEY),
            ("client_secret", OAUTH_CONSUMER_SECRET),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(token.status(), 200);
    let dc = h.http.get(h.dc("/webhooks")).bearer_auth(DC_READ_TOKEN).send().await.unwrap();
    assert_eq!(dc.status(), 401);
    let probe = h.dc_request(Method::GET, &h.dc("/nothing")).header(PROBE_HEADER, "1").send().await.unwrap();
    assert_eq!(probe.status(), 404);
    assert_eq!(h.http.get(h.url("/_admin/requests")).send().await.unwrap().status(), 200);

    let lines = log.json_lines();
    assert_eq!(lines.len(), 7, "one per exchange, /_admin left out: {lines:#?}");
    let text = std::fs::read_to_string(&log.0).unwrap();
    for secret in ["hook-secret", OAUTH_CONSUMER_SECRET, "file contents"] {
        assert!(!text.contains(secret), "{secret} leaked into the log");
    }

    let user = &lines[0];
    assert_eq!(
        (&user["flavor"], &user["method"], &user["root"], &user["path"], &user["status"]),
        (&json!("cloud"), &json!("GET"), &json!("/2.0"), &json!("/user"), &json!(200))
    );
    assert_eq!(
        (&user["query"], &user["request_body"], &user["test"]),
        (&json!([]), &Value::Null, &json!("traffic::user"))
    );
    assert_eq!(user["response_content_type"], "application/json");
    assert_eq!(user["response_body"]["username"], "sandbox-dev");
    assert_eq!(user["auth"]["kind"], "api_token");
    assert_eq!(user["auth"]["scopes"], json!(bitbucket_sandbox::API_TOKEN_SCOPES));

    let hook = &lines[1];
    assert_eq!((&hook["path"], &hook["status"]), (&json!("/repositories/sandbox/demo/hooks"), &json!(201)));
    assert_eq!(hook["request_content_type"], "application/json");
    assert_eq!(hook["request_body"]["secret"], "REDACTED");
    assert_eq!(hook["request_body"]["url"], "https://example.test/h");

    let src = &lines[2];
    assert!(src["request_content_type"].as_str().unwrap().starts_with("multipart/form-data; boundary="));
    assert_eq!(
        src["request_body"],
        json!([
            { "name": "message", "value": "Add" },
            { "name": "branch", "value": "main" },
            { "name": "/docs/a.md", "filename": "a.md", "size": 13 },
        ])
    );
    assert_eq!((&src["status"], &src["response_body"]), (&json!(201), &Value::Null));

    let pulls = &lines[3];
    assert_eq!(pulls["query"], json!([["state", "OPEN"], ["state", "MERGED"], ["pagelen", "5"]]));
    assert_eq!(pulls["auth"], json!({ "kind": "access_token", "scopes": bitbucket_sandbox::ACCESS_TOKEN_SCOPES }));

    let token = &lines[4];
    assert_eq!((&token["root"], &token["path"]), (&json!("/site/oauth2"), &json!("/access_token")));
    assert_eq!(token["request_body"][2], json!({ "name": "client_secret", "value": "REDACTED" }));
    assert_eq!(token["response_body"]["access_token"], "REDACTED");

    let dc = &lines[5];
    assert_eq!(
        (&dc["flavor"], &dc["root"], &dc["status"]),
        (&json!("datacenter"), &json!("/rest/api/latest"), &json!(401))
    );
    assert_eq!(dc["auth"], json!({ "kind": "http_token", "permission": "REPO_READ" }));
    assert_eq!(dc["response_body"]["errors"][0]["exceptionName"], "com.atlassian.bitbucket.AuthorisationException");
    assert!(dc.get("probe").is_none());
    assert_eq!(lines[6]["probe"], true);
}

#[tokio::test]
async fn many_writers_append_whole_lines() {
    let log = TempPath::new("traffic-many");
    let (a, b) = (start().await, start().await);
    for h in [&a, &b] {
        h.sandbox.log_traffic_to(&log.0).unwrap();
    }
    let mut tasks = Vec::new();
    for i in 0..8 {
        let h = if i % 2 == 0 { &a } else { &b };
        let (http, url) = (h.http.clone(), h.repo("/refs/branches?pagelen=100"));
        tasks.push(tokio::spawn(async move {
            for _ in 0..25 {
                let response =
                    http.get(&url).basic_auth(bitbucket_sandbox::API_TOKEN_EMAIL, Some(bitbucket_sandbox::API_TOKEN));
                assert_eq!(response.send().await.unwrap().status(), 200);
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let lines = log.json_lines();
    assert_eq!(lines.len(), 200);
    assert!(lines.iter().all(|l| l["response_body"]["values"].as_array().is_some_and(|v| v.len() == 3)));
}
