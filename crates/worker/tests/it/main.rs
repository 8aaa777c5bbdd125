//! Worker integration tests: SQS, DynamoDB and S3 through moto's server mode,
//! sources from a real HTTP origin, workers in-process or as real processes.

// Test helpers outside #[test] functions panic on failure by design.
#![allow(clippy::unwrap_used)]

mod aws_faults;
mod bandwidth;
mod bulk;
mod checksums;
mod closed_output;
mod doctor;
mod endpoints;
mod fencing;
mod first_contact;
mod fleet_ops;
mod gc;
mod harness;
mod if_exists;
mod jobs;
mod lifecycle;
mod long_jobs;
mod messages;
mod object_settings;
mod observability;
mod results;
mod resume;
mod security;
mod signals;
mod slots;
mod source_digests;
mod zombie;
