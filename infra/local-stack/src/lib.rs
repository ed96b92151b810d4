//! The local stack: every function's routes and the sandbox Bitbucket in one process, on the
//! embedded adapters (SQLite state, an owner-only secret file), seeded with a `sandbox`
//! integration connected to the sandbox.

mod seed;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::routing::get;
use axum::{Json, Router};
use bitbucket_sandbox::Sandbox;
use serde_json::json;
use shared::backends::{self, Backends};
use shared::bitbucket::Connector;
use shared::domain::backup::Backups;
use shared::domain::connection::Connections;
use shared::http::{AdminToken, require_admin};
use shared::secrets::Secret;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use seed::{SANDBOX_ID, Seeded};

/// Where the sandbox Bitbucket is mounted.
pub const SANDBOX_MOUNT: &str = "/sandbox/bitbucket";

#[derive(Debug, Clone)]
pub struct Config {
    pub port: u16,
    pub state_dir: PathBuf,
    /// `API_TOKEN`; generated (and kept under `state_dir`) when unset.
    pub api_token: Option<Secret>,
    /// `SANDBOX_WEBHOOK_SECRET`; generated (and kept) when unset.
    pub sandbox_webhook_secret: Option<Secret>,
    pub retention: chrono::Duration,
    /// `PUBLIC_BASE_URL`: where Bitbucket reaches this process; default `http://127.0.0.1:{port}`.
    pub public_base_url: Option<String>,
}

impl Config {
    pub fn from_env() -> Result<Self, shared::config::ConfigError> {
        use shared::config::env_or;
        let text = |name| std::env::var(name).ok().filter(|v: &String| !v.is_empty());
        Ok(Config {
            port: env_or("PORT", 3000)?,
            state_dir: PathBuf::from(env_or("STATE_DIR", "./.local".to_owned())?),
            api_token: text("API_TOKEN").map(Secret::new),
            sandbox_webhook_secret: text("SANDBOX_WEBHOOK_SECRET").map(Secret::new),
            retention: shared::config::retention()?,
            public_base_url: text("PUBLIC_BASE_URL"),
        })
    }
}

/// A running stack; dropping it does not stop it, [`Running::stop`] does.
pub struct Running {
    pub addr: SocketAddr,
    pub base_url: String,
    pub seeded: Seeded,
    pub backends: Backends,
    pub sandbox: Sandbox,
    shutdown: oneshot::Sender<()>,
    server: JoinHandle<std::io::Result<()>>,
}

impl Running {
    pub async fn stop(self) -> std::io::Result<()> {
        let _ = self.shutdown.send(());
        self.server.await.map_err(std::io::Error::other)?
    }

    /// Waits until the server ends (Ctrl-C or SIGTERM in `main`).
    pub async fn wait(self) -> std::io::Result<()> {
        self.server.await.map_err(std::io::Error::other)?
    }
}

pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// The whole router: public webhook route, admin routes behind the bearer token, the sandbox
/// Bitbucket, `/health`.
pub fn app(
    backends: Backends,
    connections: Connections,
    sandbox: &Sandbox,
    token: AdminToken,
    retention: chrono::Duration,
) -> Router {
    let backups = Backups {
        store: backends.store.clone(),
        secrets: backends.secrets.clone(),
        connector: connections.connector.clone(),
    };
    let receiver = webhook_receiver::routes(Arc::new(webhook_receiver::Receiver { backends, retention }));
    let admin = integrations_api::routes(Arc::new(integrations_api::Api { connections }))
        .merge(backup_committer::routes(Arc::new(backups)))
        .route_layer(axum::middleware::from_fn_with_state(token, require_admin));
    let health = Router::new().route("/health", get(|| async { Json(json!({"status": "ok"})) }));
    shared::http::finish(health.merge(receiver).merge(admin)).nest(SANDBOX_MOUNT, sandbox.router())
}

/// Opens the state, binds `127.0.0.1:port` (0 = any free port), serves, then seeds (the seed
/// registers the sandbox integration's webhook over HTTP, so the server must be up).
pub async fn start(config: Config, stop_on_signal: bool) -> Result<Running, Error> {
    let backends = backends::local(&config.state_dir)?;
    let listener = TcpListener::bind(("127.0.0.1", config.port)).await?;
    let addr = listener.local_addr()?;
    let base_url = config.public_base_url.clone().unwrap_or_else(|| format!("http://{addr}"));
    let sandbox = Sandbox::new(format!("http://{addr}{SANDBOX_MOUNT}"));
    // One HTTP client and OAuth token cache for the API and the seed alike.
    let connector = Connector::default();
    let connections = || Connections {
        store: backends.store.clone(),
        secrets: backends.secrets.clone(),
        connector: connector.clone(),
        public_base_url: base_url.clone(),
        secret_prefix: "local".into(),
    };
    let api_token = seed::api_token(&config)?;
    let app = app(backends.clone(), connections(), &sandbox, AdminToken::new(&api_token), config.retention);
    let (shutdown, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                if stop_on_signal {
                    tokio::select! { _ = stopped => {}, _ = signal() => {} }
                } else {
                    let _ = stopped.await;
                }
            })
            .await
    });
    let sandbox_base = format!("http://{addr}{SANDBOX_MOUNT}/2.0");
    let seeded = match seed::sandbox_integration(&connections(), &config, &sandbox_base, api_token).await {
        Ok(seeded) => seeded,
        Err(e) => {
            let _ = shutdown.send(());
            let _ = server.await;
            return Err(e);
        }
    };
    Ok(Running { addr, base_url, seeded, backends, sandbox, shutdown, server })
}

async fn signal() {
    #[cfg(unix)]
    {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! { _ = tokio::signal::ctrl_c() => {}, _ = term.recv() => {} }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}
