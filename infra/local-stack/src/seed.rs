//! First-run setup of the local stack: the admin token and the `sandbox` integration with its
//! webhook secret. Generated values are printed once (to the console, never to the logs) and
//! kept under the state directory, owner-only, so restarts reuse them.

use std::path::Path;

use chrono::Utc;
use shared::backends::Backends;
use shared::domain::{Integration, IntegrationStatus, WebhookSecrets, integration};
use shared::secrets::Secret;
use shared::store::{Condition, StoreError};
use shared::webhook::Flavor;

use crate::{Config, Error};

pub const SANDBOX_ID: &str = "sandbox";

/// What the stack was seeded with (tests use these to sign and authenticate).
#[derive(Debug, Clone)]
pub struct Seeded {
    pub api_token: Secret,
    pub sandbox_webhook_secret: Secret,
}

fn write_private(path: &Path, value: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(value.as_bytes())
}

/// The configured value, else the one kept from an earlier run, else a new one (announced).
fn configured_or_kept(configured: &Option<Secret>, path: &Path, what: &str) -> Result<Secret, Error> {
    if let Some(value) = configured {
        return Ok(value.clone());
    }
    if let Ok(kept) = std::fs::read_to_string(path)
        && !kept.trim().is_empty()
    {
        return Ok(Secret::new(kept.trim()));
    }
    let fresh = Secret::generate();
    write_private(path, fresh.expose())?;
    println!("generated {what}: {} (kept in {})", fresh.expose(), path.display());
    Ok(fresh)
}

pub async fn seed(backends: &Backends, config: &Config) -> Result<Seeded, Error> {
    let api_token = configured_or_kept(&config.api_token, &config.state_dir.join("api-token"), "API_TOKEN")?;
    let webhook = configured_or_kept(
        &config.sandbox_webhook_secret,
        &config.state_dir.join("sandbox-webhook-secret"),
        "SANDBOX_WEBHOOK_SECRET",
    )?;
    let secret_name = format!("local/{SANDBOX_ID}/webhook");
    backends.secrets.put(&secret_name, &WebhookSecrets::new(&webhook).to_secret()).await?;
    let now = Utc::now();
    let sandbox = Integration {
        id: SANDBOX_ID.into(),
        name: "Sandbox".into(),
        flavor: Flavor::Cloud,
        status: IntegrationStatus::Active,
        webhook_secret_name: secret_name,
        created_at: now,
        updated_at: now,
    };
    match integration::put(backends.store.as_ref(), &sandbox, Condition::Absent).await {
        Ok(_) | Err(StoreError::ConditionFailed { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    Ok(Seeded { api_token, sandbox_webhook_secret: webhook })
}
