//! srmig-wire: zero-copy views and parsed representations of the headers srmig touches.
#![forbid(unsafe_code)]
