//! Fuzz target for the DPI classifiers (`nfs::dpi::classify`).
//!
//! Input: byte 0 picks the IP protocol (even: TCP, odd: UDP), bytes 1..5 the client and
//! server ports, byte 5 where the rest splits into the bytes to the server and the bytes to
//! the client. `classify` must never panic, must answer the same for the same input, and a
//! detection's host must be printable ASCII.
//!
//! Run on stable: `cargo fuzz run --sanitizer none dpi_classify`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nfs::dpi::{classify, Verdict};

fuzz_target!(|data: &[u8]| {
    let Some((head, rest)) = data.split_at_checked(6) else {
        return;
    };
    let proto = if head[0] % 2 == 0 { 6 } else { 17 };
    let ports = (u16::from_be_bytes([head[1], head[2]]), u16::from_be_bytes([head[3], head[4]]));
    let cut = usize::from(head[5]).min(rest.len());
    let (to_server, to_client) = rest.split_at(cut);
    let v = classify(to_server, to_client, proto, ports);
    assert_eq!(v, classify(to_server, to_client, proto, ports));
    if let Verdict::Detected { host: Some(h), .. } = &v {
        assert!(!h.is_empty() && h.bytes().all(|c| (0x21..=0x7e).contains(&c)), "{h:?}");
    }
});
