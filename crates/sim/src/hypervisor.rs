//! Live migration as QEMU runs it, in virtual time: how long pre-copy lasts and how long the
//! guest is paused ([`plan`]). The world applies it: the VM's port goes down at the source
//! when the pause starts (the signal srmigd sees: QEMU stops the guest, the link drops) and
//! comes up at the destination when it resumes; the hypervisor then reports completion to
//! the controller, as srmig's QMP driver does.

use crate::scenario::MigrationModel;

/// One migration's timing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timing {
    /// From the start to the pause, ms (setup and pre-copy rounds).
    pub precopy_ms: f64,
    /// The stop-and-copy pause, ms.
    pub pause_ms: f64,
    /// Pre-copy rounds (1 for the fixed model).
    pub rounds: u32,
}

/// The timing of one migration under `model`.
///
/// QEMU's pre-copy: round 0 sends the whole memory; each next round sends what the guest
/// dirtied during the previous one (at most the whole memory); when the rest would take no
/// longer than the downtime limit, or after `max_rounds`, QEMU stops the guest and sends the
/// rest during the pause, plus a fixed switchover (device state, the destination's start).
pub fn plan(model: MigrationModel) -> Timing {
    match model {
        MigrationModel::Fixed {
            precopy_ms,
            pause_ms,
        } => Timing {
            precopy_ms,
            pause_ms,
            rounds: 1,
        },
        MigrationModel::Qemu {
            memory_mib,
            dirty_mib_s,
            bandwidth_mib_s,
            downtime_limit_ms,
            max_rounds,
            setup_ms,
            switchover_ms,
        } => {
            let mut t = setup_ms;
            let mut remaining = memory_mib;
            let mut rounds = 0;
            loop {
                let last = remaining / bandwidth_mib_s * 1000.0;
                if rounds > 0 && (last <= downtime_limit_ms || rounds >= max_rounds) {
                    return Timing {
                        precopy_ms: t,
                        pause_ms: last + switchover_ms,
                        rounds,
                    };
                }
                t += last;
                rounds += 1;
                remaining = (dirty_mib_s * last / 1000.0).min(memory_mib);
            }
        }
    }
}

/// `model` for one guest, scaled by `factor` (see `Scenario::migration_spread`): memory and
/// dirty rate for QEMU's model, pre-copy and pause for the fixed one.
pub fn scaled(model: MigrationModel, factor: f64) -> MigrationModel {
    match model {
        MigrationModel::Fixed {
            precopy_ms,
            pause_ms,
        } => MigrationModel::Fixed {
            precopy_ms: precopy_ms * factor,
            pause_ms: pause_ms * factor,
        },
        MigrationModel::Qemu {
            memory_mib,
            dirty_mib_s,
            bandwidth_mib_s,
            downtime_limit_ms,
            max_rounds,
            setup_ms,
            switchover_ms,
        } => MigrationModel::Qemu {
            memory_mib: memory_mib * factor,
            dirty_mib_s: dirty_mib_s * factor,
            bandwidth_mib_s,
            downtime_limit_ms,
            max_rounds,
            setup_ms,
            switchover_ms,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qemu(memory_mib: f64, dirty_mib_s: f64, max_rounds: u32) -> MigrationModel {
        MigrationModel::Qemu {
            memory_mib,
            dirty_mib_s,
            bandwidth_mib_s: 1000.0,
            downtime_limit_ms: 300.0,
            max_rounds,
            setup_ms: 100.0,
            switchover_ms: 20.0,
        }
    }

    #[test]
    fn fixed_is_as_given() {
        let t = plan(MigrationModel::Fixed {
            precopy_ms: 500.0,
            pause_ms: 175.0,
        });
        assert_eq!((t.precopy_ms, t.pause_ms, t.rounds), (500.0, 175.0, 1));
    }

    #[test]
    fn precopy_converges_when_the_guest_dirties_slowly() {
        // 4 GiB at 1000 MiB/s: 4096 ms, then 100 MiB/s dirtied -> 409.6 MiB: 409.6 ms, then
        // 41 MiB: 41 ms <= 300 ms: pause 41 + 20 ms.
        let t = plan(qemu(4096.0, 100.0, 30));
        assert_eq!(t.rounds, 2);
        assert!(
            (t.precopy_ms - (100.0 + 4096.0 + 409.6)).abs() < 1e-6,
            "{t:?}"
        );
        assert!((t.pause_ms - (40.96 + 20.0)).abs() < 1e-6, "{t:?}");
    }

    #[test]
    fn a_guest_dirtying_faster_than_the_link_stops_after_max_rounds() {
        let t = plan(qemu(1024.0, 5000.0, 5));
        assert_eq!(t.rounds, 5);
        assert!((t.pause_ms - (1024.0 + 20.0)).abs() < 1e-6, "{t:?}");
    }
}
