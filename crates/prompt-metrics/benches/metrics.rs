//! Benchmarks of prompt-metrics (filled in below).

fn main() {}
