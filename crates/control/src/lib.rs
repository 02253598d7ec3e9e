//! srmig-control: the sans-IO controller core (work in progress).
#![forbid(unsafe_code)]
