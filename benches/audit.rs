//! Audit export and search over a million events (being written).

fn main() {}
