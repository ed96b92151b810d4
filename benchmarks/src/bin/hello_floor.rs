//! The floor: the smallest `lambda_http` function, built with the same release profile as the
//! real ones. What a function costs beyond this is what our code and its dependencies cost.

use lambda_http::{Error, Request, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_http::run(service_fn(|_: Request| async { Ok::<_, Error>("hello") })).await
}
