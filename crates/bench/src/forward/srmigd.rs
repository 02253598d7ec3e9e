//! srmigd as the DUT: its node configuration (what the reference's `srmigd_dut.sh` writes),
//! started in the dut namespace pinned to the DUT CPU through the lab guard (with `--workers N`,
//! N > 1: to the DUT CPU and N - 1 more, see [`dut_cpus`]), and stopped between cases.
//!
//! Ready means: its JSON log reported `port attached` for both d0 and d1 (it then has an
//! AF_PACKET socket on each and forwards).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use srmig_lab::MacAddr;

use super::topology::{
    Topology, ADDR_D1, ENCAP_PFX, MAC_D0, MAC_D1, MAC_G0, MAC_S0, NH6, PLAIN_PFX, SID_DX6, SID_END,
    SINK_PFX, SINK_SEG,
};
use super::{Case, ForwardError};

/// How long srmigd gets to attach both ports.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// Lines of its log quoted in errors.
const LOG_TAIL_LINES: usize = 20;

/// `transit` (ipv6, End, End.DX6, H.Encaps by a steering rule: d0 is an uplink) or `vmport`
/// (H.Encaps of a VM's traffic: the generator is a VM on d0).
fn vm_port(case: Case) -> bool {
    case == Case::HEncapsVm
}

/// The node configuration for `case`.
pub(crate) fn node_toml(case: Case) -> String {
    let (g0, d0, d1, s0) = (
        MacAddr(MAC_G0),
        MacAddr(MAC_D0),
        MacAddr(MAC_D1),
        MacAddr(MAC_S0),
    );
    let d0_port = if vm_port(case) {
        format!(
            r#"[[ports]]
name = "d0"
kind = "vm"
mac = "{d0}"

[[vms]]
name = "gen"
addresses = ["2001:db8:1::2"]
mac = "{g0}"
port = "d0"
state = "running"

[[policies]]
name = "enc"
headend = "H.Encaps"
segments = ["{SINK_SEG}"]

[[mappings]]
vm_address = "{ENCAP_PFX}"
policy = "enc"
"#
        )
    } else {
        format!(
            r#"[[ports]]
name = "d0"
kind = "uplink"
mac = "{d0}"
peer_mac = "{g0}"

[[policies]]
name = "enc"
headend = "H.Encaps"
segments = ["{SINK_SEG}"]

[[steering]]
prefix = "{ENCAP_PFX}"
policy = "enc"
"#
        )
    };
    format!(
        r#"locator = "fc00:1::/48"
source_address = "{ADDR_D1}"
infrastructure_prefixes = ["2001:db8:1::/64", "fc00::/8"]
gateway = {{ address = "fe80::1", mac = "02:00:00:00:00:fe" }}

{d0_port}
[[ports]]
name = "d1"
kind = "uplink"
mac = "{d1}"
peer_mac = "{s0}"

[[routes]]
prefix = "{PLAIN_PFX}"
port = "d1"

[[routes]]
prefix = "{SINK_PFX}"
port = "d1"

[[sids]]
sid = "{SID_END}"
behavior = "End"

[[sids]]
sid = "{SID_DX6}"
behavior = "End.DX6"
nexthop = "{NH6}"
port = "d1"
"#
    )
}

/// A running srmigd.
#[derive(Debug)]
pub(crate) struct Srmigd {
    pid: u32,
    log: PathBuf,
    /// Its API socket.
    socket: PathBuf,
    /// Whether d0 is on AF_XDP (its receive then runs in d0's NAPI, see
    /// [`Topology::steer_napi_to_dut`]).
    pub(crate) d0_xdp: bool,
}

impl Srmigd {
    /// Writes the configuration for `case` into `dir` and starts `bin` in the dut namespace
    /// on the DUT CPU; returns once both ports are attached.
    pub(crate) fn start(
        topo: &Topology,
        bin: &Path,
        dir: &Path,
        case: Case,
        opts: &super::Options,
    ) -> Result<Srmigd, ForwardError> {
        let (workers, io, fast_path) = (opts.workers, opts.io.as_str(), opts.fast_path);
        let file = |name: String| dir.join(name);
        let config = file(format!("{}.toml", case.key()));
        let socket = file(format!("{}.sock", case.key()));
        let log = file(format!("srmigd-{}.log", case.key()));
        let mut toml = node_toml(case) + &format!("\n[io]\nmode = \"{io}\"\n");
        if fast_path && io != "packet" {
            // The uplinks' XDP program; in h_encaps_vm d0 is a VM port: its TC program.
            toml += "fast_path = [\"d0\", \"d1\"]\n";
        } else {
            // Explicit, whatever srmigd's default: no VM port on the TC fast path.
            toml += "vm_fast_path = false\n";
        }
        if let Some(hook) = &opts.vm_tc_hook {
            toml += &format!("vm_tc_hook = \"{hook}\"\n");
        }
        std::fs::write(&config, toml).map_err(|source| ForwardError::File {
            path: config.clone(),
            source,
        })?;
        let _ = std::fs::remove_file(&socket);
        let _ = std::fs::remove_file(&log);
        let cpu = dut_cpus(topo.cpus.dut, topo.cpus.nproc, workers);
        let workers_s = workers.to_string();
        let mut argv: Vec<&str> = vec![
            "taskset",
            "-c",
            &cpu,
            path_str(bin)?,
            "--config",
            path_str(&config)?,
            "--api",
            path_str(&socket)?,
            "--name",
            "dut",
            "--log-format",
            "json",
        ];
        if workers != 1 {
            argv.extend(["--workers", workers_s.as_str()]);
        }
        let pid = topo.lab.spawn(&topo.dut, &argv, Some(&log))?;
        let mut daemon = Srmigd {
            pid,
            log,
            socket: socket.clone(),
            d0_xdp: false,
        };
        let start = Instant::now();
        loop {
            let text = std::fs::read_to_string(&daemon.log).unwrap_or_default();
            if ["d0", "d1"].iter().all(|p| attached(&text, p).is_some()) {
                // An XDP program on d0: its AF_XDP socket's, or the fast path's beside an
                // AF_PACKET socket (jumbo frames).
                daemon.d0_xdp =
                    attached(&text, "d0").as_deref() == Some("xdp") || fast_path_alone(&text, "d0");
                return Ok(daemon);
            }
            if !topo.lab.child_running(pid) {
                return Err(daemon.error("exited at startup"));
            }
            if start.elapsed() > START_TIMEOUT {
                let err = daemon.error(&format!(
                    "did not attach d0 and d1 within {START_TIMEOUT:?}"
                ));
                let _ = topo.lab.stop_child(pid);
                return Err(err);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// srmigd's `GET /v1/status`, as JSON.
    pub(crate) fn status(&self) -> Result<serde_json::Value, ForwardError> {
        let http = srmig_controller::http::UnixHttp::new(&self.socket, Duration::from_secs(2));
        let fail = |e: String| ForwardError::Options(format!("srmigd GET /v1/status: {e}"));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| fail(e.to_string()))?;
        let response = rt
            .block_on(http.request(hyper::Method::GET, "/v1/status", None))
            .map_err(|e| fail(e.to_string()))?;
        serde_json::from_slice(&response.body).map_err(|e| fail(e.to_string()))
    }
}

/// Port `port`'s fast path in a status: whether it is on, how many frames it forwarded (the
/// engine's receive count, which the fast path is credited to, less what the port's socket
/// received), and what the socket received.
pub(crate) fn fast_path(
    status: &serde_json::Value,
    port: &str,
) -> Result<(bool, u64, u64), ForwardError> {
    let p = status["ports"]
        .as_array()
        .and_then(|ports| ports.iter().find(|p| p["name"] == port))
        .ok_or_else(|| {
            ForwardError::Options(format!(
                "srmigd GET /v1/status: no port {port:?} in the status"
            ))
        })?;
    let on = p["fast_path"].as_bool().unwrap_or(false);
    let rx = p["rx"]["packets"].as_u64().unwrap_or(0);
    let socket_rx = p["io"]["rx_frames"].as_u64().unwrap_or(0);
    Ok((on, rx.saturating_sub(socket_rx), socket_rx))
}

/// Where srmigd lost frames over the whole case, from its status: every non-zero loss counter
/// of every port (`d0.rx_ring_drops=..`) and every drop reason of the engine, or `none`.
pub(crate) fn losses(status: &serde_json::Value) -> String {
    const PORT_LOSSES: [&str; 8] = [
        "rx_ring_drops",
        "rx_truncated",
        "rx_gso_bad",
        "rx_bad_csum_meta",
        "rx_errors",
        "tx_errors",
        "tx_no_link",
        "tx_queue_full",
    ];
    let mut out = Vec::new();
    for p in status["ports"].as_array().into_iter().flatten() {
        let name = p["name"].as_str().unwrap_or("?");
        for key in PORT_LOSSES {
            match p["io"][key].as_u64() {
                Some(n) if n > 0 => out.push(format!("{name}.{key}={n}")),
                _ => {}
            }
        }
    }
    if let Some(drops) = status["drops"].as_object() {
        for (reason, n) in drops {
            match n.as_u64() {
                Some(n) if n > 0 => out.push(format!("{reason}={n}")),
                _ => {}
            }
        }
    }
    if out.is_empty() {
        "none".to_owned()
    } else {
        out.join(", ")
    }
}

impl Srmigd {
    /// Whether it still runs.
    pub(crate) fn running(&self, topo: &Topology) -> bool {
        topo.lab.child_running(self.pid)
    }

    /// SIGTERM, SIGKILL after a grace period, reaped.
    pub(crate) fn stop(self, topo: &Topology) -> Result<(), ForwardError> {
        topo.lab.stop_child(self.pid).map_err(ForwardError::from)
    }

    /// An error naming srmigd's log, with its tail.
    pub(crate) fn error(&self, what: &str) -> ForwardError {
        ForwardError::Srmigd {
            what: what.to_owned(),
            log: self.log.clone(),
            tail: srmig_lab::orchestrate::log_tail(&self.log, LOG_TAIL_LINES),
        }
    }
}

/// The CPUs srmigd is pinned to (a `taskset -c` list): the DUT CPU for one worker; for N
/// workers the DUT CPU and the next N - 1 others (lowest first), so each worker can have a
/// CPU (on a 2-CPU machine the second is the generator's: `0,1`).
fn dut_cpus(dut: usize, nproc: usize, workers: usize) -> String {
    let mut cpus = vec![dut];
    cpus.extend(
        (0..nproc)
            .filter(|&c| c != dut)
            .take(workers.saturating_sub(1)),
    );
    cpus.sort_unstable();
    let list: Vec<String> = cpus.iter().map(usize::to_string).collect();
    list.join(",")
}

/// The socket kind (`xdp`, `packet`) of the last JSON log line saying port `port` was
/// attached; `None` if none did.
/// Whether srmigd's JSON log says it attached the XDP fast path beside port `port`'s
/// AF_PACKET socket.
fn fast_path_alone(log: &str, port: &str) -> bool {
    log.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .any(|v| {
            v["fields"]["message"] == "XDP fast path attached beside the AF_PACKET socket"
                && v["fields"]["port"] == port
        })
}

fn attached(log: &str, port: &str) -> Option<String> {
    log.lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["fields"]["message"] == "port attached" && v["fields"]["port"] == port)
        .map(|v| v["fields"]["socket"].as_str().unwrap_or("").to_owned())
}

fn path_str(path: &Path) -> Result<&str, ForwardError> {
    path.to_str()
        .ok_or_else(|| ForwardError::Options(format!("path {} is not UTF-8", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_port_attached_lines() {
        let log = concat!(
            r#"{"timestamp":"t","level":"INFO","fields":{"message":"port attached","port":"d0","ifindex":2,"socket":"xdp"},"target":"srmig_hostd"}"#,
            "\n",
            r#"{"timestamp":"t","level":"WARN","fields":{"message":"port not attached at startup","port":"d1"}}"#,
            "\n"
        );
        assert_eq!(attached(log, "d0").as_deref(), Some("xdp"));
        assert_eq!(attached(log, "d1"), None);
    }

    #[test]
    fn dut_cpu_list() {
        assert_eq!(dut_cpus(1, 2, 1), "1");
        assert_eq!(dut_cpus(1, 2, 2), "0,1");
        assert_eq!(dut_cpus(1, 2, 4), "0,1");
        assert_eq!(dut_cpus(2, 8, 3), "0,1,2");
    }

    #[test]
    fn every_case_config_is_accepted_by_the_engine() {
        for case in Case::ALL {
            let file = srmig_dataplane::node_file::NodeFile::parse(&node_toml(case))
                .unwrap_or_else(|e| panic!("{}: {e}", case.key()));
            srmig_dataplane::Dataplane::new(file.node)
                .unwrap_or_else(|e| panic!("{}: {e}", case.key()));
        }
    }

    #[test]
    fn vmport_only_for_h_encaps_vm() {
        assert!(node_toml(Case::HEncapsVm).contains(r#"headend = "H.Encaps""#));
        assert!(node_toml(Case::HEncapsVm).contains("[[vms]]"));
        assert!(node_toml(Case::HEncaps).contains("[[steering]]"));
        assert!(!node_toml(Case::HEncaps).contains("[[vms]]"));
        assert!(node_toml(Case::End).contains(r#"peer_mac = "02:00:00:00:00:01""#));
        assert!(!node_toml(Case::End).contains("[[vms]]"));
    }
}
