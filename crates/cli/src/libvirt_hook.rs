//! `srmig libvirt-hook`: libvirt's QEMU hook (`/etc/libvirt/hooks/qemu` runs it with libvirt's
//! arguments and the domain XML on stdin). What it does, and why, is
//! `srmig_controller::libvirt_hook`'s module doc and docs/operators.md; this file has the
//! flags, reads stdin and turns the outcome into stderr lines and an exit status. Nothing is
//! written to stdout: for `migrate`, libvirt takes a hook's output as a replacement XML.

use std::io::Read as _;
use std::process::ExitCode;
use std::time::Duration;

use srmig_api::{HostId, Strategy};
use srmig_controller::libvirt_hook::{self, Action};

use crate::connect::{ConnectError, ControllerFlags, EXIT_USAGE};

/// `srmig libvirt-hook [FLAGS] DOMAIN OPERATION SUB-OPERATION EXTRA` (libvirt's arguments).
#[derive(Debug, clap::Args)]
pub(crate) struct HookArgs {
    #[command(flatten)]
    connect: ControllerFlags,
    /// This host's name at the controller (the destination of a migration that libvirt
    /// prepares here).
    #[arg(long)]
    host: HostId,
    /// The strategy of migrations whose domain metadata names none.
    #[arg(long, default_value = "sr-buffer", value_parser = crate::migrate::parse_strategy)]
    strategy: Strategy,
    /// How long `migrate begin` waits for the SR path to be armed on every ingress before it
    /// cancels the controller's migration and refuses libvirt's.
    #[arg(long, default_value_t = 10_000, value_name = "MS")]
    arm_timeout_ms: u64,
    /// libvirt's arguments: the domain's name, the operation, the sub-operation and an extra
    /// argument (`vm1 migrate begin -`).
    #[arg(num_args = 0.., allow_hyphen_values = true, value_name = "LIBVIRT-ARGS")]
    libvirt: Vec<String>,
}

/// Runs the hook; errors go to stderr (libvirt shows them), nothing to stdout.
pub(crate) fn run(args: HookArgs) -> ExitCode {
    let (operation, sub_operation) = match args.libvirt.as_slice() {
        [_domain, operation, sub_operation, ..] => (operation.as_str(), sub_operation.as_str()),
        _ => {
            eprintln!(
                "srmig libvirt-hook: expected libvirt's arguments DOMAIN OPERATION SUB-OPERATION \
                 EXTRA, got {:?}",
                args.libvirt
            );
            return ExitCode::from(EXIT_USAGE);
        }
    };
    // libvirt writes the XML for every call; read it all so libvirt never sees EPIPE.
    let mut xml = String::new();
    if let Err(e) = std::io::stdin().read_to_string(&mut xml) {
        eprintln!("srmig libvirt-hook: cannot read the domain XML on stdin: {e}");
        return ExitCode::FAILURE;
    }
    let action = match libvirt_hook::action(operation, sub_operation, &xml, args.strategy) {
        Ok(Action::Nothing) => return ExitCode::SUCCESS,
        Ok(a) => a,
        Err(e) => {
            eprintln!("srmig libvirt-hook: {e}");
            // Only a migration can be refused; a broken XML at release changes nothing.
            return match operation {
                "migrate" => ExitCode::FAILURE,
                _ => ExitCode::SUCCESS,
            };
        }
    };
    let client = match args.connect.client() {
        Ok(c) => c,
        Err(ConnectError::Usage(msg)) => {
            eprintln!("srmig libvirt-hook: {msg}");
            return ExitCode::from(EXIT_USAGE);
        }
        Err(ConnectError::Client(e)) => {
            eprintln!("srmig libvirt-hook: {e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("srmig libvirt-hook: cannot start a runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let host = args.host.clone();
    let result = runtime.block_on(async {
        match action {
            Action::Arm { vm, strategy } => {
                libvirt_hook::arm(
                    &client,
                    vm,
                    host,
                    strategy,
                    Duration::from_millis(args.arm_timeout_ms),
                )
                .await
            }
            Action::Released { vm } => libvirt_hook::released(&client, &vm, &host).await,
            Action::Nothing => Ok(()),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("srmig libvirt-hook: {e}");
            ExitCode::FAILURE
        }
    }
}
