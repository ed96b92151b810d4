//! Lambda entry point: wiring only.

// Lambda hands an environment one event at a time: worker threads would only cost start time.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), entry::lambda::Error> {
    entry::lambda::run(event_publisher::function).await
}
