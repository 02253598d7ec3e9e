//! srmigd's control API request bodies, parsed as its handlers parse them
//! (`crates/hostd/src/api.rs`) and applied to a real [`Agent`] on the testkit node
//! (`srmig_agent::testkit::base()`, the node of the agent's unit tests, with End.SBUF buffers
//! and a fence store of a few packets, which no packet goes through), cloned for every input from one
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
//! | 6 | `PATCH /v1/config` | `srmig_api::HostConfigDelta` JSON |
//! | 7 | `PATCH /v1/config` of a delta from the config in force to a changed one | one byte per change (below) |
//!
//! Kind 4 reaches the "config in force" paths (same version, older, newer epoch) without
//! depending on the fuzzer to write a valid host config. Kind 7 does the same for deltas: it
//! changes the config in force (each byte, modulo 8: far1's steering native or encapsulated,
//! a mapping added for `app0`..`app3`, a mapping removed, web1 no longer or again local, an
//! address more for web1, a SID entry removed, End.SBUF of db1 dropping or buffering, one
//! generation more), then sends `delta_to` of it, as the controller would.
//!
//! A delta (kinds 6 and 7) applied must leave the agent exactly as the whole config it makes
//! would (same status, same steering for every address of either config), and one refused
//! must change nothing; a delta that a config in force turns into a valid config that the
//! agent takes whole is not refused as invalid.
#![no_main]

use std::net::Ipv6Addr;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;
use srmig_agent::testkit::{base, hc};
use srmig_agent::{Agent, AgentError, POLICY_PREFIX};
use srmig_api::{
    Encaps, Headend, HostConfig, HostConfigDelta, HostId, HostStatus, LocalVm, Mapping, SbufMode,
    SidEntry, Steering, VmId,
};
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

/// Every address `config` maps, with what the engine does with it.
fn steering_of(
    agent: &mut Agent,
    config: &HostConfig,
) -> Vec<(std::net::IpAddr, Option<&'static str>)> {
    let dp = agent.dataplane();
    config
        .mappings
        .iter()
        .flat_map(|m| m.addresses.iter())
        .map(|a| {
            let how = dp.mapping(*a).map(|s| match s {
                srmig_dataplane::Steering::Native => "native",
                srmig_dataplane::Steering::Policy(_) => "policy",
            });
            (*a, how)
        })
        .collect()
}

/// Kinds 6 and 7: `delta` sent to the agent; checked against the whole config it makes.
fn apply_delta(agent: &mut Agent, before: &HostStatus, delta: &HostConfigDelta) {
    let in_force = agent.host_config().cloned();
    // What the delta makes of the config in force, taken whole by a copy of the agent.
    let expected = in_force.as_ref().and_then(|cur| {
        let mut next = cur.clone();
        next.apply_delta(delta).ok().map(|()| next)
    });
    let mut whole = agent.clone();
    let whole_result = expected.clone().map(|next| whole.apply_host_config(next));
    match agent.apply_host_config_delta(delta) {
        Ok(ack) => {
            assert_eq!((ack.epoch, ack.generation), delta.version());
            if in_force.as_ref().map(HostConfig::version) == Some(delta.version()) {
                // The version in force again: acknowledged, nothing changes.
                assert_eq!(
                    &agent.status(&[]),
                    before,
                    "a repeated delta changed the agent"
                );
                return;
            }
            let Some(expected) = expected else {
                panic!("a delta was applied that does not apply to the config in force");
            };
            assert_eq!(
                agent.host_config(),
                Some(&expected),
                "the delta made another config than its own"
            );
            match whole_result {
                Some(Ok(_)) => {}
                other => panic!("a delta was applied whose config is refused whole: {other:?}"),
            }
            assert_eq!(
                agent.status(&[]),
                whole.status(&[]),
                "the delta left the agent otherwise than the whole config"
            );
            // The engines too, with what the status does not show: a policy the plan dropped
            // but the engine kept.
            assert_eq!(
                engine_policies(agent),
                engine_policies(&mut whole),
                "the delta left other policies in the engine than the whole config"
            );
            let mut addresses = expected.clone();
            if let Some(cur) = &in_force {
                addresses.mappings.extend(cur.mappings.iter().cloned());
            }
            assert_eq!(
                steering_of(agent, &addresses),
                steering_of(&mut whole, &addresses),
                "the delta steers otherwise than the whole config"
            );
        }
        Err(e) => {
            if let (Some(Ok(_)), AgentError::Invalid(_)) = (&whole_result, &e) {
                panic!("a delta was refused as invalid ({e}), its config was taken whole");
            }
            refused(agent, before, &e);
        }
    }
}

/// The names of the policies in `agent`'s engine, sorted.
fn engine_policies(agent: &mut Agent) -> Vec<String> {
    let mut names: Vec<String> = agent
        .dataplane()
        .policy_names()
        .map(str::to_owned)
        .collect();
    names.sort_unstable();
    names
}

/// Kind 7: the config in force changed by `changes` (see the module docs), as a delta.
fn changed_delta(in_force: &HostConfig, changes: &[u8]) -> HostConfigDelta {
    let mut next = in_force.clone();
    next.generation = in_force.generation.saturating_add(1);
    let vm = |name: &str| VmId::new(name).expect("a valid VM name");
    let web1 = vm("web1");
    for &c in changes.iter().take(8) {
        let n = u16::from(c / 8 % 4);
        match c % 8 {
            0 => {
                if let Some(m) = next.mappings.iter_mut().find(|m| m.vm.as_str() == "far1") {
                    m.steering = match m.steering {
                        Steering::Native => Steering::Encaps(Encaps {
                            segments: vec![
                                "fc00:0:2::e5".parse().expect("SID"),
                                "fc00:0:3::eb".parse().expect("SID"),
                            ],
                            headend: Headend::HEncaps,
                        }),
                        Steering::Encaps(_) => Steering::Native,
                    };
                }
            }
            1 => {
                let name = vm(&format!("app{n}"));
                next.mappings.retain(|m| m.vm != name);
                next.mappings.push(Mapping {
                    vm: name,
                    addresses: vec![format!("2001:db8:b::{}", n + 1).parse().expect("address")],
                    steering: Steering::Encaps(Encaps {
                        segments: vec!["fc00:0:2::d6".parse().expect("SID")],
                        headend: Headend::HEncapsRed,
                    }),
                    fence: c & 0x80 != 0,
                });
            }
            2 => {
                if !next.mappings.is_empty() {
                    let i = usize::from(n) % next.mappings.len();
                    next.mappings.remove(i);
                }
            }
            3 => {
                if next.local_vms.iter().any(|l| l.vm == web1) {
                    next.local_vms.retain(|l| l.vm != web1);
                } else {
                    next.local_vms.push(LocalVm {
                        vm: web1.clone(),
                        addresses: vec!["2001:db8:a::10".parse().expect("address")],
                        mac: "52:54:00:00:00:10".parse().expect("MAC"),
                    });
                }
            }
            4 => {
                if let Some(m) = next.mappings.iter_mut().find(|m| m.vm == web1) {
                    let extra = "2001:db8:a::11".parse().expect("address");
                    if !m.addresses.contains(&extra) {
                        m.addresses.push(extra);
                    }
                }
            }
            5 => {
                if !next.sids.is_empty() {
                    let i = usize::from(n) % next.sids.len();
                    next.sids.remove(i);
                }
            }
            6 => {
                for s in &mut next.sids {
                    if let SidEntry::EndSbuf { vm, mode, .. } = s {
                        if vm.as_str() == "db1" {
                            *mode = match mode {
                                SbufMode::Buffer => SbufMode::Drop,
                                SbufMode::Drop => SbufMode::Buffer,
                            };
                        }
                    }
                }
            }
            _ => next.generation = next.generation.saturating_add(1),
        }
    }
    next.mappings.sort_by(|a, b| a.vm.cmp(&b.vm));
    next.local_vms.sort_by(|a, b| a.vm.cmp(&b.vm));
    in_force.delta_to(&next)
}

/// One request. The status before it is taken once its body parsed, right before the agent
/// gets it (most fuzzed bodies do not parse: taken for every record, it was a sixth of this
/// target's time).
fn request(agent: &mut Agent, now: Instant, kind: u8, body: &[u8]) {
    match kind.wrapping_sub(b'0') % 8 {
        0 => {
            if let Some(config) = parse::<HostConfig>(body) {
                let before = agent.status(&[]);
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
            let before = agent.status(&[]);
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
            let before = agent.status(&[]);
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
            let before = agent.status(&[]);
            match agent.remove_sid(sid) {
                Ok(()) => assert!(!agent.status(&[]).sids.iter().any(|s| s.sid == sid)),
                Err(e) => refused(agent, &before, &e),
            }
        }
        4 => {
            let [epoch, generation] = numbers(body);
            let mut config = testkit_config(generation);
            config.epoch = epoch;
            let before = agent.status(&[]);
            apply(agent, &before, config);
        }
        6 => {
            if let Some(delta) = parse::<HostConfigDelta>(body) {
                let before = agent.status(&[]);
                apply_delta(agent, &before, &delta);
            }
        }
        7 => {
            let Some(in_force) = agent.host_config().cloned() else {
                return;
            };
            let delta = changed_delta(&in_force, body);
            let before = agent.status(&[]);
            apply_delta(agent, &before, &delta);
        }
        _ => {
            agent.port_attachment(now, VM_PORT, body.first() == Some(&b'u'));
            while let Some(r) = agent.poll_report() {
                assert_eq!(r.boot_epoch, Some(BOOT_EPOCH));
            }
        }
    }
}

/// The testkit's `hc(generation)`, parsed once (its JSON was a twentieth of this target's
/// time): it differs from `hc(0)` only in its generation.
fn testkit_config(generation: u64) -> HostConfig {
    static HC: OnceLock<HostConfig> = OnceLock::new();
    let mut config = HC.get_or_init(|| hc(0)).clone();
    config.generation = generation;
    config
}

/// The testkit node with small buffers, parsed once.
fn node() -> NodeConfig {
    static NODE: OnceLock<NodeConfig> = OnceLock::new();
    NODE.get_or_init(|| {
        // No packet goes through these engines: their End.SBUF and fence stores hold nothing
        // and only have to exist. Kept at a few packets, because every agent is a clone and
        // every delta clones the agent again, stores included (at 32 packets each, the copies
        // of their 64 KB arenas took 6 % of the CPU time).
        let mut node = base();
        node.buffer.per_vm_packets = 2;
        node.buffer.per_vm_bytes = 2 * 1500;
        node.buffer.global_packets = 4;
        node.buffer.global_bytes = 4 * 1500;
        // The fence store is built when the first fence is armed (zeroed: with the default
        // 8 MiB of it, that zeroing was a sixth of the run).
        node.fence.per_ingress_packets = 2;
        node.fence.global_packets = 4;
        node.fence.global_bytes = 4 * 1500;
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
