//! Parallel groups: a splitter that hands one event to N read-only NFs at once, and a merger
//! that combines their answers (docs/architecture.md, "Parallel events").
//!
//! The [`Splitter`] reads the chain's ring and writes a copy of every descriptor to each
//! member's ring, flagged `SPLIT`. Only the first copy holds the packet reference; the
//! others are `BORROWED` — the packet cannot be freed while the first copy is on its way,
//! and the first copy only goes on once every member answered — so the pool needs no
//! extra bookkeeping and TX never sees a borrowed copy.
//!
//! Each member is an ordinary [`Stage`](crate::stage::Stage): it handles its copy (or passes
//! it), and writes to its ring to the [`Merger`] the events it published before the copy,
//! those it published after it (flagged `AFTER`), and last the copy with its verdict — so
//! that the copy closes the member's answer and the merger never waits for a later item
//! (which could need a packet buffer the held item keeps from being freed).
//!
//! The [`Merger`] waits until every member has answered item k (its copy of k has arrived),
//! then emits exactly what a sequential chain of the same members would have:
//! `before_1 … before_N, event, after_N … after_1`, where the event carries the merged
//! verdict. Merge policy: **drop if any member drops**; the reason reported is the first
//! dropping member's (in group order). The controller ([`crate::controller::groups`]) only
//! forms groups whose members cannot tell the difference. Back-pressure applies on every
//! ring; the merger holds at most two items per member.

use std::collections::VecDeque;

use runtime::executor::{PollResult, Runnable};
use runtime::ring::{Consumer, Producer};

use crate::desc::{desc_flags, EventDesc};
use crate::stage::{push_queue, BURST};

/// Several output rings, each with a queue of what did not fit yet: the splitters' half of a
/// fan-out (the group splitter here, the shard splitter in `stacks::shard`).
pub struct FanOut {
    outputs: Vec<Producer<EventDesc>>,
    pending: Vec<VecDeque<EventDesc>>,
}

impl FanOut {
    /// Over `outputs`.
    pub fn new(outputs: Vec<Producer<EventDesc>>) -> FanOut {
        let pending = outputs.iter().map(|_| VecDeque::new()).collect();
        FanOut { outputs, pending }
    }

    /// Number of outputs.
    pub fn len(&self) -> usize {
        self.outputs.len()
    }

    /// True when there is no output.
    pub fn is_empty(&self) -> bool {
        self.outputs.is_empty()
    }

    /// Queues `ev` for output `i`.
    pub fn push(&mut self, i: usize, ev: EventDesc) {
        self.pending[i].push_back(ev);
    }

    /// Pushes what it can; returns how many went out.
    pub fn flush(&mut self) -> usize {
        self.outputs.iter_mut().zip(&mut self.pending).map(|(out, q)| push_queue(out, q)).sum()
    }

    /// True while some output still has queued events (back-pressure: take no more input).
    pub fn blocked(&self) -> bool {
        self.pending.iter().any(|q| !q.is_empty())
    }
}

/// Copies every event to each member of a parallel group (see the module docs).
pub struct Splitter {
    name: String,
    input: Consumer<EventDesc>,
    out: FanOut,
    inbuf: Vec<EventDesc>,
    end: bool,
}

impl Splitter {
    /// A splitter named `name` from `input` to `outputs` (one per member, in group order).
    pub fn new(name: String, input: Consumer<EventDesc>, outputs: Vec<Producer<EventDesc>>) -> Splitter {
        Splitter { name, input, out: FanOut::new(outputs), inbuf: Vec::with_capacity(BURST), end: false }
    }
}

impl Runnable for Splitter {
    fn name(&self) -> &str {
        &self.name
    }

    fn poll(&mut self) -> PollResult {
        let mut work = self.out.flush();
        if self.out.blocked() {
            return PollResult::from_work(work);
        }
        if self.end {
            return PollResult::Finished;
        }
        self.inbuf.clear();
        let n = self.input.pop_burst(&mut self.inbuf, BURST);
        for ev in &self.inbuf {
            for i in 0..self.out.len() {
                let mut copy = *ev;
                if !ev.is_end() {
                    copy.flags |= desc_flags::SPLIT;
                    if i > 0 {
                        copy.flags |= desc_flags::BORROWED;
                    }
                }
                self.out.push(i, copy);
            }
            if ev.is_end() {
                self.end = true;
                break;
            }
        }
        work += n + self.out.flush();
        PollResult::from_work(work)
    }
}

/// Combines the answers of a parallel group's members (see the module docs).
pub struct Merger {
    name: String,
    inputs: Vec<Consumer<EventDesc>>,
    output: Producer<EventDesc>,
    /// What each member sent and the merger has not emitted yet.
    held: Vec<VecDeque<EventDesc>>,
    pending: VecDeque<EventDesc>,
    inbuf: Vec<EventDesc>,
    end: bool,
    /// Events merged.
    merged: u64,
    /// Fault injection: take the first member's answer without the others' verdicts.
    eager: bool,
}

/// Position of the first `SPLIT` copy in a member's held items.
fn split_pos(q: &VecDeque<EventDesc>, from: usize) -> Option<usize> {
    q.iter().skip(from).position(|e| e.flags & desc_flags::SPLIT != 0 || e.is_end()).map(|p| p + from)
}

impl Merger {
    /// A merger named `name` from `inputs` (one per member, in group order) to `output`.
    pub fn new(name: String, inputs: Vec<Consumer<EventDesc>>, output: Producer<EventDesc>) -> Merger {
        let held = inputs.iter().map(|_| VecDeque::new()).collect();
        Merger {
            name,
            inputs,
            output,
            held,
            pending: VecDeque::new(),
            inbuf: Vec::with_capacity(BURST),
            end: false,
            merged: 0,
            eager: false,
        }
    }

    /// A deliberate fault for testing the consistency checker: the merged event carries only
    /// the first member's verdict, as if the merger went on before the others answered.
    pub fn with_fault_eager(mut self) -> Merger {
        self.eager = true;
        self
    }

    /// Events merged so far.
    pub fn merged(&self) -> u64 {
        self.merged
    }

    /// Emits every complete item; returns whether it emitted anything.
    fn merge_ready(&mut self) -> bool {
        let mut progress = false;
        loop {
            // Each member's answer ends with its copy of the item (or the end marker).
            let mut bounds = Vec::with_capacity(self.held.len());
            for q in &self.held {
                let Some(c) = split_pos(q, 0) else { return progress };
                bounds.push(c);
            }
            let ends = bounds.iter().zip(&self.held).filter(|(c, q)| q[**c].is_end()).count();
            if ends == self.held.len() {
                // Everything members published while finishing, then one end marker.
                let mut end = None;
                for (q, c) in self.held.iter_mut().zip(&bounds) {
                    self.pending.extend(q.drain(..*c));
                    end = q.pop_front();
                }
                self.pending.extend(end);
                self.end = true;
                return true;
            }
            if ends > 0 {
                // A member ended before answering an item: cannot happen with ordered rings.
                return progress;
            }
            let mut before = Vec::new();
            let mut afters: Vec<Vec<EventDesc>> = Vec::new();
            let mut copies = Vec::new();
            for (q, c) in self.held.iter_mut().zip(&bounds) {
                let mut after = Vec::new();
                for mut e in q.drain(..*c) {
                    if e.flags & desc_flags::AFTER != 0 {
                        e.flags &= !desc_flags::AFTER;
                        after.push(e);
                    } else {
                        before.push(e);
                    }
                }
                copies.push(q.pop_front().expect("the copy"));
                afters.push(after);
            }
            let mut ev = copies[0];
            if !ev.is_dropped() && !self.eager {
                if let Some(d) = copies.iter().find(|c| c.is_dropped()) {
                    ev.flags |= desc_flags::DROPPED;
                    ev.dropped_by = d.dropped_by;
                    ev.drop_reason = d.drop_reason;
                }
            }
            ev.flags &= !(desc_flags::SPLIT | desc_flags::BORROWED);
            self.pending.extend(before);
            self.pending.push_back(ev);
            for a in afters.into_iter().rev() {
                self.pending.extend(a);
            }
            self.merged += 1;
            progress = true;
        }
    }
}

impl Runnable for Merger {
    fn name(&self) -> &str {
        &self.name
    }

    fn poll(&mut self) -> PollResult {
        let mut work = 0;
        loop {
            work += push_queue(&mut self.output, &mut self.pending);
            if !self.pending.is_empty() {
                return PollResult::from_work(work);
            }
            if self.end {
                return PollResult::Finished;
            }
            let mut got = 0;
            for (input, q) in self.inputs.iter_mut().zip(&mut self.held) {
                // Hold a bounded amount per member: a complete answer is merged at once.
                if q.len() >= 4 * BURST && split_pos(q, 0).is_some() {
                    continue;
                }
                self.inbuf.clear();
                got += input.pop_burst(&mut self.inbuf, BURST);
                q.extend(self.inbuf.drain(..));
            }
            work += got;
            if !self.merge_ready() && got == 0 {
                return PollResult::from_work(work);
            }
        }
    }
}

/// Merges rings whose events are each in packet order into one stream in packet order
/// (mode d's sharded stacks meet again here, see `stacks::shard`).
///
/// It emits the event with the smallest sequence number among the rings' heads once no other
/// live ring can still send a smaller one: a ring with a head cannot, and an empty ring's
/// future events are at least its *floor* — the sequence number of its last event, or one
/// more than its last skip marker. The shard splitter sends every other shard a skip marker
/// for each packet, so the floors move with the input and the merger never holds an event
/// waiting for a packet that could only be read once that event's buffer is freed. The
/// events of one packet all come from one ring, in the order they were raised; events that
/// several rings raise at the end of input carry the input's last packet number and keep
/// ring order. One end marker leaves after every ring's.
pub struct SeqMerger {
    name: String,
    inputs: Vec<Consumer<EventDesc>>,
    output: Producer<EventDesc>,
    held: Vec<VecDeque<EventDesc>>,
    ended: Vec<bool>,
    /// Per ring: no future event of it has a smaller sequence number.
    floor: Vec<u64>,
    pending: VecDeque<EventDesc>,
    inbuf: Vec<EventDesc>,
    end: Option<EventDesc>,
    done: bool,
}

impl SeqMerger {
    /// A merger named `name` from `inputs` to `output`.
    pub fn new(name: String, inputs: Vec<Consumer<EventDesc>>, output: Producer<EventDesc>) -> SeqMerger {
        let n = inputs.len();
        SeqMerger {
            name,
            inputs,
            output,
            held: (0..n).map(|_| VecDeque::new()).collect(),
            ended: vec![false; n],
            floor: vec![0; n],
            pending: VecDeque::with_capacity(BURST),
            inbuf: Vec::with_capacity(BURST),
            end: None,
            done: false,
        }
    }
}

impl Runnable for SeqMerger {
    fn name(&self) -> &str {
        &self.name
    }

    fn poll(&mut self) -> PollResult {
        let mut work = 0;
        loop {
            work += push_queue(&mut self.output, &mut self.pending);
            if !self.pending.is_empty() {
                return PollResult::from_work(work);
            }
            if self.done {
                return PollResult::Finished;
            }
            let mut got = 0;
            for (i, input) in self.inputs.iter_mut().enumerate() {
                // Read every live ring, however much it already holds: what a ring can hold
                // is bounded by the rings and stages behind it (every packet sends each shard
                // an event or a skip marker), and refusing to read one ring while waiting for
                // another's head could stall the splitter feeding both.
                if self.ended[i] {
                    continue;
                }
                self.inbuf.clear();
                got += input.pop_burst(&mut self.inbuf, BURST);
                for ev in self.inbuf.drain(..) {
                    if ev.is_end() {
                        self.ended[i] = true;
                        self.end = Some(ev);
                    } else {
                        self.held[i].push_back(ev);
                    }
                }
            }
            work += got;
            // Skip markers say only "nothing from this ring before seq + 1": take them at once.
            for (q, floor) in self.held.iter_mut().zip(&mut self.floor) {
                while q.front().is_some_and(EventDesc::is_skip) {
                    *floor = (*floor).max(q.pop_front().expect("a head").seq + 1);
                }
            }
            // Emit the smallest head when no live ring can still send something smaller: an
            // empty ring's future events are at least its floor.
            while self.pending.len() < BURST {
                let next = (0..self.held.len())
                    .filter(|i| !self.held[*i].is_empty())
                    .min_by_key(|i| (self.held[*i][0].seq, *i));
                let Some(i) = next else {
                    if self.ended.iter().all(|e| *e) {
                        self.pending.extend(self.end.take());
                        self.done = true;
                    }
                    break;
                };
                let seq = self.held[i][0].seq;
                let blocked = (0..self.held.len())
                    .any(|j| j != i && !self.ended[j] && self.held[j].is_empty() && self.floor[j] <= seq);
                if blocked {
                    break;
                }
                let ev = self.held[i].pop_front().expect("a head");
                self.floor[i] = self.floor[i].max(ev.seq);
                self.pending.push_back(ev);
                while self.held[i].front().is_some_and(EventDesc::is_skip) {
                    let s = self.held[i].pop_front().expect("a head").seq;
                    self.floor[i] = self.floor[i].max(s + 1);
                }
            }
            if self.pending.is_empty() && got == 0 {
                return PollResult::from_work(work);
            }
        }
    }
}
