//! The `demo` integration the sample events under `events/` are written for. The same record
//! and secrets go into whatever backends are given, so `cargo lambda watch` with
//! `cargo lambda invoke` (on the AWS emulator), the sample-event tests (in memory) and the
//! cold-start benchmark all answer the sample events the same way.

use domain::Backends;
use domain::bitbucket::{Credential, RepoTarget};
use domain::integration::Options;
use domain::secrets::Secret;
use domain::store::Condition;
use domain::tables::INTEGRATIONS;
use domain::webhook::Flavor;
use domain::{Integration, WebhookSecrets};

use crate::{Error, SANDBOX_MOUNT};

pub const DEMO_ID: &str = "demo";

/// `events/webhook-receiver/signed-push.json` carries the fixture
/// `cloud/jenkins-bbs__signed_payload.json` with its published HMAC vector, so the demo
/// webhook secret is that vector's. A public test value, never a real one.
pub const DEMO_WEBHOOK_SECRET: &str = "Gkvl$k$wyNpQAF42";

/// Where the demo integration's Bitbucket is: the sandbox of a local stack on its default port
/// (`make run`), so sample events that call Bitbucket work when one is running.
pub fn default_bitbucket_base() -> String {
    format!("http://127.0.0.1:3000{SANDBOX_MOUNT}/2.0")
}

/// Writes (or overwrites) the demo integration, active, with its credential and webhook secret.
pub async fn seed(backends: &Backends, bitbucket_base: &str, secret_prefix: &str) -> Result<Integration, Error> {
    let credential = Credential::ApiToken {
        email: bitbucket_sandbox::API_TOKEN_EMAIL.into(),
        token: Secret::new(bitbucket_sandbox::API_TOKEN),
    };
    let target = RepoTarget {
        flavor: Flavor::Cloud,
        base_url: bitbucket_base.to_owned(),
        owner: bitbucket_sandbox::WORKSPACE.into(),
        slug: bitbucket_sandbox::REPOSITORY.into(),
    };
    let demo = Integration {
        description: "The integration the sample events are written for".into(),
        options: Options { build_pull_requests: true, ..Options::default() },
        ..Integration::new(DEMO_ID, "Demo", target, &credential, secret_prefix)
    };
    let secrets = backends.secrets.as_ref();
    secrets.put(&demo.credential_secret_name, &credential.to_secret()).await?;
    secrets.put(&demo.webhook_secret_name, &WebhookSecrets::new(&Secret::new(DEMO_WEBHOOK_SECRET)).to_secret()).await?;
    INTEGRATIONS.put(backends.store.as_ref(), "", &[DEMO_ID], &demo, Condition::None).await?;
    Ok(demo)
}

/// `count` active Cloud integrations of the sandbox repository (`scale-00000`, …) sharing
/// `credentials` API tokens (`scale-{n}@sandbox.test`, accepted by `sandbox`), round robin: the
/// benchmarks' and the scale tests' fleet. Written straight into the store and the secret
/// store (no webhook registered). Their ids, in order.
pub async fn seed_fleet(
    backends: &Backends,
    sandbox: &bitbucket_sandbox::Sandbox,
    bitbucket_base: &str,
    secret_prefix: &str,
    count: usize,
    credentials: usize,
) -> Result<Vec<String>, Error> {
    let credentials: Vec<Credential> = (0..credentials.max(1))
        .map(|n| {
            let (email, token) = (format!("scale-{n}@sandbox.test"), format!("scale-token-{n}"));
            sandbox.accept_credential(bitbucket_sandbox::ExtraCredential::ApiToken {
                email: email.clone(),
                token: token.clone(),
            });
            Credential::ApiToken { email, token: Secret::new(token) }
        })
        .collect();
    let target = RepoTarget {
        flavor: Flavor::Cloud,
        base_url: bitbucket_base.to_owned(),
        owner: bitbucket_sandbox::WORKSPACE.into(),
        slug: bitbucket_sandbox::REPOSITORY.into(),
    };
    let mut ids = Vec::with_capacity(count);
    for i in 0..count {
        let id = format!("scale-{i:05}");
        let credential = &credentials[i % credentials.len()];
        let integration = Integration::new(&id, &id, target.clone(), credential, secret_prefix);
        backends.secrets.put(&integration.credential_secret_name, &credential.to_secret()).await?;
        INTEGRATIONS.put(backends.store.as_ref(), "", &[&id], &integration, Condition::None).await?;
        ids.push(id);
    }
    Ok(ids)
}
