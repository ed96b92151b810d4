//! `cargo run -p local-stack --bin seed-emulator`: creates the state table on the AWS emulator
//! (if missing) and writes the `demo` integration, so `cargo lambda watch` and
//! `cargo lambda invoke … --data-file events/…` work offline. When `ADMIN_TOKEN_SECRET` names a
//! secret, it also puts a fresh admin token there and keeps it in `.local/watch-admin-token`
//! (owner-only): the admin routes `cargo lambda watch` serves refuse requests without an IAM
//! identity unless they present it, as in Lambda. Reads the same environment as
//! the functions (`STATE_TABLE`, `SECRET_PREFIX`, `AWS_ENDPOINT_URL`, …); refuses any endpoint
//! but loopback, so it can never write into a real account.

use aws_adapters::DynamoStore;
use entry::settings::{Settings, env_or};

#[tokio::main]
async fn main() -> Result<(), local_stack::Error> {
    let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap_or_default();
    if !(endpoint.starts_with("http://127.0.0.1:") || endpoint.starts_with("http://localhost:")) {
        return Err(format!("AWS_ENDPOINT_URL must be the local emulator (got {endpoint:?})").into());
    }
    let settings = Settings::from_env()?;
    let aws = settings.aws.as_ref().expect("from_env reads the AWS settings");
    let table = aws.table.clone();
    let base = env_or("DEMO_BITBUCKET_BASE", local_stack::demo::default_bitbucket_base())?;
    let config = aws_adapters::sdk_config(&aws.sdk)?;
    DynamoStore::new(aws_sdk_dynamodb::Client::new(&config), table.clone()).create_table().await?;
    let root = entry::Root::aws(settings.clone())?;
    let demo = local_stack::demo::seed(&root.backends, &base, &settings.secret_prefix).await?;
    println!("table {table} on {endpoint}: integration `{}` → {}", demo.id, demo.target.base_url);
    if let Some(name) = &settings.admin_token_secret {
        let token = domain::secrets::Secret::generate();
        root.backends.secrets.put(name, &token).await?;
        local_adapters::create_private_dir(std::path::Path::new(".local"))?;
        local_stack::write_private(std::path::Path::new(".local/watch-admin-token"), token.expose())?;
        println!("admin token in secret {name}, kept in .local/watch-admin-token");
    }
    Ok(())
}
