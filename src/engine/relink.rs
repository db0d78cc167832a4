//! An NF added or removed by an offline relink (`--reload-at N:FILE` whose file adds or
//! removes NFs, docs/reconfiguration.md): the run links the union of the graphs once, and
//! each such NF handles only the events of packets in its active range `[from, until)`.
//!
//! * **Added at N**: events of packets before N pass it by (as if it were not linked), so it
//!   sees each flow from the flow's first event of packet N or later.
//! * **Removed at N**: at the first event of packet N or later it is given, it finishes as at
//!   the end of the input (its output is completed: `flow_stats` writes the records of its
//!   open flows, counted up to packet N − 1) and is dropped — its per-flow state with it; from
//!   then on every event passes it by. Its counters are those it had when it finished.
//!
//! Every mode hands an NF the same events in the same order, so these boundaries are the
//! same in modes a–d; no packet is lost or duplicated (events passing by continue as usual).
//!
//! A run with a control socket wraps every NF (active from packet 0, until "never"), so that
//! a live reload may remove one: RX stamps the NF's `until` with its next packet number
//! (`actors::boundary`), and the NF retires at its first event of that packet or later. The
//! cost is one atomic load per event.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use actors::desc::EventDesc;
use actors::{Actor, ActorError, Context, Contract, Verdict};

/// The NF, while it is there.
pub(super) struct Gated {
    inner: Option<Box<dyn Actor>>,
    contract: Contract,
    from: u64,
    /// The first packet it no longer handles (`u64::MAX`: none yet); stamped by RX for a
    /// live removal.
    until: Arc<AtomicU64>,
    counters: Vec<(String, u64)>,
    /// Its finish failed at the boundary: reported at the end of the run.
    failed: Option<ActorError>,
}

impl Gated {
    /// `inner`, handling the events of packets in `[from, until)`.
    pub fn new(inner: Box<dyn Actor>, (from, until): (u64, Arc<AtomicU64>)) -> Gated {
        let contract = inner.contract().clone();
        Gated { inner: Some(inner), contract, from, until, counters: Vec::new(), failed: None }
    }

    fn retire(&mut self, cx: &mut Context<'_>) -> Result<(), ActorError> {
        let Some(mut inner) = self.inner.take() else { return Ok(()) };
        let r = inner.finish(cx);
        self.counters = inner.counters();
        if self.from > 0 {
            self.counters.push(("added_at_packet".into(), self.from));
        }
        let until = self.until.load(Ordering::Acquire);
        if until != u64::MAX {
            self.counters.push(("removed_at_packet".into(), until));
        }
        r
    }
}

impl Actor for Gated {
    fn contract(&self) -> &Contract {
        &self.contract
    }

    fn handle(&mut self, ev: &mut EventDesc, cx: &mut Context<'_>) -> Verdict {
        if ev.seq >= self.until.load(Ordering::Acquire) {
            // A failure to complete its output is reported at the end, by `finish`.
            if let Err(e) = self.retire(cx) {
                self.failed = Some(e);
            }
            return Verdict::Continue;
        }
        match self.inner.as_mut() {
            Some(inner) if ev.seq >= self.from => inner.handle(ev, cx),
            _ => Verdict::Continue,
        }
    }

    fn finish(&mut self, cx: &mut Context<'_>) -> Result<(), ActorError> {
        match self.failed.take() {
            Some(e) => Err(e),
            None => self.retire(cx),
        }
    }

    fn tick(&mut self, seq: u64, ts_ns: u64, cx: &mut Context<'_>) {
        let until = self.until.load(Ordering::Acquire);
        if let Some(inner) = self.inner.as_mut().filter(|_| seq >= self.from && seq < until) {
            inner.tick(seq, ts_ns, cx);
        }
    }

    fn counters(&self) -> Vec<(String, u64)> {
        match &self.inner {
            Some(inner) => {
                let mut c = inner.counters();
                if self.from > 0 {
                    c.push(("added_at_packet".into(), self.from));
                }
                c
            }
            None => self.counters.clone(),
        }
    }
}
