//! `make run`: the whole system in one process on 127.0.0.1:$PORT.

use local_stack::{Config, start};

#[tokio::main]
async fn main() -> Result<(), local_stack::Error> {
    entry::telemetry::init();
    let config = Config::from_env()?;
    let running = start(config.clone(), true).await?;
    println!(
        "local stack on http://{} (state in {}); webhooks: POST /webhooks/{}",
        running.addr,
        config.state_dir.display(),
        local_stack::SANDBOX_ID
    );
    running.wait().await?;
    Ok(())
}
