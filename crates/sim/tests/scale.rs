//! A short `sim scale` (what CI runs): every strategy over the same small data center and
//! schedule; sr-buffer loses, duplicates and reorders nothing, the others lose probes.
//! Also the OVN-like baseline against `traditional` when the mapping update is slow.

use srmig_sim::scale::{self, ScaleParams};
use srmig_sim::SimStrategy;

#[test]
fn a_short_sim_scale_reports_every_strategy() {
    let p = ScaleParams {
        hosts: 20,
        vms: 200,
        migrations: 20,
        concurrent: 4,
        seed: 3,
        memory_mib: 512.0,
        ..ScaleParams::default()
    };
    let r = scale::run(&p, |_| {}).expect("runs");
    assert_eq!(r.strategies.len(), 4);
    for f in &r.strategies {
        assert_eq!(f.completed, 20, "{f:?}");
        assert!(f.probes_sent > 1000, "{f:?}");
        assert!(f.sim_seconds > 1.0 && f.wall_seconds > 0.0 && f.speedup > 0.0);
        assert!(f.config_pushes + f.delta_pushes > 20 * 20, "{f:?}");
        assert_eq!(f.arm_ms.n, 20);
        match f.strategy {
            SimStrategy::SrBuffer => {
                assert_eq!((f.lost, f.duplicated, f.reordered), (0, 0, 0), "{f:?}");
                assert!(f.invariant_checks > f.probes_sent / 2);
            }
            SimStrategy::OvnLike => {
                assert!(f.lost > 0, "{f:?}");
                assert_eq!((f.duplicated, f.reordered), (0, 0), "{f:?}");
            }
            _ => assert!(f.lost > 0, "{f:?}"),
        }
    }
    let json = serde_json::to_value(&r).expect("json");
    for key in ["sim_seconds", "wall_seconds", "speedup"] {
        assert!(json[key].as_f64().is_some(), "{key}");
    }
}

/// With a slow mapping update (100 ms per push), `traditional` loses the pause plus the
/// update, while OVN's clone to both chassis loses about the pause, as sr-drop does; no
/// strategy duplicates, and sr-buffer still loses nothing.
#[test]
fn ovn_like_loses_the_pause_where_traditional_also_loses_the_update() {
    let run = |strategy: SimStrategy| {
        let text = format!(
            "seed = 3\nhosts = 4\nvms_per_host = 6\nstrategy = \"{}\"\nrandom_migrations = 10\n\
             concurrent = 2\n[control]\npush_delay_ms = 100\n",
            strategy.name()
        );
        let sc = srmig_sim::Scenario::from_toml(&text).expect("scenario");
        let o = srmig_sim::run(&sc).expect("runs");
        (scale::figures(&o, 0.0, 1.0), o.stats)
    };
    let (traditional, _) = run(SimStrategy::Traditional);
    let (ovn, stats) = run(SimStrategy::OvnLike);
    let (drop, _) = run(SimStrategy::SrDrop);
    let (buffer, _) = run(SimStrategy::SrBuffer);
    for f in [&traditional, &ovn, &drop, &buffer] {
        assert_eq!(f.completed, 10, "{f:?}");
        assert_eq!(f.duplicated, 0, "{f:?}");
    }
    assert!(
        stats.ovn_clones > 0 && stats.ovn_clones_inactive > 0,
        "{stats:?}"
    );
    assert_eq!(buffer.lost, 0, "{buffer:?}");
    assert!(ovn.lost > 0, "{ovn:?}");
    assert!(
        ovn.lost * 4 < traditional.lost * 3,
        "OVN-like lost {} and traditional {}",
        ovn.lost,
        traditional.lost
    );
    // About the pause: within 10 % of sr-drop, which loses exactly the pause.
    assert!(
        ovn.lost.abs_diff(drop.lost) * 10 <= drop.lost,
        "OVN-like lost {} and sr-drop {}",
        ovn.lost,
        drop.lost
    );
}
