//! The whole-object sha256/md5 an expected digest is checked against, and the
//! state that lets a resumed transfer continue it instead of re-reading.
//!
//! [`OrderedDigest`] accepts parts in any order and hashes each one as soon as
//! its predecessors have been hashed, so its hashers always cover a contiguous
//! prefix of the object. At a part boundary that prefix is a whole number of
//! 64-byte blocks (every part size is a multiple of 1 MiB), and a hasher's whole
//! state is its block-level core: a few words and a block count. A
//! [`DigestState`] is those cores, serialized by the hash crates themselves
//! (`SerializableState`), with the prefix length and a check word that binds
//! them to one upload, one part size and the CRCs of the parts they cover.
//!
//! A resumed transfer continues from a state only when all of that adds up;
//! a state that is missing, unreadable or bound to anything else is ignored
//! and the parts are re-read as before. A state never decides a verdict on
//! its own: it can cost a re-read, not a wrong "matches" or "mismatch".
//! Nothing here does hash arithmetic: compression, padding and serialization
//! are sha2's and md-5's. [`Expected::verify`], the final check against the
//! caller's digests, is here too, so that `checksum` need not know this module.
//!
//! Over ~500 lines only with its tests (~200 lines), which exercise the
//! hashing, the state encoding and the resume checks together.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use md5::Md5;
use sha2::Sha256;
use sha2::digest::Digest as _;
use sha2::digest::array::Array;
use sha2::digest::block_api::CoreProxy;
use sha2::digest::common::hazmat::SerializableState;

use crate::checksum::{self, Expected, PartCrc};
use crate::error::TransferError;
use crate::pool::FrozenPart;

/// sha256 and/or md5 over parts handed in any order, hashed in order.
pub struct OrderedDigest {
    sha256: Option<Sha256>,
    md5: Option<Md5>,
    /// The next part to hash; parts before it are hashed.
    next: u32,
    /// Parts ahead of their turn: bytes, CRC, and the budget share that pays
    /// for them until they are hashed.
    waiting: BTreeMap<u32, (Bytes, u64, Option<FrozenPart>)>,
    hashed_bytes: u64,
    /// CRC64NVME of the hashed prefix, composed from its parts' CRCs: what
    /// ties a saved state to the parts S3 holds.
    hashed_crc: u64,
}

impl OrderedDigest {
    pub fn new(expected: &Expected) -> Self {
        Self {
            sha256: expected.sha256.is_some().then(Sha256::new),
            md5: expected.md5.is_some().then(Md5::new),
            next: 1,
            waiting: BTreeMap::new(),
            hashed_bytes: 0,
            hashed_crc: checksum::crc64nvme(&[]),
        }
    }

    /// Accepts part `number` (1-based) with its CRC64NVME; hashes it and any
    /// parts it unblocks. `budget` is released once the part has been hashed.
    pub fn add(&mut self, number: u32, bytes: Bytes, crc: u64, budget: Option<FrozenPart>) {
        self.waiting.insert(number, (bytes, crc, budget));
        while let Some((bytes, crc, _budget)) = self.waiting.remove(&self.next) {
            if let Some(sha256) = &mut self.sha256 {
                sha256.update(&bytes);
            }
            if let Some(md5) = &mut self.md5 {
                md5.update(&bytes);
            }
            let len = bytes.len() as u64;
            self.hashed_crc = checksum::combine(self.hashed_crc, crc, len);
            self.hashed_bytes += len;
            self.next += 1;
        }
    }

    pub fn hashed_bytes(&self) -> u64 {
        self.hashed_bytes
    }

    /// Leading parts hashed so far.
    pub fn hashed_parts(&self) -> u32 {
        self.next - 1
    }

    /// Lowercase hex sha256 of everything hashed, if sha256 is computed.
    pub fn sha256_hex(&self) -> Option<String> {
        self.sha256.clone().map(|h| hex::encode(h.finalize()))
    }

    /// Lowercase hex md5 of everything hashed, if md5 is computed.
    pub fn md5_hex(&self) -> Option<String> {
        self.md5.clone().map(|h| hex::encode(h.finalize()))
    }

    /// The state of the hashed prefix, for an upload of `binding`; `None`
    /// when nothing is hashed yet or the prefix does not end on a block
    /// boundary (then a hasher holds buffered bytes, which are not saved).
    pub fn state(&self, binding: &Binding) -> Option<DigestState> {
        if self.hashed_bytes == 0 || !self.hashed_bytes.is_multiple_of(64) {
            return None;
        }
        let sha256 = match &self.sha256 {
            Some(hasher) => Some(core_bytes(hasher.clone())?),
            None => None,
        };
        let md5 = match &self.md5 {
            Some(hasher) => Some(core_bytes(hasher.clone())?),
            None => None,
        };
        let mut state = DigestState {
            prefix: self.hashed_bytes,
            sha256,
            md5,
            check: 0,
        };
        state.check = state.check_word(binding, self.hashed_crc);
        Some(state)
    }

    /// Continues from `state` instead of hashing its parts: they must be the
    /// upload's parts 1..=n (n = prefix / part size), whose CRCs compose to
    /// `prefix_crc`. Only before any part was added; on an error nothing
    /// changes.
    pub fn resume(
        &mut self,
        state: &DigestState,
        binding: &Binding,
        prefix_crc: u64,
    ) -> Result<(), Unusable> {
        debug_assert!(self.next == 1 && self.waiting.is_empty());
        let parts = state.parts(binding.part_size)?;
        if state.check != state.check_word(binding, prefix_crc) {
            return Err(Unusable::Mismatch);
        }
        let sha256 = match (&self.sha256, &state.sha256) {
            (None, _) => None,
            (Some(_), Some(bytes)) => Some(hasher_from::<Sha256>(bytes)?),
            (Some(_), None) => return Err(Unusable::Lacks("sha256")),
        };
        let md5 = match (&self.md5, &state.md5) {
            (None, _) => None,
            (Some(_), Some(bytes)) => Some(hasher_from::<Md5>(bytes)?),
            (Some(_), None) => return Err(Unusable::Lacks("md5")),
        };
        self.sha256 = sha256;
        self.md5 = md5;
        self.next = parts + 1;
        self.hashed_bytes = state.prefix;
        self.hashed_crc = prefix_crc;
        Ok(())
    }
}

/// The check of a finished digest lives with the digest, so that
/// [`checksum`] need not know [`OrderedDigest`].
impl Expected {
    /// Checks a finished digest and size; the first mismatch is the error.
    pub fn verify(&self, size: u64, digest: Option<&OrderedDigest>) -> Result<(), TransferError> {
        if let Some(expected) = self.size
            && expected != size
        {
            return Err(TransferError::SizeMismatch {
                expected,
                actual: size,
            });
        }
        let Some(digest) = digest else {
            return Ok(());
        };
        if let Some(expected) = &self.sha256 {
            let actual = digest.sha256_hex().unwrap_or_default();
            if !expected.eq_ignore_ascii_case(&actual) {
                return Err(TransferError::ChecksumMismatch {
                    algorithm: "sha256",
                    expected: expected.clone(),
                    actual,
                });
            }
        }
        if let Some(expected) = &self.md5 {
            let actual = digest.md5_hex().unwrap_or_default();
            if !expected.eq_ignore_ascii_case(&actual) {
                return Err(TransferError::ChecksumMismatch {
                    algorithm: "md5",
                    expected: expected.clone(),
                    actual,
                });
            }
        }
        Ok(())
    }
}

/// What a [`DigestState`] belongs to: one multipart upload cut into parts of
/// one size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub upload_id: String,
    pub part_size: u64,
}

/// The sha256/md5 state of an object's first `prefix` bytes (whole parts),
/// as a resumed transfer continues it. Persisted as [`encode`](Self::encode)
/// gives it; about 110 characters with both digests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestState {
    prefix: u64,
    /// The hasher cores as their crates serialize them.
    sha256: Option<Vec<u8>>,
    md5: Option<Vec<u8>>,
    /// CRC64NVME over everything a state must match (see `check_word`):
    /// catches a corrupt state, or one of another upload or other parts.
    check: u64,
}

/// The format tag. It names the serialization of sha2 0.11's and md-5
/// 0.11's cores: a dependency update that changes it must change the tag
/// (the `state_encoding_is_stable` test notices), so that no worker reads
/// another version's bytes as its own.
const FORMAT: &str = "d1";

/// Why a saved digest state is not used (the parts are re-read instead).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Unusable {
    #[error("the checkpoint holds no digest state")]
    Missing,
    #[error("the digest state is unreadable")]
    Unreadable,
    #[error("the digest state does not end on a part boundary")]
    NotAtPartBoundary,
    #[error("the parts the digest state covers are not all in the upload")]
    PartsMissing,
    #[error("the digest state does not match this upload's parts")]
    Mismatch,
    #[error("the digest state has no {0} state")]
    Lacks(&'static str),
}

impl DigestState {
    /// Bytes the state covers: the object's first `prefix` bytes.
    pub fn prefix(&self) -> u64 {
        self.prefix
    }

    /// How many whole parts of `part_size` the state covers.
    pub fn parts(&self, part_size: u64) -> Result<u32, Unusable> {
        if part_size == 0 || self.prefix == 0 || !self.prefix.is_multiple_of(part_size) {
            return Err(Unusable::NotAtPartBoundary);
        }
        u32::try_from(self.prefix / part_size).map_err(|_| Unusable::NotAtPartBoundary)
    }

    /// `d1.<prefix>.<sha256 core>.<md5 core>.<check>`, cores and check in
    /// base64, an absent digest empty.
    pub fn encode(&self) -> String {
        let part = |bytes: &Option<Vec<u8>>| bytes.as_deref().map(|b| BASE64.encode(b));
        format!(
            "{FORMAT}.{}.{}.{}.{}",
            self.prefix,
            part(&self.sha256).unwrap_or_default(),
            part(&self.md5).unwrap_or_default(),
            checksum::to_base64(self.check),
        )
    }

    /// Reads what [`encode`](Self::encode) wrote; `None` for anything else.
    /// (Whether it fits an upload is [`OrderedDigest::resume`]'s question.)
    pub fn decode(text: &str) -> Option<Self> {
        let mut fields = text.split('.');
        let (Some(FORMAT), Some(prefix), Some(sha256), Some(md5), Some(check), None) = (
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
        ) else {
            return None;
        };
        let core = |text: &str, len: usize| -> Option<Option<Vec<u8>>> {
            if text.is_empty() {
                return Some(None);
            }
            let bytes = BASE64.decode(text).ok()?;
            (bytes.len() == len).then_some(Some(bytes))
        };
        Some(Self {
            prefix: prefix.parse().ok()?,
            sha256: core(sha256, SHA256_CORE_LEN)?,
            md5: core(md5, MD5_CORE_LEN)?,
            check: checksum::from_base64(check)?,
        })
    }

    fn check_word(&self, binding: &Binding, prefix_crc: u64) -> u64 {
        let mut crc = PartCrc::default();
        crc.update(FORMAT.as_bytes());
        crc.update(&(binding.upload_id.len() as u64).to_be_bytes());
        crc.update(binding.upload_id.as_bytes());
        crc.update(&binding.part_size.to_be_bytes());
        crc.update(&self.prefix.to_be_bytes());
        crc.update(&prefix_crc.to_be_bytes());
        for core in [&self.sha256, &self.md5] {
            match core {
                Some(bytes) => {
                    crc.update(&[1]);
                    crc.update(bytes);
                }
                None => crc.update(&[0]),
            }
        }
        crc.value()
    }
}

/// Serialized core sizes (state words and a 64-bit block count).
const SHA256_CORE_LEN: usize = 40;
const MD5_CORE_LEN: usize = 24;

/// The serialized block-level core of `hasher`, which must hold no buffered
/// bytes (its input so far is whole blocks).
fn core_bytes<H>(hasher: H) -> Option<Vec<u8>>
where
    H: CoreProxy,
    H::Core: SerializableState,
{
    let (core, buffer) = hasher.decompose();
    (buffer.get_pos() == 0).then(|| core.serialize().to_vec())
}

/// A hasher continuing from a serialized core, with an empty buffer.
fn hasher_from<H>(bytes: &[u8]) -> Result<H, Unusable>
where
    H: CoreProxy,
    H::Core: SerializableState,
{
    let serialized = Array::try_from(bytes).map_err(|_| Unusable::Unreadable)?;
    let core = H::Core::deserialize(&serialized).map_err(|_| Unusable::Unreadable)?;
    Ok(H::compose(core, Default::default()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn both() -> Expected {
        Expected {
            sha256: Some(String::new()),
            md5: Some(String::new()),
            size: None,
        }
    }

    fn binding() -> Binding {
        Binding {
            upload_id: "upload-1".into(),
            part_size: 4096,
        }
    }

    fn parts(data: &[u8], size: usize) -> Vec<(Bytes, u64)> {
        data.chunks(size)
            .map(|c| (Bytes::copy_from_slice(c), checksum::crc64nvme(c)))
            .collect()
    }

    /// The digest of `data`, hashed in 4 KiB parts by a digest that is
    /// saved after `cut` parts and continued by another one from the state.
    fn resumed_after(data: &[u8], cut: usize) -> OrderedDigest {
        let parts = parts(data, 4096);
        let mut first = OrderedDigest::new(&both());
        for (i, (bytes, crc)) in parts[..cut].iter().enumerate() {
            first.add(i as u32 + 1, bytes.clone(), *crc, None);
        }
        let encoded = first.state(&binding()).unwrap().encode();
        let state = DigestState::decode(&encoded).unwrap();
        let prefix_crc = checksum::compose(parts[..cut].iter().map(|(b, c)| (*c, b.len() as u64)));
        let mut second = OrderedDigest::new(&both());
        second.resume(&state, &binding(), prefix_crc).unwrap();
        assert_eq!(second.hashed_parts(), cut as u32);
        for (i, (bytes, crc)) in parts.iter().enumerate().skip(cut).rev() {
            second.add(i as u32 + 1, bytes.clone(), *crc, None);
        }
        second
    }

    #[test]
    fn out_of_order_parts_hash_like_the_whole() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let expected = Expected {
            sha256: Some(hex::encode(Sha256::digest(&data))),
            md5: Some(hex::encode(Md5::digest(&data))),
            size: Some(10_000),
        };
        let mut digest = OrderedDigest::new(&expected);
        let chunks = parts(&data, 3000);
        digest.add(3, chunks[2].0.clone(), chunks[2].1, None);
        digest.add(1, chunks[0].0.clone(), chunks[0].1, None);
        assert_eq!(digest.hashed_bytes(), 3000);
        digest.add(4, chunks[3].0.clone(), chunks[3].1, None);
        digest.add(2, chunks[1].0.clone(), chunks[1].1, None);
        assert_eq!(digest.hashed_bytes(), 10_000);
        expected.verify(10_000, Some(&digest)).unwrap();
        let wrong = Expected {
            sha256: Some("00".repeat(32)),
            ..Expected::default()
        };
        assert_eq!(
            wrong.verify(10_000, Some(&digest)).unwrap_err().kind(),
            "checksum_mismatch"
        );
    }

    #[test]
    fn a_digest_continued_from_its_state_equals_the_digest_of_the_whole() {
        let data: Vec<u8> = (0..5 * 4096 + 123u32)
            .map(|i| (i * 7 % 253) as u8)
            .collect();
        for cut in 1..=5 {
            let digest = resumed_after(&data, cut);
            assert_eq!(digest.hashed_bytes(), data.len() as u64);
            assert_eq!(
                digest.sha256_hex().unwrap(),
                hex::encode(Sha256::digest(&data))
            );
            assert_eq!(digest.md5_hex().unwrap(), hex::encode(Md5::digest(&data)));
        }
    }

    /// Pins the stored format: if a dependency update changes how the hash
    /// crates serialize their cores, this fails, and `FORMAT` must change.
    #[test]
    fn state_encoding_is_stable() {
        let data = vec![0x61u8; 4096];
        let mut digest = OrderedDigest::new(&both());
        digest.add(
            1,
            Bytes::from(data),
            checksum::crc64nvme(&[0x61; 4096]),
            None,
        );
        let encoded = digest.state(&binding()).unwrap().encode();
        assert_eq!(encoded, GOLDEN_STATE, "{encoded}");
    }

    const GOLDEN_STATE: &str = "d1.4096.ZbUaooG++lzyYUP+rwTgKLjUJN01b7YsvRMUpr2oc35AAAAAAAAAAA==.EeF6/6hTr6pTDCER+J+htkAAAAAAAAAA.DgZ3PxVP+aI=";

    #[test]
    fn a_state_is_only_taken_for_its_own_upload_parts_and_algorithms() {
        let data = vec![7u8; 3 * 4096];
        let parts = parts(&data, 4096);
        let mut digest = OrderedDigest::new(&both());
        for (i, (bytes, crc)) in parts.iter().take(2).enumerate() {
            digest.add(i as u32 + 1, bytes.clone(), *crc, None);
        }
        let state = digest.state(&binding()).unwrap();
        let crc = checksum::compose(parts[..2].iter().map(|(b, c)| (*c, b.len() as u64)));
        let fresh = || OrderedDigest::new(&both());
        let other_upload = Binding {
            upload_id: "upload-2".into(),
            ..binding()
        };
        let other_size = Binding {
            part_size: 8192,
            ..binding()
        };
        assert_eq!(
            fresh().resume(&state, &other_upload, crc),
            Err(Unusable::Mismatch)
        );
        assert_eq!(
            fresh().resume(&state, &other_size, crc),
            Err(Unusable::Mismatch)
        );
        assert_eq!(
            fresh().resume(&state, &binding(), crc ^ 1),
            Err(Unusable::Mismatch)
        );
        let only_md5 = OrderedDigest::new(&Expected {
            md5: Some(String::new()),
            ..Expected::default()
        })
        .state(&binding());
        assert!(only_md5.is_none(), "nothing hashed yet");
        let mut md5_digest = OrderedDigest::new(&Expected {
            md5: Some(String::new()),
            ..Expected::default()
        });
        for (i, (bytes, crc)) in parts.iter().take(2).enumerate() {
            md5_digest.add(i as u32 + 1, bytes.clone(), *crc, None);
        }
        let md5_state = md5_digest.state(&binding()).unwrap();
        assert_eq!(
            fresh().resume(&md5_state, &binding(), crc),
            Err(Unusable::Lacks("sha256"))
        );
        let mut unchanged = fresh();
        assert!(unchanged.resume(&md5_state, &binding(), crc).is_err());
        assert_eq!(unchanged.hashed_parts(), 0);
        fresh().resume(&state, &binding(), crc).unwrap();
    }

    #[test]
    fn a_prefix_that_is_not_whole_blocks_has_no_state() {
        let mut digest = OrderedDigest::new(&both());
        digest.add(
            1,
            Bytes::from(vec![1u8; 100]),
            checksum::crc64nvme(&[1; 100]),
            None,
        );
        assert!(digest.state(&binding()).is_none());
    }

    proptest! {
        /// Any change to a stored state is either refused when read or when
        /// matched against the upload: it never yields another digest.
        #[test]
        fn a_corrupted_state_is_refused(at in 0usize..200, byte in any::<u8>()) {
            let data = vec![3u8; 2 * 4096];
            let parts = parts(&data, 4096);
            let mut digest = OrderedDigest::new(&both());
            digest.add(1, parts[0].0.clone(), parts[0].1, None);
            let encoded = digest.state(&binding()).unwrap().encode();
            let mut corrupted = encoded.clone().into_bytes();
            let at = at % corrupted.len();
            prop_assume!(corrupted[at] != byte);
            corrupted[at] = byte;
            let Ok(corrupted) = String::from_utf8(corrupted) else { return Ok(()) };
            let crc = parts[0].1;
            if let Some(state) = DigestState::decode(&corrupted) {
                // Base64 may read another text as the same bytes (padding
                // bits): then the state is the same one, and fine to use.
                let same = DigestState::decode(&encoded) == Some(state.clone());
                let result = OrderedDigest::new(&both()).resume(&state, &binding(), crc);
                prop_assert!(same || result.is_err(), "{corrupted} accepted");
            }
        }
    }
}
