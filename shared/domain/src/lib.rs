//! The application core: Bitbucket's models and webhook payloads, the domain services
//! (connections, deliveries, backups, pipelines, environments), the ports they are written
//! against (state store, secret store, Bitbucket) and the record tables.
//!
//! The dependency rule, checked in CI (`cargo tree -p domain -e normal`): nothing here depends
//! on an AWS SDK, an HTTP server or client, Lambda's runtime or SQLite. Adapters live in
//! `aws-adapters`, `local-adapters` and `bitbucket-client`; the entry glue (HTTP answers,
//! Lambda events, settings, the composition root) in `entry`.

pub mod backup;
pub mod bitbucket;
pub mod connection;
pub mod consumers;
pub mod context;
pub mod delivery;
pub mod error;
pub mod failures;
pub mod fanout;
pub mod glob;
pub mod integration;
pub mod objects;
pub mod outbox;
pub mod parked;
pub mod pipelines;
pub mod pruning;
pub mod rate;
pub mod secrets;
pub mod signature;
pub mod store;
pub mod tables;
pub mod webhook;
pub mod webhook_secret;

pub use context::IntegrationContext;
pub use delivery::{Delivery, Ingested, Intake, list_deliveries};
pub use error::Error;
pub use integration::{Integration, IntegrationStatus, Options, StalePolicy};
pub use webhook_secret::WebhookSecrets;

use std::sync::Arc;

/// The two storage ports, as a process builds them once (AWS or local adapters).
#[derive(Clone)]
pub struct Backends {
    pub store: Arc<dyn store::StateStore>,
    pub secrets: Arc<dyn secrets::SecretStore>,
}

/// Seconds since the Unix epoch, the unit TTL attributes use.
pub fn now_epoch() -> i64 {
    chrono::Utc::now().timestamp()
}
