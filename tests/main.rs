//! The cross-function suites, one binary: each module is one suite (see its own doc comment).
//! Run one with `cargo test -p cross-function-tests --test system <module>::`.

mod backup;
mod bad_input;
mod capabilities;
mod connections;
mod faults;
mod fixtures;
mod idempotency;
mod integrity;
mod local_stack;
mod openapi;
mod operations;
mod outbox;
mod pipelines;
mod pruning;
mod pull_requests;
mod sample_events;
mod secret_hygiene;
mod secrets_contract;
mod security;
mod storage_contract;
