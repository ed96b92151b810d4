//! The AWS adapters of the storage ports: DynamoDB for the state table (with the reading of
//! its stream images) and Secrets Manager (cached, its client built at first use), on an SDK
//! configuration made from the variables Lambda sets — built once, at cold start.

mod dynamodb;
mod eventbridge;
mod secrets_manager;
mod sqs;

pub use dynamodb::{DynamoStore, item_from_stream_image, stream_image_from_item};
pub use eventbridge::EventBridgePublisher;
pub use secrets_manager::SecretsManagerStore;
pub use sqs::SqsQueue;

use std::sync::Arc;
use std::time::Duration;

use aws_smithy_http_client::tls::rustls_provider::CryptoMode;
use aws_smithy_http_client::tls::{Provider, TlsContext, TrustStore};
use domain::Backends;
use domain::secrets::Secret;

/// What the SDK needs, from the variables Lambda sets: `AWS_REGION` and the execution role's
/// `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` / `AWS_SESSION_TOKEN`, which stay valid for
/// the life of the execution environment. `AWS_ENDPOINT_URL` (or the per-service
/// `AWS_ENDPOINT_URL_DYNAMODB` / `AWS_ENDPOINT_URL_SECRETS_MANAGER`) points the same binary at
/// an emulator. Read once by `entry::Settings`.
#[derive(Debug, Clone)]
pub struct AwsSettings {
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: Secret,
    pub session_token: Option<Secret>,
    pub endpoint: Option<String>,
    pub dynamodb_endpoint: Option<String>,
    pub secrets_manager_endpoint: Option<String>,
}

/// The compiled-in AWS roots could not be loaded (a build problem, never a runtime one).
#[derive(Debug, thiserror::Error)]
#[error("AWS TLS roots: {0}")]
pub struct TlsError(String);

/// The AWS adapters: the state table `table`, and Secrets Manager with reads cached for
/// `secret_cache` (new secrets encrypted with `kms_key_id`, when given).
pub fn backends(
    aws: &AwsSettings,
    table: &str,
    secret_cache: Duration,
    kms_key_id: Option<String>,
) -> Result<Backends, TlsError> {
    let config = sdk_config(aws)?;
    let mut dynamodb = aws_sdk_dynamodb::config::Builder::from(&config);
    if let Some(endpoint) = &aws.dynamodb_endpoint {
        dynamodb.set_endpoint_url(Some(endpoint.clone()));
    }
    let mut secretsmanager = aws_sdk_secretsmanager::config::Builder::from(&config);
    if let Some(endpoint) = &aws.secrets_manager_endpoint {
        secretsmanager.set_endpoint_url(Some(endpoint.clone()));
    }
    Ok(Backends {
        store: Arc::new(DynamoStore::new(aws_sdk_dynamodb::Client::from_conf(dynamodb.build()), table.to_owned())),
        secrets: Arc::new(SecretsManagerStore::lazy(secretsmanager, secret_cache).with_kms_key(kms_key_id)),
    })
}

/// The work queue at `url` (SQS). Its SDK configuration and client are built at its first use:
/// only the schedules enqueue. `sqs_endpoint` (`AWS_ENDPOINT_URL_SQS`) points it at an emulator.
pub fn work_queue(aws: &AwsSettings, url: &str, sqs_endpoint: Option<&str>) -> Arc<dyn domain::fanout::WorkQueue> {
    let (aws, endpoint) = (aws.clone(), sqs_endpoint.map(str::to_owned));
    Arc::new(SqsQueue::lazy(
        move || {
            // The roots are compiled in: they always load (a unit test proves it).
            let config = sdk_config(&aws).expect("the compiled-in AWS roots load");
            let mut sqs = aws_sdk_sqs::config::Builder::from(&config);
            if let Some(endpoint) = endpoint {
                sqs.set_endpoint_url(Some(endpoint));
            }
            aws_sdk_sqs::Client::from_conf(sqs.build())
        },
        url,
    ))
}

/// The EventBridge publisher of `bus` (`AWS_ENDPOINT_URL` points it at an emulator).
pub fn event_publisher(aws: &AwsSettings, bus: &str) -> Result<EventBridgePublisher, TlsError> {
    let config = sdk_config(aws)?;
    let client = aws_sdk_eventbridge::Client::from_conf(aws_sdk_eventbridge::config::Builder::from(&config).build());
    Ok(EventBridgePublisher::new(client, bus))
}

/// The SDK configuration of a Lambda function.
///
/// Not `aws-config`: its provider chains (profiles, SSO, STS, IMDS) are never used in Lambda,
/// yet they cost every function 0.7 MB and read files at cold start (BENCHMARKS.md). HTTPS is
/// rustls on ring, like the Bitbucket client's.
pub fn sdk_config(aws: &AwsSettings) -> Result<aws_types::SdkConfig, TlsError> {
    let credentials = aws_credential_types::Credentials::new(
        aws.access_key_id.clone(),
        aws.secret_access_key.expose().to_owned(),
        aws.session_token.as_ref().map(|t| t.expose().to_owned()),
        None,
        "lambda-environment",
    );
    let mut config = aws_types::SdkConfig::builder()
        .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
        .region(aws_types::region::Region::new(aws.region.clone()))
        .credentials_provider(aws_credential_types::provider::SharedCredentialsProvider::new(credentials))
        .http_client(
            aws_smithy_http_client::Builder::new()
                .tls_provider(Provider::Rustls(CryptoMode::Ring))
                .tls_context(aws_tls_context()?)
                .build_https(),
        );
    config.set_endpoint_url(aws.endpoint.clone());
    Ok(config.build())
}

/// The roots AWS service endpoints chain to (Amazon Root CA 1–4 and Starfield Services Root G2,
/// which cross-signs them), compiled in: the SDK's client then reads no certificate store at
/// cold start (the system store is ~290 files, about 10 ms).
const AWS_ROOTS_PEM: &[u8] = include_bytes!("aws_roots.pem");

fn aws_tls_context() -> Result<TlsContext, TlsError> {
    TlsContext::builder()
        .with_trust_store(TrustStore::empty().with_native_roots(false).with_pem_certificate(AWS_ROOTS_PEM))
        .build()
        .map_err(|e| TlsError(e.to_string()))
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
