//! Conflicting overlaps: `First` against `Last` in the out-of-order area, and bytes below the
//! frontier that are never rewritten whatever the policy. Counts are exact.

use stacks::reassembly::{Budget, ByteStream, Insert, OverlapPolicy, ReassemblyConfig};

fn stream(policy: OverlapPolicy, chunk_size: usize) -> ByteStream {
    ByteStream::new(100, &ReassemblyConfig { overlap: policy, chunk_size, ..ReassemblyConfig::default() })
}

fn all(s: &ByteStream) -> Vec<u8> {
    s.read(s.base(), s.frontier()).unwrap().to_vec()
}

#[test]
fn ooo_overlap_first_keeps_held_bytes() {
    for cs in [1, 3, 7, 4096] {
        let mut b = Budget::default();
        let mut s = stream(OverlapPolicy::First, cs);
        // Held out of order: offsets 4..10 = "efghij".
        s.insert(104, b"efghij", &mut b);
        // Overlaps 2..8 with "CDEFgh": bytes 4..6 differ (EF vs ef), 6..8 identical.
        let ins = s.insert(102, b"CDEFgh", &mut b);
        assert_eq!(
            ins,
            Insert { new_ooo: 2, duplicate: 2, conflicting: 2, out_of_order: true, ..Insert::default() },
            "cs {cs}"
        );
        let ins = s.insert(100, b"ab", &mut b);
        assert_eq!(ins.advanced, 10);
        assert_eq!(all(&s), b"abCDefghij", "cs {cs}");
        assert_eq!(s.stats().overlap_conflicts, 2);
        assert_eq!(s.stats().retransmitted_bytes, 4);
        s.clear(&mut b);
        assert_eq!(b.used, 0);
    }
}

#[test]
fn ooo_overlap_last_takes_new_bytes() {
    for cs in [1, 3, 7, 4096] {
        let mut b = Budget::default();
        let mut s = stream(OverlapPolicy::Last, cs);
        s.insert(104, b"efghij", &mut b);
        let ins = s.insert(102, b"CDEFgh", &mut b);
        assert_eq!((ins.new_ooo, ins.duplicate, ins.conflicting), (2, 2, 2));
        // A segment at the frontier that overlaps held out-of-order data: policy applies there
        // too (those bytes were not delivered yet).
        let ins = s.insert(100, b"abcdXF", &mut b);
        assert_eq!((ins.advanced, ins.duplicate, ins.conflicting), (10, 1, 3));
        assert_eq!(all(&s), b"abcdXFghij", "cs {cs}");
        assert_eq!(s.stats().overlap_conflicts, 5);
        s.clear(&mut b);
        assert_eq!(b.used, 0);
    }
}

#[test]
fn ooo_first_policy_at_frontier_keeps_held_bytes() {
    let mut b = Budget::default();
    let mut s = stream(OverlapPolicy::First, 4);
    s.insert(104, b"efghij", &mut b);
    s.insert(102, b"CDEFgh", &mut b);
    let ins = s.insert(100, b"abcdXF", &mut b);
    // 2..4 "cd" vs held "CD": 2 conflicts; 4 "X" vs "e": 1; 5 "F" vs "f": 1.
    assert_eq!((ins.advanced, ins.duplicate, ins.conflicting), (10, 0, 4));
    assert_eq!(all(&s), b"abCDefghij");
    s.clear(&mut b);
}

#[test]
fn below_frontier_is_never_rewritten() {
    for policy in [OverlapPolicy::First, OverlapPolicy::Last] {
        let mut b = Budget::default();
        let mut s = stream(policy, 4);
        s.insert(100, b"0123456789", &mut b);
        let before: Vec<*const u8> = s.read(0, 10).unwrap().data().map(<[u8]>::as_ptr).collect();
        // Overlaps 6..10 (2 identical, 2 different) and brings 4 new bytes.
        let ins = s.insert(106, b"67XYabcd", &mut b);
        assert_eq!(ins, Insert { advanced: 4, duplicate: 2, conflicting: 2, ..Insert::default() }, "{policy:?}");
        // Wholly below the frontier, all different.
        let ins = s.insert(100, b"ABC", &mut b);
        assert_eq!((ins.conflicting, ins.duplicate, ins.advanced), (3, 0, 0));
        assert_eq!(all(&s), b"0123456789abcd", "{policy:?}");
        let after: Vec<*const u8> = s.read(0, 10).unwrap().data().map(<[u8]>::as_ptr).collect();
        assert_eq!(before, after);
        assert_eq!(s.stats().overlap_conflicts, 5);
        assert_eq!(s.stats().retransmitted_bytes, 7);
        s.clear(&mut b);
    }
}

#[test]
fn partially_overlapping_segments_contribute_new_parts() {
    let mut b = Budget::default();
    let mut s = stream(OverlapPolicy::First, 5);
    // Two held ranges 10..12 and 20..22; a segment 8..24 bridges them.
    s.insert(110, b"KL", &mut b);
    s.insert(120, b"UV", &mut b);
    assert_eq!(s.ooo_ranges(), 2);
    let seg: Vec<u8> = (8u8..24).map(|i| b'a' + i).collect();
    let ins = s.insert(108, &seg, &mut b);
    // 16 bytes: 4 held (all differ from the lowercase letters), 12 new.
    assert_eq!((ins.new_ooo, ins.conflicting, ins.duplicate), (12, 4, 0));
    assert_eq!(s.ooo_ranges(), 1);
    assert_eq!(s.ooo_bytes(), 16);
    s.insert(100, b"abcdefgh", &mut b);
    let mut want: Vec<u8> = (0u8..24).map(|i| b'a' + i).collect();
    want[10..12].copy_from_slice(b"KL");
    want[20..22].copy_from_slice(b"UV");
    assert_eq!(all(&s), want);
    s.clear(&mut b);
}

#[test]
fn released_bytes_are_old_not_compared() {
    let mut b = Budget::default();
    let mut s = stream(OverlapPolicy::First, 4);
    s.insert(100, b"0123456789", &mut b);
    s.release_until(6, &mut b);
    let ins = s.insert(100, b"XXXXXXXX", &mut b);
    assert_eq!((ins.old, ins.conflicting, ins.duplicate), (6, 2, 0));
    s.clear(&mut b);
}
