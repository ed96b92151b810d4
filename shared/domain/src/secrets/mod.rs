//! The secret store port. Secrets are addressed by name; the state table only ever holds names.

use async_trait::async_trait;

/// A secret value. `Debug` never shows it and it has no `Serialize`/`Display`, so it cannot end
/// up in a log line or an answer by accident; only [`Secret::expose`] reveals it.
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// A fresh random secret: 32 bytes, hex-encoded.
    pub fn generate() -> Self {
        Secret(hex::encode(rand::random::<[u8; 32]>()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("the secret store is unavailable: {0}")]
    Unavailable(String),
    #[error("access to the secret store was denied")]
    Denied,
    #[error("secret `{0}` holds data this version cannot read")]
    Corrupt(String),
}

#[async_trait]
pub trait SecretStore: Send + Sync {
    async fn get(&self, name: &str) -> Result<Option<Secret>, SecretError>;
    /// Like `get`, but past any cache older than a few seconds: for a reader whose cached value
    /// just failed it (a webhook signed with a secret rotated since). Caches bound how often.
    async fn get_fresh(&self, name: &str) -> Result<Option<Secret>, SecretError> {
        self.get(name).await
    }
    /// Creates or replaces the secret.
    async fn put(&self, name: &str, value: &Secret) -> Result<(), SecretError>;
    /// Removes the secret (Secrets Manager schedules the deletion with a recovery window).
    async fn delete(&self, name: &str) -> Result<(), SecretError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "Secret(***)");
        assert_eq!(Secret::generate().expose().len(), 64);
    }
}
