//! Errors of the lab substrate (namespaces, links, registry, teardown).

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong while building, using or tearing down a lab.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// An external command (normally `ip`) ran and exited unsuccessfully.
    #[error("command `{command}` failed ({status}): {stderr}")]
    Command {
        /// The full command line, as it would be typed in a shell.
        command: String,
        /// How it exited.
        status: String,
        /// Its standard error, trimmed.
        stderr: String,
    },
    /// An external command could not be started at all (e.g. `ip` missing).
    #[error("could not start `{command}`")]
    Spawn {
        /// The full command line.
        command: String,
        /// Why it could not be started.
        #[source]
        source: io::Error,
    },
    /// A user-supplied name (namespace, interface, run id) is not acceptable.
    #[error("invalid {what} name {name:?}: {reason}")]
    InvalidName {
        /// What kind of name it is ("namespace", "interface", "run id").
        what: &'static str,
        /// The rejected name.
        name: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// The namespace handle `/run/netns/NAME` could not be opened.
    #[error("could not open network namespace handle {path}")]
    OpenNetns {
        /// The handle path.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// `setns(2)` into a namespace failed.
    #[error("setns into network namespace {name} failed")]
    Setns {
        /// The namespace name.
        name: String,
        /// The errno.
        #[source]
        source: nix::Error,
    },
    /// A helper thread could not be created.
    #[error("could not spawn thread {name}")]
    Thread {
        /// The thread name.
        name: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Reading or writing a file of the lab (registry, sysctl) failed.
    #[error("{action} {path} failed")]
    File {
        /// What was attempted ("writing", "reading", "removing").
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// An interface could not be brought up (`SIOCSIFFLAGS`).
    #[error("bringing {ifname} up in namespace {netns} failed")]
    LinkUp {
        /// The interface.
        ifname: String,
        /// Its namespace.
        netns: String,
        /// The system call's error.
        #[source]
        source: io::Error,
    },
    /// A registry file exists but does not parse.
    #[error("registry file {path} is malformed")]
    RegistryFormat {
        /// The file.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// The SIGINT/SIGTERM handler could not be installed.
    #[error("could not install the teardown signal handler")]
    SignalHandler(#[source] io::Error),
    /// An operation referred to something this lab does not own or that is gone.
    #[error("{what} {name} is not part of lab run {run_id}")]
    NotOwned {
        /// What kind of object ("namespace", "link", "child process").
        what: &'static str,
        /// Its name or id.
        name: String,
        /// The lab's run id.
        run_id: String,
    },
    /// The lab was already torn down.
    #[error("lab run {0} was already torn down")]
    TornDown(String),
    /// Sending a signal to, or waiting for, a child process failed.
    #[error("could not stop child process {pid}")]
    Child {
        /// The process id.
        pid: u32,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A condition was not reached in time.
    #[error("{what} not reached within {waited:?}")]
    Timeout {
        /// What was waited for.
        what: String,
        /// How long.
        waited: std::time::Duration,
    },
}
