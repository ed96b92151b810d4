//! Bad input to every endpoint of the local stack, as one table: malformed, truncated, oversized,
//! wrongly encoded, wrongly signed and mislabelled requests, unknown ids, odd path and query
//! parameters, missing or wrong admin tokens. Each row names the status and error `code` the
//! code documents; every refusal must be the JSON error shape with a request id. Around the
//! whole table the state (every record, the secret file) and what reached the sandbox Bitbucket
//! are snapshotted: bad input changes nothing and writes nothing to Bitbucket.

use std::collections::BTreeSet;

use base64::Engine as _;
use bitbucket_sandbox as sb;
use cross_function_tests::manifest;
use cross_function_tests::records::{RawResponse, raw_request, state_records};
use cross_function_tests::stack::{Stack, stack};
use domain::WebhookSecrets;
use domain::signature::sign;
use entry::http::MAX_ADMIN_BODY;
use serde_json::{Value, json};

/// The receiver's cap (Bitbucket Cloud's own).
const WEBHOOK_LIMIT: usize = 256 * 1024;
/// The snapshot route reads the document limit plus room for the envelope.
const SNAPSHOT_LIMIT: usize = domain::backup::MAX_DOCUMENT_BYTES + 64 * 1024;

/// Every route the functions serve (from `functions/*/src/lib.rs`), plus the shared fallback.
const ROUTES: &[&str] = &[
    "POST /webhooks/{integration_id}",
    "GET /integrations",
    "POST /integrations",
    "GET /integrations/{id}",
    "PATCH /integrations/{id}",
    "DELETE /integrations/{id}",
    "POST /integrations/{id}/test",
    "POST /integrations/{id}/{action}",
    "GET /integrations/{id}/events",
    "GET /integrations/{id}/backup-targets",
    "PUT /integrations/{id}/backup-targets/{name}",
    "GET /integrations/{id}/backup-targets/{name}",
    "DELETE /integrations/{id}/backup-targets/{name}",
    "POST /integrations/{id}/backup-targets/{name}/snapshots",
    "GET /integrations/{id}/backup-targets/{name}/history",
    "POST /integrations/{id}/pipelines",
    "POST /integrations/{id}/pipelines/{uuid}/stop",
    "GET /integrations/{id}/pipelines",
    "POST /integrations/{id}/pipelines/refresh",
    "GET /integrations/{id}/pipelines/{uuid}",
    "POST /integrations/{id}/prune",
    "GET /integrations/{id}/environments",
    "GET /integrations/{id}/prune-audit",
    "fallback",
];

#[derive(Clone)]
enum Auth {
    /// `Authorization: Bearer <the admin token>`.
    Admin,
    /// No `Authorization` header.
    Without,
    /// This exact `Authorization` value.
    Header(String),
}

#[derive(Clone)]
struct Row {
    route: &'static str,
    name: String,
    method: &'static str,
    target: String,
    auth: Auth,
    headers: Vec<(String, String)>,
    body: Option<Vec<u8>>,
    status: u16,
    /// The error code; `None` for the one documented success (an unsigned Data Center ping).
    code: Option<&'static str>,
}

fn row(route: &'static str, name: impl Into<String>, target: impl Into<String>) -> Row {
    let method = route.split(' ').next().filter(|m| *m != "fallback").unwrap_or("GET");
    Row {
        route,
        name: name.into(),
        method,
        target: target.into(),
        auth: Auth::Admin,
        headers: Vec::new(),
        body: None,
        status: 0,
        code: None,
    }
}

impl Row {
    fn method(mut self, method: &'static str) -> Self {
        self.method = method;
        self
    }

    fn auth(mut self, auth: Auth) -> Self {
        self.auth = auth;
        self
    }

    fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_owned(), value.into()));
        self
    }

    fn remove_header(mut self, name: &str) -> Self {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self
    }

    /// Replaces every header called `name` with this one.
    fn set_header(self, name: &str, value: impl Into<String>) -> Self {
        self.remove_header(name).header(name, value)
    }

    /// `body` sent as `application/json`.
    fn json(self, body: impl AsRef<[u8]>) -> Self {
        self.typed("application/json", body)
    }

    fn typed(self, content_type: &str, body: impl AsRef<[u8]>) -> Self {
        self.header("Content-Type", content_type).raw(body)
    }

    /// `body` without a `Content-Type`.
    fn raw(mut self, body: impl AsRef<[u8]>) -> Self {
        self.body = Some(body.as_ref().to_vec());
        self
    }

    fn expect(mut self, status: u16, code: &'static str) -> Self {
        self.status = status;
        self.code = Some(code);
        self
    }
}

/// What the table needs to know about the stack it runs on.
struct Ctx {
    token: String,
    cloud_secret: String,
    dc_secret: String,
    dc: String,
    inactive: String,
    archived: String,
    sandbox_api: String,
}

/// A JSON body grown past `size` bytes (a long string value), still well formed.
fn padded(size: usize) -> Vec<u8> {
    format!(r#"{{"name": "{}"}}"#, "x".repeat(size)).into_bytes()
}

fn text(v: &Value) -> Vec<u8> {
    v.to_string().into_bytes()
}

/// Merges `extra` into the object `base`.
fn with(base: &Value, extra: Value) -> Value {
    let mut out = base.clone();
    for (k, v) in extra.as_object().expect("an object") {
        out[k] = v.clone();
    }
    out
}

fn without(base: &Value, field: &str) -> Value {
    let mut out = base.clone();
    out.as_object_mut().expect("an object").remove(field);
    out
}

/// Rows every route behind the admin token gets: no token, or not the right one.
fn auth_rows(route: &'static str, target: &str, body: Option<&Value>, ctx: &Ctx) -> Vec<Row> {
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("admin:{}", ctx.token));
    let variants = [
        ("no Authorization header", Auth::Without),
        ("a wrong bearer token", Auth::Header("Bearer not-the-token".into())),
        ("the token with a byte more", Auth::Header(format!("Bearer {}x", ctx.token))),
        ("the token as Basic", Auth::Header(format!("Basic {basic}"))),
        ("the token without a scheme", Auth::Header(ctx.token.clone())),
        ("an empty bearer", Auth::Header("Bearer ".into())),
    ];
    variants
        .into_iter()
        .map(|(name, auth)| {
            let r = row(route, name, target).auth(auth);
            let r = match body {
                Some(b) => r.json(text(b)),
                None => r,
            };
            r.expect(401, "unauthorized")
        })
        .collect()
}

/// Rows for a route whose `{id}` names no integration (or a mangled one).
fn id_rows(route: &'static str, template: &str, body: Option<&Value>) -> Vec<Row> {
    let long = "a".repeat(65);
    let ids = [
        ("an unknown integration", "nope", 404, "not_found"),
        ("an id with encoded traversal", "..%2F..%2Fetc%2Fpasswd", 404, "not_found"),
        ("an id of encoded dots", "%2E%2E", 404, "not_found"),
        ("an id with an encoded NUL", "a%00b", 404, "not_found"),
        ("an id over 64 characters", long.as_str(), 404, "not_found"),
        ("an id that is not UTF-8", "%FF%FE", 400, "bad_request"),
    ];
    ids.into_iter()
        .map(|(name, id, status, code)| {
            let r = row(route, name, template.replace("{id}", id));
            let r = match body {
                Some(b) => r.json(text(b)),
                None => r,
            };
            r.expect(status, code)
        })
        .collect()
}

/// Rows for a route that reads a JSON body: every way a body can be wrong before its fields
/// are even looked at. `valid` is a body the route accepts; `limit` the route's body cap.
fn body_rows(route: &'static str, target: &str, valid: &Value, limit: usize) -> Vec<Row> {
    let valid_text = valid.to_string();
    let half = &valid_text[..valid_text.len() / 2];
    let mut unknown = valid.clone();
    unknown["surprise_field"] = json!(true);
    // serde builds a struct from an array of its fields in order, too.
    let as_array = Value::Array(valid.as_object().expect("an object body").values().cloned().collect());
    let mut bom = b"\xEF\xBB\xBF".to_vec();
    bom.extend_from_slice(valid_text.as_bytes());
    let r = |name: &str| row(route, name, target);
    vec![
        r("malformed JSON").json(r#"{"a": }"#).expect(400, "bad_request"),
        r("JSON truncated half way").json(half).expect(400, "bad_request"),
        r("a JSON array").json("[]").expect(400, "bad_request"),
        r("the fields as an array").json(text(&as_array)).expect(400, "bad_request"),
        r("a JSON string").json(r#""text""#).expect(400, "bad_request"),
        r("a JSON number").json("42").expect(400, "bad_request"),
        r("JSON null").json("null").expect(400, "bad_request"),
        r("JSON true").json("true").expect(400, "bad_request"),
        r("an empty body").json("").expect(400, "bad_request"),
        r("whitespace only").json("  \n ").expect(400, "bad_request"),
        r("invalid UTF-8").json(b"{\"name\": \"\xFF\xFE\"}".as_slice()).expect(400, "bad_request"),
        r("a raw control character in a string").json("{\"name\": \"a\u{1}b\"}").expect(400, "bad_request"),
        r("a lone surrogate escape").json(r#"{"name": "\ud800"}"#).expect(400, "bad_request"),
        r("a number out of range").json(r#"{"name": 1e999999}"#).expect(400, "bad_request"),
        r("trailing garbage").json(format!("{valid_text} x")).expect(400, "bad_request"),
        r("two documents").json(format!("{valid_text}{valid_text}")).expect(400, "bad_request"),
        r("a byte order mark").json(&bom).expect(400, "bad_request"),
        r("nesting 10000 deep").json("[".repeat(10_000)).expect(400, "bad_request"),
        r("an unknown field").json(text(&unknown)).expect(400, "bad_request"),
        r("a duplicated field")
            .json(format!("{},{}", &valid_text[..valid_text.len() - 1], &valid_text[1..]))
            .expect(400, "bad_request"),
        r("text/plain").typed("text/plain", &valid_text).expect(415, "unsupported_media_type"),
        r("no content type").raw(&valid_text).expect(415, "unsupported_media_type"),
        r("a form content type")
            .typed("application/x-www-form-urlencoded", "a=1")
            .expect(415, "unsupported_media_type"),
        r("application/jsonp").typed("application/jsonp", &valid_text).expect(415, "unsupported_media_type"),
        r("an empty content type").typed("", &valid_text).expect(415, "unsupported_media_type"),
        r("a body one byte over the limit").json(padded(limit)).expect(413, "payload_too_large"),
    ]
}

/// Rows for a listing's query parameters.
fn paging_rows(route: &'static str, path: &str, max: usize) -> Vec<Row> {
    let cursor_text = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("not json");
    let cursor_shape = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r#"{"a": 1}"#);
    let over = (max + 1).to_string();
    let queries = [
        ("limit=-1", "limit=-1".to_owned()),
        ("limit=abc", "limit=abc".into()),
        ("limit=0", "limit=0".into()),
        ("limit over the maximum", format!("limit={over}")),
        ("a huge limit", "limit=99999999999999999999999999".into()),
        ("a fractional limit", "limit=1.5".into()),
        ("an empty limit", "limit=".into()),
        ("a limit that is not UTF-8", "limit=%FF".into()),
        ("limit given twice", "limit=1&limit=2".into()),
        ("a garbage cursor", "cursor=!!!".into()),
        ("a cursor that is not JSON", format!("cursor={cursor_text}")),
        ("a cursor of the wrong shape", format!("cursor={cursor_shape}")),
        ("a cursor that is not UTF-8", "cursor=%FF".into()),
    ];
    queries
        .into_iter()
        .map(|(name, query)| row(route, name, format!("{path}?{query}")).expect(400, "bad_request"))
        .collect()
}

struct Hook<'a> {
    ctx: &'a Ctx,
}

impl Hook<'_> {
    /// A delivery to `id` as Bitbucket Cloud sends it: `key`, a delivery id, `body`, and the
    /// given signature header (if any).
    fn cloud(&self, name: &str, id: &str, key: &str, body: &[u8], signature: Option<String>) -> Row {
        let mut r = row("POST /webhooks/{integration_id}", name, format!("/webhooks/{id}"))
            .auth(Auth::Without)
            .header("X-Request-UUID", format!("bad-{}", uuid::Uuid::new_v4()));
        if !key.is_empty() {
            r = r.header("X-Event-Key", key);
        }
        if let Some(signature) = signature {
            r = r.header("X-Hub-Signature", signature);
        }
        r.json(body)
    }

    /// Signed with the sandbox integration's secret.
    fn signed(&self, name: &str, key: &str, body: &[u8]) -> Row {
        self.cloud(name, "sandbox", key, body, Some(sign(self.ctx.cloud_secret.as_bytes(), body)))
    }

    /// A delivery to the Data Center integration, with Data Center's headers.
    fn dc(&self, name: &str, key: &str, body: &[u8], signature: Option<String>) -> Row {
        let mut r = row("POST /webhooks/{integration_id}", name, format!("/webhooks/{}", self.ctx.dc))
            .auth(Auth::Without)
            .header("X-Request-Id", format!("bad-{}", uuid::Uuid::new_v4()))
            .header("X-Event-Key", key);
        if let Some(signature) = signature {
            r = r.header("X-Hub-Signature", signature);
        }
        r.json(body)
    }
}

fn webhook_rows(ctx: &Ctx) -> Vec<Row> {
    let fixtures = manifest();
    let fixture = |key: &str| fixtures.iter().find(|f| f.event_key == key).expect("a fixture for the key").body();
    let push = fixture("repo:push");
    let refs_changed = fixture("repo:refs_changed");
    let h = Hook { ctx };
    let sig = |secret: &str, body: &[u8]| Some(sign(secret.as_bytes(), body));
    let cs = ctx.cloud_secret.as_str();
    let digest = &sign(cs.as_bytes(), &push)["sha256=".len()..];
    let big = {
        let mut body = br#"{"push": {"changes": []}, "pad": ""#.to_vec();
        body.extend(std::iter::repeat_n(b'x', WEBHOOK_LIMIT));
        body.extend_from_slice(br#""}"#);
        body
    };
    let truncated = &push[..push.len() / 2];
    let not_utf8 = b"{\"push\": {\"changes\": []}, \"x\": \"\xC3\x28\xFF\"}".to_vec();
    let route = "POST /webhooks/{integration_id}";
    let mut rows = vec![
        // Signatures.
        h.cloud("no signature", "sandbox", "repo:push", &push, None).expect(401, "unauthorized"),
        h.cloud("an empty signature", "sandbox", "repo:push", &push, Some(String::new())).expect(401, "unauthorized"),
        h.cloud("a garbled signature", "sandbox", "repo:push", &push, Some("sha256=zz".into()))
            .expect(401, "unauthorized"),
        h.cloud("a sha1 signature", "sandbox", "repo:push", &push, Some(format!("sha1={}", &digest[..40])))
            .expect(401, "unauthorized"),
        h.cloud("a digest one digit short", "sandbox", "repo:push", &push, Some(format!("sha256={}", &digest[1..])))
            .expect(401, "unauthorized"),
        h.cloud("a bare digest", "sandbox", "repo:push", &push, Some(digest.to_owned())).expect(401, "unauthorized"),
        h.cloud(
            "two signatures in one header",
            "sandbox",
            "repo:push",
            &push,
            Some(format!("sha256={digest},sha256={digest}")),
        )
        .expect(401, "unauthorized"),
        h.cloud("a signature with the wrong secret", "sandbox", "repo:push", &push, sig("not-the-secret", &push))
            .expect(401, "unauthorized"),
        h.cloud("signed with another integration's secret", "sandbox", "repo:push", &push, sig(&ctx.dc_secret, &push))
            .expect(401, "unauthorized"),
        h.cloud(
            "a signature over other bytes",
            "sandbox",
            "repo:push",
            &push,
            sig(cs, br#"{"push": {"changes": []}}"#),
        )
        .expect(401, "unauthorized"),
        h.cloud(
            "a signature over the body without its last byte",
            "sandbox",
            "repo:push",
            &push,
            sig(cs, &push[..push.len() - 1]),
        )
        .expect(401, "unauthorized"),
        h.cloud("a signature 8 KB long", "sandbox", "repo:push", &push, Some(format!("sha256={}", "a".repeat(8192))))
            .expect(401, "unauthorized"),
        h.cloud("an unknown event key, unsigned", "sandbox", "repo:teleported", &push, None)
            .expect(401, "unauthorized"),
        h.cloud("an empty body, unsigned", "sandbox", "repo:push", b"", None).expect(401, "unauthorized"),
        h.dc("a Data Center ping with a wrong signature", "diagnostics:ping", b"{}", sig("wrong", b"{}"))
            .expect(401, "unauthorized"),
        // Bodies, signed with the right secret.
        h.signed("truncated JSON", "repo:push", truncated).expect(400, "bad_request"),
        h.signed("bytes that are not UTF-8", "repo:push", &not_utf8).expect(400, "bad_request"),
        h.signed("an empty body", "repo:push", b"").expect(400, "bad_request"),
        h.signed("a JSON array", "repo:push", b"[]").expect(400, "bad_request"),
        h.signed("a push of the wrong shape", "repo:push", br#"{"push": 5}"#).expect(400, "bad_request"),
        h.signed("a pull request event without its pull request", "pullrequest:created", b"{}")
            .expect(400, "bad_request"),
        h.signed("an unknown event key over bytes that are not JSON", "repo:teleported", b"not json")
            .expect(400, "bad_request"),
        h.signed("an unknown event key over a JSON string", "repo:teleported", br#""text""#).expect(400, "bad_request"),
        h.signed("an unknown event key over truncated JSON", "repo:teleported", truncated).expect(400, "bad_request"),
        h.signed("no event key", "", &push).expect(400, "bad_request"),
        h.signed("an empty event key", "", &push).set_header("X-Event-Key", "  ").expect(400, "bad_request"),
        // Mislabelled: the key (and headers) of the other flavor over this flavor's body.
        h.dc(
            "a Cloud key with Cloud headers over a Data Center body",
            "repo:push",
            &refs_changed,
            sig(&ctx.dc_secret, &refs_changed),
        )
        .header("X-Request-UUID", "mislabelled-1")
        .expect(400, "bad_request"),
        h.cloud(
            "a Data Center key with Data Center headers over a Cloud body",
            "sandbox",
            "pr:opened",
            &push,
            sig(cs, &push),
        )
        .remove_header("X-Request-UUID")
        .header("X-Request-Id", "mislabelled-2")
        .expect(400, "bad_request"),
        // Sizes and content types: the size is checked before anything else.
        h.signed("a body over 256 KB", "repo:push", &big).expect(413, "payload_too_large"),
        h.cloud("a body over 256 KB, unsigned", "sandbox", "repo:push", &big, None).expect(413, "payload_too_large"),
        h.signed("a body over 256 KB as text/plain", "repo:push", &big)
            .set_header("Content-Type", "text/plain")
            .expect(413, "payload_too_large"),
        row(route, "text/plain", "/webhooks/sandbox")
            .auth(Auth::Without)
            .header("X-Event-Key", "repo:push")
            .header("X-Hub-Signature", sign(cs.as_bytes(), &push))
            .typed("text/plain", &push)
            .expect(415, "unsupported_media_type"),
        row(route, "no content type", "/webhooks/sandbox")
            .auth(Auth::Without)
            .header("X-Event-Key", "repo:push")
            .header("X-Hub-Signature", sign(cs.as_bytes(), &push))
            .raw(&push)
            .expect(415, "unsupported_media_type"),
        row(route, "a form content type", "/webhooks/sandbox")
            .auth(Auth::Without)
            .header("X-Event-Key", "repo:push")
            .typed("application/x-www-form-urlencoded", "payload=%7B%7D")
            .expect(415, "unsupported_media_type"),
        // Delivery ids become part of a key.
        h.signed("a delivery id with a space", "repo:push", &push)
            .set_header("X-Request-UUID", "a b")
            .expect(400, "bad_request"),
        h.signed("a delivery id over 128 characters", "repo:push", &push)
            .set_header("X-Request-UUID", "d".repeat(129))
            .expect(400, "bad_request"),
        // Integrations that do not take deliveries.
        h.cloud("an unknown integration", "nope", "repo:push", &push, sig(cs, &push)).expect(404, "not_found"),
        h.cloud("an id with encoded traversal", "..%2F..%2Fetc%2Fpasswd", "repo:push", &push, sig(cs, &push))
            .expect(404, "not_found"),
        h.cloud("an id of encoded dots", "%2E%2E", "repo:push", &push, sig(cs, &push)).expect(404, "not_found"),
        h.cloud("an id over 64 characters", &"a".repeat(65), "repo:push", &push, sig(cs, &push))
            .expect(404, "not_found"),
        h.cloud("an id that is not UTF-8", "%FF%FE", "repo:push", &push, sig(cs, &push)).expect(400, "bad_request"),
        h.cloud("a disconnected integration", &ctx.inactive, "repo:push", &push, sig(cs, &push)).expect(410, "gone"),
        h.cloud("an archived integration", &ctx.archived, "repo:push", &push, sig(cs, &push)).expect(410, "gone"),
        // Not the webhook route.
        row(route, "GET on the webhook route", "/webhooks/sandbox")
            .method("GET")
            .auth(Auth::Without)
            .expect(404, "not_found"),
        row(route, "PUT on the webhook route", "/webhooks/sandbox")
            .method("PUT")
            .auth(Auth::Without)
            .json(&push)
            .expect(404, "not_found"),
        row(route, "no integration id", "/webhooks/").auth(Auth::Without).json(&push).expect(404, "not_found"),
    ];
    // Data Center's "Test connection" ping is unsigned by design: answered, nothing recorded.
    let mut ping =
        h.dc("an unsigned Data Center ping (documented: 200, not recorded)", "diagnostics:ping", b"{}", None);
    ping.status = 200;
    rows.push(ping);
    rows
}

fn integration_rows(ctx: &Ctx) -> Vec<Row> {
    let create = "POST /integrations";
    let valid = json!({
        "name": "Bad input", "flavor": "cloud", "base_url": ctx.sandbox_api, "workspace": sb::WORKSPACE,
        "repository": sb::REPOSITORY,
        "credential": {"kind": "api_token", "email": sb::API_TOKEN_EMAIL, "token": sb::API_TOKEN},
    });
    let dc_valid = json!({
        "name": "Bad DC", "flavor": "datacenter", "base_url": ctx.sandbox_api.replace("/2.0", ""),
        "project_key": sb::DC_PROJECT, "repository": sb::REPOSITORY,
        "credential": {"kind": "http_token", "token": sb::DC_HTTP_TOKEN},
    });
    let credential = |c: Value| with(&valid, json!({"credential": c}));
    let bad_create = [
        ("no name", without(&valid, "name")),
        ("an empty name", with(&valid, json!({"name": ""}))),
        ("a blank name", with(&valid, json!({"name": "   "}))),
        ("a name of 51 characters", with(&valid, json!({"name": "n".repeat(51)}))),
        ("a name that is a number", with(&valid, json!({"name": 5}))),
        ("a description of 256 characters", with(&valid, json!({"description": "d".repeat(256)}))),
        ("an unknown flavor", with(&valid, json!({"flavor": "github"}))),
        ("no flavor", without(&valid, "flavor")),
        ("a plain-http base URL off loopback", with(&valid, json!({"base_url": "http://example.com/2.0"}))),
        ("an ftp base URL", with(&valid, json!({"base_url": "ftp://127.0.0.1/2.0"}))),
        ("a base URL that is not a URL", with(&valid, json!({"base_url": "not a url"}))),
        ("a base URL with credentials", with(&valid, json!({"base_url": "https://user:pw@example.com"}))),
        ("a base URL with a query", with(&valid, json!({"base_url": "https://example.com/2.0?x=1"}))),
        ("no workspace", without(&valid, "workspace")),
        ("a workspace with a slash", with(&valid, json!({"workspace": "a/b"}))),
        ("a workspace of dots", with(&valid, json!({"workspace": ".."}))),
        ("a repository of one dot", with(&valid, json!({"repository": "."}))),
        ("an empty repository", with(&valid, json!({"repository": ""}))),
        ("a repository with a percent", with(&valid, json!({"repository": "de%2Fmo"}))),
        ("a workspace of 129 characters", with(&valid, json!({"workspace": "w".repeat(129)}))),
        (
            "a repository URL off bitbucket.org",
            with(&without(&valid, "workspace"), json!({"repository_url": "https://github.com/a/b"})),
        ),
        ("a repository URL that is not a URL", with(&without(&valid, "workspace"), json!({"repository_url": "nope"}))),
        ("no credential", without(&valid, "credential")),
        ("an unknown credential kind", credential(json!({"kind": "password", "user": "x"}))),
        ("a credential without kind", credential(json!({"token": "x"}))),
        ("a credential with an extra field", credential(json!({"kind": "access_token", "token": "x", "scope": "all"}))),
        ("an API token without an email", credential(json!({"kind": "api_token", "token": "x"}))),
        ("an API token with a bad email", credential(json!({"kind": "api_token", "email": "nobody", "token": "x"}))),
        ("an empty API token", credential(json!({"kind": "api_token", "email": "a@b.c", "token": ""}))),
        ("a token that is a number", credential(json!({"kind": "access_token", "token": 5}))),
        ("a blank access token", credential(json!({"kind": "access_token", "token": "  "}))),
        ("an OAuth consumer without key", credential(json!({"kind": "oauth_consumer", "key": "", "secret": "s"}))),
        (
            "an app password without username",
            credential(json!({"kind": "app_password", "username": "", "app_password": "p"})),
        ),
        ("a Data Center token on Cloud", credential(json!({"kind": "http_token", "token": "x"}))),
        ("Data Center without base URL", without(&dc_valid, "base_url")),
        ("Data Center without project key", without(&dc_valid, "project_key")),
        ("an API token on Data Center", with(&dc_valid, json!({"credential": valid["credential"]}))),
        ("an unknown option", with(&valid, json!({"options": {"auto_merge": true}}))),
        ("an option of the wrong type", with(&valid, json!({"options": {"fetch_branches": "yes"}}))),
        ("a negative stale-branch age", with(&valid, json!({"options": {"stale_branches": {"merged_days": -1}}}))),
        ("build branches as a string", with(&valid, json!({"options": {"build_branches": "main"}}))),
        ("options as an empty list", with(&valid, json!({"options": []}))),
        ("options as a list of values", with(&valid, json!({"options": [false, false]}))),
        ("a stale-branch policy as a list", with(&valid, json!({"options": {"stale_branches": [true, 0]}}))),
        ("a credential as a list", credential(json!(["access_token", sb::ACCESS_TOKEN]))),
        ("a flavor as an object", with(&valid, json!({"flavor": {"cloud": null}}))),
        ("register_webhook as a string", with(&valid, json!({"register_webhook": "yes"}))),
        ("an id of its own", with(&valid, json!({"id": "sandbox"}))),
        ("a status of its own", with(&valid, json!({"status": "active"}))),
    ];
    let mut rows: Vec<Row> = bad_create
        .into_iter()
        .map(|(name, body)| row(create, name, "/integrations").json(text(&body)).expect(400, "bad_request"))
        .collect();
    rows.extend(body_rows(create, "/integrations", &valid, MAX_ADMIN_BODY));
    rows.extend(auth_rows(create, "/integrations", Some(&valid), ctx));
    rows.extend(auth_rows("GET /integrations", "/integrations", None, ctx));
    rows.push(
        row("GET /integrations", "PUT on the collection", "/integrations")
            .method("PUT")
            .json("{}")
            .expect(404, "not_found"),
    );

    let show = "GET /integrations/{id}";
    rows.extend(auth_rows(show, "/integrations/sandbox", None, ctx));
    rows.extend(id_rows(show, "/integrations/{id}", None));

    let patch = "PATCH /integrations/{id}";
    let bad_patch = [
        ("an empty name", json!({"name": ""})),
        ("a name of 51 characters", json!({"name": "n".repeat(51)})),
        ("a name that is a number", json!({"name": 5})),
        ("a description of 256 characters", json!({"description": "d".repeat(256)})),
        ("a status", json!({"status": "archived"})),
        ("an id", json!({"id": "other"})),
        ("an unknown option", json!({"options": {"auto_merge": true}})),
        ("options as a list", json!({"options": []})),
        ("a stale-branch policy as a list", json!({"options": {"stale_branches": []}})),
        ("a credential as a list", json!({"credential": ["access_token", "x"]})),
        ("a Data Center token on Cloud", json!({"credential": {"kind": "http_token", "token": "x"}})),
        ("an API token with a bad email", json!({"credential": {"kind": "api_token", "email": "x", "token": "y"}})),
        ("an empty access token", json!({"credential": {"kind": "access_token", "token": ""}})),
        ("an unknown credential kind", json!({"credential": {"kind": "ssh_key", "key": "x"}})),
    ];
    rows.extend(
        bad_patch
            .into_iter()
            .map(|(name, body)| row(patch, name, "/integrations/sandbox").json(text(&body)).expect(400, "bad_request")),
    );
    rows.push(
        row(patch, "an API token on Data Center", format!("/integrations/{}", ctx.dc))
            .json(text(&json!({"credential": valid["credential"]})))
            .expect(400, "bad_request"),
    );
    let patch_valid = json!({"description": "changed"});
    rows.extend(body_rows(patch, "/integrations/sandbox", &patch_valid, MAX_ADMIN_BODY));
    rows.extend(auth_rows(patch, "/integrations/sandbox", Some(&patch_valid), ctx));
    rows.extend(id_rows(patch, "/integrations/{id}", Some(&patch_valid)));

    let delete = "DELETE /integrations/{id}";
    rows.extend(auth_rows(delete, "/integrations/sandbox", None, ctx));
    rows.extend(id_rows(delete, "/integrations/{id}", None));
    for (name, query) in
        [("force=maybe", "force=maybe"), ("force=1", "force=1"), ("force given twice", "force=true&force=false")]
    {
        rows.push(row(delete, name, format!("/integrations/nope?{query}")).expect(400, "bad_request"));
    }

    let test = "POST /integrations/{id}/test";
    rows.extend(auth_rows(test, "/integrations/sandbox/test", None, ctx));
    rows.extend(id_rows(test, "/integrations/{id}/test", None));

    let action = "POST /integrations/{id}/{action}";
    rows.extend(auth_rows(action, "/integrations/sandbox/disconnect", None, ctx));
    rows.extend(id_rows(action, "/integrations/{id}/disconnect", None));
    let (inactive, archived) = (&ctx.inactive, &ctx.archived);
    for (name, target, status, code) in [
        ("an unknown action", "/integrations/sandbox/frobnicate".to_owned(), 404, "not_found"),
        ("an action in capitals", "/integrations/sandbox/DISCONNECT".into(), 404, "not_found"),
        ("an action of encoded dots", "/integrations/sandbox/%2E%2E".into(), 404, "not_found"),
        ("an action that is not UTF-8", "/integrations/sandbox/%FF".into(), 400, "bad_request"),
        ("reconnect while active", "/integrations/sandbox/reconnect".into(), 409, "conflict"),
        ("unarchive while active", "/integrations/sandbox/unarchive".into(), 409, "conflict"),
        ("disconnect while disconnected", format!("/integrations/{inactive}/disconnect"), 409, "conflict"),
        ("unarchive while disconnected", format!("/integrations/{inactive}/unarchive"), 409, "conflict"),
        ("archive while archived", format!("/integrations/{archived}/archive"), 409, "conflict"),
        ("disconnect while archived", format!("/integrations/{archived}/disconnect"), 409, "conflict"),
        ("reconnect while archived", format!("/integrations/{archived}/reconnect"), 409, "conflict"),
        (
            "rotate the secret while archived",
            format!("/integrations/{archived}/rotate-webhook-secret"),
            409,
            "conflict",
        ),
    ] {
        rows.push(row(action, name, target).expect(status, code));
    }
    rows.push(
        row(action, "GET on an action", "/integrations/sandbox/disconnect").method("GET").expect(404, "not_found"),
    );

    let events = "GET /integrations/{id}/events";
    rows.extend(auth_rows(events, "/integrations/sandbox/events", None, ctx));
    rows.extend(id_rows(events, "/integrations/{id}/events", None));
    rows.extend(paging_rows(events, "/integrations/sandbox/events", 100));
    rows
}

fn backup_rows(ctx: &Ctx) -> Vec<Row> {
    let list = "GET /integrations/{id}/backup-targets";
    let mut rows = auth_rows(list, "/integrations/sandbox/backup-targets", None, ctx);
    rows.extend(id_rows(list, "/integrations/{id}/backup-targets", None));

    let define = "PUT /integrations/{id}/backup-targets/{name}";
    let valid = json!({"directory": "backups", "filename": "bad.json", "branch": "backups"});
    let target = "/integrations/sandbox/backup-targets/docs";
    let bad_specs = [
        ("no filename", without(&valid, "filename")),
        ("no branch", without(&valid, "branch")),
        ("a filename with a slash", with(&valid, json!({"filename": "../bad.json"}))),
        ("a filename of dots", with(&valid, json!({"filename": ".."}))),
        ("an empty filename", with(&valid, json!({"filename": ""}))),
        ("a filename of 256 bytes", with(&valid, json!({"filename": "f".repeat(256)}))),
        ("a filename with a NUL", with(&valid, json!({"filename": "a\u{0}.json"}))),
        ("a directory climbing out", with(&valid, json!({"directory": "../etc"}))),
        ("a directory climbing out midway", with(&valid, json!({"directory": "a/../../b"}))),
        ("a directory with an empty segment", with(&valid, json!({"directory": "a//b"}))),
        ("a directory with a backslash", with(&valid, json!({"directory": "a\\b"}))),
        ("a directory of one dot", with(&valid, json!({"directory": "./a"}))),
        ("a directory that is a number", with(&valid, json!({"directory": 5}))),
        ("a branch with ..", with(&valid, json!({"branch": "a..b"}))),
        ("a branch with a space", with(&valid, json!({"branch": "a b"}))),
        ("a branch starting with -", with(&valid, json!({"branch": "-x"}))),
        ("an empty branch", with(&valid, json!({"branch": ""}))),
        ("a branch ending in .lock", with(&valid, json!({"branch": "main.lock"}))),
        ("an author without email", with(&valid, json!({"author": "nobody"}))),
        ("an author with a newline", with(&valid, json!({"author": "A\nB <a@b.c>"}))),
        ("an unknown placeholder", with(&valid, json!({"message": "Back up {oops}"}))),
        ("an unclosed placeholder", with(&valid, json!({"message": "Back up {"}))),
        ("an empty message", with(&valid, json!({"message": " "}))),
        ("a message of 501 characters", with(&valid, json!({"message": "m".repeat(501)}))),
    ];
    rows.extend(
        bad_specs
            .into_iter()
            .map(|(name, body)| row(define, name, target).json(text(&body)).expect(400, "bad_request")),
    );
    let long = "n".repeat(65);
    for (name, target_name, status, code) in [
        ("a name of encoded dots", "%2E%2E", 400, "bad_request"),
        ("a name with an encoded slash", "a%2Fb", 400, "bad_request"),
        ("a name with a space", "a%20b", 400, "bad_request"),
        ("a name of 65 characters", long.as_str(), 400, "bad_request"),
        ("a name that is not UTF-8", "%FF", 400, "bad_request"),
    ] {
        rows.push(
            row(define, name, format!("/integrations/sandbox/backup-targets/{target_name}"))
                .json(text(&valid))
                .expect(status, code),
        );
    }
    rows.push(
        row(
            define,
            "a target on an archived integration",
            format!("/integrations/{}/backup-targets/docs", ctx.archived),
        )
        .json(text(&valid))
        .expect(409, "conflict"),
    );
    rows.extend(body_rows(define, target, &valid, MAX_ADMIN_BODY));
    rows.extend(auth_rows(define, target, Some(&valid), ctx));
    rows.extend(id_rows(define, "/integrations/{id}/backup-targets/docs", Some(&valid)));

    for route in ["GET /integrations/{id}/backup-targets/{name}", "DELETE /integrations/{id}/backup-targets/{name}"] {
        rows.extend(auth_rows(route, target, None, ctx));
        rows.extend(id_rows(route, "/integrations/{id}/backup-targets/docs", None));
        for (name, target_name, status, code) in [
            ("an unknown target", "missing", 404, "not_found"),
            ("a name of encoded dots", "%2E%2E", 404, "not_found"),
            ("a name with an encoded slash", "..%2F..%2Fdocs", 404, "not_found"),
            ("a name that is not UTF-8", "%FF", 400, "bad_request"),
        ] {
            rows.push(
                row(route, name, format!("/integrations/sandbox/backup-targets/{target_name}")).expect(status, code),
            );
        }
    }

    let snapshot = "POST /integrations/{id}/backup-targets/{name}/snapshots";
    let valid_snapshot = json!({"document": {"bad": "input"}});
    let snapshots = "/integrations/sandbox/backup-targets/docs/snapshots";
    let bad_snapshots = [
        ("no document", json!({"version": 1})),
        ("a document that is a number", json!({"document": 5})),
        ("a document that is a string", json!({"document": "text"})),
        ("a null document", json!({"document": null})),
        ("a negative version", json!({"document": {}, "version": -1})),
        ("a version that is a string", json!({"document": {}, "version": "1"})),
        ("a fractional version", json!({"document": {}, "version": 1.5})),
        ("a message that is a number", json!({"document": {}, "message": 5})),
    ];
    rows.extend(
        bad_snapshots
            .into_iter()
            .map(|(name, body)| row(snapshot, name, snapshots).json(text(&body)).expect(400, "bad_request")),
    );
    // Two bytes per element in the request, five in the canonical (indented) document.
    let wide = format!(r#"{{"document": [{}0]}}"#, "0,".repeat(1024 * 1024));
    rows.push(row(snapshot, "a canonical document over 4 MB", snapshots).json(wide).expect(413, "payload_too_large"));
    for (name, target, status, code) in [
        ("an unknown target", "/integrations/sandbox/backup-targets/missing/snapshots".to_owned(), 404, "not_found"),
        (
            "a target name of encoded dots",
            "/integrations/sandbox/backup-targets/%2E%2E/snapshots".into(),
            404,
            "not_found",
        ),
        (
            "a disconnected integration",
            format!("/integrations/{}/backup-targets/docs/snapshots", ctx.inactive),
            409,
            "conflict",
        ),
    ] {
        rows.push(row(snapshot, name, target).json(text(&valid_snapshot)).expect(status, code));
    }
    rows.extend(body_rows(snapshot, snapshots, &valid_snapshot, SNAPSHOT_LIMIT));
    rows.extend(auth_rows(snapshot, snapshots, Some(&valid_snapshot), ctx));
    rows.extend(id_rows(snapshot, "/integrations/{id}/backup-targets/docs/snapshots", Some(&valid_snapshot)));

    let history = "GET /integrations/{id}/backup-targets/{name}/history";
    rows.extend(auth_rows(history, "/integrations/sandbox/backup-targets/docs/history", None, ctx));
    rows.extend(id_rows(history, "/integrations/{id}/backup-targets/docs/history", None));
    rows.extend(paging_rows(history, "/integrations/sandbox/backup-targets/docs/history", 100));
    rows.push(
        row(history, "an unknown target", "/integrations/sandbox/backup-targets/missing/history")
            .expect(404, "not_found"),
    );
    rows
}

fn pipeline_rows(ctx: &Ctx) -> Vec<Row> {
    let run = "POST /integrations/{id}/pipelines";
    let valid = json!({"branch": "main"});
    let variable = |key: &str| json!({"branch": "main", "variables": [{"key": key, "value": "v"}]});
    let many: Vec<Value> = (0..101).map(|n| json!({"key": format!("V{n}"), "value": "v"})).collect();
    let bad_runs = [
        ("no branch", json!({"commit": "abcdef1"})),
        ("an empty branch", json!({"branch": ""})),
        ("a branch with ..", json!({"branch": "a..b"})),
        ("a branch starting with -", json!({"branch": "-x"})),
        ("a branch that is a number", json!({"branch": 5})),
        ("a commit that is not hex", json!({"branch": "main", "commit": "xyzxyzx"})),
        ("a commit of 3 digits", json!({"branch": "main", "commit": "abc"})),
        ("a commit of 41 digits", json!({"branch": "main", "commit": "a".repeat(41)})),
        ("a branch selector", json!({"branch": "main", "selector": {"type": "branch", "pattern": "x"}})),
        ("an empty custom pattern", json!({"branch": "main", "selector": {"type": "custom", "pattern": " "}})),
        ("a selector that is a string", json!({"branch": "main", "selector": "custom"})),
        ("a selector without pattern", json!({"branch": "main", "selector": {"type": "custom"}})),
        ("a variable key starting with a digit", variable("1A")),
        ("a variable key with a dash", variable("A-B")),
        ("an empty variable key", variable("")),
        ("a variable without value", json!({"branch": "main", "variables": [{"key": "A"}]})),
        ("a variable value that is a number", json!({"branch": "main", "variables": [{"key": "A", "value": 1}]})),
        ("variables as an object", json!({"branch": "main", "variables": {"A": "v"}})),
        ("101 variables", json!({"branch": "main", "variables": many})),
        ("a selector as a list", json!({"branch": "main", "selector": ["custom", "deploy"]})),
        ("a variable as a list", json!({"branch": "main", "variables": [["A", "v", true]]})),
    ];
    let pipelines = "/integrations/sandbox/pipelines";
    let mut rows: Vec<Row> = bad_runs
        .into_iter()
        .map(|(name, body)| row(run, name, pipelines).json(text(&body)).expect(400, "bad_request"))
        .collect();
    for (name, id, status, code) in [
        ("a Data Center integration", ctx.dc.as_str(), 409, "unsupported"),
        ("a disconnected integration", ctx.inactive.as_str(), 409, "conflict"),
        ("an archived integration", ctx.archived.as_str(), 409, "conflict"),
    ] {
        rows.push(row(run, name, format!("/integrations/{id}/pipelines")).json(text(&valid)).expect(status, code));
    }
    rows.extend(body_rows(run, pipelines, &valid, MAX_ADMIN_BODY));
    rows.extend(auth_rows(run, pipelines, Some(&valid), ctx));
    rows.extend(id_rows(run, "/integrations/{id}/pipelines", Some(&valid)));

    let unknown_run = format!("{{{}}}", uuid::Uuid::new_v4());
    let stop = "POST /integrations/{id}/pipelines/{uuid}/stop";
    rows.extend(auth_rows(stop, &format!("/integrations/sandbox/pipelines/{unknown_run}/stop"), None, ctx));
    rows.extend(id_rows(stop, &format!("/integrations/{{id}}/pipelines/{unknown_run}/stop"), None));
    let show = "GET /integrations/{id}/pipelines/{uuid}";
    rows.extend(auth_rows(show, &format!("/integrations/sandbox/pipelines/{unknown_run}"), None, ctx));
    rows.extend(id_rows(show, &format!("/integrations/{{id}}/pipelines/{unknown_run}"), None));
    let long = "u".repeat(65);
    for (route, suffix) in [(stop, "/stop"), (show, "")] {
        for (name, uuid, status, code) in [
            ("an unknown run", unknown_run.as_str(), 404, "not_found"),
            ("a run id of encoded dots", "%2E%2E", 404, "not_found"),
            ("a run id climbing out", "..%2F..%2Fhooks", 404, "not_found"),
            ("a run id with a hash", "a%23b", 404, "not_found"),
            ("a run id that is no uuid", "not-a-uuid", 404, "not_found"),
            ("a run id of 65 characters", long.as_str(), 404, "not_found"),
            ("a run id that is not UTF-8", "%FF", 400, "bad_request"),
        ] {
            rows.push(row(route, name, format!("/integrations/sandbox/pipelines/{uuid}{suffix}")).expect(status, code));
        }
    }
    for (name, id, status, code) in [
        ("a Data Center integration", ctx.dc.as_str(), 409, "unsupported"),
        ("a disconnected integration", ctx.inactive.as_str(), 409, "conflict"),
    ] {
        rows.push(row(stop, name, format!("/integrations/{id}/pipelines/{unknown_run}/stop")).expect(status, code));
    }

    let list = "GET /integrations/{id}/pipelines";
    rows.extend(auth_rows(list, pipelines, None, ctx));
    rows.extend(id_rows(list, "/integrations/{id}/pipelines", None));
    rows.extend(paging_rows(list, pipelines, 100));
    for (name, query) in [
        ("an unknown status", "status=BOGUS"),
        ("an empty status", "status="),
        ("a status that is not UTF-8", "status=%FF"),
        ("status given twice", "status=PENDING&status=FAILED"),
    ] {
        rows.push(row(list, name, format!("{pipelines}?{query}")).expect(400, "bad_request"));
    }

    let refresh = "POST /integrations/{id}/pipelines/refresh";
    rows.extend(auth_rows(refresh, "/integrations/sandbox/pipelines/refresh", None, ctx));
    rows.extend(id_rows(refresh, "/integrations/{id}/pipelines/refresh", None));
    for (name, id, status, code) in [
        ("a Data Center integration", ctx.dc.as_str(), 409, "unsupported"),
        ("a disconnected integration", ctx.inactive.as_str(), 409, "conflict"),
        ("an archived integration", ctx.archived.as_str(), 409, "conflict"),
    ] {
        rows.push(row(refresh, name, format!("/integrations/{id}/pipelines/refresh")).expect(status, code));
    }
    rows
}

fn prune_rows(ctx: &Ctx) -> Vec<Row> {
    let prune = "POST /integrations/{id}/prune";
    let valid = json!({"mode": "environments"});
    let target = "/integrations/sandbox/prune";
    let bad = [
        ("no mode", json!({"dry_run": true})),
        ("an unknown mode", json!({"mode": "everything"})),
        ("a mode in capitals", json!({"mode": "ENVIRONMENTS"})),
        ("a mode that is a number", json!({"mode": 5})),
        ("dry_run with environments", json!({"mode": "environments", "dry_run": true})),
        ("dry_run as a string", json!({"mode": "stale-branches", "dry_run": "no"})),
        ("a force flag", json!({"mode": "stale-branches", "force": true})),
        ("a mode as an object", json!({"mode": {"environments": null}})),
        ("a mode as a list", json!({"mode": ["environments"]})),
    ];
    let mut rows: Vec<Row> = bad
        .into_iter()
        .map(|(name, body)| row(prune, name, target).json(text(&body)).expect(400, "bad_request"))
        .collect();
    for (name, id, body) in [
        ("reconcile a disconnected integration", ctx.inactive.as_str(), json!({"mode": "environments"})),
        ("plan on a disconnected integration", ctx.inactive.as_str(), json!({"mode": "stale-branches"})),
        (
            "delete on an archived integration",
            ctx.archived.as_str(),
            json!({"mode": "stale-branches", "dry_run": false}),
        ),
    ] {
        rows.push(row(prune, name, format!("/integrations/{id}/prune")).json(text(&body)).expect(409, "conflict"));
    }
    rows.extend(body_rows(prune, target, &valid, MAX_ADMIN_BODY));
    rows.extend(auth_rows(prune, target, Some(&valid), ctx));
    rows.extend(id_rows(prune, "/integrations/{id}/prune", Some(&valid)));
    for (route, path) in
        [("GET /integrations/{id}/environments", "environments"), ("GET /integrations/{id}/prune-audit", "prune-audit")]
    {
        let max = if path == "environments" { 1000 } else { 100 };
        rows.extend(auth_rows(route, &format!("/integrations/sandbox/{path}"), None, ctx));
        rows.extend(id_rows(route, &format!("/integrations/{{id}}/{path}"), None));
        rows.extend(paging_rows(route, &format!("/integrations/sandbox/{path}"), max));
    }
    rows
}

fn fallback_rows() -> Vec<Row> {
    let r = |name: &str, method: &'static str, target: &str| row("fallback", name, target).method(method);
    vec![
        r("an unknown path", "GET", "/nope").expect(404, "not_found"),
        r("an unknown path under integrations", "GET", "/integrations/sandbox/nothing/here").expect(404, "not_found"),
        r("encoded traversal to the root", "GET", "/integrations/..%2F..%2Fhealth").expect(404, "not_found"),
        r("DELETE on the collection", "DELETE", "/integrations").expect(404, "not_found"),
        r("PUT on an integration", "PUT", "/integrations/sandbox").json("{}").expect(404, "not_found"),
    ]
}

/// Everything the snapshot compares: records, the secret file, and what reached Bitbucket.
struct Snapshot {
    records: Vec<String>,
    secrets_file: Vec<u8>,
    sandbox_requests: usize,
    commits: usize,
    webhooks_sent: usize,
    hooks: Vec<Value>,
    dc_hooks: Vec<Value>,
}

async fn snapshot(s: &Stack, extra_ids: &[&str]) -> Snapshot {
    let records = state_records(s.running.backends.store.as_ref(), extra_ids)
        .await
        .iter()
        .map(|i| {
            format!(
                "{}|{}|{}|{:?}|{:?}|{}|{}",
                i.key.pk,
                i.key.sk,
                i.kind,
                i.sort,
                i.expires_at,
                i.version,
                Value::Object(i.attrs.clone())
            )
        })
        .collect();
    let sandbox = &s.running.sandbox;
    Snapshot {
        records,
        secrets_file: std::fs::read(s.dir.join("secrets.json")).expect("the secret file"),
        sandbox_requests: sandbox.requests().len(),
        commits: sandbox.commit_count(),
        webhooks_sent: sandbox.sent_webhooks().len(),
        hooks: sandbox.hooks(),
        dc_hooks: sandbox.dc_hooks(),
    }
}

async fn webhook_secret(s: &Stack, id: &str) -> String {
    let name = format!("local/{id}/webhook");
    let secret =
        s.running.backends.secrets.get(&name).await.expect("the secret store reads").expect("a webhook secret");
    WebhookSecrets::from_secret(&name, &secret).expect("webhook secrets").current().expose().to_owned()
}

/// The answer must be the documented status and, for a refusal, exactly
/// `{"error": {"code", "message"}}` as JSON, with a request id.
fn check(row: &Row, answer: &RawResponse) -> Result<(), String> {
    if answer.status != row.status {
        return Err(format!(
            "status {} (expected {}): {}",
            answer.status,
            row.status,
            String::from_utf8_lossy(&answer.body)
        ));
    }
    if answer.header("x-request-id").is_none_or(str::is_empty) {
        return Err("no x-request-id".into());
    }
    if !answer.header("content-type").is_some_and(|t| t.starts_with("application/json")) {
        return Err(format!("content type {:?}", answer.header("content-type")));
    }
    let body: Value = serde_json::from_slice(&answer.body).map_err(|e| format!("not JSON ({e})"))?;
    let Some(code) = row.code else {
        return if body == json!({"ping": true}) { Ok(()) } else { Err(format!("unexpected success body {body}")) };
    };
    let error = body.get("error").and_then(Value::as_object).ok_or_else(|| format!("no error object: {body}"))?;
    // `request_id` is the id the log lines carry: every answer through the shared layers has it.
    let shape_ok = body.as_object().is_some_and(|o| o.len() == 1)
        && error.len() == 3
        && error.get("request_id").and_then(Value::as_str).is_some_and(|id| !id.is_empty())
        && error.get("code").and_then(Value::as_str) == Some(code)
        && error.get("message").and_then(Value::as_str).is_some_and(|m| !m.trim().is_empty());
    if shape_ok { Ok(()) } else { Err(format!("error shape or code (expected {code}): {body}")) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_refuses_bad_input_with_its_documented_4xx_and_changes_nothing() {
    let s = stack("bad-input").await;
    // Integrations in every state the table needs: the seeded Cloud one (active, webhook), a
    // Data Center one, a disconnected one, an archived one; and a backup target.
    let dc = s.data_center_integration(json!({"name": "DC bad input"})).await;
    let cloud_no_hook = |name: &str| json!({"name": name, "register_webhook": false});
    let api_token = json!({"kind": "api_token", "email": sb::API_TOKEN_EMAIL, "token": sb::API_TOKEN});
    let (status, inactive) = s.create(api_token.clone(), cloud_no_hook("Disconnected")).await;
    assert_eq!(status, 201, "{inactive}");
    let inactive = inactive["id"].as_str().expect("an id").to_owned();
    assert_eq!(s.post(&format!("/integrations/{inactive}/disconnect")).await.0, 200);
    let (status, archived) = s.create(api_token, cloud_no_hook("Archived")).await;
    assert_eq!(status, 201, "{archived}");
    let archived = archived["id"].as_str().expect("an id").to_owned();
    assert_eq!(s.post(&format!("/integrations/{archived}/archive")).await.0, 200);
    let (status, target) = s
        .put(
            "/integrations/sandbox/backup-targets/docs",
            json!({"directory": "backups", "filename": "docs.json", "branch": "backups"}),
        )
        .await;
    assert_eq!(status, 201, "{target}");
    s.running.sandbox.settle().await;

    let ctx = Ctx {
        token: s.token.clone(),
        cloud_secret: s.running.seeded.sandbox_webhook_secret.expose().to_owned(),
        dc_secret: webhook_secret(&s, &dc).await,
        dc: dc.clone(),
        inactive: inactive.clone(),
        archived: archived.clone(),
        sandbox_api: s.sandbox_api(),
    };
    let mut rows = webhook_rows(&ctx);
    rows.extend(integration_rows(&ctx));
    rows.extend(backup_rows(&ctx));
    rows.extend(pipeline_rows(&ctx));
    rows.extend(prune_rows(&ctx));
    rows.extend(fallback_rows());

    let covered: BTreeSet<&str> = rows.iter().map(|r| r.route).collect();
    let missing: Vec<&&str> = ROUTES.iter().filter(|r| !covered.contains(**r)).collect();
    assert!(missing.is_empty(), "routes without rows: {missing:?}");
    assert_eq!(covered.len(), ROUTES.len(), "rows name routes not in the list: {covered:?}");

    let partitions = ["nope", "sandbox", dc.as_str(), inactive.as_str(), archived.as_str(), "a", "..", ""];
    let before = snapshot(&s, &partitions).await;
    assert!(before.records.len() >= 5, "the snapshot sees the records: {}", before.records.len());

    let started = std::time::Instant::now();
    let mut failures = Vec::new();
    for r in &rows {
        let mut headers = r.headers.clone();
        match &r.auth {
            Auth::Admin => headers.push(("Authorization".into(), format!("Bearer {}", s.token))),
            Auth::Without => {}
            Auth::Header(value) => headers.push(("Authorization".into(), value.clone())),
        }
        let answer = raw_request(s.running.addr, r.method, &r.target, &headers, r.body.as_deref()).await;
        if let Err(problem) = check(r, &answer) {
            failures.push(format!("{} | {} | {} {}: {problem}", r.route, r.name, r.method, shorten(&r.target)));
        }
    }
    let elapsed = started.elapsed();
    s.running.sandbox.settle().await;
    let after = snapshot(&s, &partitions).await;

    let requests = s.running.sandbox.requests();
    let reached: Vec<String> = requests[before.sandbox_requests.min(requests.len())..]
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    println!(
        "FIGURES bad_input rows={} routes={} failures={} bitbucket_requests={} seconds={:.1}",
        rows.len(),
        covered.len(),
        failures.len(),
        reached.len(),
        elapsed.as_secs_f64()
    );
    assert!(failures.is_empty(), "{} of {} rows failed:\n{}", failures.len(), rows.len(), failures.join("\n"));
    // The one read allowed: stopping a well-formed run id never seen checks that it exists in
    // Bitbucket first (it may have been started there); nothing else reaches Bitbucket at all.
    let unexpected: Vec<&String> =
        reached.iter().filter(|r| !(r.starts_with("GET ") && r.contains("/pipelines/%7B"))).collect();
    assert!(unexpected.is_empty(), "bad input reached Bitbucket: {unexpected:?}");
    assert_eq!(before.records, after.records, "the state changed");
    // Not printed: the secret file holds secrets.
    assert!(before.secrets_file == after.secrets_file, "the secret file changed");
    let sandbox = |s: &Snapshot| (s.commits, s.webhooks_sent, s.hooks.clone(), s.dc_hooks.clone());
    assert_eq!(sandbox(&before), sandbox(&after), "Bitbucket changed (commits, webhooks sent, hooks)");
    s.stop().await;
}

fn shorten(target: &str) -> String {
    match target.char_indices().nth(90) {
        Some((cut, _)) => format!("{}…", &target[..cut]),
        None => target.to_owned(),
    }
}
