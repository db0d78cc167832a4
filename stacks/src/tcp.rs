//! The TCP monitor's core: twin client/server state machines and the two bytestreams of
//! every connection, as a passive middlebox infers them from the wire (mOS's "twin stacks").
//!
//! A [`TcpTracker`] is fed one [`Segment`] at a time, for a connection named by the L2/3 flow
//! table ([`FlowId`], with the direction relative to the initiator). For each segment it
//!
//! 1. updates the **sender's** half ([`HalfConnection`]: inferred state, sequence numbers,
//!    window with scaling, flags seen, retransmissions) — the *client-side update* when the
//!    client sent it;
//! 2. updates the **receiver's** half (the effect of receiving it: a SYN-ACK establishes the
//!    client, an ACK of a FIN moves the FIN sender on) — the *server-side update*;
//! 3. appends the payload to the direction's [`ByteStream`] (reassembly, out-of-order
//!    segments held aside, overlaps per policy, limits);
//!
//! and reports what happened as [`TcpEvent`]s, in order. No I/O, no threads: the TCP monitor
//! actor wraps it, and `mbox streams` drives it directly.
//!
//! **State inference** (RFC 793 names, per endpoint): SYN sent → `SynSent`; SYN-ACK sent →
//! `SynRcvd`; SYN-ACK received by a `SynSent` end → `Established`; ACK received by a
//! `SynRcvd` end → `Established`; FIN sent from `Established` → `FinWait1`, from `CloseWait`
//! → `LastAck`; FIN received in `Established` → `CloseWait`, in `FinWait1` → `Closing` (or
//! `TimeWait` when the same segment acknowledges our FIN), in `FinWait2` → `TimeWait`; an ACK
//! covering our FIN moves `FinWait1` → `FinWait2`, `Closing` → `TimeWait`, `LastAck` →
//! `Closed`; an RST, sent or received, closes both ends. Simultaneous open (SYN crossing
//! SYN) and SYN with data work as in RFC 793. A connection picked up without its handshake
//! (the capture started mid-stream) starts with both ends `Established`.
//!
//! **Retransmission**: a segment carrying data or SYN/FIN entirely at or below what its
//! sender already sent. **Out of order**: a segment starting beyond the receiver's frontier.
//! Both are counted per direction and reported as events.
//!
//! **Ends** come from the flow table (its FIN/RST linger, idle timeout, eviction or end of
//! input): [`TcpTracker::end`] finishes both streams — holes that can no longer fill are
//! skipped and counted as gaps — and reports the final data and the end.

use rustc_hash::FxHashMap;
use std::sync::Arc;

use serde::Serialize;

use crate::flow_table::{Direction, EndReason, FlowId};
use crate::parse::tcp_flags::{ACK, FIN, RST, SYN};
use crate::reassembly::{Budget, ByteStream, InOrderSink, Insert, ReassemblyConfig, StreamStats};

/// An endpoint's TCP state as inferred from the wire.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[repr(u8)]
pub enum TcpState {
    /// Nothing seen, or closed.
    #[default]
    Closed = 0,
    /// SYN sent.
    SynSent = 1,
    /// SYN-ACK sent.
    SynRcvd = 2,
    /// Handshake done.
    Established = 3,
    /// Sent FIN, waiting for its ACK.
    FinWait1 = 4,
    /// Our FIN acknowledged, waiting for the peer's.
    FinWait2 = 5,
    /// Both FINs crossed.
    Closing = 6,
    /// Done, waiting out old segments.
    TimeWait = 7,
    /// Peer's FIN received.
    CloseWait = 8,
    /// Sent our FIN after the peer's.
    LastAck = 9,
}

impl TcpState {
    /// From the `repr(u8)` value (snapshots carry states as bytes).
    pub fn from_u8(v: u8) -> Option<TcpState> {
        use TcpState::*;
        Some(match v {
            0 => Closed,
            1 => SynSent,
            2 => SynRcvd,
            3 => Established,
            4 => FinWait1,
            5 => FinWait2,
            6 => Closing,
            7 => TimeWait,
            8 => CloseWait,
            9 => LastAck,
            _ => return None,
        })
    }
}

/// `a < b` in sequence space.
fn seq_lt(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

/// `a <= b` in sequence space.
fn seq_le(a: u32, b: u32) -> bool {
    !seq_lt(b, a)
}

/// One endpoint of a connection as the middlebox sees it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct HalfConnection {
    /// Inferred state.
    pub state: TcpState,
    /// Initial sequence number, once its SYN was seen.
    pub isn: Option<u32>,
    /// Sequence number after the highest byte (or SYN/FIN) it sent.
    pub next_seq: u32,
    /// Whether `next_seq` is known.
    pub seq_known: bool,
    /// The last acknowledgment number it sent (valid when `flags_seen` has ACK).
    pub ack: u32,
    /// Its advertised receive window, scaled.
    pub window: u32,
    /// Its window scale shift from its SYN (applied once both SYNs carried the option).
    pub wscale: Option<u8>,
    /// OR of every flag it sent.
    pub flags_seen: u8,
    /// Sequence number of its FIN, once sent.
    pub fin_seq: Option<u32>,
    /// Segments it sent.
    pub packets: u64,
    /// Payload bytes it sent (retransmissions included).
    pub payload_bytes: u64,
    /// Its retransmitted segments.
    pub retransmissions: u64,
    /// Its segments that arrived beyond the receiver's frontier.
    pub out_of_order: u64,
}

/// A TCP segment, with the direction relative to the connection's initiator.
#[derive(Clone, Copy, Debug)]
pub struct Segment<'a> {
    /// `ToServer` when the initiator (client) sent it.
    pub dir: Direction,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgment number.
    pub ack: u32,
    /// Flags.
    pub flags: u8,
    /// Raw window field.
    pub window: u16,
    /// TCP options (the header bytes after the first 20).
    pub options: &'a [u8],
    /// Payload (captured bytes).
    pub payload: &'a [u8],
}

/// Which endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Endpoint {
    /// The initiator.
    Client,
    /// The responder.
    Server,
}

impl Endpoint {
    fn sender(dir: Direction) -> Endpoint {
        match dir {
            Direction::ToServer => Endpoint::Client,
            Direction::ToClient => Endpoint::Server,
        }
    }
    fn index(self) -> usize {
        match self {
            Endpoint::Client => 0,
            Endpoint::Server => 1,
        }
    }
}

/// What a segment or an end caused, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcpEvent {
    /// First segment of a connection (a SYN, or mid-stream pickup).
    Start {
        /// Picked up without its handshake.
        midstream: bool,
    },
    /// Both endpoints reached `Established`.
    Established,
    /// An endpoint changed state.
    StateChange {
        /// Which endpoint.
        endpoint: Endpoint,
        /// Before.
        from: TcpState,
        /// After.
        to: TcpState,
    },
    /// A retransmitted segment.
    Retransmission {
        /// Its direction.
        dir: Direction,
    },
    /// A direction's frontier advanced: bytes `[from, to)` are ready.
    DataReady {
        /// The direction.
        dir: Direction,
        /// Old frontier.
        from: u64,
        /// New frontier.
        to: u64,
    },
    /// The connection ended.
    End {
        /// Why.
        reason: EndReason,
    },
}

/// A connection's state at one instant: both halves and both frontiers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// `[client, server]`.
    pub half: [HalfConnection; 2],
    /// Contiguous bytes of `[client → server, server → client]`.
    pub frontier: [u64; 2],
}

/// The two updates one segment makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Updates {
    /// Who sent the segment.
    pub sender: Endpoint,
    /// After the sender's half was updated (the receiver's not yet, nor the stream).
    pub after_sender: Snapshot,
    /// After the receiver's half and the stream were updated.
    pub after_receiver: Snapshot,
}

/// Tracker settings.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TcpConfig {
    /// Per-direction reassembly limits and policies.
    pub reassembly: ReassemblyConfig,
    /// Global reassembly memory in bytes (0 = unlimited).
    pub memory_limit: usize,
    /// Bytes kept behind a direction's frontier after every reader is done with them, so
    /// that retransmissions can still be compared (conflicting overlaps counted). Older
    /// bytes are freed; a retransmission of them counts as old data, not compared.
    pub keep_behind: u64,
    /// Chunks (of `reassembly.chunk_size` bytes) in the stream store the monitor shares with
    /// the NFs (`runtime::streams`; as many connection records). Their bytes also cap the
    /// reassembly memory: the effective limit is the smaller of `memory_limit` and
    /// `stream_chunks × chunk_size`.
    pub stream_chunks: u32,
    /// `[stack.tcp.modify]`: forward connections rewritten by the NFs' changes
    /// (docs/modification.md); absent: the monitor only watches.
    pub modify: Option<crate::modify::ModifyConfig>,
}

/// Default [`TcpConfig::stream_chunks`]: 16384 (64 MiB with 4 KiB chunks).
pub const DEFAULT_STREAM_CHUNKS: u32 = 16384;

impl Default for TcpConfig {
    fn default() -> Self {
        TcpConfig {
            reassembly: ReassemblyConfig::default(),
            memory_limit: 256 << 20,
            keep_behind: 64 << 10,
            stream_chunks: DEFAULT_STREAM_CHUNKS,
            modify: None,
        }
    }
}

impl TcpConfig {
    /// The stream store's size: `stream_chunks` chunks of `reassembly.chunk_size` bytes.
    pub fn store_config(&self) -> runtime::streams::StoreConfig {
        runtime::streams::StoreConfig {
            chunk_size: u32::try_from(self.reassembly.chunk_size.clamp(1, crate::reassembly::MAX_CHUNK))
                .unwrap_or(4096),
            chunks: self.stream_chunks.clamp(1, runtime::streams::MAX_CHUNKS),
        }
    }

    /// The reassembly memory limit in force: `memory_limit` (0: none) capped by the stream
    /// store's bytes, so that a segment is refused (`refused_memory`) before the store runs
    /// out of chunks.
    pub fn effective_memory_limit(&self) -> usize {
        let c = self.store_config();
        let store = (c.chunk_size as usize).saturating_mul(c.chunks as usize);
        if self.memory_limit == 0 {
            store
        } else {
            self.memory_limit.min(store)
        }
    }
}

/// One endpoint as a [`Connection`] keeps it: a [`HalfConnection`] without its counters
/// (kept beside it in the connection) and with its `Option`s as bits (24 bytes, not 72:
/// issue 14's memory per idle connection).
#[derive(Clone, Copy, Debug, Default)]
struct PackedHalf {
    isn: u32,
    next_seq: u32,
    ack: u32,
    window: u32,
    fin_seq: u32,
    state: TcpState,
    flags_seen: u8,
    /// The window scale shift when [`KNOWN_WSCALE`].
    wscale: u8,
    /// [`KNOWN_ISN`], [`KNOWN_SEQ`], [`KNOWN_FIN`], [`KNOWN_WSCALE`].
    known: u8,
}

const KNOWN_ISN: u8 = 1;
const KNOWN_SEQ: u8 = 2;
const KNOWN_FIN: u8 = 4;
const KNOWN_WSCALE: u8 = 8;

/// A connection's counters once one needs more than the inline `u32`s: a retransmission
/// or an out-of-order segment (most connections have neither), or more than `u32::MAX`
/// packets or payload bytes in one direction. Boxed when first needed; from then on it
/// holds every counter.
#[derive(Clone, Copy, Debug, Default)]
struct WideCounts {
    /// `[client, server]`, as in [`HalfConnection`].
    packets: [u64; 2],
    payload_bytes: [u64; 2],
    retransmissions: [u64; 2],
    out_of_order: [u64; 2],
}

/// One connection: two halves, two streams. Packed for memory (issue 14: an idle tracked
/// connection should cost a few hundred bytes in all): the halves are read as
/// [`HalfConnection`]s ([`halves`](Self::halves)); the counters are `u32`s until one needs
/// more (or a rare one is counted), and each stream is boxed with its first payload byte.
#[derive(Debug)]
pub struct Connection {
    /// `[client, server]`.
    half: [PackedHalf; 2],
    /// Segments sent, `[client, server]` (while `wide` is `None`).
    packets: [u32; 2],
    /// Payload bytes sent (retransmissions included), `[client, server]` (while `wide` is
    /// `None`).
    payload_bytes: [u32; 2],
    /// Every counter, once the inline ones do not do.
    wide: Option<Box<WideCounts>>,
    /// `[client → server, server → client]`, created with the direction's first payload byte
    /// (a direction that carries none costs one word, and reads as frontier 0).
    streams: [Option<Box<ByteStream>>; 2],
    /// The flow-table generation of the connection's flow (its slot in the tracker is the
    /// flow's index).
    generation: u32,
    /// Both ends reached `Established` once.
    established: bool,
    /// Picked up mid-stream.
    midstream: bool,
}

impl Connection {
    /// Both halves, `[client, server]`.
    pub fn halves(&self) -> [HalfConnection; 2] {
        [self.half_at(0), self.half_at(1)]
    }

    /// The half of an endpoint.
    pub fn endpoint(&self, e: Endpoint) -> HalfConnection {
        self.half_at(e.index())
    }

    /// Both ends reached `Established` once.
    pub fn established(&self) -> bool {
        self.established
    }

    /// Picked up mid-stream.
    pub fn midstream(&self) -> bool {
        self.midstream
    }

    /// Every counter, wide.
    fn counts(&self) -> WideCounts {
        match self.wide.as_deref() {
            Some(w) => *w,
            None => WideCounts {
                packets: self.packets.map(u64::from),
                payload_bytes: self.payload_bytes.map(u64::from),
                ..WideCounts::default()
            },
        }
    }

    /// No segment seen yet.
    fn unseen(&self) -> bool {
        self.counts().packets == [0, 0]
    }

    fn half_at(&self, i: usize) -> HalfConnection {
        let p = &self.half[i];
        let c = self.counts();
        HalfConnection {
            state: p.state,
            isn: (p.known & KNOWN_ISN != 0).then_some(p.isn),
            next_seq: p.next_seq,
            seq_known: p.known & KNOWN_SEQ != 0,
            ack: p.ack,
            window: p.window,
            wscale: (p.known & KNOWN_WSCALE != 0).then_some(p.wscale),
            flags_seen: p.flags_seen,
            fin_seq: (p.known & KNOWN_FIN != 0).then_some(p.fin_seq),
            packets: c.packets[i],
            payload_bytes: c.payload_bytes[i],
            retransmissions: c.retransmissions[i],
            out_of_order: c.out_of_order[i],
        }
    }

    fn set_halves(&mut self, h: &[HalfConnection; 2]) {
        for (i, h) in h.iter().enumerate() {
            let bit = |b: bool, v: u8| if b { v } else { 0 };
            self.half[i] = PackedHalf {
                isn: h.isn.unwrap_or(0),
                next_seq: h.next_seq,
                ack: h.ack,
                window: h.window,
                fin_seq: h.fin_seq.unwrap_or(0),
                state: h.state,
                flags_seen: h.flags_seen,
                wscale: h.wscale.unwrap_or(0),
                known: bit(h.isn.is_some(), KNOWN_ISN)
                    | bit(h.seq_known, KNOWN_SEQ)
                    | bit(h.fin_seq.is_some(), KNOWN_FIN)
                    | bit(h.wscale.is_some(), KNOWN_WSCALE),
            };
        }
        let narrow = |v: u64| u32::try_from(v).ok();
        let inline = match (narrow(h[0].packets), narrow(h[1].packets), narrow(h[0].payload_bytes), narrow(h[1].payload_bytes)) {
            (Some(p0), Some(p1), Some(b0), Some(b1))
                if self.wide.is_none() && h.iter().all(|h| h.retransmissions == 0 && h.out_of_order == 0) =>
            {
                Some(([p0, p1], [b0, b1]))
            }
            _ => None,
        };
        match inline {
            Some((packets, bytes)) => {
                self.packets = packets;
                self.payload_bytes = bytes;
            }
            None => {
                self.wide = Some(Box::new(WideCounts {
                    packets: [h[0].packets, h[1].packets],
                    payload_bytes: [h[0].payload_bytes, h[1].payload_bytes],
                    retransmissions: [h[0].retransmissions, h[1].retransmissions],
                    out_of_order: [h[0].out_of_order, h[1].out_of_order],
                }))
            }
        }
    }

    /// The wide counters, made from the inline ones if they were not yet.
    fn wide_mut(&mut self) -> &mut WideCounts {
        let c = self.counts();
        self.wide.get_or_insert_with(|| Box::new(c))
    }

    /// The stream of a direction, once it carried a payload byte.
    pub fn stream(&self, dir: Direction) -> Option<&ByteStream> {
        self.streams[dir_index(dir)].as_deref()
    }

    /// The frontier of a direction (0 before it started).
    pub fn frontier(&self, dir: Direction) -> u64 {
        self.stream(dir).map_or(0, ByteStream::frontier)
    }
}

fn dir_index(d: Direction) -> usize {
    match d {
        Direction::ToServer => 0,
        Direction::ToClient => 1,
    }
}

/// Totals over every connection, for the run summary.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TcpStats {
    /// Connections seen.
    pub connections: u64,
    /// Of which picked up mid-stream.
    pub midstream: u64,
    /// Live now.
    pub active: u64,
    /// Retransmitted segments.
    pub retransmissions: u64,
    /// Segments beyond the frontier.
    pub out_of_order: u64,
    /// Bytes delivered in order.
    pub bytes_delivered: u64,
    /// Bytes of overlapping retransmissions that differed.
    pub overlap_conflict_bytes: u64,
    /// Segments refused by a limit.
    pub refused_segments: u64,
    /// The same segments, by limit.
    pub refused: crate::reassembly::RefusedCounts,
    /// Bytes never seen (holes skipped at the end).
    pub gap_bytes: u64,
}

/// Where the tracker's streams put their in-order bytes when it is given sinks
/// ([`TcpTracker::segment_into`]): one sink per connection and direction, addressed by flow
/// (the TCP monitor's stream store). See [`InOrderSink`] for what each call means.
pub trait StreamSinks {
    /// Appends `bytes` at offset `at` of `flow`'s stream in direction `dir`.
    fn append(&mut self, flow: FlowId, dir: Direction, at: u64, bytes: &[u8]);
    /// Bytes of `new` that differ from those held at `at..` (`None`: cannot tell).
    fn differing(&self, flow: FlowId, dir: Direction, at: u64, new: &[u8]) -> Option<u64>;
}

/// One stream's sink among a tracker's [`StreamSinks`].
struct SinkOf<'a> {
    sinks: &'a mut dyn StreamSinks,
    flow: FlowId,
    dir: Direction,
}

impl InOrderSink for SinkOf<'_> {
    fn append(&mut self, at: u64, bytes: &[u8]) {
        self.sinks.append(self.flow, self.dir, at, bytes);
    }

    fn differing(&self, at: u64, new: &[u8]) -> Option<u64> {
        self.sinks.differing(self.flow, self.dir, at, new)
    }
}

/// Sink of a stream that has one when the caller passed none (never with the TCP monitor,
/// which passes its sinks on every call): the bytes are not kept anywhere.
struct Nowhere;

impl InOrderSink for Nowhere {
    fn append(&mut self, _at: u64, _bytes: &[u8]) {}
    fn differing(&self, _at: u64, _new: &[u8]) -> Option<u64> {
        None
    }
}

/// The tracker's connections by flow: one slot per flow-table index (the flow table hands
/// out dense indices and reuses freed ones), its generation checked, so no key is stored
/// beside the connection and no connection is boxed (issue 14's bytes per idle connection).
/// Ids that do not fit there — an index far beyond the live ones, or a second live
/// connection on one index, which only hand-made ids give — go to a map (keyed by ids the
/// flow table assigns, not the packets' senders: a fast non-keyed hash is safe).
#[derive(Debug, Default)]
struct ConnTable {
    slots: Vec<Option<Connection>>,
    /// Connections in `slots`.
    in_slots: usize,
    other: FxHashMap<FlowId, Box<Connection>>,
}

impl ConnTable {
    fn slot_of(&self, id: FlowId) -> Option<usize> {
        let i = usize::try_from(id.index).ok()?;
        matches!(self.slots.get(i), Some(Some(c)) if c.generation == id.generation).then_some(i)
    }

    fn get(&self, id: FlowId) -> Option<&Connection> {
        match self.slot_of(id) {
            Some(i) => self.slots[i].as_ref(),
            None => self.other.get(&id).map(|c| &**c),
        }
    }

    fn get_mut(&mut self, id: FlowId) -> Option<&mut Connection> {
        match self.slot_of(id) {
            Some(i) => self.slots[i].as_mut(),
            None => self.other.get_mut(&id).map(|c| &mut **c),
        }
    }

    fn get_or_insert_with(&mut self, id: FlowId, open: impl FnOnce() -> Connection) -> &mut Connection {
        if let Some(i) = self.slot_of(id) {
            return self.slots[i].get_or_insert_with(open);
        }
        if self.other.contains_key(&id) {
            return self.other.entry(id).or_insert_with(|| Box::new(open()));
        }
        let i = id.index as usize;
        // Dense enough for a slot: within twice the live connections (plus some).
        let dense = i < self.len().saturating_mul(2).saturating_add(4096);
        if i < self.slots.len() && self.slots[i].is_none() || i >= self.slots.len() && dense {
            if i >= self.slots.len() {
                self.slots.resize_with(i + 1, || None);
            }
            self.in_slots += 1;
            return self.slots[i].insert(Connection { generation: id.generation, ..open() });
        }
        self.other.entry(id).or_insert_with(|| Box::new(open()))
    }

    fn remove(&mut self, id: FlowId) -> Option<Box<Connection>> {
        match self.slot_of(id) {
            Some(i) => {
                self.in_slots -= 1;
                self.slots[i].take().map(Box::new)
            }
            None => self.other.remove(&id),
        }
    }

    fn len(&self) -> usize {
        self.in_slots + self.other.len()
    }

    fn ids(&self) -> impl Iterator<Item = FlowId> + '_ {
        let slots = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.as_ref().map(|c| FlowId { index: i as u32, generation: c.generation }));
        slots.chain(self.other.keys().copied())
    }
}

/// Every live connection (see the module docs).
#[derive(Debug)]
pub struct TcpTracker {
    cfg: TcpConfig,
    conns: ConnTable,
    /// `cfg.reassembly`, shared by every stream.
    reassembly: Arc<ReassemblyConfig>,
    budget: Budget,
    stats: TcpStats,
}

fn window_scale(options: &[u8]) -> Option<u8> {
    let mut i = 0;
    while i < options.len() {
        match options[i] {
            0 => return None,
            1 => i += 1,
            kind => {
                let len = usize::from(*options.get(i + 1)?);
                if len < 2 || i + len > options.len() {
                    return None;
                }
                if kind == 3 && len == 3 {
                    return Some(options[i + 2].min(14));
                }
                i += len;
            }
        }
    }
    None
}

impl TcpTracker {
    /// An empty tracker.
    pub fn new(cfg: TcpConfig) -> TcpTracker {
        let budget = Budget::with_limit(cfg.memory_limit);
        let reassembly = Arc::new(cfg.reassembly.clone());
        TcpTracker { cfg, conns: ConnTable::default(), reassembly, budget, stats: TcpStats::default() }
    }

    /// A live connection.
    pub fn get(&self, flow: FlowId) -> Option<&Connection> {
        self.conns.get(flow)
    }

    /// The ids of the live connections, sorted.
    pub fn live(&self) -> Vec<FlowId> {
        let mut v: Vec<FlowId> = self.conns.ids().collect();
        v.sort_by_key(|f| (f.generation, f.index));
        v
    }

    /// Live connections.
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    /// No live connection.
    pub fn is_empty(&self) -> bool {
        self.conns.len() == 0
    }

    /// Totals.
    pub fn stats(&self) -> TcpStats {
        TcpStats { active: self.conns.len() as u64, ..self.stats.clone() }
    }

    /// Global reassembly memory accounting.
    pub fn budget(&self) -> &Budget {
        &self.budget
    }

    /// Readers are done with the bytes of a direction below `offset`: frees what lies more
    /// than `keep_behind` below it.
    pub fn release(&mut self, flow: FlowId, dir: Direction, offset: u64) {
        let keep = self.cfg.keep_behind;
        if let Some(s) = self.conns.get_mut(flow).and_then(|c| c.streams[dir_index(dir)].as_mut()) {
            s.release_until(offset.saturating_sub(keep), &mut self.budget);
        }
    }

    /// Processes one segment of connection `flow`; appends what happened to `events` and
    /// returns the connection's state as of the sender's update and as of the receiver's.
    pub fn segment(&mut self, flow: FlowId, seg: &Segment<'_>, events: &mut Vec<TcpEvent>) -> Updates {
        self.segment_into(flow, seg, events, None)
    }

    /// [`segment`](Self::segment), with sinks: a connection's streams created by a call with
    /// sinks keep no in-order bytes themselves but hand them to `sinks` (each contiguous byte
    /// copied once, from the segment or the out-of-order area); pass the same sinks on every
    /// later call for that connection ([`end_into`](Self::end_into) too).
    pub fn segment_into(
        &mut self,
        flow: FlowId,
        seg: &Segment<'_>,
        events: &mut Vec<TcpEvent>,
        sinks: Option<&mut dyn StreamSinks>,
    ) -> Updates {
        let conn = self.conns.get_or_insert_with(flow, || Connection::open(seg.flags, events));
        if conn.unseen() {
            self.stats.connections += 1;
            self.stats.midstream += u64::from(conn.midstream);
        }
        let me = Endpoint::sender(seg.dir);
        let peer = match me {
            Endpoint::Client => Endpoint::Server,
            Endpoint::Server => Endpoint::Client,
        };
        let (si, ri) = (me.index(), peer.index());
        let mut half = conn.halves();
        let before = [half[0].state, half[1].state];

        update_sender(&mut half, si, ri, seg, &mut self.stats, events);
        let after_sender = Snapshot { half, frontier: conn.frontiers() };
        update_receiver(&mut half[ri], seg);
        conn.set_halves(&half);
        conn.report_state_changes(before, events);
        let stream_cx = StreamCx { cfg: &self.reassembly, budget: &mut self.budget, stats: &mut self.stats, sinks };
        conn.feed_stream(flow, si, seg, stream_cx, events);
        Updates { sender: me, after_sender, after_receiver: conn.snapshot() }
    }

    /// Ends connection `flow` (the flow table ended it): finishes both streams (skipping
    /// holes that can no longer fill), reports the last data and the end, and forgets it.
    /// Returns the connection as it ended, or `None` if it was not tracked.
    pub fn end(&mut self, flow: FlowId, reason: EndReason, events: &mut Vec<TcpEvent>) -> Option<Connection> {
        self.end_into(flow, reason, events, None)
    }

    /// [`end`](Self::end) with the sinks given to [`segment_into`](Self::segment_into).
    pub fn end_into(
        &mut self,
        flow: FlowId,
        reason: EndReason,
        events: &mut Vec<TcpEvent>,
        sinks: Option<&mut dyn StreamSinks>,
    ) -> Option<Connection> {
        self.end_boxed(flow, reason, events, sinks).map(|c| *c)
    }

    /// [`end_into`](Self::end_into), the connection left in its box (the TCP monitor reads
    /// it and hands it to [`retire`](Self::retire) without copying it out).
    pub fn end_boxed(
        &mut self,
        flow: FlowId,
        reason: EndReason,
        events: &mut Vec<TcpEvent>,
        mut sinks: Option<&mut dyn StreamSinks>,
    ) -> Option<Box<Connection>> {
        let mut conn = self.conns.remove(flow)?;
        for dir in [Direction::ToServer, Direction::ToClient] {
            if let Some(s) = conn.streams[dir_index(dir)].as_mut() {
                let before = s.stats();
                let from = s.frontier();
                match sinks.as_deref_mut() {
                    Some(sinks) => s.finish_into(&mut self.budget, &mut SinkOf { sinks, flow, dir }),
                    None => s.finish_into(&mut self.budget, &mut Nowhere),
                };
                account(&mut self.stats, &before, &s.stats());
                if s.frontier() > from {
                    events.push(TcpEvent::DataReady { dir, from, to: s.frontier() });
                }
            }
        }
        events.push(TcpEvent::End { reason });
        Some(conn)
    }

    /// Frees a finished connection but keeps its reassembly memory charged to the budget,
    /// and returns how much that is (give it back with [`uncharge`](Self::uncharge)): the
    /// TCP monitor's store still holds the connection's bytes until its last events have
    /// left, and the connection itself is no longer needed for that.
    pub fn retire(&mut self, conn: Box<Connection>) -> usize {
        let held: usize = conn.streams.iter().flatten().map(|s| s.memory()).sum();
        self.recycle(*conn);
        self.budget.charge(held);
        held
    }

    /// Gives back memory kept charged by [`retire`](Self::retire).
    pub fn uncharge(&mut self, bytes: usize) {
        self.budget.give_back(bytes);
    }

    /// Gives a finished connection's memory back (call after reading what you need from the
    /// value [`end`](Self::end) returned).
    pub fn recycle(&mut self, mut conn: Connection) {
        for s in conn.streams.iter_mut().flatten() {
            s.clear(&mut self.budget);
        }
    }
}

/// What a connection's streams need from their tracker for one segment.
struct StreamCx<'a, 's> {
    cfg: &'a Arc<ReassemblyConfig>,
    budget: &'a mut Budget,
    stats: &'a mut TcpStats,
    sinks: Option<&'a mut (dyn StreamSinks + 's)>,
}

impl Connection {
    /// A new connection whose first segment has `flags`; reports its start. A connection
    /// not opened by a bare SYN is picked up mid-stream, with both ends `Established`.
    fn open(flags: u8, events: &mut Vec<TcpEvent>) -> Connection {
        let midstream = !(flags & SYN != 0 && flags & ACK == 0);
        events.push(TcpEvent::Start { midstream });
        let mut c = Connection {
            half: [PackedHalf::default(); 2],
            packets: [0; 2],
            payload_bytes: [0; 2],
            wide: None,
            streams: [None, None],
            generation: 0,
            established: false,
            midstream,
        };
        if midstream {
            for h in &mut c.half {
                h.state = TcpState::Established;
            }
            c.established = true;
        }
        c
    }

    /// Both halves and both frontiers, now.
    fn snapshot(&self) -> Snapshot {
        Snapshot { half: self.halves(), frontier: self.frontiers() }
    }

    /// Both frontiers, `[client → server, server → client]`.
    fn frontiers(&self) -> [u64; 2] {
        [self.frontier(Direction::ToServer), self.frontier(Direction::ToClient)]
    }

    /// Reports each endpoint whose state differs from `before`, then `Established` the first
    /// time both ends are.
    fn report_state_changes(&mut self, before: [TcpState; 2], events: &mut Vec<TcpEvent>) {
        for (e, ep) in [(0usize, Endpoint::Client), (1, Endpoint::Server)] {
            if before[e] != self.half[e].state {
                events.push(TcpEvent::StateChange { endpoint: ep, from: before[e], to: self.half[e].state });
            }
        }
        if !self.established && self.half.iter().all(|h| h.state == TcpState::Established) {
            self.established = true;
            events.push(TcpEvent::Established);
        }
    }

    /// Appends the segment's payload to its direction's stream (sender half `si`), creating
    /// the stream with its first payload (its offset 0 is the sequence number after the
    /// sender's SYN when that was seen, else this segment's); reports the frontier's move.
    fn feed_stream(
        &mut self,
        flow: FlowId,
        si: usize,
        seg: &Segment<'_>,
        cx: StreamCx<'_, '_>,
        events: &mut Vec<TcpEvent>,
    ) {
        let StreamCx { cfg, budget, stats, sinks } = cx;
        let syn = seg.flags & SYN != 0;
        let rst = seg.flags & RST != 0;
        let di = dir_index(seg.dir);
        if seg.payload.is_empty() || rst {
            return;
        }
        if self.streams[di].is_none() {
            let h = &self.half[si];
            let first = if h.known & KNOWN_ISN != 0 { h.isn.wrapping_add(1) } else { seg.seq };
            self.streams[di] = Some(Box::new(match sinks {
                Some(_) => ByteStream::new_shared_with_sink(first, cfg),
                None => ByteStream::new_shared(first, cfg),
            }));
        }
        if let Some(stream) = self.streams[di].as_mut() {
            let data_seq = seg.seq.wrapping_add(u32::from(syn));
            let before_stats = stream.stats();
            let from = stream.frontier();
            let ins: Insert = match sinks {
                Some(sinks) => {
                    stream.insert_into(data_seq, seg.payload, budget, &mut SinkOf { sinks, flow, dir: seg.dir })
                }
                None if stream.has_sink() => stream.insert_into(data_seq, seg.payload, budget, &mut Nowhere),
                None => stream.insert(data_seq, seg.payload, budget),
            };
            account(stats, &before_stats, &stream.stats());
            if ins.advanced > 0 {
                events.push(TcpEvent::DataReady { dir: seg.dir, from, to: stream.frontier() });
            }
            if ins.out_of_order {
                self.wide_mut().out_of_order[si] += 1;
                stats.out_of_order += 1;
            }
        }
    }
}

/// The sender's update (half `si`, peer `ri`): counters, retransmission, ISN and window
/// scale from its SYN, highest sequence sent, last ACK, scaled window, FIN, inferred state.
fn update_sender(
    half: &mut [HalfConnection; 2],
    si: usize,
    ri: usize,
    seg: &Segment<'_>,
    stats: &mut TcpStats,
    events: &mut Vec<TcpEvent>,
) {
    let syn = seg.flags & SYN != 0;
    let fin = seg.flags & FIN != 0;
    let rst = seg.flags & RST != 0;
    let seg_len = seg.payload.len() as u32 + u32::from(syn) + u32::from(fin);
    let end_seq = seg.seq.wrapping_add(seg_len);
    let s = &mut half[si];
    s.packets += 1;
    s.payload_bytes += seg.payload.len() as u64;
    s.flags_seen |= seg.flags;
    let retrans = seg_len > 0 && !rst && s.seq_known && seq_le(end_seq, s.next_seq);
    if retrans {
        s.retransmissions += 1;
        stats.retransmissions += 1;
        events.push(TcpEvent::Retransmission { dir: seg.dir });
    }
    if syn {
        s.isn.get_or_insert(seg.seq);
        if let Some(ws) = window_scale(seg.options) {
            s.wscale = Some(ws);
        }
    }
    if !s.seq_known || seq_lt(s.next_seq, end_seq) {
        s.next_seq = end_seq;
        s.seq_known = true;
    }
    if seg.flags & ACK != 0 {
        s.ack = seg.ack;
    }
    let both_scaled = half[0].wscale.is_some() && half[1].wscale.is_some();
    let s = &mut half[si];
    let shift = if both_scaled && !syn { s.wscale.unwrap_or(0) } else { 0 };
    s.window = u32::from(seg.window) << shift;
    if fin && s.fin_seq.is_none() {
        s.fin_seq = Some(seg.seq.wrapping_add(seg.payload.len() as u32 + u32::from(syn)));
    }
    let peer_syn_seen = half[ri].isn.is_some();
    let s = &mut half[si];
    s.state = if rst {
        TcpState::Closed
    } else {
        match (s.state, syn, seg.flags & ACK != 0, fin) {
            // A bare SYN after the peer's SYN arrived: simultaneous open.
            (TcpState::Closed, true, false, _) if peer_syn_seen => TcpState::SynRcvd,
            (TcpState::Closed, true, false, _) => TcpState::SynSent,
            (TcpState::Closed | TcpState::SynSent, true, true, _) => TcpState::SynRcvd,
            (TcpState::Established | TcpState::SynRcvd, _, _, true) => TcpState::FinWait1,
            (TcpState::CloseWait, _, _, true) => TcpState::LastAck,
            (st, ..) => st,
        }
    };
}

/// The receiver's update (half `r`): the effect of receiving the segment.
fn update_receiver(r: &mut HalfConnection, seg: &Segment<'_>) {
    let syn = seg.flags & SYN != 0;
    let fin = seg.flags & FIN != 0;
    if seg.flags & RST != 0 {
        r.state = TcpState::Closed;
        return;
    }
    let acks_my_fin = seg.flags & ACK != 0 && r.fin_seq.is_some_and(|f| seq_lt(f, seg.ack));
    r.state = match r.state {
        TcpState::SynSent if syn && seg.flags & ACK != 0 => TcpState::Established,
        TcpState::SynSent if syn => TcpState::SynRcvd, // simultaneous open
        // The ACK of our SYN (in a simultaneous open it comes with the peer's SYN).
        TcpState::SynRcvd if seg.flags & ACK != 0 => TcpState::Established,
        TcpState::Established if fin => TcpState::CloseWait,
        TcpState::FinWait1 if fin && acks_my_fin => TcpState::TimeWait,
        TcpState::FinWait1 if fin => TcpState::Closing,
        TcpState::FinWait1 if acks_my_fin => TcpState::FinWait2,
        TcpState::FinWait2 if fin => TcpState::TimeWait,
        TcpState::Closing if acks_my_fin => TcpState::TimeWait,
        TcpState::LastAck if acks_my_fin => TcpState::Closed,
        st => st,
    };
}

fn account(stats: &mut TcpStats, before: &StreamStats, after: &StreamStats) {
    stats.bytes_delivered += after.bytes - before.bytes;
    stats.overlap_conflict_bytes += after.overlap_conflicts - before.overlap_conflicts;
    stats.refused_segments += after.refused_segments - before.refused_segments;
    stats.refused.add_delta(&before.refused, &after.refused);
    stats.gap_bytes += after.gap_bytes - before.gap_bytes;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> FlowId {
        FlowId { index: 0, generation: 1 }
    }

    fn seg(dir: Direction, seq: u32, ack: u32, flags: u8, payload: &[u8]) -> Segment<'_> {
        Segment { dir, seq, ack, flags, window: 1000, options: &[], payload }
    }

    /// What an idle connection costs the tracker (issue 14: `bench --bin idle_memory`): a
    /// larger struct is a measured regression of every tracked connection.
    #[test]
    fn connection_sizes() {
        use std::mem::size_of;
        println!(
            "ByteStream {} PackedHalf {} Connection {} Option<Connection> {}",
            size_of::<ByteStream>(),
            size_of::<PackedHalf>(),
            size_of::<Connection>(),
            size_of::<Option<Connection>>()
        );
        assert!(size_of::<ByteStream>() <= 56, "{}", size_of::<ByteStream>());
        assert!(size_of::<PackedHalf>() <= 24, "{}", size_of::<PackedHalf>());
        // A tracker slot: the connection inline, its streams boxed when they carry data.
        assert!(size_of::<Option<Connection>>() <= 96, "{}", size_of::<Option<Connection>>());
    }

    /// The packed halves read back as they were written: every option, and counters past
    /// `u32::MAX` (they move into the boxed wide counters, and stay there).
    #[test]
    fn packed_halves_round_trip() {
        let mut c = Connection::open(SYN, &mut Vec::new());
        assert_eq!(c.halves(), [HalfConnection { state: TcpState::Closed, ..HalfConnection::default() }; 2]);
        let mut h = [HalfConnection::default(); 2];
        h[0] = HalfConnection {
            state: TcpState::FinWait1,
            isn: Some(0),
            next_seq: u32::MAX,
            seq_known: true,
            ack: 7,
            window: 1 << 30,
            wscale: Some(0),
            flags_seen: 0xff,
            fin_seq: Some(0),
            packets: 3,
            payload_bytes: u64::from(u32::MAX),
            retransmissions: 0,
            out_of_order: 0,
        };
        h[1].packets = 1;
        c.set_halves(&h);
        assert_eq!(c.halves(), h);
        assert!(c.wide.is_none(), "fits the inline counters");
        h[1].payload_bytes = u64::from(u32::MAX) + 1;
        c.set_halves(&h);
        assert_eq!(c.halves(), h);
        h[1].payload_bytes = 1;
        h[0].retransmissions = 2;
        c.set_halves(&h);
        assert_eq!(c.halves(), h);
        c.wide_mut().out_of_order[1] += 1;
        h[1].out_of_order = 1;
        assert_eq!(c.halves(), h);
    }

    #[test]
    fn handshake_data_and_fin_close() {
        use Direction::*;
        let mut t = TcpTracker::new(TcpConfig::default());
        let mut ev = vec![];
        t.segment(id(), &seg(ToServer, 100, 0, SYN, b""), &mut ev);
        assert_eq!(ev[0], TcpEvent::Start { midstream: false });
        assert_eq!(t.get(id()).unwrap().endpoint(Endpoint::Client).state, TcpState::SynSent);
        t.segment(id(), &seg(ToClient, 500, 101, SYN | ACK, b""), &mut ev);
        let c = t.get(id()).unwrap();
        assert_eq!((c.halves()[0].state, c.halves()[1].state), (TcpState::Established, TcpState::SynRcvd));
        ev.clear();
        t.segment(id(), &seg(ToServer, 101, 501, ACK, b"GET /"), &mut ev);
        assert!(ev.contains(&TcpEvent::Established), "{ev:?}");
        assert!(ev.contains(&TcpEvent::DataReady { dir: ToServer, from: 0, to: 5 }), "{ev:?}");
        // Retransmission of the same bytes.
        ev.clear();
        t.segment(id(), &seg(ToServer, 101, 501, ACK, b"GET /"), &mut ev);
        assert_eq!(ev, vec![TcpEvent::Retransmission { dir: ToServer }]);
        // Server FIN, client ACKs and FINs, server ACKs.
        t.segment(id(), &seg(ToClient, 501, 106, FIN | ACK, b""), &mut ev);
        let c = t.get(id()).unwrap();
        assert_eq!((c.halves()[0].state, c.halves()[1].state), (TcpState::CloseWait, TcpState::FinWait1));
        t.segment(id(), &seg(ToServer, 106, 502, FIN | ACK, b""), &mut ev);
        let c = t.get(id()).unwrap();
        assert_eq!((c.halves()[0].state, c.halves()[1].state), (TcpState::LastAck, TcpState::TimeWait));
        t.segment(id(), &seg(ToClient, 502, 107, ACK, b""), &mut ev);
        assert_eq!(t.get(id()).unwrap().halves()[0].state, TcpState::Closed);
        ev.clear();
        let c = t.end(id(), EndReason::Fin, &mut ev).unwrap();
        assert_eq!(ev, vec![TcpEvent::End { reason: EndReason::Fin }]);
        assert_eq!(c.halves()[0].retransmissions, 1);
        t.recycle(c);
        assert_eq!(t.budget().used, 0);
    }

    #[test]
    fn rst_closes_both_and_midstream_pickup() {
        use Direction::*;
        let mut t = TcpTracker::new(TcpConfig::default());
        let mut ev = vec![];
        t.segment(id(), &seg(ToServer, 7, 9, ACK, b"xy"), &mut ev);
        assert_eq!(ev[0], TcpEvent::Start { midstream: true });
        assert!(ev.contains(&TcpEvent::DataReady { dir: ToServer, from: 0, to: 2 }));
        t.segment(id(), &seg(ToClient, 9, 9, RST, b""), &mut ev);
        let c = t.get(id()).unwrap();
        assert_eq!((c.halves()[0].state, c.halves()[1].state), (TcpState::Closed, TcpState::Closed));
    }

    #[test]
    fn syn_with_data_and_window_scale() {
        use Direction::*;
        let mut t = TcpTracker::new(TcpConfig::default());
        let mut ev = vec![];
        let ws7 = [1u8, 3, 3, 7];
        let ws2 = [3u8, 3, 2, 0];
        t.segment(
            id(),
            &Segment {
                dir: ToServer,
                seq: u32::MAX,
                ack: 0,
                flags: SYN,
                window: 100,
                options: &ws7,
                payload: b"early",
            },
            &mut ev,
        );
        assert!(ev.contains(&TcpEvent::DataReady { dir: ToServer, from: 0, to: 5 }), "{ev:?}");
        t.segment(
            id(),
            &Segment { dir: ToClient, seq: 10, ack: 5, flags: SYN | ACK, window: 100, options: &ws2, payload: b"" },
            &mut ev,
        );
        t.segment(
            id(),
            &Segment { dir: ToServer, seq: 5, ack: 11, flags: ACK, window: 100, options: &[], payload: b"!" },
            &mut ev,
        );
        let c = t.get(id()).unwrap();
        assert_eq!(c.halves()[0].window, 100 << 7, "scaled once both SYNs had the option");
        assert_eq!(c.frontier(ToServer), 6, "sequence numbers wrapped across 2^32");
        let mut bytes = vec![];
        for s in c.stream(ToServer).unwrap().read(0, 6).unwrap().data() {
            bytes.extend_from_slice(s);
        }
        assert_eq!(bytes, b"early!");
    }
}
