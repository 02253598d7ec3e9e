//! The on-disk registry of what each lab run created, and cleanup of dead runs.
//!
//! Every [`Lab`](crate::Lab) keeps `/run/srmig-lab/<runid>.json` up to date (written to a
//! temporary file and renamed, so a reader never sees half a record). If the process dies
//! without running its teardown (SIGKILL, `panic = "abort"`, power loss of the test runner),
//! [`cleanup_stale`] finds records whose owner process is gone and removes what they list.
//! Process identity is a pid *and* its start time (field 22 of `/proc/PID/stat`), so a
//! recycled pid is never mistaken for the owner, and a recycled child pid is never killed.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use crate::cmd;
use crate::error::LabError;
use crate::netns::Netns;

/// Default registry directory.
pub const REGISTRY_DIR: &str = "/run/srmig-lab";

/// A process identity that survives pid reuse: pid plus its start time in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessId {
    /// The process id.
    pub pid: u32,
    /// Start time since boot in clock ticks (`/proc/PID/stat` field 22), if it could be read.
    pub start_time: Option<u64>,
}

impl ProcessId {
    /// Identity of a live process, reading its start time now.
    pub fn of(pid: u32) -> ProcessId {
        ProcessId {
            pid,
            start_time: process_start_time(pid),
        }
    }

    /// Whether this exact process (same pid, same start time) is still alive.
    pub fn is_alive(&self) -> bool {
        match (process_start_time(self.pid), self.start_time) {
            (Some(now), Some(recorded)) => now == recorded,
            (Some(_), None) => true,
            (None, _) => false,
        }
    }
}

/// A link end created by a run: interface `ifname` currently in namespace `netns`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkRecord {
    /// Full namespace name.
    pub netns: String,
    /// Interface name inside it.
    pub ifname: String,
}

/// What one lab run created, as persisted in `<dir>/<runid>.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The run id (`srmig-<runid>-<name>` namespaces).
    pub run_id: String,
    /// The process that owns the run.
    pub owner: ProcessId,
    /// Full names of the namespaces created.
    pub namespaces: Vec<String>,
    /// Links created (one end each; the location is updated when an end moves).
    pub links: Vec<LinkRecord>,
    /// Child processes started inside namespaces and not yet reaped.
    pub children: Vec<ProcessId>,
}

impl RunRecord {
    /// An empty record for `run_id` owned by the current process.
    pub fn new(run_id: &str) -> RunRecord {
        RunRecord {
            run_id: run_id.to_owned(),
            owner: ProcessId::of(std::process::id()),
            namespaces: Vec::new(),
            links: Vec::new(),
            children: Vec::new(),
        }
    }

    /// The registry file of this record inside `dir`.
    pub fn path_in(&self, dir: &Path) -> PathBuf {
        dir.join(format!("{}.json", self.run_id))
    }

    /// Writes the record atomically (temporary file + rename).
    pub fn store(&self, dir: &Path) -> Result<(), LabError> {
        fs::create_dir_all(dir).map_err(|source| LabError::File {
            action: "creating",
            path: dir.to_owned(),
            source,
        })?;
        let path = self.path_in(dir);
        let tmp = dir.join(format!(".{}.json.tmp", self.run_id));
        let json = serde_json::to_vec_pretty(self).map_err(|source| LabError::RegistryFormat {
            path: path.clone(),
            source,
        })?;
        fs::write(&tmp, json).map_err(|source| LabError::File {
            action: "writing",
            path: tmp.clone(),
            source,
        })?;
        fs::rename(&tmp, &path).map_err(|source| LabError::File {
            action: "renaming into",
            path,
            source,
        })
    }

    /// Reads a record file.
    pub fn load(path: &Path) -> Result<RunRecord, LabError> {
        let bytes = fs::read(path).map_err(|source| LabError::File {
            action: "reading",
            path: path.to_owned(),
            source,
        })?;
        serde_json::from_slice(&bytes).map_err(|source| LabError::RegistryFormat {
            path: path.to_owned(),
            source,
        })
    }
}

/// Removes the registry file of `run_id` in `dir` (absent is fine).
pub(crate) fn remove(dir: &Path, run_id: &str) -> Result<(), LabError> {
    let path = dir.join(format!("{run_id}.json"));
    match fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(LabError::File {
            action: "removing",
            path,
            source,
        }),
    }
}

/// What [`cleanup_stale`] did.
#[derive(Debug, Default)]
pub struct StaleCleanup {
    /// Run ids whose leftovers were removed.
    pub runs: Vec<String>,
    /// Namespaces deleted.
    pub namespaces_deleted: usize,
    /// Child processes killed.
    pub children_killed: usize,
    /// Problems met on the way (cleanup continues past each).
    pub errors: Vec<LabError>,
}

/// Removes the leftovers (children, links, namespaces, record) of every dead run in
/// [`REGISTRY_DIR`]. Runs whose owner process is alive are left alone.
pub fn cleanup_stale() -> StaleCleanup {
    cleanup_stale_in(Path::new(REGISTRY_DIR))
}

/// [`cleanup_stale`] for a registry in `dir`.
pub fn cleanup_stale_in(dir: &Path) -> StaleCleanup {
    let mut report = StaleCleanup::default();
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return report,
        Err(source) => {
            report.errors.push(LabError::File {
                action: "listing",
                path: dir.to_owned(),
                source,
            });
            return report;
        }
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let record = match RunRecord::load(&path) {
            Ok(record) => record,
            Err(err) => {
                report.errors.push(err);
                continue;
            }
        };
        if record.owner.is_alive() {
            continue;
        }
        let errors_before = report.errors.len();
        report.children_killed += kill_children(&record.children);
        report.namespaces_deleted += destroy(&record, &mut report.errors);
        if report.errors.len() == errors_before {
            if let Err(err) = remove(dir, &record.run_id) {
                report.errors.push(err);
            }
        }
        report.runs.push(record.run_id);
    }
    report
}

/// SIGKILLs every recorded child that is still the same process; returns how many.
pub(crate) fn kill_children(children: &[ProcessId]) -> usize {
    let mut killed = 0;
    for child in children {
        if !child.is_alive() {
            continue;
        }
        let Ok(raw) = i32::try_from(child.pid) else {
            continue;
        };
        if kill(Pid::from_raw(raw), Signal::SIGKILL).is_ok() {
            killed += 1;
        }
    }
    killed
}

/// Deletes the links then the namespaces of a record; returns how many namespaces were deleted.
/// Already-absent objects are not errors.
pub(crate) fn destroy(record: &RunRecord, errors: &mut Vec<LabError>) -> usize {
    for link in &record.links {
        let ns = Netns::from_name(&link.netns);
        if !ns.exists() {
            continue;
        }
        if let Err(err) = delete_link(&ns, &link.ifname) {
            errors.push(err);
        }
    }
    let mut deleted = 0;
    for name in record.namespaces.iter().rev() {
        let ns = Netns::from_name(name);
        if !ns.exists() {
            continue;
        }
        // Processes the lab did not start itself but that live in its namespaces (QEMUs that
        // libvirtd daemonized) would keep a deleted namespace alive: end them first.
        kill_processes_in(name);
        match cmd::ip(&["netns", "del", name]) {
            Ok(_) => deleted += 1,
            Err(err) => errors.push(err),
        }
    }
    deleted
}

/// SIGKILLs every process in namespace `name` (`ip netns pids`) but this one, and waits up to
/// 2 s for them to be gone.
fn kill_processes_in(name: &str) {
    let Ok(out) = cmd::ip(&["netns", "pids", name]) else {
        return;
    };
    let me = std::process::id();
    let pids: Vec<i32> = out
        .split_whitespace()
        .filter_map(|p| p.parse::<u32>().ok())
        .filter(|&p| p != me)
        .filter_map(|p| i32::try_from(p).ok())
        .collect();
    for &pid in &pids {
        tracing::info!(
            pid,
            netns = name,
            "killing a process left in the lab's namespace"
        );
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while pids.iter().any(|&p| process_start_time(p as u32).is_some())
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// `ip -n NS link del IF`, treating "no such device" as success (the peer's deletion or the
/// namespace's may already have removed it).
fn delete_link(ns: &Netns, ifname: &str) -> Result<(), LabError> {
    let out = cmd::output("ip", &["-n", ns.name(), "link", "del", "dev", ifname])?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("Cannot find device") || stderr.contains("does not exist") {
        return Ok(());
    }
    Err(LabError::Command {
        command: cmd::render("ip", &["-n", ns.name(), "link", "del", "dev", ifname]),
        status: out.status.to_string(),
        stderr: stderr.trim().to_owned(),
    })
}

/// Start time of `pid` in clock ticks since boot, or `None` if there is no such process or
/// it is a zombie (dead, waiting to be reaped by a parent that may never do it).
pub(crate) fn process_start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_start_time(&stat)
}

/// Field 22 of a `/proc/PID/stat` line, `None` for zombies (state `Z` or `X`); the command
/// name (field 2) may contain spaces and parentheses, so parsing starts after the last `)`.
fn parse_start_time(stat: &str) -> Option<u64> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_comm.split_whitespace();
    // Fields after the command start at field 3 (state); field 22 is the 20th of them.
    if matches!(fields.next()?, "Z" | "X" | "x") {
        return None;
    }
    fields.nth(18)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_parses_despite_odd_command_names() {
        let stat = "1234 (a) b) c) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 987654 20 21";
        assert_eq!(parse_start_time(stat), Some(987_654));
        let zombie = stat.replace(" S ", " Z ");
        assert_eq!(parse_start_time(&zombie), None, "zombies are dead");
        assert_eq!(parse_start_time("garbage"), None);
        assert_eq!(parse_start_time("1 (x) S 1 2"), None);
    }

    #[test]
    fn own_process_is_alive_and_a_changed_start_time_is_not() {
        let me = ProcessId::of(std::process::id());
        assert!(me.start_time.is_some());
        assert!(me.is_alive());
        let recycled = ProcessId {
            pid: me.pid,
            start_time: me.start_time.map(|t| t + 1),
        };
        assert!(!recycled.is_alive());
        let gone = ProcessId {
            pid: u32::MAX - 1,
            start_time: None,
        };
        assert!(!gone.is_alive());
    }

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("srmig-lab-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn record_round_trips_through_the_file() {
        let dir = temp_dir("roundtrip");
        let mut record = RunRecord::new("abc123");
        record.namespaces.push("srmig-abc123-vm".into());
        record.links.push(LinkRecord {
            netns: "srmig-abc123-vm".into(),
            ifname: "eth0".into(),
        });
        record.store(&dir).expect("store");
        let loaded = RunRecord::load(&record.path_in(&dir)).expect("load");
        assert_eq!(loaded, record);
        remove(&dir, "abc123").expect("remove");
        remove(&dir, "abc123").expect("removing twice is fine");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn stale_cleanup_skips_live_owners_and_removes_dead_runs() {
        let dir = temp_dir("stale");
        let live = RunRecord::new("live1");
        live.store(&dir).expect("store live");
        let mut dead = RunRecord::new("dead1");
        dead.owner = ProcessId {
            pid: u32::MAX - 1,
            start_time: Some(1),
        };
        // Names that do not exist: cleanup must treat them as already gone.
        dead.namespaces.push("srmig-dead1-nonexistent".into());
        dead.store(&dir).expect("store dead");
        fs::write(dir.join("broken.json"), b"{not json").expect("write broken");

        let report = cleanup_stale_in(&dir);
        assert_eq!(report.runs, vec!["dead1".to_owned()]);
        assert_eq!(report.namespaces_deleted, 0);
        assert_eq!(report.errors.len(), 1, "{:?}", report.errors);
        assert!(live.path_in(&dir).exists());
        assert!(!dead.path_in(&dir).exists());
        let _ = fs::remove_dir_all(&dir);
    }
}
