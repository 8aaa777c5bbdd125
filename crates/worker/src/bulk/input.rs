//! Reading a bulk file: lines of bounded length, the format (JSON Lines or a
//! `TsvHttpData-1.0` URL list), and each line turned into a validated job
//! message or a bad line with its reason.
//!
//! It reads one line at a time and keeps none, so a file of any length is
//! read in bounded memory. It never sends anything; `chunk` does.
//!
//! Just over 500 lines, half of them the tests of both formats beside the
//! parser they pin down.

use std::io;

use base64::Engine as _;
use ferry_engine::source::Url;
use serde_json::{Map, Value};
use tokio::io::{AsyncBufRead, AsyncBufReadExt as _};

use crate::bulk::naming::{self, Destination};
use crate::job::{self, Job};
use crate::object_args::ObjectArgs;

/// The first line of a URL list, exactly (Storage Transfer Service's format).
pub const TSV_HEADER: &str = "TsvHttpData-1.0";

/// SQS's limit on a message body: a longer job message could never be sent.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;

/// One line of the file as read: its number (from 1) and its text, or why it
/// has none.
#[derive(Debug)]
pub struct RawLine {
    pub number: u64,
    pub text: Result<String, &'static str>,
}

/// Reads lines of at most [`MAX_MESSAGE_BYTES`] bytes; a longer line is
/// skipped unread (never held whole) and comes back as an error text.
pub struct LineReader<R> {
    reader: R,
    number: u64,
    bytes_read: u64,
}

impl<R: AsyncBufRead + Unpin> LineReader<R> {
    pub fn new(reader: R) -> Self {
        Self {
            reader,
            number: 0,
            bytes_read: 0,
        }
    }

    /// Bytes consumed so far (for a progress bar over a file's size).
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read
    }

    /// The next line without its `\n` or `\r\n`; `None` at the end.
    pub async fn next_line(&mut self) -> io::Result<Option<RawLine>> {
        let mut line = Vec::new();
        let mut too_long = false;
        let mut saw_any = false;
        loop {
            let buffer = self.reader.fill_buf().await?;
            if buffer.is_empty() {
                if !saw_any {
                    return Ok(None);
                }
                break;
            }
            saw_any = true;
            let (piece, ends_line) = match buffer.iter().position(|&b| b == b'\n') {
                Some(at) => (&buffer[..at], true),
                None => (buffer, false),
            };
            if !too_long {
                if line.len() + piece.len() > MAX_MESSAGE_BYTES + 1 {
                    too_long = true;
                    line = Vec::new();
                } else {
                    line.extend_from_slice(piece);
                }
            }
            let consumed = piece.len() + usize::from(ends_line);
            self.reader.consume(consumed);
            self.bytes_read += consumed as u64;
            if ends_line {
                break;
            }
        }
        self.number += 1;
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        let text = if too_long || line.len() > MAX_MESSAGE_BYTES {
            Err("line is longer than 262,144 bytes (SQS's message limit)")
        } else {
            String::from_utf8(line).map_err(|_| "line is not UTF-8")
        };
        Ok(Some(RawLine {
            number: self.number,
            text,
        }))
    }
}

/// A good line: its job, validated as the worker validates it, and the
/// message to send (with the job id in it).
#[derive(Debug)]
pub struct Entry {
    pub line: u64,
    pub job: Job,
    pub body: String,
}

/// A line that was skipped, and why. The reason never contains the URL or a
/// header value (it comes from `job::parse` or from this module).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadLine {
    pub line: u64,
    pub reason: String,
}

/// A problem with the whole file, found before anything was submitted.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("line {0}: a {TSV_HEADER} URL list needs --dest s3://BUCKET/PREFIX/")]
    TsvWithoutDest(u64),
}

/// Turns lines into entries. The format is decided by the first non-empty
/// line: with `--dest` the file is a URL list and must start with
/// [`TSV_HEADER`]; without, it is JSON Lines (and a URL list is refused,
/// since its objects would have nowhere to go).
pub struct Parser {
    dest: Option<Destination>,
    /// Object settings for every job (`ferry submit --sse …`); a JSON
    /// line's own fields win.
    object: ObjectArgs,
    started: bool,
}

impl Parser {
    pub fn new(dest: Option<Destination>, object: ObjectArgs) -> Self {
        Self {
            dest,
            object,
            started: false,
        }
    }

    /// `Ok(None)` for blank lines and the header.
    pub fn parse(&mut self, raw: RawLine) -> Result<Option<Result<Entry, BadLine>>, FormatError> {
        let number = raw.number;
        let bad = |reason: String| {
            Ok(Some(Err(BadLine {
                line: number,
                reason,
            })))
        };
        let text = match &raw.text {
            Ok(text) => text.as_str(),
            Err(reason) => return bad((*reason).to_owned()),
        };
        let text = if self.started {
            text
        } else {
            // A byte-order mark some editors put before the first line.
            text.trim_start_matches('\u{feff}')
        };
        if text.trim().is_empty() {
            return Ok(None);
        }
        let first = !self.started;
        self.started = true;
        match (&self.dest, first) {
            (None, true) if text.trim_end() == TSV_HEADER => {
                Err(FormatError::TsvWithoutDest(number))
            }
            (None, _) => Ok(Some(json_line(number, text, &self.object))),
            (Some(_), true) if text.trim_end() == TSV_HEADER => Ok(None),
            // The rows after a missing header are still read as rows: they
            // cannot be mistaken for anything else, and a re-run after adding
            // the header submits only what was skipped.
            (Some(_), true) => bad(format!(
                "a URL list (--dest) must start with the line {TSV_HEADER}; this line was skipped"
            )),
            (Some(dest), false) => Ok(Some(tsv_row(number, text, dest, &self.object))),
        }
    }
}

/// A JSON Lines line: a job message exactly as on the queue; a line without
/// `job_id` gets the derived one.
fn json_line(number: u64, text: &str, object: &ObjectArgs) -> Result<Entry, BadLine> {
    let bad = |reason: String| BadLine {
        line: number,
        reason,
    };
    let merged;
    let text = if object.is_empty() {
        text
    } else {
        // A line that is no JSON object is reported by the parser below.
        match serde_json::from_str::<Map<String, Value>>(text) {
            Ok(mut message) => {
                object.apply(&mut message).map_err(bad)?;
                merged = Value::Object(message).to_string();
                merged.as_str()
            }
            Err(_) => text,
        }
    };
    // An empty fallback id is not a valid job id, so `job.id` is empty
    // exactly when the line brings no id of its own.
    let mut job = job::parse(text, "").map_err(|r| bad(r.reason))?;
    let body = if job.id.is_empty() {
        let mut message: Map<String, Value> =
            serde_json::from_str(text).map_err(|_| bad("line is not a JSON object".into()))?;
        job.id = naming::derived_job_id(&job);
        message.insert("job_id".into(), job.id.clone().into());
        Value::Object(message).to_string()
    } else {
        text.trim().to_owned()
    };
    entry(number, job, body)
}

/// A URL list row: `URL[<TAB>size[<TAB>base64 MD5]]`.
fn tsv_row(
    number: u64,
    text: &str,
    dest: &Destination,
    object: &ObjectArgs,
) -> Result<Entry, BadLine> {
    let bad = |reason: String| BadLine {
        line: number,
        reason,
    };
    let mut fields = text.split('\t').map(str::trim);
    let url_text = fields.next().unwrap_or_default();
    let size = fields.next().filter(|f| !f.is_empty());
    let md5 = fields.next().filter(|f| !f.is_empty());
    if fields.next().is_some() {
        return Err(bad(
            "a row has at most 3 tab-separated fields: URL, size, base64 MD5".into(),
        ));
    }
    let url: Url = url_text
        .parse()
        .map_err(|_| bad("url is not a valid absolute URL".into()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad(format!(
            "url scheme {:?} is not http or https",
            url.scheme()
        )));
    }
    let key = naming::object_key(&dest.prefix, &url).map_err(|e| bad(e.to_string()))?;
    let mut message = Map::new();
    message.insert("version".into(), job::SUPPORTED_VERSION.into());
    message.insert("url".into(), url_text.into());
    message.insert("bucket".into(), dest.bucket.clone().into());
    message.insert("key".into(), key.into());
    let mut expected = Map::new();
    if let Some(size) = size {
        let size: u64 = size
            .parse()
            .map_err(|_| bad("size must be a whole number of bytes".into()))?;
        expected.insert("size".into(), size.into());
    }
    if let Some(md5) = md5 {
        expected.insert("md5".into(), md5_hex(md5).map_err(bad)?.into());
    }
    if !expected.is_empty() {
        message.insert("expected".into(), expected.into());
    }
    object.apply(&mut message).map_err(bad)?;
    // The worker's own validation (bucket, key, …), with its reasons.
    let mut job =
        job::parse(&Value::Object(message.clone()).to_string(), "").map_err(|r| bad(r.reason))?;
    job.id = naming::derived_job_id(&job);
    message.insert("job_id".into(), job.id.clone().into());
    entry(number, job, Value::Object(message).to_string())
}

fn entry(line: u64, job: Job, body: String) -> Result<Entry, BadLine> {
    if body.len() > MAX_MESSAGE_BYTES {
        return Err(BadLine {
            line,
            reason: format!(
                "the job message is {} bytes; SQS takes at most {MAX_MESSAGE_BYTES}",
                body.len()
            ),
        });
    }
    Ok(Entry { line, job, body })
}

/// A URL list's MD5 (base64 of the 16-byte digest, as `gsutil hash` and
/// Content-MD5 write it) as the lowercase hex `expected.md5` wants.
pub fn md5_hex(base64: &str) -> Result<String, String> {
    let digest = base64::engine::general_purpose::STANDARD
        .decode(base64)
        .map_err(|_| "MD5 is not valid base64".to_owned())?;
    if digest.len() != 16 {
        return Err(format!(
            "MD5 must be the base64 of 16 bytes (this is {} bytes)",
            digest.len()
        ));
    }
    Ok(hex::encode(digest))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MD5_OF_NOTHING: &str = "1B2M2Y8AsgTpgAmY7PhCfg==";

    fn dest() -> Destination {
        "s3://my-bucket/mirror/".parse().unwrap()
    }

    async fn lines(input: &[u8]) -> Vec<RawLine> {
        let mut reader = LineReader::new(input);
        let mut out = Vec::new();
        while let Some(line) = reader.next_line().await.unwrap() {
            out.push(line);
        }
        assert_eq!(reader.bytes_read(), input.len() as u64);
        out
    }

    /// Every line of `input` through a parser: entries and bad lines.
    async fn parse_all(
        input: &str,
        dest: Option<Destination>,
    ) -> Result<(Vec<Entry>, Vec<BadLine>), FormatError> {
        let mut parser = Parser::new(dest, ObjectArgs::default());
        let (mut entries, mut bad) = (Vec::new(), Vec::new());
        for raw in lines(input.as_bytes()).await {
            match parser.parse(raw)? {
                Some(Ok(entry)) => entries.push(entry),
                Some(Err(line)) => bad.push(line),
                None => {}
            }
        }
        Ok((entries, bad))
    }

    #[tokio::test]
    async fn lines_are_numbered_with_line_ends_removed() {
        let read = lines(b"a\r\nb\n\nc").await;
        let texts: Vec<_> = read
            .iter()
            .map(|l| (l.number, l.text.clone().unwrap()))
            .collect();
        assert_eq!(
            texts,
            [
                (1, "a".into()),
                (2, "b".into()),
                (3, String::new()),
                (4, "c".into())
            ]
        );
    }

    #[tokio::test]
    async fn an_overlong_line_is_reported_without_being_held_and_reading_goes_on() {
        let mut input = vec![b'x'; MAX_MESSAGE_BYTES * 3];
        input.extend_from_slice(b"\nnext\n\xff\n");
        // A tiny buffer: the long line arrives in many pieces.
        let mut reader = LineReader::new(tokio::io::BufReader::with_capacity(7, &input[..]));
        let first = reader.next_line().await.unwrap().unwrap();
        assert!(first.text.unwrap_err().contains("longer than"));
        let second = reader.next_line().await.unwrap().unwrap();
        assert_eq!(
            (second.number, second.text.unwrap()),
            (2, "next".to_owned())
        );
        let third = reader.next_line().await.unwrap().unwrap();
        assert_eq!(third.text.unwrap_err(), "line is not UTF-8");
        assert!(reader.next_line().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_url_list_becomes_jobs_with_sizes_md5s_and_derived_ids() {
        let input = format!(
            "\u{feff}{TSV_HEADER}\r\n\
             https://example.com/a/b.iso\t1024\t{MD5_OF_NOTHING}\n\
             \n\
             https://example.com/c.bin?sig=SECRET\n\
             https://example.com/d.bin\t\t{MD5_OF_NOTHING}\n"
        );
        let (entries, bad) = parse_all(&input, Some(dest())).await.unwrap();
        assert_eq!(bad, []);
        let summary: Vec<_> = entries
            .iter()
            .map(|e| {
                let expected = &e.job.spec.expected;
                (
                    e.line,
                    e.job.spec.destination.key.as_str(),
                    expected.size,
                    expected.md5.clone(),
                )
            })
            .collect();
        let md5 = Some("d41d8cd98f00b204e9800998ecf8427e".to_owned());
        assert_eq!(
            summary,
            [
                (2, "mirror/example.com/a/b.iso", Some(1024), md5.clone()),
                (4, "mirror/example.com/c.bin", None, None),
                (5, "mirror/example.com/d.bin", None, md5),
            ]
        );
        for entry in &entries {
            assert_eq!(entry.job.spec.destination.bucket, "my-bucket");
            assert!(entry.job.id.starts_with("bulk-"));
            // The message is what the worker will parse: same job, same id.
            let again = job::parse(&entry.body, "other").unwrap();
            assert_eq!(again.id, entry.job.id);
            assert_eq!(again.spec.expected, entry.job.spec.expected);
        }
        // The signature goes to the worker in the message, nowhere else.
        assert!(entries[1].body.contains("sig=SECRET"));
        assert!(!format!("{:?}", entries[1].job).contains("SECRET"));
    }

    #[tokio::test]
    async fn bad_rows_are_reported_by_number_and_the_rest_is_read() {
        let input = format!(
            "{TSV_HEADER}\n\
             https://example.com/ok\n\
             not a url\n\
             ftp://example.com/f\n\
             https://example.com/f\tbig\n\
             https://example.com/f\t1\tnot-base64!\n\
             https://example.com/f\t1\tAAAA\n\
             https://example.com/dir/\n\
             https://example.com/f\t1\t{MD5_OF_NOTHING}\textra\n\
             https://example.com/ok2?token=SECRET\n"
        );
        let (entries, bad) = parse_all(&input, Some(dest())).await.unwrap();
        assert_eq!(entries.iter().map(|e| e.line).collect::<Vec<_>>(), [2, 10]);
        let numbers: Vec<u64> = bad.iter().map(|b| b.line).collect();
        assert_eq!(numbers, [3, 4, 5, 6, 7, 8, 9]);
        assert!(bad[0].reason.contains("not a valid absolute URL"));
        assert!(bad[1].reason.contains("not http or https"));
        assert!(bad[2].reason.contains("whole number"));
        assert!(bad[3].reason.contains("not valid base64"));
        assert!(bad[4].reason.contains("16 bytes"));
        assert!(bad[5].reason.contains("names no file"));
        assert!(bad[6].reason.contains("at most 3"));
    }

    #[tokio::test]
    async fn a_url_list_without_its_header_reports_line_one_and_reads_the_rows() {
        let input = "https://example.com/first\nhttps://example.com/second\n";
        let (entries, bad) = parse_all(input, Some(dest())).await.unwrap();
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0].line, 1);
        assert!(bad[0].reason.contains(TSV_HEADER));
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].line, 2);
    }

    #[tokio::test]
    async fn a_url_list_without_dest_is_refused_before_anything_is_read() {
        let input = format!("\n{TSV_HEADER}\nhttps://example.com/a\n");
        assert!(matches!(
            parse_all(&input, None).await,
            Err(FormatError::TsvWithoutDest(2))
        ));
    }

    #[tokio::test]
    async fn json_lines_keep_their_ids_or_get_derived_ones() {
        let input = r#"{"url":"https://example.com/a","bucket":"my-bucket","key":"a","job_id":"mine"}
{"url":"https://example.com/b","bucket":"my-bucket","key":"b","expected":{"size":3}}
{"url":"https://example.com/c","bucket":"my-bucket","key":"c","job_id":null}
not json
{"url":"https://example.com/d","bucket":"Bad_Bucket","key":"d"}
{"url":"https://example.com/e?sig=SECRET","bucket":"my-bucket","key":"e","headers":{"bad name":"SECRET"}}
["an","array"]
"#;
        let (entries, bad) = parse_all(input, None).await.unwrap();
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[0].job.id, "mine");
        assert_eq!(entries[0].body, input.lines().next().unwrap());
        for entry in &entries[1..] {
            assert!(entry.job.id.starts_with("bulk-"));
            assert_eq!(job::parse(&entry.body, "x").unwrap().id, entry.job.id);
        }
        assert_eq!(
            job::parse(&entries[1].body, "x")
                .unwrap()
                .spec
                .expected
                .size,
            Some(3)
        );
        assert_eq!(bad.iter().map(|b| b.line).collect::<Vec<_>>(), [4, 5, 6, 7]);
        assert!(bad[0].reason.contains("not valid JSON"));
        assert!(bad[1].reason.contains("Bad_Bucket"));
        for line in &bad {
            assert!(!line.reason.contains("SECRET"), "{line:?}");
        }
    }

    #[test]
    fn md5s_are_base64_of_sixteen_bytes() {
        assert_eq!(
            md5_hex(MD5_OF_NOTHING).unwrap(),
            "d41d8cd98f00b204e9800998ecf8427e"
        );
        assert!(md5_hex("d41d8cd98f00b204e9800998ecf8427e").is_err());
        assert!(md5_hex("AAAA").is_err());
        assert!(md5_hex("%%%").is_err());
    }
}
