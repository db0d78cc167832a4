//! Fuzz target: `PcapReader` must never panic, loop forever, or allocate without bound,
//! whatever bytes it is given. It reads every frame, checking the reader's own
//! invariants on the way (captured bytes counted, offsets never past the input).
#![no_main]

use libfuzzer_sys::fuzz_target;
use runtime::ports::PcapReader;

fuzz_target!(|data: &[u8]| {
    let total = data.len() as u64;
    let Ok(mut reader) = PcapReader::from_bytes("fuzz", data.to_vec()) else {
        return;
    };
    let _ = reader.link_type();
    let mut bytes = 0u64;
    // Every frame consumes at least 12 bytes of input, so this bound is never reached
    // by a correct reader.
    for _ in 0..=data.len() / 12 + 1 {
        match reader.next_packet() {
            Ok(Some(p)) => bytes += p.data.len() as u64,
            Ok(None) | Err(_) => break,
        }
        assert!(reader.bytes_read() <= total);
    }
    assert!(matches!(reader.next_packet(), Ok(None)), "reader did not finish");
    let stats = reader.stats();
    assert_eq!(stats.bytes, bytes);
    assert!(reader.bytes_read() <= total);
});
