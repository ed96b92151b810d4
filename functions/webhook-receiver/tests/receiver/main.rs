//! The receiver's tests, one binary: real Lambda events (`lambda_events`) and a DynamoDB table
//! that fails (`store_faults`).

mod lambda_events;
mod store_faults;
