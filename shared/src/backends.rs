//! Builds the ports' adapters once, at cold start: AWS (DynamoDB + Secrets Manager) in Lambda,
//! SQLite + a local secret file in the local stack. Functions only ever see the ports.

#[cfg(feature = "local")]
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use aws_smithy_http_client::tls::rustls_provider::CryptoMode;
use aws_smithy_http_client::tls::{Provider, TlsContext, TrustStore};

use crate::config::{ConfigError, env_or, env_required};
use crate::secrets::{SecretStore, SecretsManagerStore};
use crate::store::{DynamoStore, StateStore};
#[cfg(feature = "local")]
use crate::{
    secrets::FileSecretStore,
    store::{SqliteStore, StoreError},
};

#[derive(Clone)]
pub struct Backends {
    pub store: Arc<dyn StateStore>,
    pub secrets: Arc<dyn SecretStore>,
}

/// AWS adapters configured from the environment: `STATE_TABLE`, `SECRET_CACHE_SECONDS`
/// (default 300), and what [`sdk_config`] reads.
pub async fn aws() -> Result<Backends, ConfigError> {
    let table = env_required("STATE_TABLE")?;
    let cache = Duration::from_secs(env_or("SECRET_CACHE_SECONDS", 300)?);
    let config = sdk_config()?;
    let mut dynamodb = aws_sdk_dynamodb::config::Builder::from(&config);
    if let Some(endpoint) = service_endpoint("AWS_ENDPOINT_URL_DYNAMODB") {
        dynamodb.set_endpoint_url(Some(endpoint));
    }
    let mut secretsmanager = aws_sdk_secretsmanager::config::Builder::from(&config);
    if let Some(endpoint) = service_endpoint("AWS_ENDPOINT_URL_SECRETS_MANAGER") {
        secretsmanager.set_endpoint_url(Some(endpoint));
    }
    Ok(Backends {
        store: Arc::new(DynamoStore::new(aws_sdk_dynamodb::Client::from_conf(dynamodb.build()), table)),
        secrets: Arc::new(SecretsManagerStore::lazy(secretsmanager, cache)),
    })
}

/// The SDK configuration of a Lambda function, from the variables Lambda sets: `AWS_REGION`
/// and the execution role's `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` /
/// `AWS_SESSION_TOKEN`, which stay valid for the life of the execution environment.
/// `AWS_ENDPOINT_URL` (or the per-service `AWS_ENDPOINT_URL_DYNAMODB` /
/// `AWS_ENDPOINT_URL_SECRETS_MANAGER`) points the same binary at an emulator.
///
/// Not `aws-config`: its provider chains (profiles, SSO, STS, IMDS) are never used in Lambda,
/// yet they cost every function 0.7 MB and read files at cold start (BENCHMARKS.md). HTTPS is
/// rustls on ring, like the Bitbucket client's.
pub fn sdk_config() -> Result<aws_types::SdkConfig, ConfigError> {
    let region = env_required("AWS_REGION")?;
    let credentials = aws_credential_types::Credentials::new(
        env_required("AWS_ACCESS_KEY_ID")?,
        env_required("AWS_SECRET_ACCESS_KEY")?,
        std::env::var("AWS_SESSION_TOKEN").ok().filter(|v| !v.is_empty()),
        None,
        "lambda-environment",
    );
    let mut config = aws_types::SdkConfig::builder()
        .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
        .region(aws_types::region::Region::new(region))
        .credentials_provider(aws_credential_types::provider::SharedCredentialsProvider::new(credentials))
        .http_client(
            aws_smithy_http_client::Builder::new()
                .tls_provider(Provider::Rustls(CryptoMode::Ring))
                .tls_context(aws_tls_context()?)
                .build_https(),
        );
    config.set_endpoint_url(service_endpoint("AWS_ENDPOINT_URL"));
    Ok(config.build())
}

/// The roots AWS service endpoints chain to (Amazon Root CA 1–4 and Starfield Services Root G2,
/// which cross-signs them), compiled in: the SDK's client then reads no certificate store at
/// cold start (the system store is ~290 files, about 10 ms).
const AWS_ROOTS_PEM: &[u8] = include_bytes!("aws_roots.pem");

fn aws_tls_context() -> Result<TlsContext, ConfigError> {
    TlsContext::builder()
        .with_trust_store(TrustStore::empty().with_native_roots(false).with_pem_certificate(AWS_ROOTS_PEM))
        .build()
        .map_err(|e| ConfigError { name: "AWS_ROOTS_PEM", problem: e.to_string() })
}

fn service_endpoint(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

#[cfg(feature = "local")]
/// Local adapters under `state_dir`: `state.sqlite3` and the owner-only `secrets.json`.
pub fn local(state_dir: &Path) -> Result<Backends, StoreError> {
    create_private_dir(state_dir).map_err(|e| StoreError::Unavailable(format!("{}: {e}", state_dir.display())))?;
    Ok(Backends {
        store: Arc::new(SqliteStore::open(&state_dir.join("state.sqlite3"))?),
        secrets: Arc::new(FileSecretStore::new(state_dir.join("secrets.json"))),
    })
}

/// Creates `dir` (mode 0700 on Unix) if it does not exist.
#[cfg(feature = "local")]
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_compiled_in_aws_roots_make_a_tls_context() {
        let pem = String::from_utf8_lossy(AWS_ROOTS_PEM);
        assert_eq!(pem.matches("BEGIN CERTIFICATE").count(), 5);
        assert!(aws_tls_context().is_ok());
    }
}
