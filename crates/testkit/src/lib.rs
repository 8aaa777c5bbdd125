//! Test support for ferry: real servers, started by the tests that need them.
//!
//! - [`moto`]: the AWS APIs (S3, SQS, DynamoDB) through moto's server mode.
//! - [`aws_proxy`]: a fault-injecting proxy in front of moto (also the
//!   `ferry-aws-proxy` binary, for scripts).
//! - [`origin`]: an HTTP(S) origin with fault injection and served-bytes counters.
//! - [`tls`]: a throwaway CA so HTTPS origins can be trusted explicitly.
//! - [`s3_sink`]: a cheap S3 sink on a directory, for benchmarks only (also
//!   the `ferry-s3-sink` binary).
//!
//! Only ever a dev-dependency. Helpers panic with a clear message on misuse:
//! a missing dependency fails loudly, it never skips a test.

pub mod aws_proxy;
pub mod listener;
pub mod moto;
pub mod origin;
pub mod s3_sink;
pub mod tls;

use sha2::Digest as _;

pub use aws_proxy::{AwsProxy, Fault, Rule};
pub use listener::CountingListener;
pub use moto::Moto;
pub use origin::{Behavior, Framing, Origin, Replacement, SeenRequest};
pub use tls::TestCa;

/// Deterministic pseudo-random bytes (xorshift), so failures reproduce.
pub fn test_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(data))
}

/// A name unique within this test run, for buckets, queues and tables.
pub fn unique_name(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// The stored object's bytes, or `None` when there is no such object.
pub async fn object_bytes(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Option<Vec<u8>> {
    let output = s3.get_object().bucket(bucket).key(key).send().await.ok()?;
    Some(output.body.collect().await.ok()?.to_vec())
}

/// How many multipart uploads are open in `bucket`.
pub async fn open_uploads(s3: &aws_sdk_s3::Client, bucket: &str) -> usize {
    s3.list_multipart_uploads()
        .bucket(bucket)
        .send()
        .await
        .expect("ListMultipartUploads")
        .uploads
        .unwrap_or_default()
        .len()
}
