//! `srmig sim paper | scale | run`: flags and output of the simulator (crate `srmig-sim`).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Subcommand;
use srmig_sim::paper::{self, PaperParams};
use srmig_sim::scale::{self, ScaleParams, ScaleReport, StrategyFigures};
use srmig_sim::SimStrategy;

#[derive(Debug, Subcommand)]
pub(crate) enum SimCommand {
    /// The paper's experiment in virtual time (3 hosts, one VM moving S -> D -> S, the four
    /// configurations and an OVN-like baseline, probe, HTTP and TCP workloads), printed as
    /// `srmig lab paper` prints it.
    Paper {
        /// Seed of every random choice.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Migrations per configuration.
        #[arg(long, default_value_t = 5)]
        migrations: u32,
        /// Delay of every controller config push, in milliseconds (as `lab paper`).
        #[arg(long, default_value_t = 100)]
        propagation_delay_ms: u64,
        /// Rate of the TCP bulk transfer toward the VM, in Mb/s (0: no TCP workload).
        #[arg(long, default_value_t = 1000.0)]
        tcp_mbps: f64,
        /// OVN-like row: how long after the guest resumes the destination's chassis starts
        /// delivering (its reaction to the RARP), in milliseconds. An assumption, not a
        /// measurement (docs/sim.md).
        #[arg(long, default_value_t = 1.0)]
        ovn_activation_ms: f64,
        /// Print the lab-shaped reports (one per configuration) as JSON instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Many hosts, VMs and migrations: loss, network downtime, time to arm and commit the
    /// path, message counts and the speedup over real time, per strategy.
    Scale {
        /// Hosts.
        #[arg(long, default_value_t = 100)]
        hosts: usize,
        /// VMs, spread evenly over the hosts.
        #[arg(long, default_value_t = 1000)]
        vms: usize,
        /// Migrations (each of a different VM, to a random other host).
        #[arg(long, default_value_t = 100)]
        migrations: usize,
        /// Migrations in flight at once.
        #[arg(long, default_value_t = 10)]
        concurrent: usize,
        /// Seed of every random choice.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Strategies, comma-separated: srmig's traditional, sr-drop and sr-buffer, and
        /// ovn-like (OVN's port bound to both chassis: clone to both, activate at the RARP;
        /// see docs/sim.md).
        #[arg(long, default_value = "traditional,sr-drop,sr-buffer,ovn-like")]
        strategies: String,
        /// Probe interval toward each migrating VM, in milliseconds.
        #[arg(long, default_value_t = 10.0)]
        probe_interval_ms: f64,
        /// Guest memory of every VM (QEMU's pre-copy model), in MiB.
        #[arg(long, default_value_t = 1024.0)]
        memory_mib: f64,
        /// VMs per virtual network (tenant): a host is told only about the VMs of the
        /// networks it hosts. 0: no networks, every host is told about every VM.
        #[arg(long, default_value_t = 20)]
        network_size: usize,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run a scenario file: topology, control network, migration model, schedule, partitions
    /// and crashes (see docs/sim.md).
    Run {
        /// The scenario (TOML).
        scenario: PathBuf,
        /// Print the figures as JSON.
        #[arg(long)]
        json: bool,
    },
}

fn parse_strategy(s: &str) -> Result<SimStrategy> {
    s.trim().parse::<SimStrategy>().map_err(anyhow::Error::msg)
}

pub(crate) fn cmd_sim(what: SimCommand) -> Result<()> {
    match what {
        SimCommand::Paper {
            seed,
            migrations,
            propagation_delay_ms,
            tcp_mbps,
            ovn_activation_ms,
            json,
        } => {
            anyhow::ensure!(
                tcp_mbps.is_finite() && (0.0..=100_000.0).contains(&tcp_mbps),
                "--tcp-mbps must be between 0 and 100000"
            );
            anyhow::ensure!(
                ovn_activation_ms.is_finite() && (0.0..=60_000.0).contains(&ovn_activation_ms),
                "--ovn-activation-ms must be between 0 and 60000"
            );
            let p = PaperParams {
                seed,
                migrations,
                propagation_delay_ms: propagation_delay_ms as f64,
                tcp_mbps,
                ovn_activation_ms,
                ..PaperParams::default()
            };
            let runs = paper::run(&p)?;
            if json {
                let reports: Vec<_> = runs
                    .iter()
                    .map(|(s, _, r)| {
                        serde_json::json!({
                            "configuration": s.name(),
                            "report": r,
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&reports)?);
            } else {
                let rows: Vec<_> = runs.iter().map(|(s, _, r)| (s.name(), r)).collect();
                print!("{}", srmig_lab::paper::paper_table(&rows));
                let tcp = if tcp_mbps > 0.0 {
                    format!("TCP paced at {tcp_mbps} Mb/s")
                } else {
                    "no TCP".to_owned()
                };
                println!(
                    "(simulated: seed {seed}, {migrations} migrations per configuration, pre-copy \
                     {:.0} ms, pause {:.0} ms, push delay {propagation_delay_ms} ms, {tcp}, \
                     OVN-like activated {ovn_activation_ms} ms after the resume)",
                    p.precopy_ms, p.pause_ms
                );
            }
            Ok(())
        }
        SimCommand::Scale {
            hosts,
            vms,
            migrations,
            concurrent,
            seed,
            strategies,
            probe_interval_ms,
            memory_mib,
            network_size,
            json,
        } => {
            let strategies = strategies
                .split(',')
                .map(parse_strategy)
                .collect::<Result<Vec<_>>>()?;
            let strategies_count = strategies.len();
            let p = ScaleParams {
                hosts,
                vms,
                migrations,
                concurrent,
                seed,
                strategies,
                probe_interval_ms,
                memory_mib,
                network_size,
                // One strategy: the process exits after the report, and its exit frees the
                // data center (seconds of freeing one by one otherwise).
                leak_at_end: strategies_count == 1,
            };
            let report = if p.strategies.len() > 1 {
                scale_in_processes(&p)?
            } else {
                scale::run(&p, |s| eprintln!("sim scale: {s}"))?
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print_scale(&report);
            }
            Ok(())
        }
        SimCommand::Run { scenario, json } => {
            let text = std::fs::read_to_string(&scenario)
                .with_context(|| format!("reading {}", scenario.display()))?;
            let sc = srmig_sim::Scenario::from_toml(&text)
                .with_context(|| format!("scenario {}", scenario.display()))?;
            let f = scale::run_scenario(&sc)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&f)?);
            } else {
                print_figures(&f);
            }
            Ok(())
        }
    }
}

/// Runs each strategy of `p` in its own `srmig sim scale` process and merges their reports;
/// the total wall time is this process's, processes included.
///
/// Each strategy builds its own data center (3.3 GB for 10,000 hosts and 100,000 VMs). In one
/// process the next one was built in the heap the previous one left: glibc serves the
/// zeroed End.SBUF arenas from it, written whole, where a fresh process maps them untouched,
/// and its memory grew with each (1.6, 3.4, 14.5 GB for three 5,000-host data centers, the
/// third built 12x slower). A process per strategy measures each as if run alone.
fn scale_in_processes(p: &ScaleParams) -> Result<ScaleReport> {
    let exe = std::env::current_exe().context("finding this executable")?;
    let t0 = std::time::Instant::now();
    let mut strategies = Vec::new();
    let mut first: Option<ScaleReport> = None;
    for &s in &p.strategies {
        let out = std::process::Command::new(&exe)
            .args([
                "sim",
                "scale",
                "--json",
                "--strategies",
                scale::strategy_name(s),
            ])
            .args(["--hosts", &p.hosts.to_string(), "--vms", &p.vms.to_string()])
            .args(["--migrations", &p.migrations.to_string()])
            .args(["--concurrent", &p.concurrent.to_string()])
            .args(["--seed", &p.seed.to_string()])
            .args(["--probe-interval-ms", &p.probe_interval_ms.to_string()])
            .args(["--memory-mib", &p.memory_mib.to_string()])
            .args(["--network-size", &p.network_size.to_string()])
            .stderr(std::process::Stdio::inherit())
            .output()
            .with_context(|| format!("running {}", exe.display()))?;
        anyhow::ensure!(
            out.status.success(),
            "the {} run failed ({})",
            scale::strategy_name(s),
            out.status
        );
        let r: ScaleReport = serde_json::from_slice(&out.stdout)
            .with_context(|| format!("reading the {} run's report", scale::strategy_name(s)))?;
        strategies.extend(r.strategies.iter().cloned());
        first.get_or_insert(r);
    }
    let first = first.context("no strategy to run")?;
    let sim_seconds = strategies.iter().map(|f| f.sim_seconds).sum::<f64>();
    let wall_seconds = t0.elapsed().as_secs_f64();
    Ok(ScaleReport {
        strategies,
        sim_seconds,
        wall_seconds,
        speedup: sim_seconds / wall_seconds.max(1e-9),
        ..first
    })
}

fn print_scale(r: &ScaleReport) {
    println!(
        "{} hosts, {} VMs, {} migrations per strategy ({} at a time), seed {}",
        r.hosts, r.vms, r.migrations, r.concurrent, r.seed
    );
    for f in &r.strategies {
        print_figures(f);
    }
    println!(
        "all: {:.1} s simulated in {:.1} s: {:.1}x real time",
        r.sim_seconds, r.wall_seconds, r.speedup
    );
}

fn print_figures(f: &StrategyFigures) {
    println!(
        "{:<12} completed {}, rolled back {}, refused {}; probes lost {} of {}, duplicated {}, \
         reordered {}",
        scale::strategy_name(f.strategy),
        f.completed,
        f.rolled_back,
        f.refused,
        f.lost,
        f.probes_sent,
        f.duplicated,
        f.reordered
    );
    let s =
        |x: &scale::Spread| format!("p50 {:.1} / p99 {:.1} / max {:.1} ms", x.p50, x.p99, x.max);
    println!(
        "             network downtime {}",
        s(&f.network_downtime_ms)
    );
    println!("             pause            {}", s(&f.pause_ms));
    println!("             arm              {}", s(&f.arm_ms));
    println!("             commit           {}", s(&f.commit_ms));
    println!(
        "             messages: controller {} ({} whole configs, {} deltas), hosts {}; {} \
         frames, {} events, {} invariant checks",
        f.controller_messages,
        f.config_pushes,
        f.delta_pushes,
        f.agent_messages,
        f.frames,
        f.events,
        f.invariant_checks
    );
    println!(
        "             {:.1} s simulated in {:.1} s (setup {:.1} s): {:.1}x real time",
        f.sim_seconds, f.wall_seconds, f.setup_wall_seconds, f.speedup
    );
}
