//! The stream store's write path alone: appends of segment-sized pieces to many streams at
//! once, as the TCP monitor makes them, with the window kept behind each stream's end
//! (`keep_behind`) released as the streams advance. Prints MB/s for each window size, in one
//! run, so that what the window's footprint costs the writer shows as a ratio.
//!
//! `cargo run -p bench --release --bin store -- [--streams N] [--mb MB] [--reps R]`

use std::time::Instant;

use anyhow::Result;
use runtime::streams::{self, StoreConfig};

struct Args {
    streams: u64,
    mb: u64,
    reps: usize,
}

fn args() -> Result<Args> {
    let mut a = Args { streams: 256, mb: 512, reps: 5 };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || -> Result<u64> {
            let s = it.next().ok_or_else(|| anyhow::anyhow!("{k} needs a value"))?;
            s.parse().map_err(|_| anyhow::anyhow!("{k}: not a number: {s}"))
        };
        match k.as_str() {
            "--streams" => a.streams = v()?.clamp(1, 100_000),
            "--mb" => a.mb = v()?.clamp(1, 1 << 20),
            "--reps" => a.reps = v()?.clamp(1, 1000) as usize,
            _ => anyhow::bail!("unknown argument `{k}` (--streams N, --mb MB, --reps R)"),
        }
    }
    Ok(a)
}

/// Seconds to append `total` bytes in 1,448-byte segments round-robin over `n` streams,
/// releasing what lies more than `keep` bytes behind each stream's end.
fn run(n: u64, total: u64, keep: u64) -> Result<f64> {
    const SEG: usize = 1448;
    let chunk = 4096u64;
    let chunks = (n * (keep / chunk + 3) + 64).min(u64::from(streams::MAX_CHUNKS)) as u32;
    let (mut w, _store) =
        streams::heap(StoreConfig { chunk_size: chunk as u32, chunks }).map_err(|e| anyhow::anyhow!("{e}"))?;
    let recs: Vec<_> = (0..n)
        .map(|k| w.open(streams::key(k as u32, 1)))
        .collect::<Option<_>>()
        .ok_or_else(|| anyhow::anyhow!("no record"))?;
    for r in &recs {
        w.set_present(*r, 0);
    }
    let seg = vec![0x5au8; SEG];
    let mut ends = vec![0u64; n as usize];
    let start = Instant::now();
    let mut done = 0u64;
    while done < total {
        for (i, r) in recs.iter().enumerate() {
            let at = ends[i];
            anyhow::ensure!(w.append(*r, 0, at, &seg), "append refused (store too small)");
            ends[i] = at + SEG as u64;
            w.publish(*r, 0, ends[i]);
            w.release(*r, 0, ends[i].saturating_sub(keep));
        }
        done += n * SEG as u64;
    }
    Ok(start.elapsed().as_secs_f64() / done as f64 * total as f64)
}

fn main() -> Result<()> {
    let a = args()?;
    let total = a.mb << 20;
    println!(
        "stream store appends: {} streams, {} MB per run, 1,448-byte segments; best of {}",
        a.streams, a.mb, a.reps
    );
    println!("{:>12} {:>10} {:>10}", "keep_behind", "MB/s", "vs 64 KiB");
    let mut base = None;
    for keep in [65536u64, 16384, 4096] {
        let mut t = Vec::new();
        for _ in 0..a.reps {
            t.push(run(a.streams, total, keep)?);
        }
        let fastest = t.iter().copied().fold(f64::INFINITY, f64::min);
        let mbs = total as f64 / 1e6 / fastest;
        let b = *base.get_or_insert(mbs);
        println!("{keep:>12} {mbs:>10.0} {:>9.2}x", mbs / b);
    }
    Ok(())
}
