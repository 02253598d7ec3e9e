//! [`CommandLauncher`]: a [`QemuLauncher`] that runs an operator's hook program, as libvirt
//! runs its hooks (`srmig controller --hypervisor qmp --qemu-launcher PROGRAM`).
//!
//! The contract, which the hook's author implements:
//!
//! ```text
//! PROGRAM start VM HOST
//!     Start the destination QEMU of VM on HOST: the VM's machine, memory, devices and MAC,
//!     `-incoming defer`, its `-netdev stream` socket and srmigd's QMP socket where HOST's
//!     srmigd expects them, and a QMP socket for the driver. Exit 0 and print ONE JSON object
//!     on stdout:
//!         {"incoming":"tcp:[::1]:4444","qmp":"/path/to.qmp","handle":123}
//!     incoming  required: where the source sends the migration stream (`migrate-incoming`)
//!     qmp       optional: the driver's QMP socket of that QEMU (default: HOST's QMP endpoint
//!               for VM, `--qmp-endpoint`)
//!     handle    optional u64, given back to `stop` (e.g. the pid; default 0)
//!     No other field is accepted.
//! PROGRAM stop VM HOST HANDLE
//!     Stop that QEMU for good (kill if alive, reap, remove its files); idempotent; exit 0.
//!     HANDLE is 0 when unknown (a QEMU the controller found at its endpoint, or after a
//!     controller restart): stop VM's QEMU on HOST.
//! ```
//!
//! A hook that exits non-zero, prints anything but that object, or runs past the timeout
//! (60 s by default; it is then killed) fails the start with an error naming the command, the
//! exit status and the tail of its stderr; a failed `stop` is logged. stdin is `/dev/null`.
//! The hook's output is read until it exits and then for at most 200 ms more: a QEMU it starts
//! must not keep the hook's stdout or stderr (redirect them, or `-daemonize`). Only the hook
//! itself is killed at the timeout, not what it started.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;
use srmig_api::{HostId, VmId};

use crate::push::error_chain;
use crate::qmp_driver::{EndpointError, QemuInstance, QemuLauncher, QmpEndpoints};

/// How long a hook may run by default.
pub const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(60);

/// How long the hook's output is still read after it exited.
const OUTPUT_GRACE: Duration = Duration::from_millis(200);

/// The most of each output stream kept (the tail is what matters).
const OUTPUT_LIMIT: usize = 64 * 1024;

/// Runs an operator's hook program to start and stop QEMUs (see the module docs).
#[derive(Debug, Clone)]
pub struct CommandLauncher {
    program: PathBuf,
    endpoints: QmpEndpoints,
    timeout: Duration,
}

/// Why a hook run failed.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    /// The program could not be started.
    #[error("cannot run the QEMU hook `{command}`")]
    Spawn {
        /// The command line.
        command: String,
        /// Why.
        #[source]
        error: std::io::Error,
    },
    /// Waiting for the program failed.
    #[error("cannot wait for the QEMU hook `{command}`")]
    Wait {
        /// The command line.
        command: String,
        /// Why.
        #[source]
        error: std::io::Error,
    },
    /// The program exited unsuccessfully.
    #[error("the QEMU hook `{command}` failed ({status}){stderr}")]
    Failed {
        /// The command line.
        command: String,
        /// How it exited.
        status: ExitStatus,
        /// `; stderr: ...` with the tail of its stderr, or nothing.
        stderr: String,
    },
    /// The program ran past the timeout and was killed.
    #[error("the QEMU hook `{command}` did not finish within {timeout:?} and was killed{stderr}")]
    TimedOut {
        /// The command line.
        command: String,
        /// The timeout.
        timeout: Duration,
        /// `; stderr: ...` with the tail of its stderr, or nothing.
        stderr: String,
    },
    /// `start` printed something else than the answer object.
    #[error(
        "the QEMU hook `{command}` exited 0 but did not print one JSON object \
         {{\"incoming\":URI[,\"qmp\":PATH][,\"handle\":N]}} (stdout: {stdout:?}{stderr})"
    )]
    BadAnswer {
        /// The command line.
        command: String,
        /// The tail of its stdout.
        stdout: String,
        /// `; stderr: ...` with the tail of its stderr, or nothing.
        stderr: String,
        /// What is wrong with it.
        #[source]
        error: serde_json::Error,
    },
    /// `start` answered an empty `incoming` or `qmp`.
    #[error("the QEMU hook `{command}` answered an empty `{field}`")]
    EmptyField {
        /// The command line.
        command: String,
        /// The field.
        field: &'static str,
    },
    /// `start` answered no `qmp` and the host has no endpoint.
    #[error("the QEMU hook `{command}` answered no `qmp`")]
    NoQmp {
        /// The command line.
        command: String,
        /// Why there is no default.
        #[source]
        error: EndpointError,
    },
}

/// What `PROGRAM start` prints.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StartAnswer {
    incoming: String,
    #[serde(default)]
    qmp: Option<PathBuf>,
    #[serde(default)]
    handle: Option<u64>,
}

/// What a finished hook left.
#[derive(Debug)]
struct Output {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

impl CommandLauncher {
    /// Runs `program`; a destination whose hook names no `qmp` gets its host's endpoint.
    pub fn new(program: impl Into<PathBuf>, endpoints: QmpEndpoints) -> CommandLauncher {
        CommandLauncher {
            program: program.into(),
            endpoints,
            timeout: DEFAULT_HOOK_TIMEOUT,
        }
    }

    /// Sets how long one run may take before the hook is killed.
    pub fn with_timeout(mut self, timeout: Duration) -> CommandLauncher {
        self.timeout = timeout;
        self
    }

    /// `PROGRAM start VM HOST`, its answer checked.
    pub fn start(&self, vm: &VmId, host: &HostId) -> Result<QemuInstance, HookError> {
        let args = ["start", vm.as_str(), host.as_str()];
        let out = self.run(&args)?;
        let command = self.command_line(&args);
        let text = String::from_utf8_lossy(&out.stdout);
        let answer: StartAnswer =
            serde_json::from_str(text.trim()).map_err(|error| HookError::BadAnswer {
                command: command.clone(),
                stdout: tail(&out.stdout),
                stderr: stderr_note(&out.stderr),
                error,
            })?;
        if answer.incoming.trim().is_empty() {
            return Err(HookError::EmptyField {
                command,
                field: "incoming",
            });
        }
        let qmp = match answer.qmp {
            Some(p) if p.as_os_str().is_empty() => {
                return Err(HookError::EmptyField {
                    command,
                    field: "qmp",
                })
            }
            Some(p) => p,
            None => self
                .endpoints
                .endpoint(host, vm)
                .map_err(|error| HookError::NoQmp { command, error })?,
        };
        Ok(QemuInstance {
            host: host.clone(),
            qmp,
            incoming: Some(answer.incoming),
            handle: answer.handle.unwrap_or(0),
        })
    }

    /// `PROGRAM stop VM HOST HANDLE`.
    pub fn stop_instance(&self, vm: &VmId, instance: &QemuInstance) -> Result<(), HookError> {
        let handle = instance.handle.to_string();
        self.run(&["stop", vm.as_str(), instance.host.as_str(), &handle])
            .map(drop)
    }

    fn command_line(&self, args: &[&str]) -> String {
        format!("{} {}", self.program.display(), args.join(" "))
    }

    /// Runs the hook to its end (or the timeout), collecting its output.
    fn run(&self, args: &[&str]) -> Result<Output, HookError> {
        let command = self.command_line(args);
        tracing::debug!(%command, "running the QEMU hook");
        let mut child = Command::new(&self.program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|error| HookError::Spawn {
                command: command.clone(),
                error,
            })?;
        let stdout = Pipe::read(child.stdout.take());
        let stderr = Pipe::read(child.stderr.take());
        let deadline = Instant::now() + self.timeout;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break None;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                Err(error) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(HookError::Wait { command, error });
                }
            }
        };
        let out = Output {
            stdout: stdout.finish(),
            stderr: stderr.finish(),
        };
        match status {
            None => Err(HookError::TimedOut {
                command,
                timeout: self.timeout,
                stderr: stderr_note(&out.stderr),
            }),
            Some(status) if !status.success() => Err(HookError::Failed {
                command,
                status,
                stderr: stderr_note(&out.stderr),
            }),
            Some(_) => Ok(out),
        }
    }
}

impl QemuLauncher for CommandLauncher {
    fn start_destination(&self, vm: &VmId, host: &HostId) -> Result<QemuInstance, String> {
        self.start(vm, host).map_err(|e| error_chain(&e))
    }

    fn stop(&self, vm: &VmId, instance: &QemuInstance) {
        if let Err(e) = self.stop_instance(vm, instance) {
            tracing::warn!(%vm, host = %instance.host, error = %error_chain(&e), "the QEMU hook could not stop a QEMU");
        }
    }
}

/// One output stream of the hook, read by a thread until its end.
struct Pipe {
    buf: Arc<Mutex<Vec<u8>>>,
    done: mpsc::Receiver<()>,
}

impl Pipe {
    fn read(pipe: Option<impl Read + Send + 'static>) -> Pipe {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let (tx, done) = mpsc::channel();
        if let Some(mut pipe) = pipe {
            let buf = Arc::clone(&buf);
            std::thread::spawn(move || {
                let mut chunk = [0u8; 4096];
                while let Ok(n @ 1..) = pipe.read(&mut chunk) {
                    let mut b = buf.lock().unwrap_or_else(|p| p.into_inner());
                    b.extend_from_slice(&chunk[..n]);
                    if b.len() > OUTPUT_LIMIT {
                        let cut = b.len() - OUTPUT_LIMIT;
                        b.drain(..cut);
                    }
                }
                let _ = tx.send(());
            });
        }
        Pipe { buf, done }
    }

    /// What was read, once the stream ended or [`OUTPUT_GRACE`] passed (a process the hook
    /// started may hold it open).
    fn finish(self) -> Vec<u8> {
        let _ = self.done.recv_timeout(OUTPUT_GRACE);
        std::mem::take(&mut *self.buf.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// The last lines of an output (at most 10 lines, 1000 bytes), trimmed.
fn tail(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim();
    let mut start = text.len().saturating_sub(1000);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    let text = &text[start..];
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(10)..].join("\n")
}

fn stderr_note(stderr: &[u8]) -> String {
    let t = tail(stderr);
    if t.is_empty() {
        String::new()
    } else {
        format!("; stderr: {t}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    fn vm() -> VmId {
        VmId::new("vm1").expect("name")
    }
    fn host(n: &str) -> HostId {
        HostId::new(n).expect("name")
    }

    fn endpoints() -> QmpEndpoints {
        let mut e = QmpEndpoints::new();
        e.insert(host("d"), "/run/srmig/d/{vm}.qmp")
            .expect("endpoint");
        e
    }

    /// Writes an executable shell script `body` as `dir/name`.
    fn hook(dir: &Path, name: &str, body: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write hook");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        path
    }

    #[test]
    fn start_reads_the_answer_and_defaults_qmp_and_handle() {
        let dir = tempfile::tempdir().expect("tempdir");
        let full = hook(
            dir.path(),
            "full",
            r#"[ "$1 $2 $3" = "start vm1 d" ] || exit 9
echo 'starting' >&2
echo '{"incoming":"tcp:[::1]:4444","qmp":"/tmp/x.qmp","handle":123}'"#,
        );
        let got = CommandLauncher::new(&full, endpoints())
            .start(&vm(), &host("d"))
            .expect("start");
        assert_eq!(
            got,
            QemuInstance {
                host: host("d"),
                qmp: PathBuf::from("/tmp/x.qmp"),
                incoming: Some("tcp:[::1]:4444".into()),
                handle: 123,
            }
        );
        let short = hook(
            dir.path(),
            "short",
            r#"printf '\n {"incoming":"tcp:[::1]:1"}\n\n'"#,
        );
        let got = CommandLauncher::new(&short, endpoints())
            .start(&vm(), &host("d"))
            .expect("start");
        assert_eq!(got.qmp, PathBuf::from("/run/srmig/d/vm1.qmp"));
        assert_eq!(got.handle, 0);
        // No qmp in the answer and no endpoint for the host.
        let e = CommandLauncher::new(&short, endpoints())
            .start_destination(&vm(), &host("e"))
            .expect_err("no endpoint");
        assert!(e.ends_with("start vm1 e` answered no `qmp`: host e has no QMP endpoint (srmig controller --qmp-endpoint e=PATH)"), "{e}");
    }

    #[test]
    fn a_failing_hook_is_named_with_its_status_and_stderr_tail() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bad = hook(
            dir.path(),
            "bad",
            "for i in 1 2 3 4 5 6 7 8 9 10 11 12; do echo \"line $i\" >&2; done\n\
             echo 'qemu-system-x86_64: cannot allocate memory' >&2; exit 3",
        );
        let e = CommandLauncher::new(&bad, endpoints())
            .start_destination(&vm(), &host("d"))
            .expect_err("fails");
        let prog = bad.display();
        assert!(
            e.starts_with(&format!(
                "the QEMU hook `{prog} start vm1 d` failed (exit status: 3); stderr: line 4\n"
            )),
            "{e}"
        );
        assert!(
            e.ends_with("line 12\nqemu-system-x86_64: cannot allocate memory"),
            "{e}"
        );
        assert!(!e.contains("line 3\n"), "{e}");
        let e = CommandLauncher::new(dir.path().join("missing"), endpoints())
            .start_destination(&vm(), &host("d"))
            .expect_err("missing");
        assert!(e.contains("cannot run the QEMU hook"), "{e}");
        assert!(e.contains("No such file"), "{e}");
    }

    #[test]
    fn a_bad_answer_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (name, body, want) in [
            (
                "text",
                "echo started; echo oops >&2",
                "did not print one JSON object",
            ),
            (
                "two",
                r#"echo '{"incoming":"a"}'; echo '{"incoming":"b"}'"#,
                "trailing characters",
            ),
            (
                "noinc",
                r#"echo '{"qmp":"/q"}'"#,
                "missing field `incoming`",
            ),
            (
                "extra",
                r#"echo '{"incoming":"a","pid":4}'"#,
                "unknown field `pid`",
            ),
            (
                "neg",
                r#"echo '{"incoming":"a","handle":-1}'"#,
                "invalid value",
            ),
            (
                "empty",
                r#"echo '{"incoming":" "}'"#,
                "answered an empty `incoming`",
            ),
        ] {
            let h = hook(dir.path(), name, body);
            let e = CommandLauncher::new(&h, endpoints())
                .start_destination(&vm(), &host("d"))
                .expect_err(name);
            assert!(e.contains(want), "{name}: {e}");
            assert!(
                e.contains(&format!("{} start vm1 d", h.display())),
                "{name}: {e}"
            );
        }
        let h = hook(dir.path(), "says", "echo started; echo oops >&2");
        let e = CommandLauncher::new(&h, endpoints())
            .start_destination(&vm(), &host("d"))
            .expect_err("text");
        assert!(e.contains(r#"(stdout: "started"; stderr: oops)"#), "{e}");
    }

    #[test]
    fn a_hook_past_the_timeout_is_killed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let slow = hook(dir.path(), "slow", "echo waiting >&2; exec sleep 30");
        let t0 = Instant::now();
        let e = CommandLauncher::new(&slow, endpoints())
            .with_timeout(Duration::from_millis(300))
            .start_destination(&vm(), &host("d"))
            .expect_err("timeout");
        assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
        assert!(
            e.ends_with("start vm1 d` did not finish within 300ms and was killed; stderr: waiting"),
            "{e}"
        );
    }

    #[test]
    fn a_background_process_holding_the_output_does_not_hang_the_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        // As a careless hook that starts QEMU in the background with its stdout.
        let h = hook(
            dir.path(),
            "bg",
            r#"sleep 3 & echo '{"incoming":"tcp:[::1]:1","qmp":"/q"}'"#,
        );
        let t0 = Instant::now();
        let got = CommandLauncher::new(&h, endpoints())
            .start(&vm(), &host("d"))
            .expect("start");
        assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
        assert_eq!(got.incoming.as_deref(), Some("tcp:[::1]:1"));
    }

    #[test]
    fn stop_passes_vm_host_and_handle() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("log");
        let h = hook(
            dir.path(),
            "stop",
            &format!("echo \"$@\" >> {}", log.display()),
        );
        let l = CommandLauncher::new(&h, endpoints());
        let mut i = QemuInstance {
            host: host("s"),
            qmp: "/q".into(),
            incoming: None,
            handle: 4242,
        };
        l.stop(&vm(), &i);
        i.handle = 0;
        l.stop(&vm(), &i);
        assert_eq!(
            std::fs::read_to_string(&log).expect("log"),
            "stop vm1 s 4242\nstop vm1 s 0\n"
        );
        // A failing stop is only logged.
        let bad = hook(dir.path(), "badstop", "exit 1");
        CommandLauncher::new(&bad, endpoints()).stop(&vm(), &i);
        let e = CommandLauncher::new(&bad, endpoints())
            .stop_instance(&vm(), &i)
            .expect_err("fails");
        assert!(
            e.to_string()
                .ends_with("stop vm1 s 0` failed (exit status: 1)"),
            "{e}"
        );
    }
}
