//! `bba`: a small CLI for people — sends a signed sample webhook and lists integrations,
//! events, builds and environments, against the local stack or a deployed API.

mod api;
mod error;
mod sigv4;
mod table;
mod views;
mod webhook;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use reqwest::Method;
use serde_json::Value;

use crate::api::{Auth, Client, endpoint, parse_url};
use crate::error::CliError;
use crate::webhook::Flavor;

const EXAMPLES: &str = "\
Examples (with `make run` going in this directory, no flags are needed):
  bba webhook send sandbox                       signed sample push (Cloud) to the sandbox integration
  bba webhook send sandbox --flavor data-center  the same as Bitbucket Data Center sends it
  bba webhook send my-id --file push.json --event repo:push --secret-env WEBHOOK_SECRET
  bba integrations list
  bba integrations show sandbox
  bba events sandbox --limit 5
  bba builds sandbox --branch main --status successful
  bba environments sandbox --json

On AWS (IAM-authorized HTTP API, credentials from the default AWS chain):
  bba --api https://ID.execute-api.REGION.amazonaws.com --aws integrations list
  bba webhook send my-id --url https://WEBHOOK-API.execute-api.REGION.amazonaws.com --secret-env WEBHOOK_SECRET

Errors go to stderr as one line; the exit code is 1 (2 for wrong usage).";

#[derive(Debug, Parser)]
#[command(name = "bba", version, about = "Bitbucket automation from the command line", after_help = EXAMPLES)]
#[command(args_override_self = true)]
struct Cli {
    /// The API's base URL (on AWS: the HTTP API's URL, with its stage if any).
    #[arg(long, global = true, env = "BBA_API", default_value = "http://127.0.0.1:3000")]
    api: String,
    /// Bearer token for the API (the local stack's `API_TOKEN`). Without it, the token the
    /// local stack keeps in the state directory is used for an API on this machine.
    #[arg(long, global = true, env = "API_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Sign API requests with AWS SigV4 (service execute-api) instead of a bearer token.
    #[arg(long, global = true)]
    aws: bool,
    /// The local stack's state directory, where it keeps its token and the sandbox's webhook secret.
    #[arg(long, global = true, env = "STATE_DIR", default_value = "./.local")]
    state_dir: PathBuf,
    /// Print the API's JSON answer as it is instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Webhooks as Bitbucket sends them.
    #[command(subcommand)]
    Webhook(WebhookCommand),
    /// The integrations (connections to Bitbucket repositories).
    #[command(subcommand)]
    Integrations(IntegrationsCommand),
    /// The deliveries recorded for an integration, newest first.
    Events {
        integration: String,
        #[arg(long)]
        limit: Option<u32>,
        #[arg(long)]
        cursor: Option<String>,
    },
    /// The builds (Bitbucket Pipelines runs) of an integration, newest first.
    Builds {
        integration: String,
        #[arg(long)]
        branch: Option<String>,
        /// PENDING, IN_PROGRESS, SUCCESSFUL, FAILED, ERROR, STOPPED or EXPIRED.
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        limit: Option<u32>,
        #[arg(long)]
        cursor: Option<String>,
    },
    /// The branches of an integration mirrored as environments.
    Environments {
        integration: String,
        #[arg(long)]
        limit: Option<u32>,
        #[arg(long)]
        cursor: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum WebhookCommand {
    /// Sign a payload with the integration's webhook secret and POST it to /webhooks/{id}.
    Send {
        integration: String,
        /// X-Event-Key [default: the sample's, repo:push (Cloud) or repo:refs_changed (Data Center)].
        #[arg(long)]
        event: Option<String>,
        /// The payload, sent byte for byte [default: a built-in push to feature/login].
        #[arg(long)]
        file: Option<PathBuf>,
        /// The webhook secret (visible to other local users in the process list: prefer --secret-env).
        #[arg(long, conflicts_with = "secret_env")]
        secret: Option<String>,
        /// Read the webhook secret from this environment variable.
        #[arg(long, value_name = "VAR")]
        secret_env: Option<String>,
        #[arg(long, value_enum, default_value_t = Flavor::Cloud)]
        flavor: Flavor,
        /// Where webhooks go, if not the API (on AWS: the webhook HTTP API's URL).
        #[arg(long, env = "BBA_WEBHOOK_URL")]
        url: Option<String>,
        /// The delivery id [default: a fresh UUID]; send one twice to see a retry answered as a duplicate.
        #[arg(long)]
        delivery_id: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum IntegrationsCommand {
    /// Every integration.
    List,
    /// One integration.
    Show { id: String },
}

/// `key=value` pairs for the options that were given.
fn query(pairs: &[(&'static str, Option<String>)]) -> Vec<(&'static str, String)> {
    pairs.iter().filter_map(|(k, v)| Some((*k, v.clone()?))).collect()
}

struct Global {
    api: reqwest::Url,
    aws: bool,
    token: Option<String>,
    state_dir: PathBuf,
    json: bool,
}

async fn run(cli: Cli) -> Result<String, CliError> {
    let global =
        Global { api: parse_url(&cli.api)?, aws: cli.aws, token: cli.token, state_dir: cli.state_dir, json: cli.json };
    match cli.command {
        Command::Webhook(WebhookCommand::Send {
            integration,
            event,
            file,
            secret,
            secret_env,
            flavor,
            url,
            delivery_id,
        }) => {
            let base = url.as_deref().map(parse_url).transpose()?.unwrap_or_else(|| global.api.clone());
            let body = webhook::payload(file.as_deref(), flavor)?;
            let secret = webhook::secret(&integration, secret, secret_env, &global.state_dir)?;
            let event = event.unwrap_or_else(|| flavor.sample_event().to_owned());
            let delivery_id = delivery_id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
            // Webhooks authenticate by their signature: no token goes with them.
            let client = Client::new(Auth::None);
            let mut request = client.request(Method::POST, endpoint(&base, &["webhooks", &integration], &[]));
            for (name, value) in webhook::headers(flavor, &event, &delivery_id, &secret, &body) {
                request = request.header(name, value);
            }
            let (status, answer) = client.send(request.body(body)).await?;
            Ok(if global.json { format!("{answer}\n") } else { format!("{status} {answer}\n") })
        }
        Command::Integrations(IntegrationsCommand::List) => {
            show(&global, &["integrations"], &[], views::integrations).await
        }
        Command::Integrations(IntegrationsCommand::Show { id }) => {
            show(&global, &["integrations", &id], &[], views::integration).await
        }
        Command::Events { integration, limit, cursor } => {
            let q = query(&[("limit", limit.map(|n| n.to_string())), ("cursor", cursor)]);
            show(&global, &["integrations", &integration, "events"], &q, views::events).await
        }
        Command::Builds { integration, branch, status, limit, cursor } => {
            let q = query(&[
                ("branch", branch),
                ("status", status),
                ("limit", limit.map(|n| n.to_string())),
                ("cursor", cursor),
            ]);
            show(&global, &["integrations", &integration, "pipelines"], &q, views::builds).await
        }
        Command::Environments { integration, limit, cursor } => {
            let q = query(&[("limit", limit.map(|n| n.to_string())), ("cursor", cursor)]);
            show(&global, &["integrations", &integration, "environments"], &q, views::environments).await
        }
    }
}

/// GETs one API resource and shows it (or its JSON).
async fn show(
    global: &Global,
    segments: &[&str],
    query: &[(&str, String)],
    view: fn(&Value) -> String,
) -> Result<String, CliError> {
    let auth = Auth::resolve(&global.api, global.aws, global.token.clone(), &global.state_dir).await?;
    let (raw, answer) = Client::new(auth).get_json(endpoint(&global.api, segments, query)).await?;
    Ok(if global.json { format!("{}\n", raw.trim_end()) } else { view(&answer) })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(output) => {
            // A closed pipe (`bba … | head`) is not an error worth a panic.
            let _ = std::io::stdout().write_all(output.as_bytes());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bba: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }
}
