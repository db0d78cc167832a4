//! NFs added to a running chain: **guests** of a running NF's stage.
//!
//! A live relink (docs/reconfiguration.md) cannot insert a stage into a running chain
//! without draining it: the rings between stages are fixed, single-producer single-consumer,
//! and sized at start. It does not need to. An NF added while the run goes on is built by the
//! controller, linked against the running graph (its own [`PlannedActor`], with the running
//! actors' indices) and handed to the stage of the kept NF next to its place in the new
//! chain — its **host** — through a [`GuestBox`]. The host's stage runs the guest on each
//! event right after its own NF (or right before it, when the guest comes first in the
//! chain): exactly where a stage of its own would have handled the event, and on the same
//! core. Nothing is rewired, nothing drained, no packet waits.
//!
//! From when: the guest is posted *before* the reload is handed to RX's boundary
//! ([`crate::boundary`]), and the stage looks for posted guests after taking each burst, so
//! the guest is in place before the stage can see the first packet RX stamps. It handles the
//! events of packets numbered `from` or later (`from` is the stamped cell): it sees each flow
//! from the flow's next event, exactly as an NF added offline at that packet
//! (`--reload-at`).
//!
//! What a guest does not have (said in the docs): a trace span of its own, and events it
//! publishes reach no NF that was running before it (their links were made at start; the
//! controller refuses a new file that would subscribe a kept NF to the guest). A guest that
//! panics is discarded (its events pass it by) and its failure reported; its drops are
//! counted under its own name and reasons.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use runtime::pool::PoolView;

use crate::contract::{Actor, Context, Outbox, StreamAccess, Verdict};
use crate::controller::PlannedActor;
use crate::desc::EventDesc;
use crate::dynsub::FlowSubscriptions;
use crate::stage::{mark_dropped, subscription_for, StageReport};
use crate::supervise::{guarded, unix_ms, Failure, OnFailure};

/// An NF added to a running chain (see the module docs).
pub struct Guest {
    actor: Option<Box<dyn Actor>>,
    plan: PlannedActor,
    /// The first packet it handles (`u64::MAX` until RX stamps it).
    from: Arc<AtomicU64>,
    /// Runs before the host's NF (it comes first in the new chain), not after.
    before_host: bool,
    report: StageReport,
    drop_counts: Vec<u64>,
    dynsub: FlowSubscriptions,
}

impl Guest {
    /// `actor`, linked as `plan` (indices of the running chain; its own index unused by any
    /// running actor), handling the events of packets from `from` on.
    pub fn new(actor: Box<dyn Actor>, plan: PlannedActor, from: Arc<AtomicU64>, before_host: bool) -> Guest {
        let report = StageReport { name: plan.name.clone(), kind: plan.kind.clone(), ..Default::default() };
        let drop_counts = vec![0; plan.drop_reasons.len().max(1)];
        Guest { actor: Some(actor), plan, from, before_host, report, drop_counts, dynsub: FlowSubscriptions::default() }
    }

    /// Whether it runs before the host's NF.
    pub fn before_host(&self) -> bool {
        self.before_host
    }

    fn active_for(&self, seq: u64) -> bool {
        self.actor.is_some() && seq >= self.from.load(Ordering::Acquire)
    }

    /// Hands `ev` to the guest if it subscribed to it; what it publishes goes into `outbox`
    /// (forwarded by the host's stage with the event).
    pub fn process(
        &mut self,
        ev: &mut EventDesc,
        pool: &PoolView,
        outbox: &mut Outbox,
        streams: Option<&dyn StreamAccess>,
    ) {
        let wanted = self.active_for(ev.seq)
            && subscription_for(&self.plan, pool, ev).is_some_and(|s| !ev.is_dropped() || s.include_dropped)
            && self.dynsub.allows(ev);
        self.dynsub.observe(ev);
        let Some(actor) = self.actor.as_mut().filter(|_| wanted) else {
            self.report.passed += 1;
            return;
        };
        // Its own publications only: the host's per-flow subscription changes were applied.
        let mut own = Outbox::new();
        let mut cx = Context::new(pool, &mut own, self.plan.index, streams);
        let verdict = match guarded(|| actor.handle(ev, &mut cx)) {
            Ok(v) => v,
            Err(msg) => {
                self.fail(Some(ev), msg);
                return;
            }
        };
        *self.report.handled.entry(ev.event_type).or_default() += 1;
        self.dynsub.apply(own.changes.drain(..));
        self.publish(own, outbox);
        if let Verdict::Drop(reason) = verdict {
            mark_dropped(ev, self.plan.index, reason, &mut self.drop_counts);
        }
    }

    /// Time passed (a skip marker).
    pub fn tick(
        &mut self,
        seq: u64,
        ts_ns: u64,
        pool: &PoolView,
        outbox: &mut Outbox,
        streams: Option<&dyn StreamAccess>,
    ) {
        if !self.active_for(seq) {
            return;
        }
        let mut own = Outbox::new();
        let mut cx = Context::new(pool, &mut own, self.plan.index, streams);
        let actor = self.actor.as_mut().expect("active");
        if let Err(msg) = guarded(|| actor.tick(seq, ts_ns, &mut cx)) {
            self.fail(None, msg);
            return;
        }
        self.publish(own, outbox);
    }

    /// Moves what it published into the stage's outbox.
    fn publish(&mut self, mut own: Outbox, outbox: &mut Outbox) {
        let (before, after) = own.take();
        self.report.published += (before.len() + after.len()) as u64;
        outbox.before.extend(before);
        outbox.after.extend(after);
    }

    /// The end of input: finishes the NF; what it publishes goes into `outbox`.
    pub fn finish(&mut self, end_seq: u64, pool: &PoolView, outbox: &mut Outbox, streams: Option<&dyn StreamAccess>) {
        let Some(actor) = self.actor.as_mut() else { return };
        let mut own = Outbox::new();
        let mut cx = Context::new(pool, &mut own, self.plan.index, streams).at_end(end_seq);
        match guarded(|| actor.finish(&mut cx)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => self.report.error = Some(e.to_string()),
            Err(msg) => {
                self.fail(None, msg);
                return;
            }
        }
        self.publish(own, outbox);
    }

    /// The NF panicked: it is discarded (its events pass it by from now on) and the
    /// failure recorded; the event it was handling goes on unchanged.
    fn fail(&mut self, ev: Option<&mut EventDesc>, msg: String) {
        if let Some(a) = self.actor.take() {
            let _ = guarded(move || drop(a));
        }
        self.report.counters.push(("failed".into(), 1));
        self.report.failures.push(Failure {
            nf: self.plan.name.clone(),
            what: "panic".into(),
            message: msg,
            policy: OnFailure::Bypass,
            seq: ev.as_ref().map(|e| e.seq),
            ts_ns: ev.as_ref().map(|e| e.ts_ns),
            unix_ms: unix_ms(),
            ..Failure::default()
        });
    }

    /// Its report (the stage's report of an NF that had a stage of its own), and its plan
    /// (for naming its drops).
    pub fn into_report(mut self) -> (StageReport, PlannedActor) {
        if let Some(a) = &self.actor {
            let mut c = guarded(|| a.counters()).unwrap_or_default();
            c.append(&mut self.report.counters);
            self.report.counters = c;
        }
        let from = self.from.load(Ordering::Acquire);
        if from != u64::MAX {
            self.report.counters.push(("added_at_packet".into(), from));
        }
        for (i, n) in self.drop_counts.iter().enumerate() {
            if *n > 0 {
                let name = self.plan.drop_reasons.get(i).cloned().unwrap_or_else(|| format!("reason {i}"));
                self.report.drops.insert(name, *n);
            }
        }
        self.report.finished = true;
        (self.report, self.plan)
    }
}

/// Where the controller posts guests for one running stage, and where the stage leaves their
/// reports at the end (see the module docs).
#[derive(Default)]
pub struct GuestBox {
    posted: AtomicBool,
    incoming: Mutex<Vec<Guest>>,
    reports: Mutex<Vec<(StageReport, PlannedActor)>>,
}

impl std::fmt::Debug for GuestBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuestBox").field("posted", &self.posted.load(Ordering::Relaxed)).finish()
    }
}

impl GuestBox {
    /// An empty box.
    pub fn new() -> Arc<GuestBox> {
        Arc::default()
    }

    /// Hands `guest` to the stage (it takes it after its next burst).
    pub fn post(&self, guest: Guest) {
        if let Ok(mut g) = self.incoming.lock() {
            g.push(guest);
            self.posted.store(true, Ordering::Release);
        }
    }

    /// The stage: the guests posted since the last call (one atomic load when none).
    pub fn take(&self) -> Vec<Guest> {
        if !self.posted.load(Ordering::Acquire) {
            return Vec::new();
        }
        match self.incoming.lock() {
            Ok(mut g) => {
                self.posted.store(false, Ordering::Release);
                std::mem::take(&mut *g)
            }
            Err(_) => Vec::new(),
        }
    }

    /// The stage, when it finishes: its guests' reports.
    pub fn leave_reports(&self, reports: Vec<(StageReport, PlannedActor)>) {
        if let Ok(mut r) = self.reports.lock() {
            r.extend(reports);
        }
    }

    /// The run, after it ended: every guest's report, with its plan; and the guests posted
    /// too late to be taken (their stage had finished), which never ran.
    pub fn reports(&self) -> Vec<(StageReport, PlannedActor)> {
        let mut out = self.reports.lock().map(|mut r| std::mem::take(&mut *r)).unwrap_or_default();
        for g in self.take() {
            out.push(g.into_report());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::Contract;

    struct Nothing(Contract);
    impl Actor for Nothing {
        fn contract(&self) -> &Contract {
            &self.0
        }
        fn handle(&mut self, _ev: &mut EventDesc, _cx: &mut Context<'_>) -> Verdict {
            Verdict::Continue
        }
    }

    #[test]
    fn a_box_hands_each_guest_once() {
        let b = GuestBox::new();
        assert!(b.take().is_empty());
        let plan = PlannedActor {
            index: 9,
            name: "g".into(),
            kind: "k".into(),
            subscriptions: Vec::new(),
            drop_reasons: Vec::new(),
        };
        let from = Arc::new(AtomicU64::new(u64::MAX));
        b.post(Guest::new(Box::new(Nothing(Contract::default())), plan, from.clone(), false));
        let got = b.take();
        assert_eq!(got.len(), 1);
        assert!(b.take().is_empty());
        assert!(!got[0].active_for(1), "not active before RX stamps its packet");
        from.store(5, Ordering::Release);
        assert!(!got[0].active_for(4));
        assert!(got[0].active_for(5));
    }
}
