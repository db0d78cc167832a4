//! The scan automaton: the rule set's Aho-Corasick DFAs (case-sensitive, and
//! ASCII-case-insensitive for `nocase` contents) compiled into **one** table that the scan
//! steps with a single dependent load per byte.
//!
//! Why not step the aho-corasick crate's DFAs directly (as the matcher did): the scan is
//! latency-bound (each step needs the previous state), and every step through
//! `Automaton::next_state` plus `is_match` on two automata cost several loads and branches;
//! the crate has no public API for a product of two automata nor for its raw transition
//! table. Its prefilter-driven search was measured slower on HTTP (docs/benchmarks.md,
//! "Signature matching"). So the crate still builds the automata (and stays the oracle of
//! the property test `nfs/tests/matcher_chunks.rs`), and this module only re-tabulates them:
//!
//! * **Product.** A state is the pair (state of the plain DFA, state of the `nocase` DFA),
//!   explored from the pair of unanchored start states over every byte: the reachable pairs
//!   are few (an Aho-Corasick state is the longest suffix of the input that is a pattern
//!   prefix, so one component mostly determines the other). When the product would exceed
//!   [`MAX_PRODUCT_STATES`], each DFA gets its own table and the scan steps both.
//! * **Byte classes.** Bytes that occur in no pattern (either case for `nocase` ones) behave
//!   alike in every state and share one column; every other byte has its own. The table is
//!   `states × classes` entries of `u32`, indexed `state + class[byte]`.
//! * **Premultiplied ids, match states first.** A state's id is its row's offset, and the
//!   states that report matches are numbered first, so "is this a match state" is one
//!   comparison with [`Table::match_limit`] on the hot path.
//!
//! Invariants: every entry of `trans` and `start` is a multiple of `stride` below
//! `trans.len()`; ids below `match_limit` are exactly the match states; a match state's
//! pattern list is the plain DFA's matches then the `nocase` DFA's, mapped to global ids.

use std::collections::HashMap;

use aho_corasick::automaton::{Automaton, StateID};
use aho_corasick::dfa::DFA;
use aho_corasick::Anchored;

/// Beyond this many product states the automata are tabulated separately.
pub const MAX_PRODUCT_STATES: usize = 1 << 16;

/// One DFA to tabulate: the automaton, the global pattern id of each of its patterns, and
/// the bytes its patterns contain (both cases already added for case-insensitive ones).
pub struct Source<'a> {
    /// The automaton.
    pub dfa: &'a DFA,
    /// Its pattern ids mapped to global ids.
    pub global: &'a [u32],
    /// The bytes its patterns contain.
    pub bytes: &'a [bool; 256],
}

/// One tabulated automaton (see the module docs).
#[derive(Clone, Debug)]
pub struct Table {
    /// `states × stride` next-state ids (premultiplied).
    pub trans: Vec<u32>,
    /// Byte → column.
    pub classes: [u8; 256],
    /// Columns per state.
    pub stride: u32,
    /// State ids below this are match states.
    pub match_limit: u32,
    /// The unanchored start state.
    pub start: u32,
    /// Per match state (id / stride): range into `match_pats`.
    match_ranges: Vec<(u32, u32)>,
    /// Global pattern ids of the match states, concatenated.
    match_pats: Vec<u32>,
}

impl Table {
    /// The global pattern ids matched on entering match state `s` (`s < match_limit`).
    #[inline]
    pub fn matches(&self, s: u32) -> &[u32] {
        let (a, b) = self.match_ranges[(s / self.stride) as usize];
        &self.match_pats[a as usize..b as usize]
    }

    /// Tabulates the product of `sources` (one or two automata), or `None` when it has more
    /// than `max_states` states.
    pub fn product(sources: &[Source<'_>], max_states: usize) -> Result<Option<Table>, String> {
        // Byte classes: class 0 for bytes in no pattern, one class per other byte (the
        // identity when every byte is in some pattern).
        let used: Vec<bool> = (0..256).map(|b| sources.iter().any(|s| s.bytes[b])).collect();
        let mut classes = [0u8; 256];
        let reps: Vec<u8> = if used.iter().all(|&u| u) {
            for (b, c) in classes.iter_mut().enumerate() {
                *c = b as u8;
            }
            (0..=255).collect()
        } else {
            let mut reps = vec![used.iter().position(|&u| !u).unwrap_or(0) as u8];
            for b in 0..256 {
                if used[b] {
                    classes[b] = reps.len() as u8;
                    reps.push(b as u8);
                }
            }
            reps
        };
        let stride = reps.len();
        let starts = sources
            .iter()
            .map(|s| s.dfa.start_state(Anchored::No))
            .collect::<Result<Vec<StateID>, _>>()
            .map_err(|e| format!("pattern automaton without an unanchored start: {e}"))?;
        // Breadth-first over reachable tuples; `raw` holds tuple indices, not yet ids.
        let mut index: HashMap<Vec<StateID>, u32> = HashMap::new();
        let mut tuples: Vec<Vec<StateID>> = vec![starts.clone()];
        index.insert(starts, 0);
        let mut raw: Vec<u32> = Vec::new();
        let mut i = 0;
        while i < tuples.len() {
            for &b in &reps {
                let next: Vec<StateID> =
                    sources.iter().zip(&tuples[i]).map(|(s, &st)| s.dfa.next_state(Anchored::No, st, b)).collect();
                let id = match index.get(&next) {
                    Some(&id) => id,
                    None => {
                        if tuples.len() >= max_states {
                            return Ok(None);
                        }
                        let id = tuples.len() as u32;
                        index.insert(next.clone(), id);
                        tuples.push(next);
                        id
                    }
                };
                raw.push(id);
            }
            i += 1;
        }
        // Match states first.
        let is_match: Vec<bool> =
            tuples.iter().map(|t| sources.iter().zip(t).any(|(s, &st)| s.dfa.is_match(st))).collect();
        let mut order: Vec<u32> = (0..tuples.len() as u32).filter(|&t| is_match[t as usize]).collect();
        let n_match = order.len();
        order.extend((0..tuples.len() as u32).filter(|&t| !is_match[t as usize]));
        let mut new_id = vec![0u32; tuples.len()];
        for (new, &old) in order.iter().enumerate() {
            new_id[old as usize] = (new * stride) as u32;
        }
        let mut trans = vec![0u32; tuples.len() * stride];
        for (new, &old) in order.iter().enumerate() {
            for c in 0..stride {
                trans[new * stride + c] = new_id[raw[old as usize * stride + c] as usize];
            }
        }
        let (mut match_ranges, mut match_pats) = (Vec::with_capacity(n_match), Vec::new());
        for &old in &order[..n_match] {
            let a = match_pats.len() as u32;
            for (s, &st) in sources.iter().zip(&tuples[old as usize]) {
                if s.dfa.is_match(st) {
                    for k in 0..s.dfa.match_len(st) {
                        match_pats.push(s.global[s.dfa.match_pattern(st, k).as_usize()]);
                    }
                }
            }
            match_ranges.push((a, match_pats.len() as u32));
        }
        u32::try_from(trans.len()).map_err(|_| "pattern automaton too large".to_string())?;
        Ok(Some(Table {
            trans,
            classes,
            stride: stride as u32,
            match_limit: (n_match * stride) as u32,
            start: new_id[0],
            match_ranges,
            match_pats,
        }))
    }
}
