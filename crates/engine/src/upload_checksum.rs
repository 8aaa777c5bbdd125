//! What ferry asks S3 to check as it stores an object: the upload checksum
//! mode, chosen per worker and overridable per bucket, for stores that lack
//! S3's newest checksums (docs/compatibility.md).
//!
//! | mode | CreateMultipartUpload | UploadPart / PutObject | Complete |
//! |---|---|---|---|
//! | `crc64nvme` (default) | CRC64NVME, `FULL_OBJECT` | `x-amz-checksum-crc64nvme` | each part's + the whole object's |
//! | `crc32c`, `crc32` | the algorithm (S3's default type, `COMPOSITE`) | `x-amz-checksum-crc32c`/`-crc32` | each part's |
//! | `md5` | — | `Content-MD5` | ETags only |
//! | `none` | — | — | ETags only |
//!
//! Whatever the mode, ferry computes its own CRC64NVME of every part (the
//! record's `checksum_crc64nvme`, resume's part checks) and checks
//! `expected` digests itself from the bytes in order: the mode decides only
//! what the store is asked to verify on receipt.
//!
//! Each mode also gives the whole-object value the store reports back
//! ([`Whole`]): how ferry recognises its own object after a lost reply when
//! the store reports no CRC64NVME, and confirms what was stored.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use aws_sdk_s3::types::{ChecksumAlgorithm, ChecksumType};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use crc_fast::CrcAlgorithm;
use md5::{Digest as _, Md5};

use crate::stored::{StoredObject, UploadedPart};

/// What is sent to the store for it to check, per part and per object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UploadChecksum {
    /// CRC64NVME per part and of the full object: AWS S3's strongest check.
    #[default]
    Crc64Nvme,
    /// CRC32C per part; the store composes a checksum of checksums.
    Crc32c,
    /// CRC32 per part; the store composes a checksum of checksums.
    Crc32,
    /// `Content-MD5` per part: the oldest check every S3 API has.
    Md5,
    /// Nothing: the store checks nothing (ferry's own checks still run).
    None,
}

impl UploadChecksum {
    pub const ALL: [UploadChecksum; 5] = [
        UploadChecksum::Crc64Nvme,
        UploadChecksum::Crc32c,
        UploadChecksum::Crc32,
        UploadChecksum::Md5,
        UploadChecksum::None,
    ];

    pub fn name(self) -> &'static str {
        match self {
            UploadChecksum::Crc64Nvme => "crc64nvme",
            UploadChecksum::Crc32c => "crc32c",
            UploadChecksum::Crc32 => "crc32",
            UploadChecksum::Md5 => "md5",
            UploadChecksum::None => "none",
        }
    }

    /// The value sent with one part's (or a single PUT's) body besides
    /// ferry's CRC64NVME, base64 as S3's headers carry it: CRC32C, CRC32 or
    /// MD5. `None` where the mode sends nothing more.
    pub fn of_body(self, body: &[u8]) -> Option<String> {
        let raw = match self {
            UploadChecksum::Crc32c => crc32_bytes(CrcAlgorithm::Crc32Iscsi, body),
            UploadChecksum::Crc32 => crc32_bytes(CrcAlgorithm::Crc32IsoHdlc, body),
            UploadChecksum::Md5 => Md5::digest(body).to_vec(),
            UploadChecksum::Crc64Nvme | UploadChecksum::None => return None,
        };
        Some(BASE64.encode(raw))
    }

    /// The algorithm and type a multipart upload is created with (and a
    /// PutObject's algorithm) in this mode.
    pub fn create_settings(self) -> (Option<ChecksumAlgorithm>, Option<ChecksumType>) {
        match self {
            UploadChecksum::Crc64Nvme => (
                Some(ChecksumAlgorithm::Crc64Nvme),
                Some(ChecksumType::FullObject),
            ),
            // S3's default type for these is COMPOSITE; not naming it keeps
            // stores that predate checksum types working.
            UploadChecksum::Crc32c => (Some(ChecksumAlgorithm::Crc32C), None),
            UploadChecksum::Crc32 => (Some(ChecksumAlgorithm::Crc32), None),
            UploadChecksum::Md5 | UploadChecksum::None => (None, None),
        }
    }

    /// Whether a part that an earlier run uploaded needs its [`of_body`]
    /// value at Complete (and so is done again when the store does not
    /// list it).
    ///
    /// [`of_body`]: Self::of_body
    pub fn part_value_needed(self) -> bool {
        matches!(self, UploadChecksum::Crc32c | UploadChecksum::Crc32)
    }

    /// The whole-object value the store reports for `parts` stored by a
    /// multipart upload (sorted by number), when every part's value is known.
    pub fn whole_multipart(self, parts: &[UploadedPart]) -> Option<Whole> {
        // An MD5 part's value is also its ETag on S3, so ETags could serve;
        // the values sent are what every mode has in common.
        let raw: Vec<Vec<u8>> = parts
            .iter()
            .map(|part| BASE64.decode(part.sent.as_deref()?).ok())
            .collect::<Option<_>>()?;
        let joined = raw.concat();
        let count = parts.len();
        match self {
            UploadChecksum::Crc32c | UploadChecksum::Crc32 => {
                let algorithm = crc_algorithm(self)?;
                Some(Whole::Composite(format!(
                    "{}-{count}",
                    BASE64.encode(crc32_bytes(algorithm, &joined))
                )))
            }
            UploadChecksum::Md5 => Some(Whole::Etag(format!(
                "\"{}-{count}\"",
                hex::encode(Md5::digest(&joined))
            ))),
            UploadChecksum::Crc64Nvme | UploadChecksum::None => None,
        }
    }

    /// The whole-object value the store reports for a single PutObject of a
    /// body whose [`of_body`](Self::of_body) value is `sent`.
    pub fn whole_single(self, sent: Option<&str>) -> Option<Whole> {
        let sent = sent?;
        match self {
            UploadChecksum::Crc32c | UploadChecksum::Crc32 => {
                Some(Whole::Composite(sent.to_owned()))
            }
            UploadChecksum::Md5 => {
                let raw = BASE64.decode(sent).ok()?;
                Some(Whole::Etag(format!("\"{}\"", hex::encode(raw))))
            }
            UploadChecksum::Crc64Nvme | UploadChecksum::None => None,
        }
    }

    /// The object's value for this mode as the store reported it.
    fn reported(self, stored: &StoredObject) -> Option<&str> {
        match self {
            UploadChecksum::Crc32c => stored.crc32c.as_deref(),
            UploadChecksum::Crc32 => stored.crc32.as_deref(),
            UploadChecksum::Md5 => Some(stored.etag.as_str()),
            UploadChecksum::Crc64Nvme | UploadChecksum::None => None,
        }
    }
}

/// The whole-object value a store reports in a mode other than CRC64NVME.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Whole {
    /// `x-amz-checksum-crc32c`/`-crc32`: the part's own value for a single
    /// PUT, `base64(crc(part values))-N` for a multipart upload.
    Composite(String),
    /// The ETag S3 gives an unencrypted (or SSE-S3) object: the hex MD5, or
    /// `md5(part MD5s)-N`. Other encryption changes it, so an ETag that
    /// differs proves nothing; one that matches confirms.
    Etag(String),
}

impl Whole {
    /// Whether `stored` reports exactly this value in `mode`.
    pub fn confirmed_by(&self, mode: UploadChecksum, stored: &StoredObject) -> bool {
        let Some(reported) = mode.reported(stored) else {
            return false;
        };
        match self {
            Whole::Etag(value) => reported == value,
            // moto and Garage 1.x report a composite value without S3's
            // `-N` part count; the checksum of checksums is the same.
            Whole::Composite(value) => {
                reported == value
                    || value
                        .rsplit_once('-')
                        .is_some_and(|(checksum, _count)| reported == checksum)
            }
        }
    }
}

fn crc_algorithm(mode: UploadChecksum) -> Option<CrcAlgorithm> {
    match mode {
        UploadChecksum::Crc32c => Some(CrcAlgorithm::Crc32Iscsi),
        UploadChecksum::Crc32 => Some(CrcAlgorithm::Crc32IsoHdlc),
        _ => None,
    }
}

fn crc32_bytes(algorithm: CrcAlgorithm, data: &[u8]) -> Vec<u8> {
    // CRC-32 variants fit in the low 32 bits; S3 carries them big-endian.
    let crc = crc_fast::checksum(algorithm, data) as u32;
    crc.to_be_bytes().to_vec()
}

impl fmt::Display for UploadChecksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for UploadChecksum {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let wanted = text.trim().to_ascii_lowercase();
        UploadChecksum::ALL
            .into_iter()
            .find(|mode| mode.name() == wanted)
            .ok_or_else(|| {
                format!(
                    "upload checksum {text:?} is not one of crc64nvme, crc32c, crc32, md5, none"
                )
            })
    }
}

/// The mode of every bucket: a default and per-bucket exceptions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChecksumPolicy {
    pub default: UploadChecksum,
    pub by_bucket: BTreeMap<String, UploadChecksum>,
}

impl ChecksumPolicy {
    pub fn for_bucket(&self, bucket: &str) -> UploadChecksum {
        self.by_bucket.get(bucket).copied().unwrap_or(self.default)
    }

    /// Exceptions written `bucket=mode,bucket=mode` (spaces allowed).
    pub fn parse_exceptions(text: &str) -> Result<BTreeMap<String, UploadChecksum>, String> {
        let mut by_bucket = BTreeMap::new();
        for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (bucket, mode) = entry.split_once('=').ok_or_else(|| {
                format!("per-bucket checksum {entry:?} is not bucket=mode (e.g. archive=md5)")
            })?;
            let bucket = bucket.trim();
            if bucket.is_empty() {
                return Err(format!("per-bucket checksum {entry:?} names no bucket"));
            }
            if by_bucket.insert(bucket.to_owned(), mode.parse()?).is_some() {
                return Err(format!("bucket {bucket} has two checksum settings"));
            }
        }
        Ok(by_bucket)
    }
}

/// What [`crate::sink::S3Sink`] gets wrong on purpose, to learn whether a
/// store checks: the tests' hook and `ferry doctor`'s probe, never a user
/// setting (no flag or variable reaches it).
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChecksumFault {
    /// Every part's checksum (UploadPart, and a single PUT's) off by one bit.
    Part,
    /// The full-object CRC64NVME at Complete off by one bit.
    WholeObject,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_match_the_published_test_vectors() {
        // "123456789": CRC-32C e3069283, CRC-32 cbf43926.
        let check = b"123456789";
        let crc32c = UploadChecksum::Crc32c.of_body(check).unwrap();
        assert_eq!(BASE64.decode(crc32c).unwrap(), [0xe3, 0x06, 0x92, 0x83]);
        let crc32 = UploadChecksum::Crc32.of_body(check).unwrap();
        assert_eq!(BASE64.decode(crc32).unwrap(), [0xcb, 0xf4, 0x39, 0x26]);
        // MD5 of "" is d41d8cd98f00b204e9800998ecf8427e.
        assert_eq!(
            UploadChecksum::Md5.of_body(b"").unwrap(),
            "1B2M2Y8AsgTpgAmY7PhCfg=="
        );
        assert_eq!(UploadChecksum::Crc64Nvme.of_body(check), None);
        assert_eq!(UploadChecksum::None.of_body(check), None);
    }

    #[test]
    fn a_multipart_md5_etag_is_the_md5_of_the_part_md5s() {
        let parts: Vec<UploadedPart> = [b"a".as_slice(), b"b"]
            .iter()
            .enumerate()
            .map(|(i, body)| UploadedPart {
                number: i as u32 + 1,
                etag: String::new(),
                crc: 0,
                len: 1,
                sent: UploadChecksum::Md5.of_body(body),
            })
            .collect();
        let mut joined = Md5::digest(b"a").to_vec();
        joined.extend(Md5::digest(b"b"));
        let expected = format!("\"{}-2\"", hex::encode(Md5::digest(&joined)));
        assert_eq!(
            UploadChecksum::Md5.whole_multipart(&parts),
            Some(Whole::Etag(expected))
        );
        // A part without its value: nothing to compare with.
        let mut unknown = parts;
        unknown[1].sent = None;
        assert_eq!(UploadChecksum::Md5.whole_multipart(&unknown), None);
    }

    #[test]
    fn a_composite_value_is_confirmed_with_or_without_the_part_count() {
        let stored = |crc32c: &str| StoredObject {
            etag: String::new(),
            crc64nvme: None,
            crc32c: Some(crc32c.to_owned()),
            crc32: None,
            size: None,
        };
        let whole = Whole::Composite("ZAOE/g==-3".to_owned());
        let mode = UploadChecksum::Crc32c;
        assert!(whole.confirmed_by(mode, &stored("ZAOE/g==-3")));
        assert!(whole.confirmed_by(mode, &stored("ZAOE/g==")));
        assert!(!whole.confirmed_by(mode, &stored("AAAAAA==-3")));
        assert!(!whole.confirmed_by(mode, &stored("ZAOE/g==-2")));
        assert!(!whole.confirmed_by(UploadChecksum::Crc32, &stored("ZAOE/g==-3")));
    }

    #[test]
    fn modes_and_exceptions_parse_and_say_what_is_wrong() {
        for mode in UploadChecksum::ALL {
            assert_eq!(mode.name().parse::<UploadChecksum>(), Ok(mode));
        }
        assert_eq!("CRC32C".parse(), Ok(UploadChecksum::Crc32c));
        assert!("sha1".parse::<UploadChecksum>().is_err());
        let policy = ChecksumPolicy {
            default: UploadChecksum::Crc64Nvme,
            by_bucket: ChecksumPolicy::parse_exceptions(" old=md5, r2 = crc32c ").unwrap(),
        };
        assert_eq!(policy.for_bucket("old"), UploadChecksum::Md5);
        assert_eq!(policy.for_bucket("r2"), UploadChecksum::Crc32c);
        assert_eq!(policy.for_bucket("other"), UploadChecksum::Crc64Nvme);
        assert!(ChecksumPolicy::parse_exceptions("old").is_err());
        assert!(ChecksumPolicy::parse_exceptions("=md5").is_err());
        assert!(ChecksumPolicy::parse_exceptions("a=md5,a=none").is_err());
        assert!(ChecksumPolicy::parse_exceptions("a=sha1").is_err());
    }
}
