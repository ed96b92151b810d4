//! Local secret store: one JSON object in a file only its owner can read (mode 0600), rewritten
//! atomically (write to a temporary file, then rename) so a crash never leaves half a file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use tokio::sync::Mutex;

use domain::secrets::{Secret, SecretError, SecretStore};

pub struct FileSecretStore {
    path: PathBuf,
    lock: Mutex<()>,
}

fn unavailable(e: impl std::fmt::Display) -> SecretError {
    SecretError::Unavailable(e.to_string())
}

impl FileSecretStore {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileSecretStore { path: path.into(), lock: Mutex::new(()) }
    }

    fn load(path: &Path) -> Result<BTreeMap<String, String>, SecretError> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|_| SecretError::Corrupt(path.display().to_string())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(e) => Err(unavailable(e)),
        }
    }

    fn save(path: &Path, secrets: &BTreeMap<String, String>) -> Result<(), SecretError> {
        use std::io::Write;
        let tmp = path.with_extension("tmp");
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&tmp).map_err(unavailable)?;
        file.write_all(&serde_json::to_vec_pretty(secrets).map_err(unavailable)?).map_err(unavailable)?;
        file.sync_all().map_err(unavailable)?;
        std::fs::rename(&tmp, path).map_err(unavailable)
    }

    async fn update(&self, change: impl FnOnce(&mut BTreeMap<String, String>)) -> Result<(), SecretError> {
        let _guard = self.lock.lock().await;
        let mut secrets = Self::load(&self.path)?;
        change(&mut secrets);
        Self::save(&self.path, &secrets)
    }
}

#[async_trait]
impl SecretStore for FileSecretStore {
    async fn get(&self, name: &str) -> Result<Option<Secret>, SecretError> {
        let _guard = self.lock.lock().await;
        Ok(Self::load(&self.path)?.remove(name).map(Secret::new))
    }

    async fn put(&self, name: &str, value: &Secret) -> Result<(), SecretError> {
        self.update(|s| {
            s.insert(name.to_owned(), value.expose().to_owned());
        })
        .await
    }

    async fn delete(&self, name: &str) -> Result<(), SecretError> {
        self.update(|s| {
            s.remove(name);
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn round_trip_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileSecretStore::new(dir.path().join("secrets.json"));
        assert!(store.get("a").await.unwrap().is_none());
        store.put("a", &Secret::new("1")).await.unwrap();
        store.put("b", &Secret::new("2")).await.unwrap();
        assert_eq!(store.get("a").await.unwrap().unwrap().expose(), "1");
        store.delete("a").await.unwrap();
        assert!(store.get("a").await.unwrap().is_none());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("secrets.json")).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
