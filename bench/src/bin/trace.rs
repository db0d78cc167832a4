//! The trace recorder's cost: the example app (firewall + flow_stats behind the L2/3 µStack)
//! over the same generated capture, with tracing off and on, alternating, in one process.
//! Prints packets/second of each, the overhead ratio, and how big the trace got.
//!
//! `cargo run -p bench --release --bin trace -- [--flows N] [--reps R]`

use std::path::Path;
use std::time::Instant;

use anyhow::Result;
use bench::{best, median};
use microboxes::{App, RunOptions};
use runtime::ports::gen::{generate, GenConfig};
use runtime::ports::{LinkType, PcapWriter};

const APP: &str = r#"
[runtime]
pool_buffers = 4096
buffer_size = 10240
ring_capacity = 1024

[stack.l23]
max_flows = 100000

[[nf]]
name = "fw"
kind = "firewall"
default = "allow"
rules = [
  { action = "drop", name = "no DNS from 198.51.100.0/24", proto = "udp", src = "198.51.100.0/24", dst_port = 53 },
]

[[nf]]
name = "stats"
kind = "flow_stats"
output = "FLOWS"
"#;

/// One run; returns (packets, seconds, spans recorded, spans dropped).
fn one_run(app: &App, input: &Path, trace: Option<usize>) -> Result<(u64, f64, usize, u64)> {
    let start = Instant::now();
    let mut opts = RunOptions::new(input);
    opts.prefix = Some(format!("benchtrace{}", std::process::id()));
    opts.trace = trace;
    let report = microboxes::run(app, opts).map_err(|e| anyhow::anyhow!("{e}"))?;
    let secs = start.elapsed().as_secs_f64();
    anyhow::ensure!(report.ok(), "run failed:\n{}", report.to_text());
    let (spans, dropped) = report.trace.as_ref().map_or((0, 0), |t| (t.spans.len(), t.dropped));
    Ok((report.packets_in, secs, spans, dropped))
}

fn main() -> Result<()> {
    let (flows, reps) = bench::flows_and_reps(5000)?;
    anyhow::ensure!(reps >= 1, "--reps must be at least 1");
    let dir = std::env::temp_dir().join(format!("mbox-bench-trace-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let input = dir.join("in.pcap");
    let mut w = PcapWriter::create(&input, LinkType::Ethernet)?;
    let summary =
        generate(&GenConfig { flows, seed: 42, ..GenConfig::default() }, |ts, f| w.write(ts, f, f.len() as u32))?;
    w.finish()?;
    println!("input: {} packets, {} bytes, {} flows ({})", summary.packets, summary.bytes, flows, input.display());
    let flows_out = dir.join("flows.jsonl");
    let app = App::parse(&APP.replace("FLOWS", &flows_out.display().to_string()), "bench-trace")?;

    let (mut off, mut on) = (vec![], vec![]);
    let (mut spans, mut dropped) = (0, 0);
    for _ in 0..reps {
        let (n, s, _, _) = one_run(&app, &input, None)?;
        off.push(n as f64 / s);
        let (n, s, sp, dr) = one_run(&app, &input, Some(1_000_000))?;
        on.push(n as f64 / s);
        (spans, dropped) = (sp, dr);
    }
    let _ = std::fs::remove_dir_all(&dir);
    let base = median(&off);
    println!("{:<36} {:>12} {:>12} {:>8}", "variant", "median pps", "best pps", "ratio");
    println!("{:<36} {:>12.0} {:>12.0} {:>8.2}", "tracing off (baseline)", base, best(&off), 1.0);
    println!(
        "{:<36} {:>12.0} {:>12.0} {:>8.2}",
        "tracing on (1,000,000 spans/actor)",
        median(&on),
        best(&on),
        median(&on) / base
    );
    println!(
        "trace: {spans} spans recorded, {dropped} dropped; overhead {:.1}% (ratio = median traced pps / median untraced pps)",
        (1.0 - median(&on) / base) * 100.0
    );
    Ok(())
}
