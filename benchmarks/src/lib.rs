//! Benchmark harness: a local Lambda Runtime API to start function binaries as Lambda does
//! (`coldstart`), the hello-world floor (`hello-floor`) and the receiver's hot path
//! (`benches/hot_path.rs`). Figures and how to reproduce them: BENCHMARKS.md.

pub mod runtime_api;
