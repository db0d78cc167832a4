//! Per-flow upgrade to the proxy (`[stack.proxy] upgrade = "on_request"`): which flows to
//! the intercepted port the proxy terminates, decided per flow by a policy NF at the
//! flow's SYN. docs/proxy.md "Per-flow upgrade to the proxy" has the whole story.
//!
//! [`Gate`] is the bookkeeping, free of I/O (the actor sends and publishes):
//!
//! * a SYN of a flow with no decision is **held** (its frame copied, at most
//!   [`UpgradeConfig::hold_max`] at once, each at most [`UpgradeConfig::hold`]) while the
//!   actor asks the policy NF (`FLOW_REQ` → `FLOW_DEST` with a
//!   [`ProxyChoice`](actors::splice::ProxyChoice));
//! * the answer (or the hold's timeout, which passes the flow) becomes a **decision entry**
//!   keyed by the client → server 4-tuple: `Proxy` frames go into smoltcp, `Pass` frames
//!   continue unchanged. Entries are bounded ([`UpgradeConfig::max_decisions`], held SYNs
//!   included); an entry goes [`LINGER`] after the flow's RST or FIN, or after [`IDLE`]
//!   without a frame;
//! * a frame with no entry and no SYN (a flow older than the proxy, or whose entry went)
//!   passes, and so does a SYN that finds the hold or the table full (counted).

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use actors::desc::FlowRef;

use crate::parse::tcp_flags::{FIN, RST, SYN};

/// An entry stays this long after its flow's FIN or RST (the last ACKs still find it).
pub const LINGER: Duration = Duration::from_secs(2);
/// An entry with no frame for this long goes.
pub const IDLE: Duration = Duration::from_secs(300);

/// The limits of a [`Gate`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UpgradeConfig {
    /// SYNs held at once, at most (beyond: the flow passes).
    pub hold_max: usize,
    /// Longest hold (then the flow passes, counted `hold_timeouts`).
    pub hold: Duration,
    /// Decision entries (held SYNs included), at most (beyond: new flows pass unrecorded).
    pub max_decisions: usize,
}

/// A flow's client → server 4-tuple.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    /// Client address and port.
    pub src: (Ipv4Addr, u16),
    /// Server address and port.
    pub dst: (Ipv4Addr, u16),
}

/// What to do with a frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Into the proxy.
    Proxy,
    /// Continue unchanged.
    Pass,
    /// A new flow's SYN, now held: ask the policy about `flow`.
    Ask(FlowRef),
    /// A SYN already held (a retransmission): drop it, the first is kept.
    Held,
}

/// A decided flow.
#[derive(Clone, Copy, Debug)]
struct Entry {
    proxy: bool,
    last: Instant,
    /// FIN or RST seen.
    ending: bool,
}

/// A held SYN.
#[derive(Debug)]
struct HeldSyn {
    key: Key,
    frame: Vec<u8>,
    port: u8,
    since: Instant,
}

/// Counters of the gate.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GateStats {
    /// Flows the policy sent into the proxy.
    pub flows_proxied: u64,
    /// Flows passed on the cheap path (by the policy, a timeout or a full table).
    pub flows_passed: u64,
    /// Held SYNs whose answer did not come in time (passed).
    pub hold_timeouts: u64,
    /// SYNs passed because [`UpgradeConfig::hold_max`] SYNs were held.
    pub hold_full: u64,
    /// SYNs passed unrecorded because the decision table was full.
    pub decisions_full: u64,
    /// Answers for no held flow (late, after a timeout, or unknown).
    pub late_answers: u64,
    /// Answers that were not a proxy choice (read as pass).
    pub foreign_answers: u64,
}

/// The decision table and the held SYNs (see the module docs).
#[derive(Debug)]
pub struct Gate {
    cfg: UpgradeConfig,
    entries: HashMap<Key, Entry>,
    held: HashMap<FlowRef, HeldSyn>,
    held_keys: HashMap<Key, FlowRef>,
    next_id: u32,
    /// Counters.
    pub stats: GateStats,
}

impl Gate {
    /// An empty gate.
    pub fn new(cfg: UpgradeConfig) -> Gate {
        Gate {
            cfg,
            entries: HashMap::new(),
            held: HashMap::new(),
            held_keys: HashMap::new(),
            next_id: 0,
            stats: GateStats::default(),
        }
    }

    /// Decision entries now (held SYNs not included).
    pub fn decisions(&self) -> usize {
        self.entries.len()
    }

    /// SYNs held now.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Classifies a client → server frame of `key` (TCP `flags`), in by `port`; `flow` is
    /// its L2/3 flow when known (the request carries it; otherwise the gate makes an id).
    pub fn on_frame(
        &mut self,
        now: Instant,
        key: Key,
        flags: u8,
        frame: &[u8],
        port: u8,
        flow: Option<FlowRef>,
    ) -> Step {
        let (syn, fin, rst) = (flags & SYN != 0, flags & FIN != 0, flags & RST != 0);
        if let Some(e) = self.entries.get_mut(&key) {
            e.last = now;
            e.ending |= fin || rst;
            return if e.proxy { Step::Proxy } else { Step::Pass };
        }
        if self.held_keys.contains_key(&key) {
            return if syn && !rst { Step::Held } else { Step::Pass };
        }
        if !syn || rst {
            return Step::Pass;
        }
        if self.held.len() >= self.cfg.hold_max {
            self.stats.hold_full += 1;
            self.stats.flows_passed += 1;
            return Step::Pass;
        }
        if self.entries.len() + self.held.len() >= self.cfg.max_decisions {
            self.stats.decisions_full += 1;
            self.stats.flows_passed += 1;
            return Step::Pass;
        }
        let flow = match flow {
            Some(f) if !self.held.contains_key(&f) => f,
            _ => {
                // An id of the gate's own: generation u32::MAX keeps it apart from the
                // flow table's (whose generations start at 1 and would need 4e9 reuses).
                self.next_id = self.next_id.wrapping_add(1);
                FlowRef::new(self.next_id, u32::MAX)
            }
        };
        self.held.insert(flow, HeldSyn { key, frame: frame.to_vec(), port, since: now });
        self.held_keys.insert(key, flow);
        Step::Ask(flow)
    }

    /// The policy's answer for `flow`: `Some(proxy)` for a choice, `None` for an answer
    /// that is not one (passed). Returns the held SYN and its ingress port, or `None` when
    /// nothing was held for `flow` (counted).
    pub fn on_answer(&mut self, now: Instant, flow: FlowRef, proxy: Option<bool>) -> Option<(Vec<u8>, u8, bool)> {
        let Some(h) = self.held.remove(&flow) else {
            self.stats.late_answers += 1;
            return None;
        };
        self.held_keys.remove(&h.key);
        if proxy.is_none() {
            self.stats.foreign_answers += 1;
        }
        let proxy = proxy.unwrap_or(false);
        if proxy {
            self.stats.flows_proxied += 1;
        } else {
            self.stats.flows_passed += 1;
        }
        self.entries.insert(h.key, Entry { proxy, last: now, ending: false });
        Some((h.frame, h.port, proxy))
    }

    /// Held SYNs past their time: passed (their frames and ports returned, each flow
    /// recorded as passed); entries past [`LINGER`] or [`IDLE`] go.
    pub fn expire(&mut self, now: Instant) -> Vec<(Vec<u8>, u8)> {
        let hold = self.cfg.hold;
        let late: Vec<FlowRef> =
            self.held.iter().filter(|(_, h)| now.saturating_duration_since(h.since) >= hold).map(|(f, _)| *f).collect();
        let mut out = Vec::with_capacity(late.len());
        for f in late {
            if let Some(h) = self.held.remove(&f) {
                self.held_keys.remove(&h.key);
                self.stats.hold_timeouts += 1;
                self.stats.flows_passed += 1;
                self.entries.insert(h.key, Entry { proxy: false, last: now, ending: false });
                out.push((h.frame, h.port));
            }
        }
        self.entries.retain(|_, e| {
            let idle = now.saturating_duration_since(e.last);
            idle < IDLE && !(e.ending && idle >= LINGER)
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(port: u16) -> Key {
        Key { src: (Ipv4Addr::new(10, 0, 0, 1), port), dst: (Ipv4Addr::new(10, 99, 0, 11), 80) }
    }

    const CFG: UpgradeConfig = UpgradeConfig { hold_max: 2, hold: Duration::from_millis(500), max_decisions: 3 };

    #[test]
    fn entries_are_bounded_and_freed() {
        let t = Instant::now();
        let mut g = Gate::new(CFG);
        let Step::Ask(a) = g.on_frame(t, key(1), 0x02, b"syn1", 0, None) else { panic!() };
        assert_eq!(g.on_frame(t, key(1), 0x02, b"syn1", 0, None), Step::Held);
        let Step::Ask(b) = g.on_frame(t, key(2), 0x02, b"syn2", 0, None) else { panic!() };
        assert_eq!(g.on_frame(t, key(3), 0x02, b"syn3", 0, None), Step::Pass, "two held at most");
        assert_eq!(g.stats.hold_full, 1);
        assert_eq!(g.on_answer(t, a, Some(true)), Some((b"syn1".to_vec(), 0, true)));
        assert_eq!(g.on_answer(t, a, Some(true)), None, "answered once");
        assert_eq!(g.on_answer(t, b, None), Some((b"syn2".to_vec(), 0, false)));
        assert_eq!((g.stats.foreign_answers, g.stats.late_answers), (1, 1));
        assert_eq!(g.on_frame(t, key(1), 0x10, b"ack", 0, None), Step::Proxy);
        assert_eq!(g.on_frame(t, key(2), 0x10, b"ack", 0, None), Step::Pass);
        let Step::Ask(_) = g.on_frame(t, key(4), 0x02, b"syn4", 0, None) else { panic!() };
        assert_eq!(g.on_frame(t, key(5), 0x02, b"syn5", 0, None), Step::Pass, "three entries at most");
        assert_eq!(g.stats.decisions_full, 1);
        // The held SYN times out; a FIN'd flow goes after LINGER, the other after IDLE.
        assert_eq!(g.expire(t + Duration::from_millis(500)), vec![(b"syn4".to_vec(), 0)]);
        assert_eq!(g.stats.hold_timeouts, 1);
        assert_eq!(g.on_frame(t, key(1), 0x11, b"fin", 0, None), Step::Proxy);
        g.expire(t + LINGER);
        assert_eq!(g.decisions(), 2);
        g.expire(t + IDLE + LINGER);
        assert_eq!((g.decisions(), g.held()), (0, 0));
        assert_eq!(g.on_frame(t, key(2), 0x10, b"ack", 0, None), Step::Pass, "no entry, no SYN: pass");
        assert_eq!((g.stats.flows_proxied, g.stats.flows_passed), (1, 4));
    }
}
