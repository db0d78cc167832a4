//! The IDS app (`apps/ids.toml`: TCP monitor + DPI + Signature_Match) on one capture, beside
//! what bounds it and what users compare it with, in one run: the bare read+parse loop (one
//! thread: pcap reader + header parser, nothing kept), `mbox streams` (its default, two
//! threads: flow table and reassembly on one, SHA-256 of every stream on the other) and — when the `nfstream` Python package is
//! installed (`pip install nfstream`) — nfstream (nDPI; `n_meters=1`) on the same file. Prints
//! packets/s and Gbit/s of each and the ratios.
//!
//! Without `--input`, the capture is generated to look like a real one, and its make-up and
//! the `mbox gen` command line that writes the same file are printed: many connections
//! (256 at once), HTTP, TLS, SSH and DNS/UDP flows, responses of 100 B to 1 MB drawn
//! log-uniformly (many small transfers, a few large ones), attacks planted in HTTP flows, and
//! TCP impairment — 1 % of the data segments lost before the capture point (a hole, then the
//! retransmission), 1 % reordered, 0.5 % duplicated — so that the reassembly works on
//! out-of-order data and retransmissions as it would on a real capture.
//!
//! `cargo run -p bench --release --bin ids -- [--input FILE] [--flows N] [--reps R]`

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result};
use bench::median;
use microboxes::RunOptions;
use runtime::ports::gen::{generate, GenConfig, SizeDist};
use runtime::ports::{LinkType, PcapReader, PcapWriter};

/// (packets, bytes) of the capture, by reading it once.
fn size(input: &Path) -> Result<(u64, u64)> {
    let mut r = PcapReader::open(input)?;
    let (mut n, mut b) = (0u64, 0u64);
    while let Some(p) = r.next_packet()? {
        n += 1;
        b += u64::from(p.orig_len);
    }
    Ok((n, b))
}

fn bare(input: &Path) -> Result<f64> {
    let start = Instant::now();
    let mut r = PcapReader::open(input)?;
    let link = r.link_type();
    let mut sum = 0u64;
    while let Some(p) = r.next_packet()? {
        if let Ok(parsed) = stacks::parse::parse(link, p.data) {
            sum = sum.wrapping_add(u64::from(parsed.payload_len));
        }
    }
    black_box(sum);
    Ok(start.elapsed().as_secs_f64())
}

fn streams(input: &Path) -> Result<f64> {
    let start = Instant::now();
    let mut n = 0u64;
    microboxes::streams::streams_each(input, Default::default(), &mut |c| {
        n += black_box(c.index);
        Ok(())
    })
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(start.elapsed().as_secs_f64())
}

/// One run of the IDS app: seconds, alerts written.
fn ids(input: &Path, dir: &Path, rep: usize) -> Result<(f64, usize)> {
    let app = bench::load_app("apps/ids.toml", dir)?;
    let mut opts = RunOptions::new(input);
    opts.prefix = Some(format!("benchids{}-{rep}", std::process::id()));
    let start = Instant::now();
    let r = microboxes::run(&app, opts).map_err(|e| anyhow::anyhow!("{e}"))?;
    let secs = start.elapsed().as_secs_f64();
    anyhow::ensure!(r.ok(), "{}", r.to_text());
    let alerts = std::fs::read_to_string(dir.join("alerts.jsonl"))?.lines().count();
    Ok((secs, alerts))
}

const NFSTREAM: &str = r#"
import sys, time
from nfstream import NFStreamer
t = time.perf_counter()
n = sum(1 for _ in NFStreamer(source=sys.argv[1], n_meters=1, statistical_analysis=False))
print(time.perf_counter() - t, n)
"#;

/// nfstream's seconds on the file, or why it did not run.
fn nfstream(input: &Path) -> Result<f64, String> {
    let out =
        Command::new("python3").arg("-c").arg(NFSTREAM).arg(input).output().map_err(|e| format!("python3: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(err.lines().last().unwrap_or("failed").to_string());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace().next().and_then(|s| s.parse().ok()).ok_or_else(|| format!("unexpected output `{text}`"))
}

struct Args {
    input: Option<PathBuf>,
    flows: usize,
    reps: usize,
}

fn args() -> Result<Args> {
    let mut a = Args { input: None, flows: 20_000, reps: 3 };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        match k.as_str() {
            "--input" => a.input = Some(it.next().context("--input FILE")?.into()),
            "--flows" => a.flows = it.next().context("--flows N")?.parse()?,
            "--reps" => a.reps = it.next().context("--reps R")?.parse()?,
            other => anyhow::bail!("unknown argument `{other}` (--input FILE, --flows N, --reps R)"),
        }
    }
    Ok(a)
}

fn main() -> Result<()> {
    let a = args()?;
    let dir = std::env::temp_dir().join(format!("mbox-bench-ids-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let input = match &a.input {
        Some(p) => p.clone(),
        None => {
            let p = dir.join("in.pcap");
            let cfg = GenConfig {
                flows: a.flows,
                seed: 14,
                udp_fraction: 0.2,
                tls_fraction: 0.15,
                ssh_fraction: 0.05,
                attacks: a.flows / 50,
                response_size: (100, 1_000_000),
                response_size_dist: SizeDist::LogUniform,
                concurrency: 256,
                loss: 0.01,
                reorder: 0.01,
                duplicate: 0.005,
                ..GenConfig::default()
            };
            let mut w = PcapWriter::create(&p, LinkType::Ethernet)?;
            let s = generate(&cfg, |ts, f| w.write(ts, f, f.len() as u32))?;
            w.finish()?;
            println!(
                "input: generated, {} flows (20 % DNS/UDP, 15 % TLS, 5 % SSH, the rest HTTP; responses of 100 B-1 MB, log-uniform), {} attacks, 256 at once; TCP data segments: {} lost before the capture point, {} reordered, {} duplicated",
                a.flows, s.attacks, s.lost, s.reordered, s.duplicated
            );
            println!("input: the same file: mbox gen {} -o in.pcap", cfg.cli_args().join(" "));
            p
        }
    };
    let (packets, bytes) = size(&input)?;
    println!("{}: {packets} packets, {:.1} MB; median of {} runs each", input.display(), bytes as f64 / 1e6, a.reps);
    let (mut t_bare, mut t_streams, mut t_ids) = (Vec::new(), Vec::new(), Vec::new());
    let mut alerts = 0;
    for rep in 0..a.reps {
        t_bare.push(bare(&input)?);
        t_streams.push(streams(&input)?);
        let (s, n) = ids(&input, &dir, rep)?;
        t_ids.push(s);
        alerts = n;
    }
    let nf = nfstream(&input);
    let _ = std::fs::remove_dir_all(&dir);
    let ids_t = median(&t_ids);
    let row = |name: &str, secs: f64| {
        println!(
            "{:<44} {:>12.0} {:>9.2} {:>10.2}x",
            name,
            packets as f64 / secs,
            bytes as f64 * 8.0 / secs / 1e9,
            secs / ids_t
        );
    };
    println!("{:<44} {:>12} {:>9} {:>11}", "", "packets/s", "Gbit/s", "IDS app vs");
    row(&format!("IDS app (apps/ids.toml, 2 cores; {alerts} alerts)"), ids_t);
    row("bare read+parse loop (1 thread)", median(&t_bare));
    row("mbox streams (2 threads, SHA-256)", median(&t_streams));
    match nf {
        Ok(secs) => row("nfstream (nDPI, n_meters=1)", secs),
        Err(why) => println!("nfstream: not measured ({why}; `pip install nfstream` to compare)"),
    }
    println!("(IDS app vs X: X's time / the IDS app's time — above 1 the IDS app is faster)");
    Ok(())
}
