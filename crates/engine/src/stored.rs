//! What S3 acknowledged and holds, as plain data: a part it acknowledged, a
//! part it lists for an open upload, an object it stores. Shared by the sink
//! that asks, the checksum modes that read them and the steps of a transfer;
//! it imports nothing of the engine's, so none of them need import another
//! for these.

/// A part S3 acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadedPart {
    pub number: u32,
    pub etag: String,
    pub crc: u64,
    pub len: u64,
    /// The value sent besides the CRC64NVME in the bucket's checksum mode
    /// (base64 CRC32C, CRC32 or MD5), when known.
    pub sent: Option<String>,
}

/// A part S3 holds for an open upload, as ListParts reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedPart {
    pub number: u32,
    pub etag: String,
    pub len: u64,
    /// The part's CRC64NVME, when the server lists it (S3 does; moto does not).
    pub crc: Option<u64>,
    /// The part's value in the bucket's CRC32C/CRC32 mode, when listed.
    pub sent: Option<String>,
}

/// What S3 reports about a stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredObject {
    pub etag: String,
    /// Base64 CRC64NVME as S3 reported it; `None` when the server reports none.
    pub crc64nvme: Option<String>,
    /// CRC32C and CRC32 as reported (composite ones end in `-N`).
    pub crc32c: Option<String>,
    pub crc32: Option<String>,
    pub size: Option<u64>,
}
