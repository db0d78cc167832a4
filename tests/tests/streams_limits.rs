//! `mbox streams` tracks at most `--max-flows` connections at once, as `mbox run`'s flow
//! table does: beyond it the least recently seen connection is evicted, reported with end
//! `evicted`, counted, and explained on stderr; records are handed over as connections end.

use microboxes::streams::{streams, streams_each, StreamsOptions};
use stacks::parse::tcp_flags::{ACK, PSH, SYN};
use tests::{mbox, text, Capture};

const C: [u8; 4] = [192, 0, 2, 1];
const S: [u8; 4] = [203, 0, 113, 1];

/// `n` connections opened one after the other, all still open at the end.
fn capture(path: &std::path::Path, n: u16) {
    let mut c = Capture::default();
    for k in 0..n {
        let port = 30000 + k;
        c.tcp((C, port), (S, 80), 1000, 0, SYN, b"");
        c.tcp((S, 80), (C, port), 5000, 1001, SYN | ACK, b"");
        c.tcp((C, port), (S, 80), 1001, 5001, ACK | PSH, b"hello");
    }
    c.save(path);
}

#[test]
fn connections_beyond_the_limit_are_evicted_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("many.pcap");
    capture(&input, 50);
    let mut opts = StreamsOptions::default();
    opts.flows.max_flows = 10;
    let r = streams(&input, opts.clone()).unwrap();
    assert_eq!((r.max_flows, r.evicted, r.connections_seen), (10, 40, 50));
    assert_eq!(r.connections.len(), 50);
    assert_eq!(r.connections.iter().filter(|c| c.end == "evicted").count(), 40);
    assert!(r.eviction_note().unwrap().contains("evicted 40 connections (limit 10; --max-flows)"));
    // Handed over as they end: the first 40 before the input's end, in order of eviction.
    let mut order = Vec::new();
    streams_each(&input, opts, &mut |c| {
        order.push((c.index, c.end));
        Ok(())
    })
    .unwrap();
    assert_eq!(order.len(), 50);
    assert!(order[..40].iter().enumerate().all(|(i, (idx, end))| *idx == i as u64 && end == "evicted"), "{order:?}");
    // Under the default limit nothing is evicted.
    let r = streams(&input, StreamsOptions::default()).unwrap();
    assert_eq!((r.evicted, r.eviction_note()), (0, None));
}

#[test]
fn the_cli_flag_sets_the_limit_and_reports_evictions() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("many.pcap");
    capture(&input, 30);
    let o = mbox(dir.path(), &["streams", input.to_str().unwrap(), "--max-flows", "5"]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("evicted 25 connections (limit 5; --max-flows)"), "{t}");
    assert!(t.contains("30 TCP connections"), "{t}");
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), 30);
    let o = mbox(dir.path(), &["streams", input.to_str().unwrap(), "--max-flows", "0"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("--max-flows"), "{}", text(&o));
}
