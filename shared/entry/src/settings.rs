//! Settings, read from the environment once, at cold start; nothing else reads it.

use std::str::FromStr;
use std::time::Duration;

use aws_adapters::AwsSettings;
use domain::rate::BudgetConfig;
use domain::secrets::Secret;

#[derive(Debug, thiserror::Error)]
#[error("environment variable {name}: {problem}")]
pub struct ConfigError {
    pub name: &'static str,
    pub problem: String,
}

/// `name` if set and not blank.
pub fn env_text(name: &str) -> Option<String> {
    std::env::var(name).ok().map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

/// `name` parsed as `T`, or `default` when unset or empty.
pub fn env_or<T: FromStr>(name: &'static str, default: T) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    match env_text(name) {
        Some(v) => v.parse().map_err(|e: T::Err| ConfigError { name, problem: format!("cannot parse {v:?}: {e}") }),
        None => Ok(default),
    }
}

pub fn env_required(name: &'static str) -> Result<String, ConfigError> {
    env_text(name).ok_or(ConfigError { name, problem: "must be set".into() })
}

/// What every function reads from its environment.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How long delivery records are kept (`RETENTION_DAYS`, default 30).
    pub retention: chrono::Duration,
    /// Secret names are `{secret_prefix}/{integration id}/…` (`SECRET_PREFIX`).
    pub secret_prefix: String,
    /// Where Bitbucket reaches the receiver (`PUBLIC_BASE_URL`); the functions that register
    /// webhooks require it.
    pub public_base_url: Option<String>,
    /// The AWS side, in Lambda (or against an emulator): the table and Secrets Manager.
    pub aws: Option<AwsBackends>,
    /// Each credential's Bitbucket request budget (`RATE_LIMIT_PER_HOUR`, default 1,000 until
    /// Bitbucket announces another; `RATE_PEOPLE_SHARE`, default 0.2, kept for people).
    pub rate: BudgetConfig,
    /// The secret holding a bearer token admin routes also accept (`ADMIN_TOKEN_SECRET`), for
    /// deployments that front the API without IAM; unset, only IAM-authorized callers pass.
    pub admin_token_secret: Option<String>,
    /// Whether Bitbucket may be reached over plain HTTP on a loopback address (the local stack
    /// and its sandbox): never inside Lambda, where 127.0.0.1 is the Runtime API.
    pub allow_loopback_http: bool,
    /// How long the receiver trusts an integration record it read (`INTEGRATION_CACHE_SECONDS`,
    /// default 10): a flood for one integration costs one read per instance per period.
    pub integration_cache: Duration,
    /// Where domain events are POSTed, signed, outside AWS (`EVENTS_URL`).
    pub events_url: Option<String>,
    /// Their Standard Webhooks secret, `whsec_…` (`EVENTS_SECRET`).
    pub events_secret: Option<Secret>,
}

/// Where the AWS adapters point.
#[derive(Debug, Clone)]
pub struct AwsBackends {
    /// `STATE_TABLE`.
    pub table: String,
    /// How long a secret read stays cached (`SECRET_CACHE_SECONDS`, default 300).
    pub secret_cache: Duration,
    /// A customer-managed KMS key for the secrets this stack creates (`SECRET_KMS_KEY_ID`).
    pub kms_key_id: Option<String>,
    /// The EventBridge bus domain events are published to (`EVENT_BUS_NAME`; the publisher's).
    pub event_bus: Option<String>,
    pub sdk: AwsSettings,
    /// The scheduled work's queues (`POLL_QUEUE_URL`, `PRUNE_QUEUE_URL`): set for the functions
    /// whose schedule enqueues.
    pub poll_queue_url: Option<String>,
    pub prune_queue_url: Option<String>,
    /// `AWS_ENDPOINT_URL_SQS`: SQS alone at another endpoint (an emulator).
    pub sqs_endpoint: Option<String>,
}

impl Settings {
    /// A function's settings in Lambda: the AWS backends are required.
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Settings { aws: Some(aws_backends()?), ..Self::common()? })
    }

    /// The settings that do not depend on where state lives (the local stack reads these).
    pub fn common() -> Result<Self, ConfigError> {
        Ok(Settings {
            retention: retention()?,
            secret_prefix: env_or("SECRET_PREFIX", "bitbucket-automation".to_owned())?,
            public_base_url: env_text("PUBLIC_BASE_URL"),
            aws: None,
            rate: rate()?,
            admin_token_secret: env_text("ADMIN_TOKEN_SECRET"),
            // Lambda sets AWS_LAMBDA_FUNCTION_NAME in every execution environment.
            allow_loopback_http: env_text("AWS_LAMBDA_FUNCTION_NAME").is_none(),
            integration_cache: Duration::from_secs(env_or("INTEGRATION_CACHE_SECONDS", 10)?),
            events_url: env_text("EVENTS_URL"),
            events_secret: env_text("EVENTS_SECRET").map(Secret::new),
        })
    }

    /// A process outside Lambda (the local stack, tests): Bitbucket reaches its receiver at
    /// `public_base_url`, and it may use a loopback sandbox; nothing is cached across requests.
    pub fn local(public_base_url: &str, secret_prefix: &str, retention: chrono::Duration) -> Self {
        Settings {
            retention,
            secret_prefix: secret_prefix.to_owned(),
            public_base_url: Some(public_base_url.to_owned()),
            aws: None,
            admin_token_secret: None,
            allow_loopback_http: true,
            integration_cache: Duration::ZERO,
            rate: BudgetConfig::default(),
            events_url: None,
            events_secret: None,
        }
    }

    pub fn public_base_url(&self) -> Result<&str, ConfigError> {
        self.public_base_url.as_deref().ok_or(ConfigError { name: "PUBLIC_BASE_URL", problem: "must be set".into() })
    }
}

fn retention() -> Result<chrono::Duration, ConfigError> {
    let days: i64 = env_or("RETENTION_DAYS", 30)?;
    if !(1..=3650).contains(&days) {
        return Err(ConfigError { name: "RETENTION_DAYS", problem: "must be between 1 and 3650".into() });
    }
    Ok(chrono::Duration::days(days))
}

fn rate() -> Result<BudgetConfig, ConfigError> {
    let defaults = BudgetConfig::default();
    let hourly_limit: u64 = env_or("RATE_LIMIT_PER_HOUR", defaults.hourly_limit)?;
    let people_share: f64 = env_or("RATE_PEOPLE_SHARE", defaults.people_share)?;
    if hourly_limit == 0 {
        return Err(ConfigError { name: "RATE_LIMIT_PER_HOUR", problem: "must be at least 1".into() });
    }
    if !(0.0..1.0).contains(&people_share) {
        return Err(ConfigError { name: "RATE_PEOPLE_SHARE", problem: "must be at least 0 and below 1".into() });
    }
    Ok(BudgetConfig { hourly_limit, people_share, ..defaults })
}

/// `STATE_TABLE`, `SECRET_CACHE_SECONDS` and the variables Lambda sets for the SDK.
pub fn aws_backends() -> Result<AwsBackends, ConfigError> {
    Ok(AwsBackends {
        table: env_required("STATE_TABLE")?,
        secret_cache: Duration::from_secs(env_or("SECRET_CACHE_SECONDS", 300)?),
        kms_key_id: env_text("SECRET_KMS_KEY_ID"),
        event_bus: env_text("EVENT_BUS_NAME"),
        sdk: AwsSettings {
            region: env_required("AWS_REGION")?,
            access_key_id: env_required("AWS_ACCESS_KEY_ID")?,
            secret_access_key: Secret::new(env_required("AWS_SECRET_ACCESS_KEY")?),
            session_token: env_text("AWS_SESSION_TOKEN").map(Secret::new),
            endpoint: env_text("AWS_ENDPOINT_URL"),
            dynamodb_endpoint: env_text("AWS_ENDPOINT_URL_DYNAMODB"),
            secrets_manager_endpoint: env_text("AWS_ENDPOINT_URL_SECRETS_MANAGER"),
        },
        poll_queue_url: env_text("POLL_QUEUE_URL"),
        prune_queue_url: env_text("PRUNE_QUEUE_URL"),
        sqs_endpoint: env_text("AWS_ENDPOINT_URL_SQS"),
    })
}
