//! docs/openapi.json against what runs and what is deployed: the local stack serves exactly the
//! file; every route of the template's HTTP API is described and every described admin
//! operation is deployed; every described operation is served (not the router's fallback) and
//! answers a status it documents. Schemathesis (infra/schemathesis.sh) checks the answers' shapes.

use std::collections::HashSet;

use cross_function_tests::stack::{Stack, stack};
use serde_json::Value;

const METHODS: &[&str] = &["get", "put", "post", "delete", "patch", "head", "options", "trace"];

fn repo_file(relative: &str) -> String {
    let path = format!("{}/../{relative}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn spec() -> Value {
    serde_json::from_str(&repo_file("docs/openapi.json")).expect("docs/openapi.json is JSON")
}

/// `(METHOD, path, operation)` of every operation in the description.
fn operations(spec: &Value) -> Vec<(String, String, Value)> {
    let paths = spec["paths"].as_object().expect("paths");
    let mut out = Vec::new();
    for (path, item) in paths {
        for (method, operation) in item.as_object().expect("a path item") {
            if METHODS.contains(&method.as_str()) {
                out.push((method.to_uppercase(), path.clone(), operation.clone()));
            }
        }
    }
    out
}

/// `(METHOD, path, API)` of every `Type: HttpApi` event in template.yaml. A line-based read:
/// the template's `!Ref`/`!GetAtt`/`!Sub` tags trip strict YAML parsers, and SAM events always
/// read `Type`, then `Properties` holding `ApiId`, `Path` and `Method`.
fn http_events() -> Vec<(String, String, String)> {
    let template = repo_file("template.yaml");
    let mut events = Vec::new();
    let mut in_http_event = false;
    let (mut path, mut method, mut api): (Option<String>, Option<String>, Option<String>) = (None, None, None);
    for line in template.lines().map(str::trim) {
        if let Some(kind) = line.strip_prefix("Type: ") {
            in_http_event = kind == "HttpApi";
            (path, method, api) = (None, None, None);
            continue;
        }
        if !in_http_event {
            continue;
        }
        if let Some(a) = line.strip_prefix("ApiId: !Ref ") {
            api = Some(a.to_owned());
        }
        if let Some(p) = line.strip_prefix("Path: ") {
            path = Some(p.to_owned());
        }
        if let Some(m) = line.strip_prefix("Method: ") {
            method = Some(m.to_uppercase());
        }
        if let (Some(p), Some(m), Some(a)) = (&path, &method, &api) {
            events.push((m.clone(), p.clone(), a.clone()));
            in_http_event = false;
        }
    }
    let count = template.lines().filter(|l| l.trim() == "Type: HttpApi").count();
    assert_eq!(events.len(), count, "every HttpApi event has an ApiId, a Path and a Method: {events:?}");
    events
}

/// `(METHOD, path)` of every HTTP API route in template.yaml.
fn deployed_routes() -> Vec<(String, String)> {
    let routes: Vec<_> = http_events().into_iter().map(|(m, p, _)| (m, p)).collect();
    assert!(routes.contains(&("GET".into(), "/integrations".into())), "the reader finds the routes: {routes:?}");
    routes
}

/// The routes of one HTTP API of the template.
fn deployed_routes_of(api: &str) -> Vec<(String, String)> {
    http_events().into_iter().filter(|(_, _, a)| a == api).map(|(m, p, _)| (m, p)).collect()
}

/// Whether an API Gateway route (`{name}` one segment, `{proxy+}` one or more) routes the
/// described `path`: a described `{param}` is matched only by a route parameter.
fn route_matches(route: &str, path: &str) -> bool {
    let route: Vec<&str> = route.trim_matches('/').split('/').collect();
    let path: Vec<&str> = path.trim_matches('/').split('/').collect();
    for (i, segment) in route.iter().enumerate() {
        if segment.ends_with("+}") {
            return path.len() > i;
        }
        let Some(described) = path.get(i) else { return false };
        let is_parameter = |s: &str| s.starts_with('{') && s.ends_with('}');
        if !(is_parameter(segment) || (!is_parameter(described) && segment == described)) {
            return false;
        }
    }
    route.len() == path.len()
}

/// Only the local stack serves these (tag `local stack`); the webhook is the receiver's own
/// Function URL, not a route of the HTTP API.
fn only_local(operation: &Value) -> bool {
    operation["tags"].as_array().is_some_and(|tags| tags.iter().any(|t| t == "local stack"))
}

#[test]
fn the_description_is_openapi_3_1_with_unique_operation_ids_and_json_errors() {
    let spec = spec();
    let version = spec["openapi"].as_str().expect("an openapi version");
    assert!(version.starts_with("3.1."), "{version}");
    let operations = operations(&spec);
    let mut ids = HashSet::new();
    for (method, path, operation) in &operations {
        let id = operation["operationId"].as_str().unwrap_or_else(|| panic!("{method} {path}: no operationId"));
        assert!(ids.insert(id.to_owned()), "operationId {id} used twice");
        assert!(operation["responses"].as_object().is_some_and(|r| !r.is_empty()), "{method} {path}: responses");
        let public = operation["security"].as_array().is_some_and(Vec::is_empty);
        let documented: Vec<&String> = operation["responses"].as_object().unwrap().keys().collect();
        if !public {
            assert!(documented.iter().any(|s| *s == "401"), "{method} {path}: an admin route documents 401");
        }
    }
    assert!(operations.len() >= 25, "{} operations", operations.len());
    let error = &spec["components"]["schemas"]["Error"];
    assert_eq!(error["required"], serde_json::json!(["error"]));
}

#[test]
fn every_route_of_the_http_api_is_described() {
    let spec = spec();
    let described = operations(&spec);
    for (method, route) in deployed_routes() {
        let found =
            described.iter().any(|(m, path, _)| (method == "ANY" || *m == method) && route_matches(&route, path));
        assert!(found, "{method} {route} (template.yaml) is not in docs/openapi.json");
    }
    let webhook = &spec["paths"]["/webhooks/{integration_id}"]["post"];
    assert!(webhook.is_object(), "the webhook receiver's route is described");
    let webhook_route = deployed_routes_of("WebhookApi");
    assert_eq!(
        webhook_route,
        [("POST".to_owned(), "/webhooks/{integration_id}".to_owned())],
        "the receiver is deployed alone behind its own throttled HTTP API"
    );
}

#[test]
fn every_described_admin_operation_is_deployed() {
    let routes = deployed_routes();
    for (method, path, operation) in operations(&spec()) {
        if only_local(&operation) || path.starts_with("/webhooks/") {
            continue;
        }
        let deployed = routes.iter().any(|(m, route)| (m == "ANY" || *m == method) && route_matches(route, &path));
        assert!(deployed, "{method} {path} is described but template.yaml's HTTP API does not route it");
    }
}

#[test]
fn route_matching_follows_api_gateway() {
    assert!(route_matches("/integrations/{id}/{action}", "/integrations/{id}/disconnect"));
    assert!(route_matches("/integrations/{id}/backup-targets/{proxy+}", "/integrations/{id}/backup-targets/{name}"));
    assert!(route_matches(
        "/integrations/{id}/backup-targets/{proxy+}",
        "/integrations/{id}/backup-targets/{name}/history"
    ));
    assert!(!route_matches("/integrations/{id}/backup-targets/{proxy+}", "/integrations/{id}/backup-targets"));
    assert!(!route_matches("/integrations/{id}/events", "/integrations/{id}/{action}"));
    assert!(!route_matches("/integrations/{id}", "/integrations/{id}/events"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stack_serves_the_file_and_every_described_operation() {
    let stack = stack("openapi").await;

    // Unauthenticated, as JSON, byte for byte the file in the repository.
    let response = stack.http.get(stack.url("/openapi.json")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("application/json"), "{content_type}");
    let served = response.text().await.unwrap();
    let file = repo_file("docs/openapi.json");
    assert!(served == file, "GET /openapi.json differs from docs/openapi.json (rebuild the local stack)");
    assert_eq!(serde_json::from_str::<Value>(&served).unwrap(), spec());

    // Each operation, on resources that do not exist: routed to its handler (not the
    // router's fallback, not an unknown lifecycle action), with a documented status; and with
    // a path segment that is not UTF-8, a documented JSON 400.
    for (method, path, operation) in operations(&spec()) {
        let missing = path
            .replace("{id}", "no-such-integration")
            .replace("{integration_id}", "no-such-integration")
            .replace("{name}", "no-such-target")
            .replace("{uuid}", "8d3c2f0e-1b7a-4c55-9e0d-3f6a2b1c4d5e");
        let (status, body) = call(&stack, &method, &missing, &operation).await;
        let message = body["error"]["message"].as_str().unwrap_or("");
        let unrouted = message.starts_with("no such route") || message.starts_with("no action");
        assert!(!unrouted, "{method} {path} is described but not served: {body}");
        assert!(
            operation["responses"].get(&status).is_some(),
            "{method} {missing} answered {status}, undocumented: {body}"
        );

        if let Some(at) = missing.find("no-such-") {
            let not_utf8 = format!("{}%FF{}", &missing[..at], &missing[at..].replacen("no-such-", "", 1));
            let (status, body) = call(&stack, &method, &not_utf8, &operation).await;
            assert_eq!((status.as_str(), &body["error"]["code"]), ("400", &Value::from("bad_request")), "{not_utf8}");
            assert!(operation["responses"].get("400").is_some(), "{method} {path} does not document its 400");
        }
    }

    stack.stop().await;
}

/// `(status, JSON body or null)` of `operation` on `path`, authenticated, with an empty JSON
/// object when it takes a body.
async fn call(stack: &Stack, method: &str, path: &str, operation: &Value) -> (String, Value) {
    let mut request = stack
        .http
        .request(method.parse().unwrap(), stack.url(path))
        .bearer_auth(&stack.token)
        .header("X-Event-Key", "repo:push");
    if operation.get("requestBody").is_some() {
        request = request.header("Content-Type", "application/json").body("{}");
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16().to_string();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// What schemathesis found: axum's own rejections of a repeated query parameter or a path
/// segment that is not UTF-8 were plain text; every error is the JSON error now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_and_query_rejections_are_json_errors() {
    let stack = stack("openapi-rejections").await;
    for path in [
        "/integrations/sandbox/events?limit=1&limit=2",
        "/integrations/sandbox/pipelines?status=PENDING&status=FAILED",
        "/integrations/sandbox?force=maybe",
        "/integrations/%FF",
        "/integrations/sandbox/backup-targets/%C3%28",
    ] {
        let method = if path.contains("force") { reqwest::Method::DELETE } else { reqwest::Method::GET };
        let response = stack.http.request(method, stack.url(path)).bearer_auth(&stack.token).send().await.unwrap();
        assert_eq!(response.status(), 400, "{path}");
        let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
        assert_eq!(content_type, "application/json", "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "bad_request", "{path}: {body}");
    }
    let response = stack
        .http
        .post(stack.url("/webhooks/%FF"))
        .header("Content-Type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "bad_request", "{body}");
    stack.stop().await;
}
