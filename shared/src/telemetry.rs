//! Structured JSON logs. Every line carries the fields of the spans it is inside (request id,
//! delivery id, integration id), so one delivery's lines can be found together.

use tracing_subscriber::EnvFilter;

/// Installs the JSON subscriber. Level from `RUST_LOG`, else Lambda's `AWS_LAMBDA_LOG_LEVEL`,
/// else `info`. Safe to call more than once (later calls do nothing).
pub fn init() {
    let lambda_level = std::env::var("AWS_LAMBDA_LOG_LEVEL").ok().filter(|v| !v.is_empty());
    let filter = EnvFilter::try_from_default_env()
        .ok()
        .or_else(|| lambda_level.and_then(|level| EnvFilter::try_new(level.to_lowercase()).ok()))
        .unwrap_or_else(|| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(false)
        .with_span_list(true)
        .flatten_event(true)
        .with_target(false)
        .with_writer(std::io::stderr)
        .try_init();
}
