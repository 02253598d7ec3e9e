//! Progress of long lab work (building the lab and the guest, booting it, each workload, each
//! migration and its phases), for whoever shows it: `srmig lab migrate`, `lab paper` and
//! `demo` draw it as a spinner on a terminal and print plain lines otherwise. The lab only
//! emits lines; it never writes to the terminal itself.

use std::fmt;
use std::sync::Arc;

/// A receiver of progress lines.
type Sink = dyn Fn(ProgressLine<'_>) + Send + Sync;

/// Where progress lines go (nowhere by default). Cheap to clone.
#[derive(Clone, Default)]
pub struct Progress(Option<Arc<Sink>>);

/// One line of progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProgressLine<'a> {
    /// What happens.
    pub text: &'a str,
    /// A step worth a line of its own (a workload or migration started or ended, the lab
    /// built); `false` for the passing phases of a migration, which a spinner may just show.
    pub milestone: bool,
}

impl Progress {
    /// Progress lines go to `sink`.
    pub fn to(sink: impl Fn(ProgressLine<'_>) + Send + Sync + 'static) -> Progress {
        Progress(Some(Arc::new(sink)))
    }

    /// A milestone.
    pub fn step(&self, text: &str) {
        if let Some(sink) = &self.0 {
            sink(ProgressLine {
                text,
                milestone: true,
            });
        }
    }

    /// A passing detail (a migration's phase).
    pub fn detail(&self, text: &str) {
        if let Some(sink) = &self.0 {
            sink(ProgressLine {
                text,
                milestone: false,
            });
        }
    }
}

impl fmt::Debug for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "Progress(sink)"
        } else {
            "Progress(none)"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn lines_reach_the_sink_with_their_kind() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&seen);
        let p = Progress::to(move |l| {
            sink.lock()
                .expect("lock")
                .push((l.text.to_owned(), l.milestone))
        });
        p.step("lab built");
        p.clone().detail("m1: expect-path-acks");
        Progress::default().step("nowhere");
        assert_eq!(
            *seen.lock().expect("lock"),
            vec![
                ("lab built".to_owned(), true),
                ("m1: expect-path-acks".to_owned(), false)
            ]
        );
    }
}
