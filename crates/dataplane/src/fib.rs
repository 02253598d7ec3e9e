//! The FIB: longest-prefix match tables (IPv6 and IPv4) per table id, resolving to an L3
//! adjacency (egress port and MAC rewrite).
//!
//! LPM structure: one exact-match hash map per prefix length present, probed from the longest
//! length down (a linear search on lengths, cf. Waldvogel et al. "Scalable high speed IP routing
//! lookups", SIGCOMM 1997, without the binary search). A /128 (/32) exact entry is thus one hash
//! probe. A hypervisor's FIB holds a handful of distinct lengths (/128 VM routes, /64, /48
//! locators, default), so a lookup is a few ~5 ns probes; `benches/dataplane.rs` group `lpm`
//! compares it with `prefix-trie` (measured numbers in the crate README/report).

use crate::hash::{fast_map, AddrHash, FastMap};
use crate::port::PortId;

#[derive(Debug, Clone)]
struct Level<V> {
    len: u8,
    mask: u128,
    map: FastMap<u128, V>,
}

/// Longest-prefix match over `BITS`-bit keys held in a `u128` (128 for IPv6, 32 for IPv4).
#[derive(Debug, Clone)]
pub struct Lpm<V, const BITS: u8> {
    /// Longest length first, length 0 excluded.
    levels: Vec<Level<V>>,
    /// The /0 entry, kept out of the hash levels so a default route costs no hash probe.
    default: Option<V>,
    hasher: AddrHash,
}

impl<V: Copy, const BITS: u8> Default for Lpm<V, BITS> {
    fn default() -> Self {
        Self::new()
    }
}

impl<V: Copy, const BITS: u8> Lpm<V, BITS> {
    /// An empty table (hashing with the default seed).
    pub fn new() -> Self {
        Self::with_hasher(AddrHash::default())
    }

    /// An empty table hashing with `hasher`.
    pub fn with_hasher(hasher: AddrHash) -> Self {
        Lpm {
            levels: Vec::new(),
            default: None,
            hasher,
        }
    }

    /// The mask of a prefix length (`len <= BITS`).
    pub const fn mask(len: u8) -> u128 {
        if len == 0 {
            0
        } else {
            let all = u128::MAX >> (128 - BITS as u32);
            all & !((1u128 << (BITS as u32 - len as u32)) - 1)
        }
    }

    /// Inserts `addr/len` (host bits are cleared); returns the previous value.
    pub fn insert(&mut self, addr: u128, len: u8, v: V) -> Option<V> {
        let len = len.min(BITS);
        if len == 0 {
            return self.default.replace(v);
        }
        let mask = Self::mask(len);
        let pos = match self.levels.iter().position(|l| l.len <= len) {
            Some(p) if self.levels[p].len == len => p,
            Some(p) => {
                self.levels.insert(
                    p,
                    Level {
                        len,
                        mask,
                        map: fast_map(self.hasher),
                    },
                );
                p
            }
            None => {
                self.levels.push(Level {
                    len,
                    mask,
                    map: fast_map(self.hasher),
                });
                self.levels.len() - 1
            }
        };
        self.levels[pos].map.insert(addr & mask, v)
    }

    /// Removes `addr/len`; returns the removed value.
    pub fn remove(&mut self, addr: u128, len: u8) -> Option<V> {
        if len == 0 {
            return self.default.take();
        }
        let p = self.levels.iter().position(|l| l.len == len)?;
        let mask = self.levels[p].mask;
        let v = self.levels[p].map.remove(&(addr & mask));
        if self.levels[p].map.is_empty() {
            self.levels.remove(p);
        }
        v
    }

    /// The value of exactly `addr/len`.
    pub fn get_exact(&self, addr: u128, len: u8) -> Option<V> {
        if len == 0 {
            return self.default;
        }
        let l = self.levels.iter().find(|l| l.len == len)?;
        l.map.get(&(addr & l.mask)).copied()
    }

    /// Longest-prefix match: the value and its prefix length.
    #[inline]
    pub fn lookup(&self, addr: u128) -> Option<(u8, V)> {
        for l in &self.levels {
            if let Some(v) = l.map.get(&(addr & l.mask)) {
                return Some((l.len, *v));
            }
        }
        self.default.map(|v| (0, v))
    }

    /// Every prefix and its value, longest first (the /0 entry last).
    pub fn iter(&self) -> impl Iterator<Item = (u128, u8, V)> + '_ {
        self.levels
            .iter()
            .flat_map(|l| l.map.iter().map(move |(&a, &v)| (a, l.len, v)))
            .chain(self.default.map(|v| (0, 0, v)))
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.levels.is_empty() && self.default.is_none()
    }

    /// Number of prefixes.
    pub fn len(&self) -> usize {
        self.levels.iter().map(|l| l.map.len()).sum::<usize>() + usize::from(self.default.is_some())
    }
}

/// An L3 adjacency: where a forwarded frame goes and its Ethernet rewrite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Adjacency {
    /// Egress port.
    pub port: PortId,
    /// Destination MAC (uplink peer MAC, or the VM's MAC on a VM port).
    pub dst_mac: [u8; 6],
    /// Source MAC (port MAC, or the gateway MAC on a VM port).
    pub src_mac: [u8; 6],
}

/// Index of a FIB table (not the configured table id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub(crate) struct TableIdx(pub(crate) u16);

#[derive(Debug, Clone)]
pub(crate) struct FibTable {
    pub(crate) v6: Lpm<Adjacency, 128>,
    pub(crate) v4: Lpm<Adjacency, 32>,
    /// Transit steering rules of the table (`[[steering]]`), looked up before its routes.
    pub(crate) steer_v6: Lpm<crate::policy::PolicyId, 128>,
    pub(crate) steer_v4: Lpm<crate::policy::PolicyId, 32>,
}

impl FibTable {
    fn new(h: AddrHash) -> FibTable {
        FibTable {
            v6: Lpm::with_hasher(h),
            v4: Lpm::with_hasher(h),
            steer_v6: Lpm::with_hasher(h),
            steer_v4: Lpm::with_hasher(h),
        }
    }
}

/// All FIB tables, by configured table id.
#[derive(Debug, Clone)]
pub(crate) struct Fib {
    tables: Vec<FibTable>,
    ids: Vec<u32>,
    hasher: AddrHash,
}

impl Fib {
    pub(crate) fn new(hasher: AddrHash) -> Fib {
        // Table 0 always exists.
        Fib {
            tables: vec![FibTable::new(hasher)],
            ids: vec![0],
            hasher,
        }
    }

    pub(crate) fn table_index(&self, id: u32) -> Option<TableIdx> {
        self.ids
            .iter()
            .position(|&t| t == id)
            .map(|i| TableIdx(i as u16))
    }

    /// The table with id `id`, created empty if missing (at most 65535 tables).
    pub(crate) fn ensure_table(&mut self, id: u32) -> Option<TableIdx> {
        if let Some(t) = self.table_index(id) {
            return Some(t);
        }
        let idx = u16::try_from(self.tables.len()).ok()?;
        self.tables.push(FibTable::new(self.hasher));
        self.ids.push(id);
        Some(TableIdx(idx))
    }

    /// The table with id `id`, created empty if missing; an error at `{path}.table` when no
    /// more tables can be made.
    pub(crate) fn table_for(
        &mut self,
        path: &str,
        id: u32,
    ) -> Result<&mut FibTable, crate::config::ConfigError> {
        let t = self.ensure_table(id).ok_or_else(|| {
            crate::config::ConfigError::invalid(format!("{path}.table"), "too many FIB tables")
        })?;
        Ok(&mut self.tables[t.0 as usize])
    }

    /// The policies the steering rules of every table steer into (one per rule).
    pub(crate) fn policies_used(&self) -> impl Iterator<Item = crate::policy::PolicyId> + '_ {
        self.tables.iter().flat_map(|t| {
            t.steer_v6
                .iter()
                .chain(t.steer_v4.iter())
                .map(|(_, _, p)| p)
        })
    }

    #[inline]
    /// The table at `t`.
    pub(crate) fn table(&self, t: TableIdx) -> Option<&FibTable> {
        self.tables.get(t.0 as usize)
    }

    pub(crate) fn lookup_v6(&self, t: TableIdx, dst: u128) -> Option<Adjacency> {
        self.tables
            .get(t.0 as usize)?
            .v6
            .lookup(dst)
            .map(|(_, a)| a)
    }

    /// The steering rule of table `t` for an IPv6 destination (none in an empty table: one
    /// length test).
    #[inline]
    pub(crate) fn steer_v6(&self, t: TableIdx, dst: u128) -> Option<crate::policy::PolicyId> {
        let s = &self.tables.get(t.0 as usize)?.steer_v6;
        if s.is_empty() {
            return None;
        }
        s.lookup(dst).map(|(_, p)| p)
    }

    /// The steering rule of table `t` for an IPv4 destination.
    #[inline]
    pub(crate) fn steer_v4(&self, t: TableIdx, dst: u32) -> Option<crate::policy::PolicyId> {
        let s = &self.tables.get(t.0 as usize)?.steer_v4;
        if s.is_empty() {
            return None;
        }
        s.lookup(u128::from(dst)).map(|(_, p)| p)
    }

    #[inline]
    pub(crate) fn lookup_v4(&self, t: TableIdx, dst: u32) -> Option<Adjacency> {
        self.tables
            .get(t.0 as usize)?
            .v4
            .lookup(u128::from(dst))
            .map(|(_, a)| a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn v6(s: &str) -> u128 {
        u128::from(s.parse::<Ipv6Addr>().unwrap())
    }

    #[test]
    fn masks() {
        assert_eq!(Lpm::<(), 128>::mask(0), 0);
        assert_eq!(Lpm::<(), 128>::mask(128), u128::MAX);
        assert_eq!(Lpm::<(), 128>::mask(1), 1u128 << 127);
        assert_eq!(Lpm::<(), 32>::mask(32), 0xffff_ffff);
        assert_eq!(Lpm::<(), 32>::mask(8), 0xff00_0000);
    }

    #[test]
    fn longest_prefix_wins() {
        let mut t: Lpm<u32, 128> = Lpm::new();
        t.insert(0, 0, 1);
        t.insert(v6("2001:db8::"), 32, 2);
        t.insert(v6("2001:db8:1::"), 48, 3);
        t.insert(v6("2001:db8:1::5"), 128, 4);
        assert_eq!(t.lookup(v6("2001:db8:1::5")), Some((128, 4)));
        assert_eq!(t.lookup(v6("2001:db8:1::6")), Some((48, 3)));
        assert_eq!(t.lookup(v6("2001:db8:2::6")), Some((32, 2)));
        assert_eq!(t.lookup(v6("fe80::1")), Some((0, 1)));
        assert_eq!(t.len(), 4);
        assert_eq!(t.remove(v6("2001:db8:1::"), 48), Some(3));
        assert_eq!(t.lookup(v6("2001:db8:1::6")), Some((32, 2)));
        assert_eq!(t.remove(0, 0), Some(1));
        assert_eq!(t.lookup(v6("fe80::1")), None);
        // host bits are ignored on insert
        t.insert(v6("2001:db8:ffff::1"), 48, 9);
        assert_eq!(t.get_exact(v6("2001:db8:ffff::"), 48), Some(9));
    }

    #[test]
    fn ipv4_and_tables() {
        let mut f = Fib::new(AddrHash::default());
        let t = f.ensure_table(7).unwrap();
        assert_eq!(f.table_index(7), Some(t));
        assert_eq!(f.table_index(0), Some(TableIdx(0)));
        let adj = Adjacency {
            port: PortId(3),
            dst_mac: [1; 6],
            src_mac: [2; 6],
        };
        f.table_for("routes[0]", 7).unwrap().v4.insert(
            u128::from(u32::from(Ipv4Addr::new(10, 1, 0, 0))),
            16,
            adj,
        );
        assert_eq!(
            f.lookup_v4(t, u32::from(Ipv4Addr::new(10, 1, 2, 3))),
            Some(adj)
        );
        assert_eq!(f.lookup_v4(t, u32::from(Ipv4Addr::new(10, 2, 2, 3))), None);
        assert_eq!(
            f.lookup_v4(TableIdx(0), u32::from(Ipv4Addr::new(10, 1, 2, 3))),
            None
        );
    }
}
