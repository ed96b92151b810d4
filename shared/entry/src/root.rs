//! The composition root: what a process builds once — the adapters, the Bitbucket connector and
//! the services on them — for every Lambda function, the local stack and the tests alike.

use std::sync::{Arc, OnceLock};

use bitbucket_client::{Connector, RetryPolicy};
use domain::Backends;
use domain::backup::Backups;
use domain::bitbucket::Connect;
use domain::connection::Connections;
use domain::consumers::DeliveryConsumer;
use domain::context::IntegrationContext;
use domain::fanout::{Job, WorkQueue};
use domain::outbox::Relay;
use domain::pipelines::Pipelines;
use domain::pruning::Pruner;
use domain::rate::{RateBudget, StoreBudget};

use crate::http::AdminGuard;
use crate::settings::{ConfigError, Settings};

pub struct Root {
    pub settings: Settings,
    pub backends: Backends,
    retry: RetryPolicy,
    /// Built at first use: the receiver never calls Bitbucket, so never builds (or links) it.
    connector: OnceLock<Arc<dyn Connect>>,
    /// The credentials' shared request budget, on the state table (built with the connector).
    budget: OnceLock<Arc<dyn RateBudget>>,
    /// Work queues given by the host (tests, tools); else SQS from the settings.
    queues: Vec<(Job, Arc<dyn WorkQueue>)>,
}

impl Root {
    pub fn new(settings: Settings, backends: Backends, retry: RetryPolicy) -> Self {
        Root { settings, backends, retry, connector: OnceLock::new(), budget: OnceLock::new(), queues: Vec::new() }
    }

    /// Requests taken from `budget` instead of the state table's budget on the real clock
    /// (benchmarks simulate an hour on another clock).
    pub fn with_budget(self, budget: Arc<dyn RateBudget>) -> Self {
        let _ = self.budget.set(budget);
        self
    }

    /// `job`'s schedule fans out on `queue` instead of the SQS queue the settings name.
    pub fn with_work_queue(mut self, job: Job, queue: Arc<dyn WorkQueue>) -> Self {
        self.queues.push((job, queue));
        self
    }

    /// A Lambda function's root: the AWS adapters its settings name.
    pub fn aws(settings: Settings) -> Result<Self, crate::lambda::Error> {
        let aws = settings.aws.as_ref().ok_or(ConfigError { name: "STATE_TABLE", problem: "must be set".into() })?;
        let backends = aws_adapters::backends(&aws.sdk, &aws.table, aws.secret_cache, aws.kms_key_id.clone())?;
        Ok(Root::new(settings, backends, RetryPolicy::default()))
    }

    /// One HTTP client and OAuth token cache for every connection of the process, every request
    /// taken from the credential's shared budget.
    pub fn connector(&self) -> Arc<dyn Connect> {
        self.connector.get_or_init(|| Arc::new(Connector::with_budget(self.retry, self.budget()))).clone()
    }

    /// The credentials' request budget (`domain::rate`), shared through the state table.
    pub fn budget(&self) -> Arc<dyn RateBudget> {
        self.budget.get_or_init(|| Arc::new(StoreBudget::new(self.backends.store.clone(), self.settings.rate))).clone()
    }

    pub fn context(&self) -> IntegrationContext {
        IntegrationContext::new(self.backends.clone(), self.connector())
    }

    /// The queue a schedule fans its work out on (SQS, from `POLL_QUEUE_URL` / `PRUNE_QUEUE_URL`).
    pub fn work_queue(&self, job: Job) -> Result<Arc<dyn WorkQueue>, ConfigError> {
        if let Some((_, queue)) = self.queues.iter().find(|(j, _)| *j == job) {
            return Ok(queue.clone());
        }
        let (name, url) = match job {
            Job::Poll => ("POLL_QUEUE_URL", self.settings.aws.as_ref().and_then(|a| a.poll_queue_url.as_deref())),
            Job::Prune => ("PRUNE_QUEUE_URL", self.settings.aws.as_ref().and_then(|a| a.prune_queue_url.as_deref())),
        };
        let aws =
            self.settings.aws.as_ref().ok_or(ConfigError { name: "STATE_TABLE", problem: "must be set".into() })?;
        let url = url.ok_or(ConfigError { name, problem: "must be set".into() })?;
        Ok(aws_adapters::work_queue(&aws.sdk, url, aws.sqs_endpoint.as_deref()))
    }

    /// The delivery consumers, in the order the stream hands them a delivery (replays too).
    pub fn consumers(&self) -> Vec<Arc<dyn DeliveryConsumer>> {
        vec![Arc::new(self.pipelines()), Arc::new(self.pruner())]
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

    /// The pipelines service for scheduled work: its requests defer to people's.
    pub fn scheduled_pipelines(&self) -> Pipelines {
        Pipelines::new(self.context().scheduled())
    }

    /// The pruner for scheduled work: its requests defer to people's.
    pub fn scheduled_pruner(&self) -> Pruner {
        Pruner { ctx: self.context().scheduled(), builds: Some(Arc::new(self.scheduled_pipelines())) }
    }

    /// The admin routes' guard in Lambda: an IAM caller, or the token in `ADMIN_TOKEN_SECRET`.
    pub fn admin_guard(&self) -> AdminGuard {
        AdminGuard {
            secrets: self.backends.secrets.clone(),
            token_secret: self.settings.admin_token_secret.clone(),
            feed: Some(self.backends.store.clone()),
        }
    }
}
