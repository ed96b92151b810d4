//! Bitbucket Data Center REST 1.0 adapter (`{base}/rest/api/latest`).

use async_trait::async_trait;
use reqwest::Method;
use serde::Deserialize;
use serde_json::{Value, json};

use super::transport::{Body, Session};
use super::{Access, Bitbucket, BitbucketError, RepoTarget, Webhook, WebhookSpec, segment};

/// The events this project acts on (no comments or reviewer changes).
pub const EVENTS: &[&str] =
    &["repo:refs_changed", "pr:opened", "pr:from_ref_updated", "pr:modified", "pr:merged", "pr:declined", "pr:deleted"];

const MAX_PAGES: usize = 50;

pub struct DataCenterClient {
    session: Session,
    repo_url: String,
}

impl DataCenterClient {
    pub fn new(session: Session, target: &RepoTarget) -> Self {
        let base = target.base_url.trim_end_matches('/');
        let repo_url =
            format!("{base}/rest/api/latest/projects/{}/repos/{}", segment(&target.owner), segment(&target.slug));
        DataCenterClient { session, repo_url }
    }

    fn hook_body(spec: &WebhookSpec) -> Value {
        json!({
            "name": spec.description,
            "url": spec.url,
            "active": spec.active,
            "events": EVENTS,
            "configuration": {"secret": spec.secret.expose()},
        })
    }
}

#[derive(Deserialize)]
struct DcHook {
    id: u64,
    url: String,
    #[serde(default)]
    active: bool,
    #[serde(default)]
    events: Vec<String>,
}

impl From<DcHook> for Webhook {
    fn from(h: DcHook) -> Self {
        Webhook { id: h.id.to_string(), url: h.url, active: h.active, events: h.events }
    }
}

/// Data Center pages with `isLastPage` / `nextPageStart`.
fn next_start(page: &Value, current: &str) -> Option<String> {
    if page.get("isLastPage").and_then(Value::as_bool).unwrap_or(true) {
        return None;
    }
    let start = page.get("nextPageStart").and_then(Value::as_u64)?;
    let mut url = reqwest::Url::parse(current).ok()?;
    let kept: Vec<(String, String)> =
        url.query_pairs().filter(|(k, _)| k != "start").map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
    url.query_pairs_mut().clear().extend_pairs(kept).append_pair("start", &start.to_string());
    Some(url.into())
}

#[async_trait]
impl Bitbucket for DataCenterClient {
    async fn verify_access(&self) -> Result<Access, BitbucketError> {
        let response = self.session.send(Method::GET, &self.repo_url, &Body::Empty, false).await?;
        // Data Center names the authenticated user in a response header.
        let account = response.headers().get("x-ausername").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let repo: Value = response.json().await.map_err(|e| BitbucketError::Unexpected(e.to_string()))?;
        let main_branch = match self
            .session
            .json::<Value>(Method::GET, &format!("{}/default-branch", self.repo_url), &Body::Empty)
            .await
        {
            Ok(b) => b.get("displayId").and_then(Value::as_str).map(str::to_owned),
            Err(BitbucketError::NotFound(_)) => None,
            Err(e) => return Err(e),
        };
        let text = |p: &str| repo.pointer(p).and_then(Value::as_str).map(str::to_owned);
        Ok(Access {
            account,
            repository: format!("{}/{}", text("/project/key").unwrap_or_default(), text("/slug").unwrap_or_default()),
            main_branch,
            html_url: text("/links/self/0/href"),
        })
    }

    async fn list_webhooks(&self) -> Result<Vec<Webhook>, BitbucketError> {
        let url = format!("{}/webhooks?limit=100", self.repo_url);
        let listing = self.session.list::<DcHook>(&url, MAX_PAGES, next_start).await?;
        Ok(listing.items.into_iter().map(Webhook::from).collect())
    }

    async fn create_webhook(&self, spec: &WebhookSpec) -> Result<Webhook, BitbucketError> {
        let hook: DcHook = self
            .session
            .json(Method::POST, &format!("{}/webhooks", self.repo_url), &Body::Json(Self::hook_body(spec)))
            .await?;
        Ok(hook.into())
    }

    async fn update_webhook(&self, id: &str, spec: &WebhookSpec) -> Result<(), BitbucketError> {
        let url = format!("{}/webhooks/{}", self.repo_url, segment(id));
        self.session.send(Method::PUT, &url, &Body::Json(Self::hook_body(spec)), false).await?;
        Ok(())
    }

    async fn delete_webhook(&self, id: &str) -> Result<(), BitbucketError> {
        let url = format!("{}/webhooks/{}", self.repo_url, segment(id));
        match self.session.send(Method::DELETE, &url, &Body::Empty, false).await {
            Ok(_) | Err(BitbucketError::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_center_paging_moves_start() {
        let page = json!({"isLastPage": false, "nextPageStart": 25});
        let next = next_start(&page, "https://h/rest/api/latest/x?limit=25&start=0").unwrap();
        assert_eq!(next, "https://h/rest/api/latest/x?limit=25&start=25");
        assert_eq!(next_start(&json!({"isLastPage": true}), "https://h/x"), None);
    }
}
