//! Environment configuration shared by every function and the local stack.

use std::str::FromStr;

#[derive(Debug, thiserror::Error)]
#[error("environment variable {name}: {problem}")]
pub struct ConfigError {
    pub name: &'static str,
    pub problem: String,
}

/// `name` parsed as `T`, or `default` when unset or empty.
pub fn env_or<T: FromStr>(name: &'static str, default: T) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => {
            v.trim().parse().map_err(|e: T::Err| ConfigError { name, problem: format!("cannot parse {v:?}: {e}") })
        }
        _ => Ok(default),
    }
}

pub fn env_required(name: &'static str) -> Result<String, ConfigError> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty()).ok_or(ConfigError { name, problem: "must be set".into() })
}

/// How long delivery records are kept (`RETENTION_DAYS`, default 30).
pub fn retention() -> Result<chrono::Duration, ConfigError> {
    let days: i64 = env_or("RETENTION_DAYS", 30)?;
    if !(1..=3650).contains(&days) {
        return Err(ConfigError { name: "RETENTION_DAYS", problem: "must be between 1 and 3650".into() });
    }
    Ok(chrono::Duration::days(days))
}
