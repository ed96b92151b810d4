//! Lambda entry point: builds config and clients once, then serves the API.

use std::sync::Arc;

use integrations_api::{Api, app};
use shared::bitbucket::Connector;
use shared::config::{env_or, env_required};
use shared::domain::connection::Connections;

// Lambda hands an environment one event at a time: worker threads would only cost start time.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    shared::telemetry::init();
    let backends = shared::backends::aws().await?;
    let connections = Connections {
        store: backends.store,
        secrets: backends.secrets,
        connector: Connector::default(),
        public_base_url: env_required("PUBLIC_BASE_URL")?,
        secret_prefix: env_or("SECRET_PREFIX", "bitbucket-automation".to_owned())?,
    };
    lambda_http::run(app(Arc::new(Api { connections }))).await
}
