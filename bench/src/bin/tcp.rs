//! The TCP monitor: packets/second and reassembled bytes/second against the L2/3-only run
//! over the same generated capture, in the same invocation; and the memory one tracked
//! connection costs.
//!
//! `cargo run -p bench --release --bin tcp -- [--flows N] [--reps R]`

use std::path::Path;
use std::time::Instant;

use anyhow::Result;
use bench::{best, median};
use microboxes::streams::{streams, StreamsOptions};
use microboxes::{App, RunOptions};
use runtime::ports::gen::{generate, GenConfig};
use runtime::ports::{LinkType, PcapWriter};
use stacks::flow_table::{Direction, FlowId};
use stacks::parse::tcp_flags::{ACK, SYN};
use stacks::tcp::{Segment, TcpConfig, TcpTracker};

fn run_app(text: &str, input: &Path) -> Result<(u64, f64)> {
    let app = App::parse(text, "bench").map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut opts = RunOptions::new(input);
    opts.prefix = Some(format!("benchtcp{}", std::process::id()));
    let start = Instant::now();
    let r = microboxes::run(&app, opts).map_err(|e| anyhow::anyhow!("{e}"))?;
    anyhow::ensure!(r.ok(), "{}", r.to_text());
    Ok((r.packets_in, start.elapsed().as_secs_f64()))
}

/// Bytes one tracked connection costs: the connection itself plus the map entry, with a
/// few bytes in each direction (one chunk each).
fn memory_per_connection(n: u32) -> (usize, usize) {
    let mut t = TcpTracker::new(TcpConfig::default());
    let mut ev = Vec::new();
    for i in 0..n {
        let id = FlowId { index: i, generation: 1 };
        let seg = |dir, seq, ack, flags, payload: &'static [u8]| Segment {
            dir,
            seq,
            ack,
            flags,
            window: 1000,
            options: &[],
            payload,
        };
        t.segment(id, &seg(Direction::ToServer, 1, 0, SYN, b""), &mut ev);
        t.segment(id, &seg(Direction::ToClient, 9, 2, SYN | ACK, b""), &mut ev);
        t.segment(id, &seg(Direction::ToServer, 2, 10, ACK, b"GET / HTTP/1.1\r\n\r\n"), &mut ev);
        t.segment(id, &seg(Direction::ToClient, 10, 20, ACK, b"HTTP/1.1 200 OK\r\n\r\n"), &mut ev);
        ev.clear();
    }
    let structure = std::mem::size_of::<stacks::tcp::Connection>() + std::mem::size_of::<FlowId>() + 8;
    (structure, t.budget().used / n as usize)
}

fn main() -> Result<()> {
    let (flows, reps) = bench::flows_and_reps(3000)?;
    let dir = std::env::temp_dir().join(format!("mbox-bench-tcp-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let input = dir.join("in.pcap");
    let mut w = PcapWriter::create(&input, LinkType::Ethernet)?;
    let cfg = GenConfig { flows, seed: 5, udp_fraction: 0.0, ..GenConfig::default() };
    let s = generate(&cfg, |ts, f| w.write(ts, f, f.len() as u32))?;
    w.finish()?;
    let payload: u64 = s.flows.iter().map(|f| f.payload_toserver + f.payload_toclient).sum();
    println!("input: {} packets, {} TCP connections, {:.1} MB of TCP payload", s.packets, flows, payload as f64 / 1e6);

    let hash_out = dir.join("hash.jsonl");
    let variants: Vec<(&str, String)> = vec![
        ("L2/3 only (baseline)", String::new()),
        ("L2/3 + TCP monitor (reassembly)", "[stack.tcp]\n".into()),
        (
            "L2/3 + TCP monitor + stream_hash NF",
            format!(
                "[stack.tcp]\n[[nf]]\nname = \"hash\"\nkind = \"stream_hash\"\noutput = {:?}\n",
                hash_out.display().to_string()
            ),
        ),
    ];
    let mut pps: Vec<Vec<f64>> = vec![Vec::new(); variants.len() + 1];
    for _ in 0..reps {
        for (i, (_, text)) in variants.iter().enumerate() {
            let (n, secs) = run_app(text, &input)?;
            pps[i].push(n as f64 / secs);
        }
        let start = Instant::now();
        let r = streams(&input, StreamsOptions::default()).map_err(|e| anyhow::anyhow!("{e}"))?;
        pps[variants.len()].push(r.packets as f64 / start.elapsed().as_secs_f64());
    }
    let base = median(&pps[0]);
    let mb_per_s = |p: f64| p / s.packets as f64 * payload as f64 / 1e6;
    println!("{:<44} {:>12} {:>12} {:>14} {:>8}", "variant", "median pps", "best pps", "payload MB/s", "ratio");
    let mut names: Vec<&str> = variants.iter().map(|v| v.0).collect();
    names.push("mbox streams (one thread, hashing)");
    for (name, v) in names.iter().zip(&pps) {
        let m = median(v);
        println!("{:<44} {:>12.0} {:>12.0} {:>14.1} {:>8.2}", name, m, best(v), mb_per_s(m), m / base);
    }
    let (structure, chunks) = memory_per_connection(10_000);
    println!(
        "memory per tracked connection: {structure} B of state + {chunks} B of stream chunks for a few bytes each way \
         (chunk size {} B; released as readers finish, {} B kept behind the frontier for overlap checks)",
        stacks::reassembly::DEFAULT_CHUNK,
        TcpConfig::default().keep_behind
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
