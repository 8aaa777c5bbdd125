//! `ferry submit --from FILE [--dest s3://BUCKET/PREFIX/] [--wait]`: reads
//! the file line by line, hands chunks of good lines to `bulk::chunk`, shows
//! a progress bar, reports bad lines by number, prints the summary and, with
//! `--wait`, follows every job of the file to its end.
//!
//! What is submitted and how is `bulk`'s business; this module only reads,
//! counts and prints.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use tokio::io::{AsyncBufRead, BufReader};
use tokio_util::sync::CancellationToken;

use crate::CliError;
use crate::bulk::chunk::{self, CHUNK_LINES, ChunkReport, Target};
use crate::bulk::input::{BadLine, Entry, LineReader, Parser};
use crate::bulk::messages::Messages;
use crate::bulk::records::Records;
use crate::bulk::{Calls, follow};
use crate::cli::submit::SubmitArgs;

/// Counts for the summary.
#[derive(Debug, Default)]
struct Tally {
    lines: u64,
    submitted: u64,
    already_present: u64,
    re_enqueued: u64,
    bad: u64,
    not_enqueued: u64,
}

impl Tally {
    fn add(&mut self, report: &ChunkReport) {
        self.submitted += report.submitted;
        self.already_present += report.already_present;
        self.re_enqueued += report.re_enqueued;
        self.bad += report.bad.len() as u64;
        self.not_enqueued += report.not_enqueued.len() as u64;
    }

    fn jobs(&self) -> u64 {
        self.submitted + self.already_present + self.re_enqueued + self.not_enqueued
    }

    fn progress(&self) -> String {
        format!(
            "{} lines: {} submitted, {} present, {} re-enqueued, {} bad",
            self.lines, self.submitted, self.already_present, self.re_enqueued, self.bad
        )
    }
}

pub async fn run(args: SubmitArgs, cancel: CancellationToken) -> Result<(), CliError> {
    let Some(from) = args.from.as_deref() else {
        return Err(CliError::Usage(
            "give URL and s3://BUCKET/KEY, or --from FILE".into(),
        ));
    };
    let (input, size) = open(from).await?;
    let sdk = crate::preflight::load().await;
    let calls = Arc::new(Calls::default());
    let queue_url = args.jobs.queue_urls.first().map_or("", String::as_str);
    let target = Target {
        records: Records::new(
            crate::aws_clients::dynamodb(&sdk, &args.aws),
            &args.jobs.table,
            calls.clone(),
        ),
        messages: Messages::new(
            crate::aws_clients::sqs(&sdk, &args.aws),
            queue_url,
            calls.clone(),
        ),
    };
    let bar = reading_bar(size);
    let started = Instant::now();
    let mut tally = Tally::default();
    // Only --wait needs the ids (a few MB for 100,000 jobs); without it
    // nothing outlives its chunk.
    let mut to_follow: Option<Vec<String>> = args.wait.then(Vec::new);
    let mut reader = LineReader::new(input);
    let mut parser = Parser::new(args.dest.clone(), args.object.clone());
    let mut entries: Vec<Entry> = Vec::with_capacity(CHUNK_LINES);
    let mut stopped = None;
    loop {
        let raw = tokio::select! {
            raw = reader.next_line() => raw,
            () = cancel.cancelled() => {
                stopped = Some(interrupted(tally.lines + 1));
                break;
            }
        };
        let raw = match raw {
            Ok(Some(raw)) => raw,
            Ok(None) => break,
            Err(err) => {
                stopped = Some(CliError::Failed {
                    kind: "input_error",
                    message: format!("cannot read {}: {err}", from.display()),
                });
                break;
            }
        };
        tally.lines = raw.number;
        match parser.parse(raw) {
            // Only ever the first non-empty line: nothing was submitted.
            Err(err) => return Err(CliError::Usage(err.to_string())),
            Ok(None) => {}
            Ok(Some(Err(bad))) => {
                tally.bad += 1;
                report_bad(&bar, &bad);
                bar.set_message(tally.progress());
            }
            Ok(Some(Ok(entry))) => entries.push(entry),
        }
        if size.is_some() {
            bar.set_position(reader.bytes_read());
        }
        if entries.len() == CHUNK_LINES {
            if let Err(err) = submit(&target, &mut entries, &mut tally, &mut to_follow, &bar).await
            {
                stopped = Some(err);
                break;
            }
            // Between chunks, never inside one: a chunk stopped halfway
            // would be sorted out by a re-run, but need not be.
            if cancel.is_cancelled() {
                stopped = Some(interrupted(tally.lines + 1));
                break;
            }
        }
    }
    if stopped.is_none()
        && let Err(err) = submit(&target, &mut entries, &mut tally, &mut to_follow, &bar).await
    {
        stopped = Some(err);
    }
    bar.finish_and_clear();
    print_summary(&tally, &calls, started.elapsed());
    if let Some(err) = stopped {
        return Err(err);
    }

    let mut problems = Vec::new();
    if tally.bad > 0 {
        problems.push((
            "bad_lines",
            format!(
                "{} bad lines were skipped (reported above); the other lines were submitted",
                tally.bad
            ),
        ));
    }
    if tally.not_enqueued > 0 {
        problems.push((
            "not_enqueued",
            format!(
                "{} jobs are recorded but not enqueued (reported above); run the same command again to enqueue them",
                tally.not_enqueued
            ),
        ));
    }
    if let Some(mut ids) = to_follow {
        ids.sort_unstable();
        ids.dedup();
        let total = ids.len();
        let outcome = tokio::select! {
            outcome = follow_all(&target.records, ids, &args) => outcome?,
            () = cancel.cancelled() => {
                return Err(CliError::Failed {
                    kind: "interrupted",
                    message: "stopped waiting; the jobs continue (ferry status JOB_ID)".into(),
                });
            }
        };
        let counts: Vec<String> = outcome
            .by_status
            .iter()
            .map(|(status, count)| format!("{status} {count}"))
            .collect();
        out!("{}", counts.join(", "));
        let unsuccessful: u64 = outcome
            .by_status
            .iter()
            .filter(|(status, _)| status.as_str() != "succeeded")
            .map(|(_, count)| count)
            .sum();
        for job in &outcome.unsuccessful {
            eprintln!(
                "job {} {}{}",
                job.job_id,
                job.status,
                job.error_kind
                    .as_deref()
                    .map(|kind| format!(" ({kind})"))
                    .unwrap_or_default()
            );
        }
        if unsuccessful > outcome.unsuccessful.len() as u64 {
            eprintln!(
                "… and {} more",
                unsuccessful - outcome.unsuccessful.len() as u64
            );
        }
        if !outcome.all_succeeded() {
            problems.push((
                "jobs_failed",
                format!("{unsuccessful} of {total} jobs did not succeed"),
            ));
        }
    }
    match problems.first() {
        None => Ok(()),
        Some((kind, _)) => Err(CliError::Failed {
            kind,
            message: problems
                .iter()
                .map(|(_, message)| message.as_str())
                .collect::<Vec<_>>()
                .join("; "),
        }),
    }
}

/// Submits the chunk gathered so far (if any) and empties it.
async fn submit(
    target: &Target,
    entries: &mut Vec<Entry>,
    tally: &mut Tally,
    to_follow: &mut Option<Vec<String>>,
    bar: &ProgressBar,
) -> Result<(), CliError> {
    let Some(first_line) = entries.first().map(|e| e.line) else {
        return Ok(());
    };
    let report = chunk::submit(target, entries)
        .await
        .map_err(|err| CliError::Failed {
            kind: err.kind(),
            message: format!(
                "{err}; stopped at line {first_line}: the lines before it are submitted, \
                 and running the same command again submits the rest"
            ),
        })?;
    for bad in &report.bad {
        report_bad(bar, bad);
    }
    for unsent in &report.not_enqueued {
        bar.suspend(|| {
            eprintln!(
                "line {}: job {} is recorded but not enqueued: {}",
                unsent.line, unsent.job_id, unsent.reason
            );
        });
    }
    if let Some(ids) = to_follow {
        // Jobs without a message would never end: not followed.
        let skip = |entry: &Entry| {
            report.bad.iter().any(|b| b.line == entry.line)
                || report.not_enqueued.iter().any(|u| u.line == entry.line)
        };
        ids.extend(
            entries
                .iter()
                .filter(|e| !skip(e))
                .map(|e| e.job.id.clone()),
        );
    }
    tally.add(&report);
    bar.set_message(tally.progress());
    entries.clear();
    Ok(())
}

async fn follow_all(
    records: &Records,
    ids: Vec<String>,
    args: &SubmitArgs,
) -> Result<follow::Outcome, CliError> {
    let bar = ProgressBar::new(ids.len() as u64).with_style(style(
        "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} jobs final",
    ));
    let every = Duration::from_secs(args.poll_secs.max(1));
    let outcome = follow::follow(records, ids, every, |done, _| bar.set_position(done))
        .await
        .map_err(|err| CliError::Failed {
            kind: err.kind(),
            message: format!("{err}; stopped waiting, the jobs continue"),
        });
    bar.finish_and_clear();
    outcome
}

fn print_summary(tally: &Tally, calls: &Calls, elapsed: Duration) {
    let mut first = format!(
        "submitted {}, already present {}, re-enqueued {}, bad {}",
        tally.submitted, tally.already_present, tally.re_enqueued, tally.bad
    );
    if tally.not_enqueued > 0 {
        first.push_str(&format!(", not enqueued {}", tally.not_enqueued));
    }
    out!("{first}");
    let seconds = elapsed.as_secs_f64();
    let (dynamodb, sqs) = (calls.dynamodb(), calls.sqs());
    let per_job = match tally.jobs() {
        0 => String::new(),
        jobs => format!(" = {:.3} per job", (dynamodb + sqs) as f64 / jobs as f64),
    };
    out!(
        "{} lines in {seconds:.1} s ({:.0} lines/s); AWS calls: {dynamodb} DynamoDB + {sqs} SQS{per_job}",
        tally.lines,
        tally.lines as f64 / seconds.max(0.001),
    );
}

fn report_bad(bar: &ProgressBar, bad: &BadLine) {
    bar.suspend(|| eprintln!("line {}: {}", bad.line, bad.reason));
}

fn interrupted(line: u64) -> CliError {
    CliError::Failed {
        kind: "interrupted",
        message: format!(
            "interrupted before line {line}: the lines before it are submitted, \
             and running the same command again submits the rest"
        ),
    }
}

type Input = Box<dyn AsyncBufRead + Unpin + Send>;

/// The input and, for a regular file, its size (the progress bar's length).
async fn open(path: &Path) -> Result<(Input, Option<u64>), CliError> {
    if path == Path::new("-") {
        return Ok((Box::new(BufReader::new(tokio::io::stdin())), None));
    }
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|err| CliError::Usage(format!("cannot open {}: {err}", path.display())))?;
    let size = file
        .metadata()
        .await
        .ok()
        .filter(|m| m.is_file())
        .map(|m| m.len());
    Ok((Box::new(BufReader::with_capacity(64 * 1024, file)), size))
}

/// Progress over the file's bytes when its size is known, else a spinner;
/// the message counts lines.
fn reading_bar(size: Option<u64>) -> ProgressBar {
    match size {
        Some(size) => ProgressBar::new(size).with_style(style(
            "{spinner} [{elapsed_precise}] {wide_bar} {percent}% eta {eta} {msg}",
        )),
        None => ProgressBar::new_spinner().with_style(style("{spinner} [{elapsed_precise}] {msg}")),
    }
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar())
}
