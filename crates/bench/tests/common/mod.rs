//! Skip rules of the bench's root tests: the pattern of `crates/hostd/tests/common/mod.rs`
//! (a loud `SKIPPED:` line, and a failure instead when `CI` is set).
#![allow(dead_code)]

use std::io::Write as _;

/// The effective uid of this process (from `/proc/self/status`), if it can be read.
fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    // `Uid:	real	effective	saved	fs`
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Why this process cannot run a root-only test (`needs` says what root is for), if it cannot.
pub fn missing_root(needs: &str) -> Option<String> {
    match effective_uid() {
        Some(0) => None,
        Some(uid) => Some(format!("needs root ({needs}; effective uid {uid})")),
        None => Some(format!("needs root ({needs}; effective uid unknown)")),
    }
}

/// Whether `test` must be skipped because of `missing`: prints a loud `SKIPPED: ...` line and
/// returns `true` then, so that the test returns and passes. Panics instead when `CI` is set:
/// CI runs these tests for real and fails if they were skipped.
pub fn skip(test: &str, missing: Option<String>) -> bool {
    let Some(why) = missing else {
        return false;
    };
    let msg = format!("SKIPPED: {why} [{test}]");
    // Straight to the process's stderr: `eprintln!` would be captured, and a passing test's
    // capture is never shown.
    let _ = writeln!(std::io::stderr(), "\n!!!!!!!! {msg} !!!!!!!!\n");
    assert!(
        std::env::var_os("CI").is_none(),
        "{msg}: CI is set, root tests must not be skipped"
    );
    true
}
