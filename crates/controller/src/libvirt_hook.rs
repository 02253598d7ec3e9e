//! What libvirt's QEMU hook does (`srmig libvirt-hook`, installed as `/etc/libvirt/hooks/qemu`;
//! its flags and exit codes are the CLI's), so that a migration an operator starts with
//! `virsh migrate --live` (or Nova, or any libvirt client) is lossless without any srmig
//! command in the loop.
//!
//! libvirt runs the hook synchronously at each step of a domain's life, as
//! `qemu DOMAIN OPERATION SUB-OPERATION EXTRA` with the domain XML on stdin. Two steps matter:
//!
//! ```text
//!  operator          libvirtd S                 libvirtd D (+ this hook)            srmig controller
//!  virsh migrate ──► Begin ───────────────────► hook "migrate begin" ──────────────► POST /v1/migrations
//!                                               │ (blocks the migration)             │ {vm, to: D, strategy}
//!                                               │ waits until the SR path is armed ◄─┘ every ingress acked
//!                                               exit 0 ─► Prepare: QEMU -incoming
//!                    Perform: pre-copy ───────► ...
//!                    STOP (srmigd S: paused) ─► RESUME (srmigd D: running) ──────────► commit, fence, cleanup
//!  failure / abort:                             hook "release end" (D's QEMU gone) ──► POST .../hypervisor failed
//!                                                                                      → roll back to S
//! ```
//!
//! - **`migrate begin`** (on the destination, before libvirt prepares anything): if the domain
//!   carries srmig's metadata (below), ask the controller to migrate the VM to this host and
//!   wait until the SR path is acknowledged by every ingress (phase `expect-hypervisor-done`).
//!   The controller's hypervisor driver must be `external`: it then waits for the destination's
//!   srmigd to report the VM running (QEMU's `RESUME`) and commits. Any error (controller
//!   unreachable, VM unknown, path not armed within `--arm-timeout-ms`) exits 1 and **refuses
//!   the migration**: a VM moved without srmig knowing would stay mapped to its old host and be
//!   unreachable. libvirt shows this hook's stderr to the operator.
//! - **`release end`** (any host, when a domain's QEMU is gone for good): if the controller
//!   still waits for this VM to run *here*, the incoming migration failed or was aborted:
//!   report `failed`, so the controller rolls the mapping back to the source at once instead of
//!   after its hypervisor timeout.
//! - Every other call, and domains without srmig's metadata, exit 0 and change nothing.
//!
//! Nothing is written to stdout: for `migrate`, libvirt takes a hook's output as a replacement
//! domain XML.
//!
//! The domain opts in with an element in its `<metadata>` (kept by libvirt across migrations):
//!
//! ```xml
//! <metadata>
//!   <srmig:vm xmlns:srmig="https://srmig.dev/xmlns/libvirt/1" name="vm1" strategy="sr-buffer"/>
//! </metadata>
//! ```
//!
//! `name` is the VM's name at the controller; `strategy` (optional) overrides `--strategy`.
//! Set it on a running domain with `virsh metadata DOMAIN https://srmig.dev/xmlns/libvirt/1
//! --key srmig --set '<vm name="vm1"/>' --live --config`.

use std::time::{Duration, Instant};

use srmig_api::{HostId, MigrateRequest, MigrationPhase, MigrationStatus, Strategy, VmId};

use crate::{ClientError, ControllerClient, HypervisorEventKind, HypervisorPost};

/// The XML namespace of srmig's element in a domain's `<metadata>`.
pub const METADATA_NS: &str = "https://srmig.dev/xmlns/libvirt/1";

/// How often the hook asks the controller whether the path is armed.
const POLL: Duration = Duration::from_millis(10);

/// A strategy's name (`sr-buffer`, `sr-drop`, `traditional`).
fn parse_strategy(text: &str) -> Result<Strategy, String> {
    serde_json::from_value(serde_json::Value::String(text.to_owned()))
        .map_err(|_| format!("{text:?}: expected traditional, sr-drop or sr-buffer"))
}

/// srmig's element of a domain's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmMeta {
    /// The VM's name at the controller.
    pub vm: VmId,
    /// The strategy, if the domain names one.
    pub strategy: Option<Strategy>,
}

/// What a hook call asks of the controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Nothing: another operation, or not an srmig VM.
    Nothing,
    /// `migrate begin`: migrate the VM here and wait until the path is armed.
    Arm { vm: VmId, strategy: Strategy },
    /// `release end`: fail a migration of the VM to this host that still waits for it to run.
    Released { vm: VmId },
}

/// srmig's metadata in a domain XML: `Ok(None)` when the domain has none (not an srmig VM).
pub fn vm_meta(xml: &str) -> Result<Option<VmMeta>, String> {
    let doc = roxmltree::Document::parse(xml)
        .map_err(|e| format!("the domain XML on stdin does not parse: {e}"))?;
    let Some(element) = doc.descendants().find(|n| {
        n.is_element()
            && n.tag_name().namespace() == Some(METADATA_NS)
            && n.tag_name().name() == "vm"
            && n.parent_element()
                .is_some_and(|p| p.tag_name().name() == "metadata")
    }) else {
        return Ok(None);
    };
    let name = element
        .attribute("name")
        .ok_or_else(|| format!("srmig's <vm> metadata ({METADATA_NS}) has no name attribute"))?;
    let vm = VmId::new(name).map_err(|e| format!("srmig's <vm name={name:?}>: {e}"))?;
    let strategy = element
        .attribute("strategy")
        .map(|s| parse_strategy(s).map_err(|e| format!("srmig's <vm strategy={s:?}>: {e}")))
        .transpose()?;
    Ok(Some(VmMeta { vm, strategy }))
}

/// What libvirt's call (`operation`, `sub_operation`, the domain XML) asks for.
pub fn action(
    operation: &str,
    sub_operation: &str,
    xml: &str,
    default_strategy: Strategy,
) -> Result<Action, String> {
    let wanted = matches!(
        (operation, sub_operation),
        ("migrate", "begin") | ("release", "end")
    );
    if !wanted {
        return Ok(Action::Nothing);
    }
    let Some(meta) = vm_meta(xml)? else {
        return Ok(Action::Nothing);
    };
    Ok(match operation {
        "migrate" => Action::Arm {
            vm: meta.vm,
            strategy: meta.strategy.unwrap_or(default_strategy),
        },
        _ => Action::Released { vm: meta.vm },
    })
}

/// Whether a migration has its path armed (or needs none): the controller waits for the
/// hypervisor, or is already past it.
pub fn armed(status: &MigrationStatus) -> bool {
    !matches!(
        status.phase,
        MigrationPhase::Requested
            | MigrationPhase::ExpectEndpointAcks
            | MigrationPhase::ExpectPathAcks
    )
}

/// `migrate begin`: asks the controller to migrate `vm` to `host` and waits until the path is
/// armed; cancels the controller's migration if it is not armed in time.
pub async fn arm(
    client: &ControllerClient,
    vm: VmId,
    host: HostId,
    strategy: Strategy,
    timeout: Duration,
) -> Result<(), String> {
    let target = client.target();
    let req = MigrateRequest {
        vm: vm.clone(),
        to: host.clone(),
        strategy,
    };
    let accepted = client.migrate(&req).await.map_err(|e| {
        format!(
            "the controller ({target}) did not accept the migration of {vm} to {host}: {}; \
             libvirt's migration is refused (the VM would be unreachable after a move srmig \
             does not know)",
            error_text(&e)
        )
    })?;
    let id = accepted.id;
    let deadline = Instant::now() + timeout;
    let mut status = accepted;
    loop {
        if armed(&status) {
            if status.phase.is_terminal() && status.phase != MigrationPhase::Completed {
                return Err(format!(
                    "migration m{} of {vm} to {host} ended {} before libvirt started it{}",
                    id.0,
                    status.phase,
                    status
                        .error
                        .as_deref()
                        .map(|e| format!(": {e}"))
                        .unwrap_or_default()
                ));
            }
            eprintln!(
                "srmig libvirt-hook: migration m{} of {vm} to {host} ({strategy}): path armed",
                id.0
            );
            return Ok(());
        }
        if Instant::now() >= deadline {
            let cancelled = client.cancel(id).await.is_ok();
            return Err(format!(
                "migration m{} of {vm} to {host}: the SR path was not armed on every ingress \
                 within {} ms (phase {}); {}; libvirt's migration is refused",
                id.0,
                timeout.as_millis(),
                status.phase,
                if cancelled {
                    "cancelled at the controller"
                } else {
                    "the cancel was not accepted: see `srmig migration show`"
                }
            ));
        }
        tokio::time::sleep(POLL).await;
        status = client
            .migration(id)
            .await
            .map_err(|e| format!("following migration m{}: {}", id.0, error_text(&e)))?;
    }
}

/// `release end`: fails the controller's migration of `vm` to `host` if it still waits for the
/// VM to run here (libvirt tore the incoming domain down: the migration failed or was aborted).
pub async fn released(client: &ControllerClient, vm: &VmId, host: &HostId) -> Result<(), String> {
    let migrations = client
        .migrations()
        .await
        .map_err(|e| format!("listing migrations: {}", error_text(&e)))?;
    let waiting = migrations.iter().find(|m| {
        &m.vm == vm
            && &m.to == host
            && !m.phase.is_terminal()
            && matches!(
                m.phase,
                MigrationPhase::Requested
                    | MigrationPhase::ExpectEndpointAcks
                    | MigrationPhase::ExpectPathAcks
                    | MigrationPhase::ExpectHypervisorDone
            )
    });
    let Some(m) = waiting else {
        return Ok(());
    };
    let post = HypervisorPost {
        event: HypervisorEventKind::Failed,
        reason: Some(format!(
            "libvirt released the domain on {host} before it ran there (the migration failed \
             or was aborted)"
        )),
    };
    client
        .hypervisor(m.id, &post)
        .await
        .map(drop)
        .map_err(|e| {
            format!(
                "reporting the failure of migration m{}: {}",
                m.id.0,
                error_text(&e)
            )
        })?;
    eprintln!(
        "srmig libvirt-hook: migration m{} of {vm} to {host}: domain released before it ran \
         here; reported failed (the controller rolls back)",
        m.id.0
    );
    Ok(())
}

/// The controller's refusal (its message and code), or the error with its causes.
fn error_text(e: &ClientError) -> String {
    if let Some(api) = e.api_error() {
        return format!("{} ({:?})", api.message, api.code);
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domain(metadata: &str) -> String {
        format!(
            "<domain type='qemu'><name>vm1</name><metadata>{metadata}</metadata>\
             <memory unit='MiB'>64</memory></domain>"
        )
    }

    const META: &str = "<srmig:vm xmlns:srmig='https://srmig.dev/xmlns/libvirt/1' name='web1'/>";

    #[test]
    fn metadata_names_the_vm_and_optionally_the_strategy() {
        let meta = vm_meta(&domain(META)).expect("parses").expect("srmig VM");
        assert_eq!(meta.vm.as_str(), "web1");
        assert_eq!(meta.strategy, None);
        let with = domain(
            "<x:vm xmlns:x='https://srmig.dev/xmlns/libvirt/1' name='web1' strategy='traditional'/>",
        );
        let meta = vm_meta(&with).expect("parses").expect("srmig VM");
        assert_eq!(meta.strategy, Some(Strategy::Traditional));
    }

    #[test]
    fn domains_without_srmig_metadata_are_not_touched() {
        assert_eq!(vm_meta(&domain("")).expect("parses"), None);
        // Same local name, another namespace; or srmig's element outside <metadata>.
        let other = domain("<o:vm xmlns:o='https://example.org/other' name='web1'/>");
        assert_eq!(vm_meta(&other).expect("parses"), None);
        let outside = format!("<domain><name>x</name><devices>{META}</devices></domain>");
        assert_eq!(vm_meta(&outside).expect("parses"), None);
        for op in [("migrate", "begin"), ("release", "end")] {
            assert_eq!(
                action(op.0, op.1, &domain(""), Strategy::SrBuffer).expect("ok"),
                Action::Nothing
            );
        }
    }

    #[test]
    fn bad_metadata_and_bad_xml_are_clear_errors() {
        let err = vm_meta("<domain").expect_err("broken XML");
        assert!(err.contains("does not parse"), "{err}");
        let err = vm_meta(&domain(
            "<srmig:vm xmlns:srmig='https://srmig.dev/xmlns/libvirt/1'/>",
        ))
        .expect_err("no name");
        assert!(err.contains("no name attribute"), "{err}");
        let err = vm_meta(&domain(
            "<srmig:vm xmlns:srmig='https://srmig.dev/xmlns/libvirt/1' name='w' strategy='fast'/>",
        ))
        .expect_err("bad strategy");
        assert!(err.contains("strategy=\"fast\""), "{err}");
    }

    #[test]
    fn only_migrate_begin_and_release_end_act() {
        let xml = domain(META);
        let vm = VmId::new("web1").expect("id");
        assert_eq!(
            action("migrate", "begin", &xml, Strategy::SrDrop).expect("ok"),
            Action::Arm {
                vm: vm.clone(),
                strategy: Strategy::SrDrop
            }
        );
        assert_eq!(
            action("release", "end", &xml, Strategy::SrBuffer).expect("ok"),
            Action::Released { vm }
        );
        for (op, sub) in [
            ("prepare", "begin"),
            ("start", "begin"),
            ("started", "begin"),
            ("stopped", "end"),
            ("reconnect", "begin"),
            ("attach", "begin"),
            ("migrate", "end"),
        ] {
            assert_eq!(
                action(op, sub, &xml, Strategy::SrBuffer).expect("ok"),
                Action::Nothing,
                "{op} {sub}"
            );
        }
        // A call that does not act never parses the XML: a broken one is no error there.
        assert_eq!(
            action("started", "begin", "<broken", Strategy::SrBuffer).expect("ok"),
            Action::Nothing
        );
    }

    proptest::proptest! {
        /// Whatever libvirt (or a broken hook chain) writes on stdin: an answer, never a panic;
        /// and a valid domain cut or spliced anywhere either still names the VM or is an error.
        #[test]
        fn any_stdin_gives_an_answer(
            text in "\\PC{0,300}",
            cut in 0usize..400,
            insert in "[<>'\"=/a-z: ]{0,8}",
        ) {
            let _ = action("migrate", "begin", &text, Strategy::SrBuffer);
            let _ = action("release", "end", &text, Strategy::SrBuffer);
            let mut xml = domain(META);
            let at = (0..=cut.min(xml.len())).rev().find(|&i| xml.is_char_boundary(i)).unwrap_or(0);
            xml.insert_str(at, &insert);
            if let Ok(Some(meta)) = vm_meta(&xml) {
                proptest::prop_assert!(!meta.vm.as_str().is_empty());
            }
        }
    }

    #[test]
    fn the_path_counts_as_armed_from_the_hypervisor_phase_on() {
        let mut status: MigrationStatus = serde_json::from_value(serde_json::json!({
            "id": 1, "vm": "web1", "from": "h1", "to": "h2", "strategy": "sr-buffer",
            "phase": "expect-path-acks", "started_at_ms": 0, "phases": []
        }))
        .expect("status");
        assert!(!armed(&status));
        status.phase = MigrationPhase::ExpectHypervisorDone;
        assert!(armed(&status));
        status.phase = MigrationPhase::Failed;
        assert!(armed(&status));
    }
}
