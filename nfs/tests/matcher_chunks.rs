//! The matcher's chunked scan (the skipping scan and the bytewise one, from carried states) against a
//! search of the whole stream: for any patterns (plain and `nocase`, overlapping, prefixes of
//! each other) and any way of cutting the stream into chunks (1-byte ones included), [`Matcher::scan`] reports exactly the matches — pattern
//! and absolute end offset — of one overlapping search over the whole stream.

use std::collections::BTreeSet;

use aho_corasick::{AhoCorasick, MatchKind};
use nfs::signature::matcher::{DirState, Matcher};
use nfs::signature::rules::parse_rules;
use proptest::prelude::*;

/// Rules with one content each: `(bytes, nocase)`; pattern ids follow the rule order for
/// distinct patterns, which these tests make sure of.
fn rules(pats: &[(Vec<u8>, bool)]) -> String {
    let mut s = String::new();
    for (i, (p, nocase)) in pats.iter().enumerate() {
        let hex: Vec<String> = p.iter().map(|b| format!("{b:02x}")).collect();
        let nc = if *nocase { " nocase;" } else { "" };
        s += &format!("alert tcp any any -> any any (content:\"|{}|\";{nc} sid:{};)\n", hex.join(" "), i + 1);
    }
    s
}

/// Every (pattern index, end offset) of the whole stream, by a plain overlapping search.
fn whole(pats: &[(Vec<u8>, bool)], stream: &[u8]) -> BTreeSet<(u32, u64)> {
    let mut out = BTreeSet::new();
    for (i, (p, nocase)) in pats.iter().enumerate() {
        let ac =
            AhoCorasick::builder().match_kind(MatchKind::Standard).ascii_case_insensitive(*nocase).build([p]).unwrap();
        for m in ac.find_overlapping_iter(stream) {
            out.insert((i as u32, m.end() as u64));
        }
    }
    out
}

fn chunked(pats: &[(Vec<u8>, bool)], stream: &[u8], cuts: &[usize]) -> Vec<(u32, u64)> {
    let rules = parse_rules(&rules(pats), "t").unwrap();
    let got = chunked_with(&Matcher::new(&rules).unwrap(), stream, cuts);
    // The same with the two automata tabulated separately (a rule set whose product is too
    // large): the same hits in the same order.
    let separate = Matcher::with_product_limit(&rules, 1).unwrap();
    assert_eq!(separate.tables(), if pats.iter().any(|p| p.1) && pats.iter().any(|p| !p.1) { 2 } else { 1 });
    assert_eq!(chunked_with(&separate, stream, cuts), got);
    got
}

fn chunked_with(m: &Matcher, stream: &[u8], cuts: &[usize]) -> Vec<(u32, u64)> {
    let mut d = DirState::default();
    m.restart(&mut d, 0);
    // The same chunks stepped byte by byte (no prefilter): the same hits, in the same order,
    // chunk by chunk (so the states carried between chunks agree too).
    let mut bytewise = DirState::default();
    m.restart(&mut bytewise, 0);
    let mut hits = Vec::new();
    let mut reference = Vec::new();
    let mut at = 0;
    for &c in cuts.iter().chain(std::iter::once(&stream.len())) {
        let c = c.clamp(at, stream.len());
        let before = hits.len();
        m.scan(&mut d, &stream[at..c], &mut hits);
        m.scan_bytewise(&mut bytewise, &stream[at..c], &mut reference);
        assert_eq!(hits, reference, "chunk {at}..{c}");
        // Hits of one chunk come in end-offset order and end inside it.
        assert!(hits[before..].windows(2).all(|w| w[0].1 <= w[1].1));
        assert!(hits[before..].iter().all(|h| h.1 > at as u64 && h.1 <= c as u64));
        at = c;
    }
    assert_eq!(d.offset, stream.len() as u64);
    hits
}

fn distinct(pats: Vec<(Vec<u8>, bool)>) -> Vec<(Vec<u8>, bool)> {
    let mut seen = BTreeSet::new();
    pats.into_iter()
        .filter(|(p, nc)| seen.insert((if *nc { p.to_ascii_lowercase() } else { p.clone() }, *nc)))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn chunked_scan_equals_whole_stream_search(
        pats in prop::collection::vec((prop::collection::vec(prop::sample::select(b"abAB\r\n".to_vec()), 1..9), any::<bool>()), 1..6),
        stream in prop::collection::vec(prop::sample::select(b"abAB\r\nx".to_vec()), 0..300),
        mut cuts in prop::collection::vec(0usize..300, 0..40),
    ) {
        let pats = distinct(pats);
        cuts.sort_unstable();
        let got = chunked(&pats, &stream, &cuts);
        let set: BTreeSet<(u32, u64)> = got.iter().copied().collect();
        prop_assert_eq!(set.len(), got.len(), "a match reported twice");
        prop_assert_eq!(set, whole(&pats, &stream));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Long chunks of a small alphabet: the scan splits a long chunk into several chains (each
    /// but the first started `max_len - 1` bytes early), and dense, overlapping matches around the
    /// split must all come out, once, in end-offset order, with the right state carried on.
    #[test]
    fn long_chunks_split_into_chains_exactly(
        pats in prop::collection::vec((prop::collection::vec(prop::sample::select(b"abAB\r\n".to_vec()), 1..40), any::<bool>()), 1..6),
        stream in prop::collection::vec(prop::sample::select(b"abAB\r\nx".to_vec()), 300..3000),
        mut cuts in prop::collection::vec(0usize..3000, 0..4),
    ) {
        let pats = distinct(pats);
        cuts.sort_unstable();
        let got = chunked(&pats, &stream, &cuts);
        let set: BTreeSet<(u32, u64)> = got.iter().copied().collect();
        prop_assert_eq!(set.len(), got.len(), "a match reported twice");
        prop_assert_eq!(set, whole(&pats, &stream));
    }
}

#[test]
fn one_byte_chunks_and_long_patterns() {
    let pats = vec![(b"GET /admin".to_vec(), false), (b"admin".to_vec(), true), (b"n".to_vec(), false)];
    let stream = b"xxGET /adminGET /ADMIN".to_vec();
    let cuts: Vec<usize> = (1..stream.len()).collect();
    let got: BTreeSet<(u32, u64)> = chunked(&pats, &stream, &cuts).into_iter().collect();
    assert_eq!(got, whole(&pats, &stream));
    assert!(got.contains(&(0, 12)) && got.contains(&(1, 22)), "{got:?}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Wide alphabet, long streams, patterns planted sparsely (any byte value, patterns up to
    /// 11 bytes, cuts anywhere): a matcher that skips ahead (prefilters) must still find the
    /// matches that straddle a cut — a prefilter only sees matches that end inside the chunk
    /// it searches, which this test catches (it failed on such a version, issue 14's notes).
    #[test]
    fn prefilter_skips_never_lose_a_match(
        pats in prop::collection::vec((prop::collection::vec(any::<u8>(), 1..12), any::<bool>()), 1..8),
        filler in prop::collection::vec(any::<u8>(), 0..4000),
        plants in prop::collection::vec((0usize..4000, 0usize..8), 0..12),
        mut cuts in prop::collection::vec(0usize..4100, 0..30),
    ) {
        let pats = distinct(pats);
        let mut stream = filler;
        for (at, which) in plants {
            let p = &pats[which % pats.len()].0;
            let at = at.min(stream.len());
            stream.splice(at..at, p.iter().copied());
        }
        cuts.sort_unstable();
        let got = chunked(&pats, &stream, &cuts);
        let set: BTreeSet<(u32, u64)> = got.iter().copied().collect();
        prop_assert_eq!(set.len(), got.len(), "a match reported twice");
        prop_assert_eq!(set, whole(&pats, &stream));
    }
}

/// `p` with the ASCII case of some letters flipped (by the bits of `flips`).
fn recase(p: &[u8], flips: u64) -> Vec<u8> {
    p.iter()
        .enumerate()
        .map(|(i, &b)| if flips >> (i % 64) & 1 == 1 && b.is_ascii_alphabetic() { b ^ 0x20 } else { b })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// The skipping scan (issue 14): long chunks where the prefilter's places are sparse (a
    /// text of other bytes with patterns planted, `nocase` ones in random case), rarer or
    /// denser, or everywhere (a text of the patterns' own bytes, so the scan switches to
    /// stepping every byte mid-chunk), cut at random places, inside planted patterns (a
    /// pattern prefix pending at a chunk's end) and as a run of 1-byte chunks: every match of
    /// a whole-stream search, once, and hits equal to the bytewise scan's chunk by chunk
    /// (checked in `chunked_with`).
    #[test]
    fn skipping_scan_equals_whole_stream_search(
        pats in prop::collection::vec((prop::collection::vec(prop::sample::select(b"aAbB/\r\nc".to_vec()), 1..20), any::<bool>()), 1..7),
        density in 0u32..4,
        filler in prop::collection::vec(any::<u16>(), 0..6000),
        plants in prop::collection::vec((0usize..6000, 0usize..8, any::<u64>(), prop::option::of(0usize..20)), 0..24),
        mut cuts in prop::collection::vec(0usize..7000, 0..12),
        ones in (0usize..7000, 0usize..80),
    ) {
        let pats = distinct(pats);
        const SPARSE: &[u8] = b"defghijklmnopqrstuvwxyz DEFGH<>=\"0123456789";
        const DENSE: &[u8] = b"aAbB/\r\nc";
        // One byte in 2^16, 64, 8 or every byte from the patterns' alphabet.
        let below = [1u32, 1 << 10, 1 << 13, 1 << 16][density as usize];
        let mut stream: Vec<u8> = filler
            .iter()
            .map(|&x| if u32::from(x) < below { DENSE[usize::from(x) % DENSE.len()] } else { SPARSE[usize::from(x) % SPARSE.len()] })
            .collect();
        for (at, which, flips, cut) in plants {
            let (p, nocase) = &pats[which % pats.len()];
            let p = if *nocase { recase(p, flips) } else { p.clone() };
            let at = at.min(stream.len());
            if let Some(k) = cut {
                cuts.push(at + k % p.len());
            }
            stream.splice(at..at, p);
        }
        cuts.extend(ones.0..ones.0 + ones.1);
        cuts.sort_unstable();
        let m = Matcher::new(&parse_rules(&rules(&pats), "t").unwrap()).unwrap();
        prop_assert!(m.fingerprints() > 0, "these patterns have a prefilter");
        let got = chunked(&pats, &stream, &cuts);
        let set: BTreeSet<(u32, u64)> = got.iter().copied().collect();
        prop_assert_eq!(set.len(), got.len(), "a match reported twice");
        prop_assert_eq!(set, whole(&pats, &stream));
    }
}

#[test]
fn skipping_scan_of_http_with_the_example_rules() {
    // apps/ids.rules' contents (relative to the crate: the workspace's apps/).
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../apps/ids.rules")).unwrap();
    let rules = nfs::signature::rules::parse_rules(&text, "ids.rules").unwrap();
    let m = Matcher::new(&rules).unwrap();
    assert!(m.fingerprints() > 0);
    let mut stream = Vec::new();
    for i in 0..200 {
        stream
            .extend_from_slice(format!("GET /static/{i}/index.html HTTP/1.1\r\nHost: example.com\r\n\r\n").as_bytes());
        stream.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n<html>select a union</html>");
        if i % 7 == 0 {
            stream.extend_from_slice(b"GET /cgi/../etc/passwd?q=UNION+SeLeCt HTTP/1.1\r\n\r\nroot@host# ");
        }
    }
    for chunk in [1usize, 63, 64, 100, 1460, 4096, 1 << 20] {
        let cuts: Vec<usize> = (chunk..stream.len()).step_by(chunk).collect();
        let mut d = DirState::default();
        let mut b = DirState::default();
        m.restart(&mut d, 0);
        m.restart(&mut b, 0);
        let (mut got, mut want) = (Vec::new(), Vec::new());
        let mut at = 0;
        for &c in cuts.iter().chain(std::iter::once(&stream.len())) {
            m.scan(&mut d, &stream[at..c], &mut got);
            m.scan_bytewise(&mut b, &stream[at..c], &mut want);
            at = c;
        }
        assert_eq!(got, want, "chunks of {chunk}");
        assert!(got.len() > 500, "{}", got.len());
    }
}

#[test]
fn a_short_pattern_at_a_chunk_end_does_not_hide_a_pending_long_one() {
    // "ab" pending at the end of a long chunk; "b" (a one-byte fingerprint) starts a run at
    // the last byte, which alone would carry the state of "b", not of "ab".
    let pats = vec![(b"b".to_vec(), false), (b"abcd".to_vec(), false), (b"ABCDE".to_vec(), true)];
    let mut stream = vec![b'x'; 100];
    stream.extend_from_slice(b"abcde");
    stream.extend_from_slice(&[b'x'; 100]);
    for cut in 100..=105 {
        let got: BTreeSet<(u32, u64)> = chunked(&pats, &stream, &[cut]).into_iter().collect();
        assert_eq!(got, whole(&pats, &stream), "cut at {cut}");
        assert!(got.contains(&(1, 104)) && got.contains(&(2, 105)));
    }
}
