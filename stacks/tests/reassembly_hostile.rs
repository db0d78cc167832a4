//! Hostile input: out-of-order floods behind a hole, huge jumps, `max_ahead`, `depth`, and a
//! global budget shared by many streams. Memory stays bounded and everything is counted.

use stacks::reassembly::{Budget, ByteStream, ReassemblyConfig, Refused};

fn cfg(max_ooo_bytes: usize, max_ooo_segments: usize, chunk_size: usize) -> ReassemblyConfig {
    ReassemblyConfig { max_ooo_bytes, max_ooo_segments, chunk_size, ..ReassemblyConfig::default() }
}

/// The out-of-order memory bound: `max_ooo_bytes` rounded up to a chunk, plus one chunk, plus
/// the frontier's own chunk.
fn ooo_bound(c: &ReassemblyConfig) -> usize {
    (c.max_ooo_bytes.div_ceil(c.chunk_size) + 2) * c.chunk_size
}

#[test]
fn ooo_flood_behind_a_hole_stays_bounded() {
    for (max_bytes, max_segs, cs) in [(64 * 1024, 1024, 4096), (10_000, 50, 7), (1 << 20, 1024, 512)] {
        let c = cfg(max_bytes, max_segs, cs);
        let mut b = Budget::default();
        let mut s = ByteStream::new(7, &c);
        let payload = [0xAB; 100];
        let mut refused = 0u64;
        let mut last = None;
        // 100k segments far ahead, every other 100-byte slot (each its own range).
        for i in 0..100_000u32 {
            let seq = 7u32.wrapping_add(1_000 + i * 200);
            let ins = s.insert(seq, &payload, &mut b);
            if let Some(r) = ins.refused {
                refused += 1;
                last = Some(r);
            }
            assert!(s.ooo_bytes() <= max_bytes);
            assert!(s.ooo_ranges() <= max_segs);
            assert!(s.memory() <= ooo_bound(&c), "memory {} cs {cs}", s.memory());
            assert_eq!(b.used, s.memory());
        }
        assert!(refused > 90_000, "refused {refused}");
        assert!(matches!(last, Some(Refused::OooBytesLimit | Refused::OooSegmentsLimit)));
        assert_eq!(s.stats().refused_segments, refused);
        assert_eq!(s.stats().refused_bytes, refused * 100);
        assert_eq!(s.stats().ooo_segments, 100_000);
        assert_eq!(s.frontier(), 0);
        s.clear(&mut b);
        assert_eq!(b.used, 0);
        assert_eq!(s.stats().cleared_ooo_bytes, (100_000 - refused) * 100);
    }
}

#[test]
fn one_byte_segments_cannot_amplify_memory() {
    // Tiny sparse segments would each need a whole chunk: the out-of-order chunk bound refuses
    // them long before max_ooo_bytes of data is held.
    let c = cfg(64 * 1024, 100_000, 4096);
    let mut b = Budget::default();
    let mut s = ByteStream::new(0, &c);
    for i in 0..10_000u32 {
        s.insert(10 + i * 5000, b"x", &mut b);
        assert!(s.memory() <= ooo_bound(&c));
    }
    assert_eq!(s.ooo_bytes(), 17);
    assert_eq!(s.stats().refused_segments, 10_000 - 17);
    s.clear(&mut b);
    assert_eq!(b.used, 0);
}

#[test]
fn ooo_segments_limit_counts_ranges() {
    let c = cfg(1 << 20, 3, 16);
    let mut b = Budget::default();
    let mut s = ByteStream::new(0, &c);
    for i in 0..3u32 {
        assert_eq!(s.insert(100 + i * 10, b"ab", &mut b).refused, None);
    }
    assert_eq!(s.insert(200, b"ab", &mut b).refused, Some(Refused::OooSegmentsLimit));
    // Extending a range does not add one; bridging two removes one: accepted.
    assert_eq!(s.insert(102, b"cdefgh", &mut b).refused, None);
    assert_eq!(s.ooo_ranges(), 3);
    assert_eq!(s.insert(108, b"ij", &mut b).refused, None);
    assert_eq!(s.ooo_ranges(), 2);
    assert_eq!(s.insert(200, b"ab", &mut b).refused, None);
    assert_eq!(s.insert(300, b"ab", &mut b).refused, Some(Refused::OooSegmentsLimit));
    // At the frontier: never refused for out-of-order limits.
    let ins = s.insert(0, &[1; 100], &mut b);
    assert_eq!((ins.refused, ins.advanced), (None, 112));
    s.clear(&mut b);
}

#[test]
fn jump_of_2_pow_31_minus_1_and_max_ahead() {
    let mut b = Budget::default();
    let mut s = ByteStream::new(5, &ReassemblyConfig::default());
    s.insert(5, b"abc", &mut b);
    // The largest forward distance: 2^31 - 1 beyond the frontier, refused by max_ahead.
    let ins = s.insert(8u32.wrapping_add((1 << 31) - 1), b"far", &mut b);
    assert_eq!((ins.refused, ins.out_of_order), (Some(Refused::TooFarAhead), true));
    // 2^31 beyond is read as 2^31 behind: old data, trimmed before offset 0.
    let ins = s.insert(8u32.wrapping_add(1 << 31), b"old", &mut b);
    assert_eq!((ins.refused, ins.out_of_order, ins.old), (None, false, 3));
    assert_eq!(s.ooo_bytes(), 0);

    // With max_ahead = u64::MAX the jump is accepted and held out of order (one chunk).
    let c = ReassemblyConfig { max_ahead: u64::MAX, ..ReassemblyConfig::default() };
    let mut s2 = ByteStream::new(u32::MAX, &c);
    let ins = s2.insert(u32::MAX.wrapping_add((1 << 31) - 1), b"far", &mut b);
    assert_eq!((ins.refused, ins.new_ooo), (None, 3));
    assert_eq!(s2.memory(), 2 * 4096, "2^31 - 1 is the last byte of a chunk");
    let f = s2.finish(&mut b);
    assert_eq!((f.gaps, f.gap_bytes, f.delivered), (1, (1 << 31) - 1, 3));
    assert_eq!(s2.frontier(), (1 << 31) + 2);
    assert_eq!(s2.read(s2.frontier() - 3, s2.frontier()).unwrap().to_vec(), b"far");
    assert_eq!(s2.memory(), 2 * 4096, "the gap allocates nothing");
    s2.clear(&mut b);

    // max_ahead exactly: start - frontier == max_ahead is accepted, one more is refused.
    let c = ReassemblyConfig { max_ahead: 1000, ..ReassemblyConfig::default() };
    let mut s3 = ByteStream::new(0, &c);
    assert_eq!(s3.insert(1000, b"x", &mut b).refused, None);
    assert_eq!(s3.insert(1001 + 5, b"x", &mut b).refused, Some(Refused::TooFarAhead));
    assert_eq!(s3.stats().refused_segments, 1);
    s.clear(&mut b);
    s3.clear(&mut b);
    assert_eq!(b.used, 0);
}

#[test]
fn depth_ignores_bytes_beyond_it() {
    let c = ReassemblyConfig { depth: Some(10), chunk_size: 4, ..ReassemblyConfig::default() };
    let mut b = Budget::default();
    let mut s = ByteStream::new(0, &c);
    let ins = s.insert(0, b"0123456", &mut b);
    assert_eq!((ins.refused, ins.advanced), (None, 7));
    let ins = s.insert(7, b"789abc", &mut b);
    assert_eq!((ins.refused, ins.advanced), (Some(Refused::Depth), 3));
    assert!(s.stats().depth_reached);
    assert_eq!(s.stats().refused_bytes, 3);
    let ins = s.insert(50, b"zz", &mut b);
    assert_eq!((ins.refused, ins.new_ooo), (Some(Refused::Depth), 0));
    assert_eq!(s.frontier(), 10);
    assert_eq!(s.ooo_bytes(), 0);
    assert_eq!(s.read(0, 10).unwrap().to_vec(), b"0123456789");
    assert_eq!(s.stats().refused_segments, 2);
    assert_eq!(s.stats().refused_bytes, 5);
    // Memory stops growing at depth whatever comes next.
    for i in 0..1000u32 {
        s.insert(i * 3, &[1; 64], &mut b);
    }
    assert_eq!(s.memory(), 12);
    s.clear(&mut b);
}

#[test]
fn shared_budget_limit_refuses_and_release_gives_back() {
    let c = cfg(1 << 20, 1024, 1024);
    let mut b = Budget::with_limit(64 * 1024);
    let mut streams: Vec<ByteStream> = (0..20u32).map(|i| ByteStream::new(i * 1000, &c)).collect();
    let mut memory_refusals = 0u64;
    for round in 0..10u32 {
        for (i, s) in streams.iter_mut().enumerate() {
            let seq = (i as u32) * 1000 + round * 1000;
            let ins = s.insert(seq, &[round as u8; 1000], &mut b);
            if ins.refused == Some(Refused::Memory) {
                memory_refusals += 1;
            }
            assert!(b.used <= b.limit);
        }
    }
    assert!(memory_refusals > 0);
    assert_eq!(b.refused_bytes, memory_refusals * 1000);
    assert_eq!(b.used, streams.iter().map(ByteStream::memory).sum::<usize>());
    assert!(b.high_water <= b.limit && b.high_water > 0);
    // Out of order too: refused with Memory once the budget is full.
    let ins = streams[0].insert(500_000, &[9; 2000], &mut b);
    assert_eq!(ins.refused, Some(Refused::Memory));
    // Releasing gives memory back, and inserts succeed again.
    for s in &mut streams {
        s.finish(&mut b);
        let f = s.frontier();
        s.release_until(f, &mut b);
    }
    assert!(b.used <= 20 * 1024, "only partial frontier chunks remain: {}", b.used);
    let f = streams[0].frontier();
    let seq = streams[0].frontier_seq();
    let ins = streams[0].insert(seq, &[1; 3000], &mut b);
    assert_eq!((ins.refused, streams[0].frontier()), (None, f + 3000));
    for s in &mut streams {
        s.clear(&mut b);
    }
    assert_eq!(b.used, 0);
}

#[test]
fn memory_is_chunk_capacity_and_release_frees_whole_chunks() {
    let c = cfg(1 << 20, 1024, 10);
    let mut b = Budget::default();
    let mut s = ByteStream::new(0, &c);
    s.insert(0, &[1; 35], &mut b);
    assert_eq!((s.memory(), b.used), (40, 40));
    s.insert(50, &[2; 5], &mut b); // one out-of-order chunk
    assert_eq!(s.memory(), 50);
    s.release_until(29, &mut b); // chunks 0 and 1 lie below 29; chunk 2 holds 29
    assert_eq!((s.memory(), b.used, s.base()), (30, 30, 29));
    s.release_until(35, &mut b); // chunk 3 holds the frontier: kept
    assert_eq!(s.memory(), 20);
    assert_eq!(b.high_water, 50);
    s.clear(&mut b);
    assert_eq!((s.memory(), b.used, s.ooo_bytes()), (0, 0, 0));
    // Usable after clear: the next bytes at the frontier start a fresh chunk.
    let ins = s.insert(35, b"abcdefgh", &mut b);
    assert_eq!(ins.advanced, 8);
    assert_eq!(s.read(35, 43).unwrap().to_vec(), b"abcdefgh");
    assert!(s.read(34, 43).is_err());
    s.clear(&mut b);
    assert_eq!(b.used, 0);
}

#[test]
fn every_limit_has_its_own_counter() {
    let c = ReassemblyConfig {
        max_ooo_bytes: 1000,
        max_ooo_segments: 2,
        max_ahead: 100_000,
        chunk_size: 256,
        ..ReassemblyConfig::default()
    };
    let mut b = Budget::with_limit(4 * 256);
    let mut s = ByteStream::new(0, &c);
    let hit = |s: &mut ByteStream, b: &mut Budget, seq: u32, len: usize| s.insert(seq, &vec![1u8; len], b).refused;
    assert_eq!(hit(&mut s, &mut b, 200_000, 10), Some(Refused::TooFarAhead));
    assert_eq!(hit(&mut s, &mut b, 100, 10), None);
    assert_eq!(hit(&mut s, &mut b, 120, 10), None);
    assert_eq!(hit(&mut s, &mut b, 140, 10), Some(Refused::OooSegmentsLimit));
    assert_eq!(hit(&mut s, &mut b, 130, 990), Some(Refused::OooBytesLimit));
    // Fill the hole and go in order up to the memory budget (4 chunks), then past it.
    assert_eq!(hit(&mut s, &mut b, 0, 1024), None);
    assert_eq!(hit(&mut s, &mut b, 1024, 256), Some(Refused::Memory));
    let st = s.stats();
    assert_eq!(
        (st.refused.ahead, st.refused.ooo_segments, st.refused.ooo_bytes, st.refused.memory, st.refused.depth),
        (1, 1, 1, 1, 0),
        "{st:?}"
    );
    assert_eq!(st.refused_segments, 4);
    let names: Vec<&str> = st.refused.named().iter().map(|(n, _)| *n).collect();
    assert_eq!(
        names,
        ["refused_memory", "refused_ooo_bytes", "refused_ooo_segments", "refused_ahead", "refused_depth"]
    );
    // Depth: a fresh stream, bytes beyond `depth` are ignored and counted as such.
    let mut b = Budget::default();
    let mut s = ByteStream::new(0, &ReassemblyConfig { depth: Some(10), ..ReassemblyConfig::default() });
    assert_eq!(s.insert(0, &[1; 20], &mut b).refused, Some(Refused::Depth));
    assert_eq!(s.stats().refused.depth, 1);
}

/// Freed chunks are recycled through the budget: their old bytes never show in a read, and
/// the spares kept stay under `SPARE_BYTES`, however many chunks were freed.
#[test]
fn recycled_chunks_never_leak_old_bytes_and_spares_stay_bounded() {
    use stacks::reassembly::SPARE_BYTES;
    let c = cfg(1 << 20, 1024, 512);
    let mut b = Budget::default();
    // Many streams fill chunks with their own byte, release them, and take recycled ones.
    for round in 0..50u32 {
        let mut s = ByteStream::new(round, &c);
        let fill = (round % 251) as u8 + 1;
        // Out of order first (its chunks come from the spares too), then the hole.
        s.insert(round.wrapping_add(700), &vec![fill; 5000], &mut b);
        s.insert(round, &vec![fill; 700], &mut b);
        assert_eq!(s.frontier(), 5700);
        let got = s.read(0, 5700).unwrap().to_vec();
        assert!(got.iter().all(|&x| x == fill), "round {round}: a byte of an earlier stream leaked");
        s.release_until(3000, &mut b);
        assert!(s.read(3000, 5700).unwrap().to_vec().iter().all(|&x| x == fill));
        s.clear(&mut b);
        assert_eq!(b.used, 0);
        assert!(b.spare_chunks() * 512 <= SPARE_BYTES);
    }
    assert!(b.spare_chunks() > 0, "released chunks were not kept for reuse");
}
