//! `FLOW_REQ` / `FLOW_DEST`: the typed events between an active µStack (the TCP splicer)
//! and the policy NFs that choose where its flows go, and the **feedback path** that carries
//! `FLOW_DEST` back up the chain.
//!
//! The paper's Figure 3c: the splicer completes the client's handshake itself, publishes
//! `FLOW_REQ` as the client's first bytes arrive, a policy NF (an HTTP or memcached load
//! balancer) reads them and publishes `FLOW_DEST` with the backend it chose; the splicer
//! then opens the second leg.
//!
//! * [`FlowReq`] — in a `FLOW_REQ` event's `aux`: how many client bytes the splicer holds
//!   (the client stream's frontier, also in `snap.frontier[0]`). The event carries the
//!   client's data packet, so subscription filters (`dst_port = 80`) select the policy by
//!   the virtual service; the bytes themselves are read with
//!   [`Context::read_stream`](crate::Context::read_stream) from the splicer's stream store.
//! * [`FlowDest`] — in a `FLOW_DEST` event: an ordered list of up to [`MAX_BACKENDS`]
//!   IPv4 backends (the first is the choice; the others are tried in turn when one refuses
//!   or does not answer), or "reset the client". Encoded in `aux` and `snap.frontier`.
//! * [`Loopback`] — the feedback path and the splicer's own frames. Events only flow down
//!   the chain, and the policy NFs come after the splicer, so a `FLOW_DEST` travels to TX,
//!   which hands it to the loopback ([`Loopback::feed`]); the splicer takes it from there
//!   ([`Loopback::take_feedback`]). A subscription marked
//!   [`feedback`](crate::Subscription::feedback) declares this path, so the controller
//!   links and checks it like any other. The frames the splicer makes (SYN-ACKs, the
//!   backend leg's segments, ARP replies) are queued here and sent by TX
//!   ([`PacketSink::inject`](crate::io::PacketSink::inject)).
//! * [`Board`] — per-backend counts the splicer keeps (open connections, last refusal) and
//!   the policy NFs read (least connections, health). Process-wide: the splicer and its
//!   policies run in one process (modes b and c; docs/splicer.md says why).

use std::collections::{HashMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use crate::desc::EventDesc;
use crate::io::Ingress;

/// Backends one `FLOW_DEST` can name.
pub const MAX_BACKENDS: usize = 3;

fn pack(a: SocketAddrV4) -> u64 {
    (u64::from(u32::from(*a.ip())) << 16) | u64::from(a.port())
}

fn unpack(v: u64) -> Option<SocketAddrV4> {
    let v = v & 0xffff_ffff_ffff;
    (v != 0).then(|| SocketAddrV4::new(Ipv4Addr::from((v >> 16) as u32), v as u16))
}

/// What a `FLOW_REQ` says (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowReq {
    /// Client bytes the splicer holds: `[0, held)` of the client → server stream.
    pub held: u64,
}

impl FlowReq {
    /// Writes it into `ev`.
    pub fn write(self, ev: &mut EventDesc) {
        ev.aux = self.held;
        ev.snap.frontier[0] = self.held;
    }
    /// Reads it from `ev`.
    pub fn read(ev: &EventDesc) -> FlowReq {
        FlowReq { held: ev.aux }
    }
}

/// What a `FLOW_DEST` says (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowDest {
    /// Connect to the first backend; on refusal or timeout try the next ones in order.
    Connect([Option<SocketAddrV4>; MAX_BACKENDS]),
    /// No backend: reset the client.
    Reset,
}

const DEST_RESET: u64 = 1 << 63;

impl FlowDest {
    /// Backends in order (at most [`MAX_BACKENDS`]; more are ignored).
    pub fn connect(backends: &[SocketAddrV4]) -> FlowDest {
        let mut b = [None; MAX_BACKENDS];
        for (slot, a) in b.iter_mut().zip(backends) {
            *slot = Some(*a);
        }
        if b[0].is_none() {
            return FlowDest::Reset;
        }
        FlowDest::Connect(b)
    }

    /// Writes it into `ev`.
    pub fn write(self, ev: &mut EventDesc) {
        match self {
            FlowDest::Reset => {
                ev.aux = DEST_RESET;
                ev.snap.frontier = [0, 0];
            }
            FlowDest::Connect(b) => {
                let p = |i: usize| b[i].map_or(0, pack);
                ev.aux = p(0);
                ev.snap.frontier = [p(1), p(2)];
            }
        }
    }

    /// Reads it from `ev`.
    pub fn read(ev: &EventDesc) -> FlowDest {
        if ev.aux & DEST_RESET != 0 {
            return FlowDest::Reset;
        }
        match unpack(ev.aux) {
            None => FlowDest::Reset,
            Some(first) => FlowDest::Connect([Some(first), unpack(ev.snap.frontier[0]), unpack(ev.snap.frontier[1])]),
        }
    }
}

/// A split proxy's `FLOW_DEST` answer for a SYN it holds (`[stack.proxy] upgrade =
/// "on_request"`, docs/proxy.md "Per-flow upgrade to the proxy"): terminate the flow, or let
/// it pass on the cheap path. Encoded in `aux` with a marker bit and no address bits, so a
/// splicer that got one by mistake reads it as [`FlowDest::Reset`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyChoice {
    /// The flow goes into the proxy (its NFs, e.g. the cache, see it).
    Proxy,
    /// The flow passes unchanged.
    Pass,
}

const CHOICE: u64 = 1 << 62;
const CHOICE_PROXY: u64 = 1 << 61;

impl ProxyChoice {
    /// Writes it into `ev`.
    pub fn write(self, ev: &mut EventDesc) {
        ev.aux = CHOICE | if self == ProxyChoice::Proxy { CHOICE_PROXY } else { 0 };
        ev.snap.frontier = [0, 0];
    }

    /// Reads it from `ev`; `None` when `ev` is not a proxy choice (e.g. a load balancer's
    /// backend list).
    pub fn read(ev: &EventDesc) -> Option<ProxyChoice> {
        if ev.aux & DEST_RESET != 0 || ev.aux & CHOICE == 0 {
            return None;
        }
        Some(if ev.aux & CHOICE_PROXY != 0 { ProxyChoice::Proxy } else { ProxyChoice::Pass })
    }
}

/// Frames queued at most; beyond, new frames are dropped and counted.
pub const LOOPBACK_FRAMES: usize = 65_536;

/// The feedback path and the splicer's outgoing frames (see the module docs).
#[derive(Debug, Default)]
pub struct Loopback {
    frames: Mutex<VecDeque<(u8, Vec<u8>)>>,
    feedback: Mutex<VecDeque<EventDesc>>,
    ingress: OnceLock<Arc<Ingress>>,
    /// Frames dropped because the queue was full.
    pub frames_dropped: AtomicU64,
    /// Frames TX sent (or wrote to the capture).
    pub frames_sent: AtomicU64,
    /// Frames TX could not send.
    pub frames_not_sent: AtomicU64,
    /// Feedback events taken from TX.
    pub fed: AtomicU64,
}

impl Loopback {
    /// An empty loopback.
    pub fn new() -> Arc<Loopback> {
        Arc::new(Loopback::default())
    }

    /// Queues a frame for port `egress`.
    pub fn send(&self, egress: u8, frame: Vec<u8>) {
        let mut q = self.frames.lock().unwrap_or_else(|p| p.into_inner());
        if q.len() >= LOOPBACK_FRAMES {
            self.frames_dropped.fetch_add(1, Ordering::Relaxed);
        } else {
            q.push_back((egress, frame));
        }
    }

    /// Takes every queued frame (TX).
    pub fn take_frames(&self, into: &mut Vec<(u8, Vec<u8>)>) {
        let mut q = self.frames.lock().unwrap_or_else(|p| p.into_inner());
        into.extend(q.drain(..));
    }

    /// Hands a feedback event over (TX).
    pub fn feed(&self, ev: EventDesc) {
        self.fed.fetch_add(1, Ordering::Relaxed);
        self.feedback.lock().unwrap_or_else(|p| p.into_inner()).push_back(ev);
    }

    /// Takes every feedback event (the splicer).
    pub fn take_feedback(&self) -> Vec<EventDesc> {
        let mut q = self.feedback.lock().unwrap_or_else(|p| p.into_inner());
        q.drain(..).collect()
    }

    /// The ingress table of a live run (set once by the engine).
    pub fn set_ingress(&self, ingress: Arc<Ingress>) {
        let _ = self.ingress.set(ingress);
    }

    /// The port a pool buffer's frame came in by (0 without a live port).
    pub fn ingress_of(&self, buffer: u32) -> u8 {
        self.ingress.get().map_or(0, |t| t.get(buffer))
    }
}

/// What the splicer knows about one backend.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackendState {
    /// Connections open to it now.
    pub active: u64,
    /// Connections it refused or let time out, in all.
    pub failures: u64,
    /// When it last refused or timed out.
    pub last_failure: Option<Instant>,
}

/// Per-backend counts kept by the splicer, read by the policy NFs (see the module docs).
#[derive(Debug, Default)]
pub struct Board {
    backends: Mutex<HashMap<SocketAddrV4, BackendState>>,
}

impl Board {
    /// The process-wide board.
    pub fn global() -> &'static Board {
        static BOARD: OnceLock<Board> = OnceLock::new();
        BOARD.get_or_init(Board::default)
    }

    fn with<R>(&self, f: impl FnOnce(&mut HashMap<SocketAddrV4, BackendState>) -> R) -> R {
        f(&mut self.backends.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// A connection to `b` opened.
    pub fn opened(&self, b: SocketAddrV4) {
        self.with(|m| m.entry(b).or_default().active += 1);
    }

    /// A connection to `b` closed.
    pub fn closed(&self, b: SocketAddrV4) {
        self.with(|m| {
            let e = m.entry(b).or_default();
            e.active = e.active.saturating_sub(1);
        });
    }

    /// `b` refused a connection or did not answer.
    pub fn failed(&self, b: SocketAddrV4) {
        self.with(|m| {
            let e = m.entry(b).or_default();
            e.failures += 1;
            e.last_failure = Some(Instant::now());
        });
    }

    /// What is known about `b`.
    pub fn get(&self, b: SocketAddrV4) -> BackendState {
        self.with(|m| m.get(&b).copied().unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::builtin;

    #[test]
    fn flow_dest_round_trips() {
        let a: SocketAddrV4 = "10.0.0.1:80".parse().unwrap();
        let b: SocketAddrV4 = "10.0.0.2:8080".parse().unwrap();
        let mut ev = EventDesc::new(builtin::FLOW_DEST, 1, 1, 0);
        FlowDest::connect(&[a, b]).write(&mut ev);
        assert_eq!(FlowDest::read(&ev), FlowDest::Connect([Some(a), Some(b), None]));
        FlowDest::Reset.write(&mut ev);
        assert_eq!(FlowDest::read(&ev), FlowDest::Reset);
        assert_eq!(FlowDest::connect(&[]), FlowDest::Reset);
        for c in [ProxyChoice::Proxy, ProxyChoice::Pass] {
            c.write(&mut ev);
            assert_eq!(ProxyChoice::read(&ev), Some(c));
            assert_eq!(FlowDest::read(&ev), FlowDest::Reset, "a splicer reads a choice as reset");
        }
        FlowDest::connect(&[a]).write(&mut ev);
        assert_eq!(ProxyChoice::read(&ev), None);
    }

    #[test]
    fn loopback_bounds_frames() {
        let l = Loopback::new();
        for _ in 0..LOOPBACK_FRAMES + 3 {
            l.send(0, vec![1]);
        }
        assert_eq!(l.frames_dropped.load(Ordering::Relaxed), 3);
        let mut v = Vec::new();
        l.take_frames(&mut v);
        assert_eq!(v.len(), LOOPBACK_FRAMES);
    }
}
