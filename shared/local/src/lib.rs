//! The storage ports on the embedded default: SQLite for the state table and an owner-only
//! file for secrets, plus [`FeedStore`], the change feed the local stack's worker consumes as
//! the stream-triggered Lambdas consume the table's stream, and [`WebhookPublisher`], where the
//! outbox's domain events go outside AWS.

mod feed;
mod file_secrets;
mod sqlite;
mod webhook_publisher;

pub use feed::FeedStore;
pub use file_secrets::FileSecretStore;
pub use sqlite::SqliteStore;
pub use webhook_publisher::WebhookPublisher;

use std::path::Path;
use std::sync::Arc;

use domain::Backends;
use domain::store::StoreError;

/// Local adapters under `state_dir`: `state.sqlite3` and the owner-only `secrets.json`.
pub fn backends(state_dir: &Path) -> Result<Backends, StoreError> {
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
