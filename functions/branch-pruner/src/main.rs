//! Lambda entry point: HTTP API routes, the state table's stream and the EventBridge schedule,
//! one set of clients.

use std::sync::Arc;

use serde_json::json;
use shared::bitbucket::Connector;
use shared::domain::pruning::Pruner;

// Lambda hands an environment one event at a time: worker threads would only cost start time.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), shared::lambda::Error> {
    shared::telemetry::init();
    let backends = shared::backends::aws().await?;
    let pruner = Arc::new(Pruner { store: backends.store, secrets: backends.secrets, connector: Connector::default() });
    let router = branch_pruner::app(pruner.clone());
    shared::lambda::serve(router, move |event| {
        let pruner = pruner.clone();
        async move {
            if shared::lambda::is_schedule(&event) {
                Ok(branch_pruner::on_schedule(&pruner).await)
            } else if event.get("Records").is_some() {
                Ok(branch_pruner::on_stream(&pruner, &event).await)
            } else {
                Ok(json!({"ignored": "neither a schedule nor a stream event"}))
            }
        }
    })
    .await
}
