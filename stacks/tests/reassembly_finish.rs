//! `finish`: holes that will never be filled are skipped and counted; the out-of-order data
//! beyond them is delivered in order; gaps read as [`Chunk::Gap`] (their length, never zero
//! bytes) and their bytes cannot be compared.

use proptest::prelude::*;
use stacks::reassembly::{Budget, ByteStream, Chunk, Finish, ReassemblyConfig, Slices};

/// The received bytes of a read from `from`, and its gaps as ranges (adjacent pieces
/// merged).
fn pieces(from: u64, sl: Slices<'_>) -> (Vec<u8>, Vec<std::ops::Range<u64>>) {
    let (mut data, mut gaps, mut at) = (Vec::new(), Vec::<std::ops::Range<u64>>::new(), from);
    for c in sl {
        match c {
            Chunk::Data(d) => data.extend_from_slice(d),
            Chunk::Gap(n) => match gaps.last_mut() {
                Some(g) if g.end == at => g.end += n,
                _ => gaps.push(at..at + n),
            },
        }
        at += c.len();
    }
    (data, gaps)
}

fn stream(chunk_size: usize) -> ByteStream {
    ByteStream::new(1 << 31, &ReassemblyConfig { chunk_size, ..ReassemblyConfig::default() })
}

#[test]
fn gaps_are_skipped_counted_and_data_delivered_in_order() {
    for cs in [1, 4, 7, 4096] {
        let mut b = Budget::default();
        let mut s = stream(cs);
        let base = 1u32 << 31;
        s.insert(base, b"ab", &mut b); // 0..2
        s.insert(base + 30, b"XYZ", &mut b); // 30..33
        s.insert(base + 5, b"cd", &mut b); // 5..7
        s.insert(base + 7, b"ef", &mut b); // 7..9, merged with 5..7
        assert_eq!((s.frontier(), s.ooo_bytes(), s.ooo_ranges()), (2, 7, 2));
        let mem = s.memory();
        let f = s.finish(&mut b);
        assert_eq!(f, Finish { delivered: 7, gaps: 2, gap_bytes: 3 + 21 }, "cs {cs}");
        assert_eq!(s.frontier(), 33);
        assert_eq!(s.frontier_seq(), base + 33);
        assert_eq!(s.ooo_bytes(), 0);
        assert_eq!(s.memory(), mem, "finish allocates nothing");
        assert_eq!(b.used, mem);
        assert_eq!(s.gaps().collect::<Vec<_>>(), vec![2..5, 9..30]);
        assert_eq!((s.stats().gaps, s.stats().gap_bytes, s.stats().bytes), (2, 24, 33));
        let (data, gaps) = pieces(0, s.read(0, 33).unwrap());
        assert_eq!(data, b"abcdefXYZ", "gaps are not read as bytes, cs {cs}");
        assert_eq!(gaps, vec![2..5, 9..30], "gaps read by length, cs {cs}");
        assert_eq!(s.read(0, 33).unwrap().to_vec(), b"abcdefXYZ");
        assert_eq!(pieces(3, s.read(3, 12).unwrap()), (b"cdef".to_vec(), vec![3..5, 9..12]), "cs {cs}");

        // A late retransmission into a gap is old (not comparable); around it, compared.
        let ins = s.insert(base + 1, b"bQQQc", &mut b); // 1..6: b dup, 2..5 gap, c dup
        assert_eq!((ins.old, ins.duplicate, ins.conflicting, ins.advanced), (3, 2, 0, 0));
        // The stream goes on after finish.
        let ins = s.insert(base + 33, b"more", &mut b);
        assert_eq!(ins.advanced, 4);
        // A second finish with nothing out of order does nothing.
        assert_eq!(s.finish(&mut b), Finish::default());
        // Releasing past a gap forgets it.
        s.release_until(10, &mut b);
        assert_eq!(s.gaps().collect::<Vec<_>>(), vec![9..30]);
        s.release_until(37, &mut b);
        assert_eq!(s.gaps().count(), 0);
        s.clear(&mut b);
        assert_eq!(b.used, 0);
    }
}

#[test]
fn finish_without_holes_or_data() {
    let mut b = Budget::default();
    let mut s = stream(16);
    assert_eq!(s.finish(&mut b), Finish::default());
    s.insert(1 << 31, b"abc", &mut b);
    assert_eq!(s.finish(&mut b), Finish::default());
    assert_eq!(s.frontier(), 3);
    s.clear(&mut b);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Random ranges of a payload, some never sent: after `finish` the stream has the length of
    /// the furthest byte sent, the bytes sent are in place, the rest are zeros counted as gaps.
    #[test]
    fn finish_against_bitmap(
        payload in prop::collection::vec(1u8..=255, 1..4000),
        ranges in prop::collection::vec((any::<usize>(), 1usize..300), 0..40),
        cs in prop_oneof![1usize..20, Just(4096usize)],
        first_seq in any::<u32>(),
    ) {
        let mut b = Budget::default();
        let mut s = ByteStream::new(first_seq, &ReassemblyConfig { chunk_size: cs, ..Default::default() });
        let n = payload.len();
        let mut have = vec![false; n];
        for (lo, len) in ranges {
            let lo = lo % n;
            let hi = (lo + len).min(n);
            s.insert(first_seq.wrapping_add(lo as u32), &payload[lo..hi], &mut b);
            have[lo..hi].iter_mut().for_each(|h| *h = true);
        }
        let before = s.frontier();
        let f = s.finish(&mut b);
        let end = have.iter().rposition(|h| *h).map_or(0, |i| i + 1);
        prop_assert_eq!(s.frontier(), (end as u64).max(before));
        let holes = have[..end].iter().filter(|h| !**h).count() as u64;
        prop_assert_eq!(f.gap_bytes, holes);
        let runs = have[..end].windows(2).filter(|w| w[0] && !w[1]).count()
            + usize::from(end > 0 && !have[0]);
        prop_assert_eq!(f.gaps, runs as u64);
        prop_assert_eq!(f.delivered + before + holes, s.frontier());
        let mut at = 0usize;
        for c in s.read(0, s.frontier()).unwrap() {
            match c {
                Chunk::Data(d) => {
                    for (k, byte) in d.iter().enumerate() {
                        prop_assert!(have[at + k]);
                        prop_assert_eq!(*byte, payload[at + k]);
                    }
                    at += d.len();
                }
                Chunk::Gap(n) => {
                    prop_assert!(have[at..at + n as usize].iter().all(|h| !*h), "a gap covers holes only");
                    at += n as usize;
                }
            }
        }
        prop_assert_eq!(at as u64, s.frontier());
        prop_assert_eq!(b.used, s.memory());
        s.clear(&mut b);
        prop_assert_eq!(b.used, 0);
    }
}
