//! srmigd's control API request bodies, parsed as its handlers parse them
//! (`crates/hostd/src/api.rs`) and applied to a real [`Agent`] on the testkit node
//! (`srmig_agent::testkit::base()`, the node of the agent's unit tests, with small End.SBUF
//! buffers and fence store so that each input builds fast), cloned for every input from one
//! built at the start.
//! Invariants checked after every request:
//!
//! - nothing panics;
//! - a refused request changes nothing: the status before equals the status after, and no VM
//!   state report is queued (as the unit test `refused_config_changes_nothing` does);
//! - an applied host config validates, the ack and the status carry its version, and its
//!   SIDs and mappings are in force;
//! - an installed SID shows in the status, a removed one does not;
//! - the status serializes and parses back to itself (the controller reads it; checked at the
//!   end of each input).
//!
//! Input: requests separated by NUL bytes (JSON and path segments never contain one). The
//! first byte of a request selects it (`(byte - b'0') % 6`: the seeds use the digits `0`..`5`),
//! the rest is its body:
//!
//! | kind | request | rest of the record |
//! |---|---|---|
//! | 0 | `PUT /v1/config` | `srmig_api::HostConfig` JSON |
//! | 1 | `PUT /v1/vms/{name}/state` | `{name}`, a space, `{"state":...}` JSON |
//! | 2 | `POST /v1/sids` | `srmig_dataplane::SidConfig` JSON |
//! | 3 | `DELETE /v1/sids/{sid}` | `{sid}` |
//! | 4 | `PUT /v1/config` of the testkit `hc(generation)` | `epoch generation` in decimal |
//! | 5 | the VM port's link goes up or down | `u` or `d` |
//!
//! Kind 4 reaches the "config in force" paths (same version, older, newer epoch) without
//! depending on the fuzzer to write a valid host config.
#![no_main]

use std::net::Ipv6Addr;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;
use srmig_agent::testkit::{base, hc};
use srmig_agent::{Agent, AgentError, POLICY_PREFIX};
use srmig_api::{HostConfig, HostId, HostStatus, Steering};
use srmig_dataplane::{Instant, NodeConfig, PortId, SidConfig};
use srmig_hostd::api::VmStateRequest;

const BOOT_EPOCH: u64 = 77;
/// The testkit node's VM port.
const VM_PORT: PortId = PortId(1);

/// As the handlers parse a body (`serde_json::from_slice`).
fn parse<T: DeserializeOwned>(body: &[u8]) -> Option<T> {
    serde_json::from_slice(body).ok()
}

/// Decimal numbers separated by whitespace; missing or malformed ones are 0.
fn numbers<const N: usize>(body: &[u8]) -> [u64; N] {
    let mut out = [0; N];
    let text = String::from_utf8_lossy(body);
    for (slot, word) in out.iter_mut().zip(text.split_ascii_whitespace()) {
        *slot = word.trim().parse().unwrap_or(0);
    }
    out
}

/// The status, which must survive its JSON (checked once per input: it is the slow part).
fn round_trip(status: &HostStatus) {
    let json = serde_json::to_vec(status).expect("the status serializes");
    let back: HostStatus = serde_json::from_slice(&json).expect("the status parses back");
    assert_eq!(&back, status, "the status survives its JSON");
}

/// A refused request must leave the agent as it was.
fn refused(agent: &mut Agent, before: &HostStatus, e: &AgentError) {
    assert!(
        matches!(e.http_status(), 400 | 404 | 409),
        "a request was refused with an internal error: {e}"
    );
    let _ = e.to_api();
    assert_eq!(&agent.status(&[]), before, "refused ({e}) but changed");
    assert!(agent.poll_report().is_none(), "refused ({e}) but reported");
}

fn apply(agent: &mut Agent, before: &HostStatus, config: HostConfig) {
    let version = config.version();
    let valid = config.validate().is_ok();
    match agent.apply_host_config(config.clone()) {
        Ok(ack) => {
            assert!(valid, "an invalid host config was applied");
            assert_eq!((ack.epoch, ack.generation), version);
            assert_eq!(ack.boot_epoch, BOOT_EPOCH);
            let after = agent.status(&[]);
            assert_eq!(
                (after.epoch, after.generation),
                (Some(version.0), Some(version.1))
            );
            // What is in force is what was asked (API SIDs may override a SID's behavior,
            // not remove it).
            for s in &config.sids {
                assert!(after.sids.iter().any(|x| x.sid == s.sid()), "{s:?} missing");
            }
            let dp = agent.dataplane();
            for m in &config.mappings {
                let want = match &m.steering {
                    Steering::Native => Some(srmig_dataplane::Steering::Native),
                    Steering::Encaps(_) => dp
                        .policy_id(&format!("{POLICY_PREFIX}{}", m.vm))
                        .map(srmig_dataplane::Steering::Policy),
                };
                assert!(want.is_some(), "no policy for {}", m.vm);
                for a in &m.addresses {
                    assert_eq!(dp.mapping(*a), want, "steering of {a}");
                }
            }
        }
        Err(e) => refused(agent, before, &e),
    }
}

fn request(agent: &mut Agent, now: Instant, kind: u8, body: &[u8]) {
    let before = agent.status(&[]);
    match kind.wrapping_sub(b'0') % 6 {
        0 => {
            if let Some(config) = parse::<HostConfig>(body) {
                apply(agent, &before, config);
            }
        }
        1 => {
            let split = body.iter().position(|b| *b == b' ').unwrap_or(body.len());
            let (name, json) = body.split_at(split);
            let (Ok(name), Some(req)) = (
                std::str::from_utf8(name),
                parse::<VmStateRequest>(json.get(1..).unwrap_or_default()),
            ) else {
                return;
            };
            match agent.set_vm_state(now, name, req.state) {
                Ok(vm) => {
                    assert_eq!(vm.name, name);
                    assert_eq!(vm.state, req.state);
                    let changed = before
                        .vms
                        .iter()
                        .any(|v| v.name == name && v.state != req.state);
                    let reports: Vec<_> = std::iter::from_fn(|| agent.poll_report()).collect();
                    assert_eq!(reports.len(), usize::from(changed), "one report per change");
                    for r in reports {
                        assert_eq!((r.vm.as_str(), r.state), (name, req.state));
                        assert_eq!(r.boot_epoch, Some(BOOT_EPOCH));
                    }
                }
                Err(e) => refused(agent, &before, &e),
            }
        }
        2 => {
            let Some(cfg) = parse::<SidConfig>(body) else {
                return;
            };
            let sid = cfg.sid;
            match agent.install_sid(cfg) {
                Ok(s) => {
                    assert_eq!(s.sid, sid);
                    assert!(agent.status(&[]).sids.iter().any(|s| s.sid == sid));
                }
                Err(e) => refused(agent, &before, &e),
            }
        }
        3 => {
            let Some(sid) = std::str::from_utf8(body)
                .ok()
                .and_then(|s| s.parse::<Ipv6Addr>().ok())
            else {
                return;
            };
            match agent.remove_sid(sid) {
                Ok(()) => assert!(!agent.status(&[]).sids.iter().any(|s| s.sid == sid)),
                Err(e) => refused(agent, &before, &e),
            }
        }
        4 => {
            let [epoch, generation] = numbers(body);
            let mut config = hc(generation);
            config.epoch = epoch;
            apply(agent, &before, config);
        }
        _ => {
            agent.port_attachment(now, VM_PORT, body.first() == Some(&b'u'));
            while let Some(r) = agent.poll_report() {
                assert_eq!(r.boot_epoch, Some(BOOT_EPOCH));
            }
        }
    }
}

/// The testkit node with small buffers, parsed once.
fn node() -> NodeConfig {
    static NODE: OnceLock<NodeConfig> = OnceLock::new();
    NODE.get_or_init(|| {
        let mut node = base();
        node.buffer.per_vm_packets = 16;
        node.buffer.per_vm_bytes = 16 * 1500;
        node.buffer.global_packets = 32;
        node.buffer.global_bytes = 32 * 1500;
        // A small fence store too: it is built when the first fence is armed (zeroed: with the
        // default 8 MiB of it, that zeroing was a sixth of the run).
        node.fence.per_ingress_packets = 16;
        node.fence.global_packets = 32;
        node.fence.global_bytes = 32 * 1500;
        node
    })
    .clone()
}

/// The agent every input starts from: built once, cloned per input (`Agent: Clone`), so that
/// every input starts from exactly the same state without building the engine again.
fn fresh_agent() -> Agent {
    static AGENT: OnceLock<Agent> = OnceLock::new();
    AGENT
        .get_or_init(|| {
            let host = HostId::new("h1").expect("host name");
            Agent::new(host, node(), BOOT_EPOCH).expect("testkit node config is valid")
        })
        .clone()
}

fuzz_target!(|data: &[u8]| {
    let mut agent = fresh_agent();
    let mut now = Instant::ZERO;
    for record in data.split(|b| *b == 0) {
        let Some((&kind, body)) = record.split_first() else {
            continue;
        };
        now = Instant::from_millis(now.as_nanos() / 1_000_000 + 1);
        request(&mut agent, now, kind, body);
    }
    round_trip(&agent.status(&[]));
});
