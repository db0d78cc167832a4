//! A network function with its own private protocol stacks: execution mode a, the reference
//! of the consistency checker and the "one stack per NF" baseline of the paper.
//!
//! [`PrivateChain`] is one actor that runs, synchronously and in order, a private copy of the
//! µStacks (L2/3, TCP monitor) and then one NF, over an inner [`Plan`] linked by the same
//! controller. For every packet arriving from upstream (its raw primary `FRAME` event, which
//! stays raw on the outer chain) it:
//!
//! 1. copies the event and lets each private stack handle what it subscribed to, exactly as
//!    the stages of the shared runtime would — same subscriptions, same order, same events;
//! 2. delivers the resulting events to the NF (its own subscriptions, sides and filters);
//! 3. applies the NF's verdict on the packet's own event to the outer primary event, and
//!    forwards the events the NF published, down the outer chain. A packet a private stack
//!    drops (a malformed frame under `malformed = "drop"`) is dropped on the outer chain
//!    too — as the shared stack drops it in the other modes — under the chain's drop reason
//!    `<stack>: <reason>` (the stacks' reasons follow the NF's own in the outer contract).
//!
//! Events of upstream NFs (published on the outer chain) are handed to the NF as well; the
//! inner plan holds a stand-in for each upstream NF so that links are checked the same way.
//! The private stacks see every packet that reaches this NF's position (a packet dropped
//! upstream is still seen by the private stacks — as the shared stack, placed before every
//! NF, sees it — but not handed to the NF). Events raised inside never leave: they hold no
//! packet reference, and the private TCP monitor frees stream memory once the packet is done.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use runtime::trace::{now_ns, Span, TraceBuffer};

use crate::contract::{Actor, ActorError, Context, Contract, Outbox, StreamAccess, Verdict};
use crate::controller::Plan;
use crate::desc::{desc_flags, EventDesc};
use crate::dynsub::FlowSubscriptions;
use crate::event::builtin;
use crate::stage::{handle_span, subscription_for};

/// What a traced [`PrivateChain`] recorded (see [`PrivateChain::with_trace`]).
#[derive(Clone, Debug, Default)]
pub struct InnerTrace {
    /// The inner actors by inner plan index: (name, kind). Index 0 is the RX stand-in; then
    /// the private stacks (`l23`, `tcp`), the stand-ins of upstream NFs, and the NF last.
    pub actors: Vec<(String, String)>,
    /// One span per inner handling. **`Span::actor` is the inner plan index** (into
    /// `actors`), `Span::publisher` the inner publisher's; `core` is the chain's core.
    pub spans: Vec<Span>,
    /// Spans that did not fit the buffer.
    pub dropped: u64,
    /// True once the chain finished and published its spans.
    pub finished: bool,
}

/// Where a traced [`PrivateChain`] leaves its [`InnerTrace`] when it finishes.
pub type InnerTraceSlot = Arc<Mutex<InnerTrace>>;

/// Mode a's NF-with-private-stacks actor (see the module docs).
pub struct PrivateChain {
    contract: Contract,
    /// Inner actors, inner plan order from index 1 (index 0 is the RX stand-in): the stacks,
    /// the stand-ins of upstream NFs (never run), then the NF last.
    stacks: Vec<Box<dyn Actor>>,
    nf: Box<dyn Actor>,
    plan: Plan,
    /// Inner index of the first upstream stand-in; `upstream[k]` = inner index for outer
    /// publisher k (None for publishers without a stand-in).
    upstream: Vec<Option<u16>>,
    streams: Option<Arc<dyn StreamAccess>>,
    completed: Option<Arc<AtomicU64>>,
    queue: VecDeque<EventDesc>,
    next: VecDeque<EventDesc>,
    /// Where the inner actors publish; drained after each handling, never taken, so its
    /// buffers are reused (no allocation per event, as a stage's outbox).
    outbox: Outbox,
    /// The canonical flow the private stacks gave the current packet.
    primary_flow: u64,
    /// The NF's per-flow subscription changes.
    dynsub: FlowSubscriptions,
    /// With tracing on: the chain's core, the span buffer and where to publish it.
    trace: Option<(u16, TraceBuffer, InnerTraceSlot)>,
    /// Per private stack: where its drop reasons start in the outer contract's (after the
    /// NF's own).
    stack_reasons: Vec<u16>,
}

impl PrivateChain {
    /// `stacks` in inner-plan order after RX, then `nf`; `plan` linked over
    /// `[rx, stacks..., upstream stand-ins..., nf]`; `upstream` maps outer publisher indices to
    /// inner ones; `contract` is what the outer controller sees (FRAME in, the NF's
    /// publications out).
    pub fn new(
        contract: Contract,
        stacks: Vec<Box<dyn Actor>>,
        nf: Box<dyn Actor>,
        plan: Plan,
        upstream: Vec<Option<u16>>,
        streams: Option<Arc<dyn StreamAccess>>,
        completed: Option<Arc<AtomicU64>>,
    ) -> PrivateChain {
        let mut contract = contract;
        // A packet a private stack drops (a malformed frame, with `malformed = "drop"`) is
        // dropped on the outer chain too, as the shared stack drops it in the other modes:
        // the stacks' drop reasons follow the NF's, each named `<stack>: <reason>`.
        let mut stack_reasons = Vec::with_capacity(stacks.len());
        for s in &stacks {
            stack_reasons.push(u16::try_from(contract.drop_reasons.len()).unwrap_or(u16::MAX));
            let name = &s.contract().name;
            contract.drop_reasons.extend(s.contract().drop_reasons.iter().map(|r| format!("{name}: {r}")));
        }
        PrivateChain {
            stack_reasons,
            contract,
            stacks,
            nf,
            plan,
            upstream,
            streams,
            completed,
            queue: VecDeque::new(),
            next: VecDeque::new(),
            outbox: Outbox::new(),
            primary_flow: 0,
            dynsub: FlowSubscriptions::default(),
            trace: None,
        }
    }

    /// Records a span for every event an inner actor (private stack or NF) handles, at most
    /// `capacity`, as running on `core`; the spans reach [`trace_slot`](Self::trace_slot)
    /// when the chain finishes.
    pub fn with_trace(mut self, core: u16, capacity: usize) -> PrivateChain {
        let actors = self.plan.actors.iter().map(|a| (a.name.clone(), a.kind.clone())).collect();
        let slot: InnerTraceSlot = Arc::new(Mutex::new(InnerTrace { actors, ..Default::default() }));
        self.trace = Some((core, TraceBuffer::new(capacity), slot));
        self
    }

    /// Where the inner spans are published (with [`with_trace`](Self::with_trace)).
    pub fn trace_slot(&self) -> Option<InnerTraceSlot> {
        self.trace.as_ref().map(|(_, _, s)| s.clone())
    }

    fn publish_trace(&mut self) {
        if let Some((_, buf, slot)) = self.trace.as_mut() {
            let (mut spans, dropped) = buf.take();
            if let Ok(mut t) = slot.lock() {
                t.spans.append(&mut spans);
                t.dropped += dropped;
                t.finished = true;
            }
        }
    }

    fn nf_index(&self) -> usize {
        self.plan.actors.len() - 1
    }

    /// Runs the queue through the stacks and the NF; returns the NF's verdict on the packet's
    /// own event (if it handled it) and forwards what it published.
    fn run_queue(&mut self, cx: &mut Context<'_>, finishing: Option<usize>) -> Option<Verdict> {
        let pool = cx.pool();
        let streams = self.streams.clone();
        let mut primary_verdict = None;
        let nf_i = self.nf_index();
        let start = finishing.unwrap_or(1);
        for i in start..=nf_i {
            let is_nf = i == nf_i;
            if !is_nf && i > self.stacks.len() {
                continue; // a stand-in for an upstream NF: never runs here
            }
            let plan = &self.plan.actors[i];
            while let Some(mut ev) = self.queue.pop_front() {
                let sub = if ev.is_dropped() && (ev.flags & desc_flags::PRIMARY != 0) {
                    // A dropped packet still updates the private stacks, not the NF.
                    if is_nf {
                        None
                    } else {
                        subscription_for(plan, pool, &ev)
                    }
                } else {
                    subscription_for(plan, pool, &ev)
                };
                // The NF's per-flow subscriptions, as its stage would apply them.
                let sub = if is_nf {
                    let allowed = sub.is_some() && self.dynsub.allows(&ev);
                    self.dynsub.observe(&ev);
                    sub.filter(|_| allowed)
                } else {
                    sub
                };
                if let Some(sub) = sub {
                    let consumes = sub.consumes;
                    let (ty, publisher) = (ev.event_type, ev.publisher);
                    let start = if self.trace.is_some() { now_ns() } else { 0 };
                    let mut icx = Context::internal(pool, &mut self.outbox, i as u16, streams.as_deref());
                    let v = if is_nf {
                        self.nf.handle(&mut ev, &mut icx)
                    } else {
                        self.stacks[i - 1].handle(&mut ev, &mut icx)
                    };
                    if let Some((core, buf, _)) = self.trace.as_mut() {
                        buf.record(handle_span(i as u16, *core, &ev, ty, publisher, start));
                    }
                    if consumes {
                        ev.publisher = i as u16;
                    }
                    if ev.flags & desc_flags::PRIMARY != 0 {
                        self.primary_flow = ev.flow_start;
                    }
                    if let (Verdict::Drop(r), false) = (v, ev.is_dropped()) {
                        if ev.flags & desc_flags::PRIMARY != 0 {
                            primary_verdict = Some(if is_nf {
                                v
                            } else {
                                Verdict::Drop(self.stack_reasons[i - 1].saturating_add(r))
                            });
                        }
                        ev.flags |= desc_flags::DROPPED;
                        ev.dropped_by = i as u16;
                        ev.drop_reason = r;
                    }
                    if is_nf {
                        self.dynsub.apply(self.outbox.changes.drain(..));
                        // What the NF publishes goes down the outer chain.
                        for p in self.outbox.before.drain(..).chain(self.outbox.after.drain(..)) {
                            cx.publish(p);
                        }
                        continue;
                    }
                    // A private stack's subscription changes are not applied (nor were they
                    // ever): only the NF's subscriptions are per flow.
                    self.outbox.changes.clear();
                    self.next.extend(self.outbox.before.drain(..));
                    self.next.push_back(ev);
                    self.next.extend(self.outbox.after.drain(..));
                } else if !is_nf {
                    self.next.push_back(ev);
                }
            }
            std::mem::swap(&mut self.queue, &mut self.next);
        }
        self.queue.clear();
        primary_verdict
    }

    /// End of input for the inner actors: each private stack flushes, then the NF.
    fn finish_inner(&mut self, cx: &mut Context<'_>) -> Result<(), ActorError> {
        let pool = cx.pool();
        let streams = self.streams.clone();
        // Each private stack flushes (L2/3 ends every flow, ...), in order; what it publishes
        // runs through the actors after it.
        for i in 1..=self.stacks.len() {
            {
                let mut icx = Context::internal(pool, &mut self.outbox, i as u16, streams.as_deref());
                if let Some(e) = cx.end_seq() {
                    icx = icx.at_end(e);
                }
                self.stacks[i - 1].finish(&mut icx)?;
            }
            self.outbox.changes.clear();
            self.queue.extend(self.outbox.before.drain(..));
            self.queue.extend(self.outbox.after.drain(..));
            if !self.queue.is_empty() {
                self.run_queue(cx, Some(i + 1));
            }
        }
        // What the NF published while handling the stacks' last events is already on the
        // outer outbox (and, observed, in its log); the inner one is empty again.
        let nf_i = self.nf_index() as u16;
        let r = {
            let mut icx = Context::internal(pool, &mut self.outbox, nf_i, streams.as_deref());
            if let Some(e) = cx.end_seq() {
                icx = icx.at_end(e);
            }
            self.nf.finish(&mut icx)
        };
        self.outbox.changes.clear();
        for p in self.outbox.before.drain(..).chain(self.outbox.after.drain(..)) {
            cx.publish(p);
        }
        r
    }
}

impl Actor for PrivateChain {
    fn contract(&self) -> &Contract {
        &self.contract
    }

    fn handle(&mut self, ev: &mut EventDesc, cx: &mut Context<'_>) -> Verdict {
        let mut inner = *ev;
        if ev.event_type == builtin::FRAME {
            inner.publisher = 0;
        } else {
            match self.upstream.get(usize::from(ev.publisher)).copied().flatten() {
                Some(i) => inner.publisher = i,
                None => return Verdict::Continue,
            }
        }
        self.queue.push_back(inner);
        self.primary_flow = ev.flow_start;
        let v = self.run_queue(cx, None);
        // The outer event stays a raw frame, but carries the flow's canonical name.
        ev.flow_start = self.primary_flow;
        if let Some(c) = &self.completed {
            c.store(ev.seq + 1, Ordering::Release);
        }
        match v {
            Some(Verdict::Drop(r)) => Verdict::Drop(r),
            _ => Verdict::Continue,
        }
    }

    fn finish(&mut self, cx: &mut Context<'_>) -> Result<(), ActorError> {
        let r = self.finish_inner(cx);
        // Published also when a stack failed to finish: what was recorded stays readable.
        self.publish_trace();
        r
    }

    fn counters(&self) -> Vec<(String, u64)> {
        let mut c = self.nf.counters();
        if self.dynsub.not_delivered > 0 {
            c.push(("not_delivered_by_flow_subscription".into(), self.dynsub.not_delivered));
        }
        for s in &self.stacks {
            for (k, v) in s.counters() {
                c.push((format!("{}.{k}", s.contract().name), v));
            }
        }
        c
    }
}
