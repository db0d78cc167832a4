//! The signature matcher's pure part: a rule set's contents compiled into Aho-Corasick DFAs
//! ([`Matcher`]), the scan state of one flow direction ([`DirState`]), and the check of a
//! rule's content chain against the pattern matches remembered — no I/O, no events.
//!
//! Every rule's contents go into two DFAs (case-sensitive, and ASCII-case-insensitive for
//! `nocase` contents); equal patterns are one global pattern id. [`Matcher::scan`] steps the
//! DFAs one byte at a time from the states kept in [`DirState`], so a pattern split over any
//! number of chunks is found at its absolute end offset. A [`Hit`] is (global pattern id,
//! absolute end offset).
//!
//! Invariants: every pattern id in a hit is below the number of patterns; a hit's end offset
//! is at least its pattern's length.

use std::collections::HashMap;

use aho_corasick::automaton::{Automaton, StateID};
use aho_corasick::dfa::DFA;
use aho_corasick::{Anchored, MatchKind};

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
    states: Vec<StateID>,
    /// Pattern matches remembered, in scan order.
    pub positions: Vec<Hit>,
}

/// One automaton and the global pattern ids of its patterns.
struct Ac {
    dfa: DFA,
    global: Vec<u32>,
}

/// A rule set's contents compiled: the automata, and per rule content the global pattern id.
pub struct Matcher {
    rules: Vec<Rule>,
    acs: Vec<Ac>,
    /// Per rule, per content: global pattern id.
    rule_pats: Vec<Vec<u32>>,
    /// Per global pattern: (length, rules using it).
    pats: Vec<(u64, Vec<u32>)>,
    /// Rules without content.
    bare: Vec<u32>,
    /// The automata's unanchored start states.
    starts: Vec<StateID>,
}

impl Matcher {
    /// Compiles the contents of `rules` (rule `i` of the slice is rule `i` everywhere here).
    pub fn new(rules: &[Rule]) -> Result<Matcher, String> {
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
        let mut acs = Vec::new();
        for (nocase, (list, global)) in lists.into_iter().zip(globals).enumerate() {
            if list.is_empty() {
                continue;
            }
            let dfa = DFA::builder()
                .match_kind(MatchKind::Standard)
                .ascii_case_insensitive(nocase == 1)
                .build(&list)
                .map_err(|e| format!("building the pattern automaton: {e}"))?;
            acs.push(Ac { dfa, global });
        }
        let starts = acs
            .iter()
            .map(|a| a.dfa.start_state(Anchored::No))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("pattern automaton without an unanchored start: {e}"))?;
        Ok(Matcher { rules: rules.to_vec(), acs, rule_pats, pats, bare, starts })
    }

    /// The rules, in the order given to [`Matcher::new`].
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// (Re)starts a direction's scan at absolute stream offset `offset`: the automata go
    /// back to their start states (a pattern cannot span the jump).
    pub fn restart(&self, d: &mut DirState, offset: u64) {
        d.started = true;
        d.states.clone_from(&self.starts);
        d.offset = offset;
    }

    /// A stream gap of `len` bytes (never received): the automata restart after it, so no
    /// pattern matches across a gap; the offset moves over it. O(1) whatever `len`.
    pub fn gap(&self, d: &mut DirState, len: u64) {
        self.restart(d, d.offset.saturating_add(len));
    }

    /// Steps the automata over `bytes`, the next bytes of `d`'s direction, appending each
    /// pattern match to `hits` at its absolute end offset.
    pub fn scan(&self, d: &mut DirState, bytes: &[u8], hits: &mut Vec<Hit>) {
        for &b in bytes {
            d.offset += 1;
            for (ac, st) in self.acs.iter().zip(d.states.iter_mut()) {
                *st = ac.dfa.next_state(Anchored::No, *st, b);
                if ac.dfa.is_match(*st) {
                    for i in 0..ac.dfa.match_len(*st) {
                        let pid = ac.dfa.match_pattern(*st, i);
                        hits.push((ac.global[pid.as_usize()], d.offset));
                    }
                }
            }
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
