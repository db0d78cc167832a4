//! The reassembler against a simple model: a bitmap of the bytes received. Random payloads cut
//! into random segments, shuffled, duplicated, retransmitted with overlapping ranges, random
//! chunk sizes, sequence numbers that wrap, releases interleaved at random.

use proptest::prelude::*;
use stacks::reassembly::{Budget, ByteStream, InOrderSink, OverlapPolicy, ReadError, ReassemblyConfig};

/// One step of a scenario: insert `payload[lo..hi]`, or release up to a fraction of the
/// frontier.
#[derive(Clone, Debug)]
enum Step {
    Insert { lo: usize, hi: usize },
    Release { permille: u16 },
}

#[derive(Clone, Debug)]
struct Scenario {
    payload: Vec<u8>,
    first_seq: u32,
    chunk_size: usize,
    last: bool,
    steps: Vec<Step>,
}

fn cut_points(len: usize, cuts: Vec<usize>) -> Vec<(usize, usize)> {
    let mut points: Vec<usize> = cuts.into_iter().map(|c| c % (len + 1)).collect();
    points.push(0);
    points.push(len);
    points.sort_unstable();
    points.dedup();
    points.windows(2).map(|w| (w[0], w[1])).collect()
}

fn scenario() -> impl Strategy<Value = Scenario> {
    let first_seq = prop_oneof![any::<u32>(), (0u32..30_000).prop_map(|d| u32::MAX - d), Just(0u32),];
    let chunk_size = prop_oneof![1usize..=16, Just(7usize), 17usize..600, Just(4096usize)];
    (
        prop::collection::vec(any::<u8>(), 0..20 * 1024),
        first_seq,
        chunk_size,
        any::<bool>(),
        prop::collection::vec(any::<usize>(), 0..200),
        prop::collection::vec((any::<usize>(), any::<usize>()), 0..40),
        prop::collection::vec(any::<usize>(), 0..40),
        prop::collection::vec((any::<usize>(), any::<u16>()), 0..20),
        any::<u64>(),
    )
        .prop_map(|(payload, first_seq, chunk_size, last, cuts, retx, dups, releases, seed)| {
            let len = payload.len();
            let mut steps: Vec<Step> =
                cut_points(len, cuts).into_iter().map(|(lo, hi)| Step::Insert { lo, hi }).collect();
            let n = steps.len().max(1);
            for d in dups {
                if let Some(s) = steps.get(d % n).cloned() {
                    steps.push(s);
                }
            }
            for (x, y) in retx {
                let (a, b) = (x % (len + 1), y % (len + 1));
                steps.push(Step::Insert { lo: a.min(b), hi: a.max(b) });
            }
            for (_, p) in &releases {
                steps.push(Step::Release { permille: p % 1001 });
            }
            // Deterministic shuffle from the seed (Fisher-Yates with an LCG).
            let mut state = seed | 1;
            for i in (1..steps.len()).rev() {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let j = (state >> 33) as usize % (i + 1);
                steps.swap(i, j);
            }
            Scenario { payload, first_seq, chunk_size, last, steps }
        })
}

fn cfg(chunk_size: usize, last: bool) -> ReassemblyConfig {
    ReassemblyConfig {
        max_ooo_bytes: 1 << 20,
        max_ooo_segments: 1 << 20,
        chunk_size,
        overlap: if last { OverlapPolicy::Last } else { OverlapPolicy::First },
        ..ReassemblyConfig::default()
    }
}

fn read_all(s: &ByteStream, from: u64, to: u64) -> Vec<u8> {
    s.read(from, to).expect("readable range").to_vec()
}

/// A sink that keeps every byte by offset (`None`: a gap) and notes appends out of order.
#[derive(Default)]
struct VecSink {
    bytes: Vec<Option<u8>>,
    out_of_order_appends: usize,
}

impl InOrderSink for VecSink {
    fn append(&mut self, at: u64, bytes: &[u8]) {
        let at = at as usize;
        if at < self.bytes.len() {
            self.out_of_order_appends += 1;
            return;
        }
        self.bytes.resize(at, None);
        self.bytes.extend(bytes.iter().map(|&b| Some(b)));
    }

    fn differing(&self, at: u64, new: &[u8]) -> Option<u64> {
        let held = self.bytes.get(at as usize..at as usize + new.len())?;
        let mut diff = 0;
        for (h, n) in held.iter().zip(new) {
            diff += u64::from(h.ok_or(()).ok()? != *n);
        }
        Some(diff)
    }
}

/// Payload bytes for a step: retransmissions of some ranges carry different bytes (so the
/// overlap policies and conflict counts are exercised).
fn step_bytes(payload: &[u8], lo: usize, hi: usize, corrupt: bool) -> Vec<u8> {
    payload[lo..hi].iter().map(|b| if corrupt { b ^ 0x5a } else { *b }).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn reassembles_against_bitmap(sc in scenario()) {
        let mut budget = Budget::default();
        let mut s = ByteStream::new(sc.first_seq, &cfg(sc.chunk_size, sc.last));
        let mut have = vec![false; sc.payload.len()];
        let mut prev_frontier = 0u64;
        for step in &sc.steps {
            match *step {
                Step::Insert { lo, hi } => {
                    let seq = sc.first_seq.wrapping_add(lo as u32);
                    let ins = s.insert(seq, &sc.payload[lo..hi], &mut budget);
                    prop_assert_eq!(ins.refused, None);
                    prop_assert_eq!(ins.conflicting, 0, "consistent data never conflicts");
                    for b in &mut have[lo..hi] {
                        *b = true;
                    }
                    let model = have.iter().take_while(|b| **b).count() as u64;
                    prop_assert_eq!(s.frontier(), model, "frontier == received prefix");
                    prop_assert_eq!(ins.advanced, s.frontier() - prev_frontier);
                    prop_assert_eq!(ins.out_of_order, (lo as u64) > prev_frontier && hi > lo);
                    let model_ooo = have[model as usize..].iter().filter(|b| **b).count();
                    prop_assert_eq!(s.ooo_bytes(), model_ooo);
                }
                Step::Release { permille } => {
                    let to = s.frontier() * u64::from(permille) / 1000;
                    s.release_until(to, &mut budget);
                    prop_assert!(s.base() <= s.frontier());
                }
            }
            prop_assert!(s.frontier() >= prev_frontier, "frontier never moves backwards");
            prev_frontier = s.frontier();
            prop_assert_eq!(s.frontier_seq(), sc.first_seq.wrapping_add(s.frontier() as u32));
            prop_assert_eq!(s.stats().bytes, s.frontier());
            prop_assert_eq!(budget.used, s.memory());
            // What is readable above the base is a prefix of the final stream.
            let (b, f) = (s.base(), s.frontier());
            prop_assert_eq!(&read_all(&s, b, f)[..], &sc.payload[b as usize..f as usize]);
        }
        // Every byte was sent at least once (the cuts cover the payload).
        prop_assert_eq!(s.frontier(), sc.payload.len() as u64);
        prop_assert_eq!(s.ooo_bytes(), 0);
        let b = s.base();
        prop_assert_eq!(&read_all(&s, b, s.frontier())[..], &sc.payload[b as usize..]);
        s.clear(&mut budget);
        prop_assert_eq!(budget.used, 0);
        prop_assert_eq!(s.memory(), 0);
    }

    /// Reading the whole stream mid-way (no releases) always gives a prefix of the final
    /// stream, and slices taken earlier stay equal to the final bytes.
    #[test]
    fn midway_reads_are_prefixes(sc in scenario()) {
        let mut budget = Budget::default();
        let mut s = ByteStream::new(sc.first_seq, &cfg(sc.chunk_size, sc.last));
        let mut snapshots: Vec<Vec<u8>> = Vec::new();
        for step in sc.steps.iter().take(400) {
            if let Step::Insert { lo, hi } = *step {
                s.insert(sc.first_seq.wrapping_add(lo as u32), &sc.payload[lo..hi], &mut budget);
                snapshots.push(read_all(&s, 0, s.frontier()));
            }
        }
        let fin = read_all(&s, 0, s.frontier());
        prop_assert_eq!(&fin[..], &sc.payload[..]);
        for snap in &snapshots {
            prop_assert_eq!(&fin[..snap.len()], &snap[..]);
        }
        // Slices cover exactly the range, whatever the chunking.
        let f = s.frontier();
        for (from, to) in [(0, f), (f / 3, f / 2), (f, f)] {
            let total: usize = s.read(from, to).unwrap().data().map(<[u8]>::len).sum();
            prop_assert_eq!(total as u64, to - from);
        }
        s.clear(&mut budget);
        prop_assert_eq!(budget.used, 0);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// A stream with a sink behaves exactly as one that keeps its bytes — same insert
    /// results, frontier, counters and finish — and its sink receives exactly the bytes the
    /// other one reads, in order, gaps included; with conflicting retransmissions, releases,
    /// and holes left for `finish`.
    #[test]
    fn a_stream_with_a_sink_equals_one_without(sc in scenario(), skip in 0usize..9, corrupt in 0usize..7) {
        let c = cfg(sc.chunk_size, sc.last);
        let (mut b_own, mut b_sink) = (Budget::default(), Budget::default());
        let mut own = ByteStream::new(sc.first_seq, &c);
        let mut with = ByteStream::new_with_sink(sc.first_seq, &c);
        let mut sink = VecSink::default();
        prop_assert_eq!(with.read(0, 0).err(), Some(ReadError::InSink));
        for (i, step) in sc.steps.iter().enumerate() {
            match *step {
                // Some steps are left out (holes for `finish`), some carry other bytes.
                Step::Insert { .. } if skip > 0 && i % 9 == skip => {}
                Step::Insert { lo, hi } => {
                    let seq = sc.first_seq.wrapping_add(lo as u32);
                    let bytes = step_bytes(&sc.payload, lo, hi, corrupt > 0 && i % 7 == corrupt);
                    let a = own.insert(seq, &bytes, &mut b_own);
                    let b = with.insert_into(seq, &bytes, &mut b_sink, &mut sink);
                    prop_assert_eq!(a, b, "step {}", i);
                }
                Step::Release { permille } => {
                    let to = own.frontier() * u64::from(permille) / 1000;
                    own.release_until(to, &mut b_own);
                    with.release_until(to, &mut b_sink);
                }
            }
            prop_assert_eq!((own.frontier(), own.base(), own.ooo_bytes()), (with.frontier(), with.base(), with.ooo_bytes()));
            prop_assert_eq!(sink.bytes.len() as u64, with.frontier(), "the sink holds exactly the frontier");
            // Charged like a stream that keeps its bytes, give or take the frontier's chunk
            // (held on the out-of-order side too while out-of-order bytes share it).
            prop_assert_eq!(b_sink.used, with.memory());
            prop_assert!(b_sink.used <= b_own.used + sc.chunk_size, "{} > {} + one chunk", b_sink.used, b_own.used);
        }
        let fa = own.finish(&mut b_own);
        let fb = with.finish_into(&mut b_sink, &mut sink);
        prop_assert_eq!(fa, fb);
        prop_assert_eq!(own.stats(), with.stats());
        prop_assert_eq!(sink.out_of_order_appends, 0);
        prop_assert_eq!(sink.bytes.len() as u64, with.frontier());
        // The sink's bytes above the base equal what the other stream reads, gaps as gaps.
        let mut expect: Vec<Option<u8>> = Vec::new();
        for piece in own.read(own.base(), own.frontier()).unwrap() {
            match piece {
                stacks::reassembly::Chunk::Data(d) => expect.extend(d.iter().map(|&b| Some(b))),
                stacks::reassembly::Chunk::Gap(n) => expect.extend(std::iter::repeat_n(None, n as usize)),
            }
        }
        prop_assert_eq!(&sink.bytes[own.base() as usize..], &expect[..]);
        with.clear(&mut b_sink);
        prop_assert_eq!(b_sink.used, 0);
        prop_assert_eq!(with.memory(), 0);
    }
}

#[test]
fn read_errors() {
    let mut budget = Budget::default();
    let mut s = ByteStream::new(10, &ReassemblyConfig::default());
    s.insert(10, b"abcdef", &mut budget);
    assert!(s.read(0, 7).is_err());
    assert!(s.read(4, 3).is_err());
    assert_eq!(s.read(6, 6).unwrap().count(), 0);
    s.release_until(3, &mut budget);
    assert_eq!(s.base(), 3);
    assert!(s.read(2, 4).is_err());
    assert_eq!(s.read(3, 6).unwrap().to_vec(), b"def");
    // The base is clamped to the frontier and never moves back.
    s.release_until(100, &mut budget);
    assert_eq!(s.base(), 6);
    s.release_until(1, &mut budget);
    assert_eq!(s.base(), 6);
    s.clear(&mut budget);
    assert_eq!(budget.used, 0);
}

#[test]
fn zero_length_is_a_no_op_and_data_before_first_seq_is_trimmed() {
    let mut budget = Budget::default();
    let mut s = ByteStream::new(1000, &ReassemblyConfig::default());
    let ins = s.insert(5000, b"", &mut budget);
    assert_eq!(ins, Default::default());
    assert_eq!(s.stats().segments, 0);
    // 995..1005: five bytes before offset 0 are trimmed.
    let ins = s.insert(995, b"xxxxxhello", &mut budget);
    assert_eq!((ins.old, ins.advanced), (5, 5));
    assert_eq!(s.read(0, 5).unwrap().to_vec(), b"hello");
    // Wholly before offset 0 (a retransmitted SYN's payload, say).
    let ins = s.insert(990, b"zzzz", &mut budget);
    assert_eq!((ins.old, ins.advanced), (4, 0));
    assert_eq!(s.frontier(), 5);
    s.clear(&mut budget);
}

#[test]
fn sequence_numbers_wrap() {
    let mut budget = Budget::default();
    let first = u32::MAX - 2;
    let mut s = ByteStream::new(first, &ReassemblyConfig { chunk_size: 4, ..Default::default() });
    // Offset 5 = sequence 2 (after the wrap), sent first.
    let ins = s.insert(2, b"FGH", &mut budget);
    assert!(ins.out_of_order);
    s.insert(first, b"ABCDE", &mut budget);
    assert_eq!(s.frontier(), 8);
    assert_eq!(s.frontier_seq(), 5);
    assert_eq!(s.read(0, 8).unwrap().to_vec(), b"ABCDEFGH");
    // A retransmission from far back (but < 2 GiB) is old data, not future data.
    let ins = s.insert(first, b"ABC", &mut budget);
    assert_eq!((ins.duplicate, ins.out_of_order), (3, false));
    s.clear(&mut budget);
}

#[test]
fn slices_point_into_stable_chunks() {
    let mut budget = Budget::default();
    let mut s = ByteStream::new(0, &ReassemblyConfig { chunk_size: 8, ..Default::default() });
    s.insert(0, b"0123456789", &mut budget);
    let before: Vec<*const u8> = s.read(0, 10).unwrap().data().map(<[u8]>::as_ptr).collect();
    // More data, out of order and then in order, plus a retransmission that differs.
    s.insert(20, &[7; 100], &mut budget);
    s.insert(10, b"abcdefghij", &mut budget);
    s.insert(0, b"XXXXXXXXXX", &mut budget);
    let after: Vec<*const u8> = s.read(0, 10).unwrap().data().map(<[u8]>::as_ptr).collect();
    assert_eq!(before, after, "chunks never move");
    assert_eq!(s.read(0, 10).unwrap().to_vec(), b"0123456789");
    s.clear(&mut budget);
}

#[test]
fn config_defaults_and_strict_keys() {
    let c: ReassemblyConfig = serde_json::from_str("{}").unwrap();
    assert_eq!(c, ReassemblyConfig::default());
    assert_eq!(c.max_ooo_bytes, 1 << 20);
    assert_eq!(c.max_ooo_segments, 1024);
    assert_eq!(c.max_ahead, 64 << 20);
    assert_eq!(c.depth, None);
    assert_eq!(c.overlap, OverlapPolicy::First);
    assert_eq!(c.chunk_size, 4096);
    let c: ReassemblyConfig = serde_json::from_str(r#"{"overlap":"last","depth":10}"#).unwrap();
    assert_eq!((c.overlap, c.depth), (OverlapPolicy::Last, Some(10)));
    assert!(serde_json::from_str::<ReassemblyConfig>(r#"{"chunk":1}"#).is_err());
    assert!(ReassemblyConfig { chunk_size: 0, ..Default::default() }.validate().is_err());
    assert!(ReassemblyConfig::default().validate().is_ok());
    // `new` clamps instead of failing.
    let s = ByteStream::new(0, &ReassemblyConfig { chunk_size: 0, ..Default::default() });
    assert_eq!(s.config().chunk_size, 1);
}
