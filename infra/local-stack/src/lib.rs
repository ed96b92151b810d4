//! The local stack: every function's routes in one process, on the embedded adapters (SQLite
//! state, an owner-only secret file), seeded with a `sandbox` integration.

mod seed;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use shared::backends::{self, Backends};
use shared::http::{AdminToken, require_admin};
use shared::secrets::Secret;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use seed::{SANDBOX_ID, Seeded};

#[derive(Debug, Clone)]
pub struct Config {
    pub port: u16,
    pub state_dir: PathBuf,
    /// `API_TOKEN`; generated (and kept under `state_dir`) when unset.
    pub api_token: Option<Secret>,
    /// `SANDBOX_WEBHOOK_SECRET`; generated (and kept) when unset.
    pub sandbox_webhook_secret: Option<Secret>,
    pub retention: chrono::Duration,
}

impl Config {
    pub fn from_env() -> Result<Self, shared::config::ConfigError> {
        use shared::config::env_or;
        let secret = |name| std::env::var(name).ok().filter(|v| !v.is_empty()).map(Secret::new);
        Ok(Config {
            port: env_or("PORT", 3000)?,
            state_dir: PathBuf::from(env_or("STATE_DIR", "./.local".to_owned())?),
            api_token: secret("API_TOKEN"),
            sandbox_webhook_secret: secret("SANDBOX_WEBHOOK_SECRET"),
            retention: shared::config::retention()?,
        })
    }
}

/// A running stack; dropping it does not stop it, [`Running::stop`] does.
pub struct Running {
    pub addr: SocketAddr,
    pub seeded: Seeded,
    pub backends: Backends,
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

/// The whole router: public webhook route, admin routes behind the bearer token, `/health`.
pub fn app(backends: Backends, token: AdminToken, retention: chrono::Duration) -> Router {
    let receiver =
        webhook_receiver::routes(Arc::new(webhook_receiver::Receiver { backends: backends.clone(), retention }));
    let admin = integrations_api::routes(Arc::new(integrations_api::Api { backends }))
        .route_layer(axum::middleware::from_fn_with_state(token, require_admin));
    let health = Router::new().route("/health", get(|| async { Json(json!({"status": "ok"})) }));
    shared::http::finish(health.merge(receiver).merge(admin))
}

/// Opens the state, seeds it, binds `127.0.0.1:port` (0 = any free port) and serves.
pub async fn start(config: Config, stop_on_signal: bool) -> Result<Running, Error> {
    let backends = backends::local(&config.state_dir)?;
    let seeded = seed::seed(&backends, &config).await?;
    let listener = TcpListener::bind(("127.0.0.1", config.port)).await?;
    let addr = listener.local_addr()?;
    let app = app(backends.clone(), AdminToken::new(&seeded.api_token), config.retention);
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
    Ok(Running { addr, seeded, backends, shutdown, server })
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
