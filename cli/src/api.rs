//! One HTTP client for the API: URLs built from path segments (ids are percent-encoded), the
//! chosen authentication, and error answers turned into [`CliError::Api`].

use std::path::Path;
use std::time::SystemTime;

use domain::secrets::Secret;
use reqwest::Url;
use serde_json::Value;

use crate::error::CliError;
use crate::sigv4::AwsSigner;

#[derive(Debug)]
pub enum Auth {
    /// Webhooks authenticate by their signature alone.
    None,
    Bearer(Secret),
    Aws(AwsSigner),
}

impl Auth {
    /// `--aws`, else `--token`/`API_TOKEN`, else the local stack's kept token — the latter only
    /// for an API on this machine, so it is never sent elsewhere.
    pub async fn resolve(api: &Url, aws: bool, token: Option<String>, state_dir: &Path) -> Result<Auth, CliError> {
        if aws {
            return Ok(Auth::Aws(AwsSigner::from_environment(api).await?));
        }
        if let Some(token) = token.filter(|t| !t.is_empty()) {
            return Ok(Auth::Bearer(Secret::new(token)));
        }
        let loopback = matches!(api.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
        match std::fs::read_to_string(state_dir.join("api-token")) {
            Ok(kept) if loopback && !kept.trim().is_empty() => Ok(Auth::Bearer(Secret::new(kept.trim()))),
            _ => Err(CliError::NoToken),
        }
    }
}

pub fn parse_url(raw: &str) -> Result<Url, CliError> {
    let bad = |problem: String| CliError::BadUrl { url: raw.to_owned(), problem };
    let url = Url::parse(raw).map_err(|e| bad(e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
        return Err(bad("expected http(s)://host[:port][/stage]".into()));
    }
    Ok(url)
}

/// `base` with `segments` appended (a stage path such as `/prod` is kept) and `query` set.
pub fn endpoint(base: &Url, segments: &[&str], query: &[(&str, String)]) -> Url {
    let mut url = base.clone();
    url.set_query(None);
    if let Ok(mut path) = url.path_segments_mut() {
        path.pop_if_empty().extend(segments);
    }
    if !query.is_empty() {
        url.query_pairs_mut().extend_pairs(query);
    }
    url
}

pub struct Client {
    http: reqwest::Client,
    auth: Auth,
}

impl Client {
    pub fn new(auth: Auth) -> Self {
        let http = reqwest::Client::builder()
            .user_agent(concat!("bba/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Client { http, auth }
    }

    pub fn request(&self, method: reqwest::Method, url: Url) -> reqwest::RequestBuilder {
        self.http.request(method, url)
    }

    /// Sends with the authentication applied; a non-2xx answer is an error carrying the API's
    /// message. Returns the status and the body text.
    pub async fn send(&self, request: reqwest::RequestBuilder) -> Result<(u16, String), CliError> {
        let mut request = request.build().map_err(|source| CliError::Http { url: "the API".into(), source })?;
        let url = request.url().to_string();
        match &self.auth {
            Auth::None => {}
            Auth::Bearer(token) => {
                let value = format!("Bearer {}", token.expose());
                let mut value = reqwest::header::HeaderValue::from_str(&value).map_err(|_| CliError::BadToken)?;
                value.set_sensitive(true);
                request.headers_mut().insert(reqwest::header::AUTHORIZATION, value);
            }
            Auth::Aws(signer) => signer.sign(&mut request, SystemTime::now())?,
        }
        let response =
            self.http.execute(request).await.map_err(|source| CliError::Http { url: url.clone(), source })?;
        let status = response.status().as_u16();
        let body = response.text().await.map_err(|source| CliError::Http { url, source })?;
        if !(200..300).contains(&status) {
            return Err(CliError::from_answer(status, &body));
        }
        Ok((status, body))
    }

    pub async fn get_json(&self, url: Url) -> Result<(String, Value), CliError> {
        let (_, body) = self.send(self.request(reqwest::Method::GET, url)).await?;
        let value = serde_json::from_str(&body).map_err(CliError::BadAnswer)?;
        Ok((body, value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_keep_the_stage_and_encode_ids() {
        let base = parse_url("https://x.execute-api.eu-west-1.amazonaws.com/prod/").unwrap();
        let url = endpoint(&base, &["integrations", "a/b c", "events"], &[("limit", "5".into())]);
        assert_eq!(
            url.as_str(),
            "https://x.execute-api.eu-west-1.amazonaws.com/prod/integrations/a%2Fb%20c/events?limit=5"
        );
        let local = endpoint(&parse_url("http://127.0.0.1:3000").unwrap(), &["integrations"], &[]);
        assert_eq!(local.as_str(), "http://127.0.0.1:3000/integrations");
        assert!(parse_url("ftp://host").is_err());
        assert!(parse_url("not a url").is_err());
    }
}
