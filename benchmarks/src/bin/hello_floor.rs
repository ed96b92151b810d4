//! The floor: the smallest `lambda_http` function, the canonical hello world (`#[tokio::main]`),
//! built with the same release profile as the real ones. `hello-floor-current-thread` is the
//! same on the functions' runtime flavor; what a function costs beyond that one is what our code
//! and its dependencies cost.

use lambda_http::{Error, Request, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_http::run(service_fn(|_: Request| async { Ok::<_, Error>("hello") })).await
}
