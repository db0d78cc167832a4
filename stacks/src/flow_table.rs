//! The flow table of the L2/3 stack: finds or creates the flow of each packet, ends flows on
//! idle timeout, after a TCP close, on eviction and at shutdown. Packet time only: the table
//! never reads a clock, so the same input always gives the same flows (reference mode and the
//! parallel runtime agree).
//!
//! ```
//! use stacks::flow::{Endpoint, FlowKey};
//! use stacks::flow_table::{Direction, EndReason, FlowTable, FlowTableConfig};
//! use stacks::parse::tcp_flags::{ACK, FIN, SYN};
//!
//! let ms = 1_000_000;
//! let mut table = FlowTable::new(FlowTableConfig::default());
//! let mut ended = Vec::new();
//! let client = Endpoint { addr: [10, 0, 0, 1].into(), port: 40000 };
//! let server = Endpoint { addr: [10, 0, 0, 2].into(), port: 80 };
//! let (key, c) = FlowKey::new(6, client, server);
//! let s = c.opposite();
//!
//! let syn = table.observe(key, c, Some(SYN), 0, &mut ended);
//! assert!(syn.new);
//! let reply = table.observe(key, s, Some(SYN | ACK), ms, &mut ended);
//! assert_eq!((reply.id, reply.dir), (syn.id, Direction::ToClient));
//! table.observe(key, c, Some(FIN | ACK), 2 * ms, &mut ended);
//! table.observe(key, s, Some(FIN | ACK), 3 * ms, &mut ended); // both FINs: linger 2 s
//! table.expire(3 * ms + 2_000 * ms, &mut ended);
//! assert_eq!(ended[0].reason, EndReason::Fin);
//! assert!(table.get(syn.id).is_none());
//! ```
//!
//! # Contract
//!
//! * [`FlowTable::observe`] maps a packet's [`FlowKey`] to a [`FlowId`] and tells the packet's
//!   [`Direction`] relative to the flow's initiator (the sender of the flow's first packet).
//!   Flows that ended meanwhile are appended to the caller's `ended` vector *before* the
//!   packet's own flow is created, so a consumer sees "end of A" before "start of B".
//! * Within one call, `ended` receives flows in time order: idle and linger expiries in
//!   deadline order (ties: TCP, UDP, other, linger lists, then age), then a flow closed by port
//!   reuse, then an eviction.
//! * A [`FlowId`] is an index plus a generation; when a slot is reused the generation changes,
//!   so an old id never reaches a new flow ([`FlowTable::get`] gives `None`).
//!
//! # Policies
//!
//! * **Time.** The table keeps a monotonic clock: the largest timestamp seen (by `observe` or
//!   `expire`). Deadlines are computed from that clock, so a packet whose timestamp went
//!   slightly backwards (real captures do this) neither underflows nor reorders the deadline
//!   lists; `last_ts_ns` only grows; a flow's `first_ts_ns` is its first packet's own stamp.
//!   All arithmetic saturates. Nothing panics.
//! * **Timeout classes** by protocol: TCP (`tcp_idle_ms`), UDP (`udp_idle_ms`), everything else
//!   (`other_idle_ms`), and *linger* (`closed_linger_ms`). A flow ends when its deadline is
//!   `<=` the clock.
//! * **TCP close.** FIN from one side is remembered; once both sides sent FIN the flow lingers
//!   for `closed_linger_ms` (so the last ACKs still belong to it) and then ends with
//!   [`EndReason::Fin`]. An RST makes it linger at once and end with [`EndReason::Rst`]. Packets
//!   during the linger stay in the flow but do not extend it. Flags are not checked against
//!   sequence numbers (that is the TCP monitor's job).
//! * **Port reuse.** A SYN without ACK on a TCP flow that is closing (a FIN or an RST was seen)
//!   ends the old flow at once (reason `Fin` or `Rst`, also counted in `port_reuse`) and starts
//!   a new one whose initiator is the SYN's sender.
//! * **Capacity.** At most `max_flows` flows (a `max_flows` of 0 acts as 1). Creating a flow in
//!   a full table first evicts the least recently seen flow ([`EndReason::Evicted`]).
//! * **Shutdown.** [`FlowTable::drain`] ends every flow with [`EndReason::Shutdown`], oldest
//!   (first created) first.
//!
//! # Invariants
//!
//! * `len() <= max_flows`; memory is bounded by it (a slab, a key → slot map, and per-slot
//!   generations).
//! * `stats.created == ended_idle + ended_fin + ended_rst + evicted + ended_shutdown + active`
//!   (`port_reuse` is a subset of `ended_fin + ended_rst`).
//! * Expiry is O(1) amortized: each timeout class is an intrusive list ordered by deadline
//!   (a touch moves the flow to the tail, and the clock is monotonic), and a second intrusive
//!   list over all flows orders them by last touch for eviction.

use crate::flow::{FlowKey, Side};
use crate::parse::{ip_proto, tcp_flags};
use hashbrown::HashTable;
use slab::Slab;
use std::hash::BuildHasher;

/// Flow table settings.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct FlowTableConfig {
    /// Most flows held at once; beyond, the least recently seen flow is evicted.
    pub max_flows: usize,
    /// Idle timeout of TCP flows.
    pub tcp_idle_ms: u64,
    /// Idle timeout of UDP flows.
    pub udp_idle_ms: u64,
    /// Idle timeout of every other protocol.
    pub other_idle_ms: u64,
    /// How long a TCP flow stays after both FINs or an RST, so the last ACKs belong to it.
    pub closed_linger_ms: u64,
}

impl Default for FlowTableConfig {
    fn default() -> Self {
        FlowTableConfig {
            max_flows: 100_000,
            tcp_idle_ms: 300_000,
            udp_idle_ms: 60_000,
            other_idle_ms: 30_000,
            closed_linger_ms: 2_000,
        }
    }
}

/// A flow's handle: slot index plus the slot's generation (stale once the flow ended).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub struct FlowId {
    /// Slot index.
    pub index: u32,
    /// Generation of the slot when the flow was created.
    pub generation: u32,
}

/// Direction of a packet relative to the flow's initiator (the sender of its first packet).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Direction {
    /// Sent by the initiator.
    ToServer,
    /// Sent by the responder.
    ToClient,
}

/// Why a flow ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// No packet for the idle timeout of its class.
    IdleTimeout,
    /// FIN from both sides, then the linger elapsed (or the port was reused).
    Fin,
    /// RST, then the linger elapsed (or the port was reused).
    Rst,
    /// Least recently seen flow when the table was full.
    Evicted,
    /// End of input.
    Shutdown,
}

/// What the table knows about a flow.
#[derive(Clone, Debug)]
pub struct FlowInfo {
    /// Its id.
    pub id: FlowId,
    /// Its canonical key.
    pub key: FlowKey,
    /// The side that sent the first packet.
    pub initiator: Side,
    /// Timestamp of the first packet.
    pub first_ts_ns: u64,
    /// Largest timestamp seen.
    pub last_ts_ns: u64,
    /// Packets seen, both directions.
    pub packets: u64,
}

/// A flow that ended, and why.
#[derive(Clone, Debug)]
pub struct EndedFlow {
    /// The flow as it was last.
    pub info: FlowInfo,
    /// Why it ended.
    pub reason: EndReason,
}

/// Result of [`FlowTable::observe`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Observed {
    /// The packet's flow.
    pub id: FlowId,
    /// The packet's direction relative to the initiator.
    pub dir: Direction,
    /// The flow was created by this packet.
    pub new: bool,
}

/// Counters.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct FlowTableStats {
    /// Flows in the table now.
    pub active: u64,
    /// Most flows in the table at once.
    pub max_active: u64,
    /// Flows created.
    pub created: u64,
    /// Flows ended by idle timeout.
    pub ended_idle: u64,
    /// Flows ended after FIN from both sides (or a FIN then port reuse).
    pub ended_fin: u64,
    /// Flows ended after an RST.
    pub ended_rst: u64,
    /// Flows evicted at capacity.
    pub evicted: u64,
    /// Flows ended by `drain`.
    pub ended_shutdown: u64,
    /// Closing flows ended early by a new SYN on the same tuple (also in `ended_fin`/`ended_rst`).
    pub port_reuse: u64,
}

/// Timeout classes, as indices into `FlowTable::classes`.
const TCP: usize = 0;
const UDP: usize = 1;
const OTHER: usize = 2;
const LINGER: usize = 3;
const N_CLASSES: usize = 4;

/// Link slots in an entry: its timeout-class list and the global recency list.
const CLASS_LINK: usize = 0;
const LRU_LINK: usize = 1;

/// A link's "none" (slots are below `max_flows <= u32::MAX`, so never this): 4-byte links,
/// not 8-byte `Option<u32>`s (16 bytes less per flow, issue 14).
const NIL: u32 = u32::MAX;

#[derive(Clone, Copy, Debug)]
struct Link {
    prev: u32,
    next: u32,
}

impl Default for Link {
    fn default() -> Link {
        Link { prev: NIL, next: NIL }
    }
}

fn some(v: u32) -> Option<u32> {
    (v != NIL).then_some(v)
}

#[derive(Clone, Copy, Debug, Default)]
struct List {
    head: Option<u32>,
    tail: Option<u32>,
}

#[derive(Debug)]
struct Entry {
    info: FlowInfo,
    /// The timeout list the entry is on (`LINGER` once closed).
    class: u8,
    /// When the flow ends if nothing else happens.
    deadline_ns: u64,
    /// FIN seen from `[Side::Lo, Side::Hi]`.
    fin: [bool; 2],
    rst: bool,
    /// Set when the flow starts lingering: how it will end.
    closed: Option<EndReason>,
    /// Creation order, for `drain`.
    seq: u64,
    links: [Link; 2],
}

/// The flow table. See the module doc.
#[derive(Debug)]
pub struct FlowTable {
    cfg: FlowTableConfig,
    /// Effective capacity (>= 1).
    max_flows: usize,
    idle_ns: [u64; N_CLASSES],
    slab: Slab<Entry>,
    generations: Vec<u32>,
    /// Key → slot. The keys come from packets, so the hasher is keyed (a per-table random
    /// seed: nobody can aim traffic at one bucket), and fast: `foldhash` rather than the
    /// standard SipHash, a measured per-packet cost (issue 14). Only the slot is stored: the
    /// key is the slot's `info.key` (a 4-byte entry rather than a 48-byte copy of the key
    /// and slot, issue 14's memory per idle flow).
    map: HashTable<u32>,
    hasher: foldhash::fast::RandomState,
    classes: [List; N_CLASSES],
    lru: List,
    clock_ns: u64,
    next_seq: u64,
    stats: FlowTableStats,
    /// The flows a [`drain_some`](FlowTable::drain_some) pass has still to end, newest
    /// first (popped from the back), by slot: 4 bytes a flow rather than a (seq, slot)
    /// pair's 16, at the end of input when every flow is still held (issue 14's peak). A
    /// slot whose flow's `seq` is not below `drain_before` was reused by a flow created
    /// since the pass began (the pass's flow ended meanwhile): skipped.
    draining: Vec<u32>,
    /// `next_seq` when the current drain pass began.
    drain_before: u64,
}

fn ms_to_ns(ms: u64) -> u64 {
    ms.saturating_mul(1_000_000)
}

fn side_index(side: Side) -> usize {
    match side {
        Side::Lo => 0,
        Side::Hi => 1,
    }
}

fn class_of(key: &FlowKey) -> usize {
    match key.proto {
        ip_proto::TCP => TCP,
        ip_proto::UDP => UDP,
        _ => OTHER,
    }
}

fn list_unlink(slab: &mut Slab<Entry>, list: &mut List, which: usize, idx: u32) {
    let Some(e) = slab.get_mut(idx as usize) else {
        return;
    };
    let Link { prev, next } = std::mem::take(&mut e.links[which]);
    match some(prev) {
        Some(p) => {
            if let Some(pe) = slab.get_mut(p as usize) {
                pe.links[which].next = next;
            }
        }
        None => list.head = some(next),
    }
    match some(next) {
        Some(n) => {
            if let Some(ne) = slab.get_mut(n as usize) {
                ne.links[which].prev = prev;
            }
        }
        None => list.tail = some(prev),
    }
}

fn list_push_back(slab: &mut Slab<Entry>, list: &mut List, which: usize, idx: u32) {
    let old_tail = list.tail;
    if let Some(e) = slab.get_mut(idx as usize) {
        e.links[which] = Link { prev: old_tail.unwrap_or(NIL), next: NIL };
    } else {
        return;
    }
    match old_tail {
        Some(t) => {
            if let Some(te) = slab.get_mut(t as usize) {
                te.links[which].next = idx;
            }
        }
        None => list.head = Some(idx),
    }
    list.tail = Some(idx);
}

impl FlowTable {
    /// An empty table.
    pub fn new(cfg: FlowTableConfig) -> FlowTable {
        let max_flows = cfg.max_flows.clamp(1, u32::MAX as usize);
        let idle_ns = [
            ms_to_ns(cfg.tcp_idle_ms),
            ms_to_ns(cfg.udp_idle_ms),
            ms_to_ns(cfg.other_idle_ms),
            ms_to_ns(cfg.closed_linger_ms),
        ];
        FlowTable {
            cfg,
            max_flows,
            idle_ns,
            slab: Slab::new(),
            generations: Vec::new(),
            map: HashTable::new(),
            hasher: foldhash::fast::RandomState::default(),
            classes: [List::default(); N_CLASSES],
            lru: List::default(),
            clock_ns: 0,
            next_seq: 0,
            stats: FlowTableStats::default(),
            draining: Vec::new(),
            drain_before: 0,
        }
    }

    /// The configuration it was built with.
    pub fn config(&self) -> &FlowTableConfig {
        &self.cfg
    }

    /// Finds or creates the flow of a packet at time `ts_ns`; updates last-seen; applies TCP
    /// flags (FIN from each side, RST) to the close state.
    ///
    /// Flows that ended meanwhile (idle timeout, linger after FIN/RST, eviction of the least
    /// recently seen flow when at capacity) are appended to `ended`, in time order, before this
    /// packet's flow is created. A SYN (without ACK) for a tuple whose flow is closing starts a
    /// new flow (port reuse): the old one ends first (reason `Fin`/`Rst`) and goes to `ended`.
    pub fn observe(
        &mut self,
        key: FlowKey,
        side: Side,
        tcp_flags: Option<u8>,
        ts_ns: u64,
        ended: &mut Vec<EndedFlow>,
    ) -> Observed {
        self.expire(ts_ns, ended);
        let flags = if key.proto == ip_proto::TCP { tcp_flags.unwrap_or(0) } else { 0 };
        let syn_only = flags & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN;

        let hash = self.hasher.hash_one(key);
        let slab = &self.slab;
        let found = self.map.find(hash, |&i| slab.get(i as usize).is_some_and(|e| e.info.key == key)).copied();
        if let Some(idx) = found {
            let closing = self.slab.get(idx as usize).map(|e| {
                let closing = e.rst || e.fin[0] || e.fin[1];
                (closing, if e.rst { EndReason::Rst } else { EndReason::Fin })
            });
            match closing {
                Some((true, reason)) if syn_only => {
                    self.stats.port_reuse += 1;
                    self.end(idx, reason, ended);
                }
                Some(_) => return self.touch(idx, side, flags, ts_ns),
                // Unreachable: the entry matched its slot's key.
                None => {}
            }
        }

        if self.slab.len() >= self.max_flows {
            if let Some(victim) = self.lru.head {
                self.end(victim, EndReason::Evicted, ended);
            }
        }
        self.create(key, side, flags, ts_ns)
    }

    /// Ends flows whose idle or linger deadline is `<= now_ns` (the table's clock first
    /// advances to `now_ns` if that is later), appending them to `ended` in deadline order.
    pub fn expire(&mut self, now_ns: u64, ended: &mut Vec<EndedFlow>) {
        self.clock_ns = self.clock_ns.max(now_ns);
        let now = self.clock_ns;
        loop {
            let mut best: Option<(u64, u32)> = None;
            for list in &self.classes {
                let Some(h) = list.head else { continue };
                let Some(e) = self.slab.get(h as usize) else {
                    continue;
                };
                let earlier = match best {
                    None => true,
                    Some((d, _)) => e.deadline_ns < d,
                };
                if e.deadline_ns <= now && earlier {
                    best = Some((e.deadline_ns, h));
                }
            }
            let Some((_, idx)) = best else { break };
            let reason = match self.slab.get(idx as usize) {
                Some(e) if usize::from(e.class) == LINGER => e.closed.unwrap_or(EndReason::Fin),
                _ => EndReason::IdleTimeout,
            };
            self.end(idx, reason, ended);
        }
    }

    /// Ends every remaining flow (end of input), oldest first: a flow that had already
    /// closed (both FINs, or an RST, and was only lingering) ends with that reason; every
    /// other flow with `Shutdown`.
    pub fn drain(&mut self, ended: &mut Vec<EndedFlow>) {
        while self.drain_some(ended, usize::MAX) > 0 {}
    }

    /// [`drain`](Self::drain) in steps of at most `max` flows (appended to `ended`), oldest
    /// first, so that a caller ending a million flows need not hold a million
    /// [`EndedFlow`]s at once (issue 14: the peak memory of many idle flows). Returns how
    /// many it ended; 0 once the table is empty. Flows created between two calls are ended
    /// by a later pass, after the older ones.
    pub fn drain_some(&mut self, ended: &mut Vec<EndedFlow>, max: usize) -> usize {
        if self.draining.is_empty() {
            self.draining = self.slab.iter().map(|(i, _)| i as u32).collect();
            self.drain_before = self.next_seq;
            // Newest first: the oldest is popped first (creation order; every slot is held).
            let slab = &self.slab;
            self.draining.sort_unstable_by_key(|&i| std::cmp::Reverse(slab.get(i as usize).map_or(0, |e| e.seq)));
        }
        let mut n = 0;
        while n < max {
            let Some(idx) = self.draining.pop() else { break };
            // A flow that ended meanwhile (its slot free, or reused by a newer flow) is skipped.
            let Some(reason) = self
                .slab
                .get(idx as usize)
                .filter(|e| e.seq < self.drain_before)
                .map(|e| e.closed.unwrap_or(EndReason::Shutdown))
            else {
                continue;
            };
            self.end(idx, reason, ended);
            n += 1;
        }
        if self.draining.is_empty() {
            self.draining = Vec::new();
        }
        n
    }

    /// The flow with this id; `None` once it ended (stale generation).
    pub fn get(&self, id: FlowId) -> Option<&FlowInfo> {
        let e = self.slab.get(id.index as usize)?;
        (e.info.id == id).then_some(&e.info)
    }

    /// Flows in the table.
    pub fn len(&self) -> usize {
        self.slab.len()
    }

    /// No flows in the table.
    pub fn is_empty(&self) -> bool {
        self.slab.is_empty()
    }

    /// The table's clock: the largest timestamp seen.
    pub fn clock_ns(&self) -> u64 {
        self.clock_ns
    }

    /// Counters, with `active` as of now.
    pub fn stats(&self) -> FlowTableStats {
        FlowTableStats { active: self.slab.len() as u64, ..self.stats.clone() }
    }

    fn create(&mut self, key: FlowKey, side: Side, flags: u8, ts_ns: u64) -> Observed {
        let class = class_of(&key);
        let index = self.slab.vacant_key();
        // `len < max_flows <= u32::MAX` here, so the vacant index fits in a u32.
        let index32 = u32::try_from(index).unwrap_or(u32::MAX);
        if self.generations.len() <= index {
            self.generations.resize(index + 1, 0);
        }
        let generation = self.generations.get(index).copied().unwrap_or(0);
        let id = FlowId { index: index32, generation };
        let seq = self.next_seq;
        self.next_seq += 1;
        self.slab.insert(Entry {
            info: FlowInfo { id, key, initiator: side, first_ts_ns: ts_ns, last_ts_ns: ts_ns, packets: 1 },
            class: class as u8,
            deadline_ns: self.clock_ns.saturating_add(self.idle_ns[class]),
            fin: [false; 2],
            rst: false,
            closed: None,
            seq,
            links: [Link::default(); 2],
        });
        list_push_back(&mut self.slab, &mut self.classes[class], CLASS_LINK, index32);
        list_push_back(&mut self.slab, &mut self.lru, LRU_LINK, index32);
        let (slab, hasher) = (&self.slab, &self.hasher);
        self.map.insert_unique(hasher.hash_one(key), index32, |&i| {
            slab.get(i as usize).map_or(0, |e| hasher.hash_one(e.info.key))
        });
        self.stats.created += 1;
        self.stats.max_active = self.stats.max_active.max(self.slab.len() as u64);
        self.apply_flags(index32, side, flags);
        Observed { id, dir: Direction::ToServer, new: true }
    }

    /// Updates an existing flow; `idx` is a live slot (checked by the caller).
    fn touch(&mut self, idx: u32, side: Side, flags: u8, ts_ns: u64) -> Observed {
        let now = self.clock_ns;
        let Some(e) = self.slab.get_mut(idx as usize) else {
            // Not reached: the caller found the slot live.
            return Observed { id: FlowId { index: idx, generation: 0 }, dir: Direction::ToServer, new: false };
        };
        e.info.packets = e.info.packets.saturating_add(1);
        e.info.last_ts_ns = e.info.last_ts_ns.max(ts_ns);
        let id = e.info.id;
        let dir = if e.info.initiator == side { Direction::ToServer } else { Direction::ToClient };
        let class = usize::from(e.class);
        if class != LINGER {
            e.deadline_ns = now.saturating_add(self.idle_ns[class]);
            list_unlink(&mut self.slab, &mut self.classes[class], CLASS_LINK, idx);
            list_push_back(&mut self.slab, &mut self.classes[class], CLASS_LINK, idx);
        }
        list_unlink(&mut self.slab, &mut self.lru, LRU_LINK, idx);
        list_push_back(&mut self.slab, &mut self.lru, LRU_LINK, idx);
        self.apply_flags(idx, side, flags);
        Observed { id, dir, new: false }
    }

    /// Records FIN/RST and moves a flow that just closed onto the linger list.
    fn apply_flags(&mut self, idx: u32, side: Side, flags: u8) {
        if flags & (tcp_flags::FIN | tcp_flags::RST) == 0 {
            return;
        }
        let now = self.clock_ns;
        let linger = self.idle_ns[LINGER];
        let Some(e) = self.slab.get_mut(idx as usize) else {
            return;
        };
        if flags & tcp_flags::RST != 0 {
            e.rst = true;
        }
        if flags & tcp_flags::FIN != 0 {
            e.fin[side_index(side)] = true;
        }
        if usize::from(e.class) == LINGER {
            return;
        }
        let reason = if e.rst {
            EndReason::Rst
        } else if e.fin[0] && e.fin[1] {
            EndReason::Fin
        } else {
            return;
        };
        let old = usize::from(e.class);
        e.closed = Some(reason);
        e.class = LINGER as u8;
        e.deadline_ns = now.saturating_add(linger);
        list_unlink(&mut self.slab, &mut self.classes[old], CLASS_LINK, idx);
        list_push_back(&mut self.slab, &mut self.classes[LINGER], CLASS_LINK, idx);
    }

    /// Removes a flow, bumps its generation, counts and reports it.
    fn end(&mut self, idx: u32, reason: EndReason, ended: &mut Vec<EndedFlow>) {
        let Some(class) = self.slab.get(idx as usize).map(|e| usize::from(e.class)) else {
            return;
        };
        list_unlink(&mut self.slab, &mut self.classes[class], CLASS_LINK, idx);
        list_unlink(&mut self.slab, &mut self.lru, LRU_LINK, idx);
        let Some(e) = self.slab.try_remove(idx as usize) else {
            return;
        };
        let hash = self.hasher.hash_one(e.info.key);
        if let Ok(entry) = self.map.find_entry(hash, |&i| i == idx) {
            entry.remove();
        }
        if let Some(g) = self.generations.get_mut(idx as usize) {
            *g = g.wrapping_add(1);
        }
        let counter = match reason {
            EndReason::IdleTimeout => &mut self.stats.ended_idle,
            EndReason::Fin => &mut self.stats.ended_fin,
            EndReason::Rst => &mut self.stats.ended_rst,
            EndReason::Evicted => &mut self.stats.evicted,
            EndReason::Shutdown => &mut self.stats.ended_shutdown,
        };
        *counter += 1;
        ended.push(EndedFlow { info: e.info, reason });
    }
}

#[cfg(test)]
mod size_tests {
    /// What a tracked flow's slab entry costs (issue 14: `bench --bin idle_memory`): a larger
    /// entry is a measured regression of every flow.
    #[test]
    fn entry_size() {
        let e = std::mem::size_of::<super::Entry>();
        assert!(e <= 120, "{e}");
    }
}
