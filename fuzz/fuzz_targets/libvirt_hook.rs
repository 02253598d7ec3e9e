//! What libvirt hands `srmig libvirt-hook` on stdin (a domain XML, any bytes), through the
//! hook's decision (`srmig_controller::libvirt_hook::action`) for the two operations that act
//! and one that does not. Nothing may panic; an operation other than `migrate begin` and
//! `release end` never acts (and never reads the XML); a domain that names a VM names a valid
//! one, whose metadata, written back as an element, names it again with the same strategy.
//!
//! Input: the XML. Seeds: `fuzz/corpus/libvirt_hook/seed-*` (the lab's domain XML, with and
//! without srmig metadata).
#![no_main]

use libfuzzer_sys::fuzz_target;
use srmig_api::Strategy;
use srmig_controller::libvirt_hook::{action, vm_meta, Action, METADATA_NS};

fuzz_target!(|data: &[u8]| {
    let Ok(xml) = std::str::from_utf8(data) else {
        return;
    };
    assert_eq!(
        action("started", "begin", xml, Strategy::SrBuffer),
        Ok(Action::Nothing)
    );
    let arm = action("migrate", "begin", xml, Strategy::SrDrop);
    let release = action("release", "end", xml, Strategy::SrDrop);
    if let Ok(Some(meta)) = vm_meta(xml) {
        let strategy = meta.strategy.unwrap_or(Strategy::SrDrop);
        assert_eq!(
            arm,
            Ok(Action::Arm {
                vm: meta.vm.clone(),
                strategy
            })
        );
        assert_eq!(
            release,
            Ok(Action::Released {
                vm: meta.vm.clone()
            })
        );
        let strategy_attr = meta
            .strategy
            .map(|s| format!(" strategy='{s}'"))
            .unwrap_or_default();
        let again = format!(
            "<domain><metadata><s:vm xmlns:s='{METADATA_NS}' name='{}'{strategy_attr}/></metadata></domain>",
            meta.vm
        );
        assert_eq!(vm_meta(&again), Ok(Some(meta)));
    }
});
