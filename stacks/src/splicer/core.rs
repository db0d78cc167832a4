//! The splicer's state machine, free of I/O (STYLE.md habit 2): frames and `FLOW_DEST`s
//! in, frames and `FLOW_REQ`s out ([`Action`]), time passed in by the caller.
//!
//! A connection to a virtual service goes through:
//!
//! 1. **SYN** → SYN-ACK whose ISN is a [cookie](super::cookie); nothing is stored.
//! 2. **ACK** with a valid cookie → a [`Flow`] (counted `cookies_validated`); an ACK with a
//!    bad one is answered with a RST (`cookies_invalid`).
//! 3. **Request bytes**, in order, are acknowledged, appended to the flow's client → server
//!    stream in the splicer's stream chunk store ([`runtime::streams`], the same store the
//!    TCP monitor writes; the splicer is its single writer), published (the new frontier)
//!    and then announced with a `FLOW_REQ` each time more arrive — so the event's frontier
//!    says what a policy NF may read, and the store's memory-ordering argument applies.
//!    Out-of-order bytes are not kept (the client retransmits them; a duplicate ACK says
//!    where we are). More than `max_request_bytes`, or no `FLOW_DEST` within
//!    `request_timeout_ms`: RST (`request_limit_resets`, `request_timeouts`). A store with no
//!    free record or chunk: RST (`store_exhausted_resets`). The flow's record is closed once
//!    the backend acknowledged the replay, or when the flow ends.
//! 4. **`FLOW_DEST`** → a SYN to the first backend from the configured `source` address (a
//!    port of the splicer's own): replies come back to the splicer, whatever the backends'
//!    routes. The SYN's ISN is the client's, so client → backend sequence numbers need no
//!    translation; the backend's ISN differs from the cookie by a delta added to its
//!    sequence numbers and taken from the client's acknowledgments.
//! 5. **Backend SYN-ACK** → ACK, then the held bytes (and a FIN the client sent) replayed
//!    in MSS-sized segments, retransmitted until the backend acknowledges them.
//! 6. **Spliced**: every segment of either leg is rewritten (Ethernet and IP addresses,
//!    ports, seq/ack, checksums) and sent out the other leg's port. Both SYNs carried only
//!    an MSS option, so neither leg uses window scaling, SACK or timestamps: windows pass
//!    unchanged and there are no SACK blocks or timestamps to rewrite.
//! 7. **Teardown**: a RST on either leg is forwarded and ends the flow; FINs are forwarded
//!    and the flow ends `linger_ms` after both were seen; `idle_timeout_ms` without a
//!    segment resets both legs. A backend that refuses (RST to the SYN) or does not answer
//!    within `connect_timeout_ms` (the SYN is sent `connect_tries` times) is counted and
//!    reported to the [`Board`]; `on_backend_failure = "next"` tries the next backend of
//!    the `FLOW_DEST`, `"rst"` (or no backend left) resets the client.
//!
//! Backends' Ethernet addresses come from ARP: the splicer asks on every port and answers
//! requests for its virtual and source addresses itself.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actors::desc::FlowRef;
use actors::splice::{Board, FlowDest, MAX_BACKENDS};
use runtime::streams::{Piece, RecordId, StoreWriter};

use crate::parse::tcp_flags;
use crate::tcp_monitor::{flow_key, SharedStreams};

use super::cookie::Cookies;
use super::wire::{self, Mac, Out, Rewrite, Segment};

/// What to do when a backend refuses or does not answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnBackendFailure {
    /// Try the next backend the `FLOW_DEST` named; reset the client when none is left.
    #[default]
    Next,
    /// Reset the client.
    Rst,
}

/// The splicer's settings, resolved.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Virtual services.
    pub services: Vec<SocketAddrV4>,
    /// Source address of the backend legs.
    pub source: Ipv4Addr,
    /// The Ethernet address it sends from and answers ARP with.
    pub mac: Mac,
    /// MSS it offers (at most).
    pub mss: u16,
    /// Client bytes held per flow before a `FLOW_DEST`.
    pub max_request_bytes: usize,
    /// Time for a `FLOW_DEST` after the first byte... or after the handshake.
    pub request_timeout: Duration,
    /// Time for a backend's SYN-ACK, per try.
    pub connect_timeout: Duration,
    /// SYNs sent per backend.
    pub connect_tries: u32,
    /// No segment for this long: both legs reset.
    pub idle_timeout: Duration,
    /// Time a flow stays after both FINs.
    pub linger: Duration,
    /// Backend failure policy.
    pub on_backend_failure: OnBackendFailure,
    /// Flows at most (beyond, new handshakes are reset: `flows_full`).
    pub max_flows: usize,
}

/// What the core asks its actor to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send this frame out of this port.
    Frame(u8, Vec<u8>),
    /// Publish a `FLOW_REQ` for this flow: `held` client bytes.
    FlowReq(FlowRef, u64),
}

/// The store's direction of the client → server stream.
const TO_SERVER: usize = 0;

/// Counters (the run summary shows them).
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// SYN-ACKs with a cookie sent.
    pub cookies_sent: u64,
    /// Handshakes completed with a valid cookie.
    pub cookies_validated: u64,
    /// ACKs with a bad cookie (answered with RST).
    pub cookies_invalid: u64,
    /// `FLOW_REQ`s asked for.
    pub flow_reqs: u64,
    /// `FLOW_DEST`s taken.
    pub flow_dests: u64,
    /// `FLOW_DEST`s for no known flow.
    pub flow_dests_unknown: u64,
    /// Flows spliced to a backend.
    pub spliced: u64,
    /// Backends that refused.
    pub backend_refused: u64,
    /// Backends that did not answer.
    pub backend_timeouts: u64,
    /// Retries on the next backend.
    pub backend_retries: u64,
    /// Clients reset: no backend (policy said so, or none left).
    pub no_backend_resets: u64,
    /// Clients reset: too many request bytes.
    pub request_limit_resets: u64,
    /// Clients reset: no `FLOW_DEST` in time.
    pub request_timeouts: u64,
    /// Clients reset: the stream store had no free record (at the handshake) or chunk.
    pub store_exhausted_resets: u64,
    /// Flows reset after `idle_timeout`.
    pub idle_timeouts: u64,
    /// Flows ended by FIN.
    pub closed_fin: u64,
    /// Flows ended by RST.
    pub closed_rst: u64,
    /// Handshakes refused: the flow table was full.
    pub flows_full: u64,
    /// ARP requests answered.
    pub arp_replies: u64,
    /// ARP requests sent.
    pub arp_requests: u64,
    /// Segments forwarded between legs.
    pub forwarded: u64,
    /// Replayed segments resent.
    pub replay_resent: u64,
    /// Flows now.
    pub flows: u64,
    /// Flows at most at once.
    pub flows_peak: u64,
}

type ClientKey = (SocketAddrV4, SocketAddrV4);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for `FLOW_DEST`.
    Requesting,
    /// Waiting for the backend's ARP reply or SYN-ACK.
    Connecting,
    /// Both legs up.
    Spliced,
}

/// One client connection (see the module docs).
#[derive(Debug)]
struct Flow {
    fref: FlowRef,
    /// The flow's record in the stream store, until it is closed (replay acknowledged).
    rec: Option<RecordId>,
    /// Client bytes held: the published frontier of the client → server stream.
    held: usize,
    client_mac: Mac,
    client_port: u8,
    c_isn: u32,
    s_isn: u32,
    mss: u16,
    phase: Phase,
    client_fin: bool,
    candidates: [Option<SocketAddrV4>; MAX_BACKENDS],
    cand: usize,
    backend: Option<SocketAddrV4>,
    src_port: u16,
    b_isn: u32,
    tries: u32,
    sent_at: Instant,
    replay_until: Option<u32>,
    fin_c: bool,
    fin_b: bool,
    closing_since: Option<Instant>,
    created: Instant,
    last: Instant,
}

/// A map with `foldhash`'s per-process random seed.
type SeededMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// The splicer's state (see the module docs).
pub struct Core {
    s: Settings,
    cookies: Cookies,
    epoch: Instant,
    /// Keyed by what clients choose (addresses, ports): a seeded fast hash, so that nobody
    /// can aim connections at one bucket.
    flows: SeededMap<ClientKey, Flow>,
    by_backend: SeededMap<(SocketAddrV4, u16), ClientKey>,
    by_ref: rustc_hash::FxHashMap<FlowRef, ClientKey>,
    arp: HashMap<Ipv4Addr, (Mac, u8)>,
    arp_asked: HashMap<Ipv4Addr, Instant>,
    ports: u8,
    next_port: u16,
    ip_id: u16,
    streams: Arc<SharedStreams>,
    /// The store's writer, taken at the first handshake (the engine places the store first).
    writer: Option<StoreWriter>,
    /// Counters.
    pub stats: Stats,
}

const FIRST_PORT: u16 = 20_000;
const LAST_PORT: u16 = 60_999;

impl Core {
    /// A splicer with settings `s`, sending on `ports` ports, writing its held bytes to the
    /// store of `streams` (it must be their only writer).
    pub fn new(s: Settings, ports: u8, streams: Arc<SharedStreams>) -> Core {
        Core {
            s,
            cookies: Cookies::new(),
            epoch: Instant::now(),
            flows: SeededMap::default(),
            by_backend: SeededMap::default(),
            by_ref: rustc_hash::FxHashMap::default(),
            arp: HashMap::new(),
            arp_asked: HashMap::new(),
            ports: ports.max(1),
            next_port: FIRST_PORT,
            ip_id: 1,
            streams,
            writer: None,
            stats: Stats::default(),
        }
    }

    /// True when `ip` is one of the splicer's own addresses.
    pub fn owns(&self, ip: Ipv4Addr) -> bool {
        ip == self.s.source || self.s.services.iter().any(|v| *v.ip() == ip)
    }

    fn secs(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_secs() + 64 * 32
    }

    fn next_id(&mut self) -> u16 {
        self.ip_id = self.ip_id.wrapping_add(1);
        self.ip_id
    }

    #[allow(clippy::too_many_arguments)]
    fn seg(
        &mut self,
        to_mac: Mac,
        src: SocketAddrV4,
        dst: SocketAddrV4,
        seq: u32,
        ack: u32,
        fl: u8,
        mss: Option<u16>,
        payload: &[u8],
    ) -> Vec<u8> {
        let ip_id = self.next_id();
        wire::build(&Out {
            macs: (self.s.mac, to_mac),
            ips: (*src.ip(), *dst.ip()),
            ports: (src.port(), dst.port()),
            seq,
            ack,
            flags: fl,
            window: 65535,
            mss,
            ip_id,
            payload,
        })
    }

    /// Handles a frame that came in by `port` (its L2/3 flow `fref`). Returns false when it
    /// is none of the splicer's business (it then continues down the chain unchanged).
    pub fn on_frame(&mut self, now: Instant, port: u8, f: &[u8], fref: Option<FlowRef>, out: &mut Vec<Action>) -> bool {
        if let Some(a) = wire::arp(f) {
            return self.on_arp(now, port, a, out);
        }
        let Some(seg) = wire::segment(f) else { return false };
        if !self.owns(seg.dst) {
            return false;
        }
        let dst = SocketAddrV4::new(seg.dst, seg.dport);
        let src = SocketAddrV4::new(seg.src, seg.sport);
        if seg.dst == self.s.source && !self.s.services.contains(&dst) {
            self.backend_segment(now, f, &seg, src, out);
        } else if self.s.services.contains(&dst) {
            self.client_segment(now, port, f, &seg, fref, out);
        }
        true
    }

    fn on_arp(&mut self, now: Instant, port: u8, a: wire::Arp, out: &mut Vec<Action>) -> bool {
        if a.spa != Ipv4Addr::UNSPECIFIED {
            let asked = self.arp_asked.remove(&a.spa).is_some();
            if asked || self.arp.contains_key(&a.spa) {
                self.arp.insert(a.spa, (a.sha, port));
            }
            if asked {
                // The SYNs that waited for this address go now.
                let waiting: Vec<ClientKey> = self
                    .flows
                    .iter()
                    .filter(|(_, f)| f.phase == Phase::Connecting && f.backend.is_some_and(|b| *b.ip() == a.spa))
                    .map(|(k, _)| *k)
                    .collect();
                for key in waiting {
                    if let Some(f) = self.flows.get_mut(&key) {
                        f.tries = f.tries.saturating_sub(1);
                    }
                    self.send_syn(now, key, out);
                }
            }
        }
        if !self.owns(a.tpa) {
            return false;
        }
        if a.op == 1 {
            out.push(Action::Frame(port, wire::build_arp(2, self.s.mac, a.tpa, a.sha, a.spa)));
            self.stats.arp_replies += 1;
        }
        true
    }

    fn rst_to_client(&mut self, key: ClientKey, to_mac: Mac, port: u8, seq: u32, ack: u32, out: &mut Vec<Action>) {
        let f = self.seg(to_mac, key.1, key.0, seq, ack, tcp_flags::RST | tcp_flags::ACK, None, &[]);
        out.push(Action::Frame(port, f));
    }

    fn client_segment(
        &mut self,
        now: Instant,
        port: u8,
        f: &[u8],
        seg: &Segment<'_>,
        fref: Option<FlowRef>,
        out: &mut Vec<Action>,
    ) {
        let key = (SocketAddrV4::new(seg.src, seg.sport), SocketAddrV4::new(seg.dst, seg.dport));
        let syn = seg.flags & (tcp_flags::SYN | tcp_flags::ACK | tcp_flags::RST) == tcp_flags::SYN;
        let reused = self.flows.get(&key).is_some_and(|f| syn && f.closing_since.is_some() && seg.seq != f.c_isn);
        if reused {
            // A new connection on the 4-tuple of one that closed and lingers (clients reuse
            // ports quickly): the old one is over.
            self.stats.closed_fin += 1;
            self.remove(key);
        }
        if !self.flows.contains_key(&key) {
            self.handshake(now, port, seg, key, fref, out);
            return;
        }
        let Some(fl) = self.flows.get_mut(&key) else { return };
        fl.last = now;
        if seg.flags & tcp_flags::RST != 0 {
            if let (Phase::Spliced, Some(b)) = (fl.phase, fl.backend) {
                let r = client_to_backend(fl, &self.s, b, self.arp.get(b.ip()).map(|x| x.0).unwrap_or([0xff; 6]));
                if let Some(g) = wire::rewrite(f, &r) {
                    let bport = self.arp.get(b.ip()).map_or(port ^ 1, |x| x.1);
                    out.push(Action::Frame(bport, g));
                }
            } else if let (Phase::Connecting, Some(b)) = (fl.phase, fl.backend) {
                let (c, sp) = (fl.c_isn, fl.src_port);
                let mac = self.arp.get(b.ip()).copied();
                if let Some((m, p)) = mac {
                    let g = self.seg(
                        m,
                        SocketAddrV4::new(self.s.source, sp),
                        b,
                        c.wrapping_add(1),
                        0,
                        tcp_flags::RST,
                        None,
                        &[],
                    );
                    out.push(Action::Frame(p, g));
                }
            }
            self.stats.closed_rst += 1;
            self.remove(key);
            return;
        }
        if seg.flags & tcp_flags::SYN != 0 {
            // A retransmitted SYN of an established flow: answer as before.
            let (s_isn, c_isn, mss, mac) = (fl.s_isn, fl.c_isn, fl.mss, fl.client_mac);
            if seg.seq == c_isn {
                let g = self.seg(
                    mac,
                    key.1,
                    key.0,
                    s_isn,
                    c_isn.wrapping_add(1),
                    tcp_flags::SYN | tcp_flags::ACK,
                    Some(mss),
                    &[],
                );
                out.push(Action::Frame(port, g));
            }
            return;
        }
        match fl.phase {
            Phase::Requesting | Phase::Connecting => self.request_bytes(now, port, seg, key, out),
            Phase::Spliced => {
                let Some(b) = fl.backend else { return };
                if seg.flags & tcp_flags::FIN != 0 {
                    fl.fin_c = true;
                }
                let Some(&(bmac, bport)) = self.arp.get(b.ip()) else { return };
                let Some(fl) = self.flows.get_mut(&key) else { return };
                if fl.fin_c && fl.fin_b && fl.closing_since.is_none() {
                    fl.closing_since = Some(now);
                }
                let r = client_to_backend(fl, &self.s, b, bmac);
                if let Some(g) = wire::rewrite(f, &r) {
                    out.push(Action::Frame(bport, g));
                    self.stats.forwarded += 1;
                }
            }
        }
    }

    fn handshake(
        &mut self,
        now: Instant,
        port: u8,
        seg: &Segment<'_>,
        key: ClientKey,
        fref: Option<FlowRef>,
        out: &mut Vec<Action>,
    ) {
        let secs = self.secs(now);
        if seg.flags & tcp_flags::RST != 0 {
            return;
        }
        if seg.flags & tcp_flags::SYN != 0 && seg.flags & tcp_flags::ACK == 0 {
            let (cookie, mss) = self.cookies.make(key.0, key.1, seg.seq, seg.mss.unwrap_or(536).min(self.s.mss), secs);
            let g = self.seg(
                seg.src_mac,
                key.1,
                key.0,
                cookie,
                seg.seq.wrapping_add(1),
                tcp_flags::SYN | tcp_flags::ACK,
                Some(mss),
                &[],
            );
            out.push(Action::Frame(port, g));
            self.stats.cookies_sent += 1;
            return;
        }
        if seg.flags & tcp_flags::ACK == 0 {
            return;
        }
        let Some(mss) = self.cookies.check(key.0, key.1, seg.seq, seg.ack, secs) else {
            self.stats.cookies_invalid += 1;
            let g = self.seg(seg.src_mac, key.1, key.0, seg.ack, 0, tcp_flags::RST, None, &[]);
            out.push(Action::Frame(port, g));
            return;
        };
        let Some(fref) = fref else { return };
        if self.flows.len() >= self.s.max_flows {
            self.stats.flows_full += 1;
            self.rst_to_client(key, seg.src_mac, port, seg.ack, seg.seq, out);
            return;
        }
        if self.writer.is_none() {
            self.writer = self.streams.take_writer();
        }
        let rec = self.writer.as_mut().and_then(|w| {
            let r = w.open(flow_key(fref))?;
            w.set_present(r, TO_SERVER);
            Some(r)
        });
        let Some(rec) = rec else {
            self.stats.store_exhausted_resets += 1;
            self.rst_to_client(key, seg.src_mac, port, seg.ack, seg.seq, out);
            return;
        };
        self.stats.cookies_validated += 1;
        let c_isn = seg.seq.wrapping_sub(1);
        let s_isn = seg.ack.wrapping_sub(1);
        self.flows.insert(
            key,
            Flow {
                fref,
                rec: Some(rec),
                held: 0,
                client_mac: seg.src_mac,
                client_port: port,
                c_isn,
                s_isn,
                mss,
                phase: Phase::Requesting,
                client_fin: false,
                candidates: [None; MAX_BACKENDS],
                cand: 0,
                backend: None,
                src_port: 0,
                b_isn: 0,
                tries: 0,
                sent_at: now,
                replay_until: None,
                fin_c: false,
                fin_b: false,
                closing_since: None,
                created: now,
                last: now,
            },
        );
        self.by_ref.insert(fref, key);
        self.stats.flows = self.flows.len() as u64;
        self.stats.flows_peak = self.stats.flows_peak.max(self.stats.flows);
        if !seg.payload.is_empty() || seg.flags & tcp_flags::FIN != 0 {
            self.request_bytes(now, port, seg, key, out);
        }
    }

    /// Client bytes before the splice: keep the in-order ones, acknowledge, announce.
    fn request_bytes(&mut self, now: Instant, port: u8, seg: &Segment<'_>, key: ClientKey, out: &mut Vec<Action>) {
        let Some(fl) = self.flows.get(&key) else { return };
        let (fref, c_isn, s_isn, mac, rec) = (fl.fref, fl.c_isn, fl.s_isn, fl.client_mac, fl.rec);
        let mut held = fl.held;
        let next = c_isn.wrapping_add(1).wrapping_add(held as u32);
        let mut grew = false;
        let fin = seg.flags & tcp_flags::FIN != 0;
        if !seg.payload.is_empty() && seg.seq == next && !fl.client_fin {
            if held + seg.payload.len() > self.s.max_request_bytes {
                self.stats.request_limit_resets += 1;
                self.rst_to_client(key, mac, port, s_isn.wrapping_add(1), next, out);
                self.remove(key);
                return;
            }
            if let (Some(rec), Some(w)) = (rec, self.writer.as_mut()) {
                // Append, then publish the new frontier: before the `FLOW_REQ` that
                // announces it is pushed (by the actor, after this returns).
                if !w.append(rec, TO_SERVER, held as u64, seg.payload) {
                    self.stats.store_exhausted_resets += 1;
                    self.rst_to_client(key, mac, port, s_isn.wrapping_add(1), next, out);
                    self.remove(key);
                    return;
                }
                held += seg.payload.len();
                w.publish(rec, TO_SERVER, held as u64);
                if let Some(fl) = self.flows.get_mut(&key) {
                    fl.held = held;
                }
                grew = true;
            }
        }
        let expect_fin = c_isn.wrapping_add(1).wrapping_add(held as u32);
        if fin && seg.seq.wrapping_add(seg.payload.len() as u32) == expect_fin {
            if let Some(fl) = self.flows.get_mut(&key) {
                fl.client_fin = true;
            }
        }
        let Some((client_fin, phase)) = self.flows.get(&key).map(|f| (f.client_fin, f.phase)) else { return };
        let ack = expect_fin.wrapping_add(u32::from(client_fin));
        if !seg.payload.is_empty() || fin {
            let g = self.seg(mac, key.1, key.0, s_isn.wrapping_add(1), ack, tcp_flags::ACK, None, &[]);
            out.push(Action::Frame(port, g));
        }
        if grew && phase == Phase::Requesting {
            self.stats.flow_reqs += 1;
            out.push(Action::FlowReq(fref, held as u64));
        }
        let _ = now;
    }

    /// A policy's answer for flow `fref`.
    pub fn on_dest(&mut self, now: Instant, fref: FlowRef, dest: FlowDest, out: &mut Vec<Action>) {
        let Some(&key) = self.by_ref.get(&fref) else {
            self.stats.flow_dests_unknown += 1;
            return;
        };
        let Some(fl) = self.flows.get_mut(&key) else { return };
        if fl.phase != Phase::Requesting {
            return;
        }
        self.stats.flow_dests += 1;
        match dest {
            FlowDest::Reset => {
                self.stats.no_backend_resets += 1;
                self.reset_client(key, out);
            }
            FlowDest::Connect(c) => {
                fl.candidates = c;
                fl.cand = 0;
                fl.phase = Phase::Connecting;
                self.connect(now, key, out);
            }
        }
    }

    fn reset_client(&mut self, key: ClientKey, out: &mut Vec<Action>) {
        if let Some(fl) = self.flows.get(&key) {
            // (Once the record is closed the held bytes no longer count, as before.)
            let held = if fl.rec.is_some() { fl.held } else { 0 };
            let ack = fl.c_isn.wrapping_add(1).wrapping_add(held as u32).wrapping_add(u32::from(fl.client_fin));
            let (mac, port, seq) = (fl.client_mac, fl.client_port, fl.s_isn.wrapping_add(1));
            self.rst_to_client(key, mac, port, seq, ack, out);
        }
        self.remove(key);
    }

    fn alloc_port(&mut self, b: SocketAddrV4) -> u16 {
        for _ in FIRST_PORT..=LAST_PORT {
            let p = self.next_port;
            self.next_port = if p >= LAST_PORT { FIRST_PORT } else { p + 1 };
            if !self.by_backend.contains_key(&(b, p)) {
                return p;
            }
        }
        self.next_port
    }

    /// Starts (or restarts) the backend leg on the current candidate.
    fn connect(&mut self, now: Instant, key: ClientKey, out: &mut Vec<Action>) {
        let Some(fl) = self.flows.get(&key) else { return };
        let Some(b) = fl.candidates.get(fl.cand).copied().flatten() else {
            self.stats.no_backend_resets += 1;
            self.reset_client(key, out);
            return;
        };
        if let Some(old) = fl.backend {
            let sp = fl.src_port;
            self.by_backend.remove(&(old, sp));
        }
        let sp = self.alloc_port(b);
        self.by_backend.insert((b, sp), key);
        if let Some(fl) = self.flows.get_mut(&key) {
            fl.backend = Some(b);
            fl.src_port = sp;
            fl.tries = 0;
        }
        self.send_syn(now, key, out);
    }

    fn send_syn(&mut self, now: Instant, key: ClientKey, out: &mut Vec<Action>) {
        let Some(fl) = self.flows.get_mut(&key) else { return };
        let Some(b) = fl.backend else { return };
        fl.tries += 1;
        fl.sent_at = now;
        let (c_isn, sp, mss) = (fl.c_isn, fl.src_port, fl.mss);
        match self.arp.get(b.ip()).copied() {
            Some((mac, port)) => {
                let g =
                    self.seg(mac, SocketAddrV4::new(self.s.source, sp), b, c_isn, 0, tcp_flags::SYN, Some(mss), &[]);
                out.push(Action::Frame(port, g));
            }
            None => self.ask_arp(now, *b.ip(), out),
        }
    }

    fn ask_arp(&mut self, now: Instant, ip: Ipv4Addr, out: &mut Vec<Action>) {
        let recent =
            self.arp_asked.get(&ip).is_some_and(|t| now.saturating_duration_since(*t) < Duration::from_millis(100));
        if recent {
            return;
        }
        self.arp_asked.insert(ip, now);
        for p in 0..self.ports {
            out.push(Action::Frame(p, wire::build_arp(1, self.s.mac, self.s.source, [0; 6], ip)));
            self.stats.arp_requests += 1;
        }
    }

    fn backend_failed(&mut self, now: Instant, key: ClientKey, out: &mut Vec<Action>) {
        let Some(fl) = self.flows.get_mut(&key) else { return };
        if let Some(b) = fl.backend {
            Board::global().failed(b);
        }
        if self.s.on_backend_failure == OnBackendFailure::Next
            && fl.cand + 1 < MAX_BACKENDS
            && fl.candidates[fl.cand + 1].is_some()
        {
            fl.cand += 1;
            self.stats.backend_retries += 1;
            self.connect(now, key, out);
        } else {
            self.stats.no_backend_resets += 1;
            self.reset_client(key, out);
        }
    }

    fn backend_segment(&mut self, now: Instant, f: &[u8], seg: &Segment<'_>, src: SocketAddrV4, out: &mut Vec<Action>) {
        let Some(&key) = self.by_backend.get(&(src, seg.dport)) else { return };
        let Some(fl) = self.flows.get_mut(&key) else { return };
        fl.last = now;
        match fl.phase {
            Phase::Requesting => {}
            Phase::Connecting => {
                if seg.flags & tcp_flags::RST != 0 {
                    if seg.ack == fl.c_isn.wrapping_add(1) || seg.flags & tcp_flags::ACK == 0 {
                        self.stats.backend_refused += 1;
                        self.backend_failed(now, key, out);
                    }
                    return;
                }
                let want = tcp_flags::SYN | tcp_flags::ACK;
                if seg.flags & want != want || seg.ack != fl.c_isn.wrapping_add(1) {
                    return;
                }
                fl.b_isn = seg.seq;
                fl.phase = Phase::Spliced;
                self.stats.spliced += 1;
                Board::global().opened(src);
                self.replay(now, key, out);
            }
            Phase::Spliced => {
                if seg.flags & tcp_flags::SYN != 0 {
                    // Our ACK was lost: the SYN-ACK again. Replay again.
                    self.replay(now, key, out);
                    return;
                }
                if let Some(until) = fl.replay_until {
                    if seg.flags & tcp_flags::ACK != 0 && seq_ge(seg.ack, until) {
                        fl.replay_until = None;
                        if let (Some(rec), Some(w)) = (fl.rec.take(), self.writer.as_mut()) {
                            w.close(rec);
                        }
                    }
                }
                if seg.flags & tcp_flags::FIN != 0 {
                    fl.fin_b = true;
                }
                if fl.fin_c && fl.fin_b && fl.closing_since.is_none() {
                    fl.closing_since = Some(now);
                }
                let r = Rewrite {
                    macs: (self.s.mac, fl.client_mac),
                    ips: (*key.1.ip(), *key.0.ip()),
                    ports: (key.1.port(), key.0.port()),
                    seq_delta: fl.s_isn.wrapping_sub(fl.b_isn),
                    ack_delta: 0,
                };
                let port = fl.client_port;
                let rst = seg.flags & tcp_flags::RST != 0;
                if let Some(g) = wire::rewrite(f, &r) {
                    out.push(Action::Frame(port, g));
                    self.stats.forwarded += 1;
                }
                if rst {
                    self.stats.closed_rst += 1;
                    self.remove(key);
                }
            }
        }
    }

    /// ACK of the backend's SYN-ACK, then the held bytes (and FIN).
    fn replay(&mut self, now: Instant, key: ClientKey, out: &mut Vec<Action>) {
        let Some(fl) = self.flows.get_mut(&key) else { return };
        let Some(b) = fl.backend else { return };
        let Some(&(bmac, bport)) = self.arp.get(b.ip()) else { return };
        fl.sent_at = now;
        let (c_isn, b_isn, sp, mss, fin) = (fl.c_isn, fl.b_isn, fl.src_port, fl.mss, fl.client_fin);
        let Some(held) = self.held_bytes(key) else {
            // The store lost the bytes (it cannot once appended; counted all the same).
            self.stats.store_exhausted_resets += 1;
            self.reset_client(key, out);
            return;
        };
        let src = SocketAddrV4::new(self.s.source, sp);
        let ack = b_isn.wrapping_add(1);
        let g = self.seg(bmac, src, b, c_isn.wrapping_add(1), ack, tcp_flags::ACK, None, &[]);
        out.push(Action::Frame(bport, g));
        let mut off = 0usize;
        for chunk in held.chunks(usize::from(mss.max(536))) {
            let seq = c_isn.wrapping_add(1).wrapping_add(off as u32);
            let g = self.seg(bmac, src, b, seq, ack, tcp_flags::ACK | tcp_flags::PSH, None, chunk);
            out.push(Action::Frame(bport, g));
            off += chunk.len();
        }
        let end = c_isn.wrapping_add(1).wrapping_add(off as u32);
        if fin {
            let g = self.seg(bmac, src, b, end, ack, tcp_flags::ACK | tcp_flags::FIN, None, &[]);
            out.push(Action::Frame(bport, g));
        }
        if let Some(fl) = self.flows.get_mut(&key) {
            fl.fin_c |= fin;
            let until = end.wrapping_add(u32::from(fin));
            fl.replay_until = (until != c_isn.wrapping_add(1)).then_some(until);
            if fl.replay_until.is_none() {
                if let (Some(rec), Some(w)) = (fl.rec.take(), self.writer.as_mut()) {
                    w.close(rec);
                }
            }
        }
    }

    /// Time passed: request, connect, replay, idle and linger timers.
    pub fn tick(&mut self, now: Instant, out: &mut Vec<Action>) {
        let mut due: Vec<(ClientKey, u8)> = Vec::new();
        for (k, fl) in &self.flows {
            let since = now.saturating_duration_since(fl.sent_at);
            let what = match fl.phase {
                Phase::Requesting if now.saturating_duration_since(fl.created) >= self.s.request_timeout => 1,
                Phase::Connecting if since >= self.s.connect_timeout => 2,
                Phase::Spliced if fl.replay_until.is_some() && since >= Duration::from_millis(300) => 3,
                _ if fl.closing_since.is_some_and(|t| now.saturating_duration_since(t) >= self.s.linger) => 4,
                _ if now.saturating_duration_since(fl.last) >= self.s.idle_timeout => 5,
                _ => 0,
            };
            if what != 0 {
                due.push((*k, what));
            }
        }
        for (key, what) in due {
            match what {
                1 => {
                    self.stats.request_timeouts += 1;
                    self.reset_client(key, out);
                }
                2 => {
                    let tries = self.flows.get(&key).map_or(0, |f| f.tries);
                    if tries < self.s.connect_tries {
                        self.send_syn(now, key, out);
                    } else {
                        self.stats.backend_timeouts += 1;
                        self.backend_failed(now, key, out);
                    }
                }
                3 => {
                    self.stats.replay_resent += 1;
                    let tries = self.flows.get_mut(&key).map_or(0, |f| {
                        f.tries += 1;
                        f.tries
                    });
                    if tries > 10 {
                        self.idle_reset(key, out);
                    } else {
                        self.replay(now, key, out);
                    }
                }
                4 => {
                    self.stats.closed_fin += 1;
                    self.remove(key);
                }
                _ => {
                    self.stats.idle_timeouts += 1;
                    self.idle_reset(key, out);
                }
            }
        }
    }

    fn idle_reset(&mut self, key: ClientKey, out: &mut Vec<Action>) {
        if let Some(fl) = self.flows.get(&key) {
            if let (Phase::Spliced, Some(b)) = (fl.phase, fl.backend) {
                if let Some(&(m, p)) = self.arp.get(b.ip()) {
                    let (c, sp) = (fl.c_isn, fl.src_port);
                    let g = self.seg(m, SocketAddrV4::new(self.s.source, sp), b, c, 0, tcp_flags::RST, None, &[]);
                    let _ = g;
                    // The exact next sequence number is not tracked; the backend's own idle
                    // timeout ends its side if this RST falls outside its window.
                    out.push(Action::Frame(
                        p,
                        self.seg(
                            m,
                            SocketAddrV4::new(self.s.source, sp),
                            b,
                            c.wrapping_add(1),
                            0,
                            tcp_flags::RST,
                            None,
                            &[],
                        ),
                    ));
                }
            }
        }
        self.reset_client(key, out);
    }

    fn remove(&mut self, key: ClientKey) {
        if let Some(fl) = self.flows.remove(&key) {
            self.by_ref.remove(&fl.fref);
            if let (Some(rec), Some(w)) = (fl.rec, self.writer.as_mut()) {
                w.close(rec);
            }
            if let Some(b) = fl.backend {
                self.by_backend.remove(&(b, fl.src_port));
                if fl.phase == Phase::Spliced {
                    Board::global().closed(b);
                }
            }
        }
        self.stats.flows = self.flows.len() as u64;
    }

    /// Flows open now.
    pub fn flows(&self) -> usize {
        self.flows.len()
    }

    /// The stream store's counters (zeros before the first handshake took the writer).
    pub fn store_stats(&self) -> runtime::streams::StoreStats {
        self.writer.as_ref().map(StoreWriter::stats).unwrap_or_default()
    }

    /// A copy of the bytes held for the flow of `key`, read back from the store (empty once
    /// its record is closed); `None` when the store no longer has them.
    fn held_bytes(&self, key: ClientKey) -> Option<Vec<u8>> {
        let fl = self.flows.get(&key)?;
        if fl.rec.is_none() || fl.held == 0 {
            return Some(Vec::new());
        }
        let w = self.writer.as_ref()?;
        let mut v = Vec::with_capacity(fl.held);
        let mut gap = false;
        let res = w.store().read(flow_key(fl.fref), TO_SERVER, 0, fl.held as u64, &mut |p| match p {
            Piece::Data(d) => v.extend_from_slice(d),
            Piece::Gap(_) => gap = true,
        });
        (res.is_ok() && !gap && v.len() == fl.held).then_some(v)
    }
}

fn seq_ge(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) >= 0
}

fn client_to_backend(fl: &Flow, s: &Settings, b: SocketAddrV4, bmac: Mac) -> Rewrite {
    Rewrite {
        macs: (s.mac, bmac),
        ips: (s.source, *b.ip()),
        ports: (fl.src_port, b.port()),
        seq_delta: 0,
        ack_delta: fl.b_isn.wrapping_sub(fl.s_isn),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CMAC: Mac = [2, 0, 0, 0, 0, 1];
    const BMAC: Mac = [2, 0, 0, 0, 0, 2];

    fn settings() -> Settings {
        Settings {
            services: vec!["10.0.0.100:80".parse().unwrap()],
            source: Ipv4Addr::new(10, 0, 0, 200),
            mac: [2, 0, 0, 0, 0, 0xaa],
            mss: 1460,
            max_request_bytes: 1000,
            request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(1),
            connect_tries: 2,
            idle_timeout: Duration::from_secs(60),
            linger: Duration::from_secs(2),
            on_backend_failure: OnBackendFailure::Next,
            max_flows: 100,
        }
    }

    /// A heap store of `chunks` chunks of 64 bytes.
    fn streams(chunks: u32) -> Arc<SharedStreams> {
        Arc::new(SharedStreams::new(runtime::streams::StoreConfig { chunk_size: 64, chunks }))
    }

    fn read_all(sh: &SharedStreams, fref: FlowRef, to: u64) -> Result<Vec<u8>, actors::contract::StreamReadError> {
        use actors::contract::{Chunk, StreamAccess};
        let mut v = Vec::new();
        sh.read(fref, true, 0, to, &mut |c| {
            if let Chunk::Data(d) = c {
                v.extend_from_slice(d)
            }
        })?;
        Ok(v)
    }

    #[allow(clippy::too_many_arguments)]
    fn frame(mac: Mac, src: &str, dst: &str, seq: u32, ack: u32, fl: u8, mss: Option<u16>, payload: &[u8]) -> Vec<u8> {
        let (s, d): (SocketAddrV4, SocketAddrV4) = (src.parse().unwrap(), dst.parse().unwrap());
        wire::build(&Out {
            macs: (mac, [2, 0, 0, 0, 0, 0xaa]),
            ips: (*s.ip(), *d.ip()),
            ports: (s.port(), d.port()),
            seq,
            ack,
            flags: fl,
            window: 1000,
            mss,
            ip_id: 0,
            payload,
        })
    }

    trait Ports {
        fn to_owned_ports(&self) -> (u16, u16);
    }
    impl Ports for Segment<'_> {
        fn to_owned_ports(&self) -> (u16, u16) {
            (self.sport, self.dport)
        }
    }

    fn frames(out: &mut Vec<Action>) -> Vec<(u8, Vec<u8>)> {
        out.drain(..)
            .filter_map(|a| match a {
                Action::Frame(p, f) => Some((p, f)),
                Action::FlowReq(..) => None,
            })
            .collect()
    }

    #[test]
    fn a_connection_is_spliced_with_translated_numbers() {
        let now = Instant::now();
        let mut c = Core::new(settings(), 2, streams(64));
        let mut out = Vec::new();
        let client = "10.0.0.1:40000";
        let vip = "10.0.0.100:80";
        let fref = FlowRef::new(0, 0);
        assert!(c.on_frame(
            now,
            0,
            &frame(CMAC, client, vip, 1000, 0, tcp_flags::SYN, Some(1460), &[]),
            Some(fref),
            &mut out
        ));
        let f = frames(&mut out);
        let synack = wire::segment(&f[0].1).unwrap();
        assert_eq!((f[0].0, synack.ack, synack.flags), (0, 1001, tcp_flags::SYN | tcp_flags::ACK));
        assert_eq!(c.flows(), 0, "no state before the handshake completes");
        let cookie = synack.seq;
        c.on_frame(
            now,
            0,
            &frame(CMAC, client, vip, 1001, cookie + 1, tcp_flags::ACK, None, b"GET / HTTP/1.0\r\n\r\n"),
            Some(fref),
            &mut out,
        );
        assert!(out.contains(&Action::FlowReq(fref, 18)), "{out:?}");
        let acks = frames(&mut out);
        assert_eq!(wire::segment(&acks[0].1).unwrap().ack, 1001 + 18);
        assert_eq!(c.flows(), 1);
        let backend: SocketAddrV4 = "10.0.0.11:8000".parse().unwrap();
        c.on_dest(now, fref, FlowDest::connect(&[backend]), &mut out);
        let arp = frames(&mut out);
        assert_eq!(arp.len(), 2, "ARP asked on both ports");
        let reply = wire::build_arp(2, BMAC, *backend.ip(), [2, 0, 0, 0, 0, 0xaa], Ipv4Addr::new(10, 0, 0, 200));
        c.on_frame(now, 1, &reply, None, &mut out);
        let syn = frames(&mut out);
        let s = wire::segment(&syn[0].1).unwrap();
        assert_eq!((syn[0].0, s.seq, s.flags, s.dst), (1, 1000, tcp_flags::SYN, *backend.ip()));
        let sp = s.sport;
        let bsrc = backend.to_string();
        let to_src = format!("10.0.0.200:{sp}");
        c.on_frame(
            now,
            1,
            &frame(BMAC, &bsrc, &to_src, 5000, 1001, tcp_flags::SYN | tcp_flags::ACK, Some(1460), &[]),
            None,
            &mut out,
        );
        let replay = frames(&mut out);
        assert_eq!(replay.len(), 2, "ACK, then the held bytes");
        let data = wire::segment(&replay[1].1).unwrap();
        assert_eq!((data.seq, data.ack, data.payload), (1001, 5001, &b"GET / HTTP/1.0\r\n\r\n"[..]));
        // Backend -> client: its numbers shifted into the cookie's space.
        c.on_frame(
            now,
            1,
            &frame(BMAC, &bsrc, &to_src, 5001, 1019, tcp_flags::ACK, None, b"HTTP/1.0 200 OK\r\n"),
            None,
            &mut out,
        );
        let back = frames(&mut out);
        let b = wire::segment(&back[0].1).unwrap();
        assert_eq!(
            (back[0].0, b.src, b.sport, b.dport, b.seq, b.ack),
            (0, Ipv4Addr::new(10, 0, 0, 100), 80, 40000, cookie + 1, 1019)
        );
        // Client -> backend: its acknowledgment shifted back.
        c.on_frame(
            now,
            0,
            &frame(CMAC, client, vip, 1019, cookie + 1 + 17, tcp_flags::ACK, None, &[]),
            Some(fref),
            &mut out,
        );
        let fwd = frames(&mut out);
        let a = wire::segment(&fwd[0].1).unwrap();
        assert_eq!((fwd[0].0, a.ack, a.sport, a.dport), (1, 5001 + 17, sp, 8000));
        assert_eq!(c.stats.spliced, 1);
    }

    #[test]
    fn a_syn_flood_leaves_no_state_and_bad_cookies_are_reset() {
        let now = Instant::now();
        let mut c = Core::new(settings(), 2, streams(64));
        let mut out = Vec::new();
        for i in 0..5000u32 {
            let src = format!("10.0.{}.{}:{}", i % 200, 1 + i % 250, 1024 + i % 60000);
            c.on_frame(
                now,
                0,
                &frame(CMAC, &src, "10.0.0.100:80", i, 0, tcp_flags::SYN, Some(1460), &[]),
                Some(FlowRef::new(i, 0)),
                &mut out,
            );
        }
        assert_eq!(c.flows(), 0);
        assert_eq!(c.stats.cookies_sent, 5000);
        out.clear();
        c.on_frame(
            now,
            0,
            &frame(CMAC, "10.0.0.1:1", "10.0.0.100:80", 1, 12345, tcp_flags::ACK, None, &[]),
            Some(FlowRef::new(1, 0)),
            &mut out,
        );
        assert_eq!(c.stats.cookies_invalid, 1);
        assert_eq!(c.flows(), 0);
        assert_eq!(wire::segment(&frames(&mut out)[0].1).unwrap().flags, tcp_flags::RST);
        // Not for the splicer: not its business.
        assert!(!c.on_frame(
            now,
            0,
            &frame(CMAC, "10.0.0.1:1", "10.0.0.7:80", 1, 0, tcp_flags::SYN, None, &[]),
            None,
            &mut out
        ));
    }

    /// A client through the handshake with `req` sent: (core, cookie).
    fn established(c: &mut Core, now: Instant, req: &[u8], out: &mut Vec<Action>) -> u32 {
        let f = frame(CMAC, "10.0.0.1:40000", "10.0.0.100:80", 1000, 0, tcp_flags::SYN, Some(1460), &[]);
        c.on_frame(now, 0, &f, Some(FlowRef::new(0, 0)), out);
        let cookie = wire::segment(&frames(out)[0].1).unwrap().seq;
        let f = frame(CMAC, "10.0.0.1:40000", "10.0.0.100:80", 1001, cookie + 1, tcp_flags::ACK, None, req);
        c.on_frame(now, 0, &f, Some(FlowRef::new(0, 0)), out);
        out.clear();
        cookie
    }

    #[test]
    fn request_limits_and_timeouts_reset_the_client() {
        let now = Instant::now();
        let mut out = Vec::new();
        let mut c = Core::new(settings(), 2, streams(64));
        let cookie = established(&mut c, now, b"x", &mut out);
        let big = vec![b'y'; 1000];
        let f = frame(CMAC, "10.0.0.1:40000", "10.0.0.100:80", 1002, cookie + 1, tcp_flags::ACK, None, &big);
        c.on_frame(now, 0, &f, Some(FlowRef::new(0, 0)), &mut out);
        assert_eq!(c.stats.request_limit_resets, 1);
        assert_eq!(wire::segment(&frames(&mut out)[0].1).unwrap().flags & tcp_flags::RST, tcp_flags::RST);
        assert_eq!(c.flows(), 0);

        let mut c = Core::new(settings(), 2, streams(64));
        established(&mut c, now, b"GET", &mut out);
        c.tick(now + Duration::from_secs(6), &mut out);
        assert_eq!((c.stats.request_timeouts, c.flows()), (1, 0));
    }

    #[test]
    fn a_refusing_or_silent_backend_makes_way_for_the_next() {
        let now = Instant::now();
        let mut out = Vec::new();
        let mut c = Core::new(settings(), 2, streams(64));
        established(&mut c, now, b"GET / HTTP/1.0\r\n\r\n", &mut out);
        let (a, b): (SocketAddrV4, SocketAddrV4) = ("10.0.0.11:80".parse().unwrap(), "10.0.0.12:80".parse().unwrap());
        for (ip, mac) in [(a.ip(), BMAC), (b.ip(), [2, 0, 0, 0, 0, 3])] {
            c.arp.insert(*ip, (mac, 1));
        }
        c.on_dest(now, FlowRef::new(0, 0), FlowDest::connect(&[a, b]), &mut out);
        let syn = wire::segment(&frames(&mut out)[0].1).unwrap().to_owned_ports();
        // The first refuses.
        let rst = frame(
            BMAC,
            "10.0.0.11:80",
            &format!("10.0.0.200:{}", syn.0),
            0,
            1001,
            tcp_flags::RST | tcp_flags::ACK,
            None,
            &[],
        );
        c.on_frame(now, 1, &rst, None, &mut out);
        let next = frames(&mut out);
        assert_eq!(wire::segment(&next[0].1).unwrap().dst, *b.ip(), "the next backend's SYN");
        assert_eq!((c.stats.backend_refused, c.stats.backend_retries), (1, 1));
        // The second stays silent: two SYNs, then the client is reset (no backend left).
        c.tick(now + Duration::from_millis(1100), &mut out);
        assert_eq!(wire::segment(&frames(&mut out)[0].1).unwrap().flags, tcp_flags::SYN, "second try");
        c.tick(now + Duration::from_millis(2300), &mut out);
        assert_eq!((c.stats.backend_timeouts, c.stats.no_backend_resets, c.flows()), (1, 1, 0));
    }

    #[test]
    fn held_bytes_live_in_the_stream_store_until_the_replay_is_acknowledged() {
        use actors::contract::StreamAccess;
        let now = Instant::now();
        let mut out = Vec::new();
        let sh = streams(64);
        let mut c = Core::new(settings(), 2, sh.clone());
        let req: Vec<u8> = (0..150u8).collect();
        let cookie = established(&mut c, now, &req[..100], &mut out);
        let fref = FlowRef::new(0, 0);
        // Published before the FLOW_REQ: readable through the NFs' API, up to the frontier.
        assert_eq!(read_all(&sh, fref, 100).unwrap(), &req[..100]);
        assert!(read_all(&sh, fref, 101).is_err(), "nothing beyond the frontier");
        assert_eq!(sh.live_frontier(fref, true), Some(100));
        let f = frame(CMAC, "10.0.0.1:40000", "10.0.0.100:80", 1101, cookie + 1, tcp_flags::ACK, None, &req[100..]);
        c.on_frame(now, 0, &f, Some(fref), &mut out);
        assert!(out.contains(&Action::FlowReq(fref, 150)), "{out:?}");
        assert_eq!(read_all(&sh, fref, 150).unwrap(), req);
        out.clear();
        let backend: SocketAddrV4 = "10.0.0.11:8000".parse().unwrap();
        c.arp.insert(*backend.ip(), (BMAC, 1));
        c.on_dest(now, fref, FlowDest::connect(&[backend]), &mut out);
        let sp = wire::segment(&frames(&mut out)[0].1).unwrap().sport;
        let to_src = format!("10.0.0.200:{sp}");
        let synack =
            frame(BMAC, "10.0.0.11:8000", &to_src, 5000, 1001, tcp_flags::SYN | tcp_flags::ACK, Some(1460), &[]);
        c.on_frame(now, 1, &synack, None, &mut out);
        let replay: Vec<u8> =
            frames(&mut out).iter().flat_map(|(_, f)| wire::segment(f).unwrap().payload.to_vec()).collect();
        assert_eq!(replay, req, "the replay is read back from the store");
        assert!(read_all(&sh, fref, 150).is_ok(), "held until the backend acknowledges");
        let ack = frame(BMAC, "10.0.0.11:8000", &to_src, 5001, 1151, tcp_flags::ACK, None, &[]);
        c.on_frame(now, 1, &ack, None, &mut out);
        assert!(read_all(&sh, fref, 150).is_err(), "released once spliced");
        let st = sh.store().unwrap().stats();
        assert_eq!(st.chunks_in_use, 0);
        assert!(st.chunks_high_water >= 3);
    }

    #[test]
    fn an_exhausted_store_resets_the_client_and_ending_flows_free_their_records() {
        let now = Instant::now();
        let mut out = Vec::new();
        // Two chunks of 64 bytes (and two records).
        let sh = streams(2);
        let mut c = Core::new(settings(), 2, sh.clone());
        let cookie = established(&mut c, now, &[b'a'; 100], &mut out);
        assert_eq!(c.flows(), 1);
        // A third chunk is needed: the client is reset, counted, the flow and record gone.
        let f = frame(CMAC, "10.0.0.1:40000", "10.0.0.100:80", 1101, cookie + 1, tcp_flags::ACK, None, &[b'b'; 100]);
        c.on_frame(now, 0, &f, Some(FlowRef::new(0, 0)), &mut out);
        assert_eq!(c.stats.store_exhausted_resets, 1);
        assert_eq!(wire::segment(&frames(&mut out)[0].1).unwrap().flags & tcp_flags::RST, tcp_flags::RST);
        assert_eq!(c.flows(), 0);
        assert_eq!(sh.store().unwrap().stats().chunks_in_use, 0);
        // No free record: two flows take both, the third handshake is reset.
        for (i, port) in [40001u16, 40002, 40003].into_iter().enumerate() {
            let src = format!("10.0.0.1:{port}");
            let f = frame(CMAC, &src, "10.0.0.100:80", 1000, 0, tcp_flags::SYN, Some(1460), &[]);
            c.on_frame(now, 0, &f, Some(FlowRef::new(i as u32 + 1, 0)), &mut out);
            let cookie = wire::segment(&frames(&mut out)[0].1).unwrap().seq;
            let f = frame(CMAC, &src, "10.0.0.100:80", 1001, cookie + 1, tcp_flags::ACK, None, &[]);
            c.on_frame(now, 0, &f, Some(FlowRef::new(i as u32 + 1, 0)), &mut out);
            out.clear();
        }
        assert_eq!((c.flows(), c.stats.store_exhausted_resets), (2, 2));
        // The flows time out: their records are freed and a new handshake gets one.
        c.tick(now + Duration::from_secs(6), &mut out);
        assert_eq!((c.flows(), c.stats.request_timeouts), (0, 2));
        out.clear();
        established(&mut c, now, b"GET", &mut out);
        assert_eq!((c.flows(), c.stats.store_exhausted_resets), (1, 2));
    }
}
