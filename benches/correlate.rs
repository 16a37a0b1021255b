//! Criterion bench of the correlator (filled in below).
fn main() {}
