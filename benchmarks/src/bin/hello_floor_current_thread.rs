//! The floor on tokio's current-thread runtime, which the functions use: `hello-floor` is the
//! canonical hello world (`#[tokio::main]`, a worker per core); this one shows how much of
//! the functions' init is the runtime flavor rather than their own code.

use lambda_http::{Error, Request, service_fn};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    lambda_http::run(service_fn(|_: Request| async { Ok::<_, Error>("hello") })).await
}
