//! Sequence gaps cost O(1): 100 connections, each with one segment 64 MiB ahead of its
//! stream, used to make the NFs read 6.7 GB of zeros at the end of input (the holes that
//! will never fill were read as zero bytes). Now a gap is a `Chunk::Gap(len)`: no NF reads,
//! scans or hashes its bytes, and the gap bytes are counted. Asserted on the NFs' byte
//! counters, not on time. Also: a pattern split by a gap does not match, and `mbox streams`
//! counts the gaps and hashes only the received bytes.

use std::collections::BTreeMap;
use std::path::Path;

use microboxes::streams::{streams, StreamsOptions};
use microboxes::{App, Mode, RunOptions};
use nfs::stream_hash::StreamRecord;
use stacks::parse::tcp_flags::{ACK, PSH, SYN};
use tests::Capture;

const C: [u8; 4] = [192, 0, 2, 1];
const S: [u8; 4] = [203, 0, 113, 1];
const AHEAD: u32 = 64 << 20;
const CONNS: u16 = 100;

/// `CONNS` connections: handshake, `GET /adm` in order, then `in HTTP` 64 MiB ahead.
fn capture(path: &Path) {
    let mut c = Capture::default();
    for k in 0..CONNS {
        let port = 20000 + k;
        c.tcp((C, port), (S, 80), 1000, 0, SYN, b"");
        c.tcp((S, 80), (C, port), 5000, 1001, SYN | ACK, b"");
        c.tcp((C, port), (S, 80), 1001, 5001, ACK, b"");
        c.tcp((C, port), (S, 80), 1001, 5001, ACK | PSH, b"GET /adm");
        c.tcp((C, port), (S, 80), 1009 + AHEAD, 5001, ACK | PSH, b"in HTTP");
    }
    c.save(path);
}

fn counters(r: &microboxes::RunReport, nf: &str) -> BTreeMap<String, u64> {
    r.actors.iter().find(|a| a.name == nf).unwrap_or_else(|| panic!("no actor {nf}")).counters.clone()
}

#[test]
fn a_gap_is_skipped_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("gaps.pcap");
    capture(&input);
    let rules = dir.path().join("gap.rules");
    // "GET /admin" spans the gap: it must not match (the bytes between were never seen).
    std::fs::write(&rules, "alert tcp any any -> any any (msg:\"admin\"; content:\"/admin\"; sid:1; rev:1;)\n")
        .unwrap();
    let p = |n: &str| format!("{:?}", dir.path().join(n).display().to_string());
    let text = format!(
        "[stack.tcp]\n[[nf]]\nname = \"dpi\"\nkind = \"dpi\"\n\
         [[nf]]\nname = \"ids\"\nkind = \"signature_match\"\nrules = {}\noutput = {}\n\
         [[nf]]\nname = \"hash\"\nkind = \"stream_hash\"\noutput = {}\n",
        p("gap.rules"),
        p("alerts.jsonl"),
        p("streams.jsonl"),
    );
    let app = App::parse(&text, "gaps.toml").unwrap();
    for mode in [Mode::A, Mode::C] {
        let mut ro = RunOptions::new(&input);
        ro.mode = mode;
        let r = microboxes::run(&app, ro).unwrap();
        assert!(r.ok(), "{:?}", r.errors);
        let gap = u64::from(AHEAD) * u64::from(CONNS);
        let ids = counters(&r, "ids");
        assert_eq!(ids["gap_bytes"], gap, "mode {mode}: every gap byte counted: {ids:?}");
        assert_eq!(ids["bytes_scanned"], 15 * u64::from(CONNS), "mode {mode}: only received bytes scanned: {ids:?}");
        assert_eq!(ids["alerts"], 0, "mode {mode}: no match across a gap");
        let dpi = counters(&r, "dpi");
        assert!(dpi["bytes_inspected"] <= 15 * u64::from(CONNS), "mode {mode}: {dpi:?}");
        let text = std::fs::read_to_string(dir.path().join("streams.jsonl")).unwrap();
        let recs: Vec<StreamRecord> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(recs.len(), usize::from(CONNS));
        // sha256("GET /admin HTTP") — received bytes only.
        let want = hex(&sha2::Sha256::digest(b"GET /admin HTTP"));
        for rec in &recs {
            assert_eq!(rec.gap_bytes_toserver, u64::from(AHEAD), "{rec:?}");
            assert_eq!(rec.bytes_toserver, 15 + u64::from(AHEAD), "stream length counts the gap: {rec:?}");
            assert_eq!(rec.sha256_toserver, want, "hash of the received bytes: {rec:?}");
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

use sha2::Digest;

#[test]
fn mbox_streams_counts_gaps_and_hashes_received_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("gaps.pcap");
    capture(&input);
    let r = streams(&input, StreamsOptions::default()).unwrap();
    assert_eq!(r.connections.len(), usize::from(CONNS));
    let want = hex(&sha2::Sha256::digest(b"GET /admin HTTP"));
    for c in &r.connections {
        assert_eq!(c.to_server.gap_bytes, u64::from(AHEAD));
        assert_eq!(c.to_server.stream_bytes, 15 + u64::from(AHEAD));
        assert_eq!(c.to_server.sha256, want);
    }
}
