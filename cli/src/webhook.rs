//! A webhook delivery as Bitbucket sends it: the payload (a built-in sample or a file), signed
//! with HMAC-SHA256 over the exact bytes sent, with each product's delivery headers.

use std::path::{Path, PathBuf};

use clap::ValueEnum;
use domain::secrets::Secret;

use crate::error::CliError;

const CLOUD_PUSH: &str = include_str!("../samples/cloud-push.json");
const DATA_CENTER_PUSH: &str = include_str!("../samples/data-center-push.json");

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Flavor {
    Cloud,
    #[value(alias = "datacenter")]
    DataCenter,
}

impl Flavor {
    /// The event key of the built-in sample.
    pub fn sample_event(self) -> &'static str {
        match self {
            Flavor::Cloud => "repo:push",
            Flavor::DataCenter => "repo:refs_changed",
        }
    }

    fn sample(self) -> &'static str {
        match self {
            Flavor::Cloud => CLOUD_PUSH,
            Flavor::DataCenter => DATA_CENTER_PUSH,
        }
    }

    /// The delivery id header: it is also how the receiver tells the products apart.
    pub fn delivery_header(self) -> &'static str {
        match self {
            Flavor::Cloud => "X-Request-UUID",
            Flavor::DataCenter => "X-Request-Id",
        }
    }
}

/// The bytes to send: the file's as they are (so the signature covers exactly them), after
/// checking they are JSON; else the flavor's sample.
pub fn payload(file: Option<&Path>, flavor: Flavor) -> Result<Vec<u8>, CliError> {
    let Some(path) = file else { return Ok(flavor.sample().as_bytes().to_vec()) };
    let body = std::fs::read(path).map_err(|source| CliError::ReadFile { path: path.to_owned(), source })?;
    serde_json::from_slice::<serde_json::Value>(&body)
        .map_err(|source| CliError::NotJson { path: path.to_owned(), source })?;
    Ok(body)
}

/// `--secret`, else the variable `--secret-env` names, else (for the local `sandbox`
/// integration) the secret the local stack keeps in its state directory.
pub fn secret(
    integration: &str,
    given: Option<String>,
    from_env: Option<String>,
    state_dir: &Path,
) -> Result<Secret, CliError> {
    if let Some(secret) = given {
        return Ok(Secret::new(secret));
    }
    if let Some(name) = from_env {
        return std::env::var(&name).ok().filter(|v| !v.is_empty()).map(Secret::new).ok_or(CliError::MissingEnv(name));
    }
    let kept: PathBuf = state_dir.join("sandbox-webhook-secret");
    match std::fs::read_to_string(kept) {
        Ok(value) if integration == "sandbox" && !value.trim().is_empty() => Ok(Secret::new(value.trim())),
        _ => Err(CliError::NoSecret(integration.to_owned())),
    }
}

/// The headers of one delivery, the signature included.
pub fn headers(
    flavor: Flavor,
    event: &str,
    delivery_id: &str,
    secret: &Secret,
    body: &[u8],
) -> Vec<(&'static str, String)> {
    vec![
        ("Content-Type", "application/json".into()),
        ("X-Event-Key", event.to_owned()),
        (flavor.delivery_header(), delivery_id.to_owned()),
        ("X-Hub-Signature", domain::signature::sign(secret.expose().as_bytes(), body)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::signature::verify;
    use domain::webhook::{self, Flavor as Product};

    #[test]
    fn samples_parse_as_their_products_push() {
        for (flavor, product) in [(Flavor::Cloud, Product::Cloud), (Flavor::DataCenter, Product::DataCenter)] {
            let body = payload(None, flavor).unwrap();
            let parsed = webhook::parse(product, flavor.sample_event(), &body).unwrap();
            assert_eq!(parsed.events.len(), 1, "{flavor:?}: {parsed:?}");
        }
    }

    #[test]
    fn the_signature_verifies_over_the_bytes_sent() {
        let secret = Secret::new("s3cret");
        let body = payload(None, Flavor::Cloud).unwrap();
        let sent = headers(Flavor::Cloud, "repo:push", "d-1", &secret, &body);
        let signature = sent.iter().find(|(name, _)| *name == "X-Hub-Signature").map(|(_, v)| v.as_str());
        assert_eq!(verify(signature, &body, [b"s3cret".as_slice()]), Ok(()));
        assert!(sent.iter().any(|(name, value)| *name == "X-Request-UUID" && value == "d-1"));
        assert!(sent.iter().all(|(_, value)| !value.contains("s3cret")), "the secret is never sent");
    }
}
