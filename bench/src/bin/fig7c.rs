//! Figure 7c: DPI + Signature_Match on the TCP monitor under five subscription setups, in
//! one run over one generated capture (HTTP connections and DNS-like UDP):
//!
//! 1. both sides' events: every TCP packet raises the client's and the server's update, and
//!    both NFs take both (`side = "both"`), payloads per packet;
//! 2. client side only (`side = "client"`);
//! 3. the server half's updates from client packets only (`side = "server"`,
//!    `direction = "to_server"`);
//! 4. dynamic subscriptions: DPI decides each flow from its first payload and unsubscribes;
//!    the matcher inspects a flow only after DPI said HTTP (`after_dpi`), packets mode;
//! 5. as 4 on the TCP monitor's reassembled streams (`DATA_RDY`).
//!
//! Prints events processed per packet and throughput relative to setup 1, beside the
//! paper's numbers, and writes `target/fig7c.svg`.
//!
//! `cargo run -p bench --release --bin fig7c -- [--flows N] [--reps R]`

use std::path::Path;
use std::time::Instant;

use anyhow::Result;
use bench::{line_plot_svg, median, Series};
use microboxes::RunOptions;
use runtime::ports::gen::{generate, GenConfig};
use runtime::ports::{LinkType, PcapWriter};

/// (app file, name, the paper's throughput relative to setup 1)
const SETUPS: &[(&str, &str, &str)] = &[
    ("apps/fig7c/1-both-sides.toml", "1 both sides", "1.0x"),
    ("apps/fig7c/2-client-side.toml", "2 client side", "1.2x"),
    ("apps/fig7c/3-server-side.toml", "3 server side", "2.6x"),
    ("apps/fig7c/4-dynamic.toml", "4 dynamic (DPI_DETECT)", "~5x"),
    ("apps/fig7c/5-stream.toml", "5 as 4, on DATA_RDY", "~15% below 4"),
];

fn main() -> Result<()> {
    let (flows, reps) = bench::flows_and_reps(2000)?;
    let dir = std::env::temp_dir().join(format!("mbox-bench-fig7c-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let input = dir.join("in.pcap");
    let mut w = PcapWriter::create(&input, LinkType::Ethernet)?;
    let cfg = GenConfig { flows, seed: 77, udp_fraction: 0.3, response_size: (2_000, 30_000), ..GenConfig::default() };
    let s = generate(&cfg, |ts, f| w.write(ts, f, f.len() as u32))?;
    w.finish()?;
    println!("input: {} packets, {} flows (30 % UDP/DNS); apps: apps/fig7c/*.toml", s.packets, flows);

    let mut pps: Vec<Vec<f64>> = vec![Vec::new(); SETUPS.len()];
    let mut events = vec![0f64; SETUPS.len()];
    for rep in 0..reps {
        for (i, (file, _, _)) in SETUPS.iter().enumerate() {
            let app = bench::load_app(file, &dir)?;
            let mut opts = RunOptions::new(&input);
            opts.prefix = Some(format!("fig7c{}-{rep}-{i}", std::process::id()));
            let start = Instant::now();
            let r = microboxes::run(&app, opts).map_err(|e| anyhow::anyhow!("{e}"))?;
            anyhow::ensure!(r.ok(), "{}", r.to_text());
            pps[i].push(r.packets_in as f64 / start.elapsed().as_secs_f64());
            let handled: u64 =
                r.actors.iter().filter(|a| a.name == "dpi" || a.name == "ids").map(|a| a.handled_total).sum();
            events[i] = handled as f64 / r.packets_in as f64;
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    let base = median(&pps[0]);
    println!("{:<26} {:>16} {:>12} {:>10} {:>14}", "setup", "NF events/pkt", "median pps", "vs 1", "paper vs 1");
    let mut points = Vec::new();
    for (i, (_, name, paper)) in SETUPS.iter().enumerate() {
        let m = median(&pps[i]);
        println!("{:<26} {:>16.2} {:>12.0} {:>9.2}x {:>14}", name, events[i], m, m / base, paper);
        points.push(((i + 1) as f64, m / base));
    }
    println!("(events/pkt: events handled by DPI and the matcher per input packet)");
    let plot = Path::new("target/fig7c.svg");
    line_plot_svg(
        plot,
        "Figure 7c: DPI + Signature_Match",
        "setup",
        "throughput vs setup 1",
        &[Series { label: "measured", points }],
    )?;
    println!("plot: {}", plot.display());
    Ok(())
}
