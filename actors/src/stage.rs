//! The stage runner: the thin wrapper that moves events between an actor and its rings.
//!
//! A [`Stage`] owns one actor, the consumer end of the ring from the previous stage and the
//! producer end of the ring to the next. Each [`poll`](Runnable::poll) takes a burst of up to
//! [`BURST`] descriptors and, for each one:
//!
//! 1. if the actor subscribed to it (type covered, publisher linked, filter matched) and no
//!    earlier stage dropped it, calls [`Actor::handle`] and applies the verdict;
//! 2. queues, in order: the events the actor published *before* it, the event itself, the
//!    events published *after* it;
//! 3. pushes the queue to the next ring.
//!
//! Everything reaches the next stage — dropped events too, flagged, so that the TX sink can
//! count the drop and release the packet; nothing is lost in a stage. When the next ring is
//! full the stage stops taking input until its queue drains (back-pressure, counted as
//! `stalls`), so the queue is bounded by one burst and what the actor publishes for it (at
//! end of input, what the actor publishes from [`Actor::finish`]).
//!
//! The end-of-input marker makes the stage call [`Actor::finish`], forward what it published
//! and the marker, write its [`StageReport`] and finish.
//!
//! **Supervision.** An NF's stage may carry a [`Supervisor`] ([`Stage::with_supervision`]):
//! a panic inside the actor is then caught at this boundary and the NF's `on_failure`
//! policy applied (see [`crate::supervise`]); without one, a panic ends the run as the
//! executor's error.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::AtomicI64;
use std::sync::{Arc, Mutex};

use runtime::executor::{PollResult, Runnable};
use runtime::pool::PoolView;
use runtime::ring::{Consumer, Producer};
use runtime::trace::{now_ns, Span, SpanKind, TraceBuffer};

use crate::contract::{Actor, Context, Outbox, Verdict};
use crate::contract::{Side, StreamAccess};
use crate::controller::{LinkedSubscription, PlannedActor};
use crate::desc::{desc_flags, snapshot_update, EventDesc};
use crate::dynsub::FlowSubscriptions;
use crate::event::EventType;
use crate::guest::{Guest, GuestBox};
use crate::matcher::Tuple;
use crate::supervise::{guarded, unix_ms, Failure, OnFailure, Supervisor};

/// Descriptors taken from a ring per poll.
pub const BURST: usize = 32;

/// What one stage did, written when it finishes.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct StageReport {
    /// Actor name.
    pub name: String,
    /// Actor kind.
    pub kind: String,
    /// Events handed to the actor, by type.
    pub handled: BTreeMap<EventType, u64>,
    /// Events forwarded without handling (not subscribed, or already dropped).
    pub passed: u64,
    /// Events the actor published.
    pub published: u64,
    /// Drop verdicts, by reason name.
    pub drops: BTreeMap<String, u64>,
    /// Polls on which the next ring was full.
    pub stalls: u64,
    /// The actor's own counters.
    pub counters: Vec<(String, u64)>,
    /// Error from `finish`, if any.
    pub error: Option<String>,
    /// True once the stage saw the end of input and finished.
    pub finished: bool,
    /// Recorded spans (with `--trace`).
    pub trace: Vec<Span>,
    /// Spans that did not fit the trace buffer.
    pub trace_dropped: u64,
    /// The NF's failures (see [`crate::supervise`]), at most
    /// [`FAILURES_KEPT`](crate::supervise::FAILURES_KEPT).
    #[serde(default)]
    pub failures: Vec<Failure>,
    /// Events lost in the NF's failures.
    #[serde(default)]
    pub events_lost_in_failure: u64,
}

impl StageReport {
    /// Total events handled.
    pub fn handled_total(&self) -> u64 {
        self.handled.values().sum()
    }
}

/// Pushes a queue of descriptors into a ring, as much as fits; returns how many went out.
/// What does not fit stays queued (the caller then takes no more input: back-pressure).
pub fn push_queue(out: &mut Producer<EventDesc>, q: &mut VecDeque<EventDesc>) -> usize {
    let mut sent = 0;
    while !q.is_empty() {
        let n = out.push_burst(q.as_slices().0);
        q.drain(..n);
        sent += n;
        if n == 0 {
            break;
        }
    }
    sent
}

/// Where a stage leaves its report; the engine reads it after the run.
pub type ReportSlot<T> = Arc<Mutex<T>>;

/// Writes `report` into its slot (a poisoned slot keeps its old value: the run reports the
/// panic that poisoned it).
pub fn publish<T: Clone>(slot: &ReportSlot<T>, report: &T) {
    if let Ok(mut s) = slot.lock() {
        *s = report.clone();
    }
}

/// The span of one handling of `ev` (of type `ty`, as published by `publisher`) by actor
/// `actor` on `core`, from `start` to now.
pub fn handle_span(actor: u16, core: u16, ev: &EventDesc, ty: EventType, publisher: u16, start: u64) -> Span {
    Span {
        actor,
        core,
        kind: SpanKind::Handle,
        seq: ev.seq,
        flow: ev.flow.map_or(u64::MAX, |f| f.id64()),
        event_type: ty.raw(),
        publisher,
        start_ns: start,
        end_ns: now_ns(),
        snapshot_seq: if ev.snap.update != snapshot_update::NONE || ty == crate::event::builtin::DATA_RDY {
            ev.seq
        } else {
            0
        },
    }
}

/// The first of an actor's subscriptions that accepts `ev` (type covered, publisher linked,
/// `from`, `side` and filter satisfied), if any.
pub fn subscription_for<'p>(plan: &'p PlannedActor, pool: &PoolView, ev: &EventDesc) -> Option<&'p LinkedSubscription> {
    plan.subscriptions.iter().find(|s| {
        s.event.covers(ev.event_type)
            && s.publishers.contains(&ev.publisher)
            && s.from.is_none_or(|f| f == ev.publisher)
            && (!s.side_publishers.contains(&ev.publisher) || side_accepts(s.side, ev))
            && s.to_server.is_none_or(|d| ev.flow.is_some() && ev.to_server() == d)
            && match &s.filter {
                None => true,
                Some(f) => ev.packet.is_some_and(|h| {
                    let view = crate::packet::PacketView::new(pool.data(h), &ev.meta);
                    f.matches(&Tuple::of(&view))
                }),
            }
    })
}

/// Marks `ev` dropped by actor `by` for `reason` (unless an earlier stage dropped it) and
/// counts it in `counts` (by reason; the last slot takes reasons beyond it).
pub fn mark_dropped(ev: &mut EventDesc, by: u16, reason: u16, counts: &mut [u64]) {
    if ev.is_dropped() {
        return;
    }
    ev.flags |= desc_flags::DROPPED;
    ev.dropped_by = by;
    ev.drop_reason = reason;
    if let Some(n) = counts.get_mut(usize::from(reason).min(counts.len().saturating_sub(1))) {
        *n += 1;
    }
}

/// Whether a subscription's `side` accepts an event (see [`Subscription::side`](crate::Subscription)).
fn side_accepts(side: Option<Side>, ev: &EventDesc) -> bool {
    let update = ev.snap.update;
    if update == snapshot_update::NONE {
        return true;
    }
    match side {
        // The sender's update: the client's for a packet it sent, the server's otherwise.
        None => (update == snapshot_update::CLIENT) == ev.to_server(),
        Some(Side::Client) => update == snapshot_update::CLIENT,
        Some(Side::Server) => update == snapshot_update::SERVER,
        Some(Side::Both) => true,
    }
}

/// An actor between two rings (see the module docs).
pub struct Stage {
    actor: Box<dyn Actor>,
    plan: PlannedActor,
    input: Consumer<EventDesc>,
    output: Producer<EventDesc>,
    pool: PoolView,
    inbuf: Vec<EventDesc>,
    pending: VecDeque<EventDesc>,
    outbox: Outbox,
    end_seen: bool,
    /// The end marker, held while the actor finishes in steps ([`Actor::finish_step`]).
    finishing: Option<EventDesc>,
    report: StageReport,
    /// Events handled by type, counted here (a short list, the last hit first to look at)
    /// and folded into `report.handled` when the report is written: no map update per event.
    handled: Vec<(EventType, u64)>,
    drop_counts: Vec<u64>,
    slot: ReportSlot<StageReport>,
    streams: Option<Arc<dyn StreamAccess>>,
    /// With tracing on: the core this stage runs on, and its span buffer.
    trace: Option<(u16, TraceBuffer)>,
    /// Mode b's count of descriptors in the chain (this stage adds what it publishes).
    in_flight: Option<Arc<AtomicI64>>,
    /// The actor's per-flow subscription changes.
    dynsub: FlowSubscriptions,
    /// The NF's failure policy and failures (an NF's stage; none for a µStack's).
    supervisor: Option<Supervisor>,
    /// An NF process's custody record (see [`crate::supervise::custody`]).
    custody: Option<Custody>,
    /// NFs added while the run goes on, hosted here (see [`crate::guest`]), and the box
    /// the controller posts them to.
    guests: Vec<Guest>,
    guest_box: Option<Arc<GuestBox>>,
}

/// What an NF process has taken and passed on, kept in shared cells (see
/// [`crate::supervise::custody`]), with this stage's running totals.
struct Custody {
    cells: runtime::cells::Cells,
    taken_primaries: u64,
    forwarded_inputs: u64,
    forwarded_primaries: u64,
}

/// What takes a failed actor's place (it is never called: the stage bypasses or drops).
struct Discarded(crate::Contract);

impl Actor for Discarded {
    fn contract(&self) -> &crate::Contract {
        &self.0
    }
    fn handle(&mut self, _ev: &mut EventDesc, _cx: &mut Context<'_>) -> Verdict {
        Verdict::Continue
    }
}

impl Stage {
    /// A stage for `actor`, placed as `plan` says, between `input` and `output`.
    pub fn new(
        actor: Box<dyn Actor>,
        plan: PlannedActor,
        input: Consumer<EventDesc>,
        output: Producer<EventDesc>,
        pool: PoolView,
    ) -> (Stage, ReportSlot<StageReport>) {
        let report = StageReport { name: plan.name.clone(), kind: plan.kind.clone(), ..Default::default() };
        let slot: ReportSlot<StageReport> = Arc::new(Mutex::new(report.clone()));
        let drop_counts = vec![0; plan.drop_reasons.len().max(1)];
        let stage = Stage {
            actor,
            plan,
            input,
            output,
            pool,
            inbuf: Vec::with_capacity(BURST),
            pending: VecDeque::with_capacity(BURST * 2),
            handled: Vec::new(),
            outbox: Outbox::new(),
            end_seen: false,
            finishing: None,
            report,
            drop_counts,
            slot: slot.clone(),
            streams: None,
            trace: None,
            in_flight: None,
            dynsub: FlowSubscriptions::default(),
            supervisor: None,
            custody: None,
            guests: Vec::new(),
            guest_box: None,
        };
        (stage, slot)
    }

    /// A stand-in for an NF whose process died (policy `bypass` or `drop`): the NF's
    /// subscriptions, no actor, `supervisor` in its failed state.
    pub fn stand_in(
        plan: PlannedActor,
        input: Consumer<EventDesc>,
        output: Producer<EventDesc>,
        pool: PoolView,
        mut supervisor: Supervisor,
    ) -> (Stage, ReportSlot<StageReport>) {
        let contract = crate::Contract { name: plan.name.clone(), kind: plan.kind.clone(), ..Default::default() };
        supervisor.failed = true;
        let (stage, slot) = Stage::new(Box::new(Discarded(contract)), plan, input, output, pool);
        (stage.with_supervision(supervisor), slot)
    }

    /// Keeps a custody record in `cells` (an NF served in its own process): before taking a
    /// burst from its input ring and before each push to its output ring, what it has taken
    /// and passed on, so that the run can tell exactly what it held if it dies. Starts from
    /// the totals the cells hold (a restarted process goes on from its predecessor's).
    pub fn with_custody(mut self, cells: runtime::cells::Cells) -> Stage {
        use crate::supervise::custody as c;
        self.custody = Some(Custody {
            taken_primaries: cells.get(c::TAKEN_PRIMARIES),
            forwarded_inputs: cells.get(c::FORWARDED_INPUTS),
            forwarded_primaries: cells.get(c::FORWARDED_PRIMARIES),
            cells,
        });
        self
    }

    /// Takes up to a burst from the input ring into `inbuf`; with custody, records it first.
    fn take_burst(&mut self, inbuf: &mut Vec<EventDesc>) -> usize {
        let Some(c) = self.custody.as_mut() else {
            return self.input.pop_burst(inbuf, BURST);
        };
        use crate::supervise::custody as k;
        let n = self.input.peek_burst(inbuf, BURST);
        if n == 0 {
            return 0;
        }
        let primaries = inbuf.iter().filter(|e| e.is_primary()).count() as u64;
        c.taken_primaries += primaries;
        let cells = &c.cells;
        if let Some(last) = inbuf.iter().rev().find(|e| !e.is_end() && !e.is_skip()) {
            cells.set(k::LAST_SEQ, last.seq);
            cells.set(k::LAST_TS, last.ts_ns);
        }
        if let Some(end) = inbuf.iter().find(|e| e.is_end()) {
            cells.set(k::END_SEQ, end.seq);
            cells.set(k::END_TS, end.ts_ns);
        }
        cells.set(k::LAST_PRIMARIES, primaries);
        cells.set(k::TAKEN_PRIMARIES, c.taken_primaries);
        cells.set(k::HEAD_AFTER, self.input.position() + n as u64);
        self.input.commit(n);
        n
    }

    /// Lets the controller add NFs to this stage while the run goes on ([`crate::guest`]).
    pub fn with_guests(mut self, guests: Arc<GuestBox>) -> Stage {
        self.guest_box = Some(guests);
        self
    }

    /// Hands `ev` to the guests on `before_host`'s side of the stage's NF.
    fn run_guests(&mut self, ev: &mut EventDesc, before_host: bool) {
        for g in self.guests.iter_mut().filter(|g| g.before_host() == before_host) {
            g.process(ev, &self.pool, &mut self.outbox, self.streams.as_deref());
        }
    }

    /// Catches a panic of the actor and applies `supervisor`'s policy (see the module docs).
    pub fn with_supervision(mut self, supervisor: Supervisor) -> Stage {
        self.supervisor = Some(supervisor);
        self
    }

    /// Marks `ev` dropped by this actor for `reason` (unless an earlier stage dropped it).
    fn mark_dropped(&mut self, ev: &mut EventDesc, reason: u16) {
        mark_dropped(ev, self.plan.index, reason, &mut self.drop_counts);
    }

    /// The actor panicked (message `msg`) while handling `ev` (or, `None`, at the end):
    /// the event and what the actor published for it are lost — forwarded marked dropped,
    /// so their packets are released and counted — and the policy is applied. `stop`
    /// resumes the panic with a message naming the NF, the packet and the policy (the
    /// executor ends the run with it); `bypass` and `drop` discard the actor; `restart`
    /// replaces it with a fresh instance.
    fn fail(&mut self, ev: Option<&mut EventDesc>, msg: String, at: (Option<u64>, Option<u64>)) {
        let Some(sup) = self.supervisor.as_ref() else { return };
        let (policy, reason) = (sup.policy, sup.reason);
        self.outbox.changes.clear();
        let mut lost = 0u64;
        let mut packets = 0u64;
        let mut published = std::mem::take(&mut self.outbox.before);
        let mut after = std::mem::take(&mut self.outbox.after);
        for p in published.iter_mut().chain(after.iter_mut()) {
            lost += 1;
            self.mark_dropped(p, reason);
        }
        (self.outbox.before, self.outbox.after) = (std::mem::take(&mut published), std::mem::take(&mut after));
        if let Some(ev) = ev {
            lost += 1;
            if ev.is_primary() && !ev.is_dropped() {
                packets += 1;
            }
            self.mark_dropped(ev, reason);
        }
        let name = self.report.name.clone();
        let failure = Failure {
            nf: name.clone(),
            what: "panic".into(),
            message: msg.clone(),
            policy,
            seq: at.0,
            ts_ns: at.1,
            unix_ms: unix_ms(),
            events_lost: lost,
            packets_lost: packets,
            ..Failure::default()
        };
        let where_ = at.0.map_or_else(|| "at the end of input".to_string(), |s| format!("at packet {s}"));
        if policy == OnFailure::Stop {
            // The executor catches this payload and ends the run with it (no hook runs for
            // a resumed panic, so nothing else is printed).
            std::panic::resume_unwind(Box::new(format!(
                "NF `{name}` failed {where_}: {msg} (on_failure = \"stop\" ends the run; \"bypass\", \"drop\" or \"restart\" would contain it)"
            )));
        }
        let sup = self.supervisor.as_mut().expect("checked above");
        sup.record(failure);
        let contract = self.actor.contract().clone();
        let old = std::mem::replace(&mut self.actor, Box::new(Discarded(contract)));
        // The broken actor is never called again; even its Drop runs under the guard.
        let _ = guarded(move || drop(old));
        match policy {
            OnFailure::Stop => unreachable!("handled above"),
            OnFailure::Bypass | OnFailure::Drop => sup.failed = true,
            OnFailure::Restart => {
                let built = match sup.rebuild.as_ref() {
                    Some(r) => guarded(|| r()).and_then(|b| b),
                    None => Err("no way to build it again".into()),
                };
                match built {
                    Ok(a) => {
                        self.actor = a;
                        sup.restarts += 1;
                        // A fresh instance has asked for nothing yet.
                        self.dynsub = FlowSubscriptions::default();
                    }
                    Err(e) => std::panic::resume_unwind(Box::new(format!(
                        "NF `{name}` failed {where_}: {msg}; on_failure = \"restart\" could not build it again: {e}"
                    ))),
                }
            }
        }
    }

    /// Names this stage `name` in reports (several stages may run one planned actor: the
    /// instances of a sharded stack).
    pub fn with_name(mut self, name: String) -> Stage {
        self.report.name = name;
        self
    }

    /// Adds what the actor publishes to `in_flight` (mode b's gate, see `RxStage::with_gate`).
    pub fn with_in_flight(mut self, in_flight: Arc<AtomicI64>) -> Stage {
        self.in_flight = Some(in_flight);
        self
    }

    /// Records a span for every event the actor handles (at most `capacity`).
    pub fn with_trace(mut self, core: u16, capacity: usize) -> Stage {
        self.trace = Some((core, TraceBuffer::new(capacity)));
        self
    }

    /// Lets the actor read TCP bytestreams (the TCP monitor's, for `DATA_RDY` events).
    pub fn with_streams(mut self, streams: Arc<dyn StreamAccess>) -> Stage {
        self.streams = Some(streams);
        self
    }

    /// The first subscription that accepts `ev`, if any.
    fn subscription_for(&self, ev: &EventDesc) -> Option<&LinkedSubscription> {
        subscription_for(&self.plan, &self.pool, ev)
    }

    /// Hands `ev` to the guests before the NF, to the NF, to the guests after it, and
    /// queues it with what they published.
    fn process(&mut self, mut ev: EventDesc) {
        if self.guests.is_empty() {
            self.handle_host(&mut ev);
        } else {
            self.run_guests(&mut ev, true);
            self.handle_host(&mut ev);
            self.run_guests(&mut ev, false);
        }
        self.enqueue(ev);
    }

    fn handle_host(&mut self, ev: &mut EventDesc) {
        let consumes = match self.subscription_for(ev) {
            Some(s) if !ev.is_dropped() || s.include_dropped => Some(s.consumes),
            _ => None,
        };
        let consumes = consumes.filter(|_| self.dynsub.allows(ev));
        self.dynsub.observe(ev);
        if let Some(consumes) = consumes {
            if let Some(sup) = self.supervisor.as_mut().filter(|s| s.failed) {
                // The NF failed: `bypass` forwards its events as if it did not subscribe,
                // `drop` drops them.
                if sup.policy == OnFailure::Drop {
                    sup.dropped += 1;
                    let reason = sup.reason;
                    self.mark_dropped(ev, reason);
                } else {
                    sup.bypassed += 1;
                    self.report.passed += 1;
                }
                return;
            }
            let ty = ev.event_type;
            let publisher = ev.publisher;
            let start = if self.trace.is_some() { now_ns() } else { 0 };
            let mut cx = Context::new(&self.pool, &mut self.outbox, self.plan.index, self.streams.as_deref());
            let verdict = if self.supervisor.is_some() {
                match guarded(|| self.actor.handle(ev, &mut cx)) {
                    Ok(v) => v,
                    Err(msg) => {
                        let at = (Some(ev.seq), Some(ev.ts_ns));
                        self.fail(Some(ev), msg, at);
                        return;
                    }
                }
            } else {
                self.actor.handle(ev, &mut cx)
            };
            if let Some((core, buf)) = self.trace.as_mut() {
                buf.record(handle_span(self.plan.index, *core, ev, ty, publisher, start));
            }
            self.count_handled(ty);
            if consumes {
                // A µStack rewrote the event (FRAME -> PKT/..., PKT/TCP -> PKT/TCP with a
                // snapshot): it is now this actor's publication.
                ev.publisher = self.plan.index;
            }
            if let Verdict::Drop(reason) = verdict {
                self.mark_dropped(ev, reason);
            }
        } else {
            self.report.passed += 1;
        }
    }

    /// Counts one handled event of type `ty` (see `handled`).
    fn count_handled(&mut self, ty: EventType) {
        if let Some(i) = self.handled.iter().position(|(t, _)| *t == ty) {
            self.handled[i].1 += 1;
            // Keep the most recent type first: a stage mostly sees one or two types.
            if i > 0 {
                self.handled.swap(0, i);
            }
        } else {
            self.handled.insert(0, (ty, 1));
        }
    }

    /// Folds the per-type counts into the report.
    fn fold_handled(&mut self) {
        for (t, n) in self.handled.drain(..) {
            *self.report.handled.entry(t).or_default() += n;
        }
    }

    fn enqueue(&mut self, ev: EventDesc) {
        if !self.outbox.changes.is_empty() {
            self.dynsub.apply(self.outbox.changes.drain(..));
        }
        // Drained, not taken: the outbox keeps its buffers (no allocation per event).
        let n = self.outbox.before.len() + self.outbox.after.len();
        self.report.published += n as u64;
        if let (Some(f), true) = (&self.in_flight, n > 0) {
            f.fetch_add(n as i64, std::sync::atomic::Ordering::AcqRel);
        }
        self.pending.extend(self.outbox.before.drain(..));
        if ev.flags & desc_flags::SPLIT != 0 {
            // In a parallel group: the copy closes this member's answer (see
            // `parallel::Merger`), so what came after it goes ahead, marked.
            self.pending.extend(self.outbox.after.drain(..).map(|mut a| {
                a.flags |= desc_flags::AFTER;
                a
            }));
            self.pending.push_back(ev);
        } else {
            self.pending.push_back(ev);
            self.pending.extend(self.outbox.after.drain(..));
        }
    }

    /// Pushes the pending queue; returns how many went out.
    fn flush(&mut self) -> usize {
        if let Some(c) = self.custody.as_mut() {
            use crate::supervise::custody as k;
            if self.pending.is_empty() {
                return 0;
            }
            c.cells.set(k::FORWARDED_INPUTS, c.forwarded_inputs);
            c.cells.set(k::FORWARDED_PRIMARIES, c.forwarded_primaries);
            c.cells.set(k::OUT_BEFORE, self.output.position());
            let kinds: Vec<(bool, bool)> =
                self.pending.iter().map(|e| (k::is_input(e, self.plan.index), e.is_primary())).collect();
            let sent = push_queue(&mut self.output, &mut self.pending);
            for (input, primary) in &kinds[..sent] {
                c.forwarded_inputs += u64::from(*input);
                c.forwarded_primaries += u64::from(*primary);
            }
            if !self.pending.is_empty() {
                self.report.stalls += 1;
            }
            return sent;
        }
        let sent = push_queue(&mut self.output, &mut self.pending);
        if !self.pending.is_empty() {
            self.report.stalls += 1;
        }
        sent
    }

    /// The end of input: the guests before the NF, the NF (in steps, over several polls:
    /// [`finish_next`](Self::finish_next)), the guests after it finish, then the marker.
    fn finish_guests(&mut self, end_seq: u64, before_host: bool) {
        for g in self.guests.iter_mut().filter(|g| g.before_host() == before_host) {
            g.finish(end_seq, &self.pool, &mut self.outbox, self.streams.as_deref());
        }
    }

    /// One step of the end of input, once what the last step published has gone out:
    /// the host's next [`Actor::finish_step`]; after its last, the guests after it and the
    /// end marker. The host's events published before its event go out step by step; those
    /// it publishes after its event stay in the outbox and follow the marker, as ever.
    fn finish_next(&mut self) {
        let Some(end) = self.finishing else { return };
        if self.finish_host_step(end.seq) {
            self.dynsub.apply(self.outbox.changes.drain(..));
            let before = std::mem::take(&mut self.outbox.before);
            let n = before.len();
            self.report.published += n as u64;
            if let (Some(f), true) = (&self.in_flight, n > 0) {
                f.fetch_add(n as i64, std::sync::atomic::Ordering::AcqRel);
            }
            self.pending.extend(before);
            return;
        }
        self.finish_guests(end.seq, false);
        self.finishing = None;
        self.enqueue(end);
        self.end_seen = true;
    }

    /// One step of the host's end of input; whether there is more to do.
    fn finish_host_step(&mut self, end_seq: u64) -> bool {
        if self.supervisor.as_ref().is_some_and(|s| s.failed) {
            return false;
        }
        let mut cx =
            Context::new(&self.pool, &mut self.outbox, self.plan.index, self.streams.as_deref()).at_end(end_seq);
        let result = if self.supervisor.is_some() {
            match guarded(|| self.actor.finish_step(&mut cx)) {
                Ok(r) => r,
                Err(msg) => {
                    self.fail(None, msg, (None, None));
                    Ok(false)
                }
            }
        } else {
            self.actor.finish_step(&mut cx)
        };
        match result {
            Ok(more) => more,
            Err(e) => {
                self.report.error = Some(e.to_string());
                false
            }
        }
    }

    /// Time passed (a skip marker); a supervised actor's panic here fails it like one in
    /// `handle`, with no event lost.
    fn tick(&mut self, seq: u64, ts_ns: u64) {
        for g in &mut self.guests {
            g.tick(seq, ts_ns, &self.pool, &mut self.outbox, self.streams.as_deref());
        }
        if self.supervisor.as_ref().is_some_and(|s| s.failed) {
            return;
        }
        let mut cx = Context::new(&self.pool, &mut self.outbox, self.plan.index, self.streams.as_deref());
        if self.supervisor.is_none() {
            self.actor.tick(seq, ts_ns, &mut cx);
        } else if let Err(msg) = guarded(|| self.actor.tick(seq, ts_ns, &mut cx)) {
            self.fail(None, msg, (Some(seq), Some(ts_ns)));
        }
    }

    /// Nothing came in: lets the actor run its timers ([`Actor::idle`]); what it publishes
    /// goes out stamped with the last sequence number seen.
    fn idle(&mut self) {
        let mut cx = Context::new(&self.pool, &mut self.outbox, self.plan.index, self.streams.as_deref());
        self.actor.idle(&mut cx);
        if self.outbox.is_empty() {
            return;
        }
        let n = self.outbox.len();
        self.report.published += n as u64;
        if let Some(f) = &self.in_flight {
            f.fetch_add(n as i64, std::sync::atomic::Ordering::AcqRel);
        }
        self.pending.extend(self.outbox.before.drain(..));
        self.pending.extend(self.outbox.after.drain(..));
    }

    fn write_report(&mut self) {
        self.fold_handled();
        // A failed actor was discarded: its counters died with it.
        self.report.counters = match &self.supervisor {
            Some(s) if s.failed => Vec::new(),
            Some(_) => guarded(|| self.actor.counters()).unwrap_or_default(),
            None => self.actor.counters(),
        };
        if let Some(s) = &self.supervisor {
            self.report.counters.extend(s.counters());
            self.report.failures = s.failures.clone();
            self.report.events_lost_in_failure = s.events_lost;
        }
        if self.dynsub.not_delivered > 0 {
            self.report.counters.push(("not_delivered_by_flow_subscription".into(), self.dynsub.not_delivered));
        }
        for (i, n) in self.drop_counts.iter().enumerate() {
            if *n > 0 {
                let name = self.plan.drop_reasons.get(i).cloned().unwrap_or_else(|| format!("reason {i}"));
                self.report.drops.insert(name, *n);
            }
        }
        if let Some(b) = &self.guest_box {
            b.leave_reports(self.guests.drain(..).map(Guest::into_report).collect());
        }
        self.report.finished = true;
        if let Some((_, buf)) = self.trace.as_mut() {
            (self.report.trace, self.report.trace_dropped) = buf.take();
        }
        publish(&self.slot, &self.report);
    }
}

impl Runnable for Stage {
    fn name(&self) -> &str {
        &self.report.name
    }

    fn poll(&mut self) -> PollResult {
        let mut work = self.flush();
        if !self.pending.is_empty() {
            return PollResult::from_work(work);
        }
        if self.finishing.is_some() {
            self.finish_next();
            work += 1 + self.flush();
            if self.end_seen && self.pending.is_empty() {
                self.write_report();
                return PollResult::Finished;
            }
            return PollResult::from_work(work);
        }
        if self.end_seen {
            self.write_report();
            return PollResult::Finished;
        }
        self.inbuf.clear();
        let mut inbuf = std::mem::take(&mut self.inbuf);
        let n = self.take_burst(&mut inbuf);
        if let Some(b) = &self.guest_box {
            // After the burst was taken (acquire): a guest posted before RX stamped the
            // packets in it is seen here (`guest.rs`).
            self.guests.extend(b.take());
        }
        for ev in inbuf.drain(..) {
            if ev.is_end() {
                self.finish_guests(ev.seq, true);
                self.finishing = Some(ev);
                self.finish_next();
                break;
            }
            if ev.is_skip() {
                // A marker for the merger behind sharded stacks; the actor only learns that
                // time passed (a stack ends flows that timed out, before the marker).
                self.tick(ev.seq, ev.ts_ns);
                self.enqueue(ev);
                continue;
            }
            self.process(ev);
        }
        self.inbuf = inbuf;
        if n == 0 && !self.end_seen && self.finishing.is_none() && self.supervisor.as_ref().is_none_or(|s| !s.failed) {
            self.idle();
        }
        work += n + self.flush();
        if self.end_seen && self.pending.is_empty() {
            self.write_report();
            return PollResult::Finished;
        }
        PollResult::from_work(work)
    }
}
