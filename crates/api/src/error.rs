//! The error body every API endpoint returns on failure.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Machine-readable error codes.
///
/// JSON: the kebab-case names below.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ApiErrorCode {
    /// The request body is not valid JSON for the endpoint, or a field is invalid.
    InvalidRequest,
    /// The named VM is not registered.
    UnknownVm,
    /// The named host is not registered.
    UnknownHost,
    /// The named migration does not exist.
    UnknownMigration,
    /// A host or VM with that name (or a conflicting address or SID) is already registered.
    Conflict,
    /// Migration refused: the VM is already on the destination host.
    AlreadyOnHost,
    /// Migration refused: the VM is already migrating.
    AlreadyMigrating,
    /// Cancel refused: the migration is past its switchover (or already finished).
    TooLateToCancel,
    /// This controller replica is not the leader; retry against the leader.
    NotLeader,
    /// The caller is authenticated but may not do this (e.g. a host reporting another host's
    /// VM state).
    Forbidden,
    /// A host config delta (`PATCH /v1/config`) does not apply to the version the host
    /// holds; send the whole config (`PUT /v1/config`).
    BaseMismatch,
    /// An unexpected failure inside the server.
    Internal,
}

impl fmt::Display for ApiErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ApiErrorCode::InvalidRequest => "invalid-request",
            ApiErrorCode::UnknownVm => "unknown-vm",
            ApiErrorCode::UnknownHost => "unknown-host",
            ApiErrorCode::UnknownMigration => "unknown-migration",
            ApiErrorCode::Conflict => "conflict",
            ApiErrorCode::AlreadyOnHost => "already-on-host",
            ApiErrorCode::AlreadyMigrating => "already-migrating",
            ApiErrorCode::TooLateToCancel => "too-late-to-cancel",
            ApiErrorCode::NotLeader => "not-leader",
            ApiErrorCode::Forbidden => "forbidden",
            ApiErrorCode::BaseMismatch => "base-mismatch",
            ApiErrorCode::Internal => "internal",
        })
    }
}

/// An error returned by the API.
///
/// Golden JSON: `{"code":"unknown-vm","message":"VM web9 is not registered"}`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(deny_unknown_fields)]
#[error("{code}: {message}")]
pub struct ApiError {
    /// `code`: what went wrong, for programs.
    pub code: ApiErrorCode,
    /// `message`: what went wrong, for people (one sentence, names the offending field or item).
    pub message: String,
}

impl ApiError {
    /// Builds an error from a code and a message.
    pub fn new(code: ApiErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_json() {
        let e = ApiError::new(ApiErrorCode::UnknownVm, "VM web9 is not registered");
        let golden = r#"{"code":"unknown-vm","message":"VM web9 is not registered"}"#;
        assert_eq!(serde_json::to_string(&e).expect("serialize"), golden);
        assert_eq!(
            serde_json::from_str::<ApiError>(golden).expect("deserialize"),
            e
        );
        assert_eq!(e.to_string(), "unknown-vm: VM web9 is not registered");
    }

    #[test]
    fn codes_display_as_serialized() {
        use ApiErrorCode::*;
        for c in [
            InvalidRequest,
            UnknownVm,
            UnknownHost,
            UnknownMigration,
            Conflict,
            AlreadyOnHost,
            AlreadyMigrating,
            TooLateToCancel,
            NotLeader,
            BaseMismatch,
            Internal,
        ] {
            assert_eq!(
                serde_json::to_string(&c).expect("serialize"),
                format!("\"{c}\"")
            );
        }
    }
}
