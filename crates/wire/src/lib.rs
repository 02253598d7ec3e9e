//! srmig-wire: zero-copy views and parsed representations of the headers srmig touches.
//!
//! # Convention (after smoltcp's `wire`)
//!
//! Every header has two faces:
//!
//! * a **view** `Foo<T: AsRef<[u8]>>` over a byte buffer, built with `new_unchecked` (no
//!   check) or `new_checked` (runs `check_len`, for untrusted input). Getters are named after
//!   the RFC field (`segments_left`, `last_entry`, `hop_limit`), setters are `set_*` and need
//!   `T: AsMut<[u8]>`, `into_inner` gives the buffer back. Views never allocate; once
//!   `new_checked` succeeded their getters never panic.
//! * a **Repr** (`Repr` / `SrhRepr` / `icmpv6::Repr`) with `parse(&view)`, `buffer_len()` and
//!   `emit(&mut view)`. Reprs are for control paths and tests and may allocate.
//!
//! For the fast path there are no-alloc emitters that write straight into a buffer:
//! [`srh::emit_srh`], [`ipv6::emit_header`], [`icmpv6::emit_error`].
//!
//! Every failure is an [`Error`] variant naming the precise condition, so the dataplane can
//! map it to a named drop reason.
//!
//! # Modules
//! * [`ethernet`]: Ethernet II frames, MAC addresses, EtherTypes.
//! * [`ip`]: IP protocol numbers.
//! * [`ipv6`]: IPv6 fixed header and address-class helpers.
//! * [`ipv4`]: IPv4 header (minimal, for End.DX4/DT4 and tests).
//! * [`ext`]: generic IPv6 extension headers, options, Fragment, and the chain walker.
//! * [`srh`]: the Segment Routing Header (RFC 8754) with its TLVs.
//! * [`icmpv6`]: ICMPv6 (RFC 4443) and the ICMPv6 error builder.
//! * [`ndisc`]: Neighbor Discovery (RFC 4861) NS/NA and their options.
//! * [`checksum`]: Internet checksum, pseudo-header, incremental update.
#![forbid(unsafe_code)]

mod error;

pub mod checksum;
pub mod ethernet;
pub mod ext;
pub mod icmpv6;
pub mod ip;
pub mod ipv4;
pub mod ipv6;
pub mod ndisc;
pub mod srh;

pub use error::{Error, Result};
pub use ip::IpProtocol;
pub use srh::{HmacTlv, SrhRepr, Tlv, TlvRepr};
