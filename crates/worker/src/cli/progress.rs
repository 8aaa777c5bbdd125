//! A terminal progress bar fed by engine events.

use std::sync::atomic::{AtomicU64, Ordering};

use ferry_engine::{Observer, Progress};
use indicatif::{ProgressBar, ProgressStyle};

/// Shows bytes received from the source; the bar's length is the source
/// length once known.
pub struct BarObserver {
    bar: ProgressBar,
    downloaded: AtomicU64,
}

impl BarObserver {
    pub fn new(hidden: bool) -> Self {
        let bar = if hidden {
            ProgressBar::hidden()
        } else {
            ProgressBar::new_spinner()
        };
        Self {
            bar,
            downloaded: AtomicU64::new(0),
        }
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }

    pub fn bar(&self) -> &ProgressBar {
        &self.bar
    }
}

pub fn style_for(total: Option<u64>) -> ProgressStyle {
    let template = match total {
        Some(_) => {
            "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}"
        }
        None => "{spinner} [{elapsed_precise}] {bytes} {bytes_per_sec}",
    };
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar())
}

impl Observer for BarObserver {
    fn on_start(&self, bytes_total: Option<u64>) {
        if let Some(total) = bytes_total {
            self.bar.set_length(total);
        }
        self.bar.set_style(style_for(bytes_total));
    }

    fn on_downloaded(&self, bytes: u64) {
        let done = self.downloaded.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.bar.set_position(done);
    }

    fn on_progress(&self, _progress: Progress) {}
}
