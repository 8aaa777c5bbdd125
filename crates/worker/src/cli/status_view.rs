//! `ferry status` for people: a job record as a short, ordered view — what a
//! person asks first (status, source, destination, size, progress), then how
//! it went (duration, throughput with its unit, checksum, attempts), then
//! what went wrong with a hint, then when. Internals (lease, fence, tokens,
//! index keys, the kept message, checkpoints) are left to `--json`, which
//! prints every attribute for scripts.

use std::time::SystemTime;

use crate::cli::jobs::age;
use crate::store::{self, Record};

/// The view's lines, `label: value`, labels right-aligned.
pub fn lines(record: &Record, now: SystemTime) -> Vec<String> {
    let view = store::JobView::of(record);
    let text = |name| store::text(record, name);
    let number = |name| store::number(record, name);
    let mut rows: Vec<(&str, String)> = Vec::new();
    let status = view.status_text().unwrap_or("?");
    rows.push(("job", view.job_id().unwrap_or("?").to_owned()));
    let since = text("finished_at").or(text("updated_at"));
    rows.push(("status", format!("{status} ({} ago)", age(since, now))));
    if let Some(url) = view.url() {
        rows.push(("source", url.to_owned()));
    }
    if let (Some(bucket), Some(key)) = (view.bucket(), view.key()) {
        rows.push(("destination", format!("s3://{bucket}/{key}")));
    }
    if let Some(settings) = text("message").and_then(object_settings) {
        rows.push(("stored with", settings));
    }
    if record
        .get("skipped")
        .is_some_and(|v| v.as_bool().is_ok_and(|b| *b))
    {
        rows.push((
            "skipped",
            "the destination already held this version of the source; nothing was copied"
                .to_owned(),
        ));
    }
    let size = view.size();
    if let Some(size) = size {
        rows.push(("size", bytes(size)));
    }
    if status != "succeeded"
        && let Some(done) = view.bytes_done()
    {
        let progress = match size {
            Some(total) if total > 0 => format!(
                "{:.0} % ({} of {})",
                (done as f64 / total as f64 * 100.0).min(100.0),
                indicatif::HumanBytes(done),
                indicatif::HumanBytes(total)
            ),
            _ => format!("{} so far", indicatif::HumanBytes(done)),
        };
        rows.push(("progress", progress));
    }
    if let Some(secs) = view.duration_secs() {
        rows.push(("duration", format!("{secs:.1} s")));
    }
    if let Some(mbps) = view.throughput_mbps() {
        rows.push((
            "throughput",
            format!("{mbps:.1} MB/s (megabytes per second)"),
        ));
    }
    if let (Some(algorithm), Some(checksum)) = (text("checksum_algorithm"), text("checksum")) {
        rows.push(("checksum", format!("{algorithm} {checksum}")));
    }
    if let Some(integrity) = text("source_integrity") {
        rows.push(("source check", integrity_text(integrity)));
    }
    if let Some(digests) = text("source_digests") {
        rows.push(("origin hash", format!("{digests}: matched the bytes")));
    }
    if let Some(kind) = text("error_kind") {
        let error = text("error").unwrap_or("");
        rows.push(("error", format!("{kind}: {error}")));
        if let Some(hint) = hint(kind) {
            rows.push(("hint", hint.to_owned()));
        }
    }
    for name in ["attempts", "failures", "resumes", "restarts"] {
        if let Some(n) = number(name) {
            rows.push((name, n.to_string()));
        }
    }
    if let Some(reason) = text("restart_reason") {
        rows.push(("restarted", reason.to_owned()));
    }
    if let Some(refetched) = number("bytes_refetched") {
        rows.push(("refetched", bytes(refetched)));
    }
    if let Some(by) = text("cancel_requested_by") {
        rows.push(("cancel asked", format!("by {by}")));
    }
    if let Some(by) = text("cancelled_by") {
        rows.push(("cancelled", format!("by {by}")));
    }
    for (label, name) in [
        ("created", "created_at"),
        ("started", "started_at"),
        ("finished", "finished_at"),
    ] {
        if let Some(at) = text(name) {
            rows.push((label, format!("{at} ({} ago)", age(Some(at), now))));
        }
    }
    if let Some(worker) = text("worker_id") {
        rows.push(("worker", worker.to_owned()));
    }
    rows.into_iter()
        .map(|(label, value)| format!("{label:>12}: {value}"))
        .collect()
}

fn bytes(n: u64) -> String {
    format!("{} ({n} bytes)", indicatif::HumanBytes(n))
}

fn integrity_text(integrity: &str) -> String {
    let meaning = match integrity {
        "pinned" => "every request pinned to the source's strong validator",
        "one_answer" => "read in one response, its end marked",
        "unframed" => {
            "read in one response that ended with its connection: the length is unverified"
        }
        _ => return integrity.to_owned(),
    };
    format!("{integrity} ({meaning})")
}

/// What a person can do about an error, for the kinds with an answer.
/// The object settings a job asked for (its kept message), in one line:
/// encryption, tags, `if_exists`, the expected bucket owner. `None` when it
/// asked for none of them.
fn object_settings(message: &str) -> Option<String> {
    let message: serde_json::Value = serde_json::from_str(message).ok()?;
    let field = |name: &str| message.get(name).and_then(|v| v.as_str());
    let mut parts = Vec::new();
    if let Some(sse) = field("sse") {
        match field("kms_key_id") {
            Some(key) => parts.push(format!("sse {sse} (key {key})")),
            None => parts.push(format!("sse {sse}")),
        }
    }
    if let Some(tags) = message.get("tags").and_then(|v| v.as_object()) {
        let tags: Vec<String> = tags
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
            .collect();
        parts.push(format!("tags {}", tags.join(", ")));
    }
    if let Some(rule) = field("if_exists") {
        parts.push(format!("if_exists {rule}"));
    }
    if let Some(owner) = field("expected_bucket_owner") {
        parts.push(format!("bucket owner {owner}"));
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

fn hint(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "source_not_found" => "check the URL; the source answered 404/410",
        "source_forbidden" => {
            "the source refused the request: check the job's headers (credentials)"
        }
        "blocked_destination" => {
            "the source's address is private or reserved; allow it with FERRY_SOURCE_ALLOW_CIDRS if intended"
        }
        "source_changed" => {
            "the source changed during the copy; the job is retried against the new version"
        }
        "checksum_mismatch" | "size_mismatch" => {
            "the bytes differ from the job's `expected` or the origin's own digest: check the digest or size, or the source"
        }
        "destination_exists" => {
            "an object is stored under the key and the job's if_exists is fail: choose another key, or overwrite/skip"
        }
        "too_large" => "the object is over FERRY_MAX_OBJECT_SIZE_MIB or S3's limits",
        "s3_access_denied" => {
            "the worker's role may not write to this bucket (FERRY_ALLOWED_BUCKETS, IAM, a KMS key, tags), or the bucket is not the expected owner's"
        }
        "s3_no_such_bucket" => "the destination bucket does not exist",
        "destination_not_allowed" => "the bucket is not in the workers' FERRY_ALLOWED_BUCKETS",
        "invalid_job" | "invalid_json" => "the message is not a valid job: see docs/jobs.md",
        "source_stalled" | "source_too_slow" | "source_timeout" | "source_unreachable" => {
            "the source was slow or unreachable; the job is retried"
        }
        _ if kind.ends_with("_too_large") || kind.ends_with("_too_long") => {
            "the message breaks a limit of docs/jobs.md (Limits)"
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use aws_sdk_dynamodb::types::AttributeValue;

    use super::*;

    fn record(pairs: &[(&str, &str)]) -> Record {
        pairs
            .iter()
            .map(|(name, value)| {
                let value = if value.parse::<f64>().is_ok() {
                    AttributeValue::N((*value).into())
                } else {
                    AttributeValue::S((*value).into())
                };
                ((*name).to_owned(), value)
            })
            .collect()
    }

    fn now() -> SystemTime {
        // 2026-12-06T10:05:00Z
        UNIX_EPOCH + Duration::from_secs(1_796_551_500)
    }

    #[test]
    fn a_succeeded_job_reads_in_order_without_internals() {
        let shown = lines(
            &record(&[
                ("job_id", "j-1"),
                ("status", "succeeded"),
                ("url", "https://example.com/a.iso?<redacted>"),
                ("bucket", "b"),
                ("key", "k"),
                ("size", "62914560"),
                ("bytes_done", "62914560"),
                ("duration_secs", "12.5"),
                ("throughput_mbps", "5.03"),
                ("checksum_algorithm", "CRC64NVME"),
                ("checksum", "x5YMjCvaVSY="),
                ("source_integrity", "pinned"),
                ("attempts", "2"),
                ("resumes", "1"),
                ("restarts", "0"),
                ("bytes_refetched", "1024"),
                ("finished_at", "2026-12-06T10:02:00Z"),
                ("claim_token", "secret-ish"),
                ("fence", "3"),
                ("status_shard", "succeeded#03"),
                ("message", "{}"),
            ]),
            now(),
        )
        .join("\n");
        let order = [
            "job: j-1",
            "status: succeeded (3m ago)",
            "source: https://example.com/a.iso?<redacted>",
            "destination: s3://b/k",
            "size: 60.00 MiB (62914560 bytes)",
            "duration: 12.5 s",
            "throughput: 5.0 MB/s (megabytes per second)",
            "checksum: CRC64NVME x5YMjCvaVSY=",
            "source check: pinned",
            "attempts: 2",
            "resumes: 1",
            "restarts: 0",
            "refetched: 1.00 KiB (1024 bytes)",
            "finished: 2026-12-06T10:02:00Z (3m ago)",
        ];
        let mut from = 0;
        for line in order {
            let at = shown[from..]
                .find(line)
                .unwrap_or_else(|| panic!("{line:?} after byte {from} in:\n{shown}"));
            from += at + line.len();
        }
        for internal in [
            "claim_token",
            "fence",
            "status_shard",
            "message",
            "progress",
        ] {
            assert!(!shown.contains(internal), "{internal} shown:\n{shown}");
        }
    }

    #[test]
    fn a_running_job_shows_progress_and_a_failed_one_a_hint() {
        let running = lines(
            &record(&[
                ("status", "running"),
                ("bytes_total", "1000"),
                ("bytes_done", "250"),
            ]),
            now(),
        )
        .join("\n");
        assert!(
            running.contains("progress: 25 % (250 B of 1000 B)"),
            "{running}"
        );
        let failed = lines(
            &record(&[
                ("status", "failed"),
                ("error_kind", "source_not_found"),
                ("error", "source answered HTTP 404"),
            ]),
            now(),
        )
        .join("\n");
        assert!(failed.contains("error: source_not_found: source answered HTTP 404"));
        assert!(failed.contains("hint: check the URL"), "{failed}");
    }

    #[test]
    fn the_object_settings_a_skip_and_the_origins_digests_are_shown() {
        let mut skipped = record(&[
            ("status", "succeeded"),
            (
                "message",
                r#"{"version":1,"sse":"aws:kms","kms_key_id":"alias/k","tags":{"team":"data"},"if_exists":"skip"}"#,
            ),
            ("source_digests", "sha256,crc64nvme"),
        ]);
        skipped.insert("skipped".into(), AttributeValue::Bool(true));
        let shown = lines(&skipped, now()).join("\n");
        for line in [
            "stored with: sse aws:kms (key alias/k); tags team=data; if_exists skip",
            "skipped: the destination already held this version",
            "origin hash: sha256,crc64nvme: matched the bytes",
        ] {
            assert!(shown.contains(line), "{line:?} in:\n{shown}");
        }
        let plain = lines(
            &record(&[("status", "succeeded"), ("message", r#"{"version":1}"#)]),
            now(),
        )
        .join("\n");
        for absent in ["stored with", "skipped", "origin hash"] {
            assert!(!plain.contains(absent), "{absent} in:\n{plain}");
        }
    }
}
