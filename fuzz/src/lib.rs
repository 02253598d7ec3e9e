//! Shared code of the srmig fuzz targets and their tools (seed generator, coverage report).
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod control_ops;
pub mod dataplane_ops;

/// A scratch directory `<temp>/<prefix>-<pid>` for a fuzz target that needs files, created
/// on first use and removed when the process exits (libFuzzer ends a run with `exit`, so no
/// destructor would run: an `atexit` handler does it). Directories that earlier runs of the
/// same target left behind (their process is gone: killed, or crashed) are removed too.
///
/// `<temp>` is `/dev/shm` where it is a directory (a tmpfs on Linux), else the system's
/// temporary directory: writing, truncating and closing a file on ext4 for every input took
/// more than half of `replay_pcap`'s time.
pub fn scratch_dir(prefix: &'static str) -> &'static std::path::Path {
    use std::sync::OnceLock;
    static DIR: OnceLock<std::path::PathBuf> = OnceLock::new();
    extern "C" fn remove_at_exit() {
        if let Some(d) = DIR.get() {
            let _ = std::fs::remove_dir_all(d);
        }
    }
    DIR.get_or_init(|| {
        let shm = std::path::Path::new("/dev/shm");
        let temp = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        if let Ok(entries) = std::fs::read_dir(&temp) {
            for e in entries.flatten() {
                let name = e.file_name();
                let Some(pid) = name
                    .to_str()
                    .and_then(|n| n.strip_prefix(prefix))
                    .and_then(|n| n.strip_prefix('-'))
                    .and_then(|n| n.parse::<u32>().ok())
                else {
                    continue;
                };
                if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        let dir = temp.join(format!("{prefix}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch directory");
        // SAFETY: `remove_at_exit` is a plain `extern "C" fn()` that only reads a `OnceLock`
        // (set before the registration) and removes files; registering it has no other effect.
        unsafe {
            atexit(remove_at_exit);
        }
        dir
    })
}

extern "C" {
    fn atexit(f: extern "C" fn()) -> std::os::raw::c_int;
}
