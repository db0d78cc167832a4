//! Malformed frames and truncated captures: counted, reported, never a panic, nothing lost.

use std::path::Path;

use etherparse::PacketBuilder;
use microboxes::{App, RunOptions};
use runtime::ports::gen::GenConfig;
use runtime::ports::{LinkType, PcapWriter};
use tests::*;

fn tcp_frame(payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2([1, 2, 3, 4, 5, 6], [6, 5, 4, 3, 2, 1])
        .ipv4([192, 0, 2, 1], [203, 0, 113, 1], 64)
        .tcp(40000, 80, 1000, 65535);
    let mut v = Vec::new();
    b.write(&mut v, payload).unwrap();
    v
}

fn write_frames(path: &Path, frames: &[Vec<u8>]) {
    let mut w = PcapWriter::create(path, LinkType::Ethernet).unwrap();
    for (i, f) in frames.iter().enumerate() {
        w.write(1_000_000 * (i as u64 + 1), f, f.len() as u32).unwrap();
    }
    w.finish().unwrap();
}

fn app(dir: &Path, policy: &str) -> App {
    let flows = dir.join(format!("flows-{policy}.jsonl"));
    App::parse(
        &format!(
            "[stack.l23]\nmalformed = \"{policy}\"\n[[nf]]\nname = \"stats\"\nkind = \"flow_stats\"\noutput = {:?}\n",
            flows.display().to_string()
        ),
        "bad.toml",
    )
    .unwrap()
}

#[test]
fn malformed_frames_are_counted_by_reason() {
    let dir = tempfile::tempdir().unwrap();
    let good = tcp_frame(b"hello");
    let mut bad_version = good.clone();
    bad_version[14] = 0x35; // IP version 3
    let mut arp = vec![0xff; 12];
    arp.extend_from_slice(&[0x08, 0x06]);
    arp.extend_from_slice(&[0u8; 28]);
    let frames = vec![
        good.clone(),
        good[..20].to_vec(), // IPv4 header cut
        good[..40].to_vec(), // TCP header cut
        bad_version,
        vec![0u8; 5], // not even Ethernet
        arp,          // not IP: forwarded, not malformed
        good.clone(),
    ];
    let input = dir.path().join("bad.pcap");
    write_frames(&input, &frames);

    let r = microboxes::run(&app(dir.path(), "drop"), RunOptions::new(&input)).unwrap();
    assert!(r.ok(), "{}", r.to_text());
    assert_eq!(r.packets_in, 7);
    assert_eq!(r.packets_dropped, 4, "{}", r.to_text());
    assert_eq!(r.packets_out, 3);
    assert!(r.pool_balanced);
    assert!(r.dropped.iter().all(|d| d.actor == "l23" && d.reason.starts_with("malformed: ")), "{:?}", r.dropped);
    let reasons: Vec<&str> = r.dropped.iter().map(|d| d.reason.as_str()).collect();
    assert!(reasons.iter().any(|x| x.contains("ipv4")), "{reasons:?}");
    assert!(reasons.iter().any(|x| x.contains("tcp")), "{reasons:?}");
    let l23 = r.actors.iter().find(|a| a.name == "l23").unwrap();
    assert_eq!(l23.counters.get("non_ip_frames"), Some(&1));

    let r = microboxes::run(&app(dir.path(), "forward"), RunOptions::new(&input)).unwrap();
    assert!(r.ok(), "{}", r.to_text());
    assert_eq!(r.packets_out, 7, "forward policy passes everything on");
    assert_eq!(r.packets_dropped, 0);
    let l23 = r.actors.iter().find(|a| a.name == "l23").unwrap();
    let malformed: u64 = l23.counters.iter().filter(|(k, _)| k.starts_with("malformed_")).map(|(_, v)| v).sum();
    assert_eq!(malformed, 4, "{:?}", l23.counters);
}

#[test]
fn a_truncated_capture_is_processed_up_to_the_cut_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let full = dir.path().join("full.pcap");
    let truth = gen_pcap(&full, &GenConfig { flows: 20, seed: 5, ..GenConfig::default() });
    let bytes = std::fs::read(&full).unwrap();
    let cut = dir.path().join("cut.pcap");
    std::fs::write(&cut, &bytes[..bytes.len() - 7]).unwrap();
    let r = microboxes::run(&app(dir.path(), "drop"), RunOptions::new(&cut)).unwrap();
    assert!(r.ok(), "{}", r.to_text());
    assert_eq!(r.packets_in, truth.packets - 1);
    assert!(r.warnings.iter().any(|w| w.contains("middle of a packet record")), "{:?}", r.warnings);
    assert!(r.pool_balanced);
}

#[test]
fn garbage_input_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("junk.pcap");
    std::fs::write(&p, b"this is not a capture at all").unwrap();
    let e = microboxes::run(&app(dir.path(), "drop"), RunOptions::new(&p)).map(|r| r.to_text()).expect_err("must fail");
    assert!(e.to_string().contains("junk.pcap"), "{e}");
}
