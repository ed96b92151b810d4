//! Lambda entry point: builds the clients once, then serves the backup routes.

use std::sync::Arc;

use shared::bitbucket::Connector;
use shared::domain::backup::Backups;

// Lambda hands an environment one event at a time: worker threads would only cost start time.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    shared::telemetry::init();
    let backends = shared::backends::aws().await?;
    let backups = Backups { store: backends.store, secrets: backends.secrets, connector: Connector::default() };
    lambda_http::run(backup_committer::app(Arc::new(backups))).await
}
