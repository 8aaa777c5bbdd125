//! Engine integration tests: a real HTTP(S) origin with faults, S3 through
//! moto (or LocalStack, `scripts/strict-s3-test`).

// Test helpers outside #[test] functions panic on failure by design.
#![allow(clippy::unwrap_used)]

mod admission;
mod bandwidth;
mod checksum_modes;
mod far;
mod faults;
mod harness;
mod hostile;
mod origins;
mod resume;
mod ssrf;
mod throttling;
mod transfers;
