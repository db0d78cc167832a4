//! One direction's modification list: the changes an NF asked for, in original-stream
//! offsets, and the two maps they define between the **original** stream (what the sender
//! sent, what NFs read) and the **output** stream (what the receiver gets).
//!
//! Invariants (kept by [`EditList::add`], checked by the property tests below):
//!
//! * edits are sorted by `at` and do not overlap: `end(i) <= at(i+1)`, and two edits never
//!   start at the same offset (an insert at `x` and a replace from `x` would be ambiguous);
//! * an edit belongs to the forwarding window that holds its `at`: a window `[s, r)` applies
//!   every edit with `s <= at < r`, which must end by `r` — [`EditList::generate`] stops before
//!   an edit that straddles `r`, so a window boundary is never strictly inside an edit;
//! * nothing is added below the forwarded point (those bytes left already);
//! * pruning (as acknowledgments pass) removes edits wholly below the acknowledged original
//!   offset and folds their length change into `pruned_delta`, so the maps stay right for
//!   every offset at or above it.

use std::collections::VecDeque;

use actors::modify::ModifyError;

/// One change: `[at, at + len)` of the original stream becomes `with`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Edit {
    /// First original byte replaced (insert point when `len` is 0).
    pub at: u64,
    /// Original bytes replaced.
    pub len: u64,
    /// Output bytes instead.
    pub with: Vec<u8>,
}

impl Edit {
    fn end(&self) -> u64 {
        self.at + self.len
    }
    fn delta(&self) -> i64 {
        self.with.len() as i64 - self.len as i64
    }
}

/// The bounds of one list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EditLimits {
    /// Edits held at most (not yet acknowledged).
    pub max_edits: usize,
    /// Replacement bytes held at most.
    pub max_insert_bytes: usize,
}

/// A direction's modification list (see the module docs).
#[derive(Clone, Debug)]
pub struct EditList {
    edits: VecDeque<Edit>,
    /// Sum of the length changes of pruned edits.
    pruned_delta: i64,
    /// Original bytes forwarded (every edit below was applied).
    forwarded: u64,
    /// Replacement bytes held.
    bytes: usize,
    /// The stream's end was generated (an insert at the end applies once).
    ended: bool,
    limits: EditLimits,
}

fn add_delta(x: u64, d: i64) -> u64 {
    x.checked_add_signed(d).unwrap_or(0)
}

impl EditList {
    /// An empty list.
    pub fn new(limits: EditLimits) -> EditList {
        EditList { edits: VecDeque::new(), pruned_delta: 0, forwarded: 0, bytes: 0, ended: false, limits }
    }

    /// An empty list whose original bytes before `forwarded` already left unchanged (a
    /// connection upgraded mid-stream): the maps are the identity below it.
    pub fn starting_at(limits: EditLimits, forwarded: u64) -> EditList {
        EditList { forwarded, ..EditList::new(limits) }
    }

    /// As [`starting_at`](Self::starting_at), for a direction whose sender's FIN also left
    /// unchanged: its stream ended at `forwarded`, so nothing can be inserted there any more
    /// (such an edit is refused as too late rather than accepted and never sent).
    pub fn ended_at(limits: EditLimits, forwarded: u64) -> EditList {
        EditList { forwarded, ended: true, ..EditList::new(limits) }
    }

    /// Original bytes forwarded so far.
    pub fn forwarded(&self) -> u64 {
        self.forwarded
    }

    /// Edits held.
    pub fn len(&self) -> usize {
        self.edits.len()
    }

    /// True when no edit is held.
    pub fn is_empty(&self) -> bool {
        self.edits.is_empty()
    }

    /// Adds an edit (see the module docs for what is refused).
    pub fn add(&mut self, e: Edit) -> Result<(), ModifyError> {
        if e.at < self.forwarded || (self.ended && e.at <= self.forwarded) {
            return Err(ModifyError::TooLate { at: e.at, forwarded: self.forwarded });
        }
        if self.edits.len() >= self.limits.max_edits {
            return Err(ModifyError::Limit("max_changes"));
        }
        if self.bytes + e.with.len() > self.limits.max_insert_bytes {
            return Err(ModifyError::Limit("max_insert_bytes"));
        }
        let i = self.edits.partition_point(|x| x.at < e.at);
        let clash_before = i > 0 && self.edits[i - 1].end() > e.at;
        let clash_after = self.edits.get(i).is_some_and(|x| x.at == e.at || x.at < e.end());
        if clash_before || clash_after || e.at.checked_add(e.len).is_none() {
            return Err(ModifyError::Overlap { at: e.at });
        }
        self.bytes += e.with.len();
        self.edits.insert(i, e);
        Ok(())
    }

    /// The output offset of original position `x` (the start of byte `x`, after any insert
    /// at `x` is *not* counted: it belongs to the window from `x`). For `x` strictly inside
    /// a replaced range: the output start of its replacement.
    pub fn out_lo(&self, x: u64) -> u64 {
        let mut d = self.pruned_delta;
        for e in &self.edits {
            if e.at >= x {
                break;
            }
            if x < e.end() {
                return add_delta(e.at, d);
            }
            d += e.delta();
        }
        add_delta(x, d)
    }

    /// As [`out_lo`](Self::out_lo), but a position strictly inside a replaced range maps to
    /// the end of its replacement (for the end of a retransmitted range).
    pub fn out_hi(&self, x: u64) -> u64 {
        let mut d = self.pruned_delta;
        for e in &self.edits {
            if e.at >= x {
                break;
            }
            if x < e.end() {
                return add_delta(e.at, d) + e.with.len() as u64;
            }
            d += e.delta();
        }
        add_delta(x, d)
    }

    /// The original offset the receiver's acknowledgment of output offset `y` stands for:
    /// inside a replacement, only the original bytes before it count as received (the
    /// sender then keeps the replaced bytes until the whole replacement is acknowledged).
    pub fn in_of(&self, y: u64) -> u64 {
        let mut d = self.pruned_delta;
        for e in &self.edits {
            let o = add_delta(e.at, d);
            if y < o {
                break;
            }
            if y < o + e.with.len() as u64 {
                return e.at;
            }
            d += e.delta();
        }
        add_delta(y, -d)
    }

    /// Rewrites the original bytes `data` = `[forwarded, forwarded + data.len())` into `out`,
    /// as far as no edit straddles the end (`at_end`: the stream ends there, so an edit that
    /// would straddle it is dropped and counted in the return's second value). Returns the
    /// number of original bytes consumed (the forwarded point moves by it) and the edits
    /// dropped.
    pub fn generate(&mut self, data: &[u8], at_end: bool, out: &mut Vec<u8>) -> (usize, u64) {
        if self.ended {
            return (0, 0);
        }
        let from = self.forwarded;
        let to = from + data.len() as u64;
        let mut pos = from;
        let mut dropped = 0;
        let mut i = self.edits.partition_point(|e| e.at < from);
        while i < self.edits.len() {
            let e = &self.edits[i];
            if e.at >= to && !(at_end && e.at == to) {
                break;
            }
            if e.end() > to {
                if at_end {
                    // The stream ended inside it: it can never apply.
                    let e = self.edits.remove(i).expect("index checked");
                    self.bytes -= e.with.len();
                    dropped += 1;
                    continue;
                }
                break;
            }
            out.extend_from_slice(&data[(pos - from) as usize..(e.at - from) as usize]);
            out.extend_from_slice(&e.with);
            pos = e.end();
            i += 1;
        }
        let stop = if i < self.edits.len() && self.edits[i].at < to { self.edits[i].at } else { to };
        out.extend_from_slice(&data[(pos - from) as usize..(stop - from) as usize]);
        self.forwarded = stop;
        self.ended = at_end && stop == to;
        ((stop - from) as usize, dropped)
    }

    /// Forgets edits wholly below original offset `acked` (acknowledged by the receiver).
    pub fn prune(&mut self, acked: u64) {
        while let Some(e) = self.edits.front() {
            if e.end() > acked || e.at >= acked || e.at >= self.forwarded {
                break;
            }
            self.pruned_delta += e.delta();
            self.bytes -= e.with.len();
            self.edits.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const LIM: EditLimits = EditLimits { max_edits: 1 << 20, max_insert_bytes: 1 << 30 };

    fn edit(at: u64, len: u64, with: &[u8]) -> Edit {
        Edit { at, len, with: with.to_vec() }
    }

    #[test]
    fn replace_insert_remove_and_maps() {
        let mut l = EditList::new(LIM);
        l.add(edit(2, 3, b"XXXXX")).unwrap(); // +2
        l.add(edit(7, 0, b"I")).unwrap(); // +1
        l.add(edit(9, 2, b"")).unwrap(); // -2
        assert!(matches!(l.add(edit(3, 1, b"")), Err(ModifyError::Overlap { .. })));
        assert!(matches!(l.add(edit(7, 1, b"")), Err(ModifyError::Overlap { .. })));
        let data = b"abcdefghijklm";
        let mut out = Vec::new();
        assert_eq!(l.generate(data, false, &mut out), (13, 0));
        assert_eq!(out, b"abXXXXXfgIhilm");
        assert_eq!(l.out_lo(0), 0);
        assert_eq!(l.out_lo(3), 2);
        assert_eq!(l.out_hi(3), 7);
        assert_eq!(l.out_lo(5), 7);
        assert_eq!(l.out_lo(7), 9);
        assert_eq!(l.out_lo(8), 11);
        assert_eq!(l.out_lo(11), 12);
        assert_eq!(l.in_of(4), 2);
        assert_eq!(l.in_of(7), 5);
        assert_eq!(l.in_of(9), 7);

        assert_eq!(l.in_of(10), 7);
        assert_eq!(l.in_of(12), 11);
        assert!(matches!(l.add(edit(12, 1, b"")), Err(ModifyError::TooLate { .. })));
        l.prune(9);
        assert_eq!(l.len(), 1);
        assert_eq!(l.out_lo(11), 12);
        assert_eq!(l.in_of(14), 13);
    }

    #[test]
    fn generation_stops_before_a_straddling_edit() {
        let mut l = EditList::new(LIM);
        l.add(edit(3, 3, b"bar")).unwrap();
        let mut out = Vec::new();
        assert_eq!(l.generate(b"xxxfo", false, &mut out), (3, 0));
        assert_eq!(out, b"xxx");
        assert_eq!(l.generate(b"fooy", false, &mut out), (4, 0));
        assert_eq!(out, b"xxxbary");
        let mut l = EditList::new(LIM);
        l.add(edit(1, 5, b"")).unwrap();
        out.clear();
        assert_eq!(l.generate(b"abc", true, &mut out), (3, 1));
        assert_eq!(out, b"abc");
    }

    #[test]
    fn limits_are_errors() {
        let mut l = EditList::new(EditLimits { max_edits: 1, max_insert_bytes: 4 });
        assert_eq!(l.add(edit(0, 0, b"12345")), Err(ModifyError::Limit("max_insert_bytes")));
        l.add(edit(0, 0, b"1")).unwrap();
        assert_eq!(l.add(edit(5, 0, b"1")), Err(ModifyError::Limit("max_changes")));
    }

    fn reference(data: &[u8], edits: &[Edit]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut pos = 0usize;
        for e in edits {
            out.extend_from_slice(&data[pos..e.at as usize]);
            out.extend_from_slice(&e.with);
            pos = e.end() as usize;
        }
        out.extend_from_slice(&data[pos..]);
        out
    }

    proptest! {
        /// Random edits, random windows: the output is the reference rewrite, the maps agree
        /// with it, and pruning as acks pass changes none of it.
        #[test]
        fn windows_give_the_reference_output(
            len in 1usize..400,
            raw in proptest::collection::vec((0u64..400, 0u64..6, proptest::collection::vec(any::<u8>(), 0..6)), 0..40),
            cuts in proptest::collection::vec(1usize..50, 1..40),
        ) {
            let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let mut l = EditList::new(LIM);
            let mut kept = Vec::new();
            for (at, n, with) in raw {
                let e = Edit { at: at % len as u64, len: n.min(len as u64 - at % len as u64), with };
                if l.add(e.clone()).is_ok() { kept.push(e); }
            }
            kept.sort_by_key(|e| e.at);
            let want = reference(&data, &kept);
            // out_lo of every original boundary not inside an edit, against the reference.
            let mut boundary_out = Vec::new();
            for x in 0..=len as u64 {
                if kept.iter().any(|e| e.at < x && x < e.end()) { continue; }
                let before: Vec<Edit> = kept.iter().filter(|e| e.at < x).cloned().collect();
                let o = reference(&data[..x as usize], &before).len() as u64;
                prop_assert_eq!(l.out_lo(x), o);
                boundary_out.push((x, o));
            }
            let mut out = Vec::new();
            let mut avail = 0usize;
            let mut ci = 0;
            while (l.forwarded() as usize) < len {
                avail = (avail + cuts[ci % cuts.len()]).min(len);
                ci += 1;
                let f = l.forwarded() as usize;
                let end = avail == len;
                l.generate(&data[f..avail.max(f)], end, &mut out);
                // The receiver acknowledges part of what went out: prune by it.
                let y = out.len() as u64 / 2;
                let acked = l.in_of(y);
                prop_assert!(l.out_lo(acked) <= y.max(l.out_lo(acked)));
                l.prune(acked);
                for &(x, o) in &boundary_out {
                    if x >= acked { prop_assert_eq!(l.out_lo(x), o); }
                }
                prop_assert!(ci < 10_000);
            }
            prop_assert_eq!(out, want);
        }

        /// `in_of` is monotonic and never claims original bytes whose output was not all
        /// acknowledged.
        #[test]
        fn ack_map_is_monotonic_and_conservative(
            raw in proptest::collection::vec((0u64..300, 0u64..6, 0usize..6), 0..30),
        ) {
            let mut l = EditList::new(LIM);
            for (at, n, w) in raw { let _ = l.add(Edit { at, len: n, with: vec![b'z'; w] }); }
            let mut last = 0;
            for y in 0..400u64 {
                let x = l.in_of(y);
                prop_assert!(x >= last);
                last = x;
                prop_assert!(l.out_hi(x) <= y.max(l.out_lo(x)) || l.out_lo(x) <= y);
                prop_assert!(l.out_lo(x) <= y);
            }
        }
    }

    #[test]
    fn an_ended_stream_takes_no_insert_at_its_end() {
        let lim = EditLimits { max_edits: 8, max_insert_bytes: 64 };
        // Upgraded after 10 bytes: an insert at 10 goes in before the next byte...
        assert!(EditList::starting_at(lim, 10).add(edit(10, 0, b"x")).is_ok());
        // ...but not when the FIN left at 10 too.
        let mut ended = EditList::ended_at(lim, 10);
        assert!(matches!(ended.add(edit(10, 0, b"x")), Err(ModifyError::TooLate { at: 10, forwarded: 10 })));
    }
}
