//! The fuzz targets' bodies: how each target reads its raw input, and the invariants it checks.
//! Kept in a library so every target stays a one-line `fuzz_target!` and the checks can be
//! replayed on any input.
//!
//! Input layouts (the kept corpora and `dict/` follow them):
//! - `signature_header`: `<header>\n<secret>[\t<secret>…]\n<body>`.
//! - `cloud_webhook`, `datacenter_webhook`: `<event key>\n<body>`, or one control byte (not
//!   `\n`) that picks a real event key by index, then the body.
//! - `admin_bodies`: one selector byte (`'0'`–`'7'`, any byte modulo 8), then the request body.

pub mod admin;
pub mod signature;
pub mod webhook;

/// Splits at the first `\n`: (line, rest). No newline: the whole input is the line.
pub fn split_line(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == b'\n') {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[]),
    }
}
