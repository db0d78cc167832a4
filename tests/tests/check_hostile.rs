//! Corrupted captures through the consistency checker: every mode agrees with mode a on
//! malformed input too (mode a's private stacks drop malformed frames as the shared stack
//! does). The property test over corrupted generated captures is in `check_props.rs`.

use microboxes::check::{check, CheckOptions};
use microboxes::{App, Mode};
use runtime::ports::gen::GenConfig;
use runtime::ports::{LinkType, PcapWriter};
use tests::*;

fn app(dir: &std::path::Path) -> App {
    let text = format!(
        "[stack.tcp]\n[[nf]]\nname = \"dpi\"\nkind = \"dpi\"\noutput = {:?}\n\
         [[nf]]\nname = \"hash\"\nkind = \"stream_hash\"\noutput = {:?}\n\
         [[nf]]\nname = \"stats\"\nkind = \"flow_stats\"\noutput = {:?}\n",
        dir.join("dpi.jsonl").display().to_string(),
        dir.join("streams.jsonl").display().to_string(),
        dir.join("flows.jsonl").display().to_string(),
    );
    App::parse(&text, "hostile.toml").unwrap()
}

/// Ethernet frames in a capture whose header says raw IP: every frame is malformed (the
/// default policy drops it at L2/3) — in mode a too, which used to emit them all.
#[test]
fn wrong_link_type_capture_is_dropped_alike_in_mode_a_and_c() {
    let dir = tempfile::tempdir().unwrap();
    let eth = dir.path().join("eth.pcap");
    gen_pcap(&eth, &GenConfig { flows: 20, seed: 5, ..GenConfig::default() });
    let input = dir.path().join("wrong.pcap");
    let file = std::fs::File::create(&input).unwrap();
    let mut w = PcapWriter::new(std::io::BufWriter::new(file), &input, LinkType::RawIp).unwrap();
    let frames = read_all(&eth);
    for (ts, f) in &frames {
        w.write(*ts, f, f.len() as u32).unwrap();
    }
    w.finish().unwrap();
    let opts = CheckOptions { modes: vec![Mode::C], ..CheckOptions::default() };
    let r = check(&app(dir.path()), &input, &opts).unwrap();
    assert!(r.consistent(), "{}", r.to_text());
    let c = r.modes[0].1.as_ref().unwrap();
    assert_eq!(c.packets, frames.len() as u64, "every frame's fate compared");
}
