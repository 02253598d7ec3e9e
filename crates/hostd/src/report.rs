//! Reports VM state changes to the controller: `POST /v1/vm-state` with a
//! [`VmStateReport`] over the controller's unix socket.
//!
//! Reports are sent in order, each tried up to [`ATTEMPTS`] times; a report that still fails
//! is logged and dropped, and srmigd keeps forwarding on its own state (the controller learns
//! the VM's state again from the next report or by polling `GET /v1/status`).

use std::path::PathBuf;
use std::time::Duration;

use hyper::Method;
use srmig_api::VmStateReport;
use tokio::sync::mpsc::UnboundedReceiver;
use tracing::{debug, warn};

use crate::client;

/// Attempts per report.
pub const ATTEMPTS: u32 = 3;

/// Time limit of one attempt.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);

/// Sends every report received on `rx` to the controller at `socket`, until `rx` closes.
pub async fn run(socket: PathBuf, mut rx: UnboundedReceiver<VmStateReport>) {
    while let Some(r) = rx.recv().await {
        let body = match serde_json::to_vec(&r) {
            Ok(b) => b,
            Err(e) => {
                warn!(error = %e, "cannot serialize a VM state report");
                continue;
            }
        };
        let mut delay = Duration::from_millis(50);
        for attempt in 1..=ATTEMPTS {
            let attempt_result = tokio::time::timeout(
                ATTEMPT_TIMEOUT,
                client::request(&socket, Method::POST, "/v1/vm-state", Some(body.clone())),
            )
            .await;
            match attempt_result {
                Err(_) => {
                    warn!(vm = %r.vm, state = %r.state, attempt, "controller did not answer a VM state report in time")
                }
                Ok(Ok((s, _))) if s.is_success() => {
                    debug!(vm = %r.vm, state = %r.state, "VM state reported");
                    break;
                }
                Ok(Ok((s, b))) => warn!(
                    vm = %r.vm, state = %r.state, status = s.as_u16(),
                    body = %String::from_utf8_lossy(&b), attempt,
                    "controller refused a VM state report"
                ),
                Ok(Err(e)) => {
                    warn!(vm = %r.vm, state = %r.state, error = %client::error_chain(&e), attempt, "cannot report VM state to the controller")
                }
            }
            if attempt < ATTEMPTS {
                tokio::time::sleep(delay).await;
                delay *= 4;
            }
        }
    }
}
