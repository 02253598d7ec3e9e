//! libvirt guests in the lab (`--vm-kind libvirt`): two real `libvirtd` (Debian's
//! `libvirt-daemon-system`), one per host, the guest as a libvirt domain, and migrations
//! started as an operator starts them, `virsh migrate --live`, with no srmig command in the
//! loop: srmig learns of each one from its libvirt hook (`srmig libvirt-hook`, installed in
//! each libvirtd's `hooks/qemu`) and from QEMU's events.
//!
//! ```text
//!  vm1-hv ns (the hypervisors' network; migration stream over its loopback)
//!   ┌ mount+UTS ns "lv-s" ────────────────────┐     ┌ mount+UTS ns "lv-d" ────────────────────┐
//!   │ libvirtd (host_uuid …01)                │     │ libvirtd (host_uuid …02)                │
//!   │  /etc/libvirt   ← DIR/libvirt-s/etc     │     │  /etc/libvirt   ← DIR/libvirt-d/etc     │
//!   │   hooks/qemu: srmig libvirt-hook --host s│     │   hooks/qemu: srmig libvirt-hook --host d│
//!   │  /run/libvirt, /var/lib|cache|log/libvirt│     │  (the same, from DIR/libvirt-d)         │
//!   │  DIR/vm ← DIR/libvirt-s/vm              │     │  DIR/vm ← DIR/libvirt-d/vm              │
//!   │  QEMU vm1: DIR/vm/vm1.net (stream server)│ ══► │  QEMU vm1 (-incoming), same XML paths   │
//!   └─────────────────────────────────────────┘     └─────────────────────────────────────────┘
//!  srmigd S: socket DIR/libvirt-s/vm/vm1.net, qmp …/vm1.ev      srmigd D: DIR/libvirt-d/vm/…
//! ```
//!
//! Why each libvirtd has its own mount namespace: libvirt's run, state, cache and log
//! directories are compiled in (`/run/libvirt`, `/var/lib/libvirt`, ...), and two daemons
//! sharing them would fight over pid files, sockets and domain state. Bind-mounting a private
//! copy of each over the real path (`unshare --mount`) gives every daemon its own, as on two
//! machines; the sockets the operator's `virsh` uses are in `DIR/libvirt-H/run`. The host
//! UUIDs differ (`host_uuid`), and so do the hostnames (UTS namespace): libvirt refuses a
//! migration to "the same host" otherwise. A migrated domain's XML names the same paths on
//! both hosts, as on real hosts: `DIR/vm` is bind-mounted from each host's own directory, so
//! the NIC's socket the destination QEMU creates is the one the destination's srmigd watches.
//!
//! The VM's NIC: libvirt 9.0 has no interface type for QEMU's `-netdev stream`, the
//! attachment srmigd's zero-loss take-back needs (docs/qemu.md section 1), so the domain adds
//! it, and srmigd's own QMP monitor (VM state from STOP/RESUME, MIGRATION_PASS), through
//! `<qemu:commandline>`; libvirt passes both to the destination QEMU with the rest of the XML.
//! libvirt then marks the domain "tainted: custom-argv" (a warning in its log, nothing more).
//!
//! Every QEMU libvirt starts is a daemon of its own, not a child of the lab: teardown destroys
//! the domains through libvirt, then stops the daemons; the lab's namespace teardown kills
//! whatever is still inside the hypervisors' namespace (a lab killed with SIGKILL included).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use srmig_api::Strategy;

use super::error::OrchestrateError;
use super::plan::VmPlan;
use super::qemu::{self, GuestImage, QemuPaths};
use crate::netns::Netns;
use crate::topology::LabHandle;

/// The XML namespace of srmig's domain metadata (as `srmig libvirt-hook` reads it).
pub use srmig_controller::libvirt_hook::METADATA_NS;

/// How long a libvirtd may take to answer after it was started.
const DAEMON_START: Duration = Duration::from_secs(30);

/// One host's libvirtd.
#[derive(Debug)]
pub struct LibvirtHost {
    /// The srmig host name (`s`, `d`).
    pub name: String,
    /// `DIR/libvirt-<name>`: its config, state and run directories.
    pub root: PathBuf,
    /// `qemu+unix:///system?socket=...`: what `virsh -c` takes.
    pub uri: String,
    /// The daemon (a lab child).
    pid: u32,
    /// QEMU's events as libvirt relays them (`virsh qemu-monitor-event --loop`).
    events: PathBuf,
    events_pid: u32,
}

impl LibvirtHost {
    /// The per-host directory bind-mounted at the lab's common `DIR/vm`.
    pub fn vm_dir(&self) -> PathBuf {
        self.root.join("vm")
    }
}

/// The paths of host `host`'s QEMU sockets in the lab directory `dir`, where its srmigd finds
/// them (no driver QMP socket: libvirt owns QEMU's own monitor).
pub fn host_paths(dir: &Path, host: &str, vm: &str) -> QemuPaths {
    let vm_dir = dir.join(format!("libvirt-{host}")).join("vm");
    QemuPaths {
        net: vm_dir.join(format!("{vm}.net")),
        ev: vm_dir.join(format!("{vm}.ev")),
        qmp: PathBuf::new(),
    }
}

/// The two libvirtds and the VM's domain.
#[derive(Debug)]
pub struct LibvirtVm {
    lab: LabHandle,
    ns: Netns,
    dir: PathBuf,
    image: GuestImage,
    memory_mib: u32,
    vm: VmPlan,
    /// The guest's MTU ([`super::plan::Plan::vm_mtu`]).
    mtu: u32,
    /// S, D.
    pub hosts: Vec<LibvirtHost>,
    /// The `GUEST-READY` line of the first boot.
    pub ready: String,
    /// The guest's boot id after the first boot.
    pub boot_id: String,
}

/// A migration's STOP and RESUME, as QEMU's events relayed by libvirt tell them (wall clock,
/// microseconds; libvirt prints them to the millisecond).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PauseEvents {
    /// The source QEMU's `STOP`.
    pub stopped_at_us: i64,
    /// The destination QEMU's `RESUME`.
    pub resumed_at_us: i64,
}

impl LibvirtVm {
    /// Starts a libvirtd per host in `hosts` (name, host UUID) inside `ns`, each with
    /// `srmig libvirt-hook` (the `srmig` binary) installed against the controller's API
    /// `socket`.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        lab: LabHandle,
        ns: Netns,
        dir: &Path,
        image: GuestImage,
        memory_mib: u32,
        vm: VmPlan,
        mtu: u32,
        hosts: &[&str],
        srmig: &Path,
        controller: &Path,
    ) -> Result<LibvirtVm, OrchestrateError> {
        let common = dir.join("vm");
        mkdir(&common)?;
        let mut started = Vec::new();
        for (i, name) in hosts.iter().enumerate() {
            started.push(start_daemon(&lab, &ns, dir, name, i, srmig, controller)?);
        }
        let libvirt = LibvirtVm {
            lab,
            ns,
            dir: dir.to_owned(),
            image,
            memory_mib,
            vm,
            mtu,
            hosts: started,
            ready: String::new(),
            boot_id: String::new(),
        };
        for host in &libvirt.hosts {
            libvirt.wait_daemon(host)?;
        }
        Ok(libvirt)
    }

    /// The host named `name`.
    pub fn host(&self, name: &str) -> Result<&LibvirtHost, OrchestrateError> {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .ok_or_else(|| OrchestrateError::Qemu(format!("no libvirtd for host {name}")))
    }

    fn wait_daemon(&self, host: &LibvirtHost) -> Result<(), OrchestrateError> {
        let start = Instant::now();
        loop {
            if !self.lab.child_running(host.pid) {
                return Err(OrchestrateError::Qemu(format!(
                    "libvirtd for host {} exited at start; its log ({}) ends with:\n{}",
                    host.name,
                    host.root.join("libvirtd.log").display(),
                    log_tail(&host.root.join("libvirtd.log"))
                )));
            }
            let out = virsh(&host.uri, &["version", "--daemon"])?;
            if out.status.success() {
                return Ok(());
            }
            if start.elapsed() > DAEMON_START {
                return Err(OrchestrateError::Qemu(format!(
                    "libvirtd for host {} did not answer on {} within {DAEMON_START:?}: {}",
                    host.name,
                    host.uri,
                    String::from_utf8_lossy(&out.stderr).trim()
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The domain XML of the VM (srmig metadata with `strategy`).
    pub fn domain_xml(&self, strategy: Strategy) -> String {
        let vm = &self.vm;
        let common = self.dir.join("vm");
        let file = |ext: &str| {
            common
                .join(format!("{}.{ext}", vm.name))
                .display()
                .to_string()
        };
        format!(
            "<domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>{name}</name>
  <metadata>
    <srmig:vm xmlns:srmig='{METADATA_NS}' name='{name}' strategy='{strategy}'/>
  </metadata>
  <memory unit='MiB'>{memory}</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{kernel}</kernel>
    <initrd>{initrd}</initrd>
    <cmdline>{append}</cmdline>
  </os>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <serial type='file'><source path='{console}' append='on'/></serial>
    <memballoon model='none'/>
  </devices>
  <qemu:commandline>
    <qemu:arg value='-netdev'/>
    <qemu:arg value='stream,id=srmig0,server=on,addr.type=unix,addr.path={net}'/>
    <qemu:arg value='-device'/>
    <qemu:arg value='virtio-net-pci,netdev=srmig0,mac={mac},bus=pci.0,addr=0x10'/>
    <qemu:arg value='-qmp'/>
    <qemu:arg value='unix:{ev},server=on,wait=off'/>
  </qemu:commandline>
</domain>
",
            name = vm.name,
            memory = self.memory_mib,
            kernel = self.image.kernel.display(),
            initrd = self.image.initrd.display(),
            append = qemu::kernel_append(vm, self.mtu),
            console = file("console"),
            net = file("net"),
            mac = vm.mac,
            ev = file("ev"),
        )
    }

    /// Creates (starts) the domain on `host` and waits for the guest's `GUEST-READY`.
    pub fn start_guest(
        &mut self,
        host: &str,
        strategy: Strategy,
        timeout: Duration,
    ) -> Result<(), OrchestrateError> {
        let xml_file = self.dir.join(format!("{}.xml", self.vm.name));
        std::fs::write(&xml_file, self.domain_xml(strategy)).map_err(|source| {
            OrchestrateError::File {
                action: "writing the domain XML",
                path: xml_file.clone(),
                source,
            }
        })?;
        let uri = self.host(host)?.uri.clone();
        virsh_ok(&uri, &["create", &xml_file.display().to_string()])?;
        let console = self
            .host(host)?
            .vm_dir()
            .join(format!("{}.console", self.vm.name));
        let start = Instant::now();
        loop {
            let text = std::fs::read_to_string(&console).unwrap_or_default();
            if let Some(line) = text.lines().find(|l| l.contains("GUEST-ERROR")) {
                return Err(OrchestrateError::Qemu(format!(
                    "the guest reported an error: {line} (console {})",
                    console.display()
                )));
            }
            if let Some(line) = text.lines().find(|l| l.contains("GUEST-READY")) {
                self.ready = line.trim().to_owned();
                return Ok(());
            }
            let state = virsh(&uri, &["domstate", self.vm.name])?;
            if !String::from_utf8_lossy(&state.stdout).contains("running") {
                return Err(OrchestrateError::Qemu(format!(
                    "the domain {} on {host} is not running ({}) before the guest was ready; \
                     console ends with:\n{}",
                    self.vm.name,
                    String::from_utf8_lossy(&state.stdout).trim(),
                    qemu::tail(&text, 10)
                )));
            }
            if start.elapsed() > timeout {
                return Err(OrchestrateError::Qemu(format!(
                    "the guest on {host} was not ready after {timeout:?}; console ({}) ends \
                     with:\n{}",
                    console.display(),
                    qemu::tail(&text, 10)
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sets the strategy in the running domain's srmig metadata on `host` (`virsh metadata
    /// --live`): the next migration's hook reads it from the migrated XML.
    pub fn set_strategy(&self, host: &str, strategy: Strategy) -> Result<(), OrchestrateError> {
        self.set_metadata(host, self.vm.name, strategy)
    }

    /// Sets the running domain's srmig metadata on `host` to VM `name` and `strategy`.
    pub fn set_metadata(
        &self,
        host: &str,
        name: &str,
        strategy: Strategy,
    ) -> Result<(), OrchestrateError> {
        let uri = &self.host(host)?.uri;
        let element = format!("<vm name='{name}' strategy='{strategy}'/>");
        let set = virsh_ok(
            uri,
            &[
                "metadata",
                self.vm.name,
                METADATA_NS,
                "--key",
                "srmig",
                "--set",
                &element,
                "--live",
            ],
        );
        set.map(drop).map_err(|e| self.with_domain_state(e))
    }

    /// `e` followed by where libvirt has the domain on every host and the end of each host's
    /// QEMU log (a domain that vanished after a migration: did its QEMU exit?).
    pub fn with_domain_state(&self, e: OrchestrateError) -> OrchestrateError {
        let mut text = match e {
            OrchestrateError::Qemu(m) => m,
            e => e.to_string(),
        };
        for host in &self.hosts {
            let list = virsh(&host.uri, &["list", "--all"])
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
                .unwrap_or_else(|e| e.to_string());
            let log = host
                .root
                .join("log/qemu")
                .join(format!("{}.log", self.vm.name));
            text.push_str(&format!("\n--- {}: virsh list --all:\n{list}", host.name));
            // The guest's serial console as this host's QEMU wrote it (each daemon sees its
            // own `vm` directory): a panic reboots the guest, and `on_reboot` destroys the
            // domain.
            let console = host.vm_dir().join(format!("{}.console", self.vm.name));
            for file in [
                &log,
                &host.root.join("libvirtd.log"),
                &host.events,
                &console,
            ] {
                text.push_str(&format!(
                    "\n--- {} ends with:\n{}",
                    file.display(),
                    log_tail(file)
                ));
            }
        }
        OrchestrateError::Qemu(text)
    }

    /// `virsh -c FROM migrate --live VM TO --migrateuri tcp://[::1]`, as an operator runs it
    /// (a child process: the caller waits for it).
    pub fn start_migration(
        &self,
        from: &str,
        to: &str,
    ) -> Result<std::process::Child, OrchestrateError> {
        self.start_migration_via(from, to, "tcp://[::1]")
    }

    /// [`start_migration`](Self::start_migration) with another `--migrateuri` (where the
    /// destination QEMU listens for the migration stream).
    pub fn start_migration_via(
        &self,
        from: &str,
        to: &str,
        migrate_uri: &str,
    ) -> Result<std::process::Child, OrchestrateError> {
        let (from, to) = (self.host(from)?, self.host(to)?);
        let args = [
            "-c",
            &from.uri,
            "migrate",
            "--live",
            self.vm.name,
            &to.uri,
            "--migrateuri",
            migrate_uri,
        ];
        self.ns
            .run(|| {
                Command::new("virsh")
                    .args(args)
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
            })?
            .map_err(|e| OrchestrateError::Qemu(format!("cannot run virsh migrate: {e}")))
    }

    /// The STOP on `from` and the RESUME on `to` of the migration that started at wall-clock
    /// `since_us` (QEMU's events as libvirt relayed them), if both were seen.
    pub fn pause_events(&self, from: &str, to: &str, since_us: i64) -> Option<PauseEvents> {
        let stop = events_after(&self.host(from).ok()?.events, "STOP", since_us);
        let resume = events_after(&self.host(to).ok()?.events, "RESUME", since_us);
        Some(PauseEvents {
            stopped_at_us: *stop.last()?,
            resumed_at_us: *resume.first()?,
        })
    }

    /// Destroys the domain everywhere and stops the daemons and their event listeners.
    pub fn shutdown(&mut self) {
        for host in &self.hosts {
            let _ = virsh(&host.uri, &["destroy", self.vm.name]);
        }
        for host in self.hosts.drain(..) {
            for pid in [host.events_pid, host.pid] {
                if let Err(e) = self.lab.stop_child(pid) {
                    tracing::debug!(pid, error = %e, "libvirt child already stopped");
                }
            }
        }
    }
}

impl Drop for LibvirtVm {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Writes host `name`'s libvirt configuration and hook under `DIR/libvirt-<name>` and starts
/// its libvirtd (index `i`: its host UUID and migration ports) and event listener.
fn start_daemon(
    lab: &LabHandle,
    ns: &Netns,
    dir: &Path,
    name: &str,
    i: usize,
    srmig: &Path,
    controller: &Path,
) -> Result<LibvirtHost, OrchestrateError> {
    let root = dir.join(format!("libvirt-{name}"));
    for sub in ["etc/hooks", "etc/qemu", "run", "lib", "cache", "log", "vm"] {
        mkdir(&root.join(sub))?;
    }
    let run = root.join("run");
    let port_min = 49_152 + 32 * i;
    write(
        &root.join("etc/libvirtd.conf"),
        &format!(
            "unix_sock_dir = \"{run}\"\nunix_sock_group = \"root\"\nauth_unix_ro = \"none\"\n\
             auth_unix_rw = \"none\"\nhost_uuid = \"{uuid}\"\n\
             log_outputs = \"3:file:{log}\"\n",
            run = run.display(),
            uuid = host_uuid(i),
            log = root.join("libvirtd.log").display(),
        ),
    )?;
    write(
        &root.join("etc/qemu.conf"),
        &format!(
            "user = \"root\"\ngroup = \"root\"\ndynamic_ownership = 0\nremember_owner = 0\n\
             security_driver = \"none\"\ncgroup_controllers = [ ]\nnamespaces = [ ]\n\
             stdio_handler = \"file\"\nmigration_port_min = {port_min}\n\
             migration_port_max = {}\n",
            port_min + 31
        ),
    )?;
    let hook = root.join("etc/hooks/qemu");
    write(&hook, &hook_script(srmig, controller, name))?;
    set_executable(&hook)?;
    // The bind mounts live in the daemon's own mount namespace; the targets must exist on the
    // host (the package creates all but /run/libvirt; the lab creates DIR/vm).
    mkdir(Path::new("/run/libvirt"))?;
    let binds = [
        ("etc", "/etc/libvirt".to_owned()),
        ("run", "/run/libvirt".to_owned()),
        ("lib", "/var/lib/libvirt".to_owned()),
        ("cache", "/var/cache/libvirt".to_owned()),
        ("log", "/var/log/libvirt".to_owned()),
        ("vm", dir.join("vm").display().to_string()),
    ];
    let mut script = format!("set -e; hostname lv-{name}; ");
    for (sub, target) in &binds {
        script.push_str(&format!(
            "mount --bind '{}' '{target}'; ",
            root.join(sub).display()
        ));
    }
    script.push_str(&format!(
        "exec libvirtd -f '{}' -p '{}'",
        root.join("etc/libvirtd.conf").display(),
        root.join("libvirtd.pid").display()
    ));
    let out = root.join("libvirtd.out");
    let pid = lab.spawn(
        ns,
        &[
            "unshare",
            "--mount",
            "--uts",
            "--propagation",
            "private",
            "sh",
            "-c",
            &script,
        ],
        Some(&out),
    )?;
    let uri = format!(
        "qemu+unix:///system?socket={}",
        run.join("libvirt-sock").display()
    );
    let events = root.join("events.log");
    let events_pid = lab.spawn(
        ns,
        &[
            "sh",
            "-c",
            // Retried until the daemon answers, and again if it restarts.
            &format!("while :; do virsh -c '{uri}' qemu-monitor-event --loop; sleep 0.1; done"),
        ],
        Some(&events),
    )?;
    Ok(LibvirtHost {
        name: name.to_owned(),
        root,
        uri,
        pid,
        events,
        events_pid,
    })
}

/// The hook libvirtd runs (`hooks/qemu`): `srmig libvirt-hook` for this host.
pub fn hook_script(srmig: &Path, controller: &Path, host: &str) -> String {
    format!(
        "#!/bin/sh\n# srmig: libvirt's QEMU hook (see docs/operators.md)\n\
         exec '{}' libvirt-hook --controller '{}' --host '{host}' \"$@\"\n",
        srmig.display(),
        controller.display()
    )
}

/// The host UUID of libvirtd number `i` (distinct per host: libvirt refuses a migration to a
/// host with its own UUID).
fn host_uuid(i: usize) -> String {
    format!("5a6d1900-0000-4000-8000-{:012x}", i + 1)
}

/// QEMU's own timestamps (wall clock, µs since the Unix epoch) of every `event` line in a
/// `virsh qemu-monitor-event` log at or after `since_us`. virsh prints `event STOP at
/// 1796400502.974123 for domain 'vm1': <null>`: the instant QEMU emitted the event. (With
/// `--timestamp` it prints the instant virsh printed the line instead, which a loaded machine
/// delays by tens of milliseconds: pauses measured from those were off by up to 27 ms.)
pub fn events_after(log: &Path, event: &str, since_us: i64) -> Vec<i64> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    parse_events(&text, event)
        .into_iter()
        .filter(|&t| t >= since_us)
        .collect()
}

fn parse_events(text: &str, event: &str) -> Vec<i64> {
    let needle = format!("event {event} at ");
    text.lines()
        .filter_map(|line| {
            let (_, rest) = line.split_once(&needle)?;
            let (stamp, _) = rest.split_once(" for domain")?;
            parse_stamp(stamp)
        })
        .collect()
}

/// `1796400502.974123` (seconds and microseconds) -> microseconds since the Unix epoch.
fn parse_stamp(stamp: &str) -> Option<i64> {
    let (secs, micros) = stamp.split_once('.')?;
    if micros.len() != 6 {
        return None;
    }
    let secs = secs.parse::<i64>().ok()?;
    let micros = micros.parse::<i64>().ok()?;
    secs.checked_mul(1_000_000)?.checked_add(micros)
}

/// `virsh -c URI ARGS...`, its output whatever the status.
pub fn virsh(uri: &str, args: &[&str]) -> Result<Output, OrchestrateError> {
    Command::new("virsh")
        .arg("-c")
        .arg(uri)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| OrchestrateError::Qemu(format!("cannot run virsh: {e}")))
}

/// `virsh -c URI ARGS...`, an error naming the command and virsh's message unless it succeeds.
fn virsh_ok(uri: &str, args: &[&str]) -> Result<Output, OrchestrateError> {
    let out = virsh(uri, args)?;
    if out.status.success() {
        return Ok(out);
    }
    Err(OrchestrateError::Qemu(format!(
        "virsh -c {uri} {} failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    )))
}

fn log_tail(path: &Path) -> String {
    qemu::tail(&std::fs::read_to_string(path).unwrap_or_default(), 10)
}

fn mkdir(path: &Path) -> Result<(), OrchestrateError> {
    std::fs::create_dir_all(path).map_err(|source| OrchestrateError::File {
        action: "creating a libvirt directory",
        path: path.to_owned(),
        source,
    })
}

fn write(path: &Path, text: &str) -> Result<(), OrchestrateError> {
    std::fs::write(path, text).map_err(|source| OrchestrateError::File {
        action: "writing libvirt's configuration",
        path: path.to_owned(),
        source,
    })
}

fn set_executable(path: &Path) -> Result<(), OrchestrateError> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).map_err(|source| {
        OrchestrateError::File {
            action: "making the libvirt hook executable",
            path: path.to_owned(),
            source,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relayed_event_timestamps_parse_to_wall_clock_microseconds() {
        let log = "\
event MIGRATION at 1796400502.974001 for domain 'vm1': {\"status\":\"active\"}
event STOP at 1796400502.974123 for domain 'vm1': <null>
event loop ended
event RESUME at 1796400503.003456 for domain 'vm1': <null>
event STOP at 1796400504.5 for domain 'vm1': <null>
";
        let stop = parse_events(log, "STOP");
        let resume = parse_events(log, "RESUME");
        assert_eq!(stop, vec![1_796_400_502_974_123]);
        assert_eq!(resume, vec![1_796_400_503_003_456]);
        assert_eq!(parse_events(log, "SHUTDOWN"), Vec::<i64>::new());
        assert_eq!(parse_stamp("1.500000"), Some(1_500_000));
        for bad in ["garbage", "1.5", "x.000001", "1.00000x"] {
            assert_eq!(parse_stamp(bad), None, "{bad}");
        }
    }

    #[test]
    fn hosts_get_distinct_uuids_ports_and_their_own_socket_paths() {
        assert_ne!(host_uuid(0), host_uuid(1));
        let dir = Path::new("/tmp/srmig-lab-abcdefgh");
        let (s, d) = (host_paths(dir, "s", "vm1"), host_paths(dir, "d", "vm1"));
        assert_ne!(s.net, d.net);
        for p in [&s.net, &s.ev, &d.net, &d.ev] {
            assert!(p.as_os_str().len() < 108, "{}", p.display());
        }
        let hook = hook_script(Path::new("/usr/bin/srmig"), &dir.join("c.sock"), "d");
        assert!(hook.starts_with("#!/bin/sh\n"));
        assert!(hook.contains(
            "libvirt-hook --controller '/tmp/srmig-lab-abcdefgh/c.sock' --host 'd' \"$@\""
        ));
    }
}
