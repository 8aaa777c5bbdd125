//! `ferry jobs`: list job records newest first (table, JSON Lines or CSV),
//! or count them by status.

use std::io::Write as _;
use std::time::{Duration, SystemTime};

use clap::Args;

use crate::CliError;
use crate::listing::{Filter, Listing};
use crate::store::{self, Record, Status};

#[derive(Debug, Args)]
pub struct JobsArgs {
    /// Only jobs in this status (repeat or comma-separate): queued, running,
    /// retrying, succeeded, failed, rejected, cancelled.
    #[arg(long, value_delimiter = ',', value_parser = parse_status)]
    pub status: Vec<Status>,
    /// Only jobs that entered their status within this long (e.g. `1h`,
    /// `30m`, `7days`): `--status failed --since 1h` is what failed in the
    /// last hour.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub since: Option<Duration>,
    /// List at most this many jobs.
    #[arg(long, default_value_t = 50)]
    pub limit: u64,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Count jobs by status instead of listing them.
    #[arg(long)]
    pub summary: bool,
    #[arg(long, env = "FERRY_TABLE")]
    pub table: String,
    #[command(flatten)]
    pub aws: crate::config::AwsArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Columns that fit a terminal.
    Table,
    /// One record per line, as `ferry status --json` prints it.
    Jsonl,
    /// The columns of an S3 Batch Operations completion report, then ferry's.
    Csv,
}

pub fn parse_status(text: &str) -> Result<Status, String> {
    Status::parse(text).ok_or_else(|| {
        let known: Vec<_> = Status::ALL.iter().map(|s| s.as_str()).collect();
        format!("unknown status {text:?} (one of {})", known.join(", "))
    })
}

/// The `status_at` bound for `--since`.
pub fn since_text(since: Option<Duration>) -> Option<String> {
    since.map(crate::listing::since)
}

pub async fn run(args: JobsArgs) -> Result<(), CliError> {
    let sdk = crate::preflight::aws().await?;
    let client = crate::aws_clients::dynamodb(&sdk, &args.aws);
    let filter = Filter {
        statuses: args.status.clone(),
        since: since_text(args.since),
    };
    let failed = |err: crate::listing::ListError| CliError::Failed {
        kind: "store_error",
        message: err.to_string(),
    };
    let mut listing = Listing::new(client, &args.table, &filter);
    let mut out = std::io::stdout().lock();
    if args.summary {
        let counts = listing.count().await.map_err(failed)?;
        let total: u64 = counts.iter().map(|(_, n)| n).sum();
        for (status, count) in counts {
            let _ = writeln!(out, "{:<10} {count:>9}", status.as_str());
        }
        let _ = writeln!(out, "{:<10} {total:>9}", "total");
        return Ok(());
    }
    let mut csv = csv::Writer::from_writer(std::io::stdout());
    match args.format {
        Format::Table => {
            let _ = writeln!(out, "{}", table_header());
        }
        Format::Csv => {
            let _ = csv.write_record(CSV_COLUMNS);
        }
        Format::Jsonl => {}
    }
    let now = SystemTime::now();
    let mut listed = 0;
    while listed < args.limit {
        let Some(record) = listing.next().await.map_err(failed)? else {
            break;
        };
        listed += 1;
        let written = match args.format {
            Format::Table => writeln!(out, "{}", table_row(&record, now)),
            Format::Jsonl => writeln!(out, "{}", store::to_json(&record)),
            Format::Csv => csv
                .write_record(csv_row(&record))
                .map_err(std::io::Error::other),
        };
        // A closed pipe (`ferry jobs | head`) ends the listing quietly.
        if written.is_err() {
            return Ok(());
        }
    }
    drop(out);
    let _ = csv.flush();
    Ok(())
}

const ID_WIDTH: usize = 36;

fn table_header() -> String {
    format!(
        "{:<ID_WIDTH$}  {:<9}  {:>9}  {:>8}  {:>6}  ERROR",
        "JOB ID", "STATUS", "SIZE", "PROGRESS", "AGE"
    )
}

fn table_row(record: &Record, now: SystemTime) -> String {
    let view = store::JobView::of(record);
    let id = view.job_id().unwrap_or("?");
    // Ids longer than the column keep their end, where generated ids differ.
    let id = if id.chars().count() > ID_WIDTH {
        let tail: String = id
            .chars()
            .skip(id.chars().count() - (ID_WIDTH - 1))
            .collect();
        format!("…{tail}")
    } else {
        id.to_owned()
    };
    let size = view.size();
    let done = view.bytes_done();
    let progress = match (done, size) {
        (Some(done), Some(total)) if total > 0 => {
            format!("{:.0}%", (done as f64 / total as f64 * 100.0).min(100.0))
        }
        (Some(done), _) => indicatif::HumanBytes(done).to_string(),
        _ => "-".to_owned(),
    };
    format!(
        "{id:<ID_WIDTH$}  {:<9}  {:>9}  {progress:>8}  {:>6}  {}",
        view.status_text().unwrap_or("?"),
        size.map_or("-".to_owned(), |n| indicatif::HumanBytes(n).to_string()),
        age(view.updated_at(), now),
        view.error_kind().unwrap_or(""),
    )
}

/// `42s`, `7m`, `3h`, `12d` since an RFC 3339 time.
pub(crate) fn age(at: Option<&str>, now: SystemTime) -> String {
    let Some(at) = at.and_then(|at| humantime::parse_rfc3339_weak(at).ok()) else {
        return "-".to_owned();
    };
    let secs = now.duration_since(at).unwrap_or_default().as_secs();
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m", secs / 60),
        3600..86400 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86400),
    }
}

/// S3 Batch Operations report columns first (Bucket, Key, TaskStatus,
/// ErrorCode, ResultMessage), then ferry's own.
const CSV_COLUMNS: [&str; 14] = [
    "bucket",
    "key",
    "status",
    "error_code",
    "message",
    "job_id",
    "size",
    "bytes_done",
    "attempts",
    "checksum_crc64nvme",
    "created_at",
    "updated_at",
    "finished_at",
    "url",
];

fn csv_row(record: &Record) -> Vec<String> {
    let view = store::JobView::of(record);
    let field = |name: &str| view.shown(name).unwrap_or_default();
    vec![
        field("bucket"),
        field("key"),
        field("status"),
        field("error_kind"),
        field("error"),
        field("job_id"),
        field("size"),
        field("bytes_done"),
        field("attempts"),
        field("checksum"),
        field("created_at"),
        field("updated_at"),
        field("finished_at"),
        field("url"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_dynamodb::types::AttributeValue;

    fn record(fields: &[(&str, &str)]) -> Record {
        fields
            .iter()
            .map(|(k, v)| {
                let value = if v.parse::<u64>().is_ok() && *k != "job_id" {
                    AttributeValue::N((*v).into())
                } else {
                    AttributeValue::S((*v).into())
                };
                ((*k).to_owned(), value)
            })
            .collect()
    }

    #[test]
    fn a_table_row_shows_progress_age_and_error_kind() {
        let now = humantime::parse_rfc3339("2026-12-01T12:00:00Z").unwrap();
        let row = table_row(
            &record(&[
                ("job_id", "job-1"),
                ("status", "running"),
                ("bytes_done", "512"),
                ("bytes_total", "2048"),
                ("updated_at", "2026-12-01T11:58:00Z"),
            ]),
            now,
        );
        assert!(row.starts_with("job-1 "), "{row}");
        assert!(
            row.contains("25%") && row.contains("2m") && row.contains("running"),
            "{row}"
        );
        let long = "x".repeat(40) + "END";
        let row = table_row(
            &record(&[("job_id", &long), ("error_kind", "http_status")]),
            now,
        );
        assert!(
            row.starts_with('…') && row.contains("END ") && row.ends_with("http_status"),
            "{row}"
        );
    }

    #[test]
    fn csv_rows_are_quoted_and_follow_the_header() {
        let mut writer = csv::Writer::from_writer(Vec::new());
        writer.write_record(CSV_COLUMNS).unwrap();
        let row = csv_row(&record(&[
            ("job_id", "j"),
            ("bucket", "b"),
            ("key", "a,b \"c\""),
            ("status", "failed"),
            ("error", "line1\nline2"),
        ]));
        assert_eq!(row.len(), CSV_COLUMNS.len());
        writer.write_record(&row).unwrap();
        let text = String::from_utf8(writer.into_inner().unwrap()).unwrap();
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        assert_eq!(reader.headers().unwrap().len(), CSV_COLUMNS.len());
        let parsed = reader.records().next().unwrap().unwrap();
        assert_eq!(&parsed[1], "a,b \"c\"");
        assert_eq!(&parsed[4], "line1\nline2");
    }
}
