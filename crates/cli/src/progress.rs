//! How `srmig lab migrate`, `lab paper` and `demo` show the lab's progress
//! ([`srmig_lab::orchestrate::Progress`]): on a terminal, a spinner on stderr with the latest
//! step and the elapsed time, milestones printed above it; otherwise (logs, CI, pipes) every
//! line on stderr with the seconds since the start. stdout keeps the results.

use std::io::IsTerminal as _;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use srmig_lab::orchestrate::Progress;

/// The display; [`finish`](Self::finish) it before printing results.
pub(crate) struct LabProgress {
    bar: Option<ProgressBar>,
    start: Instant,
}

impl LabProgress {
    /// A spinner if stderr is a terminal, plain lines otherwise.
    pub(crate) fn new() -> LabProgress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        LabProgress {
            bar,
            start: Instant::now(),
        }
    }

    /// The sink to give the lab.
    pub(crate) fn progress(&self) -> Progress {
        let start = self.start;
        match self.bar.clone() {
            Some(bar) => Progress::to(move |line| {
                if line.milestone {
                    bar.println(format!(
                        "[{:6.1} s] {}",
                        start.elapsed().as_secs_f64(),
                        line.text
                    ));
                }
                bar.set_message(line.text.to_owned());
            }),
            None => Progress::to(move |line| {
                eprintln!("[{:6.1} s] {}", start.elapsed().as_secs_f64(), line.text);
            }),
        }
    }

    /// Removes the spinner.
    pub(crate) fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Drop for LabProgress {
    fn drop(&mut self) {
        self.finish();
    }
}
