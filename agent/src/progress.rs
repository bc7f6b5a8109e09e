//! Progress reporting: per-layer bars on a terminal, log lines (tracing) otherwise, and for
//! the daemon an observer that gets one overall figure (percent, message, nesting depth — the
//! shape of RAUC's `Progress` property).

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Receives the overall progress of an operation; percent never goes down.
pub trait ProgressObserver: Send + Sync {
    fn update(&self, percent: u8, message: &str, depth: u32);
}

/// Where the download phase sits in the overall percentage: resolving and verifying come
/// before it, staging after it.
const DOWNLOAD_START: u64 = 10;
const DOWNLOAD_END: u64 = 90;

#[derive(Default)]
struct Overall {
    /// Per layer: (total, done) bytes.
    layers: Vec<(u64, u64)>,
    percent: u8,
}

pub struct Progress {
    multi: Option<MultiProgress>,
    observer: Option<Arc<dyn ProgressObserver>>,
    overall: Arc<Mutex<Overall>>,
}

impl Progress {
    /// Bars when stderr is a terminal and the caller did not ask for machine output.
    pub fn new(bars: bool) -> Self {
        let multi = (bars && std::io::stderr().is_terminal())
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        Self {
            multi,
            observer: None,
            overall: Arc::default(),
        }
    }

    /// No bars: every change goes to `observer` (and to the log).
    pub fn observed(observer: Arc<dyn ProgressObserver>) -> Self {
        Self {
            multi: None,
            observer: Some(observer),
            overall: Arc::default(),
        }
    }

    /// A phase of the operation begins (`resolving`, `downloading`, `staging`).
    pub fn step(&self, message: &str) {
        let floor = match message {
            "resolving" => 2,
            "downloading" => DOWNLOAD_START as u8,
            "staging" => DOWNLOAD_END as u8,
            _ => 0,
        };
        if self.multi.is_none() {
            tracing::info!("{message}");
        }
        self.report(
            |o| {
                o.percent = o.percent.max(floor);
            },
            message,
            1,
        );
    }

    fn report(&self, change: impl FnOnce(&mut Overall), message: &str, depth: u32) {
        let Some(observer) = &self.observer else {
            return;
        };
        let percent = match self.overall.lock() {
            Ok(mut o) => {
                change(&mut o);
                o.percent
            }
            // A panicked reporter thread only loses progress figures, never data.
            Err(_) => return,
        };
        observer.update(percent, message, depth);
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
        let index = match self.overall.lock() {
            Ok(mut o) => {
                o.layers.push((total, 0));
                o.layers.len() - 1
            }
            Err(_) => usize::MAX,
        };
        LayerProgress {
            bar,
            name: name.to_string(),
            total,
            logged_quarter: AtomicU64::new(0),
            index,
            observer: self.observer.clone().map(|o| (o, self.overall.clone())),
        }
    }
}

pub struct LayerProgress {
    bar: Option<ProgressBar>,
    name: String,
    total: u64,
    logged_quarter: AtomicU64,
    index: usize,
    observer: Option<Shared>,
}

/// The daemon's observer and the figures all layers add to.
type Shared = (Arc<dyn ProgressObserver>, Arc<Mutex<Overall>>);

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
        self.observe(done, "downloading");
    }

    /// Folds this layer's bytes into the overall percentage; the observer hears only of a
    /// changed figure, so a fast download does not flood the bus.
    fn observe(&self, done: u64, message: &str) {
        let Some((observer, overall)) = &self.observer else {
            return;
        };
        let Ok(mut o) = overall.lock() else {
            return;
        };
        if let Some(entry) = o.layers.get_mut(self.index) {
            entry.1 = done.min(entry.0);
        }
        let (total, got) = o
            .layers
            .iter()
            .fold((0u64, 0u64), |(t, d), (lt, ld)| (t + lt, d + ld));
        let span = DOWNLOAD_END - DOWNLOAD_START;
        let figure = DOWNLOAD_START + (got * span).checked_div(total).unwrap_or(span);
        let figure = u8::try_from(figure).unwrap_or(100);
        if figure > o.percent {
            o.percent = figure;
            drop(o);
            observer.update(figure, &format!("{message} {}", self.name), 2);
        }
    }

    pub fn message(&self, msg: &str) {
        match &self.bar {
            Some(bar) => bar.set_message(msg.to_string()),
            None => tracing::info!(layer = %self.name, "{msg}"),
        }
        if let Some((observer, overall)) = &self.observer
            && let Ok(o) = overall.lock()
        {
            let percent = o.percent;
            drop(o);
            observer.update(percent, &format!("{msg} {}", self.name), 2);
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
        self.observe(self.total, msg);
    }
}
