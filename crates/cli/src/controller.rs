//! `srmig controller`'s hypervisor flags: which [`HypervisorDriver`] the daemon runs.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use srmig_api::HostId;
use srmig_controller::{
    CommandLauncher, External, HypervisorDriver, Qmp, QmpEndpoints, QmpSettings,
    DEFAULT_HOOK_TIMEOUT,
};
use srmig_qmp::MigrationParameters;

/// Who moves the VMs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum HypervisorKind {
    /// An outside party (the lab, or an operator) moves the VM and posts the outcome.
    External,
    /// The controller drives QEMU over QMP (docs/qemu.md).
    Qmp,
}

#[derive(Debug, clap::Args)]
pub(crate) struct HypervisorArgs {
    /// Who moves VMs: `external` (the outcome is posted to POST /v1/migrations/{id}/hypervisor)
    /// or `qmp` (the controller drives QEMU over QMP; needs --qmp-endpoint and
    /// --qemu-launcher; see docs/qemu.md).
    #[arg(long, value_enum, default_value_t = HypervisorKind::External)]
    hypervisor: HypervisorKind,
    /// qmp: where the driver's QMP socket of a VM's QEMU on HOST is, as HOST=PATH; `{vm}` in
    /// PATH stands for the VM's name (h1=/run/srmig/qemu/{vm}.qmp). Once per host, at least
    /// once. Unix sockets on this machine: forward remote QEMUs' sockets here.
    #[arg(long = "qmp-endpoint", value_name = "HOST=PATH", value_parser = parse_endpoint)]
    qmp_endpoints: Vec<(HostId, String)>,
    /// qmp: the hook program that starts and stops destination QEMUs: `PROGRAM start VM HOST`
    /// prints {"incoming":URI[,"qmp":PATH][,"handle":N]}; `PROGRAM stop VM HOST HANDLE`.
    #[arg(long, value_name = "PROGRAM")]
    qemu_launcher: Option<PathBuf>,
    /// qmp: how long one run of the hook may take before it is killed, in milliseconds
    /// [default: 60000].
    #[arg(long, value_name = "MS")]
    qemu_launcher_timeout_ms: Option<u64>,
    /// qmp: the longest a QEMU migration may run before the driver cancels it, in
    /// milliseconds [default: 300000].
    #[arg(long, value_name = "MS")]
    qmp_migration_timeout_ms: Option<u64>,
    /// qmp: QEMU's migration bandwidth cap (max-bandwidth), in bytes per second [default:
    /// QEMU's].
    #[arg(long, value_name = "BYTES")]
    qmp_max_bandwidth: Option<u64>,
    /// qmp: the source QEMU pauses before the switchover (`pause-before-switchover`) so the
    /// source host's srmigd takes back exactly the frames the guest did not get; the driver
    /// continues it itself after this many milliseconds if no srmigd did. 0: no pause
    /// (srmigd's older take-back, which may send a frame twice) [default: 500].
    #[arg(long, value_name = "MS")]
    qmp_switchover_wait_ms: Option<u64>,
}

fn parse_endpoint(arg: &str) -> Result<(HostId, String), srmig_controller::EndpointError> {
    QmpEndpoints::parse_arg(arg)
}

impl HypervisorArgs {
    /// The driver these flags ask for.
    pub(crate) fn driver(self) -> Result<Arc<dyn HypervisorDriver>> {
        if self.hypervisor == HypervisorKind::External {
            let qmp_only = [
                ("--qmp-endpoint", !self.qmp_endpoints.is_empty()),
                ("--qemu-launcher", self.qemu_launcher.is_some()),
                (
                    "--qemu-launcher-timeout-ms",
                    self.qemu_launcher_timeout_ms.is_some(),
                ),
                (
                    "--qmp-migration-timeout-ms",
                    self.qmp_migration_timeout_ms.is_some(),
                ),
                ("--qmp-max-bandwidth", self.qmp_max_bandwidth.is_some()),
                (
                    "--qmp-switchover-wait-ms",
                    self.qmp_switchover_wait_ms.is_some(),
                ),
            ];
            if let Some((flag, _)) = qmp_only.iter().find(|(_, given)| *given) {
                bail!("{flag} needs --hypervisor qmp");
            }
            return Ok(Arc::new(External));
        }
        if self.qmp_endpoints.is_empty() {
            bail!(
                "--hypervisor qmp needs --qmp-endpoint HOST=PATH for every host \
                 (e.g. --qmp-endpoint h1=/run/srmig/qemu/{{vm}}.qmp)"
            );
        }
        let Some(program) = self.qemu_launcher else {
            bail!("--hypervisor qmp needs --qemu-launcher PROGRAM, the hook that starts and stops destination QEMUs");
        };
        let program = check_program(program)?;
        let mut endpoints = QmpEndpoints::new();
        for (host, template) in self.qmp_endpoints {
            endpoints.insert(host, template).context("--qmp-endpoint")?;
        }
        let timeout = self
            .qemu_launcher_timeout_ms
            .map_or(DEFAULT_HOOK_TIMEOUT, Duration::from_millis);
        let launcher = CommandLauncher::new(program, endpoints.clone()).with_timeout(timeout);
        let mut settings = QmpSettings::default();
        if let Some(ms) = self.qmp_migration_timeout_ms {
            settings.migration_timeout = Duration::from_millis(ms);
        }
        if let Some(ms) = self.qmp_switchover_wait_ms {
            settings.switchover_wait = (ms > 0).then(|| Duration::from_millis(ms));
        }
        if let Some(bytes) = self.qmp_max_bandwidth {
            settings.parameters = Some(MigrationParameters {
                max_bandwidth: Some(bytes),
                ..MigrationParameters::default()
            });
        }
        Ok(Arc::new(
            Qmp::new(Arc::new(launcher), settings).with_endpoints(endpoints),
        ))
    }
}

/// A hook given as a path must be an executable file (a bare name is looked up in PATH when
/// it runs).
fn check_program(program: PathBuf) -> Result<PathBuf> {
    if program.components().count() == 1 {
        return Ok(program);
    }
    let path = std::fs::canonicalize(&program)
        .with_context(|| format!("--qemu-launcher {}", program.display()))?;
    let meta = std::fs::metadata(&path)
        .with_context(|| format!("--qemu-launcher {}", program.display()))?;
    if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
        bail!(
            "--qemu-launcher {}: not an executable file",
            program.display()
        );
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Args {
        #[command(flatten)]
        hypervisor: HypervisorArgs,
    }

    fn driver(args: &[&str]) -> Result<Arc<dyn HypervisorDriver>> {
        let a = Args::try_parse_from(std::iter::once("controller").chain(args.iter().copied()))?;
        a.hypervisor.driver()
    }

    fn err(args: &[&str]) -> String {
        match driver(args) {
            Ok(d) => panic!("{args:?} gave {d:?}"),
            Err(e) => format!("{e:#}"),
        }
    }

    #[test]
    fn external_is_the_default_and_refuses_qmp_flags() {
        assert_eq!(driver(&[]).expect("default").name(), "external");
        assert_eq!(
            err(&["--qmp-endpoint", "h1=/run/{vm}.qmp"]),
            "--qmp-endpoint needs --hypervisor qmp"
        );
        assert_eq!(
            err(&["--hypervisor", "external", "--qmp-max-bandwidth", "1000"]),
            "--qmp-max-bandwidth needs --hypervisor qmp"
        );
    }

    #[test]
    fn qmp_needs_endpoints_and_a_launcher() {
        assert!(
            err(&["--hypervisor", "qmp", "--qemu-launcher", "/bin/true"])
                .contains("needs --qmp-endpoint HOST=PATH")
        );
        assert!(
            err(&["--hypervisor", "qmp", "--qmp-endpoint", "h1=/q/{vm}"])
                .contains("needs --qemu-launcher PROGRAM")
        );
        let e = err(&[
            "--hypervisor",
            "qmp",
            "--qmp-endpoint",
            "h1=/q/{vm}",
            "--qemu-launcher",
            "/nonexistent/hook",
        ]);
        assert!(e.starts_with("--qemu-launcher /nonexistent/hook: "), "{e}");
        let dir = tempfile::tempdir().expect("tempdir");
        let plain = dir.path().join("hook");
        std::fs::write(&plain, "#!/bin/sh\n").expect("write");
        std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let plain = plain.display().to_string();
        let e = err(&[
            "--hypervisor",
            "qmp",
            "--qmp-endpoint",
            "h1=/q/{vm}",
            "--qemu-launcher",
            &plain,
        ]);
        assert!(e.contains("not an executable file"), "{e}");
    }

    #[test]
    fn qmp_endpoint_arguments_are_checked() {
        let base = ["--hypervisor", "qmp", "--qemu-launcher", "/bin/true"];
        let with = |extra: &[&str]| {
            let mut v = base.to_vec();
            v.extend_from_slice(extra);
            err(&v)
        };
        let e = with(&["--qmp-endpoint", "h1"]);
        assert!(e.contains("`h1`: expected HOST=PATH"), "{e}");
        let e = with(&["--qmp-endpoint", "h/1=/q.qmp"]);
        assert!(
            e.contains("`h/1=/q.qmp`: bad host name: name contains '/'"),
            "{e}"
        );
        let e = with(&["--qmp-endpoint", "h1=q/{vm}.qmp"]);
        assert!(e.contains("is not an absolute path"), "{e}");
        let e = with(&["--qmp-endpoint", "h1=/q/{name}.qmp"]);
        assert!(e.contains("only {vm} may stand in braces"), "{e}");
        let e = with(&[
            "--qmp-endpoint",
            "h1=/a/{vm}",
            "--qmp-endpoint",
            "h1=/b/{vm}",
        ]);
        assert_eq!(
            e,
            "--qmp-endpoint: host h1 is given two QMP endpoints: `/a/{vm}` and `/b/{vm}`"
        );
    }

    #[test]
    fn qmp_with_everything_builds_the_driver() {
        let d = driver(&[
            "--hypervisor",
            "qmp",
            "--qmp-endpoint",
            "h1=/run/srmig/qemu/{vm}.qmp",
            "--qmp-endpoint",
            "h2=/run/srmig/h2/{vm}.qmp",
            "--qemu-launcher",
            "true",
            "--qemu-launcher-timeout-ms",
            "5000",
            "--qmp-migration-timeout-ms",
            "90000",
            "--qmp-max-bandwidth",
            "1048576",
            "--qmp-switchover-wait-ms",
            "250",
        ])
        .expect("driver");
        assert_eq!(d.name(), "qmp");
    }
}
