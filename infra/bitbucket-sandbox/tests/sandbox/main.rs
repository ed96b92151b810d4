//! The sandbox's tests, one binary: the sandbox served over real HTTP as the local stack mounts
//! it, driven with reqwest.

mod api;
mod cloud;
mod common;
mod conformance;
mod datacenter;
mod pipelines;
mod scopes;
mod traffic;
