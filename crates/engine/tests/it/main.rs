//! Engine integration tests: a real HTTP(S) origin with faults, S3 through moto.

mod faults;
mod harness;
mod transfers;
