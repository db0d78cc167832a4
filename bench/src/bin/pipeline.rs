//! pcap → L2/3 µStack → pcap through the whole runtime, against a bare loop that reads,
//! parses and writes the same file in one thread. Prints packets/second of each and the
//! ratio runtime / bare.
//!
//! `cargo run -p bench --release --bin pipeline -- [--flows N] [--reps R]`

use std::hint::black_box;
use std::path::Path;
use std::time::Instant;

use anyhow::Result;
use bench::{best, median};
use microboxes::{App, RunOptions};
use runtime::coremap::CoreMap;
use runtime::ports::gen::{generate, GenConfig};
use runtime::ports::{LinkType, PcapReader, PcapWriter};

fn bare_loop(input: &Path, output: &Path) -> Result<(u64, f64)> {
    let start = Instant::now();
    let mut r = PcapReader::open(input)?;
    let link = r.link_type();
    let mut w = PcapWriter::create(output, link)?;
    let mut n = 0u64;
    let mut sum = 0u64;
    while let Some(p) = r.next_packet()? {
        if let Ok(parsed) = stacks::parse::parse(link, p.data) {
            sum = sum.wrapping_add(u64::from(parsed.payload_len));
            w.write(p.ts_ns, p.data, p.orig_len)?;
        }
        n += 1;
    }
    w.finish()?;
    black_box(sum);
    Ok((n, start.elapsed().as_secs_f64()))
}

fn runtime_run(app: &App, input: &Path, output: &Path, map: Option<&CoreMap>) -> Result<(u64, f64)> {
    let start = Instant::now();
    let mut opts = RunOptions::new(input);
    opts.output = Some(output.to_path_buf());
    opts.core_map = map.cloned();
    opts.prefix = Some(format!("bench{}", std::process::id()));
    let report = microboxes::run(app, opts).map_err(|e| anyhow::anyhow!("{e}"))?;
    anyhow::ensure!(report.ok(), "run failed:\n{}", report.to_text());
    Ok((report.packets_in, start.elapsed().as_secs_f64()))
}

fn main() -> Result<()> {
    let (flows, reps) = bench::flows_and_reps(5000)?;
    let dir = std::env::temp_dir().join(format!("mbox-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let input = dir.join("in.pcap");
    let output = dir.join("out.pcap");
    let mut w = PcapWriter::create(&input, LinkType::Ethernet)?;
    let summary =
        generate(&GenConfig { flows, seed: 42, ..GenConfig::default() }, |ts, f| w.write(ts, f, f.len() as u32))?;
    w.finish()?;
    println!("input: {} packets, {} bytes, {} flows ({})", summary.packets, summary.bytes, flows, input.display());

    let app = App::parse("", "l23-only")?;
    let allowed = runtime::sys::allowed_cpus()?;
    let two = (allowed.len() >= 2).then(|| {
        let text = format!("[cores]\nrx = {a}\nl23 = {a}\ntx = {b}\n", a = allowed[0], b = allowed[1]);
        CoreMap::parse(&text, "bench-map").expect("bench map")
    });

    let (mut bare, mut one, mut split) = (vec![], vec![], vec![]);
    for _ in 0..reps {
        let (n, s) = bare_loop(&input, &output)?;
        bare.push(n as f64 / s);
        let (n, s) = runtime_run(&app, &input, &output, None)?;
        one.push(n as f64 / s);
        if let Some(m) = &two {
            let (n, s) = runtime_run(&app, &input, &output, Some(m))?;
            split.push(n as f64 / s);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    let b = median(&bare);
    println!("{:<44} {:>12} {:>12} {:>8}", "variant", "median pps", "best pps", "ratio");
    println!("{:<44} {:>12.0} {:>12.0} {:>8.2}", "bare read+parse+write loop (baseline)", b, best(&bare), 1.0);
    println!(
        "{:<44} {:>12.0} {:>12.0} {:>8.2}",
        "runtime, rx+l23+tx on one core",
        median(&one),
        best(&one),
        median(&one) / b
    );
    if !split.is_empty() {
        println!(
            "{:<44} {:>12.0} {:>12.0} {:>8.2}",
            "runtime, rx+l23 on core 0, tx on core 1",
            median(&split),
            best(&split),
            median(&split) / b
        );
    }
    println!("(ratio = median runtime pps / median bare pps; wall time includes setting up shared memory)");
    Ok(())
}
