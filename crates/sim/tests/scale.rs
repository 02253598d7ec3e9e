//! A short `sim scale` (what CI runs): every strategy over the same small data center and
//! schedule; sr-buffer loses, duplicates and reorders nothing, the others lose probes.

use srmig_api::Strategy;
use srmig_sim::scale::{self, ScaleParams};

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
    assert_eq!(r.strategies.len(), 3);
    for f in &r.strategies {
        assert_eq!(f.completed, 20, "{f:?}");
        assert!(f.probes_sent > 1000, "{f:?}");
        assert!(f.sim_seconds > 1.0 && f.wall_seconds > 0.0 && f.speedup > 0.0);
        assert!(f.config_pushes + f.delta_pushes > 20 * 20, "{f:?}");
        assert_eq!(f.arm_ms.n, 20);
        match f.strategy {
            Strategy::SrBuffer => {
                assert_eq!((f.lost, f.duplicated, f.reordered), (0, 0, 0), "{f:?}");
                assert!(f.invariant_checks > f.probes_sent / 2);
            }
            _ => assert!(f.lost > 0, "{f:?}"),
        }
    }
    let json = serde_json::to_value(&r).expect("json");
    for key in ["sim_seconds", "wall_seconds", "speedup"] {
        assert!(json[key].as_f64().is_some(), "{key}");
    }
}
