//! A progress bar on stderr, only when stderr is a terminal (never in CI logs or pipes).

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use tokio::task::JoinHandle;

/// A running progress bar fed from a counter.
pub struct Progress {
    counter: Arc<AtomicU64>,
    bar: ProgressBar,
    ticker: JoinHandle<()>,
}

impl Progress {
    /// Runs `work` with a progress line (when stderr is a terminal), given the counter it
    /// should bump per finished unit, and clears the line when it ends.
    pub async fn around<T, F>(
        total: Option<u64>,
        what: &str,
        work: impl FnOnce(Option<Arc<AtomicU64>>) -> F,
    ) -> T
    where
        F: Future<Output = T>,
    {
        let progress = Self::start(total, what);
        let done = work(progress.as_ref().map(Self::counter)).await;
        if let Some(progress) = progress {
            progress.finish();
        }
        done
    }

    /// Starts a bar when stderr is a terminal; `total` is the expected count, when known.
    pub fn start(total: Option<u64>, what: &str) -> Option<Self> {
        if !std::io::stderr().is_terminal() {
            return None;
        }
        let bar = match total {
            Some(total) => ProgressBar::new(total),
            None => ProgressBar::new_spinner(),
        };
        let template = if total.is_some() {
            "{spinner} {elapsed_precise} [{bar:40}] {pos}/{len} {msg} ({per_sec})"
        } else {
            "{spinner} {elapsed_precise} {pos} {msg} ({per_sec})"
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(what.to_owned());
        let counter = Arc::new(AtomicU64::new(0));
        let ticker = tokio::spawn({
            let counter = Arc::clone(&counter);
            let bar = bar.clone();
            async move {
                loop {
                    bar.set_position(counter.load(Ordering::Relaxed));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        });
        Some(Self {
            counter,
            bar,
            ticker,
        })
    }

    /// The counter the run bumps.
    pub fn counter(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.counter)
    }

    /// Removes the bar.
    pub fn finish(self) {
        self.ticker.abort();
        self.bar.finish_and_clear();
    }
}
