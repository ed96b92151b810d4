//! `cargo run -p local-stack --bin seed-emulator`: creates the state table on the AWS emulator
//! (if missing) and writes the `demo` integration, so `cargo lambda watch` and
//! `cargo lambda invoke … --data-file events/…` work offline. Reads the same environment as
//! the functions (`STATE_TABLE`, `SECRET_PREFIX`, `AWS_ENDPOINT_URL`, …); refuses any endpoint
//! but loopback, so it can never write into a real account.

use shared::config::{env_or, env_required};
use shared::store::DynamoStore;

#[tokio::main]
async fn main() -> Result<(), local_stack::Error> {
    let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap_or_default();
    if !(endpoint.starts_with("http://127.0.0.1:") || endpoint.starts_with("http://localhost:")) {
        return Err(format!("AWS_ENDPOINT_URL must be the local emulator (got {endpoint:?})").into());
    }
    let table = env_required("STATE_TABLE")?;
    let prefix = env_or("SECRET_PREFIX", "bitbucket-automation".to_owned())?;
    let base = env_or("DEMO_BITBUCKET_BASE", local_stack::demo::default_bitbucket_base())?;
    let config = shared::backends::sdk_config()?;
    DynamoStore::new(aws_sdk_dynamodb::Client::new(&config), table.clone()).create_table().await?;
    let backends = shared::backends::aws().await?;
    let demo = local_stack::demo::seed(&backends, &base, &prefix).await?;
    println!("table {table} on {endpoint}: integration `{}` → {}", demo.id, demo.target.base_url);
    Ok(())
}
