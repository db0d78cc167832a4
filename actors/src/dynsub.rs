//! Dynamic per-flow subscriptions.
//!
//! An NF may stop (and resume) receiving events of a type for one flow at run time —
//! DPI unsubscribes from a flow once it knows the protocol; a signature matcher can drop a
//! flow after an alert. The NF asks through its [`Context`](crate::Context)
//! (`unsubscribe_flow` / `subscribe_flow`); the runner that delivers its events (a
//! [`Stage`](crate::stage::Stage), or mode a's `PrivateChain`) applies the change **after
//! the event being handled** and consults the table before every later delivery. Events of
//! one flow reach an NF in the same order in every execution mode, so the change takes
//! effect at the same event everywhere and `mbox check` still agrees.
//!
//! Flows are named by their canonical name (the number of their first packet), and a flow's
//! entries are forgotten when its `FLOW` end event passes the runner, so the table holds at
//! most the live flows the NF changed. Events that the table keeps from the NF are counted
//! as `not_delivered`.

use rustc_hash::FxHashMap;

use crate::desc::{EventDesc, FlowEvent};
use crate::event::{builtin, EventType};

/// One actor's per-flow subscription changes.
#[derive(Debug, Default)]
pub struct FlowSubscriptions {
    /// Per flow: the types it unsubscribed from.
    off: FxHashMap<u64, Vec<EventType>>,
    /// Events withheld.
    pub not_delivered: u64,
}

impl FlowSubscriptions {
    /// Applies changes (flow, type, subscribe?) asked for while handling an event.
    pub fn apply(&mut self, changes: impl IntoIterator<Item = (u64, EventType, bool)>) {
        for (flow, t, on) in changes {
            let list = self.off.entry(flow).or_default();
            list.retain(|x| *x != t);
            if !on {
                list.push(t);
            }
            if list.is_empty() {
                self.off.remove(&flow);
            }
        }
    }

    /// Whether `ev` may be delivered (counts it when not).
    pub fn allows(&mut self, ev: &EventDesc) -> bool {
        if self.off.is_empty() {
            return true; // the common case: no lookup on the hot path
        }
        let Some(list) = self.off.get(&ev.flow_start) else { return true };
        if list.iter().any(|t| t.covers(ev.event_type)) {
            self.not_delivered += 1;
            false
        } else {
            true
        }
    }

    /// Forgets a flow when its L2/3 `FLOW` end event passes.
    pub fn observe(&mut self, ev: &EventDesc) {
        if !self.off.is_empty()
            && ev.event_type == builtin::FLOW
            && matches!(FlowEvent::decode(ev.aux), Some(FlowEvent::End(_)))
        {
            self.off.remove(&ev.flow_start);
        }
    }

    /// Flows with changes.
    pub fn len(&self) -> usize {
        self.off.len()
    }

    /// No flow has changes.
    pub fn is_empty(&self) -> bool {
        self.off.is_empty()
    }
}
