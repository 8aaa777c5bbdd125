//! Per-part and whole-object checksums, and the check of expected digests.
//!
//! S3's full-object CRC64NVME is composed from the part CRCs (CRC combination needs
//! only each part's length), so parts may be checksummed in any order. Expected
//! sha256/md5 digests need the bytes in order: [`Expected`] says what they
//! must be; [`OrderedDigest`](crate::digest::OrderedDigest) computes them and
//! checks them against it.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use crc_fast::{CrcAlgorithm, Digest};

/// Streaming CRC64NVME of one part.
pub struct PartCrc(Digest);

impl Default for PartCrc {
    fn default() -> Self {
        Self(Digest::new(CrcAlgorithm::Crc64Nvme))
    }
}

impl PartCrc {
    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    pub fn value(&self) -> u64 {
        self.0.finalize()
    }
}

pub fn crc64nvme(data: &[u8]) -> u64 {
    crc_fast::checksum(CrcAlgorithm::Crc64Nvme, data)
}

/// The CRC of `a ++ b` from the CRCs of `a` and `b`.
pub fn combine(crc_a: u64, crc_b: u64, len_b: u64) -> u64 {
    crc_fast::checksum_combine(CrcAlgorithm::Crc64Nvme, crc_a, crc_b, len_b)
}

/// The base64 of the big-endian CRC, as S3's `x-amz-checksum-crc64nvme` carries it.
pub fn to_base64(crc: u64) -> String {
    BASE64.encode(crc.to_be_bytes())
}

/// The CRC from S3's base64 form; `None` when it is not one.
pub fn from_base64(text: &str) -> Option<u64> {
    let bytes: [u8; 8] = BASE64.decode(text).ok()?.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

/// Whole-object checksum composed from parts listed in part order.
pub fn compose(parts: impl IntoIterator<Item = (u64, u64)>) -> u64 {
    parts
        .into_iter()
        .fold(crc64nvme(&[]), |acc, (crc, len)| combine(acc, crc, len))
}

/// Digests the caller expects the object to have, each optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expected {
    /// Lowercase hex.
    pub sha256: Option<String>,
    /// Lowercase hex.
    pub md5: Option<String>,
    pub size: Option<u64>,
}

impl Expected {
    pub fn needs_digest(&self) -> bool {
        self.sha256.is_some() || self.md5.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn crc64nvme_matches_the_published_check_value() {
        assert_eq!(crc64nvme(b"123456789"), 0xae8b_1486_0a79_9888);
    }

    proptest! {
        #[test]
        fn composed_crc_equals_crc_of_the_whole(data in proptest::collection::vec(any::<u8>(), 0..4096), cuts in proptest::collection::vec(0usize..4096, 0..6)) {
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(data.len())).collect();
            cuts.push(0);
            cuts.push(data.len());
            cuts.sort_unstable();
            let parts = cuts.windows(2).map(|w| {
                let part = &data[w[0]..w[1]];
                (crc64nvme(part), part.len() as u64)
            });
            prop_assert_eq!(compose(parts), crc64nvme(&data));
        }
    }
}
