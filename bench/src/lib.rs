//! # bench — Microboxes benchmarks
//!
//! Each benchmark is a binary that measures our code and a baseline **in the same process**,
//! alternating repetitions, and prints the ratio. Absolute numbers on these shared 2-core
//! machines are noisy; the ratios are what to compare across changes.
//!
//! * `cargo run -p bench --release --bin ring` — SPSC ring throughput (16-byte descriptors,
//!   bursts of 32, two pinned threads) against the `ringbuf` crate.
//! * `cargo run -p bench --release --bin pipeline` — packets/second of pcap → L2/3 µStack →
//!   pcap through the full runtime (shared memory, rings, executor threads) against a bare
//!   read-parse-write loop over the same file.

/// Best (largest) value of a list of rates.
pub fn best(xs: &[f64]) -> f64 {
    xs.iter().copied().fold(0.0, f64::max)
}

/// Median of a list of rates.
pub fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        0.0
    } else {
        v[v.len() / 2]
    }
}
