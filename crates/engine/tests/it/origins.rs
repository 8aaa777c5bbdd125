//! The lying-origin matrix (docs/reliability.md, "Origins"): every way an
//! origin changes or ends a representation, and what ferry promises for each
//! — a byte-identical copy of one version the origin really served, or a clear
//! failure with no object and no open upload. Never a mix of two versions
//! stored as a success.
//!
//! Over 500 lines because it is the whole matrix in one place, a test per
//! row of docs/reliability.md's table, so the table and its proof read side by side.

use bytes::Bytes;
use ferry_engine::{ErrorClass, Integrity, TransferError, TransferOutcome};
use ferry_testkit::{Behavior, Framing, Origin, Replacement, TestCa, test_bytes};

use crate::harness::{Harness, PART};

/// Four parts: enough for ranged reads to span several requests.
const SIZE: usize = PART * 3 + 1234;
const LONGER: usize = SIZE + 777;
/// Ends before the last two parts start: their ranges are unsatisfiable.
const SHORTER: usize = PART + 100;

const MODIFIED_1: &str = "Sat, 05 Dec 2026 10:00:00 GMT";
const MODIFIED_2: &str = "Sat, 05 Dec 2026 10:00:07 GMT";
/// An hour after both: their `Last-Modified` is strong.
const SERVED: &str = "Sat, 05 Dec 2026 11:00:00 GMT";

/// How the origin names its versions.
#[derive(Clone, Copy, Debug)]
enum Validators {
    StrongETag,
    WeakETag,
    /// `Last-Modified` at least a second before `Date`: strong.
    LastModified,
    /// `Last-Modified` equal to `Date`: the content may change within that
    /// second without the date changing, so it is weak.
    FreshLastModified,
    None,
}

impl Validators {
    /// (etag, last_modified, date) for version `v`.
    fn headers(self, v: u8) -> (Option<String>, Option<String>, Option<String>) {
        let modified = if v == 1 { MODIFIED_1 } else { MODIFIED_2 };
        match self {
            Self::StrongETag => (Some(format!("\"v{v}\"")), None, None),
            Self::WeakETag => (Some(format!("W/\"v{v}\"")), None, None),
            Self::LastModified => (None, Some(modified.into()), Some(SERVED.into())),
            Self::FreshLastModified => (None, Some(modified.into()), Some(modified.into())),
            Self::None => (None, None, None),
        }
    }

    fn behavior(self) -> Behavior {
        let (etag, last_modified, date) = self.headers(1);
        Behavior {
            etag,
            last_modified,
            date,
            ..Behavior::default()
        }
    }

    /// Version 2 (`body`) from the request after `after_requests` on.
    fn replaced(self, after_requests: u64, body: Bytes) -> Replacement {
        let (etag, last_modified, _) = self.headers(2);
        Replacement {
            after_requests,
            body,
            etag,
            last_modified,
        }
    }
}

struct Cell {
    harness: Harness,
    origin: Origin,
    v1: Bytes,
    key: &'static str,
}

impl Cell {
    async fn start(key: &'static str, len: usize, behavior: Behavior) -> Self {
        let harness = Harness::new().await;
        let v1 = Bytes::from(test_bytes(len, 1));
        let origin = Origin::start(v1.clone(), behavior).await;
        Self {
            harness,
            origin,
            v1,
            key,
        }
    }

    async fn run(&self) -> Result<TransferOutcome, TransferError> {
        let spec = self.harness.spec(&self.origin.url(self.key), self.key);
        self.harness.run(&spec).await
    }

    async fn assert_stored(&self, data: &[u8], outcome: &TransferOutcome) {
        self.harness.assert_stored(self.key, data, outcome).await;
    }

    async fn assert_refused(&self, result: Result<TransferOutcome, TransferError>, kind: &str) {
        let err = result.expect_err("a changed source must not be stored");
        assert_eq!(err.kind(), kind, "{err}");
        self.harness.assert_nothing_left(self.key).await;
    }
}

/// Version 2 replaces version 1 after the probe and one more request: the
/// other parts' requests meet the new content.
async fn replaced_mid_copy(
    key: &'static str,
    validators: Validators,
    honour_if_range: bool,
    new_len: usize,
) -> (Cell, Result<TransferOutcome, TransferError>) {
    let v2 = Bytes::from(test_bytes(new_len, 2));
    let cell = Cell::start(
        key,
        SIZE,
        Behavior {
            honour_if_range,
            replace: Some(validators.replaced(2, v2)),
            ..validators.behavior()
        },
    )
    .await;
    let result = cell.run().await;
    (cell, result)
}

/// Under a strong validator, a replacement mid-copy is caught whether or not
/// the server honours If-Range, and whether or not the length changed.
#[tokio::test]
async fn a_source_changed_under_a_strong_validator_fails_as_source_changed() {
    let cells = [
        ("etag-honoured", Validators::StrongETag, true, SIZE),
        ("etag-ignored", Validators::StrongETag, false, SIZE),
        ("etag-longer", Validators::StrongETag, false, LONGER),
        ("etag-shorter", Validators::StrongETag, false, SHORTER),
        ("lm-honoured", Validators::LastModified, true, SIZE),
        ("lm-ignored", Validators::LastModified, false, SIZE),
    ];
    for (key, validators, honour_if_range, new_len) in cells {
        let (cell, result) = replaced_mid_copy(key, validators, honour_if_range, new_len).await;
        cell.assert_refused(result, "source_changed").await;
    }
}

/// The cells where nothing pins a version across requests: the whole object
/// is read in one answer, so a replacement after it cannot mix in.
async fn read_in_one_answer(key: &'static str, validators: Validators, new_len: usize) {
    let (cell, result) = replaced_mid_copy(key, validators, false, new_len).await;
    let outcome = result.expect("one answer holds one version");
    cell.assert_stored(&cell.v1, &outcome).await;
    assert_eq!(outcome.integrity, Integrity::OneAnswer);
    // The probe (dropped once it showed no validator) and one whole GET.
    assert_eq!(cell.origin.requests(), 2);
    let whole = &cell.origin.seen()[1];
    assert_eq!(
        whole.header("range"),
        None,
        "the second request reads it all"
    );
}

#[tokio::test]
async fn weak_etag_source_changed_mid_copy_is_read_in_one_answer() {
    read_in_one_answer("weak-etag", Validators::WeakETag, SIZE).await;
}

#[tokio::test]
async fn fresh_last_modified_source_changed_mid_copy_is_read_in_one_answer() {
    read_in_one_answer("fresh-lm", Validators::FreshLastModified, SIZE).await;
}

#[tokio::test]
async fn source_without_validator_changed_mid_copy_is_read_in_one_answer() {
    read_in_one_answer("none", Validators::None, SIZE).await;
}

#[tokio::test]
async fn source_without_validator_changed_length_mid_copy_is_read_in_one_answer() {
    read_in_one_answer("none-longer", Validators::None, LONGER).await;
}

#[tokio::test]
async fn source_without_validator_replaced_before_the_read_stores_the_new_version() {
    let v2 = Bytes::from(test_bytes(LONGER, 2));
    let cell = Cell::start(
        "none-early",
        SIZE,
        Behavior {
            replace: Some(Validators::None.replaced(1, v2.clone())),
            ..Validators::None.behavior()
        },
    )
    .await;
    let outcome = cell.run().await.expect("one answer holds one version");
    cell.assert_stored(&v2, &outcome).await;
}

#[tokio::test]
async fn an_etag_that_lies_is_caught_by_an_expected_digest() {
    // The content changes and the ETag does not: nothing in HTTP can tell.
    // Only a digest the job names catches it.
    let v2 = Bytes::from(test_bytes(SIZE, 2));
    let cell = Cell::start(
        "lying-etag",
        SIZE,
        Behavior {
            replace: Some(Replacement {
                etag: Some("\"v1\"".into()),
                ..Validators::StrongETag.replaced(2, v2)
            }),
            ..Validators::StrongETag.behavior()
        },
    )
    .await;
    let mut spec = cell.harness.spec(&cell.origin.url(cell.key), cell.key);
    spec.expected.sha256 = Some(ferry_testkit::sha256_hex(&cell.v1));
    let result = cell.harness.run(&spec).await;
    cell.assert_refused(result, "checksum_mismatch").await;
}

// ------------------------------------------------------------- framing, cuts

#[tokio::test]
async fn a_cut_single_answer_without_validator_fails_transiently_and_leaves_nothing() {
    let cell = Cell::start(
        "cut-none",
        SIZE,
        Behavior {
            reset_at: Some((PART as u64 * 2 + 99, 1)),
            ..Validators::None.behavior()
        },
    )
    .await;
    let err = cell.run().await.expect_err("a cut unpinned answer");
    assert_eq!(err.class(), ErrorClass::Transient, "{err}");
    cell.harness.assert_nothing_left(cell.key).await;
    // Never continued by range from another answer.
    assert!(
        cell.origin.seen()[1..]
            .iter()
            .all(|r| r.header("range").is_none()),
        "{:?}",
        cell.origin.seen()
    );
}

#[tokio::test]
async fn a_cut_small_object_without_validator_is_read_again_whole() {
    let cell = Cell::start(
        "cut-small",
        PART / 2,
        Behavior {
            reset_at: Some((1000, 1)),
            ..Validators::None.behavior()
        },
    )
    .await;
    let outcome = cell.run().await.expect("read again from byte 0");
    cell.assert_stored(&cell.v1, &outcome).await;
    let seen = cell.origin.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(
        seen[1].header("range"),
        Some(format!("bytes=0-{}", PART / 2 - 1)).as_deref()
    );
}

#[tokio::test]
async fn a_chunked_body_is_copied_in_one_answer() {
    let cell = Cell::start(
        "chunked",
        SIZE,
        Behavior {
            framing: Framing::Chunked,
            ranges: false,
            ..Validators::None.behavior()
        },
    )
    .await;
    let outcome = cell.run().await.unwrap();
    cell.assert_stored(&cell.v1, &outcome).await;
    assert_eq!(outcome.integrity, Integrity::OneAnswer);
}

#[tokio::test]
async fn a_cut_chunked_body_fails_transiently_and_leaves_nothing() {
    let cell = Cell::start(
        "chunked-cut",
        SIZE,
        Behavior {
            framing: Framing::Chunked,
            ranges: false,
            reset_at: Some((PART as u64 + 5, 1)),
            ..Validators::None.behavior()
        },
    )
    .await;
    let err = cell
        .run()
        .await
        .expect_err("a chunked body without its last chunk");
    assert_eq!(err.class(), ErrorClass::Transient, "{err}");
    cell.harness.assert_nothing_left(cell.key).await;
}

#[tokio::test]
async fn a_cut_chunked_body_with_a_strong_etag_resumes_by_range() {
    let cell = Cell::start(
        "chunked-resumed",
        SIZE,
        Behavior {
            framing: Framing::Chunked,
            ignore_range_requests: 1,
            reset_at: Some((PART as u64 + 5, 1)),
            ..Validators::StrongETag.behavior()
        },
    )
    .await;
    let outcome = cell.run().await.unwrap();
    cell.assert_stored(&cell.v1, &outcome).await;
    assert_eq!(outcome.integrity, Integrity::Pinned);
    assert_eq!(cell.origin.seen()[1].header("if-range"), Some("\"v1\""));
}

#[tokio::test]
async fn a_body_framed_by_its_connection_is_copied_and_marked_unframed() {
    let cell = Cell::start(
        "close",
        SIZE,
        Behavior {
            framing: Framing::Close,
            ranges: false,
            ..Validators::None.behavior()
        },
    )
    .await;
    let outcome = cell.run().await.unwrap();
    cell.assert_stored(&cell.v1, &outcome).await;
    assert_eq!(outcome.integrity, Integrity::Unframed);
}

#[tokio::test]
async fn a_cut_body_framed_by_its_connection_is_marked_unframed() {
    // Nothing can tell this cut from the end: the copy is short, and the
    // outcome (so the job record) says the end was never verified.
    let cut = PART as u64 * 2 + 10;
    let cell = Cell::start(
        "close-cut",
        SIZE,
        Behavior {
            framing: Framing::Close,
            ranges: false,
            reset_at: Some((cut, 1)),
            ..Validators::None.behavior()
        },
    )
    .await;
    let outcome = cell.run().await.unwrap();
    assert_eq!(outcome.integrity, Integrity::Unframed);
    assert_eq!(outcome.size, cut);
}

#[tokio::test]
async fn a_cut_body_framed_by_its_connection_fails_an_expected_size() {
    let cell = Cell::start(
        "close-cut-size",
        SIZE,
        Behavior {
            framing: Framing::Close,
            ranges: false,
            reset_at: Some((PART as u64 * 2 + 10, 1)),
            ..Validators::None.behavior()
        },
    )
    .await;
    let mut spec = cell.harness.spec(&cell.origin.url(cell.key), cell.key);
    spec.expected.size = Some(SIZE as u64);
    let result = cell.harness.run(&spec).await;
    cell.assert_refused(result, "size_mismatch").await;
}

#[tokio::test]
async fn a_header_flood_fails_clearly_and_leaves_nothing() {
    let cell = Cell::start(
        "flood",
        1000,
        Behavior {
            extra_headers: 500,
            ..Behavior::default()
        },
    )
    .await;
    cell.run().await.expect_err("500 response headers");
    cell.harness.assert_nothing_left(cell.key).await;
}

// ---------------------------------------------------------------- redirects

const SECRET: &str = "X-Api-Key";

fn with_secret(
    harness: &Harness,
    url: &str,
    key: &str,
    cross_origin: bool,
) -> ferry_engine::TransferSpec {
    let mut spec = harness.spec(url, key);
    spec.source
        .headers
        .insert(SECRET, "s3cr3t".parse().unwrap());
    spec.source
        .headers
        .insert("authorization", "Bearer t0ken".parse().unwrap());
    spec.source.headers_cross_origin = cross_origin;
    spec
}

fn secrets_seen(origin: &Origin) -> Vec<String> {
    origin
        .seen()
        .iter()
        .flat_map(|r| r.headers.clone())
        .filter(|(name, _)| name == "x-api-key" || name == "authorization")
        .map(|(name, _)| name)
        .collect()
}

#[tokio::test]
async fn job_headers_follow_a_redirect_within_the_origin() {
    let harness = Harness::new().await;
    let data = test_bytes(PART + 10, 5);
    let origin = Origin::start(data.clone(), Behavior::default()).await;
    origin.set(|b| {
        b.redirect_from = Some("/old".into());
        b.redirect_to = Some(origin.url("new"));
    });
    let spec = with_secret(&harness, &origin.url("old"), "same.bin", false);
    let outcome = harness.run(&spec).await.unwrap();
    harness.assert_stored("same.bin", &data, &outcome).await;
    let at_target: Vec<_> = origin
        .seen()
        .into_iter()
        .filter(|r| r.path == "/new")
        .collect();
    assert!(!at_target.is_empty());
    assert!(at_target.iter().all(|r| r.header(SECRET) == Some("s3cr3t")));
}

#[tokio::test]
async fn job_headers_stay_behind_on_a_redirect_to_another_origin() {
    let harness = Harness::new().await;
    let data = test_bytes(PART + 10, 6);
    let target = Origin::start(data.clone(), Behavior::default()).await;
    let front = Origin::start(
        Bytes::new(),
        Behavior {
            redirect_to: Some(target.url("file")),
            ..Behavior::default()
        },
    )
    .await;
    let spec = with_secret(&harness, &front.url("file"), "cross.bin", false);
    let outcome = harness.run(&spec).await.unwrap();
    harness.assert_stored("cross.bin", &data, &outcome).await;
    assert!(front.seen().iter().all(|r| r.header(SECRET).is_some()));
    assert_eq!(secrets_seen(&target), Vec::<String>::new());
    assert!(target.requests() >= 2, "both parts came from the target");
}

#[tokio::test]
async fn job_headers_follow_to_another_origin_when_the_job_allows_it() {
    let harness = Harness::new().await;
    let data = test_bytes(1000, 7);
    let target = Origin::start(data.clone(), Behavior::default()).await;
    let front = Origin::start(
        Bytes::new(),
        Behavior {
            redirect_to: Some(target.url("file")),
            ..Behavior::default()
        },
    )
    .await;
    let spec = with_secret(&harness, &front.url("file"), "allowed.bin", true);
    let outcome = harness.run(&spec).await.unwrap();
    harness.assert_stored("allowed.bin", &data, &outcome).await;
    assert!(
        target
            .seen()
            .iter()
            .all(|r| r.header(SECRET) == Some("s3cr3t"))
    );
}

#[tokio::test]
async fn job_headers_never_follow_a_redirect_from_https_to_http() {
    let ca = TestCa::new();
    let mut config = crate::harness::test_config();
    config.source.extra_ca_pem = Some(ca.pem().into_bytes());
    let harness = Harness::with_config(config).await;
    let data = test_bytes(1000, 8);
    let plain = Origin::start(data.clone(), Behavior::default()).await;
    let secure = Origin::start_tls(
        Bytes::new(),
        Behavior {
            redirect_to: Some(plain.url("file")),
            ..Behavior::default()
        },
        &ca,
    )
    .await;
    // Allowed across origins, still not onto plain http.
    let spec = with_secret(&harness, &secure.localhost_url("file"), "down.bin", true);
    let outcome = harness.run(&spec).await.unwrap();
    harness.assert_stored("down.bin", &data, &outcome).await;
    assert_eq!(secrets_seen(&plain), Vec::<String>::new());
}

#[tokio::test]
async fn a_redirect_loop_fails_permanently_and_leaves_nothing() {
    let harness = Harness::new().await;
    let origin = Origin::start(Bytes::new(), Behavior::default()).await;
    origin.set(|b| b.redirect_to = Some(origin.url("loop")));
    let spec = harness.spec(&origin.url("loop"), "loop.bin");
    let err = harness.run(&spec).await.unwrap_err();
    assert_eq!(err.kind(), "source_redirects", "{err}");
    assert_eq!(err.class(), ErrorClass::Permanent);
    harness.assert_nothing_left("loop.bin").await;
}
