//! Hostile TCP: a SYN flood to many ports, a connection that sends only out-of-order data
//! beyond a huge gap, and overlapping retransmissions with conflicting bytes. Memory stays
//! within the configured limits and the counters say what happened — through `mbox streams`
//! and through the running TCP monitor.

use std::path::Path;

use microboxes::streams::{streams, StreamsOptions};
use microboxes::{App, RunOptions};
use stacks::parse::tcp_flags::{ACK, SYN};
use tests::Capture;

const C: [u8; 4] = [192, 0, 2, 1];
const S: [u8; 4] = [203, 0, 113, 1];

fn handshake(cap: &mut Capture, port: u16) {
    cap.tcp((C, port), (S, 80), 1000, 0, SYN, b"");
    cap.tcp((S, 80), (C, port), 5000, 1001, SYN | ACK, b"");
    cap.tcp((C, port), (S, 80), 1001, 5001, ACK, b"");
}

fn hostile(path: &Path) {
    let mut cap = Capture::default();
    // 1. SYN flood: 3000 ports.
    for i in 0..3000u16 {
        cap.tcp(([198, 51, 100, 7], 20000 + i), (S, 1 + i), 77, 0, SYN, b"");
    }
    // 2. Out-of-order data only, 10 MB beyond the frontier: 3000 segments of 1000 bytes.
    handshake(&mut cap, 40000);
    for i in 0..3000u32 {
        cap.tcp((C, 40000), (S, 80), 1001 + 10_000_000 + i * 1000, 5001, ACK, &[0xee; 1000]);
    }
    // 3. Conflicting overlap: "AAAA" then a retransmission "BBBB" of the same bytes.
    handshake(&mut cap, 40001);
    cap.tcp((C, 40001), (S, 80), 1001, 5001, ACK, b"AAAA");
    cap.tcp((C, 40001), (S, 80), 1001, 5001, ACK, b"BBBB");
    cap.tcp((C, 40001), (S, 80), 1005, 5001, ACK, b"CC");
    cap.save(path);
}

const OOO_LIMIT: usize = 64 * 1024;

#[test]
fn streams_stays_bounded_and_counts() {
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("hostile.pcap");
    hostile(&pcap);
    let mut opts = StreamsOptions::default();
    opts.flows.max_flows = 500;
    opts.tcp.reassembly.max_ooo_bytes = OOO_LIMIT;
    let r = streams(&pcap, opts).unwrap();
    // The flood: every SYN is a connection, evicted as the table fills.
    let flood = r.connections.iter().filter(|c| c.client.port() >= 20000 && c.client.port() < 23000).count();
    assert_eq!(flood, 3000);
    assert!(r.connections.iter().filter(|c| c.end == "evicted").count() >= 2500);
    // The gap: refused beyond the out-of-order limit, memory bounded, nothing delivered.
    let gap = r.connections.iter().find(|c| c.client.port() == 40000).unwrap();
    let kept = 3000 - gap.to_server.refused_segments;
    assert!(kept * 1000 <= OOO_LIMIT as u64, "{:?}", gap.to_server);
    assert!(gap.to_server.refused_segments >= 3000 - 70, "{:?}", gap.to_server);
    assert_eq!(gap.to_server.stream_bytes, 10_000_000 + kept * 1000, "holes skipped at the end: {gap:?}");
    assert_eq!(gap.to_server.gap_bytes, 10_000_000);
    assert!(r.memory_high_water <= OOO_LIMIT + 2 * 4096 + 4096 * 4, "high water {}", r.memory_high_water);
    // The overlap: first data wins, the conflict is counted.
    let ov = r.connections.iter().find(|c| c.client.port() == 40001).unwrap();
    assert_eq!(ov.to_server.stream_bytes, 6);
    assert_eq!(ov.to_server.overlap_conflict_bytes, 4);
    use sha2::Digest;
    let want: String = sha2::Sha256::digest(b"AAAACC").iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(ov.to_server.sha256, want);
}

#[test]
fn the_running_monitor_stays_bounded_and_counts() {
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("hostile.pcap");
    hostile(&pcap);
    let out = dir.path().join("h.jsonl");
    let app = App::parse(
        &format!(
            "[stack.l23]\nmax_flows = 500\n[stack.tcp.reassembly]\nmax_ooo_bytes = {OOO_LIMIT}\n[[nf]]\nname = \"hash\"\nkind = \"stream_hash\"\noutput = {:?}\n",
            out.display().to_string()
        ),
        "hostile.toml",
    )
    .unwrap();
    let r = microboxes::run(&app, RunOptions::new(&pcap)).unwrap();
    assert!(r.ok(), "{}", r.to_text());
    let l23 = &r.actors.iter().find(|a| a.name == "l23").unwrap().counters;
    let tcp = &r.actors.iter().find(|a| a.name == "tcp").unwrap().counters;
    assert!(l23["flows_evicted"] >= 2500, "{l23:?}");
    assert!(l23["flows_max_active"] <= 500);
    assert!(tcp["refused_segments"] >= 3000 - 70, "{tcp:?}");
    assert_eq!(tcp["overlap_conflict_bytes"], 4);
    assert!(tcp["reassembly_memory_high_water"] as usize <= OOO_LIMIT + 6 * 4096, "{tcp:?}");
    assert_eq!(tcp["gap_bytes"], 10_000_000);
    assert_eq!(r.packets_out, r.packets_in);
    assert!(r.pool_balanced);
}
