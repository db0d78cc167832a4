//! The matcher's skip-ahead: where in a chunk a pattern can start, found with the
//! aho-corasick crate's packed SIMD searcher (Teddy: SSSE3/AVX2 on x86-64, NEON on aarch64)
//! over the patterns' first bytes, so that [`super::matcher::Matcher::scan`] steps its
//! automaton only near those places instead of over every byte.
//!
//! **Fingerprints.** Each pattern contributes its first `k` bytes (all of it when shorter),
//! and a `nocase` pattern every ASCII-case variant of them; equal fingerprints are one. `k`
//! is the largest of 3, 2, 1 for which there are at most [`MAX_FINGERPRINTS`] fingerprints
//! (Teddy's limit) and the searcher accepts them (with one-byte fingerprints, at most 16):
//! selectivity pays more than Teddy's faster 8-bucket form (up to 32 fingerprints) — two-byte
//! fingerprints left the scan no faster than stepping every byte on HTTP-like text, three-byte
//! ones made it 3–5 times faster (docs/benchmarks.md). When none is accepted there is no
//! prefilter and the matcher steps every byte. Every occurrence of a
//! pattern starting at `c` is an occurrence of one of its fingerprints at `c`, so the
//! positions found are a superset of the pattern starts (the automaton decides the rest).
//!
//! **Reach.** Each fingerprint carries the longest length of a pattern whose fingerprint it
//! is *or shares a prefix with* (a fingerprint of a short pattern is a prefix of longer
//! ones): whichever of the fingerprints occurring at `c` the searcher reports, its reach
//! covers every pattern that can start at `c`.
//!
//! Why the packed searcher and not the crate's `AhoCorasick` prefilter: that one is chosen
//! for leftmost searches of whole patterns and gives up on HTTP (the first bytes of the
//! patterns are everywhere there, docs/benchmarks.md "Signature matching"); fingerprints of
//! three bytes, case variants spelled out, are rare in HTTP and the packed searcher
//! finds them at several GB/s. It is used through its public API only (leftmost-first
//! search from a position), which reports the leftmost occurrence — the scan relies on that
//! order and `nfs/tests/matcher_chunks.rs` checks the whole scheme against a whole-stream
//! search.

use aho_corasick::packed::{Config, MatchKind, Searcher};
use aho_corasick::Span;

/// Most fingerprints: the packed searcher's own limit.
const MAX_FINGERPRINTS: usize = 64;

/// Longest fingerprint (Teddy compares up to four bytes per position; four-byte ones, with
/// their more case variants, measured slower than three-byte ones on HTTP).
const MAX_K: usize = 3;

/// The searcher over the fingerprints, and each fingerprint's reach.
#[derive(Clone, Debug)]
pub struct Prefilter {
    searcher: Searcher,
    /// Per fingerprint (the searcher's pattern id): bytes from its start that a pattern
    /// starting there can span.
    reach: Vec<usize>,
}

impl Prefilter {
    /// The prefilter for `pats` (`(bytes, nocase)`, `nocase` ones already lowercase), or
    /// `None` when there would be too many fingerprints or the CPU has no packed searcher.
    pub fn new(pats: &[(&[u8], bool)]) -> Option<Prefilter> {
        if pats.is_empty() || pats.iter().any(|(p, _)| p.is_empty()) {
            return None;
        }
        let sets: Vec<Vec<(Vec<u8>, usize)>> = (1..=MAX_K).rev().map(|k| fingerprints(pats, k)).collect();
        for set in sets.iter().filter(|s| s.len() <= MAX_FINGERPRINTS) {
            let built =
                Config::new().match_kind(MatchKind::LeftmostFirst).builder().extend(set.iter().map(|f| &f.0)).build();
            if let Some(searcher) = built {
                return Some(Prefilter { searcher, reach: set.iter().map(|f| f.1).collect() });
            }
        }
        None
    }

    /// The leftmost place at or after `from` where a fingerprint lies wholly inside
    /// `hay[..end]`: (its start, its reach).
    #[inline]
    pub fn next(&self, hay: &[u8], from: usize, end: usize) -> Option<(usize, usize)> {
        if from >= end {
            return None;
        }
        let m = self.searcher.find_in(&hay[..end], Span { start: from, end })?;
        Some((m.start(), self.reach[m.pattern().as_usize()]))
    }

    /// How many fingerprints the searcher looks for.
    pub fn len(&self) -> usize {
        self.reach.len()
    }
}

/// The distinct fingerprints of length at most `k` (case variants of `nocase` ones spelled
/// out) with their reach (see the module docs).
fn fingerprints(pats: &[(&[u8], bool)], k: usize) -> Vec<(Vec<u8>, usize)> {
    let mut out: Vec<(Vec<u8>, usize)> = Vec::new();
    for &(p, nocase) in pats {
        let head = &p[..k.min(p.len())];
        let mut variants = vec![head.to_vec()];
        if nocase {
            for (i, &b) in head.iter().enumerate() {
                if b.is_ascii_alphabetic() {
                    let more: Vec<Vec<u8>> = variants
                        .iter()
                        .map(|v| {
                            let mut v = v.clone();
                            v[i] = b.to_ascii_uppercase();
                            v
                        })
                        .collect();
                    variants.extend(more);
                }
            }
        }
        for v in variants {
            match out.iter_mut().find(|f| f.0 == v) {
                Some(f) => f.1 = f.1.max(p.len()),
                None => out.push((v, p.len())),
            }
        }
        if out.len() > MAX_FINGERPRINTS {
            break;
        }
    }
    // A fingerprint that is a prefix of another occurs wherever that one does: both reach
    // as far as the longer of the two.
    let reach: Vec<usize> = out
        .iter()
        .map(|(f, r)| {
            out.iter().filter(|(g, _)| g.starts_with(f) || f.starts_with(g)).map(|(_, s)| *s).max().unwrap_or(*r)
        })
        .collect();
    for (f, r) in out.iter_mut().zip(reach) {
        f.1 = r;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_spell_out_case_and_share_reach() {
        let f = fingerprints(&[(b"get", true), (b"/admin", false), (b"/a", false)], 4);
        let names: Vec<&[u8]> = f.iter().map(|x| x.0.as_slice()).collect();
        assert_eq!(names.len(), 10, "{names:?}");
        assert!(names.contains(&&b"gEt"[..]) && names.contains(&&b"/adm"[..]) && names.contains(&&b"/a"[..]));
        let reach = |n: &[u8]| f.iter().find(|x| x.0 == n).unwrap().1;
        assert_eq!(reach(b"GET"), 3);
        assert_eq!(reach(b"/a"), 6, "the short fingerprint reaches as far as the long one it prefixes");
        assert_eq!(reach(b"/adm"), 6);
    }

    #[test]
    fn too_many_fingerprints_shorten_them_or_give_up() {
        let many: Vec<Vec<u8>> = (0..40u8).map(|i| vec![b'a', i, b'x', b'y']).collect();
        let pats: Vec<(&[u8], bool)> = many.iter().map(|p| (p.as_slice(), false)).collect();
        if let Some(p) = Prefilter::new(&pats) {
            assert_eq!(p.len(), 40, "at most 64: three bytes kept");
        }
        let nocase: Vec<Vec<u8>> = (0..20u8).map(|i| vec![b'a', b'b', i]).collect();
        let pats: Vec<(&[u8], bool)> = nocase.iter().map(|p| (p.as_slice(), true)).collect();
        if let Some(p) = Prefilter::new(&pats) {
            assert_eq!(p.len(), 4, "80 three-byte case variants: cut to the four of `ab`");
        }
        let all: Vec<Vec<u8>> = (0..=255u8).map(|i| vec![i, 1]).collect();
        let pats: Vec<(&[u8], bool)> = all.iter().map(|p| (p.as_slice(), false)).collect();
        assert!(Prefilter::new(&pats).is_none(), "256 distinct first bytes: no prefilter");
    }

    #[test]
    fn next_finds_the_leftmost_fingerprint_inside_the_end() {
        let Some(p) = Prefilter::new(&[(b"union", true), (b"/etc/passwd", false)]) else {
            return; // no packed searcher on this CPU
        };
        let hay = b"xx/etc/passwd and UnIoN all";
        assert_eq!(p.next(hay, 0, hay.len()), Some((2, 11)));
        assert_eq!(p.next(hay, 3, hay.len()), Some((18, 5)));
        assert_eq!(p.next(hay, 3, 21), Some((18, 5)));
        assert_eq!(p.next(hay, 3, 20), None, "a fingerprint cut by the end is not reported");
        assert_eq!(p.next(hay, 19, hay.len()), None);
    }
}
