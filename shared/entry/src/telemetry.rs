//! Structured JSON logs. Every line carries the fields of the spans it is inside (request id,
//! delivery id, integration id), so one delivery's lines can be found together.

use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Installs the JSON subscriber. Level from `RUST_LOG` (`info`, or `shared=debug,info`), else
/// Lambda's `AWS_LAMBDA_LOG_LEVEL`, else `info`. Safe to call more than once (later calls do
/// nothing).
pub fn init() {
    let _ = tracing_subscriber::registry().with(layer()).with(filter()).try_init();
}

/// `Targets` rather than `EnvFilter`: the same `target=level` syntax without a regex engine,
/// which would add half a megabyte to every function and time to its cold start.
fn filter() -> Targets {
    let configured = |name| std::env::var(name).ok().filter(|v: &String| !v.trim().is_empty());
    configured("RUST_LOG")
        .or_else(|| configured("AWS_LAMBDA_LOG_LEVEL"))
        // Lambda's levels include FATAL, which tracing calls ERROR.
        .and_then(|spec| spec.to_lowercase().replace("fatal", "error").parse().ok())
        .unwrap_or_else(|| Targets::new().with_default(tracing::Level::INFO))
}

fn layer<S>() -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    tracing_subscriber::fmt::layer()
        .json()
        .with_current_span(false)
        .with_span_list(true)
        .flatten_event(true)
        .with_target(false)
        .with_writer(std::io::stderr)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;
    use tracing_subscriber::filter::LevelFilter;

    #[test]
    fn levels_parse_as_lambda_and_rust_log_write_them() {
        let parse = |spec: &str| spec.to_lowercase().parse::<Targets>().unwrap();
        assert_eq!(parse("DEBUG").default_level(), Some(LevelFilter::DEBUG));
        let mixed = parse("shared=trace,warn");
        assert!(mixed.would_enable("shared::store", &Level::TRACE));
        assert!(!mixed.would_enable("hyper", &Level::INFO));
    }
}
