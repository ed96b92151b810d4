//! A local Lambda Runtime API (the four routes a custom runtime uses), enough to start a
//! function binary as Lambda does and time it: when it first asks for work (init done), and
//! how long each invocation takes from hand-over to response.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Router, serve};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

const PREFIX: &str = "/2018-06-01/runtime";

struct Invocation {
    id: String,
    event: Vec<u8>,
}

type Outcome = Result<Vec<u8>, String>;

struct Shared {
    first_poll: watch::Sender<Option<Instant>>,
    queue: tokio::sync::Mutex<mpsc::UnboundedReceiver<Invocation>>,
    waiting: Mutex<HashMap<String, oneshot::Sender<(Instant, Outcome)>>>,
    init_error: watch::Sender<Option<String>>,
}

/// One Runtime API for one process: it serves until dropped.
pub struct RuntimeApi {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    queue: mpsc::UnboundedSender<Invocation>,
    server: JoinHandle<()>,
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl RuntimeApi {
    pub async fn start() -> std::io::Result<Self> {
        let (queue, pending) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            first_poll: watch::channel(None).0,
            queue: tokio::sync::Mutex::new(pending),
            waiting: Mutex::new(HashMap::new()),
            init_error: watch::channel(None).0,
        });
        let router = Router::new()
            .route(&format!("{PREFIX}/invocation/next"), get(next))
            .route(&format!("{PREFIX}/invocation/{{id}}/response"), post(respond))
            .route(&format!("{PREFIX}/invocation/{{id}}/error"), post(fail))
            .route(&format!("{PREFIX}/init/error"), post(init_error))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let server = tokio::spawn(async move {
            let _ = serve(listener, router).await;
        });
        Ok(RuntimeApi { addr, shared, queue, server })
    }

    /// When the function first asked for an invocation, i.e. finished its init; an init error
    /// it reported, or `deadline` passing, is an error.
    pub async fn initialized(&self, deadline: Duration) -> Result<Instant, String> {
        let mut polls = self.shared.first_poll.subscribe();
        let mut errors = self.shared.init_error.subscribe();
        let waited = tokio::time::timeout(deadline, async {
            tokio::select! {
                polled = polls.wait_for(Option::is_some) => Ok(polled.map_err(|e| e.to_string())?.expect("set")),
                failed = errors.wait_for(Option::is_some) => Err(failed.map_err(|e| e.to_string())?.clone().expect("set")),
            }
        })
        .await;
        waited.map_err(|_| format!("no call to /invocation/next within {deadline:?}"))?
    }

    /// Hands `event` to the function; answers its response and the time it took.
    pub async fn invoke(&self, event: Vec<u8>, deadline: Duration) -> Result<(Duration, Vec<u8>), String> {
        let id = uuid::Uuid::new_v4().to_string();
        let (done, outcome) = oneshot::channel();
        self.shared.waiting.lock().expect("lock").insert(id.clone(), done);
        let sent = Instant::now();
        self.queue.send(Invocation { id, event }).map_err(|_| "runtime API stopped".to_owned())?;
        let (at, outcome) = tokio::time::timeout(deadline, outcome)
            .await
            .map_err(|_| format!("no response within {deadline:?}"))?
            .map_err(|_| "runtime API stopped".to_owned())?;
        Ok((at - sent, outcome?))
    }
}

async fn next(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let arrived = Instant::now();
    shared.first_poll.send_if_modified(|first| first.is_none() && first.replace(arrived).is_none());
    let Some(invocation) = shared.queue.lock().await.recv().await else {
        return (StatusCode::GONE, HeaderMap::new(), Vec::new());
    };
    let deadline = std::time::SystemTime::now() + Duration::from_secs(30);
    let deadline_ms = deadline.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or_default();
    let mut headers = HeaderMap::new();
    let mut set = |name: &'static str, value: String| {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    };
    set("lambda-runtime-aws-request-id", invocation.id);
    set("lambda-runtime-deadline-ms", deadline_ms.to_string());
    set("lambda-runtime-invoked-function-arn", "arn:aws:lambda:us-east-1:123456789012:function:bench".into());
    set("lambda-runtime-trace-id", "Root=1-67891234-0123456789abcdef01234567;Sampled=0".into());
    set("content-type", "application/json".into());
    (StatusCode::OK, headers, invocation.event)
}

fn finish(shared: &Shared, id: &str, outcome: Outcome) -> StatusCode {
    let waiting = shared.waiting.lock().expect("lock").remove(id);
    match waiting {
        Some(done) => {
            let _ = done.send((Instant::now(), outcome));
            StatusCode::ACCEPTED
        }
        None => StatusCode::BAD_REQUEST,
    }
}

async fn respond(State(shared): State<Arc<Shared>>, Path(id): Path<String>, body: Bytes) -> StatusCode {
    finish(&shared, &id, Ok(body.to_vec()))
}

async fn fail(State(shared): State<Arc<Shared>>, Path(id): Path<String>, body: Bytes) -> StatusCode {
    finish(&shared, &id, Err(String::from_utf8_lossy(&body).into_owned()))
}

async fn init_error(State(shared): State<Arc<Shared>>, body: Bytes) -> StatusCode {
    shared.init_error.send_replace(Some(String::from_utf8_lossy(&body).into_owned()));
    StatusCode::ACCEPTED
}
