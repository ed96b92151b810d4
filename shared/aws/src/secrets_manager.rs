//! Secrets Manager adapter with a small read cache: the receiver reads the webhook secret on
//! every delivery, and a warm Lambda should not pay a Secrets Manager round trip each time.

use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};
use tokio::sync::RwLock;

use domain::secrets::{Secret, SecretError, SecretStore};

/// The client, built when first used: a function that answers from its secret cache or never
/// reads a secret (a list, a stream record it skips) need not build it at cold start.
type LazyClient = LazyLock<Client, Box<dyn FnOnce() -> Client + Send>>;

/// A cached value younger than this is never re-read, even for [`SecretStore::get_fresh`]: a
/// flood of badly signed webhooks costs at most one read per secret this often.
const REFRESH_AFTER: Duration = Duration::from_secs(5);
/// How long "no such secret" is believed: briefly, since the integration being created or
/// restored makes it exist moments later.
const ABSENT_TTL: Duration = Duration::from_secs(5);

pub struct SecretsManagerStore {
    client: LazyClient,
    ttl: Duration,
    /// The customer-managed key new secrets are encrypted with (else AWS's own key).
    kms_key_id: Option<String>,
    recovery_window_days: i64,
    cache: RwLock<HashMap<String, (Instant, Option<Secret>)>>,
}

fn secret_error<E: ProvideErrorMetadata + std::error::Error + 'static, R: std::fmt::Debug>(
    err: SdkError<E, R>,
) -> SecretError {
    match err.code() {
        Some("AccessDeniedException") => SecretError::Denied,
        _ => SecretError::Unavailable(crate::describe_sdk_error(&err)),
    }
}

impl SecretsManagerStore {
    pub fn new(client: Client, ttl: Duration) -> Self {
        Self::with_client(LazyLock::new(Box::new(move || client)), ttl)
    }

    /// Builds the client from `config` at its first use.
    pub fn lazy(config: aws_sdk_secretsmanager::config::Builder, ttl: Duration) -> Self {
        Self::with_client(LazyLock::new(Box::new(move || Client::from_conf(config.build()))), ttl)
    }

    fn with_client(client: LazyClient, ttl: Duration) -> Self {
        SecretsManagerStore {
            client,
            ttl,
            kms_key_id: None,
            recovery_window_days: 7,
            cache: RwLock::new(HashMap::new()),
        }
    }

    /// The cached value if it is younger than `max_age` (or, when absent, than
    /// [`ABSENT_TTL`]); else Secrets Manager's, remembered.
    async fn read(&self, name: &str, max_age: Duration) -> Result<Option<Secret>, SecretError> {
        if let Some((at, value)) = self.cache.read().await.get(name) {
            let fresh_for = if value.is_some() { max_age } else { max_age.min(ABSENT_TTL) };
            if at.elapsed() < fresh_for {
                return Ok(value.clone());
            }
        }
        let value = match self.client.get_secret_value().secret_id(name).send().await {
            Ok(out) => out.secret_string.map(Secret::new),
            Err(e) if e.code() == Some("ResourceNotFoundException") => None,
            // A secret scheduled for deletion answers InvalidRequestException: treat as gone.
            Err(e) if e.code() == Some("InvalidRequestException") => None,
            Err(e) => return Err(secret_error(e)),
        };
        self.remember(name, value.clone()).await;
        Ok(value)
    }

    /// New secrets are encrypted with this customer-managed KMS key.
    pub fn with_kms_key(mut self, kms_key_id: Option<String>) -> Self {
        self.kms_key_id = kms_key_id;
        self
    }

    async fn remember(&self, name: &str, value: Option<Secret>) {
        self.cache.write().await.insert(name.to_owned(), (Instant::now(), value));
    }
}

#[async_trait]
impl SecretStore for SecretsManagerStore {
    async fn get(&self, name: &str) -> Result<Option<Secret>, SecretError> {
        self.read(name, self.ttl).await
    }

    async fn get_fresh(&self, name: &str) -> Result<Option<Secret>, SecretError> {
        self.read(name, REFRESH_AFTER).await
    }

    async fn put(&self, name: &str, value: &Secret) -> Result<(), SecretError> {
        let updated = self.client.put_secret_value().secret_id(name).secret_string(value.expose()).send().await;
        match updated {
            Ok(_) => {}
            // Scheduled for deletion (a deleted integration's name reused): bring it back.
            Err(e) if e.code() == Some("InvalidRequestException") => {
                self.client.restore_secret().secret_id(name).send().await.map_err(secret_error)?;
                self.client
                    .put_secret_value()
                    .secret_id(name)
                    .secret_string(value.expose())
                    .send()
                    .await
                    .map_err(secret_error)?;
            }
            Err(e) if e.code() == Some("ResourceNotFoundException") => {
                self.client
                    .create_secret()
                    .name(name)
                    .set_kms_key_id(self.kms_key_id.clone())
                    .secret_string(value.expose())
                    .send()
                    .await
                    .map_err(secret_error)?;
            }
            Err(e) => return Err(secret_error(e)),
        }
        self.remember(name, Some(value.clone())).await;
        Ok(())
    }

    async fn delete(&self, name: &str) -> Result<(), SecretError> {
        match self
            .client
            .delete_secret()
            .secret_id(name)
            .recovery_window_in_days(self.recovery_window_days)
            .send()
            .await
        {
            Ok(_) => {}
            // Already gone, or already scheduled for deletion: deleting is idempotent.
            Err(e) if matches!(e.code(), Some("ResourceNotFoundException" | "InvalidRequestException")) => {}
            Err(e) => return Err(secret_error(e)),
        }
        self.remember(name, None).await;
        Ok(())
    }
}
