//! srmig-replay: run packet captures through the srmig dataplane offline.
#![forbid(unsafe_code)]

pub mod pcap;
