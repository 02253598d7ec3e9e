//! Network namespace handles and running code inside a namespace.
//!
//! A [`Netns`] is a name under `/run/netns/` (the iproute2 convention, so `ip netns`, `ip -n`
//! and `ip netns exec` all see it). Code runs inside a namespace on a *dedicated thread* that
//! calls `setns(2)` with `CLONE_NEWNET` on a handle opened from `/run/netns/NAME`:
//!
//! - `setns(CLONE_NEWNET)` changes the network namespace of the calling thread only, so the
//!   rest of the process is unaffected; the thread stays in the namespace until it exits.
//! - Every socket created by that thread *after* `setns` belongs to the namespace (and keeps
//!   belonging to it for its whole life, even if handed to another thread). Sockets created
//!   before `setns` stay in the namespace they were created in.
//! - `/proc/sys/net/...` opened from such a thread shows that namespace's sysctls, but
//!   `/sys/class/net` does not (sysfs shows the namespace it was mounted in); use
//!   [`Netns::ip`] or `ip netns exec` for that.
//! - A thread inside a namespace keeps it alive: after `ip netns del` the namespace (and its
//!   veths) only disappears once such threads have exited. Join them before teardown.

use std::fs::File;
use std::path::PathBuf;
use std::sync::mpsc;
use std::thread::{self, JoinHandle};

use nix::sched::{setns, CloneFlags};

use crate::cmd;
use crate::error::LabError;

/// Directory where iproute2 keeps named network namespace handles.
pub const NETNS_DIR: &str = "/run/netns";

/// A named network namespace (the kernel-visible name, e.g. `srmig-1a2b3c-vm`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Refers to an existing namespace by its full name (no check that it exists).
    pub fn from_name(name: impl Into<String>) -> Netns {
        Netns { name: name.into() }
    }

    /// The full kernel-visible name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The handle path, `/run/netns/NAME`.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(NETNS_DIR).join(&self.name)
    }

    /// Whether the handle `/run/netns/NAME` exists.
    pub fn exists(&self) -> bool {
        self.path().exists()
    }

    /// Runs `ip -n NAME args...` and returns its stdout.
    pub fn ip(&self, args: &[&str]) -> Result<String, LabError> {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        cmd::ip(&full)
    }

    /// Runs `ip netns exec NAME program args...` to completion and returns its stdout.
    pub fn exec(&self, program: &str, args: &[&str]) -> Result<String, LabError> {
        let mut full = vec!["netns", "exec", self.name.as_str(), program];
        full.extend_from_slice(args);
        cmd::ip(&full)
    }

    /// Writes a sysctl of this namespace, e.g. `("net/ipv6/conf/all/forwarding", "1")`.
    ///
    /// The key is a path under `/proc/sys` (slashes, so interface names containing dots work);
    /// dotted keys (`net.ipv6.conf.all.forwarding`) are accepted when no interface name is
    /// involved.
    pub fn set_sysctl(&self, key: &str, value: &str) -> Result<(), LabError> {
        let path = sysctl_path(key);
        let value = value.to_owned();
        self.run(move || {
            std::fs::write(&path, value.as_bytes()).map_err(|source| LabError::File {
                action: "writing sysctl",
                path,
                source,
            })
        })?
    }

    /// Reads a sysctl of this namespace (trimmed).
    pub fn sysctl(&self, key: &str) -> Result<String, LabError> {
        let path = sysctl_path(key);
        self.run(move || match std::fs::read_to_string(&path) {
            Ok(text) => Ok(text.trim().to_owned()),
            Err(source) => Err(LabError::File {
                action: "reading sysctl",
                path,
                source,
            }),
        })?
    }

    /// Runs `f` on a fresh thread that has entered this namespace, and returns its result.
    ///
    /// `f` may borrow from the caller (scoped thread). A panic in `f` is propagated.
    pub fn run<F, R>(&self, f: F) -> Result<R, LabError>
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        let handle = self.open()?;
        let name = self.name.clone();
        thread::scope(|scope| {
            let joined = thread::Builder::new()
                .name(thread_name(&name))
                .spawn_scoped(scope, move || {
                    enter(&handle, &name)?;
                    Ok(f())
                })
                .map_err(|source| LabError::Thread {
                    name: thread_name(&self.name),
                    source,
                })?
                .join();
            match joined {
                Ok(result) => result,
                Err(payload) => std::panic::resume_unwind(payload),
            }
        })
    }

    /// Spawns a named thread that enters this namespace and then runs `f`.
    ///
    /// Returns once the thread is inside the namespace, so a failed `setns` is reported here
    /// rather than inside the thread.
    pub fn spawn<F, R>(&self, thread_name: &str, f: F) -> Result<NetnsThread<R>, LabError>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        let handle = self.open()?;
        let name = self.name.clone();
        let (entered_tx, entered_rx) = mpsc::sync_channel::<Result<(), LabError>>(1);
        let join = thread::Builder::new()
            .name(thread_name.to_owned())
            .spawn(move || {
                let entered = enter(&handle, &name);
                let ok = entered.is_ok();
                // The receiver only disappears if `spawn` itself panicked; nothing to report to.
                let _ = entered_tx.send(entered);
                if !ok {
                    // Never run `f` outside the namespace.
                    return None;
                }
                Some(f())
            })
            .map_err(|source| LabError::Thread {
                name: thread_name.to_owned(),
                source,
            })?;
        match entered_rx.recv() {
            Ok(Ok(())) => Ok(NetnsThread { inner: join }),
            Ok(Err(err)) => {
                let _ = join.join();
                Err(err)
            }
            Err(_) => Err(LabError::Thread {
                name: thread_name.to_owned(),
                source: std::io::Error::other("thread exited before entering the namespace"),
            }),
        }
    }

    fn open(&self) -> Result<File, LabError> {
        let path = self.path();
        File::open(&path).map_err(|source| LabError::OpenNetns { path, source })
    }
}

impl std::fmt::Display for Netns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)
    }
}

/// A thread running inside a network namespace, from [`Netns::spawn`].
#[derive(Debug)]
pub struct NetnsThread<R> {
    inner: JoinHandle<Option<R>>,
}

impl<R> NetnsThread<R> {
    /// Waits for the thread; `Err` carries the panic payload if it panicked.
    pub fn join(self) -> thread::Result<R> {
        match self.inner.join() {
            Ok(Some(value)) => Ok(value),
            // Only possible if setns failed, which `spawn` already reported instead of
            // returning a handle; kept as an error rather than a panic.
            Ok(None) => Err(Box::new("netns thread did not run its closure")),
            Err(payload) => Err(payload),
        }
    }

    /// Whether the thread has finished.
    pub fn is_finished(&self) -> bool {
        self.inner.is_finished()
    }
}

/// Moves the calling thread into the namespace behind `handle`.
fn enter(handle: &File, name: &str) -> Result<(), LabError> {
    setns(handle, CloneFlags::CLONE_NEWNET).map_err(|source| LabError::Setns {
        name: name.to_owned(),
        source,
    })
}

fn thread_name(ns: &str) -> String {
    format!("netns:{ns}")
}

/// `net.ipv6.conf.all.forwarding` or `net/ipv6/conf/all/forwarding` -> `/proc/sys/net/...`.
fn sysctl_path(key: &str) -> PathBuf {
    let rel = if key.contains('/') {
        key.trim_start_matches('/').to_owned()
    } else {
        key.replace('.', "/")
    };
    PathBuf::from("/proc/sys").join(rel)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysctl_keys_map_to_proc_paths() {
        assert_eq!(
            sysctl_path("net.ipv6.conf.all.forwarding"),
            PathBuf::from("/proc/sys/net/ipv6/conf/all/forwarding")
        );
        assert_eq!(
            sysctl_path("net/ipv6/conf/eth0.100/accept_dad"),
            PathBuf::from("/proc/sys/net/ipv6/conf/eth0.100/accept_dad")
        );
    }

    #[test]
    fn missing_namespace_reports_the_handle_path() {
        let ns = Netns::from_name("srmig-test-does-not-exist");
        assert!(!ns.exists());
        match ns.run(|| ()) {
            Err(LabError::OpenNetns { path, .. }) => {
                assert_eq!(path, PathBuf::from("/run/netns/srmig-test-does-not-exist"));
            }
            other => panic!("expected OpenNetns, got {other:?}"),
        }
    }
}
