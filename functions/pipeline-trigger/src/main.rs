//! Lambda entry point: HTTP API routes and the state table's stream, one set of clients.

use std::sync::Arc;

use shared::bitbucket::Connector;
use shared::domain::pipelines::Pipelines;

// Lambda hands an environment one event at a time: worker threads would only cost start time.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), shared::lambda::Error> {
    shared::telemetry::init();
    let backends = shared::backends::aws().await?;
    let pipelines = Arc::new(Pipelines::new(backends.store, backends.secrets, Connector::default()));
    let router = pipeline_trigger::app(pipelines.clone());
    shared::lambda::serve(router, move |event| {
        let pipelines = pipelines.clone();
        async move { Ok(pipeline_trigger::on_stream(&pipelines, &event).await) }
    })
    .await
}
