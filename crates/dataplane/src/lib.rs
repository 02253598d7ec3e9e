//! srmig-dataplane: a sans-IO SRv6 forwarding engine.
#![forbid(unsafe_code)]
