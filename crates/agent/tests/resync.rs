//! The agent and the controller core together, in virtual time: configs flow from the
//! `Controller` to the `Agent` and acknowledgements back, as srmigd and the controller daemon
//! carry them, through srmigd restarts (a new `Agent`, a new boot epoch, no config), a
//! controller on a new store, and a hand-made push that would lock a host out.

use srmig_agent::testkit::base;
use std::collections::BTreeMap;

use srmig_agent::{Agent, AgentError};
use srmig_api::{
    Ack, HostConfig, HostConfigDelta, HostId, HostInfo, MacAddr, MigrateRequest, MigrationPhase,
    Steering, Strategy, Timestamp, VmId, VmInfo,
};
use srmig_control::{Action, Controller, ControllerConfig, HostObservation};
use srmig_dataplane::{Instant, PortId};

fn hid(n: &str) -> HostId {
    HostId::new(n).expect("host name")
}

fn host_info(n: u16) -> HostInfo {
    let a = |s: String| s.parse().expect("address");
    HostInfo {
        name: hid(&format!("h{n}")),
        locator: format!("fc00:0:{n}::/48").parse().expect("locator"),
        sid_end_s: a(format!("fc00:0:{n}::e5")),
        sid_end_sbuf: a(format!("fc00:0:{n}::eb")),
        sid_dt6: a(format!("fc00:0:{n}::d6")),
        underlay: a(format!("2001:db8:ff::{n}")),
    }
}

/// Controller + the srmigd of `h1` (an [`Agent`] on the test node config) + `h2`, which
/// acknowledges whatever it is sent.
struct World {
    c: Controller,
    h1: Agent,
    now: u64,
    /// Pushes `h1` refused (409: older than what it holds).
    refused: Vec<HostConfig>,
    /// The whole config the pushes to each host make, as the daemon's push task keeps it.
    desired: BTreeMap<HostId, HostConfig>,
}

/// A push as the daemon's push task sends it: the whole config it makes, and the delta when
/// the core pushed one.
struct Push {
    host: HostId,
    config: HostConfig,
    delta: Option<HostConfigDelta>,
}

impl Push {
    /// Delivers to `agent` as the push task does: the delta, or the whole config when the
    /// agent cannot apply the delta (`base-mismatch`) or there is none.
    fn to(&self, agent: &mut Agent) -> Result<Ack, AgentError> {
        match &self.delta {
            Some(d) => match agent.apply_host_config_delta(d) {
                Err(AgentError::BaseMismatch(_)) => agent.apply_host_config(self.config.clone()),
                other => other,
            },
            None => agent.apply_host_config(self.config.clone()),
        }
    }

    /// The acknowledgement of a host that applies whatever it is sent.
    fn ack(&self) -> Ack {
        Ack {
            host: self.host.clone(),
            epoch: self.config.epoch,
            generation: self.config.generation,
            boot_epoch: 5,
        }
    }
}

impl World {
    fn new(epoch: u64) -> World {
        let mut c = Controller::with_epoch(ControllerConfig::default(), epoch);
        c.add_host(host_info(1)).expect("h1");
        c.add_host(host_info(2)).expect("h2");
        c.add_vm(VmInfo {
            name: VmId::new("web1").expect("vm"),
            addresses: vec!["2001:db8:a::10".parse().expect("addr")],
            mac: "52:54:00:00:00:10".parse::<MacAddr>().expect("mac"),
            host: hid("h1"),
            network: None,
        })
        .expect("vm");
        let mut w = World {
            c,
            h1: srmigd(1),
            now: 1,
            refused: Vec::new(),
            desired: BTreeMap::new(),
        };
        w.deliver();
        w
    }

    /// The push an action is, or the action back.
    fn push(&mut self, a: Action) -> Result<Push, Box<Action>> {
        match a {
            Action::PushConfig { host, config } => {
                self.desired.insert(host.clone(), config.clone());
                Ok(Push {
                    host,
                    config,
                    delta: None,
                })
            }
            Action::PushDelta { host, delta } => {
                let config = self
                    .desired
                    .get_mut(&host)
                    .expect("a whole push came first");
                config
                    .apply_delta(&delta)
                    .expect("the delta applies to the previous push");
                Ok(Push {
                    host,
                    config: config.clone(),
                    delta: Some(delta),
                })
            }
            other => Err(Box::new(other)),
        }
    }

    fn tick(&mut self) -> Timestamp {
        self.now += 1;
        Timestamp(self.now)
    }

    /// Carries pushes to the hosts, acknowledgements and `h1`'s VM state reports back,
    /// until nothing moves; returns the other actions.
    fn deliver(&mut self) -> Vec<Action> {
        let mut others = Vec::new();
        loop {
            let mut moved = false;
            while let Some(r) = self.h1.poll_report() {
                let now = self.tick();
                // db1 is in the node config, not registered with the controller: refused
                // (404), its boot epoch still seen.
                match self.c.handle_vm_state(now, r) {
                    Ok(()) | Err(srmig_control::InputError::UnknownVm(_)) => {}
                    Err(e) => panic!("report refused: {e}"),
                }
                moved = true;
            }
            while let Some(a) = self.c.poll_action() {
                moved = true;
                let now = self.tick();
                match self.push(a) {
                    Ok(p) if p.host.as_str() == "h1" => match p.to(&mut self.h1) {
                        Ok(ack) => self.c.handle_ack(now, ack).expect("ack"),
                        Err(e) => {
                            assert_eq!(e.http_status(), 409, "{e}");
                            self.refused.push(p.config);
                        }
                    },
                    Ok(p) => self.c.handle_ack(now, p.ack()).expect("ack"),
                    Err(other) => others.push(*other),
                }
            }
            if !moved {
                return others;
            }
        }
    }

    /// The controller daemon's heartbeat poll of `h1` (`GET /v1/status`).
    fn poll_h1(&mut self) {
        let st = self.h1.status(&[]);
        let seen = HostObservation {
            boot_epoch: st.boot_epoch,
            in_force: st.generation.map(|g| (st.epoch.unwrap_or(0), g)),
        };
        let now = self.tick();
        self.c
            .handle_host_status(now, &hid("h1"), seen)
            .expect("status");
        self.deliver();
    }

    /// `h1`'s version in force.
    fn h1_version(&self) -> Option<(u64, u64)> {
        let st = self.h1.status(&[]);
        st.generation.map(|g| (st.epoch.unwrap_or(0), g))
    }

    fn in_sync(&self) -> bool {
        let pushed = self.c.pushed_config(&hid("h1")).expect("pushed");
        self.h1_version() == Some(pushed.version())
            && self.c.acked_generation(&hid("h1")) == Some(pushed.generation)
    }
}

/// A fresh srmigd on `h1` with boot epoch `boot`, its VM port up.
fn srmigd(boot: u64) -> Agent {
    let mut a = Agent::new(hid("h1"), base(), boot).expect("agent");
    a.port_attachment(Instant::ZERO, PortId(1), true);
    a
}

#[test]
fn a_restarted_srmigd_gets_its_config_back_from_its_first_report() {
    let mut w = World::new(100);
    assert!(w.in_sync());
    let before = w.h1_version().expect("config");
    // srmigd restarts: no config; its VM port comes up and it reports, with its new epoch.
    w.h1 = srmigd(2);
    assert_eq!(w.h1_version(), None);
    w.deliver();
    let after = w.h1_version().expect("config again");
    assert!(after > before, "{after:?} after {before:?}");
    assert!(w.in_sync());
    assert!(w.refused.is_empty());
}

#[test]
fn a_restarted_srmigd_that_reports_nothing_is_found_by_the_heartbeat() {
    let mut w = World::new(100);
    w.poll_h1(); // the first poll learns boot epoch 1
    w.h1 = Agent::new(hid("h1"), base(), 3).expect("agent"); // port down: no report
    w.deliver();
    assert_eq!(w.h1_version(), None, "nothing told the controller yet");
    w.poll_h1();
    assert!(w.in_sync());
    // A poll that sees everything as it should be pushes nothing.
    w.poll_h1();
    assert!(w.c.poll_action().is_none());
}

#[test]
fn a_lost_acknowledgement_is_made_up_by_the_heartbeat() {
    let mut w = World::new(100);
    let web1 = VmId::new("web1").expect("vm");
    w.c.request_migration(
        Timestamp(50),
        MigrateRequest {
            vm: web1,
            to: hid("h2"),
            strategy: Strategy::SrBuffer,
        },
    )
    .expect("migration");
    // h1 applies the prepare config, but its ack is lost on the way.
    let mut lost = 0;
    while let Some(a) = w.c.poll_action() {
        if let Ok(p) = w.push(a) {
            if p.host.as_str() == "h1" {
                p.to(&mut w.h1).expect("apply");
                lost += 1;
            } else {
                let now = w.tick();
                w.c.handle_ack(now, p.ack()).expect("ack");
            }
        }
    }
    assert_eq!(lost, 1);
    let id =
        w.c.migration_of(&VmId::new("web1").expect("vm"))
            .expect("id");
    assert_eq!(
        w.c.migration(id).expect("m").phase(),
        MigrationPhase::ExpectEndpointAcks
    );
    w.poll_h1();
    assert_ne!(
        w.c.migration(id).expect("m").phase(),
        MigrationPhase::ExpectEndpointAcks,
        "the config in force counts as the acknowledgement"
    );
}

#[test]
fn a_controller_on_a_new_store_is_accepted_with_lower_generations() {
    let mut w = World::new(100);
    // Push a few generations to h1 (new VMs elsewhere change its mappings).
    for i in 0..5u16 {
        w.c.add_vm(VmInfo {
            name: VmId::new(format!("far{i}")).expect("vm"),
            addresses: vec![format!("2001:db8:b::{i}").parse().expect("addr")],
            mac: format!("52:54:00:00:01:{i:02x}").parse().expect("mac"),
            host: hid("h2"),
            network: None,
        })
        .expect("vm");
        w.deliver();
    }
    let (_, old_generation) = w.h1_version().expect("config");
    assert!(old_generation > 1);
    // The store is lost; a new controller starts at a later epoch, from generation 1, and
    // finds the running srmigd holding the old controller's config at its first look.
    let mut fresh = World::new(200);
    fresh.h1 = std::mem::replace(&mut w.h1, srmigd(9));
    fresh.poll_h1();
    assert!(fresh.refused.is_empty(), "{:?}", fresh.refused);
    let (epoch, generation) = fresh.h1_version().expect("config");
    assert_eq!(epoch, 200);
    assert!(generation < old_generation);
    assert!(fresh.in_sync());
}

#[test]
fn a_host_locked_by_a_huge_generation_is_healed_by_a_newer_epoch() {
    let mut w = World::new(100);
    // Someone pushes generation u64::MAX of the controller's own epoch by hand, without
    // web1's mapping.
    let mut evil = w.c.pushed_config(&hid("h1")).expect("pushed").clone();
    evil.generation = u64::MAX;
    evil.mappings.clear();
    evil.local_vms.clear();
    w.h1.apply_host_config(evil).expect("applied by hand");
    // The controller's next push (a new VM elsewhere) is refused...
    w.c.add_vm(VmInfo {
        name: VmId::new("far1").expect("vm"),
        addresses: vec!["2001:db8:b::1".parse().expect("addr")],
        mac: "52:54:00:00:01:01".parse().expect("mac"),
        host: hid("h2"),
        network: None,
    })
    .expect("vm");
    w.deliver();
    assert_eq!(w.refused.len(), 1);
    // ...and its next look at the host moves it past the host's epoch.
    w.poll_h1();
    let (epoch, _) = w.h1_version().expect("config");
    assert_eq!(epoch, 101);
    assert_eq!(w.c.epoch(), 101);
    assert!(w.in_sync());
    let cfg = w.c.pushed_config(&hid("h1")).expect("pushed");
    assert!(cfg
        .mappings
        .iter()
        .any(|m| m.vm.as_str() == "web1" && m.steering == Steering::Native));
}

#[test]
fn a_restart_in_the_middle_of_a_migration_only_delays_it() {
    let mut w = World::new(100);
    w.poll_h1();
    let web1 = VmId::new("web1").expect("vm");
    let id =
        w.c.request_migration(
            Timestamp(50),
            MigrateRequest {
                vm: web1.clone(),
                to: hid("h2"),
                strategy: Strategy::SrBuffer,
            },
        )
        .expect("migration");
    // srmigd h1 dies before the prepare config reaches it.
    w.h1 = srmigd(4);
    let others = w.deliver();
    assert!(
        others
            .iter()
            .any(|a| matches!(a, Action::StartMigration { .. })),
        "{others:?}"
    );
    assert_eq!(
        w.c.migration(id).expect("m").phase(),
        MigrationPhase::ExpectHypervisorDone
    );
    assert!(w.in_sync());
    // The source runs End.S for web1 (the prepare footprint), from the new srmigd.
    let st = w.h1.status(&[]);
    assert!(
        st.sids
            .iter()
            .any(|s| s.behavior == "End.S" && s.vm.as_deref() == Some("web1")),
        "{:?}",
        st.sids
    );
}

#[test]
fn a_push_acknowledged_by_a_restarted_srmigd_counts_for_the_migration_waiting_for_it() {
    let mut w = World::new(100);
    w.poll_h1();
    let web1 = VmId::new("web1").expect("vm");
    let id =
        w.c.request_migration(
            Timestamp(50),
            MigrateRequest {
                vm: web1,
                to: hid("h2"),
                strategy: Strategy::SrBuffer,
            },
        )
        .expect("migration");
    // srmigd h1 dies while the prepare push is on its way, and the push (retried by the
    // daemon) reaches the new srmigd before its first report does: the new srmigd's
    // acknowledgement is the first the controller hears of its new boot epoch.
    w.h1 = srmigd(4);
    while let Some(a) = w.c.poll_action() {
        let now = w.tick();
        match w.push(a) {
            Ok(p) if p.host.as_str() == "h1" => {
                // A delta the new srmigd cannot apply (it holds nothing) goes out whole.
                let ack = p.to(&mut w.h1).expect("applied");
                w.c.handle_ack(now, ack).expect("ack");
            }
            Ok(p) => w.c.handle_ack(now, p.ack()).expect("ack"),
            Err(_) => {}
        }
    }
    w.deliver();
    assert_eq!(
        w.c.migration(id).expect("m").phase(),
        MigrationPhase::ExpectHypervisorDone,
        "the acknowledgement of the prepare config by the restarted srmigd was not counted"
    );
    assert!(w.in_sync());
}

#[test]
fn a_version_at_a_reserved_epoch_never_moves_the_controller_there() {
    let mut w = World::new(100);
    w.poll_h1();
    assert!(w.in_sync());
    // An old or foreign srmigd claims a version at epoch u64::MAX (this srmigd would refuse
    // such a config): the controller stays at its epoch and pushes its config again.
    let now = w.tick();
    let boot = w.h1.boot_epoch();
    w.c.handle_host_status(
        now,
        &hid("h1"),
        HostObservation {
            boot_epoch: boot,
            in_force: Some((u64::MAX, u64::MAX)),
        },
    )
    .expect("status");
    assert_eq!(w.c.epoch(), 100);
    w.deliver();
    assert!(w.in_sync());
}
