//! Lambda entry point: builds config and clients once, then serves the receiver.

use std::sync::Arc;

use webhook_receiver::{Receiver, app};

// Lambda hands an environment one event at a time: worker threads would only cost start time.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    shared::telemetry::init();
    let receiver = Receiver { backends: shared::backends::aws().await?, retention: shared::config::retention()? };
    lambda_http::run(app(Arc::new(receiver))).await
}
