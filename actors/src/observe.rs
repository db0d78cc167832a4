//! Observation logs: what a network function saw and said, in a canonical form.
//!
//! [`Observed`] wraps any actor (a decorator, STYLE.md habit 3) and writes one line per event
//! it handles: the event's type, the packet number (its logical timestamp), the flow by its
//! canonical name (the number of the flow's first packet, the same in every stack instance),
//! the direction, the TCP snapshot (both endpoints' state, sequence numbers, windows, flags,
//! both frontiers, which update), a hash of the bytes the event lets the NF see (a
//! `DATA_RDY`'s `[aux, frontier)`; a packet's captured bytes), the verdict, and every event
//! the NF published in answer. Nothing in a line depends on thread timing, core placement,
//! flow-table slots or which execution mode ran: the same input gives the same lines. The
//! consistency checker compares these logs between modes.
//!
//! Lines are kept in handling order, which for one flow is packet order in every mode;
//! [`canonical`] sorts them by packet number (stable), which also makes logs of modes that
//! interleave flows differently (sharded stacks) comparable.

use std::sync::{Arc, Mutex};

use crate::contract::{Actor, ActorError, Context, Contract, Verdict};
use crate::desc::{snapshot_update, EventDesc, SideSnapshot};
use crate::event::{builtin, EventRegistry};

/// A shared, growing log.
pub type Log = Arc<Mutex<Vec<String>>>;

/// FNV-1a, 64 bits: a stable hash for logs (not for security).
#[derive(Clone, Copy, Debug)]
pub struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    /// Adds bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    /// The hash.
    pub fn finish(self) -> u64 {
        self.0
    }
}

/// An actor whose every handled event is logged (see the module docs).
pub struct Observed {
    inner: Box<dyn Actor>,
    names: EventRegistry,
    log: Log,
    lines: Vec<String>,
}

impl Observed {
    /// Wraps `inner`; lines go to `log` when the actor finishes.
    pub fn new(inner: Box<dyn Actor>, names: EventRegistry, log: Log) -> Observed {
        Observed { inner, names, log, lines: Vec::new() }
    }
}

fn side(s: &SideSnapshot) -> String {
    format!("{}/{}/{}/{}/{:02x}", s.state, s.next_seq, s.ack, s.window, s.flags_seen)
}

/// The canonical line of one event as an NF sees it, without the verdict part.
pub fn describe(ev: &EventDesc, names: &EventRegistry, cx: &Context<'_>) -> String {
    let dir = if ev.flow.is_none() {
        "-"
    } else if ev.to_server() {
        "c>s"
    } else {
        "s>c"
    };
    let mut line = format!("{} {} flow={}{}", ev.seq, names.name(ev.event_type), ev.flow_start, dir);
    if ev.event_type != builtin::DATA_RDY && ev.event_type != builtin::FLOW_TCP && !builtin::FLOW.covers(ev.event_type)
    {
        // Packet events: the bytes the NF sees.
        if let Some(h) = ev.packet {
            let mut f = Fnv::default();
            f.update(cx.packet_bytes(h));
            line += &format!(" pkt={:016x}", f.finish());
        }
    } else {
        line += &format!(" aux={}", ev.aux);
    }
    if ev.snap.update != snapshot_update::NONE
        || ev.event_type == builtin::DATA_RDY
        || builtin::FLOW_TCP.covers(ev.event_type)
    {
        let s = &ev.snap;
        line += &format!(
            " upd={} c={} s={} fr={},{}",
            s.update,
            side(&s.client),
            side(&s.server),
            s.frontier[0],
            s.frontier[1]
        );
    }
    if ev.event_type == builtin::DATA_RDY {
        let mut f = Fnv::default();
        let res = cx.data_ready(ev, &mut |c| match c {
            crate::contract::Chunk::Data(b) => f.update(b),
            // A gap: its length, marked (never its bytes: there are none).
            crate::contract::Chunk::Gap(n) => {
                f.update(b"\0gap");
                f.update(&n.to_le_bytes());
            }
        });
        line += &match res {
            Ok(()) => format!(" data={:016x}", f.finish()),
            Err(e) => format!(" data=unreadable({e})"),
        };
    }
    line
}

impl Actor for Observed {
    fn contract(&self) -> &Contract {
        self.inner.contract()
    }

    fn handle(&mut self, ev: &mut EventDesc, cx: &mut Context<'_>) -> Verdict {
        let mut line = describe(ev, &self.names, cx);
        let before = cx.published().count();
        let v = self.inner.handle(ev, cx);
        line += match v {
            Verdict::Continue => " -> continue".to_string(),
            Verdict::Drop(r) => format!(
                " -> drop:{}",
                self.inner.contract().drop_reasons.get(usize::from(r)).map_or("?", |s| s.as_str())
            ),
        }
        .as_str();
        for p in cx.published().skip(before) {
            line += &format!(" pub[{} aux={} flow={}]", self.names.name(p.event_type), p.aux, p.flow_start);
        }
        self.lines.push(line);
        v
    }

    fn finish(&mut self, cx: &mut Context<'_>) -> Result<(), ActorError> {
        let r = self.inner.finish(cx);
        for p in cx.published() {
            self.lines.push(format!("end pub[{} aux={} flow={}]", self.names.name(p.event_type), p.aux, p.flow_start));
        }
        if let Ok(mut log) = self.log.lock() {
            log.append(&mut self.lines);
        }
        r
    }

    fn counters(&self) -> Vec<(String, u64)> {
        self.inner.counters()
    }
}

/// Sorts log lines by packet number and flow, keeping the handling order within one packet
/// of one flow (the canonical form the checker compares). Events of different flows that
/// carry the same packet number — flows ended at the end of input — may be raised in any
/// order by sharded stacks; within a flow the order is the stack's and must match.
pub fn canonical(lines: &[String]) -> Vec<String> {
    let key = |l: &String| {
        let seq = l.split(' ').next().and_then(|n| n.parse::<u64>().ok()).unwrap_or(u64::MAX);
        let flow = l
            .split(' ')
            .find_map(|w| w.strip_prefix("flow="))
            .and_then(|f| f.trim_end_matches(|c: char| !c.is_ascii_digit()).parse::<u64>().ok())
            .unwrap_or(0);
        (seq, flow)
    };
    let mut v = lines.to_vec();
    v.sort_by_key(key);
    v
}
