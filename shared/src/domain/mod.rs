//! Plain domain types and the rules about them, written against the ports only.

pub mod backup;
pub mod connection;
pub mod delivery;
pub mod integration;
pub mod parked;
pub mod pipelines;
pub mod pruning;
pub mod webhook_secret;

pub use delivery::{Delivery, IngestError, Ingested, ingest, list_deliveries};
pub use integration::{Integration, IntegrationStatus, Options, StalePolicy};
pub use webhook_secret::WebhookSecrets;
