//! The lab's `--qemu-launcher` hook, for a controller that runs as its own process: the
//! controller's QMP driver runs `HOOK start VM HOST` / `HOOK stop VM HOST HANDLE` (see
//! `srmig controller --qemu-launcher`), and the hook relays each call over a unix socket to
//! the lab process, whose [`LabLauncher`] starts and stops QEMU as children of the lab (killed
//! at teardown whatever happens).
//!
//! ```text
//!  srmig controller (ns ctl) ──exec──► DIR/qemu-hook start vm1 d
//!                                        = srmig lab qemu-hook --socket DIR/launcher.sock start vm1 d
//!                                          ──── {"op":"start","vm":"vm1","host":"d"} ────► LauncherService (lab)
//!                                          ◄─── {"instance":{"incoming":..,"qmp":..,"handle":pid}} ──┘ LabLauncher::launch
//!                                        prints {"incoming":..,"qmp":..,"handle":pid}
//! ```
//!
//! One JSON line each way per connection. Written by hand: a dozen lines of std I/O, where an
//! RPC crate would add a runtime to a blocking relay.

use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use srmig_api::{HostId, VmId};
use srmig_controller::{QemuInstance, QemuLauncher};

use super::error::OrchestrateError;
use super::qemu::LabLauncher;

/// A request from the hook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
enum Request {
    Start {
        vm: String,
        host: String,
    },
    Stop {
        vm: String,
        host: String,
        handle: u64,
    },
}

/// The answer to the hook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Answer {
    Instance(HookInstance),
    Stopped,
    Error(String),
}

/// What `HOOK start` prints (the controller's hook contract).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct HookInstance {
    incoming: String,
    qmp: PathBuf,
    handle: u64,
}

/// Serves a [`LabLauncher`] on a unix socket until dropped.
#[derive(Debug)]
pub struct LauncherService {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl LauncherService {
    /// Listens on `path` (replaced if it exists).
    pub fn start(launcher: Arc<LabLauncher>, path: &Path) -> Result<Self, OrchestrateError> {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path).map_err(|source| OrchestrateError::File {
            action: "binding the QEMU launcher socket",
            path: path.to_owned(),
            source,
        })?;
        listener
            .set_nonblocking(true)
            .map_err(|source| OrchestrateError::File {
                action: "configuring the QEMU launcher socket",
                path: path.to_owned(),
                source,
            })?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("lab-qemu-launcher".into())
            .spawn(move || serve(&listener, &launcher, &flag))
            .map_err(|source| {
                OrchestrateError::Lab(crate::LabError::Thread {
                    name: "lab-qemu-launcher".into(),
                    source,
                })
            })?;
        Ok(LauncherService {
            path: path.to_owned(),
            stop,
            thread: Some(thread),
        })
    }

    /// The socket.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for LauncherService {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

fn serve(listener: &UnixListener, launcher: &LabLauncher, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => {
                if let Err(e) = answer(stream, launcher) {
                    tracing::warn!(error = %e, "QEMU launcher hook connection");
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => {
                tracing::warn!(error = %e, "QEMU launcher socket accept");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

fn answer(stream: UnixStream, launcher: &LabLauncher) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line)?;
    let answer = match serde_json::from_str::<Request>(&line) {
        Err(e) => Answer::Error(format!("bad request {:?}: {e}", line.trim())),
        Ok(request) => handle(request, launcher),
    };
    let mut text = serde_json::to_string(&answer).unwrap_or_default();
    text.push('\n');
    (&stream).write_all(text.as_bytes())
}

fn handle(request: Request, launcher: &LabLauncher) -> Answer {
    let ids = |vm: &str, host: &str| -> Result<(VmId, HostId), String> {
        Ok((
            VmId::new(vm).map_err(|e| format!("VM {vm:?}: {e}"))?,
            HostId::new(host).map_err(|e| format!("host {host:?}: {e}"))?,
        ))
    };
    match request {
        Request::Start { vm, host } => {
            match ids(&vm, &host).and_then(|(vm, host)| launcher.start_destination(&vm, &host)) {
                Ok(instance) => match instance.incoming {
                    Some(incoming) => Answer::Instance(HookInstance {
                        incoming,
                        qmp: instance.qmp,
                        handle: instance.handle,
                    }),
                    None => Answer::Error("the launcher gave no incoming URI".into()),
                },
                Err(e) => Answer::Error(e),
            }
        }
        Request::Stop { vm, host, handle } => match ids(&vm, &host) {
            Ok((vm, host)) => {
                launcher.stop(
                    &vm,
                    &QemuInstance {
                        host,
                        qmp: PathBuf::new(),
                        incoming: None,
                        handle,
                    },
                );
                Answer::Stopped
            }
            Err(e) => Answer::Error(e),
        },
    }
}

/// The hook's side (`srmig lab qemu-hook --socket PATH start VM HOST | stop VM HOST
/// HANDLE`): relays the call to the lab; returns what to print on stdout.
pub fn hook_call(socket: &Path, args: &[String]) -> Result<String, String> {
    let request = match args {
        [op, vm, host] if op == "start" => Request::Start {
            vm: vm.clone(),
            host: host.clone(),
        },
        [op, vm, host, handle] if op == "stop" => Request::Stop {
            vm: vm.clone(),
            host: host.clone(),
            handle: handle
                .parse()
                .map_err(|e| format!("HANDLE {handle:?} is not a number: {e}"))?,
        },
        _ => {
            return Err(format!(
                "expected `start VM HOST` or `stop VM HOST HANDLE`, got {args:?}"
            ))
        }
    };
    let stream = UnixStream::connect(socket)
        .map_err(|e| format!("cannot reach the lab at {}: {e}", socket.display()))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(|e| e.to_string())?;
    let mut text = serde_json::to_string(&request).map_err(|e| e.to_string())?;
    text.push('\n');
    (&stream)
        .write_all(text.as_bytes())
        .map_err(|e| format!("writing to {}: {e}", socket.display()))?;
    let mut line = String::new();
    BufReader::new(&stream)
        .read_line(&mut line)
        .map_err(|e| format!("reading from {}: {e}", socket.display()))?;
    match serde_json::from_str::<Answer>(&line)
        .map_err(|e| format!("bad answer {:?}: {e}", line.trim()))?
    {
        Answer::Instance(i) => serde_json::to_string(&i).map_err(|e| e.to_string()),
        Answer::Stopped => Ok(String::new()),
        Answer::Error(e) => Err(e),
    }
}

/// Writes the hook script `DIR/qemu-hook` (mode 0755) that runs `srmig lab qemu-hook` against
/// `socket`; returns its path.
pub fn write_hook_script(
    dir: &Path,
    srmig: &Path,
    socket: &Path,
) -> Result<PathBuf, OrchestrateError> {
    use std::os::unix::fs::PermissionsExt as _;
    let path = dir.join("qemu-hook");
    let quote = |p: &Path| format!("'{}'", p.display().to_string().replace('\'', r"'\''"));
    let text = format!(
        "#!/bin/sh\n# The lab's QEMU launcher hook (srmig controller --qemu-launcher).\nexec {} lab qemu-hook --socket {} \"$@\"\n",
        quote(srmig),
        quote(socket)
    );
    let file_err = |source| OrchestrateError::File {
        action: "writing the QEMU launcher hook",
        path: path.clone(),
        source,
    };
    std::fs::write(&path, text).map_err(file_err)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).map_err(file_err)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_answers_are_one_json_line() {
        let r = Request::Start {
            vm: "vm1".into(),
            host: "d".into(),
        };
        assert_eq!(
            serde_json::to_string(&r).expect("json"),
            r#"{"op":"start","vm":"vm1","host":"d"}"#
        );
        let a = Answer::Instance(HookInstance {
            incoming: "tcp:[::1]:47000".into(),
            qmp: "/tmp/q.qmp".into(),
            handle: 7,
        });
        let text = serde_json::to_string(&a).expect("json");
        assert_eq!(serde_json::from_str::<Answer>(&text).expect("back"), a);
    }

    #[test]
    fn the_hook_refuses_bad_arguments_before_connecting() {
        let sock = Path::new("/nonexistent/launcher.sock");
        let e = hook_call(sock, &["begin".into()]).expect_err("bad op");
        assert!(e.contains("start VM HOST"), "{e}");
        let args: Vec<String> = ["stop", "vm1", "d", "x"].map(String::from).to_vec();
        let e = hook_call(sock, &args).expect_err("bad handle");
        assert!(e.contains("HANDLE"), "{e}");
        let args: Vec<String> = ["start", "vm1", "d"].map(String::from).to_vec();
        let e = hook_call(sock, &args).expect_err("no lab");
        assert!(e.contains("cannot reach the lab"), "{e}");
    }
}
