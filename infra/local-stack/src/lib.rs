//! The local stack: every function's routes and the sandbox Bitbucket in one process, on the
//! embedded adapters (SQLite state, an owner-only secret file), seeded with a `sandbox`
//! integration connected to the sandbox.

pub mod demo;
mod queue;
mod seed;
mod worker;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use bitbucket_client::RetryPolicy;
use bitbucket_sandbox::Sandbox;
use domain::Backends;
use domain::backup::Backups;
use domain::connection::Connections;
use domain::consumers::DeliveryConsumer;
use domain::outbox::Relay;
use domain::pipelines::Pipelines;
use domain::pruning::Pruner;
use domain::secrets::Secret;
use entry::Root;
use entry::http::{AdminToken, ApiError, require_admin};
use entry::settings::{ConfigError, Settings, env_or};
use local_adapters::FeedStore;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use queue::{BATCH, LocalQueue, MAX_RECEIVES};
pub use seed::{SANDBOX_ID, Seeded, write_private};
pub use worker::is_processed;

/// Where the sandbox Bitbucket is mounted.
pub const SANDBOX_MOUNT: &str = "/sandbox/bitbucket";

/// The OpenAPI 3.1 description of the whole API, served at `/openapi.json`; `docs/openapi.json`
/// is the source of truth (tests/openapi.rs keeps it in step with the template).
pub const OPENAPI_JSON: &str = include_str!("../../../docs/openapi.json");

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
    /// `POLL_SECONDS`: how often the scheduled work runs — the status poll, then branch
    /// reconciliation and the stale-branch cleanup (two schedules on AWS); `None`/0 = never.
    pub poll_interval: Option<Duration>,
    /// `SANDBOX_PIPELINE_SECONDS=pending,running`: sandbox runs advance by themselves (default
    /// `3,8`); `None` leaves them pending until driven through `/_admin/pipelines`.
    pub sandbox_pipeline_timing: Option<(Duration, Duration)>,
    /// How Bitbucket calls are retried and timed out (tests shorten the per-request timeout).
    pub bitbucket_retry: RetryPolicy,
    /// Whether the in-process worker runs (default). Without it deliveries are recorded and
    /// nothing acts on them until a start with the worker (tests of the startup sweep).
    pub worker: bool,
    /// `QUEUE_INVOCATIONS`: batches of scheduled work handled at once per job, as the template's
    /// `QueueConcurrency` (default 5).
    pub queue_invocations: usize,
    /// The clock of the credentials' rate budget (default: the real one; benchmarks simulate).
    pub budget_clock: Option<BudgetClock>,
    /// `EVENTS_URL`: where the domain events are POSTed, signed (none: only the activity feed).
    pub events_url: Option<String>,
    /// `EVENTS_SECRET` (`whsec_…`); generated (and kept under `state_dir`) when unset.
    pub events_secret: Option<Secret>,
}

/// A clock for the rate budget ([`domain::rate::Clock`]).
#[derive(Clone)]
pub struct BudgetClock(pub domain::rate::Clock);

impl std::fmt::Debug for BudgetClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BudgetClock({})", (self.0)())
    }
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        let text = |name| std::env::var(name).ok().filter(|v: &String| !v.is_empty());
        Ok(Config {
            port: env_or("PORT", 3000)?,
            state_dir: PathBuf::from(env_or("STATE_DIR", "./.local".to_owned())?),
            api_token: text("API_TOKEN").map(Secret::new),
            sandbox_webhook_secret: text("SANDBOX_WEBHOOK_SECRET").map(Secret::new),
            retention: Settings::common()?.retention,
            public_base_url: text("PUBLIC_BASE_URL"),
            poll_interval: Some(Duration::from_secs(env_or("POLL_SECONDS", 10)?)).filter(|d| !d.is_zero()),
            sandbox_pipeline_timing: pipeline_timing(&env_or("SANDBOX_PIPELINE_SECONDS", "3,8".to_owned())?)?,
            bitbucket_retry: RetryPolicy::default(),
            worker: true,
            queue_invocations: env_or("QUEUE_INVOCATIONS", 5)?,
            budget_clock: None,
            events_url: Settings::common()?.events_url,
            events_secret: Settings::common()?.events_secret,
        })
    }

    /// For tests: a free port, generated token and secret, no poll loop, sandbox runs driven
    /// by hand.
    pub fn for_tests(state_dir: PathBuf) -> Self {
        Config {
            port: 0,
            state_dir,
            api_token: None,
            sandbox_webhook_secret: None,
            retention: chrono::Duration::days(30),
            public_base_url: None,
            poll_interval: None,
            sandbox_pipeline_timing: None,
            bitbucket_retry: RetryPolicy::default(),
            worker: true,
            queue_invocations: 5,
            budget_clock: None,
            events_url: None,
            events_secret: None,
        }
    }
}

fn pipeline_timing(raw: &str) -> Result<Option<(Duration, Duration)>, ConfigError> {
    let bad = || ConfigError {
        name: "SANDBOX_PIPELINE_SECONDS",
        problem: "expected `pending,running` seconds, e.g. `3,8`, or `manual`".into(),
    };
    if raw.trim() == "manual" {
        return Ok(None);
    }
    let (pending, running) = raw.split_once(',').ok_or_else(bad)?;
    let secs = |v: &str| v.trim().parse::<u64>().map(Duration::from_secs).map_err(|_| bad());
    Ok(Some((secs(pending)?, secs(running)?)))
}

/// A running stack; dropping it does not stop it, [`Running::stop`] does.
pub struct Running {
    pub addr: SocketAddr,
    pub base_url: String,
    pub seeded: Seeded,
    pub backends: Backends,
    pub sandbox: Sandbox,
    pub pipelines: Arc<Pipelines>,
    pub pruner: Arc<Pruner>,
    /// The scheduled work's queues (status-poller's and branch-pruner's on AWS).
    pub poll_queue: Arc<LocalQueue>,
    pub prune_queue: Arc<LocalQueue>,
    /// The services scheduled work runs on (their Bitbucket requests defer to people's).
    pub scheduled_pipelines: Arc<Pipelines>,
    pub scheduled_pruner: Arc<Pruner>,
    shutdown: oneshot::Sender<()>,
    server: JoinHandle<std::io::Result<()>>,
    background: Vec<JoinHandle<()>>,
}

impl Running {
    pub async fn stop(self) -> std::io::Result<()> {
        for task in &self.background {
            task.abort();
        }
        let _ = self.shutdown.send(());
        self.server.await.map_err(std::io::Error::other)?
    }

    /// One run of both schedules, as the timer (and on AWS, EventBridge) starts them: each
    /// enqueues its work, one message per integration. What each enqueued.
    pub async fn run_schedules(&self) -> Result<(serde_json::Value, serde_json::Value), domain::Error> {
        let polls = status_poller::on_schedule(&self.scheduled_pipelines, self.poll_queue.as_ref()).await?;
        let prunes = branch_pruner::on_schedule(&self.scheduled_pruner, self.prune_queue.as_ref()).await?;
        Ok((polls, prunes))
    }

    /// Waits until both queues have worked off everything sent to them.
    pub async fn queues_idle(&self) {
        self.poll_queue.idle().await;
        self.prune_queue.idle().await;
    }

    /// Waits until the server ends (Ctrl-C or SIGTERM in `main`).
    pub async fn wait(self) -> std::io::Result<()> {
        self.server.await.map_err(std::io::Error::other)?
    }
}

pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// The services behind the system's routes, built once from the root.
pub struct Services {
    pub connections: Connections,
    pub backups: Backups,
    pub pipelines: Arc<Pipelines>,
    pub pruner: Arc<Pruner>,
    pub scheduled_pipelines: Arc<Pipelines>,
    pub scheduled_pruner: Arc<Pruner>,
}

impl Services {
    pub fn new(root: &Root) -> Result<Self, ConfigError> {
        Ok(Services {
            connections: root.connections()?,
            backups: root.backups(),
            pipelines: Arc::new(root.pipelines()),
            pruner: Arc::new(root.pruner()),
            scheduled_pipelines: Arc::new(root.scheduled_pipelines()),
            scheduled_pruner: Arc::new(root.scheduled_pruner()),
        })
    }

    /// The delivery consumers, in the stream's order (the worker and replays hand them each
    /// delivery).
    pub fn consumers(&self) -> Vec<Arc<dyn DeliveryConsumer>> {
        vec![self.pipelines.clone(), self.pruner.clone()]
    }
}

/// Whether the stack has finished starting (the seed done). Until then the system's own routes
/// answer 503 — only the sandbox (which the seed calls), `/health` and `/openapi.json` serve —
/// so no request can race the seed, and `/health` says `starting`.
#[derive(Clone, Default)]
pub struct Ready(Arc<AtomicBool>);

impl Ready {
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    fn set(&self) {
        self.0.store(true, Ordering::Release);
    }
}

async fn until_ready(State(ready): State<Ready>, request: Request, next: Next) -> Response {
    if ready.is_ready() {
        next.run(request).await
    } else {
        ApiError::Unavailable("the local stack is starting; retry shortly".into()).into_response()
    }
}

async fn health(State(ready): State<Ready>) -> Response {
    if ready.is_ready() {
        Json(json!({"status": "ok"})).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "starting"}))).into_response()
    }
}

/// The local stack's root: its settings (the secret prefix `local`, Bitbucket reaching the
/// receiver at `public_base_url`) on `backends`.
pub fn root(backends: Backends, public_base_url: &str, retention: chrono::Duration, retry: RetryPolicy) -> Root {
    Root::new(Settings::local(public_base_url, "local", retention), backends, retry)
}

/// The whole router: public webhook route, admin routes behind the bearer token, the sandbox
/// Bitbucket, `/health` and `/openapi.json`.
pub fn app(root: &Root, services: &Services, sandbox: &Sandbox, token: AdminToken, ready: Ready) -> Router {
    let receiver = domain::Intake::new(root.backends.clone(), root.settings.retention, root.settings.integration_cache);
    let receiver = webhook_receiver::routes(Arc::new(receiver));
    let admin = integrations_api::routes(Arc::new(integrations_api::Api { connections: services.connections.clone() }))
        .merge(backup_committer::routes(Arc::new(services.backups.clone())))
        .merge(pipeline_trigger::routes(services.pipelines.clone()))
        .merge(status_poller::routes(services.pipelines.clone()))
        .merge(branch_pruner::routes(services.pruner.clone()))
        .merge(integrations_api::failure_routes(Arc::new(integrations_api::Consumers(services.consumers()))))
        .route_layer(axum::middleware::from_fn_with_state(token.with_feed(root.backends.store.clone()), require_admin));
    let system = receiver.merge(admin).route_layer(axum::middleware::from_fn_with_state(ready.clone(), until_ready));
    let public =
        Router::new().route("/health", get(health)).with_state(ready).route("/openapi.json", get(openapi_json));
    entry::http::finish(public.merge(system)).nest(SANDBOX_MOUNT, sandbox.router())
}

/// `GET /openapi.json`: unauthenticated, the document exactly as kept in the repository.
async fn openapi_json() -> impl axum::response::IntoResponse {
    ([(axum::http::header::CONTENT_TYPE, "application/json")], OPENAPI_JSON)
}

/// The scheduled work on one timer: what the EventBridge schedules of status-poller and
/// branch-pruner do on AWS (there each has its own rate): each enqueues its work.
fn poll_loop(
    pipelines: Arc<Pipelines>,
    pruner: Arc<Pruner>,
    queues: (Arc<LocalQueue>, Arc<LocalQueue>),
    every: Duration,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            if let Err(e) = status_poller::on_schedule(&pipelines, queues.0.as_ref()).await {
                tracing::error!(error = %e, "scheduled poll not enqueued");
            }
            if let Err(e) = branch_pruner::on_schedule(&pruner, queues.1.as_ref()).await {
                tracing::error!(error = %e, "scheduled prune not enqueued");
            }
        }
    })
}

/// Opens the state, binds `127.0.0.1:port` (0 = any free port), serves, then seeds (the seed
/// registers the sandbox integration's webhook over HTTP, so the server must be up).
pub async fn start(config: Config, stop_on_signal: bool) -> Result<Running, Error> {
    let local = local_adapters::backends(&config.state_dir)?;
    start_with(config, local, stop_on_signal).await
}

/// [`start`] on the given adapters (e.g. DynamoDB), `state_dir` still holding the generated
/// token and secret.
pub async fn start_with(config: Config, state: Backends, stop_on_signal: bool) -> Result<Running, Error> {
    let (store, feed) = FeedStore::new(state.store.clone());
    let backends = Backends { store: Arc::new(store), secrets: state.secrets };
    let listener = TcpListener::bind(("127.0.0.1", config.port)).await?;
    let addr = listener.local_addr()?;
    let base_url = config.public_base_url.clone().unwrap_or_else(|| format!("http://{addr}"));
    let sandbox = Sandbox::new(format!("http://{addr}{SANDBOX_MOUNT}"));
    sandbox.set_pipeline_timing(config.sandbox_pipeline_timing);
    // One HTTP client and OAuth token cache for the API and the seed alike.
    let mut root = root(backends.clone(), &base_url, config.retention, config.bitbucket_retry);
    if let Some(BudgetClock(clock)) = &config.budget_clock {
        let budget = domain::rate::StoreBudget::with_clock(backends.store.clone(), root.settings.rate, clock.clone());
        root = root.with_budget(Arc::new(budget));
    }
    let api_token = seed::api_token(&config)?;
    let services = Services::new(&root)?;
    let (pipelines, pruner) = (services.pipelines.clone(), services.pruner.clone());
    let (scheduled_pipelines, scheduled_pruner) =
        (services.scheduled_pipelines.clone(), services.scheduled_pruner.clone());
    let ready = Ready::default();
    let app = app(&root, &services, &sandbox, AdminToken::new(&api_token), ready.clone());
    let mut background = Vec::new();
    let polls = scheduled_pipelines.clone();
    let on_poll = entry::lambda::queue_work(move |work| status_poller::on_work(polls.clone(), work));
    let (poll_queue, consumer) = LocalQueue::spawn(on_poll, config.queue_invocations);
    background.push(consumer);
    let prunes = scheduled_pruner.clone();
    let on_prune = entry::lambda::queue_work(move |work| branch_pruner::on_work(prunes.clone(), work));
    let (prune_queue, consumer) = LocalQueue::spawn(on_prune, config.queue_invocations);
    background.push(consumer);
    if let Some(every) = config.poll_interval {
        let queues = (poll_queue.clone(), prune_queue.clone());
        background.push(poll_loop(scheduled_pipelines.clone(), scheduled_pruner.clone(), queues, every));
    }
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
    let seeded = match seed::sandbox_integration(&services.connections, &config, &sandbox_base, api_token).await {
        Ok(seeded) => seeded,
        Err(e) => {
            background.iter().for_each(JoinHandle::abort);
            let _ = shutdown.send(());
            let _ = server.await;
            return Err(e);
        }
    };
    // Started once seeded, so the sweep's deliveries reach Bitbucket at this run's address;
    // the feed holds what was written meanwhile. Without a worker the feed is dropped.
    if config.worker {
        let consumers = services.consumers();
        let relay = match &config.events_url {
            Some(url) => {
                let secret = seed::events_secret(&config)?;
                let publisher = local_adapters::WebhookPublisher::new(url, &secret)?;
                Some(Relay { store: state.store.clone(), publisher: Arc::new(publisher) })
            }
            None => None,
        };
        background.push(worker::spawn(consumers, relay, state.store, feed));
    }
    ready.set();
    Ok(Running {
        addr,
        base_url,
        seeded,
        backends,
        sandbox,
        pipelines,
        pruner,
        poll_queue,
        prune_queue,
        scheduled_pipelines,
        scheduled_pruner,
        shutdown,
        server,
        background,
    })
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
