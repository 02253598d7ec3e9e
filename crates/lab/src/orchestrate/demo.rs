//! `srmig demo`: a short version of the paper's experiment on the netns lab. One testbed;
//! a no-migration baseline, then traditional, SR with End.SBUF dropping and SR with End.SBUF
//! buffering, each during a few migrations; one report per configuration and a table in the
//! shape of the paper's.

use std::path::PathBuf;
use std::time::Duration;

use srmig_api::Strategy;

use super::error::OrchestrateError;
use super::run::{run, LabRun, RunPlan, WorkloadKind};
use super::testbed::{Testbed, TestbedOptions};

/// Demo settings.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Where the reports go (`<out>/<configuration>.json`).
    pub out: PathBuf,
    /// Migrations per strategy and workload.
    pub migrations: u32,
    /// Workloads.
    pub workloads: Vec<WorkloadKind>,
    /// The controller's push delay (the slow mapping update that hurts `traditional`).
    pub propagation_delay: Duration,
    /// Baseline duration.
    pub baseline: Duration,
    /// Testbed options (binary directory, logs); `propagation_delay` above wins.
    pub testbed: TestbedOptions,
}

impl DemoOptions {
    /// 2 migrations per strategy, probe and HTTP workloads, 100 ms mapping propagation delay,
    /// 3 s baseline.
    pub fn new(out: PathBuf) -> DemoOptions {
        DemoOptions {
            out,
            migrations: 2,
            workloads: vec![WorkloadKind::Probe, WorkloadKind::Http],
            propagation_delay: Duration::from_millis(100),
            baseline: Duration::from_secs(3),
            testbed: TestbedOptions::default(),
        }
    }
}

/// One configuration's result.
#[derive(Debug, Clone)]
pub struct DemoRun {
    /// `no migration`, `traditional`, `sr-drop`, `sr-buffer`.
    pub name: &'static str,
    /// The run.
    pub run: LabRun,
    /// Its report file.
    pub report: PathBuf,
}

/// Runs the demo; `progress` is called with a line before each configuration.
pub fn run_demo(
    options: &DemoOptions,
    mut progress: impl FnMut(&str),
) -> Result<Vec<DemoRun>, OrchestrateError> {
    let mut testbed_options = options.testbed.clone();
    testbed_options.propagation_delay = options.propagation_delay;
    progress(match testbed_options.vm_kind {
        crate::report::VmKind::Netns => {
            "building the lab: router, hosts c/s/d with srmigd, client and vm1, controller"
        }
        crate::report::VmKind::Qemu => {
            "building the lab: router, hosts c/s/d with srmigd, client, controller with the \
             QMP driver, and booting vm1 (QEMU, TCG) on s"
        }
        crate::report::VmKind::Libvirt => {
            "building the lab: router, hosts c/s/d with srmigd, client, controller, a libvirtd \
             per host with srmig's hook, and booting vm1 (libvirt domain, TCG) on s"
        }
        crate::report::VmKind::Sim => "the simulator's VMs run in `srmig sim`, not in a lab",
    });
    let mut testbed = Testbed::build(&testbed_options)?;
    let mut runs = Vec::new();
    let configs: [(&'static str, Strategy, u32); 4] = [
        ("no migration", Strategy::SrBuffer, 0),
        ("traditional", Strategy::Traditional, options.migrations),
        ("sr-drop", Strategy::SrDrop, options.migrations),
        ("sr-buffer", Strategy::SrBuffer, options.migrations),
    ];
    let mut baseline_rtt = None;
    for (name, strategy, migrations) in configs {
        let mut plan = RunPlan::new(strategy, options.workloads.clone(), migrations);
        plan.baseline = options.baseline;
        plan.probe_baseline_ms = baseline_rtt;
        plan.vm_kind = testbed.vm_kind();
        progress(&format!(
            "{name}: {}",
            if migrations == 0 {
                format!("{} ms without migration", options.baseline.as_millis())
            } else {
                format!("{migrations} migrations per workload")
            }
        ));
        let result = run(&mut testbed, &plan).map_err(|e| {
            testbed.keep_work_dir();
            OrchestrateError::LogsKept {
                dir: testbed.dir().to_owned(),
                inner: Box::new(e),
            }
        })?;
        if migrations == 0 {
            baseline_rtt = result.report.probe.as_ref().map(|p| p.median_rtt_ms);
        }
        let path = options.out.join(format!("{}.json", name.replace(' ', "-")));
        result.write(&path)?;
        runs.push(DemoRun {
            name,
            run: result,
            report: path,
        });
    }
    testbed.teardown()?;
    Ok(runs)
}

/// The reports of a demo as `(configuration, report)` pairs, in table order.
pub fn named_reports(runs: &[DemoRun]) -> Vec<(&'static str, &crate::report::Report)> {
    runs.iter().map(|r| (r.name, &r.run.report)).collect()
}

/// The paper's table for these runs (plain text).
pub fn table(runs: &[DemoRun]) -> String {
    crate::paper::paper_table(&named_reports(runs))
}

/// Writes the plots and `paper.md` (the table in Markdown) into `dir`; returns the files.
pub fn write_outputs(
    dir: &std::path::Path,
    runs: &[DemoRun],
) -> Result<Vec<PathBuf>, OrchestrateError> {
    let named = named_reports(runs);
    let mut files = crate::paper::write_plots(dir, &named).map_err(OrchestrateError::Paper)?;
    let md = dir.join("paper.md");
    std::fs::write(&md, crate::paper::paper_markdown(&named)).map_err(|source| {
        OrchestrateError::File {
            action: "writing the table",
            path: md.clone(),
            source,
        }
    })?;
    files.push(md);
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_defaults_are_short() {
        let o = DemoOptions::new(PathBuf::from("out"));
        assert_eq!(o.migrations, 2);
        assert_eq!(o.workloads, [WorkloadKind::Probe, WorkloadKind::Http]);
        assert!(table(&[]).lines().count() >= 2);
    }
}
