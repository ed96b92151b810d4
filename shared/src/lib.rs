//! Bitbucket models, domain rules, ports and adapters shared by every function.
//!
//! Layering: `webhook` and `signature` are pure parsing/crypto; `domain` holds plain types and
//! the rules about them, written against the ports in `store` and `secrets`; adapters for each
//! backend live beside their port; `http` is the plumbing every function's router uses. No AWS
//! SDK type crosses a port.

pub mod backends;
pub mod bitbucket;
pub mod config;
pub mod domain;
pub mod glob;
pub mod http;
pub mod lambda;
pub mod objects;
pub mod secrets;
pub mod signature;
pub mod store;
pub mod telemetry;
pub mod webhook;

/// Seconds since the Unix epoch, the unit TTL attributes use.
pub fn now_epoch() -> i64 {
    chrono::Utc::now().timestamp()
}
