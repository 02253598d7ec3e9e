//! QEMU guests in the lab (`--vm-kind qemu`): the guest image, the QEMU command line, the
//! [`LabLauncher`] through which the controller's QMP driver starts destination QEMUs, guest
//! readiness and the guest's boot id.
//!
//! ```text
//!  client ns ─eth0══client-port─ [c: srmigd C]          [s: srmigd S]            [d: srmigd D]
//!                                                         │ vm1-port: QEMU port    │ vm1-port: QEMU port
//!                                                         ▼ DIR/qemu-s.{net,ev}    ▼ DIR/qemu-d.{net,ev}
//!  vm1-hv ns (the hypervisors):  QEMU on S (TCG) ═══ migration stream tcp:[::1]:47xxx ═══ QEMU on D (-incoming defer)
//! ```
//!
//! Every QEMU of the VM runs in one namespace, `vm1-hv`, that stands for the hypervisors'
//! management network: the migration stream goes over its loopback, never over the SR fabric
//! (as on a real data-center host, where it has its own interface). The VM's NIC is a
//! `-netdev stream,server=on` socket at the path the host's srmigd expects (its `[[qemu]]`
//! table), and each QEMU has two QMP sockets: `.ev` for srmigd (VM state from STOP/RESUME)
//! and `.qmp` for the controller's driver. The same paths serve every QEMU on a host, so
//! S -> D -> S reuses them (see docs/qemu.md).
//!
//! The lab starts the first QEMU on S, waits for the guest's `GUEST-READY` line on its serial
//! console, and registers it with the driver; the driver then starts each destination QEMU
//! through [`LabLauncher`] and stops each source after completion. Every QEMU is a child of
//! the [`Lab`](crate::Lab), killed at teardown whatever happened.

use std::io::Read as _;
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU16, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use srmig_api::{HostId, VmId};
use srmig_controller::{QemuInstance, QemuLauncher, QmpSettings};

use super::error::OrchestrateError;
use super::plan::{VmPlan, GATEWAY_ADDR, GATEWAY_ADDR_V4};
use crate::netns::Netns;
use crate::topology::LabHandle;

/// The guest build script and its responder, embedded so that `srmig` builds the guest from
/// any directory (the script's cache key is a hash of exactly these two files).
const BUILD_SCRIPT: &str = include_str!("../../../../guest/build-guest.sh");
const RESPONDER_C: &str = include_str!("../../../../guest/responder.c");

/// First TCP port of the destination QEMUs' `-incoming` listeners (loopback of `vm1-hv`).
const INCOMING_PORT_BASE: u16 = 47_000;

/// How the lab runs QEMU guests.
#[derive(Debug, Clone)]
pub struct QemuOptions {
    /// A built guest (`vmlinuz` + `initramfs.gz`); default: build or reuse the cached one
    /// with the embedded `guest/build-guest.sh`.
    pub guest_dir: Option<PathBuf>,
    /// Guest memory.
    pub memory_mib: u32,
    /// How long the first guest may take to boot (TCG: about 5 s here).
    pub boot_timeout: Duration,
    /// The controller's QMP driver settings.
    pub driver: QmpSettings,
}

impl Default for QemuOptions {
    /// 128 MiB, 120 s to boot, the driver's defaults with a 60 s migration limit.
    fn default() -> Self {
        QemuOptions {
            guest_dir: None,
            memory_mib: 128,
            boot_timeout: Duration::from_secs(120),
            driver: QmpSettings {
                migration_timeout: Duration::from_secs(60),
                ..QmpSettings::default()
            },
        }
    }
}

/// A built guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestImage {
    /// The kernel (`vmlinuz`).
    pub kernel: PathBuf,
    /// The initramfs (`initramfs.gz`).
    pub initrd: PathBuf,
}

impl GuestImage {
    /// The guest in `dir`, checked.
    pub fn in_dir(dir: &Path) -> Result<GuestImage, OrchestrateError> {
        let image = GuestImage {
            kernel: dir.join("vmlinuz"),
            initrd: dir.join("initramfs.gz"),
        };
        for file in [&image.kernel, &image.initrd] {
            if !file.is_file() {
                return Err(OrchestrateError::Qemu(format!(
                    "the guest directory {} has no {} (build it with guest/build-guest.sh)",
                    dir.display(),
                    file.file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default()
                )));
            }
        }
        Ok(image)
    }

    /// Builds the guest with the embedded script, or reuses its cached build (a second or
    /// two when cached; a minute or so the first time: `apt-get download` of the kernel).
    pub fn build_or_cached() -> Result<GuestImage, OrchestrateError> {
        GuestImage::build_or_cached_with(&super::Progress::default())
    }

    /// [`build_or_cached`](Self::build_or_cached), passing each step the script logs
    /// (`build-guest: ...` on its stderr) to `progress` as it happens.
    pub fn build_or_cached_with(
        progress: &super::Progress,
    ) -> Result<GuestImage, OrchestrateError> {
        let tmp = std::env::temp_dir().join(format!("srmig-guest-build-{}", std::process::id()));
        let file_err = |path: &Path| {
            let path = path.to_owned();
            move |source| OrchestrateError::File {
                action: "writing the guest build script",
                path,
                source,
            }
        };
        std::fs::create_dir_all(&tmp).map_err(file_err(&tmp))?;
        let script = tmp.join("build-guest.sh");
        let result = std::fs::write(&script, BUILD_SCRIPT)
            .map_err(file_err(&script))
            .and_then(|()| {
                let responder = tmp.join("responder.c");
                std::fs::write(&responder, RESPONDER_C).map_err(file_err(&responder))
            })
            .and_then(|()| run_build(&script, progress));
        let _ = std::fs::remove_dir_all(&tmp);
        let out = result?;
        if !out.status.success() {
            return Err(OrchestrateError::Qemu(format!(
                "building the guest failed ({}):\n{}",
                out.status,
                tail(&String::from_utf8_lossy(&out.stderr), 15)
            )));
        }
        let dir = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        GuestImage::in_dir(Path::new(&dir))
    }
}

/// Runs the guest build script: its stdout (the guest directory) and its stderr, each
/// `build-guest: ...` line of which is passed on to `progress` as the script prints it.
fn run_build(script: &Path, progress: &super::Progress) -> Result<Output, OrchestrateError> {
    use std::io::BufRead as _;
    let mut child = Command::new("bash")
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| OrchestrateError::Qemu(format!("cannot run bash: {e}")))?;
    let stdout = child.stdout.take();
    let reader = std::thread::spawn(move || {
        let mut text = Vec::new();
        if let Some(mut out) = stdout {
            let _ = out.read_to_end(&mut text);
        }
        text
    });
    let mut stderr = Vec::new();
    if let Some(err) = child.stderr.take() {
        for line in std::io::BufReader::new(err)
            .split(b'\n')
            .map_while(Result::ok)
        {
            let text = String::from_utf8_lossy(&line);
            if let Some(step) = text.strip_prefix("build-guest: ") {
                progress.detail(&format!("guest build: {step}"));
            }
            stderr.extend_from_slice(&line);
            stderr.push(b'\n');
        }
    }
    let status = child
        .wait()
        .map_err(|e| OrchestrateError::Qemu(format!("waiting for the guest build: {e}")))?;
    let stdout = reader
        .join()
        .map_err(|_| OrchestrateError::Qemu("the guest build's reader panicked".into()))?;
    Ok(Output {
        status,
        stdout,
        stderr,
    })
}

/// The sockets of the VM's QEMU on one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QemuPaths {
    /// `-netdev stream,server=on` (srmigd's QEMU port connects here).
    pub net: PathBuf,
    /// QMP socket reserved for srmigd (VM state).
    pub ev: PathBuf,
    /// QMP socket reserved for the controller's driver.
    pub qmp: PathBuf,
}

impl QemuPaths {
    /// The paths of host `host`'s QEMU in the lab directory `dir`.
    pub fn of(dir: &Path, host: &str) -> QemuPaths {
        QemuPaths {
            net: dir.join(format!("qemu-{host}.net")),
            ev: dir.join(format!("qemu-{host}.ev")),
            qmp: dir.join(format!("qemu-{host}.qmp")),
        }
    }
}

/// One QEMU process the launcher started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launched {
    /// What the driver knows of it.
    pub instance: QemuInstance,
    /// Its serial console (the guest's log).
    pub serial: PathBuf,
    /// QEMU's own stdout/stderr.
    pub log: PathBuf,
}

/// Starts and stops the VM's QEMU processes in the hypervisors' namespace, as children of the
/// lab (the lab's side of [`srmig_controller::Qmp`]).
#[derive(Debug)]
pub struct LabLauncher {
    lab: LabHandle,
    ns: Netns,
    dir: PathBuf,
    image: GuestImage,
    memory_mib: u32,
    vm: VmPlan,
    /// Hosts whose srmigd has a QEMU port for the VM.
    hosts: Vec<String>,
    /// The guest's MTU ([`super::plan::Plan::vm_mtu`]).
    mtu: u32,
    next_port: AtomicU16,
    launches: AtomicU32,
    /// The QEMU started last on each host (pid), for a stop that does not know it.
    pids: std::sync::Mutex<std::collections::HashMap<String, u32>>,
}

impl LabLauncher {
    /// A launcher for `vm` on `hosts`, running QEMU in `ns` with its files in `dir`, the
    /// guest's interface at `mtu`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        lab: LabHandle,
        ns: Netns,
        dir: &Path,
        image: GuestImage,
        memory_mib: u32,
        vm: VmPlan,
        hosts: Vec<String>,
        mtu: u32,
    ) -> LabLauncher {
        LabLauncher {
            lab,
            ns,
            dir: dir.to_owned(),
            image,
            memory_mib,
            vm,
            hosts,
            mtu,
            next_port: AtomicU16::new(INCOMING_PORT_BASE),
            launches: AtomicU32::new(0),
            pids: std::sync::Mutex::default(),
        }
    }

    /// The QEMU command line of the VM on `host` (`incoming`: `-incoming defer`).
    pub fn argv(&self, host: &str, serial: &Path, incoming: bool) -> Vec<String> {
        let paths = QemuPaths::of(&self.dir, host);
        let append = kernel_append(&self.vm, self.mtu);
        let mut argv: Vec<String> = [
            "qemu-system-x86_64",
            "-name",
            self.vm.name,
            "-accel",
            "tcg",
            "-m",
            &self.memory_mib.to_string(),
            "-smp",
            "1",
            "-nodefaults",
            "-display",
            "none",
            "-no-reboot",
            "-kernel",
            &self.image.kernel.display().to_string(),
            "-initrd",
            &self.image.initrd.display().to_string(),
            "-append",
            &append,
            "-netdev",
            &format!(
                "stream,id=n0,server=on,addr.type=unix,addr.path={}",
                paths.net.display()
            ),
            "-device",
            &format!("virtio-net-pci,netdev=n0,mac={}", self.vm.mac),
            "-serial",
            &format!("file:{}", serial.display()),
            "-qmp",
            &format!("unix:{},server=on,wait=off", paths.qmp.display()),
            "-qmp",
            &format!("unix:{},server=on,wait=off", paths.ev.display()),
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        if incoming {
            argv.extend(["-incoming".to_owned(), "defer".to_owned()]);
        }
        argv
    }

    /// Starts the VM's QEMU on `host`.
    pub fn launch(&self, host: &str, incoming: bool) -> Result<Launched, OrchestrateError> {
        if !self.hosts.iter().any(|h| h == host) {
            return Err(OrchestrateError::Qemu(format!(
                "host {host} has no QEMU port for {} (QEMU hosts: {})",
                self.vm.name,
                self.hosts.join(", ")
            )));
        }
        let host_id = HostId::new(host)
            .map_err(|e| OrchestrateError::Qemu(format!("host name {host:?}: {e}")))?;
        let k = self.launches.fetch_add(1, Ordering::Relaxed);
        let serial = self.dir.join(format!("qemu-{host}-{k}.serial"));
        let log = self.dir.join(format!("qemu-{host}-{k}.log"));
        let argv = self.argv(host, &serial, incoming);
        let refs: Vec<&str> = argv.iter().map(String::as_str).collect();
        let pid = self.lab.spawn(&self.ns, &refs, Some(&log))?;
        self.pids_lock().insert(host.to_owned(), pid);
        let incoming = incoming.then(|| {
            let port = self.next_port.fetch_add(1, Ordering::Relaxed);
            format!("tcp:[::1]:{port}")
        });
        tracing::info!(host, pid, ?incoming, "QEMU started");
        Ok(Launched {
            instance: QemuInstance {
                host: host_id,
                qmp: QemuPaths::of(&self.dir, host).qmp,
                incoming,
                handle: u64::from(pid),
            },
            serial,
            log,
        })
    }

    /// Whether the QEMU `instance` still runs.
    pub fn running(&self, instance: &QemuInstance) -> bool {
        u32::try_from(instance.handle).is_ok_and(|pid| self.lab.child_running(pid))
    }

    /// Waits for the guest of `launched` to print `GUEST-READY` on its console; returns that
    /// line. Fails if QEMU exits, the guest reports an error, or `timeout` passes.
    pub fn wait_ready(
        &self,
        launched: &Launched,
        timeout: Duration,
    ) -> Result<String, OrchestrateError> {
        let start = Instant::now();
        loop {
            let console = std::fs::read_to_string(&launched.serial).unwrap_or_default();
            if let Some(line) = console.lines().find(|l| l.contains("GUEST-ERROR")) {
                return Err(OrchestrateError::Qemu(format!(
                    "the guest reported an error: {line} (console {})",
                    launched.serial.display()
                )));
            }
            if let Some(line) = console.lines().find(|l| l.contains("GUEST-READY")) {
                return Ok(line.trim().to_owned());
            }
            if !self.running(&launched.instance) {
                let log = std::fs::read_to_string(&launched.log).unwrap_or_default();
                return Err(OrchestrateError::Qemu(format!(
                    "QEMU on {} exited before the guest was ready; its log ({}) ends with:\n{}\n\
                     console ends with:\n{}",
                    launched.instance.host,
                    launched.log.display(),
                    tail(&log, 10),
                    tail(&console, 10)
                )));
            }
            if start.elapsed() > timeout {
                return Err(OrchestrateError::Qemu(format!(
                    "the guest on {} was not ready after {timeout:?}; console ({}) ends with:\n{}",
                    launched.instance.host,
                    launched.serial.display(),
                    tail(&console, 10)
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn pids_lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, u32>> {
        self.pids.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The QEMU the lab started last on `host` (pid), if it still runs.
    pub fn pid_on(&self, host: &str) -> Option<u32> {
        let pid = *self.pids_lock().get(host)?;
        self.lab.child_running(pid).then_some(pid)
    }

    fn kill(&self, instance: &QemuInstance) {
        // Handle 0: the caller does not know it (a controller after a restart): the QEMU
        // started last on that host.
        let pid = match instance.handle {
            0 => self.pids_lock().get(instance.host.as_str()).copied(),
            h => u32::try_from(h).ok(),
        };
        let Some(pid) = pid else {
            return;
        };
        {
            let mut pids = self.pids_lock();
            if pids.get(instance.host.as_str()) == Some(&pid) {
                pids.remove(instance.host.as_str());
            }
        }
        // Not a child (any more): already stopped. Torn down: the lab killed it.
        if let Err(e) = self.lab.stop_child(pid) {
            tracing::debug!(pid, error = %e, "QEMU already stopped");
        }
    }
}

impl QemuLauncher for LabLauncher {
    fn start_destination(&self, vm: &VmId, host: &HostId) -> Result<QemuInstance, String> {
        if vm.as_str() != self.vm.name {
            return Err(format!("the lab runs no QEMU for VM {vm}"));
        }
        self.launch(host.as_str(), true)
            .map(|l| l.instance)
            .map_err(|e| super::control::error_chain(&e))
    }

    fn stop(&self, _vm: &VmId, instance: &QemuInstance) {
        self.kill(instance);
    }
}

/// What the guest's responder tells on TCP port 9.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GuestInfo {
    /// `/proc/sys/kernel/random/boot_id`: changes only if the guest reboots.
    pub boot_id: String,
    /// The responder's echo counters (`echo_rx`, `echo_tx`, `echo_tx_retried`,
    /// `echo_tx_failed`), the guest kernel's UDP errors (`udp_rcvbuf_errors`,
    /// `udp_sndbuf_errors`, `udp_in_errors`), its TCP receive figures (`tcp_ofo_queued`:
    /// segments that arrived after a gap; `tcp_ofo_drops`, `tcp_backlog_drops`,
    /// `tcp_rcvq_drops`: segments it dropped; `tcp_dsack_sent`: duplicates it answered with a
    /// D-SACK) and `backlog_drops` (its input backlog's drops); -1 when unreadable.
    pub counters: std::collections::BTreeMap<String, i64>,
}

impl GuestInfo {
    /// Parses `boot_id=<uuid> uptime=<s> name=N ...`.
    pub fn parse(text: &str) -> Option<GuestInfo> {
        let mut info = GuestInfo::default();
        for (key, value) in text.split_whitespace().filter_map(|w| w.split_once('=')) {
            match key {
                "boot_id" => info.boot_id = value.to_owned(),
                "uptime" => {}
                _ => {
                    if let Ok(n) = value.parse() {
                        info.counters.insert(key.to_owned(), n);
                    }
                }
            }
        }
        (!info.boot_id.is_empty()).then_some(info)
    }
}

/// The guest's boot id and counters, from its responder's TCP port 9, asked from `client`.
pub fn guest_info(client: &Netns, address: Ipv6Addr) -> Result<GuestInfo, OrchestrateError> {
    let target = SocketAddr::V6(SocketAddrV6::new(address, 9, 0, 0));
    let mut last = String::new();
    for _ in 0..5 {
        let answer = client.run(move || -> std::io::Result<String> {
            let mut stream = TcpStream::connect_timeout(&target, Duration::from_secs(2))?;
            stream.set_read_timeout(Some(Duration::from_secs(2)))?;
            let mut text = String::new();
            stream.read_to_string(&mut text)?;
            Ok(text)
        })?;
        match answer {
            Ok(text) => match GuestInfo::parse(&text) {
                Some(info) => return Ok(info),
                None => last = format!("unexpected answer {text:?}"),
            },
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Err(OrchestrateError::Qemu(format!(
        "cannot read the guest's boot id from {target}: {last}"
    )))
}

/// The guest kernel's command line: its console, addresses, gateway, MTU and name.
pub fn kernel_append(vm: &VmPlan, mtu: u32) -> String {
    format!(
        "console=ttyS0 quiet panic=-1 srmig.addr={}/128 srmig.gw={GATEWAY_ADDR} \
         srmig.addr4={}/32 srmig.gw4={GATEWAY_ADDR_V4} srmig.mtu={mtu} \
         srmig.hostname={}",
        vm.address, vm.address_v4, vm.name
    )
}

/// The last `n` lines of `text`.
pub(crate) fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_guest_build_matches_the_repository() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../guest");
        let script = std::fs::read_to_string(root.join("build-guest.sh")).expect("script");
        let responder = std::fs::read_to_string(root.join("responder.c")).expect("responder");
        assert_eq!(script, BUILD_SCRIPT);
        assert_eq!(responder, RESPONDER_C);
    }

    #[test]
    fn paths_are_per_host_and_fit_a_unix_socket() {
        let dir = Path::new("/tmp/srmig-lab-abcdefgh");
        let s = QemuPaths::of(dir, "s");
        let d = QemuPaths::of(dir, "d");
        assert_ne!(s, d);
        for p in [&s.net, &s.ev, &s.qmp] {
            assert!(p.as_os_str().len() < 108, "{}", p.display());
        }
    }

    #[test]
    fn missing_guest_files_are_a_clear_error() {
        let dir = std::env::temp_dir().join(format!("srmig-no-guest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let err = GuestImage::in_dir(&dir).expect_err("empty dir");
        assert!(err.to_string().contains("no vmlinuz"), "{err}");
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn guest_info_parses_the_responder_line() {
        let info = GuestInfo::parse(
            "boot_id=9edf-01 uptime=12.5 echo_rx=10 echo_tx=9 echo_tx_failed=1 udp_rcvbuf_errors=-1\n",
        )
        .expect("parsed");
        assert_eq!(info.boot_id, "9edf-01");
        assert_eq!(info.counters["echo_rx"], 10);
        assert_eq!(info.counters["echo_tx_failed"], 1);
        assert_eq!(info.counters["udp_rcvbuf_errors"], -1);
        assert!(!info.counters.contains_key("uptime"));
        assert_eq!(
            GuestInfo::parse("boot_id=x uptime=1\n").map(|i| i.boot_id),
            Some("x".into())
        );
        assert!(GuestInfo::parse("hello").is_none());
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail("a\nb\nc", 2), "b\nc");
        assert_eq!(tail("a", 5), "a");
        assert_eq!(tail("", 5), "");
    }
}
