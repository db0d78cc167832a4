//! Fuzz target for the L2/3 parser and the flow key.
//!
//! Input: the first byte picks the link type (modulo 3: Ethernet, raw IP, Linux SLL), the rest
//! is the frame. `parse` must never panic; on `Ok` every offset must lie inside the frame, and
//! building the flow key (and its symmetric hash) must not panic either.
//!
//! Run on stable: `cargo fuzz run --sanitizer none l23_parse`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use runtime::ports::LinkType;
use stacks::flow::FlowKey;
use stacks::parse::parse;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, frame)) = data.split_first() else {
        return;
    };
    let link = match pick % 3 {
        0 => LinkType::Ethernet,
        1 => LinkType::RawIp,
        _ => LinkType::LinuxSll,
    };
    if let Ok(p) = parse(link, frame) {
        assert!(p.l3_offset <= p.l4_offset && p.l4_offset <= p.payload_offset);
        assert!(usize::from(p.payload_offset) + usize::from(p.payload_len) <= frame.len());
        assert_eq!(p.payload(frame).len(), usize::from(p.payload_len));
        if let Some((key, side)) = FlowKey::from_parsed(&p) {
            assert!(key.lo <= key.hi);
            let ip = p.ip.expect("a flow key needs an IP header");
            assert_eq!(key.endpoint(side).addr, ip.src);
            let _ = key.symmetric_hash();
        }
    }
});
