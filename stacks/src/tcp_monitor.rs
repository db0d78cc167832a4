//! The TCP monitor µStack actor: twin TCP state, reassembled bytestreams and stack snapshots
//! for the network functions after it.
//!
//! It sits after the L2/3 stack and **consumes** its `PKT/TCP` events: each becomes the
//! monitor's own `PKT/TCP` (or `SYN`/`FIN`/`RST`) event carrying a [`TcpSnapshot`] — both
//! endpoints' state, sequence numbers, windows and flags, and both stream frontiers — taken
//! right after the sender's half was updated. When some subscriber asked for a `side`, a
//! second event about the same packet follows with the snapshot after the receiver's update
//! (the paper's client-side / server-side updates, Figure 7c). Its `aux` is the packet's
//! direction's frontier once the packet's bytes entered the stream — the end of what the
//! `DATA_RDY` it raises announces — so an NF that acts on the packet itself (an IPS dropping
//! it) may read its stream up to there at the packet event. It also publishes
//!
//! * `FLOW/TCP` — start, established, every state change of either endpoint, every
//!   retransmission ([`TcpFlowEvent`] in `aux`);
//! * `DATA_RDY` — a direction's frontier advanced: `aux` is the old frontier, the snapshot's
//!   frontier the new one, `TO_SERVER` the direction. [`Context::data_ready`] reads exactly
//!   those bytes;
//! * `FLOW/TCP/TERMINATE` — when the L2/3 flow ends (FIN, RST, timeout, eviction, end of
//!   input), after the last `DATA_RDY` (holes that will never fill are skipped then, and
//!   counted as gaps).
//!
//! **Snapshots and the frontier** (docs/architecture.md, same section): events carry copies,
//! so an NF that runs behind the stack still sees each event's state; a stream is append-only
//! and bytes below the frontier never change, so an NF reading `[aux, frontier)` of its event
//! sees exactly the bytes of that moment even while the monitor appends newer ones.
//!
//! **Reclaiming**: the monitor remembers each `DATA_RDY` it raised; the TX sink reports how
//! far events have left the chain ([`TxSink::completed`](actors::io::TxSink::completed)),
//! and the monitor frees stream chunks that only finished events could see. A connection
//! that ended stays readable until its last events have left.
//!
//! **Sharing**: every byte that becomes contiguous (and every gap skipped) lives in a stream
//! chunk store ([`runtime::streams`]) — in the run's shared-memory region when the engine
//! places it there ([`StreamAccess::share`]), else in this process's heap — and only there:
//! the reassembler's streams are made with a sink ([`ByteStream::new_with_sink`](crate::reassembly::ByteStream::new_with_sink),
//! [`TcpTracker::segment_into`]) that appends each contiguous byte to the store straight from
//! the segment (or from the out-of-order area when a hole fills), so each byte is copied
//! once. The new frontier is published after the segment (or the end of the connection)
//! that moved it, before the events announcing those bytes. Readers ([`SharedStreams`]) read
//! the store without any lock, from any thread or process: the store's append-only and
//! release-by-TX-progress rules keep an event's bytes immutable while the event is in the
//! chain, and its seqlocks turn a read of bytes already freed into an error (the memory-order
//! argument is in `runtime::streams`). The reassembler keeps out-of-order data until it is
//! contiguous, and compares retransmissions of bytes below the frontier with the store's.
//! The reassembly memory limit (which charges each stream for the chunks its held range
//! spans) is capped at the store's size (`stream_chunks × chunk_size`), so a segment is
//! refused (`refused_memory`) before the store could run out; if it still does (gaps may
//! start chunks early) the direction is cut from there (`stream_store_chunks_exhausted`) and
//! reads past that point fail.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use runtime::shm::Region;
use runtime::streams::{self, Piece, RecordId, StoreConfig, StoreReadError, StoreWriter, StreamStore};

use actors::contract::{StreamAccess, StreamReadError};
use actors::desc::{
    meta_flags, snapshot_update, EventDesc, FlowEndReason, FlowEvent, FlowRef, SideSnapshot, TcpFlowEvent, TcpSnapshot,
};
use actors::event::builtin;
use actors::{Actor, ActorError, Context, Contract, Modifies, Publication, Subscription, Verdict};

use crate::flow_table::{Direction, EndReason, FlowId};
use crate::registry::{StackConfig, StackConfigError, StackContext, StackInstance, StackKind};
use crate::tcp::{
    Connection, Endpoint, HalfConnection, Segment, Snapshot, StreamSinks, TcpConfig, TcpEvent, TcpTracker,
};

/// Read access to the monitor's (or the splicer's) streams for the stages after it: the
/// stream store, read without locks. The store is chosen once — placed in a region by the engine
/// ([`StreamAccess::share`]), or made in the heap when the monitor first needs it.
#[derive(Debug)]
pub struct SharedStreams {
    cfg: StoreConfig,
    store: OnceLock<Arc<StreamStore>>,
    /// The writer of a store placed in a region, until the monitor takes it at its first
    /// event (the engine places the store before any actor runs). Touched twice per run,
    /// never by a read.
    handoff: Mutex<Option<StoreWriter>>,
    /// The modification board, when the monitor forwards connections itself
    /// (`[stack.tcp.modify]`, docs/modification.md).
    board: OnceLock<Arc<crate::modify::Board>>,
}

impl SharedStreams {
    /// Streams in a store of `cfg`, not placed yet.
    pub fn new(cfg: StoreConfig) -> SharedStreams {
        SharedStreams { cfg, store: OnceLock::new(), handoff: Mutex::new(None), board: OnceLock::new() }
    }

    /// The store, once chosen.
    pub fn store(&self) -> Option<&Arc<StreamStore>> {
        self.store.get()
    }

    /// The writer for the stack that writes these streams (the monitor or the splicer): the
    /// placed store's, or a new heap store's. `None` when it was already taken.
    pub(crate) fn take_writer(&self) -> Option<StoreWriter> {
        if let Some(w) = self.handoff.lock().unwrap_or_else(|p| p.into_inner()).take() {
            return Some(w);
        }
        let (w, store) = streams::heap(self.cfg).ok()?;
        self.store.set(store).ok()?;
        Some(w)
    }
}

fn flow_id(f: FlowRef) -> FlowId {
    FlowId { index: f.index(), generation: f.generation }
}

fn dir_of(to_server: bool) -> Direction {
    if to_server {
        Direction::ToServer
    } else {
        Direction::ToClient
    }
}

impl StreamAccess for SharedStreams {
    fn read(
        &self,
        flow: FlowRef,
        to_server: bool,
        from: u64,
        to: u64,
        f: &mut dyn FnMut(actors::contract::Chunk<'_>),
    ) -> Result<(), StreamReadError> {
        let store = self.store.get().ok_or(StreamReadError::NoConnection(flow))?;
        let res = store.read(store_key(flow_id(flow)), dir_index(to_server), from, to, &mut |p| {
            f(match p {
                Piece::Data(d) => actors::contract::Chunk::Data(d),
                Piece::Gap(n) => actors::contract::Chunk::Gap(n),
            })
        });
        res.map_err(|e| match e {
            StoreReadError::NoConnection => StreamReadError::NoConnection(flow),
            StoreReadError::NotHeld { base, frontier } => StreamReadError::NotHeld { from, to, base, frontier },
        })
    }

    fn live_frontier(&self, flow: FlowRef, to_server: bool) -> Option<u64> {
        self.store.get()?.frontier(store_key(flow_id(flow)), dir_index(to_server))
    }

    fn modify(
        &self,
        flow: FlowRef,
        to_server: bool,
        change: actors::modify::StreamChange,
    ) -> Result<(), actors::modify::ModifyError> {
        let board = self.board.get().ok_or(actors::modify::ModifyError::NotEnabled)?;
        board.change(store_key(flow_id(flow)), dir_index(to_server), change)
    }

    fn upgrade(&self, flow: FlowRef) -> Result<(), actors::modify::ModifyError> {
        let board = self.board.get().ok_or(actors::modify::ModifyError::NotEnabled)?;
        board.request_upgrade(store_key(flow_id(flow)), flow)
    }

    fn modifiable_from(&self, flow: FlowRef, to_server: bool) -> Option<u64> {
        self.board.get()?.base(store_key(flow_id(flow)), dir_index(to_server))
    }

    fn region_blocks(&self) -> Vec<(String, usize)> {
        vec![(String::new(), streams::block_size(self.cfg))]
    }

    fn share(&self, region: &Arc<Region>, name: &str, create: bool) -> Result<(), String> {
        let store = if create {
            let (w, store) = streams::create(region, name, self.cfg).map_err(|e| e.to_string())?;
            *self.handoff.lock().unwrap_or_else(|p| p.into_inner()) = Some(w);
            store
        } else {
            streams::attach(region, name).map_err(|e| e.to_string())?
        };
        self.store.set(store).map_err(|_| format!("the streams of `{name}` were already placed"))
    }
}

/// The store key of the connection of `flow`.
pub(crate) fn flow_key(flow: FlowRef) -> u64 {
    store_key(flow_id(flow))
}

/// A connection's key in the store.
fn store_key(id: FlowId) -> u64 {
    streams::key(id.index, id.generation)
}

/// The store's direction index: 0 client → server, 1 server → client.
fn dir_index(to_server: bool) -> usize {
    usize::from(!to_server)
}

fn side(h: &HalfConnection) -> SideSnapshot {
    SideSnapshot::new(h.next_seq, h.ack, h.window, h.state as u8, h.flags_seen, h.wscale)
}

fn snapshot(s: &Snapshot, update: u8) -> TcpSnapshot {
    TcpSnapshot::new(side(&s.half[0]), side(&s.half[1]), s.frontier, update)
}

fn update_of(e: Endpoint) -> u8 {
    match e {
        Endpoint::Client => snapshot_update::CLIENT,
        Endpoint::Server => snapshot_update::SERVER,
    }
}

/// The store's writer: the sinks of the monitor's streams. A connection's record is found
/// through the store's own index by its key (no map of our own: issue 14's bytes per idle
/// connection).
struct StoreSinks {
    writer: StoreWriter,
    /// The connection looked up last and its record: a segment's appends and the sync after
    /// them ask for the same one, so a segment walks the store's bucket chain once, not once
    /// per call (issue 14). Forgotten when that record is closed.
    last: Option<(u64, RecordId)>,
}

impl StoreSinks {
    fn new(writer: StoreWriter) -> StoreSinks {
        StoreSinks { writer, last: None }
    }

    /// The record of connection `id`, opened (both directions absent) if it has none yet;
    /// `None` (counted by the store; reads say "no connection") when no record is free.
    fn record(&mut self, id: FlowId) -> Option<RecordId> {
        let key = store_key(id);
        if let Some((k, r)) = self.last {
            if k == key {
                return Some(r);
            }
        }
        let r = match self.writer.record_of(key) {
            Some(r) => r,
            None => self.writer.open(key)?,
        };
        self.last = Some((key, r));
        Some(r)
    }

    /// Frees the record of connection `id`, if it has one.
    fn close(&mut self, id: FlowId) {
        let key = store_key(id);
        if self.last.is_some_and(|(k, _)| k == key) {
            self.last = None;
        }
        if let Some(rec) = self.writer.record_of(key) {
            self.writer.close(rec);
        }
    }
}

impl StreamSinks for StoreSinks {
    fn append(&mut self, flow: FlowId, dir: Direction, at: u64, bytes: &[u8]) {
        if let Some(rec) = self.record(flow) {
            // A direction cut for want of chunks stays cut (counted by the store).
            self.writer.append(rec, dir_index(dir == Direction::ToServer), at, bytes);
        }
    }

    fn differing(&self, flow: FlowId, dir: Direction, at: u64, new: &[u8]) -> Option<u64> {
        let d = dir_index(dir == Direction::ToServer);
        let end = at.checked_add(new.len() as u64)?;
        // Bytes below the reassembler's frontier were published after the segment that
        // brought them (`sync`), so the store's read side has them, unless the direction was
        // cut (the read fails: the bytes count as old).
        let mut diff = 0u64;
        let mut pos = 0usize;
        let mut gap = false;
        let res = self.writer.store().read(store_key(flow), d, at, end, &mut |p| match p {
            Piece::Data(b) => {
                diff += b.iter().zip(&new[pos..]).filter(|(x, y)| x != y).count() as u64;
                pos += b.len();
            }
            Piece::Gap(n) => {
                gap = true;
                pos += n as usize;
            }
        });
        (res.is_ok() && !gap).then_some(diff)
    }
}

/// [`TcpMonitor::sync`] of a connection at hand (one that just ended, out of the tracker).
fn sync_conn(store: Option<&mut StoreSinks>, id: FlowId, conn: &Connection) {
    let Some(st) = store else { return };
    let Some(rec) = st.record(id) else { return };
    let w = &mut st.writer;
    for (d, dir) in [(0, Direction::ToServer), (1, Direction::ToClient)] {
        let Some(s) = conn.stream(dir) else { continue };
        w.set_present(rec, d);
        if s.frontier() > w.frontier(rec, d) {
            w.publish(rec, d, s.frontier());
        }
        w.release(rec, d, s.base());
    }
}

/// The TCP monitor (see the module docs).
pub struct TcpMonitor {
    contract: Contract,
    shared: Arc<SharedStreams>,
    tracker: TcpTracker,
    /// The store's writer (taken at the first event) and each connection's record.
    store: Option<StoreSinks>,
    completed: Option<Arc<AtomicU64>>,
    /// `DATA_RDY` events raised and not yet known to have left: (seq, flow, direction, end).
    pending: VecDeque<(u64, FlowId, Direction, u64)>,
    /// Ended connections whose streams may still be read: (seq of their last events, flow,
    /// the reassembly memory still charged for them). The connection itself is freed when
    /// it ends (readers read the store, not the tracker); its store record and its charge
    /// go when its last events have left (issue 14: at the end of input every flow ends at
    /// once, and keeping the connections until then doubled the peak's maps).
    retiring: VecDeque<(u64, FlowId, usize)>,
    receiver_events: bool,
    events: Vec<TcpEvent>,
    last_seq: u64,
    last_ts: u64,
    bad_headers: u64,
    /// `[stack.tcp.modify]`: the connections it forwards itself.
    forwarding: Option<crate::modify::glue::Forwarding>,
    loopback: Option<Arc<actors::splice::Loopback>>,
}

/// The reason the monitor gives for the originals of the segments it forwards itself.
pub const FORWARDED_REWRITTEN: &str = "forwarded rewritten by the TCP monitor";

/// What the monitor publishes.
pub const PUBLISHES: &[actors::EventType] = &[
    builtin::PKT_TCP,
    builtin::PKT_TCP_SYN,
    builtin::PKT_TCP_FIN,
    builtin::PKT_TCP_RST,
    builtin::FLOW_TCP,
    builtin::FLOW_TCP_TERMINATE,
    builtin::DATA_RDY,
];

impl TcpMonitor {
    /// A monitor named `name`.
    pub fn new(name: &str, cfg: &TcpConfig) -> TcpMonitor {
        let contract = Contract {
            name: name.to_string(),
            kind: "tcp_monitor".into(),
            subscriptions: vec![
                Subscription::new("segments", builtin::PKT_TCP).consuming(),
                Subscription::new("flows", builtin::FLOW),
            ],
            publications: PUBLISHES.iter().map(|t| Publication { port: "events".into(), event: *t }).collect(),
            modifies: Modifies { packets: false, stack_state: true },
            drop_reasons: if cfg.modify.is_some() { vec![FORWARDED_REWRITTEN.into()] } else { vec![] },
        };
        let shared = Arc::new(SharedStreams::new(cfg.store_config()));
        let (forwarding, loopback) = match &cfg.modify {
            Some(m) => {
                let board = Arc::new(match m.upgrade {
                    crate::modify::Upgrade::All => crate::modify::Board::new(m.limits()),
                    crate::modify::Upgrade::OnRequest => crate::modify::Board::on_request(m.limits()),
                });
                let _ = shared.board.set(board.clone());
                let lb = actors::splice::Loopback::new();
                (Some(crate::modify::glue::Forwarding::new(m.clone(), board, lb.clone())), Some(lb))
            }
            None => (None, None),
        };
        let tracker = TcpTracker::new(TcpConfig { memory_limit: cfg.effective_memory_limit(), ..cfg.clone() });
        TcpMonitor {
            contract,
            shared,
            tracker,
            store: None,
            completed: None,
            pending: VecDeque::new(),
            retiring: VecDeque::new(),
            receiver_events: false,
            events: Vec::new(),
            last_seq: 0,
            last_ts: 0,
            bad_headers: 0,
            forwarding,
            loopback,
        }
    }

    /// The streams, for the stages after the monitor.
    pub fn streams(&self) -> Arc<SharedStreams> {
        self.shared.clone()
    }

    /// Where the TX sink reports how far events have left the chain. Without it, stream
    /// chunks are only freed when their connection ends.
    pub fn set_completed(&mut self, completed: Arc<AtomicU64>) {
        self.completed = Some(completed);
    }

    /// Also raise the receiver's update of every packet (some subscriber asked for a side).
    pub fn set_receiver_events(&mut self, on: bool) {
        self.receiver_events = on;
    }

    fn reclaim(&mut self) {
        let Some(done) = self.completed.as_ref().map(|c| c.load(Ordering::Acquire)) else { return };
        while let Some(&(seq, id, dir, to)) = self.pending.front() {
            if seq >= done {
                break;
            }
            self.pending.pop_front();
            if let Some(fw) = self.forwarding.as_mut() {
                fw.completed(store_key(id), dir_index(dir == Direction::ToServer), to);
            }
            // A retired connection (no longer in the tracker: both calls do nothing) is
            // freed whole once its last events have left.
            self.tracker.release(id, dir, to);
            self.sync(id);
        }
        while let Some(&(seq, id, charged)) = self.retiring.front() {
            if seq >= done {
                break;
            }
            self.retiring.pop_front();
            if let Some(fw) = self.forwarding.as_mut() {
                fw.end(store_key(id));
            }
            self.tracker.uncharge(charged);
            if let Some(st) = self.store.as_mut() {
                st.close(id);
            }
        }
    }

    /// NFs' upgrade requests (`upgrade = "on_request"`), taken before the next segment: the
    /// flow is on the modification path from the bytes after those forwarded so far.
    fn upgrades(&mut self) {
        let Some(fw) = self.forwarding.as_mut() else { return };
        for flow in fw.take_upgrade_requests() {
            let id = flow_id(flow);
            fw.upgrade(store_key(id), self.tracker.get(id));
        }
    }

    /// The store's writer and records, taken at the first event that needs them.
    fn sinks(&mut self) -> Option<&mut StoreSinks> {
        if self.store.is_none() {
            self.store = self.shared.take_writer().map(StoreSinks::new);
        }
        self.store.as_mut()
    }

    /// Publishes what the reassembler handed the store for connection `id`: each stream's
    /// direction marked present, its new frontier published, its base moved (chunks below
    /// it freed). Called after every change, before the events that announce it are
    /// published.
    fn sync(&mut self, id: FlowId) {
        let Some(conn) = self.tracker.get(id) else { return };
        sync_conn(self.store.as_mut(), id, conn);
    }

    /// Turns tracker events into descriptors published after the current one.
    fn publish(&mut self, cx: &mut Context<'_>, flow: FlowRef, flow_start: u64, seq: u64, ts: u64, snap: TcpSnapshot) {
        let id = flow_id(flow);
        for e in std::mem::take(&mut self.events) {
            let mut d = EventDesc::new(builtin::FLOW_TCP, 0, seq, ts);
            d.flow = Some(flow);
            d.flow_start = flow_start;
            d.meta.proto = 6;
            d.snap = snap;
            d.snap.update = snapshot_update::NONE;
            match e {
                TcpEvent::Start { midstream } => d.aux = TcpFlowEvent::Start { midstream }.encode(),
                TcpEvent::Established => d.aux = TcpFlowEvent::Established.encode(),
                TcpEvent::StateChange { endpoint, from, to } => {
                    d.aux = TcpFlowEvent::StateChange {
                        endpoint: (endpoint == Endpoint::Server) as u8,
                        from: from as u8,
                        to: to as u8,
                    }
                    .encode()
                }
                TcpEvent::Retransmission { dir } => {
                    d.aux = TcpFlowEvent::Retransmission { to_server: dir == Direction::ToServer }.encode();
                    if dir == Direction::ToServer {
                        d.meta.flags |= meta_flags::TO_SERVER;
                    }
                }
                TcpEvent::DataReady { dir, from, to } => {
                    d.event_type = builtin::DATA_RDY;
                    d.aux = from;
                    d.snap.frontier[usize::from(dir == Direction::ToClient)] = to;
                    if dir == Direction::ToServer {
                        d.meta.flags |= meta_flags::TO_SERVER;
                    }
                    self.pending.push_back((seq, id, dir, to));
                }
                TcpEvent::End { reason } => {
                    d.event_type = builtin::FLOW_TCP_TERMINATE;
                    d.aux = FlowEvent::End(match reason {
                        EndReason::IdleTimeout => FlowEndReason::Timeout,
                        EndReason::Fin => FlowEndReason::Fin,
                        EndReason::Rst => FlowEndReason::Rst,
                        EndReason::Evicted => FlowEndReason::Evicted,
                        EndReason::Shutdown => FlowEndReason::Shutdown,
                    })
                    .encode();
                }
            }
            cx.publish(d);
        }
    }

    fn end(&mut self, cx: &mut Context<'_>, flow: FlowRef, flow_start: u64, reason: EndReason, seq: u64, ts: u64) {
        let id = flow_id(flow);
        self.sinks();
        let sinks = self.store.as_mut().map(|s| s as &mut dyn StreamSinks);
        let Some(conn) = self.tracker.end_boxed(id, reason, &mut self.events, sinks) else { return };
        let snap = Snapshot {
            half: conn.halves(),
            frontier: [conn.frontier(Direction::ToServer), conn.frontier(Direction::ToClient)],
        };
        sync_conn(self.store.as_mut(), id, &conn);
        let charged = self.tracker.retire(*conn);
        self.retiring.push_back((seq, id, charged));
        self.publish(cx, flow, flow_start, seq, ts, snapshot(&snap, snapshot_update::NONE));
    }
}

impl Actor for TcpMonitor {
    fn contract(&self) -> &Contract {
        &self.contract
    }

    fn handle(&mut self, ev: &mut EventDesc, cx: &mut Context<'_>) -> Verdict {
        self.last_seq = self.last_seq.max(ev.seq);
        self.last_ts = self.last_ts.max(ev.ts_ns);
        let Some(flow) = ev.flow else { return Verdict::Continue };
        if ev.event_type == builtin::FLOW {
            if let Some(FlowEvent::End(r)) = FlowEvent::decode(ev.aux) {
                let reason = match r {
                    FlowEndReason::Timeout => EndReason::IdleTimeout,
                    FlowEndReason::Fin => EndReason::Fin,
                    FlowEndReason::Rst => EndReason::Rst,
                    FlowEndReason::Evicted => EndReason::Evicted,
                    FlowEndReason::Shutdown => EndReason::Shutdown,
                };
                self.end(cx, flow, ev.flow_start, reason, ev.seq, ev.ts_ns);
            }
            return Verdict::Continue;
        }
        let Some(h) = ev.packet else { return Verdict::Continue };
        let bytes = cx.packet_bytes(h);
        let l4 = usize::from(ev.meta.l4_offset);
        let Some(hdr) = bytes.get(l4..l4 + 20) else {
            self.bad_headers += 1;
            return Verdict::Continue;
        };
        let be32 = |i: usize| u32::from_be_bytes([hdr[i], hdr[i + 1], hdr[i + 2], hdr[i + 3]]);
        let header_len = usize::from(hdr[12] >> 4) * 4;
        let start = usize::from(ev.meta.payload_offset);
        let payload = bytes.get(start..start + usize::from(ev.meta.payload_len)).unwrap_or(&[]);
        let seg = Segment {
            dir: dir_of(ev.to_server()),
            seq: be32(4),
            ack: be32(8),
            flags: hdr[13],
            window: u16::from_be_bytes([hdr[14], hdr[15]]),
            options: bytes.get(l4 + 20..l4 + header_len.max(20)).unwrap_or(&[]),
            payload,
        };
        self.reclaim();
        self.upgrades();
        self.sinks();
        let sinks = self.store.as_mut().map(|s| s as &mut dyn StreamSinks);
        let up = self.tracker.segment_into(flow_id(flow), &seg, &mut self.events, sinks);
        self.sync(flow_id(flow));
        let mut verdict = Verdict::Continue;
        if let (Some(fw), Some(store)) = (self.forwarding.as_mut(), self.shared.store()) {
            let p = crate::modify::glue::Packet {
                seg: crate::modify::forward::SegIn {
                    dir: dir_index(ev.to_server()),
                    seq: seg.seq,
                    ack: seg.ack,
                    flags: seg.flags,
                    window: seg.window,
                    payload_len: payload.len(),
                    frame: bytes,
                },
                l3_offset: ev.meta.l3_offset,
                ip_version: ev.meta.ip_version,
                buffer: h.index(),
            };
            if fw.segment(store_key(flow_id(flow)), &p, store) {
                verdict = Verdict::Drop(0);
            }
        }
        ev.snap = snapshot(&up.after_sender, update_of(up.sender));
        ev.aux = up.after_receiver.frontier[usize::from(!ev.to_server())];
        if self.receiver_events {
            let mut copy = *ev;
            copy.snap = snapshot(
                &up.after_receiver,
                update_of(if up.sender == Endpoint::Client { Endpoint::Server } else { Endpoint::Client }),
            );
            cx.publish(copy);
        }
        self.publish(cx, flow, ev.flow_start, ev.seq, ev.ts_ns, snapshot(&up.after_receiver, snapshot_update::NONE));
        verdict
    }

    fn idle(&mut self, _cx: &mut Context<'_>) {
        if self.forwarding.is_some() {
            self.reclaim();
            self.upgrades();
            if let Some(fw) = self.forwarding.as_mut() {
                fw.poll();
            }
        }
    }

    fn finish(&mut self, cx: &mut Context<'_>) -> Result<(), ActorError> {
        // The L2/3 stack ended every flow before the end of input; anything left was never
        // announced as a flow end (it cannot happen with L2/3 before the monitor).
        let left = self.tracker.live();
        let seq = cx.end_seq().map_or(self.last_seq, |e| e.saturating_sub(1));
        for id in left {
            let flow = FlowRef::new(id.index, id.generation);
            self.end(cx, flow, 0, EndReason::Shutdown, seq, self.last_ts);
        }
        Ok(())
    }

    fn counters(&self) -> Vec<(String, u64)> {
        let s = self.tracker.stats();
        let b = self.tracker.budget();
        let st = self.shared.store().map(|s| s.stats()).unwrap_or_default();
        vec![
            ("connections".into(), s.connections),
            ("connections_midstream".into(), s.midstream),
            ("connections_open".into(), s.active),
            ("retransmissions".into(), s.retransmissions),
            ("out_of_order_segments".into(), s.out_of_order),
            ("bytes_delivered".into(), s.bytes_delivered),
            ("overlap_conflict_bytes".into(), s.overlap_conflict_bytes),
            ("refused_segments".into(), s.refused_segments),
            ("gap_bytes".into(), s.gap_bytes),
            ("reassembly_memory_high_water".into(), b.high_water as u64),
            ("reassembly_refused_bytes".into(), b.refused_bytes),
            ("bad_tcp_headers".into(), self.bad_headers),
            ("stream_store_chunks_high_water".into(), st.chunks_high_water),
            ("stream_store_chunks_exhausted".into(), st.chunks_exhausted),
            ("stream_store_records_exhausted".into(), st.records_exhausted),
        ]
        .into_iter()
        .chain(s.refused.named().into_iter().map(|(n, v)| (n.to_string(), v)))
        .chain(self.forwarding.iter().flat_map(|f| f.counters()))
        .collect()
    }
}

/// The TCP monitor's registration ([`crate::registry`]): `[stack.tcp]`, only when present.
pub static STACK: StackKind = StackKind { table: "tcp", actor: "tcp", default: None, parse: parse_stack };

/// `[stack.tcp]` with its `[stack.tcp.reassembly]` sub-table, every bad key of both reported.
fn parse_stack(v: toml::Value) -> Result<Arc<dyn StackConfig>, Vec<StackConfigError>> {
    let mut v = v;
    let sub = v.as_table_mut().and_then(|t| t.remove("reassembly"));
    let mut errs = Vec::new();
    let reassembly = match sub
        .map(|r| crate::registry::parse_table::<crate::reassembly::ReassemblyConfig>(r, "stack.tcp.reassembly"))
    {
        None => Some(crate::reassembly::ReassemblyConfig::default()),
        Some(Ok(r)) => match r.validate() {
            Ok(()) => Some(r),
            Err(e) => {
                errs.push(StackConfigError::new("stack.tcp.reassembly", e.to_string()));
                None
            }
        },
        Some(Err(e)) => {
            errs.extend(e);
            None
        }
    };
    match (crate::registry::parse_table::<TcpConfig>(v, "stack.tcp"), reassembly) {
        (Ok(mut c), Some(r)) if errs.is_empty() => {
            c.reassembly = r;
            Ok(Arc::new(c))
        }
        (Err(e), _) => {
            errs.extend(e);
            Err(errs)
        }
        _ => Err(errs),
    }
}

impl StackConfig for TcpConfig {
    fn build(&self, actor: &str, cx: &StackContext<'_>) -> StackInstance {
        let mut tcp = TcpMonitor::new(actor, self);
        tcp.set_completed(cx.completed.clone());
        tcp.set_receiver_events(cx.receiver_events);
        let streams: Arc<dyn StreamAccess> = tcp.streams();
        let loopback = tcp.loopback.clone();
        StackInstance { actor: Box::new(tcp), streams: Some(streams), loopback }
    }

    fn sends_frames(&self) -> Option<&'static str> {
        self.modify.as_ref().map(|_| {
            "[stack.tcp.modify] forwards the connections it rewrites itself (mode a would give every NF a private monitor forwarding the same connections; mode d would shard them over monitors whose frames are not merged) (docs/modification.md)"
        })
    }
}
