//! A job record as its readers see it: typed accessors over the stored
//! item, so each attribute's name and type is spelled once for every
//! command that reads records (`submit`, `cancel`, `retry`, `jobs`, bulk,
//! gc). Writers spell them in `record/`; whole-record displays (`ferry
//! status`, `--json`) go through [`super::to_json`] and the view.

use super::Record;
use super::codec::{number, number_f64, text};
use super::record::Status;

/// Borrowed, typed reading of one job record.
#[derive(Clone, Copy)]
pub struct JobView<'a>(&'a Record);

impl<'a> JobView<'a> {
    pub fn of(record: &'a Record) -> Self {
        Self(record)
    }

    pub fn job_id(self) -> Option<&'a str> {
        text(self.0, "job_id")
    }

    /// The status; `None` when missing or not one ferry writes.
    pub fn status(self) -> Option<Status> {
        self.status_text().and_then(Status::parse)
    }

    /// The status as stored, for showing (even one this version does not know).
    pub fn status_text(self) -> Option<&'a str> {
        text(self.0, "status")
    }

    pub fn url(self) -> Option<&'a str> {
        text(self.0, "url")
    }

    pub fn bucket(self) -> Option<&'a str> {
        text(self.0, "bucket")
    }

    pub fn key(self) -> Option<&'a str> {
        text(self.0, "key")
    }

    pub fn upload_id(self) -> Option<&'a str> {
        text(self.0, "upload_id")
    }

    pub fn error_kind(self) -> Option<&'a str> {
        text(self.0, "error_kind")
    }

    pub fn error(self) -> Option<&'a str> {
        text(self.0, "error")
    }

    pub fn updated_at(self) -> Option<&'a str> {
        text(self.0, "updated_at")
    }

    /// The object's size, once known (`size` when stored, else the
    /// source's announced `bytes_total`).
    pub fn size(self) -> Option<u64> {
        number(self.0, "size").or_else(|| self.bytes_total())
    }

    pub fn bytes_total(self) -> Option<u64> {
        number(self.0, "bytes_total")
    }

    pub fn bytes_done(self) -> Option<u64> {
        number(self.0, "bytes_done")
    }

    pub fn duration_secs(self) -> Option<f64> {
        number_f64(self.0, "duration_secs")
    }

    /// Megabytes (10⁶ bytes) per second.
    pub fn throughput_mbps(self) -> Option<f64> {
        number_f64(self.0, "throughput_mbps")
    }

    /// Any attribute by name as text (numbers written out), for displays
    /// that list attributes generically.
    pub fn shown(self, name: &str) -> Option<String> {
        text(self.0, name)
            .map(str::to_owned)
            .or_else(|| number(self.0, name).map(|n| n.to_string()))
    }
}
