//! The composition root: what a process builds once — the adapters, the Bitbucket connector and
//! the services on them — for every Lambda function, the local stack and the tests alike.

use std::sync::{Arc, OnceLock};

use bitbucket_client::{Connector, RetryPolicy};
use domain::Backends;
use domain::backup::Backups;
use domain::bitbucket::Connect;
use domain::connection::Connections;
use domain::context::IntegrationContext;
use domain::outbox::Relay;
use domain::pipelines::Pipelines;
use domain::pruning::Pruner;

use crate::http::AdminGuard;
use crate::settings::{ConfigError, Settings};

pub struct Root {
    pub settings: Settings,
    pub backends: Backends,
    retry: RetryPolicy,
    /// Built at first use: the receiver never calls Bitbucket, so never builds (or links) it.
    connector: OnceLock<Arc<dyn Connect>>,
}

impl Root {
    pub fn new(settings: Settings, backends: Backends, retry: RetryPolicy) -> Self {
        Root { settings, backends, retry, connector: OnceLock::new() }
    }

    /// A Lambda function's root: the AWS adapters its settings name.
    pub fn aws(settings: Settings) -> Result<Self, crate::lambda::Error> {
        let aws = settings.aws.as_ref().ok_or(ConfigError { name: "STATE_TABLE", problem: "must be set".into() })?;
        let backends = aws_adapters::backends(&aws.sdk, &aws.table, aws.secret_cache, aws.kms_key_id.clone())?;
        Ok(Root::new(settings, backends, RetryPolicy::default()))
    }

    /// One HTTP client and OAuth token cache for every connection of the process.
    pub fn connector(&self) -> Arc<dyn Connect> {
        self.connector.get_or_init(|| Arc::new(Connector::new(self.retry))).clone()
    }

    pub fn context(&self) -> IntegrationContext {
        IntegrationContext::new(self.backends.clone(), self.connector())
    }

    pub fn connections(&self) -> Result<Connections, ConfigError> {
        Ok(Connections {
            ctx: self.context(),
            public_base_url: self.settings.public_base_url()?.to_owned(),
            secret_prefix: self.settings.secret_prefix.clone(),
            allow_loopback_http: self.settings.allow_loopback_http,
        })
    }

    pub fn backups(&self) -> Backups {
        Backups { ctx: self.context() }
    }

    pub fn pipelines(&self) -> Pipelines {
        Pipelines::new(self.context())
    }

    /// The outbox relay onto the stack's EventBridge bus (`EVENT_BUS_NAME`).
    pub fn event_relay(&self) -> Result<Relay, crate::lambda::Error> {
        let aws =
            self.settings.aws.as_ref().ok_or(ConfigError { name: "STATE_TABLE", problem: "must be set".into() })?;
        let bus =
            aws.event_bus.as_deref().ok_or(ConfigError { name: "EVENT_BUS_NAME", problem: "must be set".into() })?;
        let publisher = aws_adapters::event_publisher(&aws.sdk, bus)?;
        Ok(Relay { store: self.backends.store.clone(), publisher: Arc::new(publisher) })
    }

    pub fn pruner(&self) -> Pruner {
        Pruner { ctx: self.context(), builds: Some(Arc::new(self.pipelines())) }
    }

    /// The admin routes' guard in Lambda: an IAM caller, or the token in `ADMIN_TOKEN_SECRET`.
    pub fn admin_guard(&self) -> AdminGuard {
        AdminGuard { secrets: self.backends.secrets.clone(), token_secret: self.settings.admin_token_secret.clone() }
    }
}
