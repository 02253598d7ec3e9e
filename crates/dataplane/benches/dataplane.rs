//! Criterion benches of the dataplane (filled in below once the testkit scenarios exist).
fn main() {}
