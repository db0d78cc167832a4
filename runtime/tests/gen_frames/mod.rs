//! Helpers of the generator's tests (`gen_attacks.rs`, `gen_impair.rs`): a run's frames in
//! memory and a digest of them, to compare runs byte for byte.

use std::convert::Infallible;

use runtime::ports::gen::{generate, GenConfig, GenSummary};

/// The frames (with their timestamps) and the summary of one run of `cfg`.
pub fn collect(cfg: &GenConfig) -> (Vec<(u64, Vec<u8>)>, GenSummary) {
    let mut frames = Vec::new();
    let s = generate(cfg, |ts, f| {
        frames.push((ts, f.to_vec()));
        Ok::<(), Infallible>(())
    })
    .unwrap();
    (frames, s)
}

/// FNV-1a over timestamps and frames.
pub fn digest(frames: &[(u64, Vec<u8>)]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (ts, f) in frames {
        for b in ts.to_le_bytes().iter().chain(f.iter()) {
            h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}
