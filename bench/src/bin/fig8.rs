//! Figure 8: five NFs — Firewall, DPI, Signature_Match, Flow_Stats, Logger — as a
//! sequential chain (mode c) and as a parallel chain (mode d: the controller groups what
//! may run side by side), each under four subscription setups: Default, `DPI_DETECT` (the
//! matcher inspects only flows DPI called HTTP), `LONG_FLOW` (the logger logs only flows
//! Flow_Stats flagged), and both. Per-packet latency — from RX reading a packet to TX
//! emitting it — comes from the trace recorder's spans, with at most 8 packets in the
//! system (an 8-buffer pool, 8-slot rings) so that latency measures the chain's work, not
//! queueing behind a capture read as fast as possible; prints average and 99th percentile
//! beside the paper's 3–13 % reduction for parallel, and writes `target/fig8.svg`: bar
//! charts of average and 99th-percentile latency per configuration, sequential beside
//! parallel, each parallel bar labelled with its change and the paper's reduction marked.
//!
//! The parallel chain can only be faster when its members run at the same time, on cores
//! of their own: Figure 8 wants a core for RX/stack/TX plus one per NF. With fewer cores
//! than that (this development machine has 2) the members of a parallel group take turns on
//! one core, and mode d's extra splitter, merger and stack shard make it slower; the program
//! says so in its output and in the plot.
//!
//! `cargo run -p bench --release --bin fig8 -- [--flows N] [--reps R]`

use std::collections::HashMap;
use std::path::Path;

use anyhow::Result;
use bench::{bar_chart_svg, median, Bar, BarChart, BarGroup};
use microboxes::{Mode, RunOptions};
use runtime::ports::gen::{generate, GenConfig};
use runtime::ports::{LinkType, PcapWriter};
use runtime::trace::SpanKind;

/// (setup, app file)
const SETUPS: &[(&str, &str)] = &[
    ("Default", "apps/fig8/default.toml"),
    ("DPI_DETECT", "apps/fig8/dpi_detect.toml"),
    ("LONG_FLOW", "apps/fig8/long_flow.toml"),
    ("both", "apps/fig8/both.toml"),
];

/// (average, p99) latency in µs of packets from RX to TX.
fn latencies(t: &runtime::trace::TraceData) -> (f64, f64) {
    let mut rx: HashMap<u64, u64> = HashMap::new();
    for s in t.spans.iter().filter(|s| s.kind == SpanKind::Rx) {
        rx.insert(s.seq, s.start_ns);
    }
    let mut lat: Vec<f64> = t
        .spans
        .iter()
        .filter(|s| s.kind == SpanKind::Tx)
        .filter_map(|s| rx.get(&s.seq).map(|r| s.end_ns.saturating_sub(*r) as f64 / 1e3))
        .collect();
    lat.sort_by(|a, b| a.total_cmp(b));
    if lat.is_empty() {
        return (0.0, 0.0);
    }
    let avg = lat.iter().sum::<f64>() / lat.len() as f64;
    (avg, lat[(lat.len() * 99 / 100).min(lat.len() - 1)])
}

fn main() -> Result<()> {
    let (flows, reps) = bench::flows_and_reps(1000)?;
    let dir = std::env::temp_dir().join(format!("mbox-bench-fig8-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let input = dir.join("in.pcap");
    let mut w = PcapWriter::create(&input, LinkType::Ethernet)?;
    let cfg = GenConfig { flows, seed: 88, udp_fraction: 0.2, response_size: (500, 20_000), ..GenConfig::default() };
    let s = generate(&cfg, |ts, f| w.write(ts, f, f.len() as u32))?;
    w.finish()?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let http = s.flows.iter().filter(|f| f.app == runtime::ports::gen::GenApp::Http).count();
    println!(
        "input: {} packets, {} flows ({http} HTTP, {} DNS-like UDP); five NFs: dpi, ids, stats, logger, fw; {cores} cores",
        s.packets,
        flows,
        flows - http
    );
    // RX, the stacks and TX on one core, then one per NF.
    const WANTED_CORES: usize = 6;
    let short = cores < WANTED_CORES;
    if short {
        println!(
            "note: {cores} cores < {WANTED_CORES} (one for RX/stack/TX, one per NF): the parallel group's members take \
             turns on a shared core and cannot overlap, so mode d pays for its splitter, merger and stack shard \
             without the overlap that makes it faster in the paper; expect parallel to be slower here"
        );
    }
    println!(
        "{:<12} {:>14} {:>14} {:>14} {:>14} {:>10} {:>10}",
        "setup", "seq avg µs", "seq p99 µs", "par avg µs", "par p99 µs", "avg Δ", "p99 Δ"
    );
    let (mut avg_groups, mut p99_groups) = (Vec::new(), Vec::new());
    for (i, (name, file)) in SETUPS.iter().enumerate() {
        let app = bench::load_app(file, &dir)?;
        let mut res: HashMap<Mode, (Vec<f64>, Vec<f64>)> = HashMap::new();
        for rep in 0..reps {
            for mode in [Mode::C, Mode::D] {
                let mut opts = RunOptions::new(&input);
                opts.mode = mode;
                opts.trace = Some(4_000_000);
                opts.prefix = Some(format!("fig8{}-{i}-{rep}-{mode}", std::process::id()));
                let r = microboxes::run(&app, opts).map_err(|e| anyhow::anyhow!("{e}"))?;
                anyhow::ensure!(r.ok(), "{}", r.to_text());
                let (a, p) = latencies(r.trace.as_ref().expect("trace"));
                let e = res.entry(mode).or_default();
                e.0.push(a);
                e.1.push(p);
            }
        }
        let (sa, sp) = (median(&res[&Mode::C].0), median(&res[&Mode::C].1));
        let (pa, pp) = (median(&res[&Mode::D].0), median(&res[&Mode::D].1));
        println!(
            "{:<12} {:>14.1} {:>14.1} {:>14.1} {:>14.1} {:>9.1}% {:>9.1}%",
            name,
            sa,
            sp,
            pa,
            pp,
            (pa / sa - 1.0) * 100.0,
            (pp / sp - 1.0) * 100.0
        );
        let pct = |par: f64, seq: f64| (par / seq - 1.0) * 100.0;
        let note = |par: f64, seq: f64| Some(format!("parallel here {:+.0} %; paper: 3 to 13 % lower", pct(par, seq)));
        avg_groups.push(BarGroup {
            label: name.to_string(),
            note: note(pa, sa),
            bars: vec![Bar::new(sa, format!("{sa:.1}")), Bar::new(pa, format!("{pa:.1} ({:+.0} %)", pct(pa, sa)))],
        });
        p99_groups.push(BarGroup {
            label: name.to_string(),
            note: note(pp, sp),
            bars: vec![Bar::new(sp, format!("{sp:.1}")), Bar::new(pp, format!("{pp:.1} ({:+.0} %)", pct(pp, sp)))],
        });
    }
    println!("(paper: the parallel chain cuts latency by 3-13 %; negative Δ = parallel faster)");
    let _ = std::fs::remove_dir_all(&dir);
    let plot = Path::new("target/fig8.svg");
    let series = vec!["sequential (mode c)".to_string(), "parallel (mode d)".to_string()];
    let footnote = Some(if short {
        format!(
            "{cores} cores: the parallel members share one core and cannot overlap (the paper: a core per NF); \
             {flows} flows, median of {reps} runs"
        )
    } else {
        format!("{cores} cores; {flows} flows, median of {reps} runs")
    });
    bar_chart_svg(
        plot,
        &[
            BarChart {
                title: "Figure 8: average latency per packet, RX to TX".into(),
                y_label: "µs".into(),
                series: series.clone(),
                groups: avg_groups,
                footnote: footnote.clone(),
                colors: Vec::new(),
            },
            BarChart {
                title: "Figure 8: 99th-percentile latency per packet, RX to TX".into(),
                y_label: "µs".into(),
                series,
                groups: p99_groups,
                footnote,
                colors: Vec::new(),
            },
        ],
    )?;
    println!("plot: {}", plot.display());
    Ok(())
}
