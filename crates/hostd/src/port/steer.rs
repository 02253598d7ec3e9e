//! Receive steering of a VM port with the TC fast path to srmigd's own CPU (RPS,
//! `/sys/class/net/<port>/queues/rx-<n>/rps_cpus`), so that the VM's packets keep their order
//! when they change hands between the TC program and srmigd.
//!
//! # Why
//! A VM's frame reaches the host side of its port through the kernel's per-CPU receive
//! backlog of the CPU that sent it (the VM's vCPU thread, or the netns VM's process). The TC
//! program runs there, and so does everything its redirect starts: the uplink's transmit and,
//! on a veth, each later hop's backlog. srmigd sends from the CPU its dataplane thread is
//! pinned to. When a configuration change turns the program off, the VM's next frames go to
//! srmigd, which sends them from *its* CPU while the program's last frames may still wait in
//! the other CPU's backlog (a busy CPU defers that work to `ksoftirqd`): the newer frames
//! overtake the older ones, and so can the commit's fence marker. Measured in the netns lab
//! (`lab migrate --vm-fast-path`, IPv6 TCP, 10 migrations): 60-125 segments D-SACKed by the
//! VM as spurious retransmissions.
//!
//! With `rps_cpus` of the VM port set to srmigd's CPU, the kernel queues each frame of the VM
//! to that CPU's backlog as it arrives: the program, its redirect and srmigd's own sends all
//! run on one CPU, and one CPU's backlog is one FIFO queue. A frame the program forwarded is
//! queued before any frame srmigd reads after the program was turned off, and the same holds
//! the other way at turning it on. What this costs: the VM's egress in the kernel is bounded
//! by that one CPU, as srmigd's single worker already is.
//!
//! # Safety of the write
//! `/sys/class/net` shows the interfaces of the network namespace sysfs was mounted in (`ip
//! netns exec` mounts the namespace's own). Before writing, the interface's `ifindex` there must
//! be the port's: otherwise nothing is written and the caller says so. The previous masks are
//! kept and written back when the program leaves the port, if the interface is still here.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// The `rps_cpus` masks of an interface's receive queues before srmigd changed them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Steered {
    ifindex: u32,
    ifname: String,
    previous: Vec<(PathBuf, String)>,
}

/// Whether a refusal to steer should be said as a warning: the first time, and always
/// unless it is one that repeats for every port (sysfs read-only or not ours to write, e.g. a
/// service sandbox): that one is said once for the process.
pub fn say_refusal(e: &io::Error) -> bool {
    use std::sync::atomic::{AtomicBool, Ordering};
    static SAID: AtomicBool = AtomicBool::new(false);
    let every_port = matches!(
        e.kind(),
        io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem
    );
    !every_port || !SAID.swap(true, Ordering::Relaxed)
}

/// `rps_cpus` syntax: comma-separated 32-bit hex words, most significant first.
pub fn cpu_mask(cpu: usize) -> String {
    let words = cpu / 32 + 1;
    (0..words)
        .rev()
        .map(|w| {
            if w == cpu / 32 {
                format!("{:08x}", 1u32 << (cpu % 32))
            } else {
                "00000000".to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Steers the receive queues of `ifname` (which must be `ifindex` in this namespace's sysfs)
/// to `cpu`; returns what to write back.
pub fn steer_to(ifindex: u32, ifname: &str, cpu: usize) -> io::Result<Steered> {
    steer_in(Path::new("/sys/class/net"), ifindex, ifname, cpu)
}

fn steer_in(root: &Path, ifindex: u32, ifname: &str, cpu: usize) -> io::Result<Steered> {
    let dir = root.join(ifname);
    check_ifindex(&dir, ifindex, ifname)?;
    let mask = cpu_mask(cpu);
    let mut previous = Vec::new();
    let mut queues: Vec<PathBuf> = fs::read_dir(dir.join("queues"))?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
        .map(|e| e.path().join("rps_cpus"))
        .collect();
    queues.sort();
    if queues.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{ifname} has no receive queue in sysfs"),
        ));
    }
    for q in queues {
        let before = fs::read_to_string(&q)
            .map_err(|e| io::Error::new(e.kind(), format!("reading {}: {e}", q.display())))?;
        fs::write(&q, &mask)
            .map_err(|e| io::Error::new(e.kind(), format!("writing {}: {e}", q.display())))?;
        previous.push((q, before.trim().to_owned()));
    }
    Ok(Steered {
        ifindex,
        ifname: ifname.to_owned(),
        previous,
    })
}

fn check_ifindex(dir: &Path, ifindex: u32, ifname: &str) -> io::Result<()> {
    let found = fs::read_to_string(dir.join("ifindex"))
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", dir.display())))?;
    if found.trim() != ifindex.to_string() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "{ifname} in /sys/class/net is interface {} and the port's is {ifindex}: sysfs is not mounted for srmigd's network namespace (start srmigd with `ip netns exec`)",
                found.trim()
            ),
        ));
    }
    Ok(())
}

impl Steered {
    /// The interface steered.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// Writes the previous masks back, if the interface is still this namespace's `ifindex`
    /// (a VM's port that moved to another host is left to that host's srmigd).
    pub fn restore(self) -> io::Result<()> {
        if let Some((q, _)) = self.previous.first() {
            // .../<ifname>/queues/rx-N/rps_cpus
            if let Some(dir) = q.parent().and_then(Path::parent).and_then(Path::parent) {
                check_ifindex(dir, self.ifindex, &self.ifname)?;
            }
        }
        for (q, before) in self.previous {
            fs::write(&q, if before.is_empty() { "0" } else { &before })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_that_repeats_for_every_port_is_said_once() {
        let ro = io::Error::from(io::ErrorKind::ReadOnlyFilesystem);
        let gone = io::Error::from(io::ErrorKind::NotFound);
        assert!(say_refusal(&gone));
        assert!(say_refusal(&ro));
        assert!(!say_refusal(&ro));
        assert!(!say_refusal(&io::Error::from(
            io::ErrorKind::PermissionDenied
        )));
        assert!(say_refusal(&gone), "other refusals are said each time");
    }

    #[test]
    fn masks_name_one_cpu() {
        assert_eq!(cpu_mask(0), "00000001");
        assert_eq!(cpu_mask(1), "00000002");
        assert_eq!(cpu_mask(31), "80000000");
        assert_eq!(cpu_mask(32), "00000001,00000000");
        assert_eq!(cpu_mask(70), "00000040,00000000,00000000");
    }

    fn fake_sysfs(ifindex: &str, queues: &[&str]) -> io::Result<tempfile::TempDir> {
        let d = tempfile::tempdir()?;
        let dev = d.path().join("vmp0");
        for q in queues {
            fs::create_dir_all(dev.join("queues").join(q))?;
            if q.starts_with("rx-") {
                fs::write(dev.join("queues").join(q).join("rps_cpus"), "0\n")?;
            }
        }
        fs::write(dev.join("ifindex"), format!("{ifindex}\n"))?;
        Ok(d)
    }

    #[test]
    fn steers_every_receive_queue_and_restores() -> io::Result<()> {
        let d = fake_sysfs("7", &["rx-0", "rx-1", "tx-0"])?;
        let s = steer_in(d.path(), 7, "vmp0", 1)?;
        for q in ["rx-0", "rx-1"] {
            let p = d.path().join("vmp0/queues").join(q).join("rps_cpus");
            assert_eq!(fs::read_to_string(p)?, "00000002");
        }
        assert!(!d.path().join("vmp0/queues/tx-0/rps_cpus").exists());
        s.restore()?;
        let p = d.path().join("vmp0/queues/rx-1/rps_cpus");
        assert_eq!(fs::read_to_string(p)?, "0");
        Ok(())
    }

    #[test]
    fn another_namespaces_interface_is_not_touched() -> io::Result<()> {
        let d = fake_sysfs("9", &["rx-0"])?;
        let rx0 = d.path().join("vmp0/queues/rx-0/rps_cpus");
        let Err(e) = steer_in(d.path(), 7, "vmp0", 1) else {
            panic!("steered interface 9 as if it were 7");
        };
        assert!(e.to_string().contains("is interface 9"), "{e}");
        assert_eq!(fs::read_to_string(&rx0)?, "0\n");
        // Nothing is written back once the name means another interface.
        let s = steer_in(d.path(), 9, "vmp0", 0)?;
        fs::write(d.path().join("vmp0/ifindex"), "11\n")?;
        assert!(s.restore().is_err());
        assert_eq!(fs::read_to_string(&rx0)?, "00000001");
        Ok(())
    }
}
