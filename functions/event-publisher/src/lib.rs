//! event-publisher: the outbox relay. Each domain event recorded in the state table (an
//! `outbox_event` record, on the table's stream) is put on the stack's EventBridge bus, then
//! marked published; a failed record is retried alone. It serves no route: the activity feed is
//! `GET /integrations/{id}/activity` (integrations-api).

use std::sync::Arc;

use entry::Root;
use entry::lambda::{Access, Function};
use entry::settings::ConfigError;

/// The function: the relay on the root's table and bus (`EVENT_BUS_NAME`).
pub fn function(root: &Root) -> Result<Function, ConfigError> {
    let relay = root.event_relay().map_err(|e| ConfigError { name: "EVENT_BUS_NAME", problem: e.to_string() })?;
    // No routes, so nothing to guard (an HTTP event gets the usual JSON 404).
    Ok(Function { access: Access::Public, relay: Some(Arc::new(relay)), ..Function::http(entry::http::Router::new()) })
}
