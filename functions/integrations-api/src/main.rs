//! Lambda entry point: builds config and clients once, then serves the API.

use std::sync::Arc;

use integrations_api::{Api, app};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::telemetry::init();
    let api = Api { backends: shared::backends::aws().await? };
    lambda_http::run(app(Arc::new(api))).await
}
