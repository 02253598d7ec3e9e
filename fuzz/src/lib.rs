//! Shared code of the srmig fuzz targets and their tools (seed generator, coverage report).
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod control_ops;
pub mod dataplane_ops;
