//! The one error type of this crate.

use std::io;
use std::time::Duration;

/// Everything a QMP exchange can fail with.
#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    /// Connecting, reading or writing the socket failed.
    #[error("QMP socket I/O failed")]
    Io(#[from] io::Error),
    /// QEMU closed the connection (it exited, or it serves another client) before answering.
    #[error("QMP connection closed")]
    Closed,
    /// QEMU sent something that is not QMP (bad JSON, a greeting of the wrong shape, a line
    /// over the length limit, a reply that does not deserialize into the expected type).
    #[error("QMP protocol violation: {0}")]
    Protocol(String),
    /// QEMU answered the command with an error.
    #[error("QMP command {command} failed: {class}: {desc}")]
    Command {
        /// The command that failed.
        command: String,
        /// QEMU's error class (almost always `GenericError`).
        class: String,
        /// QEMU's human-readable description.
        desc: String,
    },
    /// No answer in time (greeting, command reply, or an awaited event or state).
    #[error("QMP {what} timed out after {after:?}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long we waited.
        after: Duration,
    },
}

impl QmpError {
    pub(crate) fn protocol(msg: impl Into<String>) -> QmpError {
        QmpError::Protocol(msg.into())
    }

    pub(crate) fn timeout(what: impl Into<String>, after: Duration) -> QmpError {
        QmpError::Timeout {
            what: what.into(),
            after,
        }
    }

    /// The same error again, for fanning one connection failure out to every waiter
    /// (`io::Error` is not `Clone`: its kind and message are kept, the source is not).
    pub(crate) fn duplicate(&self) -> QmpError {
        match self {
            QmpError::Io(e) => QmpError::Io(io::Error::new(e.kind(), e.to_string())),
            QmpError::Closed => QmpError::Closed,
            QmpError::Protocol(m) => QmpError::Protocol(m.clone()),
            QmpError::Command {
                command,
                class,
                desc,
            } => QmpError::Command {
                command: command.clone(),
                class: class.clone(),
                desc: desc.clone(),
            },
            QmpError::Timeout { what, after } => QmpError::Timeout {
                what: what.clone(),
                after: *after,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_keeps_kind_and_text() {
        let e = QmpError::Io(io::Error::new(io::ErrorKind::BrokenPipe, "pipe"));
        match e.duplicate() {
            QmpError::Io(d) => {
                assert_eq!(d.kind(), io::ErrorKind::BrokenPipe);
                assert_eq!(d.to_string(), "pipe");
            }
            other => panic!("unexpected {other:?}"),
        }
        let c = QmpError::Command {
            command: "migrate".into(),
            class: "GenericError".into(),
            desc: "no".into(),
        };
        assert_eq!(
            c.duplicate().to_string(),
            "QMP command migrate failed: GenericError: no"
        );
    }
}
