//! Builds the ports' adapters once, at cold start: AWS (DynamoDB + Secrets Manager) in Lambda,
//! SQLite + a local secret file in the local stack. Functions only ever see the ports.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{ConfigError, env_or, env_required};
use crate::secrets::{FileSecretStore, SecretStore, SecretsManagerStore};
use crate::store::{DynamoStore, SqliteStore, StateStore, StoreError};

#[derive(Clone)]
pub struct Backends {
    pub store: Arc<dyn StateStore>,
    pub secrets: Arc<dyn SecretStore>,
}

/// AWS adapters configured from the environment: `STATE_TABLE`, `SECRET_CACHE_SECONDS`
/// (default 300). The SDK honours `AWS_ENDPOINT_URL_DYNAMODB` /
/// `AWS_ENDPOINT_URL_SECRETS_MANAGER`, so the same binary runs against an emulator.
pub async fn aws() -> Result<Backends, ConfigError> {
    let table = env_required("STATE_TABLE")?;
    let cache = Duration::from_secs(env_or("SECRET_CACHE_SECONDS", 300)?);
    let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    Ok(Backends {
        store: Arc::new(DynamoStore::new(aws_sdk_dynamodb::Client::new(&config), table)),
        secrets: Arc::new(SecretsManagerStore::new(aws_sdk_secretsmanager::Client::new(&config), cache)),
    })
}

/// Local adapters under `state_dir`: `state.sqlite3` and the owner-only `secrets.json`.
pub fn local(state_dir: &Path) -> Result<Backends, StoreError> {
    create_private_dir(state_dir).map_err(|e| StoreError::Unavailable(format!("{}: {e}", state_dir.display())))?;
    Ok(Backends {
        store: Arc::new(SqliteStore::open(&state_dir.join("state.sqlite3"))?),
        secrets: Arc::new(FileSecretStore::new(state_dir.join("secrets.json"))),
    })
}

/// Creates `dir` (mode 0700 on Unix) if it does not exist.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// A short description of an AWS SDK error: `Code: message` for service errors, the SDK's
/// own context for transport failures. Neither carries request payloads or credentials.
pub(crate) fn describe_sdk_error<E, R>(err: &aws_sdk_dynamodb::error::SdkError<E, R>) -> String
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    use aws_sdk_dynamodb::error::ProvideErrorMetadata;
    match (err.code(), err.message()) {
        (Some(code), Some(message)) => format!("{code}: {}", message.split_whitespace().collect::<Vec<_>>().join(" ")),
        (Some(code), None) => code.to_owned(),
        _ => aws_sdk_dynamodb::error::DisplayErrorContext(err).to_string(),
    }
}
