//! Everything `bba` can fail with, each printed as one line. Tokens and secrets never appear in
//! these messages.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("cannot read {path}: {source}")]
    ReadFile { path: PathBuf, source: std::io::Error },
    #[error("{path} is not JSON: {source}")]
    NotJson { path: PathBuf, source: serde_json::Error },
    #[error("environment variable {0} is not set (named by --secret-env)")]
    MissingEnv(String),
    #[error(
        "no webhook secret for `{0}`: pass --secret or --secret-env VAR (only the local `sandbox` \
         integration's secret is found by itself, in the state directory)"
    )]
    NoSecret(String),
    #[error(
        "no API token: pass --token, set API_TOKEN, run from the directory holding the local \
         stack's `.local/` (or set --state-dir), or use --aws on AWS"
    )]
    NoToken,
    #[error("the API token holds characters that cannot go in an HTTP header")]
    BadToken,
    #[error("not a usable URL `{url}`: {problem}")]
    BadUrl { url: String, problem: String },
    #[error("request to {url} failed: {source}")]
    Http { url: String, source: reqwest::Error },
    #[error("HTTP {status}: {message}")]
    Api { status: u16, message: String },
    #[error("the answer is not JSON: {0}")]
    BadAnswer(serde_json::Error),
    #[error("AWS: {0}")]
    Aws(String),
}

impl CliError {
    /// The API's error answer (`{"error":{"code","message"}}`, API Gateway's `{"message"}`)
    /// as one line; any other body is shown as text, shortened.
    pub fn from_answer(status: u16, body: &str) -> Self {
        let json: Option<serde_json::Value> = serde_json::from_str(body).ok();
        let error = json.as_ref().map(|j| if j["error"].is_null() { j } else { &j["error"] });
        let message = match error {
            Some(e) if e["message"].is_string() => match e["code"].as_str() {
                Some(code) => format!("{} ({code})", e["message"].as_str().unwrap_or_default()),
                None => e["message"].as_str().unwrap_or_default().to_owned(),
            },
            Some(serde_json::Value::String(text)) => text.clone(),
            _ => body.trim().chars().take(300).collect(),
        };
        CliError::Api { status, message: if message.is_empty() { "(empty answer)".into() } else { message } }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_errors_read_as_one_line() {
        let ours = CliError::from_answer(
            401,
            r#"{"error":{"code":"unauthorized","message":"the bearer token is not valid"}}"#,
        );
        assert_eq!(ours.to_string(), "HTTP 401: the bearer token is not valid (unauthorized)");
        let gateway = CliError::from_answer(403, r#"{"message":"Forbidden"}"#);
        assert_eq!(gateway.to_string(), "HTTP 403: Forbidden");
        assert_eq!(CliError::from_answer(502, "bad gateway\n").to_string(), "HTTP 502: bad gateway");
        assert_eq!(CliError::from_answer(500, "").to_string(), "HTTP 500: (empty answer)");
    }
}
