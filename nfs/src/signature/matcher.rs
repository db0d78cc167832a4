//! The signature matcher's pure part: a rule set's contents compiled into Aho-Corasick DFAs
//! ([`Matcher`]), the scan state of one flow direction ([`DirState`]), and the check of a
//! rule's content chain against the pattern matches remembered — no I/O, no events.
//!
//! Every rule's contents go into two DFAs (case-sensitive, and ASCII-case-insensitive for
//! `nocase` contents); equal patterns are one global pattern id. The two are tabulated as one
//! product automaton (module `dfa`; two tables when the product would be too large).
//! [`Matcher::scan`] carries the automaton's state between chunks in [`DirState`], so a
//! pattern split over any number of chunks is found at its absolute end offset. Within a
//! chunk it **skips ahead**: a SIMD prefilter (module `prefilter`: the packed Teddy searcher
//! over the patterns' first three bytes, case variants spelled out) finds where a pattern can
//! start, and the automaton is stepped only from there, as far as a pattern starting there
//! can reach, plus over the chunk's first and last `max_len` bytes for the carried state
//! (exact: see `scan_skipping`). Where such places are dense, or the rule set has no
//! prefilter, every byte is stepped ([`Matcher::scan_bytewise`]; a long chunk as independent
//! chains that overlap in the CPU, see `scan_split`). Both report the same hits in the same
//! order. A [`Hit`] is (global pattern id, absolute end offset).
//!
//! Invariants: every pattern id in a hit is below the number of patterns; a hit's end offset
//! is at least its pattern's length.

use std::collections::HashMap;

use aho_corasick::dfa::DFA;
use aho_corasick::MatchKind;

use super::dfa::{Source, Table, MAX_PRODUCT_STATES};
use super::prefilter::Prefilter;
use super::rules::Rule;

/// A pattern match: (global pattern id, absolute end offset in its direction).
pub type Hit = (u32, u64);

/// One direction of a flow, between chunks.
#[derive(Clone, Debug, Default)]
pub struct DirState {
    /// The scan has (re)started: `states` and `offset` are meaningful.
    pub started: bool,
    /// Absolute offset of the next byte.
    pub offset: u64,
    /// The state of each of the matcher's tables (one, or two when the product was too
    /// large).
    states: [u32; 2],
    /// Pattern matches remembered, in scan order.
    pub positions: Vec<Hit>,
}

/// A rule set's contents compiled: the automata, and per rule content the global pattern id.
pub struct Matcher {
    rules: Vec<Rule>,
    /// The scan automaton: one product table, or one table per DFA.
    tables: Vec<Table>,
    /// Per rule, per content: global pattern id.
    rule_pats: Vec<Vec<u32>>,
    /// Per global pattern: (length, rules using it).
    pats: Vec<(u64, Vec<u32>)>,
    /// Rules without content.
    bare: Vec<u32>,
    /// The tables' start states.
    starts: [u32; 2],
    /// The longest pattern's length (at least 1).
    max_len: usize,
    /// Where patterns can start (see [`Matcher::scan`]); `None` when there would be too
    /// many fingerprints.
    prefilter: Option<Prefilter>,
}

impl Matcher {
    /// Compiles the contents of `rules` (rule `i` of the slice is rule `i` everywhere here).
    pub fn new(rules: &[Rule]) -> Result<Matcher, String> {
        Matcher::with_product_limit(rules, MAX_PRODUCT_STATES)
    }

    /// As [`Matcher::new`], with the product automaton limited to `max_states` states (beyond
    /// it, one table per DFA, stepped side by side): lets tests cover both layouts.
    pub fn with_product_limit(rules: &[Rule], max_states: usize) -> Result<Matcher, String> {
        let mut ids: HashMap<(bool, Vec<u8>), u32> = HashMap::new();
        let mut lists: [Vec<Vec<u8>>; 2] = [Vec::new(), Vec::new()];
        let mut globals: [Vec<u32>; 2] = [Vec::new(), Vec::new()];
        let mut pats: Vec<(u64, Vec<u32>)> = Vec::new();
        let mut rule_pats = Vec::new();
        let mut bare = Vec::new();
        for (ri, r) in rules.iter().enumerate() {
            let mut v = Vec::new();
            for c in &r.contents {
                let key = (c.nocase, if c.nocase { c.bytes.to_ascii_lowercase() } else { c.bytes.clone() });
                let id = match ids.get(&key) {
                    Some(id) => *id,
                    None => {
                        let id = pats.len() as u32;
                        pats.push((key.1.len() as u64, Vec::new()));
                        lists[usize::from(key.0)].push(key.1.clone());
                        globals[usize::from(key.0)].push(id);
                        ids.insert(key, id);
                        id
                    }
                };
                if !pats[id as usize].1.contains(&(ri as u32)) {
                    pats[id as usize].1.push(ri as u32);
                }
                v.push(id);
            }
            if v.is_empty() {
                bare.push(ri as u32);
            }
            rule_pats.push(v);
        }
        let mut dfas = Vec::new();
        for (nocase, (list, global)) in lists.into_iter().zip(globals).enumerate() {
            if list.is_empty() {
                continue;
            }
            let dfa = DFA::builder()
                .match_kind(MatchKind::Standard)
                .ascii_case_insensitive(nocase == 1)
                .build(&list)
                .map_err(|e| format!("building the pattern automaton: {e}"))?;
            let mut bytes = [false; 256];
            for &b in list.iter().flatten() {
                bytes[usize::from(b)] = true;
                if nocase == 1 {
                    bytes[usize::from(b.to_ascii_uppercase())] = true;
                }
            }
            dfas.push((dfa, global, bytes));
        }
        let sources: Vec<Source<'_>> =
            dfas.iter().map(|(dfa, global, bytes)| Source { dfa, global, bytes }).collect();
        let tables = match Table::product(&sources, max_states)? {
            Some(t) => vec![t],
            None => sources
                .iter()
                .map(|s| Table::product(std::slice::from_ref(s), usize::MAX).map(|t| t.expect("no state limit")))
                .collect::<Result<Vec<_>, _>>()?,
        };
        let mut starts = [0; 2];
        for (s, t) in starts.iter_mut().zip(&tables) {
            *s = t.start;
        }
        let max_len = pats.iter().map(|p| p.0 as usize).max().unwrap_or(1).max(1);
        let mut keys: Vec<(&(bool, Vec<u8>), &u32)> = ids.iter().collect();
        keys.sort_unstable_by_key(|k| *k.1);
        let prefilter = Prefilter::new(&keys.iter().map(|(k, _)| (k.1.as_slice(), k.0)).collect::<Vec<_>>());
        Ok(Matcher { rules: rules.to_vec(), tables, rule_pats, pats, bare, starts, max_len, prefilter })
    }

    /// How many tables the scan steps: 1 (the product) or 2 (one per DFA).
    pub fn tables(&self) -> usize {
        self.tables.len()
    }

    /// The rules, in the order given to [`Matcher::new`].
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// (Re)starts a direction's scan at absolute stream offset `offset`: the automata go
    /// back to their start states (a pattern cannot span the jump).
    pub fn restart(&self, d: &mut DirState, offset: u64) {
        d.started = true;
        d.states = self.starts;
        d.offset = offset;
    }

    /// A stream gap of `len` bytes (never received): the automata restart after it, so no
    /// pattern matches across a gap; the offset moves over it. O(1) whatever `len`.
    pub fn gap(&self, d: &mut DirState, len: u64) {
        self.restart(d, d.offset.saturating_add(len));
    }

    /// Steps the automata over `bytes`, the next bytes of `d`'s direction, appending each
    /// pattern match to `hits` at its absolute end offset (in end-offset order; matches with
    /// the same end in the automaton's order). When the rule set has a prefilter and the
    /// chunk is long enough, the automaton runs only near the places where a pattern can
    /// start (see [`Matcher::scan_skipping`]); the hits and the state carried on are exactly
    /// those of [`Matcher::scan_bytewise`].
    pub fn scan(&self, d: &mut DirState, bytes: &[u8], hits: &mut Vec<Hit>) {
        match &self.prefilter {
            Some(pf) if bytes.len() >= SKIP_MIN && !self.tables.is_empty() => {
                d.states = self.scan_skipping(pf, d.states, d.offset, bytes, hits)
            }
            _ => d.states = self.scan_from(d.states, d.offset, bytes, hits),
        }
        d.offset += bytes.len() as u64;
    }

    /// As [`Matcher::scan`], stepping the automata over every byte (no prefilter): the
    /// reference the skipping scan is tested and benchmarked against.
    pub fn scan_bytewise(&self, d: &mut DirState, bytes: &[u8], hits: &mut Vec<Hit>) {
        d.states = self.scan_from(d.states, d.offset, bytes, hits);
        d.offset += bytes.len() as u64;
    }

    /// How many fingerprints the prefilter looks for; 0 when the rule set has none (more
    /// than 64 fingerprints, or a CPU without the packed searcher) and every byte is stepped.
    pub fn fingerprints(&self) -> usize {
        self.prefilter.as_ref().map_or(0, Prefilter::len)
    }

    /// Every byte stepped from states `st`, the first byte at absolute offset `offset`;
    /// returns the states after the last byte.
    fn scan_from(&self, mut st: [u32; 2], offset: u64, bytes: &[u8], hits: &mut Vec<Hit>) -> [u32; 2] {
        match self.tables.as_slice() {
            [] => {}
            [t] if bytes.len() >= CHAINS * self.max_len + SPLIT_MIN => {
                st[0] = scan_split(t, st[0], offset, bytes, self.max_len, hits)
            }
            _ => self.run(&mut st, offset, bytes, hits),
        }
        st
    }

    /// One chain over `bytes` from states `st` (updated), reporting every match.
    #[inline]
    fn run(&self, st: &mut [u32; 2], offset: u64, bytes: &[u8], hits: &mut Vec<Hit>) {
        match self.tables.as_slice() {
            [] => {}
            [t] => st[0] = scan_one(t, st[0], offset, bytes, hits),
            tables => {
                // Two tables (the product was too large): step both per byte, plain first.
                for (off, &b) in (offset + 1..).zip(bytes) {
                    for (t, s) in tables.iter().zip(st.iter_mut()) {
                        *s = t.trans[(*s + u32::from(t.classes[usize::from(b)])) as usize];
                        if *s < t.match_limit {
                            hits.extend(t.matches(*s).iter().map(|&p| (p, off)));
                        }
                    }
                }
            }
        }
    }

    /// The states after stepping `bytes` from the start states, matches not reported.
    fn warm(&self, bytes: &[u8]) -> [u32; 2] {
        let mut st = self.starts;
        for (t, s) in self.tables.iter().zip(st.iter_mut()) {
            for &b in bytes {
                *s = t.trans[(*s + u32::from(t.classes[usize::from(b)])) as usize];
            }
        }
        st
    }

    /// The skipping scan of one chunk (`L` = the longest pattern's length, `n` = the chunk's):
    ///
    /// 1. The first *run* steps the carried states over the chunk's first `min(n, L)` bytes,
    ///    reporting everything: every match that began in an earlier chunk ends there.
    /// 2. The prefilter gives, left to right, each place `c` where a pattern can start, with
    ///    its reach `r` (no pattern starting at `c` is longer). If `c` lies inside the
    ///    current run, the run is stepped on to `c + r`; otherwise a new run starts at `c`
    ///    from the start states and is stepped to `c + r`. Bytes outside runs are never
    ///    stepped.
    /// 3. The states after the chunk: the last run's when it reached the end having read the
    ///    chunk's last `L` bytes (or started from the carried states), else the start states
    ///    stepped over the last `L` bytes (an Aho-Corasick state is the longest suffix of
    ///    the input that is a pattern prefix, at most `L` long).
    ///
    /// Exact: a run reports the matches that end inside it and start at or after its first
    /// byte (the first run: all that end inside it). Every match starts at a place the
    /// prefilter reports, whose run is stepped at least to the match's end, so it is
    /// reported, once, as runs do not overlap; runs are in order and report in end order,
    /// and a match state's pattern list depends only on which patterns end there, so hits
    /// come out in the order of [`Matcher::scan_bytewise`]. When places come denser than
    /// one per [`DENSE`] bytes, stepping every byte is cheaper: the next [`DENSE_WINDOW`]
    /// bytes are stepped so, from the stream's states at that point (a run's, once it has
    /// read `L` bytes, else warmed up on the `L` bytes before; every match ending up to there
    /// has been reported, none after), and that exact state then goes on as the first run's
    /// does, over places in the window's last `L - 1` bytes first.
    fn scan_skipping(&self, pf: &Prefilter, carried: [u32; 2], offset: u64, bytes: &[u8], hits: &mut Vec<Hit>) -> [u32; 2] {
        let (n, l) = (bytes.len(), self.max_len);
        let mut st = carried;
        let mut pos = l.min(n);
        self.run(&mut st, offset, &bytes[..pos], hits);
        // `st` is the stream's own state at `pos` (the first run, or after stepping every
        // byte), not a run's from the start states at `run_start`.
        let mut exact = true;
        let mut run_start = 0;
        let mut from = 0;
        // Places found since `counted_from`.
        let (mut found, mut counted_from) = (0usize, 0usize);
        while pos < n {
            let Some((c, reach)) = pf.next(bytes, from, n) else { break };
            found += 1;
            if c >= pos {
                if found > DENSE_MIN && found * DENSE > c - counted_from {
                    // Dense: step every byte of the next window, from the stream's state at
                    // `pos` (a run's state is it once the run has read `l` bytes).
                    if !exact && run_start + l > pos {
                        st = self.warm(&bytes[pos - l..pos]);
                    }
                    let end = (pos + DENSE_WINDOW).min(n);
                    st = self.scan_from(st, offset + pos as u64, &bytes[pos..end], hits);
                    (pos, exact) = (end, true);
                    // Places in the window's last `l - 1` bytes may begin matches that end
                    // after it: the exact run goes on over them.
                    from = pos + 1 - l;
                    (found, counted_from) = (0, pos);
                    continue;
                }
                (st, exact, run_start, pos) = (self.starts, false, c, c);
            }
            let end = (c + reach).min(n);
            if end > pos {
                self.run(&mut st, offset + pos as u64, &bytes[pos..end], hits);
                pos = end;
            }
            from = c + 1;
        }
        if pos == n && (exact || run_start + l <= n) {
            st
        } else {
            self.warm(&bytes[n - l..])
        }
    }

    /// The rules that `hits` may complete — those using a pattern matched there, and, when
    /// the event brought data, those without content — sorted, each once.
    pub fn candidates(&self, hits: &[Hit], had_data: bool) -> Vec<u32> {
        let mut cands: Vec<u32> = Vec::new();
        for (p, _) in hits {
            cands.extend_from_slice(&self.pats[*p as usize].1);
        }
        if had_data {
            cands.extend_from_slice(&self.bare);
        }
        cands.sort_unstable();
        cands.dedup();
        cands
    }

    /// True when rule `ri`'s content chain is satisfied by the remembered `positions` (its
    /// header is not checked here: see [`Rule::header_matches`]).
    pub fn chain_ok(&self, ri: u32, positions: &[Hit]) -> bool {
        let ri = ri as usize;
        chain_ok(&self.rules[ri], &self.rule_pats[ri], &self.pats, positions)
    }
}

/// Chunks shorter than this are scanned byte by byte even with a prefilter.
const SKIP_MIN: usize = 64;

/// Places found before the density check applies.
const DENSE_MIN: usize = 8;

/// Where places where a pattern can start come more often than once per this many bytes,
/// the scan steps every byte of the next [`DENSE_WINDOW`] bytes.
const DENSE: usize = 32;

/// Bytes stepped one by one when places come dense, before the prefilter is tried again.
const DENSE_WINDOW: usize = 4096;

/// Chunks shorter than this (plus [`CHAINS`] times the longest pattern) are scanned in one
/// chain.
const SPLIT_MIN: usize = 256;

/// Independent chains a long chunk is scanned as (see [`scan_split`]).
const CHAINS: usize = 3;

/// As [`scan_one`], as [`CHAINS`] independent chains whose loads overlap in the CPU (the step
/// is latency-bound): the chunk is cut into that many parts; the first is stepped from `s`,
/// each other one from the start state `max_len - 1` bytes before it, reporting only matches
/// that end inside its own part. Exact: a match ending in a part starts at most
/// `max_len - 1` bytes before the part, so that part's chain read all of it; and the state
/// after the last byte (the longest suffix of the input that is a pattern prefix, at most
/// `max_len` long) lies within the bytes the last chain read. Hits are put in end-offset
/// order afterwards (a stable sort of this call's hits, which are few). `bytes` is at least
/// `CHAINS * max_len` long.
fn scan_split(t: &Table, s: u32, offset: u64, bytes: &[u8], max_len: usize, hits: &mut Vec<Hit>) -> u32 {
    let (trans, classes, limit) = (t.trans.as_slice(), &t.classes, t.match_limit);
    let step = |st: u32, x: u8| trans[(st + u32::from(classes[usize::from(x)])) as usize];
    let part = bytes.len() / CHAINS;
    let mut st = [t.start; CHAINS];
    st[0] = s;
    // Warm the later chains up on the bytes before their parts; matches there are not theirs.
    for (k, state) in st.iter_mut().enumerate().skip(1) {
        for &x in &bytes[k * part + 1 - max_len..k * part] {
            *state = step(*state, x);
        }
    }
    let before = hits.len();
    for i in 0..part {
        for (k, state) in st.iter_mut().enumerate() {
            *state = step(*state, bytes[k * part + i]);
        }
        for (k, &state) in st.iter().enumerate() {
            if state < limit {
                let end = offset + (k * part + i) as u64 + 1;
                hits.extend(t.matches(state).iter().map(|&p| (p, end)));
            }
        }
    }
    // The last part also takes the bytes left over by the division.
    let last = scan_one(t, st[CHAINS - 1], offset + (CHAINS * part) as u64, &bytes[CHAINS * part..], hits);
    if hits.len() > before + 1 {
        hits[before..].sort_by_key(|h| h.1);
    }
    last
}

/// Steps table `t` from state `s` over `bytes` (the first at absolute offset `offset`),
/// appending matches to `hits`; returns the state after the last byte. The hot loop: one
/// class lookup (independent of the state), one dependent load, one comparison per byte.
#[inline]
fn scan_one(t: &Table, mut s: u32, offset: u64, bytes: &[u8], hits: &mut Vec<Hit>) -> u32 {
    let (trans, classes, limit) = (t.trans.as_slice(), &t.classes, t.match_limit);
    for (i, &b) in bytes.iter().enumerate() {
        s = trans[(s + u32::from(classes[usize::from(b)])) as usize];
        if s < limit {
            let end = offset + i as u64 + 1;
            hits.extend(t.matches(s).iter().map(|&p| (p, end)));
        }
    }
    s
}

/// True when the rule's content chain is satisfied by the remembered positions.
fn chain_ok(rule: &Rule, pats: &[u32], plen: &[(u64, Vec<u32>)], positions: &[Hit]) -> bool {
    let mut prev: Vec<u64> = vec![0];
    for (c, &pid) in rule.contents.iter().zip(pats) {
        let len = plen[pid as usize].0;
        let mut ends: Vec<u64> = positions.iter().filter(|(p, _)| *p == pid).map(|(_, e)| *e).collect();
        ends.sort_unstable();
        ends.dedup();
        let mut next = Vec::new();
        for e in ends {
            let s = e - len;
            if let Some(o) = c.offset {
                if s < o {
                    continue;
                }
            }
            if let Some(d) = c.depth {
                if e > c.offset.unwrap_or(0).saturating_add(d) {
                    continue;
                }
            }
            if c.is_relative() {
                let dist = i128::from(c.distance.unwrap_or(0));
                let hi = i128::from(s) - dist;
                let lo = c.within.map(|w| i128::from(e) - dist - i128::from(w)).unwrap_or(i128::MIN);
                let i = prev.partition_point(|&p| i128::from(p) < lo);
                if prev.get(i).is_none_or(|&p| i128::from(p) > hi) {
                    continue;
                }
            } else if prev.is_empty() {
                continue;
            }
            next.push(e);
        }
        if next.is_empty() {
            return false;
        }
        prev = next;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hits(rules: &str, chunks: &[&[u8]]) -> Vec<(u32, u64)> {
        let rules = crate::rules::parse_rules(rules, "t").unwrap();
        let m = Matcher::new(&rules).unwrap();
        let mut d = DirState::default();
        m.restart(&mut d, 0);
        let mut h = Vec::new();
        for c in chunks {
            m.scan(&mut d, c, &mut h);
        }
        h.sort_unstable();
        h
    }

    #[test]
    fn overlapping_and_suffix_patterns_all_match_across_chunks() {
        let r = "alert tcp any any -> any any (content:\"abc\"; sid:1;)\n\
                 alert tcp any any -> any any (content:\"bc\"; sid:2;)\n\
                 alert tcp any any -> any any (content:\"BC\"; nocase; sid:3;)\n\
                 alert tcp any any -> any any (content:\"abc\"; content:\"bc\"; sid:4;)\n";
        // patterns: 0 = "abc", 1 = "bc", 2 = "bc" nocase
        assert_eq!(hits(r, &[b"xa", b"b", b"cbC"]), vec![(0, 4), (1, 4), (2, 4), (2, 6)]);
    }

    #[test]
    fn chains_follow_distance_and_within() {
        let rules = crate::rules::parse_rules(
            "alert tcp any any -> any any (content:\"ab\"; offset:1; depth:4; content:\"cd\"; distance:2; within:3; sid:1;)\n",
            "t",
        )
        .unwrap();
        let m = Matcher::new(&rules).unwrap();
        let ok = |pos: &[(u32, u64)]| m.chain_ok(0, pos);
        // "ab" at [1,3); "cd" must start at >= 5 and end at <= 3 + 2 + 3 = 8.
        assert!(ok(&[(0, 3), (1, 7)]));
        assert!(ok(&[(0, 3), (1, 8)]));
        assert!(!ok(&[(0, 3), (1, 9)]), "outside within");
        assert!(!ok(&[(0, 3), (1, 6)]), "inside distance");
        assert!(!ok(&[(0, 2), (1, 6)]), "before offset");
        assert!(!ok(&[(0, 6), (1, 10)]), "past depth");
        assert!(ok(&[(0, 2), (0, 3), (0, 6), (1, 10), (1, 7)]), "any combination will do");
    }

    #[test]
    fn a_rule_fires_across_chunks_and_nocase_ignores_case() {
        let rules = crate::rules::parse_rules(
            "alert tcp any any -> any any (content:\"GET \"; depth:4; content:\"ADMIN\"; nocase; distance:0; sid:1;)\n\
             alert tcp any any -> any any (content:\"ADMIN\"; sid:2;)\n\
             alert tcp any any -> any any (msg:\"bare\"; sid:3;)\n",
            "t",
        )
        .unwrap();
        let m = Matcher::new(&rules).unwrap();
        let mut d = DirState::default();
        m.restart(&mut d, 0);
        let mut hits = Vec::new();
        m.scan(&mut d, b"GE", &mut hits);
        assert!(hits.is_empty());
        assert_eq!(m.candidates(&hits, true), vec![2], "only the rule without content");
        m.scan(&mut d, b"T /ad", &mut hits);
        m.scan(&mut d, b"Min", &mut hits);
        assert_eq!(d.offset, 10);
        d.positions.extend_from_slice(&hits);
        assert_eq!(m.candidates(&hits, false), vec![0], "`ADMIN` without nocase did not match `adMin`");
        assert!(m.chain_ok(0, &d.positions));
        // A restart at a jump forgets the automata's states: a pattern cannot span it.
        let mut late = Vec::new();
        m.restart(&mut d, 100);
        m.scan(&mut d, b"ADM", &mut late);
        m.restart(&mut d, 200);
        m.scan(&mut d, b"IN ADMIN", &mut late);
        late.sort_unstable();
        assert_eq!(late, vec![(1, 208), (2, 208)]);
        assert_eq!(m.rules().len(), 3);
    }
}
