//! Progress reporting: per-layer bars on a terminal, log lines (tracing) otherwise.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

pub struct Progress {
    multi: Option<MultiProgress>,
}

impl Progress {
    /// Bars when stderr is a terminal and the caller did not ask for machine output.
    pub fn new(bars: bool) -> Self {
        let multi = (bars && std::io::stderr().is_terminal())
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        Self { multi }
    }

    pub fn layer(&self, name: &str, total: u64) -> LayerProgress {
        let bar = self.multi.as_ref().map(|m| {
            let bar = m.add(ProgressBar::new(total));
            // The template is a constant known to be valid; fall back to the default style.
            let style = ProgressStyle::with_template(
                "{prefix:>14} [{bar:30}] {bytes:>10}/{total_bytes:<10} {msg}",
            )
            .map(|s| s.progress_chars("=> "))
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar.set_prefix(name.to_string());
            bar
        });
        LayerProgress {
            bar,
            name: name.to_string(),
            total,
            logged_quarter: AtomicU64::new(0),
        }
    }
}

pub struct LayerProgress {
    bar: Option<ProgressBar>,
    name: String,
    total: u64,
    logged_quarter: AtomicU64,
}

impl LayerProgress {
    pub fn set(&self, done: u64) {
        match &self.bar {
            Some(bar) => bar.set_position(done),
            None if self.total > 0 => {
                let quarter = done * 4 / self.total;
                if quarter > self.logged_quarter.fetch_max(quarter, Ordering::Relaxed) {
                    tracing::info!(layer = %self.name, done, total = self.total, "downloading");
                }
            }
            None => {}
        }
    }

    pub fn message(&self, msg: &str) {
        match &self.bar {
            Some(bar) => bar.set_message(msg.to_string()),
            None => tracing::info!(layer = %self.name, "{msg}"),
        }
    }

    pub fn finish(&self, msg: &str) {
        match &self.bar {
            Some(bar) => {
                bar.set_position(self.total);
                bar.finish_with_message(msg.to_string());
            }
            None => tracing::info!(layer = %self.name, "{msg}"),
        }
    }
}
