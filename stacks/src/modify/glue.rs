//! The TCP monitor's side of modification: which connections it forwards itself, when their
//! bytes are judged, and where their frames go ([`Forwarding`]).
//!
//! * A connection is taken over at its first SYN (no ACK) when the frame is untagged
//!   Ethernet/IPv4; every later segment of it is forwarded by [`ConnFwd`] and its original
//!   frame is dropped from the chain (reason `forwarded rewritten by the TCP monitor`), after
//!   the NFs saw it. Other connections pass unchanged (`modify_passed_connections`).
//! * **When bytes are judged** (may leave): up to the direction's hold if an NF set one
//!   (`HoldFrom(x)`: "my changes before `x` are in; hold from `x`"), else up to the end of the
//!   last `DATA_RDY` the TX sink saw leave the chain (every NF handled it). Bytes that waited
//!   `hold_timeout_ms` without any progress, while the holding NF has seen every byte received,
//!   leave anyway (`modify_hold_timeouts`: the sender paused inside a possible pattern); an NF
//!   that is behind is waited for, never overtaken (bounded by `max_held_bytes`). (In a direction
//!   no NF holds, bytes wait for the TX sink, which reports an event done when a later
//!   packet reaches it: the next segment, or the sender's retransmission.)
//! * **The cheap path** (`upgrade = "on_request"`, docs/modification.md "Per-flow upgrade"):
//!   connections are not taken over at their SYN; their frames go on through the chain as
//!   received. Per connection the only state is the MSS each SYN announced (in `cheap`, what
//!   a later upgrade needs and the tracker does not keep). An NF's upgrade request is taken
//!   before the monitor's next segment ([`Forwarding::upgrade`]): the connection joins the
//!   modification path at the end of what its sender sent so far (from the tracker), the
//!   edit lists open there, and every later segment goes through [`ConnFwd`] as above.
//! * Frames go to TX through the loopback ([`actors::splice::Loopback`]), sent after every
//!   TX burst.

use std::sync::Arc;
use std::time::Instant;

use actors::splice::Loopback;
use runtime::streams::{Piece, StreamStore};
use rustc_hash::{FxHashMap, FxHashSet};

use super::forward::{self, ConnFwd, FwdCounts, Resume, SegIn};
use super::{Board, ModifyConfig, Upgrade};
use crate::flow_table::Direction;
use crate::parse::tcp_flags::{ACK, SYN};
use crate::tcp::Connection;

struct Conn {
    fwd: ConnFwd,
    completed_to: [u64; 2],
    waiting_since: [Option<Instant>; 2],
    /// The sender was acknowledged ahead in the current stall.
    acked_ahead: [bool; 2],
}

/// The packet fields [`Forwarding::segment`] needs.
#[derive(Clone, Copy, Debug)]
pub struct Packet<'a> {
    /// The TCP segment (its frame, direction and header fields).
    pub seg: SegIn<'a>,
    /// L3 offset and IP version from the L2/3 stack.
    pub l3_offset: u16,
    /// 4 or 6.
    pub ip_version: u8,
    /// The pool buffer (for the ingress port).
    pub buffer: u32,
}

/// The monitor's forwarding state (see the module docs).
pub struct Forwarding {
    cfg: ModifyConfig,
    board: Arc<Board>,
    loopback: Arc<Loopback>,
    conns: FxHashMap<u64, Conn>,
    waiting: FxHashSet<u64>,
    frames: Vec<(u8, Vec<u8>)>,
    counts: FwdCounts,
    taken: u64,
    passed: u64,
    limit_resets: u64,
    gap_resets: u64,
    hold_timeouts: u64,
    acks_ahead: u64,
    /// `upgrade = "on_request"`: connections on the cheap path (their SYN seen, untagged
    /// IPv4), with the MSS each direction's SYN announced (0: none).
    on_request: bool,
    cheap: FxHashMap<u64, [u16; 2]>,
    up: UpgradeCounts,
}

/// The per-flow upgrade's counters (docs/modification.md "Per-flow upgrade").
#[derive(Clone, Copy, Debug, Default)]
struct UpgradeCounts {
    upgraded: u64,
    refused: u64,
    /// Payload bytes of segments passed on the cheap path.
    cheap_bytes: u64,
    /// Payload bytes of segments that went through the modification path.
    modify_bytes: u64,
    /// Bytes upgraded connections had sent on the cheap path before (both directions).
    before_bytes: u64,
    /// Fixed per-connection state high-water (cheap entries + forwarded connections).
    state_high_water: u64,
}

/// State bytes per connection on the cheap path (key and value of `cheap`; the hash
/// table's own overhead is not counted).
const CHEAP_STATE: u64 = (std::mem::size_of::<u64>() + std::mem::size_of::<[u16; 2]>()) as u64;

/// Fixed state bytes per connection on the modification path (its forwarding state and its
/// board entry, keys included; buffers of waiting and kept bytes are not counted).
fn fwd_state() -> u64 {
    (2 * std::mem::size_of::<u64>() + std::mem::size_of::<Conn>() + std::mem::size_of::<super::Entry>()) as u64
}

impl Forwarding {
    /// Forwarding with `cfg`, changes on `board`, frames to `loopback`.
    pub fn new(cfg: ModifyConfig, board: Arc<Board>, loopback: Arc<Loopback>) -> Forwarding {
        let on_request = cfg.upgrade == Upgrade::OnRequest;
        Forwarding {
            cfg,
            board,
            loopback,
            conns: FxHashMap::default(),
            waiting: FxHashSet::default(),
            frames: Vec::new(),
            counts: FwdCounts::default(),
            taken: 0,
            passed: 0,
            limit_resets: 0,
            gap_resets: 0,
            hold_timeouts: 0,
            acks_ahead: 0,
            on_request,
            cheap: FxHashMap::default(),
            up: UpgradeCounts::default(),
        }
    }

    fn note_state(&mut self) {
        let now = self.cheap.len() as u64 * CHEAP_STATE + self.conns.len() as u64 * fwd_state();
        self.up.state_high_water = self.up.state_high_water.max(now);
    }

    /// The upgrade requests NFs made since the last call.
    pub fn take_upgrade_requests(&self) -> Vec<actors::desc::FlowRef> {
        self.board.take_requests()
    }

    /// Moves connection `key` (`conn`, the tracker's, before the next segment) from the cheap
    /// path to the modification path. False (counted `modify_upgrades_refused`) when it is
    /// not on the cheap path: unknown, ended, picked up mid-stream, not untagged IPv4.
    /// A connection forwarded already stays so.
    pub fn upgrade(&mut self, key: u64, conn: Option<&Connection>) -> bool {
        if self.conns.contains_key(&key) {
            return true;
        }
        let (Some(conn), Some(&mss)) = (conn, self.cheap.get(&key)) else {
            self.up.refused += 1;
            return false;
        };
        let half = conn.halves();
        let mut dirs = [Resume::default(); 2];
        let mut wscale = [None; 2];
        for (d, dir) in [(0, Direction::ToServer), (1, Direction::ToClient)] {
            let (h, r) = (&half[d], &half[1 - d]);
            wscale[d] = h.wscale;
            let Some(isn) = h.isn else { continue };
            let first = isn.wrapping_add(1);
            let frontier = conn.frontier(dir);
            let off = |seq: u32| forward::unwrap_offset(seq.wrapping_sub(first), frontier);
            // The end of what the sender sent (the FIN's offset once it sent one).
            let base = match h.fin_seq {
                Some(f) => off(f),
                None if h.seq_known => off(h.next_seq),
                None => 0,
            }
            .max(frontier);
            // The tracker keeps windows scaled; the raw field is what the sender wrote.
            let shift = if half[0].wscale.is_some() && half[1].wscale.is_some() { h.wscale.unwrap_or(0) } else { 0 };
            dirs[d] = Resume {
                first_seq: Some(first),
                base,
                fin: h.fin_seq.is_some(),
                rcv_acked: if r.flags_seen & ACK != 0 { off(r.ack).min(base) } else { 0 },
                rcv_window: u64::from(r.window).max(1),
                mss: match mss[1 - d] {
                    0 => 536,
                    m => m,
                },
                ack: (h.flags_seen & ACK != 0).then_some(h.ack),
                window: u16::try_from(h.window >> shift).unwrap_or(u16::MAX),
            };
        }
        self.cheap.remove(&key);
        self.board.open_at(key, [dirs[0].base, dirs[1].base], [dirs[0].fin, dirs[1].fin]);
        self.up.upgraded += 1;
        self.up.before_bytes += dirs[0].base + dirs[1].base;
        self.conns.insert(
            key,
            Conn {
                fwd: ConnFwd::resume(dirs, wscale),
                completed_to: [dirs[0].base, dirs[1].base],
                waiting_since: [None; 2],
                acked_ahead: [false; 2],
            },
        );
        self.note_state();
        true
    }

    /// A segment of a connection not forwarded here, with `upgrade = "on_request"`: it passes
    /// as received; a SYN's MSS is noted for a later upgrade.
    fn cheap_segment(&mut self, key: u64, p: &Packet<'_>) {
        self.up.cheap_bytes += p.seg.payload_len as u64;
        if p.seg.flags & SYN == 0 {
            return;
        }
        if p.l3_offset != 14 || p.ip_version != 4 {
            if p.seg.flags & ACK == 0 {
                self.passed += 1;
            }
            return;
        }
        let (mss, _) = forward::syn_options(p.seg.frame);
        let e = self.cheap.entry(key).or_insert([0; 2]);
        e[p.seg.dir] = mss.unwrap_or(0);
        self.note_state();
    }

    /// A segment of connection `key` (the monitor's reassembler and store already took it).
    /// True when the monitor forwards it itself: the original leaves the chain.
    pub fn segment(&mut self, key: u64, p: &Packet<'_>, store: &StreamStore) -> bool {
        if !self.conns.contains_key(&key) {
            if self.on_request {
                self.cheap_segment(key, p);
                return false;
            }
            if p.seg.flags & (SYN | ACK) != SYN {
                return false;
            }
            if p.l3_offset != 14 || p.ip_version != 4 {
                self.passed += 1;
                return false;
            }
            self.board.open(key);
            self.taken += 1;
            self.conns.insert(
                key,
                Conn { fwd: ConnFwd::new(), completed_to: [0; 2], waiting_since: [None; 2], acked_ahead: [false; 2] },
            );
            self.note_state();
        }
        self.up.modify_bytes += p.seg.payload_len as u64;
        let egress = self.loopback.ingress_of(p.buffer) ^ 1;
        let mut frames = std::mem::take(&mut self.frames);
        let ok = self.board.with(|m| {
            let (Some(c), Some(e)) = (self.conns.get_mut(&key), m.get_mut(&key)) else { return true };
            c.fwd.segment(&p.seg, egress, &mut e.lists, &mut frames);
            // The bytes that became contiguous, from the store (copied once more: they must
            // outlive the store's release until they are judged and rewritten).
            let d = p.seg.dir;
            let from = c.fwd.received(d, &e.lists[d]);
            let to = store.frontier(key, d).unwrap_or(from);
            let mut ok = true;
            if to > from && c.fwd.started(d) {
                let mut at = from;
                let r = store.read(key, d, from, to, &mut |piece| match piece {
                    Piece::Data(b) => {
                        ok &= c.fwd.push(d, at, b, &e.lists[d]);
                        at += b.len() as u64;
                    }
                    Piece::Gap(_) => ok = false,
                });
                ok &= r.is_ok();
            }
            ok
        });
        self.frames = frames;
        if !ok {
            self.gap_resets += 1;
            self.reset(key);
        } else {
            self.pump(key);
        }
        self.flush();
        true
    }

    /// Every NF handled the `DATA_RDY` of connection `key`'s direction `dir` up to `to`.
    pub fn completed(&mut self, key: u64, dir: usize, to: u64) {
        if let Some(c) = self.conns.get_mut(&key) {
            c.completed_to[dir] = c.completed_to[dir].max(to);
            self.pump(key);
            self.flush();
        }
    }

    /// Timers: directions whose bytes waited too long (called when the monitor is idle).
    pub fn poll(&mut self) {
        if self.waiting.is_empty() {
            return;
        }
        let keys: Vec<u64> = self.waiting.iter().copied().collect();
        for k in keys {
            self.pump(k);
        }
        self.flush();
    }

    /// Connection `key` is gone.
    pub fn end(&mut self, key: u64) {
        self.cheap.remove(&key);
        if let Some(c) = self.conns.remove(&key) {
            self.add_counts(&c.fwd.counts);
            self.board.close(key);
            self.waiting.remove(&key);
        }
    }

    fn add_counts(&mut self, c: &FwdCounts) {
        let t = &mut self.counts;
        t.data_frames += c.data_frames;
        t.data_bytes += c.data_bytes;
        t.resent_frames += c.resent_frames;
        t.probes += c.probes;
        t.control_frames += c.control_frames;
        t.edits_dropped += c.edits_dropped;
        t.passed_frames += c.passed_frames;
    }

    fn reset(&mut self, key: u64) {
        if let Some(mut c) = self.conns.remove(&key) {
            c.fwd.resets(&mut self.frames);
            self.add_counts(&c.fwd.counts);
        }
        self.board.close(key);
        self.waiting.remove(&key);
    }

    fn pump(&mut self, key: u64) {
        let now = Instant::now();
        let timeout = self.cfg.hold_timeout();
        let mut frames = std::mem::take(&mut self.frames);
        let mut timeouts = 0;
        let mut acks_ahead = 0;
        let waiting = self.board.with(|m| {
            let (Some(c), Some(e)) = (self.conns.get_mut(&key), m.get_mut(&key)) else { return false };
            let mut waiting = false;
            for d in 0..2 {
                let stale = c.waiting_since[d].is_some_and(|t| now.duration_since(t) >= timeout);
                let fin = c.fwd.fin_at(d).is_some();
                let received = c.fwd.received(d, &e.lists[d]);
                let limit = match e.hold[d] {
                    // A stall on held bytes: first acknowledge them to the sender (it may be
                    // waiting for exactly them), and hold on for one more timeout.
                    Some((x, seen, _)) if seen >= received && stale && !fin && !c.acked_ahead[d] => {
                        c.fwd.ack_ahead(d, received, &mut frames);
                        c.acked_ahead[d] = true;
                        c.waiting_since[d] = Some(now);
                        acks_ahead += 1;
                        Some(x)
                    }
                    // The NF saw every byte received, and the sender is done (nothing can
                    // complete a held pattern) or paused too long: the held bytes leave.
                    Some((_, seen, _)) if seen >= received && (fin || stale) => {
                        if stale && !fin && seen > e.lists[d].forwarded() {
                            timeouts += 1;
                        }
                        Some(seen)
                    }
                    // Otherwise held bytes wait; an NF that is behind is waited for.
                    Some((x, _, _)) => Some(x),
                    // Never held: only what every NF handled (a later packet, or the sender's
                    // retransmission, moves the TX sink on).
                    None => Some(c.completed_to[d]),
                };
                let before = e.lists[d].forwarded();
                c.fwd.pump(d, &mut e.lists[d], limit, &mut frames);
                let left = c.fwd.received(d, &e.lists[d]) > e.lists[d].forwarded();
                if e.lists[d].forwarded() > before {
                    c.acked_ahead[d] = false;
                }
                c.waiting_since[d] = match (left, e.lists[d].forwarded() > before) {
                    (false, _) => None,
                    (true, true) => Some(now),
                    (true, false) => c.waiting_since[d].or(Some(now)),
                };
                waiting |= left;
            }
            waiting
        });
        self.frames = frames;
        self.hold_timeouts += timeouts;
        self.acks_ahead += acks_ahead;
        if waiting {
            self.waiting.insert(key);
        } else {
            self.waiting.remove(&key);
        }
        if self.conns.get(&key).is_some_and(|c| c.fwd.held() > self.cfg.max_held_bytes) {
            self.limit_resets += 1;
            self.reset(key);
        }
    }

    fn flush(&mut self) {
        for (egress, f) in self.frames.drain(..) {
            self.loopback.send(egress, f);
        }
    }

    /// Counters for the run summary.
    pub fn counters(&self) -> Vec<(String, u64)> {
        use std::sync::atomic::Ordering::Relaxed;
        let mut t = self.counts;
        for c in self.conns.values() {
            let c = &c.fwd.counts;
            t.data_frames += c.data_frames;
            t.data_bytes += c.data_bytes;
            t.resent_frames += c.resent_frames;
            t.probes += c.probes;
            t.control_frames += c.control_frames;
            t.edits_dropped += c.edits_dropped;
            t.passed_frames += c.passed_frames;
        }
        let b = &self.board;
        let u = &self.up;
        vec![
            ("modify_connections".into(), self.taken),
            ("modify_passed_connections".into(), self.passed),
            ("modify_changes_accepted".into(), b.accepted.load(Relaxed)),
            ("modify_refused_too_late".into(), b.refused[0].load(Relaxed)),
            ("modify_refused_overlap".into(), b.refused[1].load(Relaxed)),
            ("modify_refused_limit".into(), b.refused[2].load(Relaxed)),
            ("modify_data_frames".into(), t.data_frames),
            ("modify_data_bytes".into(), t.data_bytes),
            ("modify_resent_frames".into(), t.resent_frames),
            ("modify_probes".into(), t.probes),
            ("modify_control_frames".into(), t.control_frames),
            ("modify_edits_dropped_at_end".into(), t.edits_dropped),
            ("modify_hold_timeouts".into(), self.hold_timeouts),
            ("modify_acks_ahead".into(), self.acks_ahead),
            ("modify_limit_resets".into(), self.limit_resets),
            ("modify_gap_resets".into(), self.gap_resets),
            ("modify_upgrade_requests".into(), b.upgrade_requests.load(Relaxed)),
            ("modify_flows_upgraded".into(), u.upgraded),
            ("modify_upgrades_refused".into(), u.refused),
            ("modify_cheap_path_connections_open".into(), self.cheap.len() as u64),
            ("modify_cheap_path_bytes".into(), u.cheap_bytes),
            ("modify_path_bytes".into(), u.modify_bytes),
            ("modify_upgraded_bytes_before".into(), u.before_bytes),
            ("modify_passed_frames".into(), t.passed_frames),
            ("modify_state_bytes_cheap_connection".into(), CHEAP_STATE),
            ("modify_state_bytes_forwarded_connection".into(), fwd_state()),
            ("modify_state_bytes_high_water".into(), u.state_high_water),
        ]
    }
}
