//! First-run setup of the local stack: the admin token and the `sandbox` integration, connected
//! to the sandbox Bitbucket with its API token. Generated values are printed once (to the
//! console, never to the logs) and kept under the state directory, owner-only, so restarts
//! reuse them. The sandbox forgets its hooks on restart, so the webhook is registered anew at
//! every start.

use std::path::Path;

use chrono::Utc;
use domain::bitbucket::{Credential, RepoTarget, WebhookSpec};
use domain::connection::{CALL_BUDGET, Connections};
use domain::integration::RegisteredWebhook;
use domain::secrets::Secret;
use domain::store::{Condition, StoreError};
use domain::tables::{INTEGRATIONS, Versioned};
use domain::webhook::Flavor;
use domain::{Integration, WebhookSecrets};

use crate::{Config, Error};

pub const SANDBOX_ID: &str = "sandbox";

/// What the stack was seeded with (tests use these to sign and authenticate).
#[derive(Debug, Clone)]
pub struct Seeded {
    pub api_token: Secret,
    pub sandbox_webhook_secret: Secret,
}

pub fn write_private(path: &Path, value: &str) -> std::io::Result<()> {
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

/// The `whsec_…` secret the domain events posted to `EVENTS_URL` are signed with.
pub fn events_secret(config: &Config) -> Result<Secret, Error> {
    let path = config.state_dir.join("events-secret");
    if config.events_secret.is_none()
        && !std::fs::read_to_string(&path).is_ok_and(|kept| kept.trim().starts_with("whsec_"))
    {
        write_private(&path, local_adapters::WebhookPublisher::generate_secret().expose())?;
    }
    configured_or_kept(&config.events_secret, &path, "EVENTS_SECRET")
}

pub fn api_token(config: &Config) -> Result<Secret, Error> {
    configured_or_kept(&config.api_token, &config.state_dir.join("api-token"), "API_TOKEN")
}

pub async fn sandbox_integration(
    connections: &Connections,
    config: &Config,
    sandbox_base: &str,
    api_token: Secret,
) -> Result<Seeded, Error> {
    let webhook = configured_or_kept(
        &config.sandbox_webhook_secret,
        &config.state_dir.join("sandbox-webhook-secret"),
        "SANDBOX_WEBHOOK_SECRET",
    )?;
    let store = connections.ctx.store.as_ref();
    let secrets = connections.ctx.secrets.as_ref();
    let credential = Credential::ApiToken {
        email: bitbucket_sandbox::API_TOKEN_EMAIL.into(),
        token: Secret::new(bitbucket_sandbox::API_TOKEN),
    };
    let target = RepoTarget {
        flavor: Flavor::Cloud,
        base_url: sandbox_base.to_owned(),
        owner: bitbucket_sandbox::WORKSPACE.into(),
        slug: bitbucket_sandbox::REPOSITORY.into(),
    };
    let (mut sandbox, version) = match INTEGRATIONS.get(store, "", &[SANDBOX_ID]).await? {
        Some(Versioned { record, version }) => (record, version),
        None => {
            let fresh = Integration {
                description: "The local sandbox Bitbucket (sandbox/demo)".into(),
                ..Integration::new(SANDBOX_ID, "Sandbox", target.clone(), &credential, "local")
            };
            let version = INTEGRATIONS.put(store, "", &[SANDBOX_ID], &fresh, Condition::Absent).await?;
            (fresh, version)
        }
    };
    // The sandbox listens on this run's port; keep the record pointing at it.
    sandbox.target = target.clone();
    secrets.put(&sandbox.credential_secret_name, &credential.to_secret()).await?;
    secrets.put(&sandbox.webhook_secret_name, &WebhookSecrets::new(&webhook).to_secret()).await?;
    let client = connections.ctx.connector.connect(&sandbox.target, credential, CALL_BUDGET);
    let active = sandbox.status.accepts_deliveries();
    let spec = WebhookSpec {
        url: format!("{}/webhooks/{SANDBOX_ID}", connections.public_base_url.trim_end_matches('/')),
        secret: webhook.clone(),
        active,
        description: "bitbucket-automation: Sandbox".into(),
    };
    let hook = client.create_webhook(&spec).await?;
    let webhook_record = RegisteredWebhook { id: hook.id, url: hook.url, active };
    // Nothing else writes while the stack starts (its routes answer 503 until seeded); still,
    // a write that finds the record changed applies the seed to what is there, never exits.
    let mut version = version;
    loop {
        sandbox.target = target.clone();
        sandbox.webhook = Some(webhook_record.clone());
        sandbox.updated_at = Utc::now();
        match INTEGRATIONS.put(store, "", &[SANDBOX_ID], &sandbox, Condition::Version(version)).await {
            Ok(_) => break,
            Err(StoreError::ConditionFailed { .. }) => match INTEGRATIONS.get(store, "", &[SANDBOX_ID]).await? {
                Some(current) => (sandbox, version) = (current.record, current.version),
                None => return Err("the sandbox integration was deleted while the stack started".into()),
            },
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Seeded { api_token, sandbox_webhook_secret: webhook })
}
