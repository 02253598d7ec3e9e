//! The SRH HMAC TLV (RFC 8754 2.1.2): keys, verification at local SIDs, signing of policies.
//!
//! **Keys** come from `[[hmac_keys]]` ([`HmacKeyConfig`]). At install time each key's MAC is
//! keyed once (the inner and outer pads are hashed into a [`Hmac<Sha256>`] state); per packet
//! that state is copied on the stack and fed the HMAC text, so verification allocates nothing
//! and costs two SHA-256 compressions plus one per 64 octets of text (22 + 16 x segments).
//!
//! **The HMAC text** (RFC 8754 2.1.2.1, and Linux `seg6_hmac_compute` byte for byte): the IPv6
//! Source Address, Last Entry, Flags, HMAC Key ID, then every address of the segment list, as
//! received. Segments Left and the Destination Address are not in it: they change at every
//! endpoint. The 32-octet SHA-256 digest fills the HMAC field.
//!
//! **Verification** runs at every local SID that receives an SRv6 packet from an uplink
//! ([`HmacTable::check`], before the behavior), by the ingress port's [`HmacMode`]:
//!
//! | mode      | no SRH / no HMAC TLV | HMAC TLV, unknown key | known key, wrong HMAC | verifies |
//! |-----------|----------------------|-----------------------|-----------------------|----------|
//! | `require` | drop `HmacMissing`   | drop `HmacUnknownKey` | drop `HmacMismatch`   | pass     |
//! | `verify`  | pass                 | drop `HmacUnknownKey` | drop `HmacMismatch`   | pass     |
//! | `ignore`  | pass                 | pass                  | pass                  | pass     |
//!
//! Unlike Linux (`seg6_get_tlv_hmac`), the TLV is found wherever it is in the TLV area and
//! whether or not the legacy SRH flag 0x08 is set. With the D flag clear the Destination
//! Address must also be `Segment List[Segments Left]` (`HmacDestinationMismatch`): the D flag
//! is how a headend says the DA is not in the list (H.Encaps.Red). A failed HMAC (unknown key,
//! mismatch, malformed, destination) is answered with an ICMPv6 Parameter Problem, code 0,
//! pointing at the HMAC TLV (RFC 8754 2.1.2.1 SHOULD, rate limited like every error).
//! Packets a VM port sent were encapsulated here and are not verified again.
//!
//! **Signing**: a policy with `hmac_key` gets the TLV appended to its precomputed SRH, with its
//! HMAC computed once at install (source, Last Entry, Flags and segments are all fixed), so
//! H.Encaps with HMAC is the same copy as without. H.Encaps.Red sets the D flag (the first
//! SID is only in the DA); with a single segment it keeps a one-segment SRH to carry the TLV.

use core::fmt;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use srmig_wire::srh::{self, Srh};

use crate::config::{ConfigError, HmacAlgorithm, HmacKeyConfig, HmacMode, PortConfig, PortKind};
use crate::drop::DropReason;
use crate::port::PortId;

/// One installed key: its id and the keyed MAC state (cloned per packet).
#[derive(Clone)]
pub(crate) struct HmacKey {
    id: u32,
    mac: Hmac<Sha256>,
}

impl fmt::Debug for HmacKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HmacKey")
            .field("id", &self.id)
            .field("algorithm", &HmacAlgorithm::HmacSha256)
            .finish_non_exhaustive()
    }
}

impl HmacKey {
    /// The key's id.
    pub(crate) fn id(&self) -> u32 {
        self.id
    }

    /// The HMAC of `srh` sent from `source` under this key (RFC 8754 2.1.2.1). The Key ID of
    /// the text is this key's; `srh` must hold its fixed part.
    pub(crate) fn compute<T: AsRef<[u8]>>(
        &self,
        source: &[u8; 16],
        srh: &Srh<T>,
    ) -> [u8; srh::HMAC_FIELD_LEN] {
        self.fed(source, srh).finalize().into_bytes().into()
    }

    /// The MAC state after the HMAC text (a copy of the keyed state: no allocation).
    #[inline]
    fn fed<T: AsRef<[u8]>>(&self, source: &[u8; 16], srh: &Srh<T>) -> Hmac<Sha256> {
        let mut mac = self.mac.clone();
        mac.update(&srh::hmac_text_prefix(
            source,
            srh.last_entry(),
            srh.flags(),
            self.id,
        ));
        mac.update(srh.segments_bytes());
        mac
    }
}

/// Why a packet failed the HMAC check: the drop reason, and where the ICMPv6 Parameter Problem
/// points (offset from the IPv6 header), if one is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HmacFailure {
    pub(crate) reason: DropReason,
    pub(crate) pointer: Option<u32>,
}

/// The node's keys (sorted by id) and each port's [`HmacMode`].
#[derive(Debug, Clone, Default)]
pub(crate) struct HmacTable {
    keys: Vec<HmacKey>,
    modes: Vec<HmacMode>,
    /// Whether some port's mode is `Require` (otherwise a packet without TLVs always passes).
    any_require: bool,
}

impl HmacTable {
    /// Validates `[[hmac_keys]]` and the ports' `hmac` fields and keys the MACs.
    pub(crate) fn build(
        keys: &[HmacKeyConfig],
        ports: &[PortConfig],
    ) -> Result<HmacTable, ConfigError> {
        let mut out = Vec::with_capacity(keys.len());
        for (i, k) in keys.iter().enumerate() {
            let path = format!("hmac_keys[{i}]");
            if k.id == 0 {
                return Err(ConfigError::invalid(
                    format!("{path}.id"),
                    "0 is not a key id (Linux refuses it too)",
                ));
            }
            if keys[..i].iter().any(|o| o.id == k.id) {
                return Err(ConfigError::invalid(
                    format!("{path}.id"),
                    format!("duplicate key id {}", k.id),
                ));
            }
            if k.secret.is_empty() {
                return Err(ConfigError::invalid(
                    format!("{path}.secret_file"),
                    format!(
                        "the secret of {} was not loaded (NodeConfig::load_hmac_secrets)",
                        k.secret_file.display()
                    ),
                ));
            }
            let mac = match k.algorithm {
                HmacAlgorithm::HmacSha256 => {
                    // HMAC takes keys of any length (RFC 2104 2); this cannot fail.
                    Hmac::<Sha256>::new_from_slice(k.secret.expose()).map_err(|_| {
                        ConfigError::invalid(format!("{path}.secret_file"), "unusable secret")
                    })?
                }
            };
            out.push(HmacKey { id: k.id, mac });
        }
        out.sort_unstable_by_key(|k| k.id);
        let mut modes = Vec::with_capacity(ports.len());
        for (i, p) in ports.iter().enumerate() {
            modes.push(match (p.kind, p.hmac) {
                (PortKind::Uplink, m) => m.unwrap_or_default(),
                (PortKind::Vm, None) => HmacMode::Ignore,
                (PortKind::Vm, Some(_)) => {
                    return Err(ConfigError::invalid(
                        format!("ports[{i}].hmac"),
                        "applies to uplinks only (a VM port never accepts an SRH)",
                    ))
                }
            });
        }
        let any_require = modes.contains(&HmacMode::Require);
        Ok(HmacTable {
            keys: out,
            modes,
            any_require,
        })
    }

    /// Whether a packet received on `ingress` whose SRH has no TLV area passes
    /// [`HmacTable::check`] (for the fast path, which handles only such packets).
    pub(crate) fn passes_without_tlvs(&self, ingress: PortId) -> bool {
        if !self.any_require {
            return true;
        }
        let mode = self
            .modes
            .get(ingress.index())
            .copied()
            .unwrap_or(HmacMode::Ignore);
        mode == HmacMode::Ignore || missing(mode).is_ok()
    }

    /// The key with id `id`.
    #[inline]
    pub(crate) fn key(&self, id: u32) -> Option<&HmacKey> {
        self.keys
            .binary_search_by_key(&id, |k| k.id)
            .ok()
            .and_then(|i| self.keys.get(i))
    }

    /// The HMAC check of a packet received on `ingress` at a local SID (see the module docs).
    /// `packet` starts at the IPv6 header; `srh` is the SRH's offset in it, if it has one
    /// (the extension header walk has checked that the header lies inside the packet).
    ///
    /// Per packet this is two bytes of the SRH: an SRH without a TLV area (the usual one)
    /// cannot carry the TLV, and unless some port requires HMAC nothing else is looked at. The
    /// port's mode decides the rest; only packets with TLVs take the full check
    /// ([`HmacTable::check_tlvs`], out of line).
    #[inline]
    pub(crate) fn check(
        &self,
        ingress: PortId,
        packet: &[u8],
        srh: Option<usize>,
    ) -> Result<(), HmacFailure> {
        let tlvs = srh.map(|o| has_tlv_area(packet, o));
        if tlvs == Some(false) && !self.any_require {
            return Ok(());
        }
        let mode = self
            .modes
            .get(ingress.index())
            .copied()
            .unwrap_or(HmacMode::Ignore);
        if mode == HmacMode::Ignore {
            return Ok(());
        }
        match (srh, tlvs) {
            (Some(o), Some(true)) => self.check_tlvs(mode, packet, o),
            _ => missing(mode),
        }
    }

    /// [`HmacTable::check`] for an SRH at `o` with a TLV area, in a mode other than `Ignore`.
    #[cold]
    #[inline(never)]
    fn check_tlvs(&self, mode: HmacMode, packet: &[u8], o: usize) -> Result<(), HmacFailure> {
        let missing = || missing(mode);
        // Last Entry beyond the header: no TLV area to look in. SRH processing answers that
        // (RFC 8754 4.3.1.1); a port that requires HMAC drops it here.
        let Some(view) = packet.get(o..).and_then(|b| Srh::new_checked(b).ok()) else {
            return missing();
        };
        if view.tlv_offset() >= view.header_len() {
            return missing();
        }
        let tlv = match view.hmac_tlv() {
            Ok(Some(t)) => t,
            Ok(None) => return missing(),
            Err(srmig_wire::Error::TlvOverrun) => {
                return Err(HmacFailure {
                    reason: DropReason::TlvOverrun,
                    pointer: None,
                })
            }
            Err(_) => {
                // A short HMAC TLV or a second one: point at the (first) HMAC TLV.
                let mut it = view.tlvs();
                let off = loop {
                    let here = it.offset();
                    match it.next() {
                        Some(Ok(srh::Tlv::Hmac { .. }) | Err(_)) | None => break here,
                        Some(Ok(_)) => {}
                    }
                };
                return Err(fail(DropReason::HmacMalformed, o + view.tlv_offset() + off));
            }
        };
        let at = o + tlv.offset;
        let Some(key) = self.key(tlv.key_id) else {
            return Err(fail(DropReason::HmacUnknownKey, at));
        };
        if tlv.hmac.len() != srh::HMAC_FIELD_LEN {
            return Err(fail(DropReason::HmacMalformed, at));
        }
        let (Some(src), Some(dst)) = (packet.get(8..24), packet.get(24..40)) else {
            return Err(HmacFailure {
                reason: DropReason::Truncated,
                pointer: None,
            });
        };
        if !tlv.d_flag {
            let active = view.segment_checked(usize::from(view.segments_left()));
            if active.is_none_or(|a| a.octets() != dst) {
                return Err(fail(DropReason::HmacDestinationMismatch, at));
            }
        }
        let mut source = [0u8; 16];
        source.copy_from_slice(src);
        // Constant time.
        key.fed(&source, &view)
            .verify_slice(tlv.hmac)
            .map_err(|_| fail(DropReason::HmacMismatch, at))
    }
}

/// Whether the SRH at `packet[o..]` has a TLV area (`Srh::tlv_offset < Srh::header_len`, from
/// Hdr Ext Len and Last Entry); `false` when those bytes are missing.
#[inline]
fn has_tlv_area(packet: &[u8], o: usize) -> bool {
    let (Some(&hel), Some(&le)) = (
        packet.get(o + srh::FIELD_HDR_EXT_LEN),
        packet.get(o + srh::FIELD_LAST_ENTRY),
    ) else {
        return false;
    };
    srh::FIXED_LEN + (usize::from(le) + 1) * srh::SEGMENT_LEN < (usize::from(hel) + 1) * 8
}

/// A packet without an HMAC TLV: a failure only where the mode requires one.
#[inline]
fn missing(mode: HmacMode) -> Result<(), HmacFailure> {
    match mode {
        HmacMode::Require => Err(HmacFailure {
            reason: DropReason::HmacMissing,
            pointer: None,
        }),
        _ => Ok(()),
    }
}

fn fail(reason: DropReason, pointer: usize) -> HmacFailure {
    HmacFailure {
        reason,
        pointer: u32::try_from(pointer).ok(),
    }
}

/// Appends an HMAC TLV signed with `key` to the SRH that starts at `v[srh_at..]` and ends `v`
/// (a policy rewrite whose IPv6 header starts at `v[0]`), growing its Hdr Ext Len.
pub(crate) fn sign_rewrite(v: &mut Vec<u8>, srh_at: usize, key: &HmacKey, d_flag: bool) {
    let at = v.len();
    v.resize(at + srh::HMAC_TLV_LEN, 0);
    srh::emit_hmac_tlv(&mut v[at..], d_flag, key.id(), &[0; srh::HMAC_FIELD_LEN]);
    v[srh_at + srh::FIELD_HDR_EXT_LEN] += (srh::HMAC_TLV_LEN / 8) as u8;
    let mut source = [0u8; 16];
    source.copy_from_slice(&v[8..24]);
    let mac = key.compute(&source, &Srh::new_unchecked(&v[srh_at..]));
    v[at + 2 + srh::HMAC_FIXED_LEN..].copy_from_slice(&mac);
}

#[cfg(test)]
#[path = "hmac_tests.rs"]
mod tests;
