//! The traffic log the conformance checker reads (`infra/conformance/check.py`, format in its
//! README): with `SANDBOX_TRAFFIC_LOG` set to a file path, every `/2.0`, `/site` and `/rest`
//! exchange is appended to it as one JSON line: flavor, method, root, the path as sent, the query
//! pairs, the request's content type and body (JSON parsed; forms as parts, file contents left
//! out), the status, the answer's content type and body, and the credential's kind with its scopes
//! or permission. Secrets (webhook secrets, tokens, client secrets, secured variables) are written
//! `"REDACTED"`. `/_admin` is not Bitbucket's and is never logged.
//!
//! A request with an `X-Sandbox-Probe` header (other than `0`, `false`, `no`) is marked
//! `"probe": true`: a deliberate request the descriptions do not describe (an undescribed route or
//! method, or input they do not allow), to see how it is refused; `X-Sandbox-Test: name` labels the line
//! with the test that made it.
//!
//! Many test processes may append to one file: each line goes out in a single `write` on a file
//! opened with `O_APPEND`, so lines never interleave.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{HeaderMap, header};
use axum::response::Response;
use serde_json::{Map, Value, json};

use crate::form::form_fields;
use crate::paging::percent_decode;
use crate::{Sandbox, cloud, datacenter};

/// The environment variable naming the log file.
pub const TRAFFIC_LOG_VARIABLE: &str = "SANDBOX_TRAFFIC_LOG";
/// Marks a request as a deliberate probe: an undescribed route or method, or input the
/// description does not allow.
pub const PROBE_HEADER: &str = "x-sandbox-probe";
/// Labels a request with the test that made it.
pub const TEST_HEADER: &str = "x-sandbox-test";

/// Bodies larger than this are not buffered for the log (nor answered: 413).
const BODY_LIMIT: usize = 64 * 1024 * 1024;
/// Text bodies longer than this are logged as `null`.
const TEXT_LIMIT: usize = 64 * 1024;
/// Form fields whose values are metadata, logged as they are; every other field is file content,
/// logged as its name and size.
const FORM_METADATA: &[&str] = &[
    "message",
    "author",
    "branch",
    "parents",
    "files",
    "sourceCommitId",
    "sourceBranch",
    "grant_type",
    "client_id",
    "scope",
];
/// Keys whose values are never logged, in JSON bodies and forms.
const SECRET_KEYS: &[&str] =
    &["secret", "token", "access_token", "refresh_token", "password", "client_secret", "code", "assertion"];

/// Opens `path` for appending (created if missing).
pub fn open(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().append(true).create(true).open(path)
}

/// Appends one line in one `write`.
pub fn append(file: &mut File, line: &Value) {
    let mut bytes = line.to_string().into_bytes();
    bytes.push(b'\n');
    let result = match file.write(&bytes) {
        // A short write of a regular file is rare; finish it rather than lose the line.
        Ok(n) if n < bytes.len() => file.write_all(&bytes[n..]),
        Ok(_) => Ok(()),
        Err(e) => Err(e),
    };
    if let Err(e) = result {
        tracing::warn!(error = %e, "could not append to the traffic log");
    }
}

/// `(flavor, root, path after the root)` of a path relative to the mount point.
fn split_root(path: &str) -> (&'static str, String, String) {
    let take = |n: usize| -> (String, String) {
        let mut ends = path.match_indices('/').map(|(i, _)| i).chain(std::iter::once(path.len()));
        let end = ends.nth(n).unwrap_or(path.len());
        (path[..end].to_owned(), path[end..].to_owned())
    };
    if path.starts_with("/rest/") {
        let (root, rest) = take(3);
        ("datacenter", root, rest)
    } else if path.starts_with("/site/") {
        let (root, rest) = take(2);
        ("cloud", root, rest)
    } else {
        let (root, rest) = take(1);
        ("cloud", root, rest)
    }
}

/// Decoded `[name, value]` pairs, in order.
fn query_pairs(query: &str) -> Vec<Value> {
    let decode = |s: &str| percent_decode(&s.replace('+', " "));
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            json!([decode(name), decode(value)])
        })
        .collect()
}

fn is_secret(key: &str) -> bool {
    SECRET_KEYS.contains(&key.to_ascii_lowercase().as_str())
}

/// Secrets out of a JSON value: secret-named keys, and the value of a secured pipeline variable.
fn redact(value: &mut Value) {
    match value {
        Value::Object(map) => {
            let secured = map.get("secured") == Some(&Value::Bool(true));
            for (key, v) in map.iter_mut() {
                if (is_secret(key) || (secured && key == "value")) && !v.is_null() && !v.is_object() {
                    *v = json!("REDACTED");
                } else {
                    redact(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}

fn media(headers: &HeaderMap) -> Option<String> {
    headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

fn is_json(content_type: Option<&str>) -> bool {
    content_type.is_some_and(|t| {
        let t = t.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
        t == "application/json" || t.ends_with("+json")
    })
}

/// A body as the log holds it: JSON parsed, text as a string, anything else `null`.
fn body_value(content_type: Option<&str>, bytes: &Bytes) -> Value {
    if bytes.is_empty() {
        return Value::Null;
    }
    if is_json(content_type) {
        return match serde_json::from_slice::<Value>(bytes) {
            Ok(mut value) => {
                redact(&mut value);
                value
            }
            Err(_) => text(bytes),
        };
    }
    text(bytes)
}

fn text(bytes: &Bytes) -> Value {
    match std::str::from_utf8(bytes) {
        Ok(s) if s.len() <= TEXT_LIMIT => json!(s),
        _ => Value::Null,
    }
}

/// A form body as parts: metadata with its value, secrets redacted, file contents as their size.
async fn form_value(headers: &HeaderMap, bytes: &Bytes) -> Value {
    let mut request = Request::new(Body::from(bytes.clone()));
    // Not GET: axum reads a GET's form from the query string.
    *request.method_mut() = axum::http::Method::POST;
    *request.headers_mut() = headers.clone();
    let Ok(fields) = form_fields(request).await else {
        return text(bytes);
    };
    let parts = fields.into_iter().map(|field| {
        let mut part = Map::new();
        part.insert("name".into(), json!(field.name));
        if let Some(filename) = &field.filename {
            part.insert("filename".into(), json!(filename));
        }
        if is_secret(&field.name) {
            part.insert("value".into(), json!("REDACTED"));
        } else if field.filename.is_none() && FORM_METADATA.contains(&field.name.as_str()) {
            part.insert("value".into(), json!(String::from_utf8_lossy(&field.value)));
        } else {
            part.insert("size".into(), json!(field.value.len()));
        }
        Value::Object(part)
    });
    Value::Array(parts.collect())
}

async fn request_body(headers: &HeaderMap, bytes: &Bytes) -> Value {
    let content_type = media(headers);
    let form = content_type
        .as_deref()
        .map(str::to_ascii_lowercase)
        .is_some_and(|t| t.starts_with("multipart/form-data") || t.starts_with("application/x-www-form-urlencoded"));
    if form { form_value(headers, bytes).await } else { body_value(content_type.as_deref(), bytes) }
}

/// The credential behind a request: its kind and scopes (Cloud) or permission (Data Center).
fn auth(sandbox: &Sandbox, flavor: &str, root: &str, headers: &HeaderMap) -> Value {
    if flavor == "datacenter" {
        return match datacenter::auth::identify(sandbox, headers) {
            Some(permission) => json!({ "kind": "http_token", "permission": permission.as_str() }),
            None => Value::Null,
        };
    }
    if root != "/2.0" {
        return Value::Null;
    }
    match cloud::auth::authenticate(sandbox, headers) {
        Ok(caller) => json!({ "kind": caller.kind.as_str(), "scopes": caller.scopes }),
        Err(_) => Value::Null,
    }
}

/// What the log needs of a request before it runs; the request comes back with its body intact.
pub struct Pending {
    line: Map<String, Value>,
}

/// Reads the request (buffering its body) for the log.
pub async fn before(sandbox: &Sandbox, request: Request) -> Result<(Pending, Request), Response> {
    let (parts, body) = request.into_parts();
    let bytes = match axum::body::to_bytes(body, BODY_LIMIT).await {
        Ok(bytes) => bytes,
        Err(_) => {
            let error = crate::error::Error::new(axum::http::StatusCode::PAYLOAD_TOO_LARGE, "Request body too large");
            return Err(axum::response::IntoResponse::into_response(error));
        }
    };
    let path = parts.uri.path().to_owned();
    let (flavor, root, rest) = split_root(&path);
    let mut line = Map::new();
    line.insert("flavor".into(), json!(flavor));
    line.insert("method".into(), json!(parts.method.as_str()));
    line.insert("root".into(), json!(root));
    line.insert("path".into(), json!(if rest.is_empty() { "/".to_owned() } else { rest }));
    line.insert("query".into(), Value::Array(query_pairs(parts.uri.query().unwrap_or_default())));
    line.insert("request_content_type".into(), json!(media(&parts.headers)));
    line.insert("request_body".into(), request_body(&parts.headers, &bytes).await);
    line.insert("auth".into(), auth(sandbox, flavor, &root, &parts.headers));
    let probe = parts.headers.get(PROBE_HEADER).and_then(|v| v.to_str().ok());
    if probe.is_some_and(|p| !matches!(p.trim().to_ascii_lowercase().as_str(), "0" | "false" | "no")) {
        line.insert("probe".into(), json!(true));
    }
    if let Some(test) = parts.headers.get(TEST_HEADER).and_then(|v| v.to_str().ok()) {
        line.insert("test".into(), json!(test));
    }
    let request = Request::from_parts(parts, Body::from(bytes));
    Ok((Pending { line }, request))
}

/// Completes the line with the answer (buffering its body) and appends it.
pub async fn after(sandbox: &Sandbox, pending: Pending, response: Response) -> Response {
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, BODY_LIMIT).await.unwrap_or_default();
    let mut line = pending.line;
    let content_type = media(&parts.headers);
    line.insert("status".into(), json!(parts.status.as_u16()));
    line.insert("response_body".into(), body_value(content_type.as_deref(), &bytes));
    line.insert("response_content_type".into(), json!(content_type));
    sandbox.log_traffic(&Value::Object(line));
    Response::from_parts(parts, Body::from(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roots_and_paths() {
        assert_eq!(split_root("/2.0/repositories/a/b"), ("cloud", "/2.0".into(), "/repositories/a/b".into()));
        assert_eq!(split_root("/2.0"), ("cloud", "/2.0".into(), "".into()));
        assert_eq!(split_root("/site/oauth2/access_token"), ("cloud", "/site/oauth2".into(), "/access_token".into()));
        assert_eq!(
            split_root("/rest/api/1.0/projects/P/repos/r/browse/a%2Fb"),
            ("datacenter", "/rest/api/1.0".into(), "/projects/P/repos/r/browse/a%2Fb".into())
        );
    }

    #[test]
    fn queries_and_secrets() {
        assert_eq!(
            query_pairs("q=name+~+%22x%22&state=OPEN&state=MERGED&flag"),
            [json!(["q", "name ~ \"x\""]), json!(["state", "OPEN"]), json!(["state", "MERGED"]), json!(["flag", ""])]
        );
        let mut body = json!({
            "secret": "s", "configuration": { "secret": "t" }, "access_token": "a", "url": "u",
            "variables": [{ "key": "K", "value": "v", "secured": true }, { "key": "L", "value": "w" }],
        });
        redact(&mut body);
        assert_eq!(body["secret"], "REDACTED");
        assert_eq!(body["configuration"]["secret"], "REDACTED");
        assert_eq!(body["access_token"], "REDACTED");
        assert_eq!((&body["variables"][0]["value"], &body["variables"][1]["value"]), (&json!("REDACTED"), &json!("w")));
        assert_eq!(body["url"], "u");
    }
}
