//! Local admin sockets: the unix-socket side of srmig's trust model.
//!
//! srmigd and the controller keep a unix socket for local administration next to their
//! mutual-TLS listener. Whoever can connect to it can do anything the API allows, so:
//!
//! - the socket is created with mode `0660` (never what the umask says) and, if asked, owned
//!   by a group of operators; it is bound under a temporary name, given its mode and group,
//!   and only then renamed into place, so no client ever sees it with looser permissions;
//! - an existing path is replaced only if it is a unix socket nobody serves: a live socket is
//!   an error ("in use"), and a regular file, directory or anything else is refused, never
//!   deleted (a mistyped `--api /etc/passwd` destroys nothing);
//! - each connection's peer credentials (`SO_PEERCRED`) are checked again on accept: root, the
//!   daemon's own user, or a member of the socket's group ([`PeerPolicy`]); anyone else is
//!   logged and disconnected. The file mode already keeps others out; the check also covers a
//!   socket whose mode was changed by hand, or a descriptor passed to another process.
//!
//! Written here rather than taken from a crate: it is a few system calls (std's `chown`,
//! `rename`, tokio's `peer_cred`, nix's group lookup), and the rules are srmig's.

use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::net::{UnixListener, UnixStream};

/// The mode of every local admin socket.
pub const SOCKET_MODE: u32 = 0o660;

/// Why a local socket could not be created.
#[derive(Debug, thiserror::Error)]
pub enum LocalSocketError {
    /// A running process serves the path.
    #[error("{} is in use by a running process", .0.display())]
    InUse(PathBuf),
    /// The path exists and is not a unix socket: refused, left alone.
    #[error("{} exists and is not a unix socket (refusing to replace it)", .0.display())]
    NotASocket(PathBuf),
    /// The group does not exist.
    #[error("no group named {0:?}")]
    UnknownGroup(String),
    /// A system call failed.
    #[error("cannot {what} {}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
}

/// The group id of `name`.
pub fn group_id(name: &str) -> Result<u32, LocalSocketError> {
    match nix::unistd::Group::from_name(name) {
        Ok(Some(g)) => Ok(g.gid.as_raw()),
        Ok(None) => Err(LocalSocketError::UnknownGroup(name.to_owned())),
        Err(e) => Err(LocalSocketError::Io {
            what: "look up the group of",
            path: PathBuf::from(name),
            source: io::Error::from(e),
        }),
    }
}

/// Binds a local admin socket at `path`, mode [`SOCKET_MODE`], group `gid` if given (see the
/// module docs). Must run inside a tokio runtime.
pub async fn bind(path: &Path, gid: Option<u32>) -> Result<UnixListener, LocalSocketError> {
    let l = bind_std(path, gid)?;
    l.set_nonblocking(true)
        .and_then(|()| UnixListener::from_std(l))
        .map_err(|source| LocalSocketError::Io {
            what: "register",
            path: path.to_owned(),
            source,
        })
}

/// [`bind`] without a runtime: a blocking std listener (set it non-blocking before handing it
/// to tokio).
pub fn bind_std(
    path: &Path,
    gid: Option<u32>,
) -> Result<std::os::unix::net::UnixListener, LocalSocketError> {
    let io_err = |what, path: &Path| {
        let path = path.to_owned();
        move |source| LocalSocketError::Io { what, path, source }
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io_err("create", dir))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(LocalSocketError::InUse(path.to_owned()));
            }
            std::fs::remove_file(path).map_err(io_err("remove the stale socket", path))?;
        }
        Ok(_) => return Err(LocalSocketError::NotASocket(path.to_owned())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("inspect", path)(e)),
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let listener =
        std::os::unix::net::UnixListener::bind(&tmp).map_err(io_err("listen on", &tmp))?;
    let placed = (|| {
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(SOCKET_MODE))
            .map_err(io_err("set the mode of", &tmp))?;
        if let Some(gid) = gid {
            std::os::unix::fs::chown(&tmp, None, Some(gid))
                .map_err(io_err("set the group of", &tmp))?;
        }
        std::fs::rename(&tmp, path).map_err(io_err("move the socket to", path))
    })();
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(listener)
}

/// Who may use a local admin socket once connected: root, the daemon's user, members of
/// `group`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerPolicy {
    /// The daemon's effective user id.
    pub uid: u32,
    /// The socket's group, if one was configured.
    pub group: Option<u32>,
}

impl PeerPolicy {
    /// Root, this process's user, and `group`'s members.
    pub fn for_this_process(group: Option<u32>) -> PeerPolicy {
        PeerPolicy {
            uid: nix::unistd::geteuid().as_raw(),
            group,
        }
    }

    /// Whether the peer of `stream` may use the socket; `Err` says who it is and why not.
    pub fn check(&self, stream: &UnixStream) -> Result<(), String> {
        let cred = stream
            .peer_cred()
            .map_err(|e| format!("cannot read the peer's credentials: {e}"))?;
        let (uid, gid, pid) = (cred.uid(), cred.gid(), cred.pid());
        if uid == 0 || uid == self.uid {
            return Ok(());
        }
        if let Some(group) = self.group {
            if gid == group || pid.is_some_and(|p| supplementary_groups(p).contains(&group)) {
                return Ok(());
            }
        }
        Err(format!(
            "uid {uid} (gid {gid}, pid {}) is neither root, the daemon's user{}",
            pid.map_or("?".to_owned(), |p| p.to_string()),
            match self.group {
                Some(g) => format!(", nor in group {g}"),
                None => String::new(),
            }
        ))
    }
}

/// The supplementary groups of process `pid` (`/proc/<pid>/status`), empty if unreadable.
fn supplementary_groups(pid: i32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("Groups:")).map(|g| {
                g.split_whitespace()
                    .filter_map(|n| n.parse().ok())
                    .collect()
            })
        })
        .unwrap_or_default()
}

/// A unix listener for `axum::serve` that admits only the peers [`PeerPolicy`] allows (the
/// others are logged and disconnected).
#[derive(Debug)]
pub struct CheckedListener {
    inner: UnixListener,
    policy: PeerPolicy,
}

impl CheckedListener {
    /// Wraps `inner`.
    pub fn new(inner: UnixListener, policy: PeerPolicy) -> CheckedListener {
        CheckedListener { inner, policy }
    }
}

impl axum::serve::Listener for CheckedListener {
    type Io = UnixStream;
    type Addr = tokio::net::unix::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.inner.accept().await {
                Ok((stream, addr)) => match self.policy.check(&stream) {
                    Ok(()) => return (stream, addr),
                    Err(why) => tracing::warn!(reason = %why, "local API connection refused"),
                },
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed on the local socket; retrying");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn socket_mode_is_0660_whatever_the_umask_and_files_are_never_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("api.sock");
        let old = nix::sys::stat::umask(nix::sys::stat::Mode::empty());
        let l = bind(&path, None).await;
        nix::sys::stat::umask(old);
        let l = l.expect("bind");
        let meta = std::fs::symlink_metadata(&path).expect("meta");
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.permissions().mode() & 0o777, SOCKET_MODE);
        // No temporary socket left behind.
        assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 1);
        // Live: refused. Stale (listener gone): replaced.
        let e = bind(&path, None).await.expect_err("in use");
        assert!(matches!(e, LocalSocketError::InUse(_)), "{e}");
        drop(l);
        let _l = bind(&path, None).await.expect("stale socket replaced");
        // A regular file is refused and left intact.
        let file = dir.path().join("precious");
        std::fs::write(&file, "data").expect("write");
        let e = bind(&file, None).await.expect_err("file");
        assert!(e.to_string().contains("not a unix socket"), "{e}");
        assert_eq!(std::fs::read_to_string(&file).expect("read"), "data");
    }

    #[tokio::test]
    async fn group_and_peer_policy() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("g.sock");
        let gid = nix::unistd::getegid().as_raw();
        let l = bind(&path, Some(gid)).await.expect("bind");
        let meta = std::fs::metadata(&path).expect("meta");
        assert_eq!(std::os::unix::fs::MetadataExt::gid(&meta), gid);
        assert!(matches!(
            group_id("no-such-group-srmig"),
            Err(LocalSocketError::UnknownGroup(_))
        ));
        // This process is its own peer: allowed as the daemon's user; a policy for another
        // user and group refuses it (unless this runs as root, which is always allowed).
        let c = UnixStream::connect(&path).await.expect("connect");
        let (s, _) = l.accept().await.expect("accept");
        assert!(PeerPolicy::for_this_process(None).check(&s).is_ok());
        let other = PeerPolicy {
            uid: 4_000_000,
            group: Some(4_000_000),
        };
        let me = nix::unistd::geteuid().as_raw();
        assert_eq!(other.check(&s).is_ok(), me == 0);
        drop(c);
    }
}
