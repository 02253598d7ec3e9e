//! Helpers shared by the lab's end-to-end tests (`mod common;` in each test file).
#![allow(dead_code)]

use std::time::Duration;

use srmig_api::Strategy;
use srmig_lab::orchestrate::fault::{Fault, FaultPlan};
use srmig_lab::orchestrate::{LabRun, MigrationTiming, RunPlan, WorkloadKind};

/// `migrations` sr-buffer migrations under `workloads` with the netns tests' timing (pre-copy
/// 300 ms, pause 175 ms, 750 ms between migrations).
pub fn sr_buffer_plan(workloads: Vec<WorkloadKind>, migrations: u32) -> RunPlan {
    let mut plan = RunPlan::new(Strategy::SrBuffer, workloads, migrations);
    plan.timing = MigrationTiming {
        precopy: Duration::from_millis(300),
        downtime: Duration::from_millis(175),
    };
    plan.gap = Duration::from_millis(750);
    plan.warmup = Duration::from_millis(700);
    plan.tail = Duration::from_millis(900);
    plan
}

/// One sr-buffer migration under the 1 ms probe with `faults` injected (down 500 ms for
/// `kill-*`): the plan of the fault tests.
pub fn fault_run_plan(faults: Vec<Fault>) -> RunPlan {
    let mut plan = sr_buffer_plan(vec![WorkloadKind::Probe], 1);
    plan.faults = FaultPlan {
        faults,
        down: Duration::from_millis(500),
    };
    plan
}

/// Prints a run's summary and one line per migration (shown on failure, or with
/// `--nocapture`).
pub fn show(name: &str, run: &LabRun) {
    eprintln!("--- {name}\n{}", run.summary());
    for m in &run.details.migrations {
        let r = &m.record;
        eprintln!(
            "    {} {} -> {}: pause {:.1} ms, total {:.0} ms (prepare {:.0}, finish {:.0}), held {} released {} dropped {}",
            r.id, r.from, r.to, r.pause_ms, r.total_ms, r.prepare_ms, r.finish_ms, r.held, r.released, r.dropped
        );
        eprintln!(
            "      at {:.1} ms: cut {:.1}, attached {:.1}, completed {:.1}; fenced {}; phases (ms after the request) {:?}",
            r.requested_at_ms, r.cut_at_ms, r.attached_at_ms, r.completed_at_ms, r.fenced, r.phases
        );
    }
}

/// `pid: command line` of every process whose command line mentions `needle` (srmigd,
/// QEMU, ...).
pub fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        if let Ok(bytes) = std::fs::read(entry.path().join("cmdline")) {
            let text = String::from_utf8_lossy(&bytes).replace('\0', " ");
            if text.contains(needle) {
                found.push(format!("{}: {text}", entry.file_name().to_string_lossy()));
            }
        }
    }
    found
}

/// The network namespaces whose names start with `prefix` (a lab run's: none should be left
/// after its teardown).
pub fn namespaces_with_prefix(prefix: &str) -> Vec<String> {
    std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with(prefix))
        .map(str::to_owned)
        .collect()
}

/// Whether this runs as root; otherwise prints `SKIPPED: needs root (...)` and says no, or
/// fails when `CI` is set (CI must not skip the root-only tests).
pub fn have_root() -> bool {
    if srmig_lab::orchestrate::is_root() {
        return true;
    }
    eprintln!("SKIPPED: needs root (network namespaces, veth pairs, AF_PACKET for srmigd)");
    assert!(
        std::env::var_os("CI").is_none(),
        "CI is set: the root-only lab test must not be skipped"
    );
    false
}

/// Prints `SKIPPED: why` and returns true (the test then returns), unless `CI` is set: there,
/// a lab test that cannot run fails.
pub fn skip(test: &str, why: &str) -> bool {
    eprintln!("SKIPPED: {why}");
    assert!(
        std::env::var_os("CI").is_none(),
        "CI is set: the {test} test must not be skipped ({why})"
    );
    true
}

/// Why a VM lab test cannot run here: not root, or one of `tools` (and the guest build's)
/// missing; `None` if it can.
pub fn missing_vm_prerequisite(tools: &[&str]) -> Option<String> {
    if !srmig_lab::orchestrate::is_root() {
        return Some("needs root (network namespaces, veth pairs, AF_PACKET for srmigd)".into());
    }
    let guest = ["qemu-system-x86_64", "busybox", "gcc", "cpio"];
    for tool in guest.iter().chain(tools) {
        let found = std::process::Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            return Some(format!(
                "{tool} not found (see guest/README.md and scripts/setup.sh)"
            ));
        }
    }
    None
}

/// A VM lab run of `migrations` under the 1 ms probe, with the QEMU labs' spacing.
pub fn vm_plan(kind: srmig_lab::report::VmKind, strategy: Strategy, migrations: u32) -> RunPlan {
    let mut plan = RunPlan::new(strategy, vec![WorkloadKind::Probe], migrations);
    plan.vm_kind = kind;
    plan.gap = Duration::from_millis(500);
    plan.warmup = Duration::from_millis(700);
    plan.tail = Duration::from_millis(1000);
    plan
}
