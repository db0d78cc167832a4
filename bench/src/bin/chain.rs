//! The paper's chain-length comparison: packets/second of a chain of 1..=K `stream_hash` NFs
//! (each reads every reassembled TCP byte) under three arrangements, over the same generated
//! capture, in the same invocation:
//!
//! * mode a — every NF with its own private L2/3 + TCP stacks, NFs pipelined (the per-NF
//!   stacks baseline);
//! * mode c — one shared asynchronous stack, NFs read its snapshots;
//! * mode d — as c, with the read-only NFs in a parallel group (formed by the controller).
//!
//! Repetitions alternate the modes; each point is the median. Prints a table with the ratios
//! c/a and d/a and writes an SVG plot (packets/s against chain length, one line per mode).
//!
//! `cargo run -p bench --release --bin chain -- [--flows N] [--reps R] [--max-nfs K] [--plot FILE]`

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use bench::{best, line_plot_svg, median, Series};
use microboxes::{App, Mode, RunOptions};
use runtime::ports::gen::{generate, GenConfig};
use runtime::ports::{LinkType, PcapWriter};

const MODES: [Mode; 3] = [Mode::A, Mode::C, Mode::D];

/// The app text: the TCP monitor and `n` stream_hash NFs, each writing to its own file.
fn chain_app(n: usize, dir: &Path) -> String {
    let mut text = String::from("[stack.tcp]\n");
    for i in 1..=n {
        let out = dir.join(format!("h{i}.jsonl"));
        text +=
            &format!("\n[[nf]]\nname = \"h{i}\"\nkind = \"stream_hash\"\noutput = {:?}\n", out.display().to_string());
    }
    text
}

/// One run: (packets read, wall seconds, parallel groups seen in the ring names).
fn run_chain(app: &App, input: &Path, mode: Mode) -> Result<(u64, f64, usize)> {
    let mut opts = RunOptions::new(input);
    opts.mode = mode;
    opts.prefix = Some(format!("benchchain{}", std::process::id()));
    let start = Instant::now();
    let r = microboxes::run(app, opts).map_err(|e| anyhow::anyhow!("mode {mode}: {e}"))?;
    let secs = start.elapsed().as_secs_f64();
    if !r.ok() {
        anyhow::bail!("mode {mode}, {} NFs: run failed:\n{}", app.nfs.len(), r.to_text());
    }
    anyhow::ensure!(r.mode == mode.to_string(), "asked for mode {mode}, the report says {}", r.mode);
    let groups = r.rings.iter().filter(|l| l.link.contains("-> split[")).count();
    Ok((r.packets_in, secs, groups))
}

/// The NFs' outputs, each sorted, so that runs of different modes can be compared.
fn outputs(dir: &Path, n: usize) -> Result<Vec<Vec<String>>> {
    (1..=n)
        .map(|i| {
            let p = dir.join(format!("h{i}.jsonl"));
            let text = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
            let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
            lines.sort();
            Ok(lines)
        })
        .collect()
}

fn main() -> Result<()> {
    let mut flows = 3000usize;
    let mut reps = 3usize;
    let mut max_nfs = 5usize;
    let mut plot = PathBuf::from("target/chain.svg");
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--flows" => flows = args.next().context("--flows N")?.parse()?,
            "--reps" => reps = args.next().context("--reps R")?.parse()?,
            "--max-nfs" => max_nfs = args.next().context("--max-nfs K")?.parse()?,
            "--plot" => plot = args.next().context("--plot FILE")?.into(),
            other => anyhow::bail!("unknown argument `{other}` (use --flows N, --reps R, --max-nfs K, --plot FILE)"),
        }
    }
    anyhow::ensure!(flows >= 1 && reps >= 1, "--flows and --reps must be at least 1");
    anyhow::ensure!((1..=16).contains(&max_nfs), "--max-nfs must be between 1 and 16");

    let dir = std::env::temp_dir().join(format!("mbox-bench-chain-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = measure(&dir, flows, reps, max_nfs, &plot);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn measure(dir: &Path, flows: usize, reps: usize, max_nfs: usize, plot: &Path) -> Result<()> {
    let input = dir.join("in.pcap");
    let mut w = PcapWriter::create(&input, LinkType::Ethernet)?;
    let cfg = GenConfig { flows, seed: 18, udp_fraction: 0.0, response_size: (0, 8_000), ..GenConfig::default() };
    let s = generate(&cfg, |ts, f| w.write(ts, f, f.len() as u32))?;
    w.finish()?;
    let payload: u64 = s.flows.iter().map(|f| f.payload_toserver + f.payload_toclient).sum();
    println!(
        "input: {} packets, {} TCP connections, {:.1} MB of TCP payload; chains of 1..={max_nfs} stream_hash NFs, \
         {reps} reps per point, modes alternating, default placement",
        s.packets,
        flows,
        payload as f64 / 1e6
    );

    // pps[n - 1][mode index] = one rate per repetition.
    let mut pps: Vec<[Vec<f64>; 3]> = vec![Default::default(); max_nfs];
    let mut groups = vec![0usize; max_nfs];
    let mut mismatches: Vec<String> = Vec::new();
    for n in 1..=max_nfs {
        let app = App::parse(&chain_app(n, dir), "chain").map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut reference: Option<Vec<Vec<String>>> = None;
        for rep in 0..reps {
            // Alternate the order too, so that no mode always runs first.
            let order: Vec<usize> = if rep % 2 == 0 { vec![0, 1, 2] } else { vec![2, 1, 0] };
            for m in order {
                let (packets, secs, g) = run_chain(&app, &input, MODES[m])?;
                pps[n - 1][m].push(packets as f64 / secs);
                if MODES[m] == Mode::D {
                    groups[n - 1] = g;
                }
                if rep == 0 {
                    // Every mode must compute the same hashes.
                    let out = outputs(dir, n)?;
                    match &reference {
                        None => reference = Some(out),
                        Some(r) if *r != out => {
                            mismatches.push(format!("{n} NFs: mode {} output differs from mode a's", MODES[m]))
                        }
                        Some(_) => {}
                    }
                }
            }
        }
        let med: Vec<f64> = pps[n - 1].iter().map(|v| median(v)).collect();
        eprintln!("  {n} NFs: a {:.0}  c {:.0}  d {:.0} pps", med[0], med[1], med[2]);
    }

    println!();
    println!(
        "{:>6} {:>13} {:>13} {:>13} {:>7} {:>7}   {:<18}",
        "NFs", "mode a pps", "mode c pps", "mode d pps", "c/a", "d/a", "best a / c / d pps"
    );
    let mut lines: [Vec<(f64, f64)>; 3] = Default::default();
    for n in 1..=max_nfs {
        let v = &pps[n - 1];
        let med: Vec<f64> = v.iter().map(|x| median(x)).collect();
        for m in 0..3 {
            lines[m].push((n as f64, med[m]));
        }
        println!(
            "{:>6} {:>13.0} {:>13.0} {:>13.0} {:>7.2} {:>7.2}   {:.0} / {:.0} / {:.0}",
            n,
            med[0],
            med[1],
            med[2],
            med[1] / med[0],
            med[2] / med[0],
            best(&v[0]),
            best(&v[1]),
            best(&v[2])
        );
    }
    let first = |m: usize| lines[m][0].1;
    let last = |m: usize| lines[m][max_nfs - 1].1;
    println!();
    println!("paper's claim: a shared stack scales much better than per-NF stacks as the chain grows,");
    println!("because per-NF stacks redo L2/3 and TCP processing (reassembly) once per NF.");
    println!(
        "measured: from 1 to {max_nfs} NFs, mode a keeps {:.0}% of its 1-NF rate, mode c {:.0}%, mode d {:.0}%; \
         at {max_nfs} NFs c/a = {:.2}, d/a = {:.2}",
        100.0 * last(0) / first(0),
        100.0 * last(1) / first(1),
        100.0 * last(2) / first(2),
        last(1) / last(0),
        last(2) / last(0)
    );
    let grouped: Vec<String> = (1..=max_nfs).filter(|n| groups[n - 1] > 0).map(|n| n.to_string()).collect();
    println!(
        "mode d formed a parallel group at chain lengths: {}",
        if grouped.is_empty() { "none".to_string() } else { grouped.join(", ") }
    );
    println!("(pps = input packets / wall time of microboxes::run, setup of the shared-memory region included)");
    if mismatches.is_empty() {
        println!("outputs: every mode wrote the same stream hashes (checked on the first repetition)");
    } else {
        for m in &mismatches {
            println!("WARNING: {m}");
        }
    }

    let series: Vec<Series> =
        ["mode a: per-NF stacks", "mode c: shared async stack", "mode d: shared stack, parallel NFs"]
            .iter()
            .zip(lines)
            .map(|(label, points)| Series { label, points })
            .collect();
    line_plot_svg(
        plot,
        "stream_hash chain: throughput vs chain length",
        "NFs in the chain",
        "packets/s (median)",
        &series,
    )?;
    let shown = std::fs::canonicalize(plot).unwrap_or_else(|_| plot.to_path_buf());
    println!("plot written to {}", shown.display());
    anyhow::ensure!(mismatches.is_empty(), "modes disagree on the stream hashes");
    Ok(())
}
