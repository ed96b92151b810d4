//! Lambda entry point: HTTP API routes and the EventBridge schedule, one set of clients.

use std::sync::Arc;

use serde_json::json;
use shared::bitbucket::Connector;
use shared::domain::pipelines::Pipelines;

// Lambda hands an environment one event at a time: worker threads would only cost start time.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), shared::lambda::Error> {
    shared::telemetry::init();
    let backends = shared::backends::aws().await?;
    let pipelines = Arc::new(Pipelines::new(backends.store, backends.secrets, Connector::default()));
    let router = status_poller::app(pipelines.clone());
    shared::lambda::serve(router, move |event| {
        let pipelines = pipelines.clone();
        async move {
            if shared::lambda::is_schedule(&event) {
                Ok(status_poller::on_schedule(&pipelines).await)
            } else {
                Ok(json!({"ignored": "not a schedule event"}))
            }
        }
    })
    .await
}
