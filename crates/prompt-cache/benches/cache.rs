//! Benchmarks for prompt-cache (filled in below).
fn main() {}
