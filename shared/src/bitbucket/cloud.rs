//! Bitbucket Cloud REST 2.0 adapter.

use async_trait::async_trait;
use reqwest::Method;
use serde::Deserialize;
use serde_json::{Value, json};

use super::transport::{Body, Session};
use super::{Access, Bitbucket, BitbucketError, RepoTarget, Webhook, WebhookSpec, segment};

/// The events this project acts on (no comments or approvals).
pub const EVENTS: &[&str] = &[
    "repo:push",
    "pullrequest:created",
    "pullrequest:updated",
    "pullrequest:fulfilled",
    "pullrequest:rejected",
    "repo:commit_status_created",
    "repo:commit_status_updated",
];

const MAX_PAGES: usize = 50;

pub struct CloudClient {
    session: Session,
    repo_url: String,
    base: String,
}

impl CloudClient {
    pub fn new(session: Session, target: &RepoTarget) -> Self {
        let base = target.base_url.trim_end_matches('/').to_owned();
        let repo_url = format!("{base}/repositories/{}/{}", segment(&target.owner), segment(&target.slug));
        CloudClient { session, repo_url, base }
    }

    fn hook_body(spec: &WebhookSpec) -> Value {
        json!({
            "description": spec.description,
            "url": spec.url,
            "active": spec.active,
            "secret": spec.secret.expose(),
            "events": EVENTS,
        })
    }
}

#[derive(Deserialize)]
struct CloudHook {
    uuid: String,
    url: String,
    #[serde(default)]
    active: bool,
    #[serde(default)]
    events: Vec<String>,
}

impl From<CloudHook> for Webhook {
    fn from(h: CloudHook) -> Self {
        Webhook { id: h.uuid, url: h.url, active: h.active, events: h.events }
    }
}

fn next_link(page: &Value, _current: &str) -> Option<String> {
    page.get("next").and_then(Value::as_str).map(str::to_owned)
}

#[async_trait]
impl Bitbucket for CloudClient {
    async fn verify_access(&self) -> Result<Access, BitbucketError> {
        // Access tokens act as the repository/workspace, not a user: /user may be refused.
        let user: Option<Value> =
            match self.session.json(Method::GET, &format!("{}/user", self.base), &Body::Empty).await {
                Ok(v) => Some(v),
                Err(BitbucketError::Forbidden { .. }) => None,
                Err(e) => return Err(e),
            };
        let repo: Value = self.session.json(Method::GET, &self.repo_url, &Body::Empty).await?;
        let text = |v: &Value, p: &str| v.pointer(p).and_then(Value::as_str).map(str::to_owned);
        Ok(Access {
            account: user.and_then(|u| text(&u, "/display_name").or_else(|| text(&u, "/username"))),
            repository: text(&repo, "/full_name").unwrap_or_default(),
            main_branch: text(&repo, "/mainbranch/name"),
            html_url: text(&repo, "/links/html/href"),
        })
    }

    async fn list_webhooks(&self) -> Result<Vec<Webhook>, BitbucketError> {
        let url = format!("{}/hooks?pagelen=100", self.repo_url);
        let listing = self.session.list::<CloudHook>(&url, MAX_PAGES, next_link).await?;
        Ok(listing.items.into_iter().map(Webhook::from).collect())
    }

    async fn create_webhook(&self, spec: &WebhookSpec) -> Result<Webhook, BitbucketError> {
        let hook: CloudHook = self
            .session
            .json(Method::POST, &format!("{}/hooks", self.repo_url), &Body::Json(Self::hook_body(spec)))
            .await?;
        Ok(hook.into())
    }

    async fn update_webhook(&self, id: &str, spec: &WebhookSpec) -> Result<(), BitbucketError> {
        let url = format!("{}/hooks/{}", self.repo_url, segment(id));
        self.session.send(Method::PUT, &url, &Body::Json(Self::hook_body(spec)), false).await?;
        Ok(())
    }

    async fn delete_webhook(&self, id: &str) -> Result<(), BitbucketError> {
        let url = format!("{}/hooks/{}", self.repo_url, segment(id));
        match self.session.send(Method::DELETE, &url, &Body::Empty, false).await {
            Ok(_) | Err(BitbucketError::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }
}
