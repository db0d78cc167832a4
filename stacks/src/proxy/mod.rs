//! # The split proxy µStack
//!
//! Terminates TCP on both sides of the middlebox with [`smoltcp`] sockets: a client leg (the
//! interface runs with `set_any_ip(true)` and a listening socket on the service port, so it
//! answers for whatever server address the client used) and a server leg (a second socket,
//! connected from the proxy's own address to the address the client asked for). Each leg is
//! a real TCP with its own window and retransmissions.
//!
//! ## The NF API
//!
//! An NF is a [`ProxyNf`]: it gets [`ProxyNf::on_data`] (DATA_RDY) with the bytes read from
//! one leg and writes what the other leg should carry into a [`Writer`]: the same bytes
//! (pass), other bytes (modify, insert, delete), or nothing yet (hold back — it keeps the
//! bytes and writes them on a later call). [`PassThrough`] passes everything.
//!
//! ## Flow control and memory
//!
//! The proxy reads a leg only as far as the other leg's send buffer has room
//! ([`SplitProxy::relay`]), so a slow server fills the server leg's send buffer, the proxy
//! stops reading the client socket, the client leg's receive window closes and the client
//! slows down. Memory per connection is the two legs' buffers, sized by [`ProxyConfig`];
//! at [`ProxyConfig::max_connections`] the listener is closed (further SYNs get a RST)
//! until a connection frees, counted in [`ProxyStats::at_limit`].
//!
//! ## End Point
//!
//! With [`ProxyConfig::lazy_server`] the server leg is opened only when the NFs first write
//! bytes for it: an NF that answers a connection itself ([`Writer::reply`], e.g. a cache
//! hit) never makes the proxy connect to the origin ([`ProxyStats::server_legs`] counts the
//! legs opened). [`ProxyConfig::origin`] sends every server leg to one address instead of
//! the one the client asked for (a virtual service in front of one origin).
//!
//! Limits: the device is a bounded queue ([`device::QueueDevice`]) the host feeds and drains,
//! not yet the packet pool itself; IPv4 only; one service port per proxy.

pub mod actor;
pub mod device;
pub mod upgrade;

use smoltcp::iface::{Config, Interface, PollIngressSingleResult, PollResult, SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr, IpEndpoint, Ipv4Address};

pub use actors::proxy_nf::{Leg, PassThrough, ProxyNf, Writer};
pub use device::QueueDevice;

/// How long a leg waits for its peer (a SYN answered, sent bytes acknowledged).
const LEG_TIMEOUT: smoltcp::time::Duration = smoltcp::time::Duration::from_secs(30);

/// Most closed sockets kept for reuse (each holds its two buffers).
const SPARE_SOCKETS: usize = 64;

/// Most egress passes per poll (each sends at most one segment per socket).
const EGRESS_ROUNDS: usize = 256;

/// Sizes and limits of a split proxy.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    /// The proxy's own address (source of the server legs).
    pub address: Ipv4Address,
    /// The TCP port it intercepts.
    pub port: u16,
    /// Receive buffer of each socket, bytes.
    pub rx_buffer: usize,
    /// Send buffer of each socket, bytes.
    pub tx_buffer: usize,
    /// Most connections at once.
    pub max_connections: usize,
    /// Listening sockets kept open (handshakes in progress at once).
    pub backlog: usize,
    /// Where server legs go; `None`: the address and port the client asked for.
    pub origin: Option<IpEndpoint>,
    /// Open a server leg only once the NFs write bytes for it (the End Point use).
    pub lazy_server: bool,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            address: Ipv4Address::new(10, 0, 0, 254),
            port: 80,
            rx_buffer: 64 * 1024,
            tx_buffer: 64 * 1024,
            max_connections: 1024,
            backlog: 32,
            origin: None,
            lazy_server: false,
        }
    }
}

/// Counters of a split proxy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProxyStats {
    /// Connections accepted on the client side.
    pub accepted: u64,
    /// Connections whose server leg could not be opened (aborted).
    pub refused: u64,
    /// Polls spent at the connection limit (no listener open until a slot frees).
    pub at_limit: u64,
    /// Connections fully closed and freed.
    pub closed: u64,
    /// Bytes relayed client to server / server to client (after NFs).
    pub bytes_to_server: u64,
    pub bytes_to_client: u64,
    /// Bytes NFs answered themselves on the leg data came from ([`Writer::reply`]).
    pub bytes_replied: u64,
    /// Relay steps skipped because the other leg's send buffer was full.
    pub backpressure: u64,
    /// Server legs opened (with [`ProxyConfig::lazy_server`], fewer than `accepted`).
    pub server_legs: u64,
}

struct Conn {
    client: SocketHandle,
    /// `None` until opened ([`ProxyConfig::lazy_server`]).
    server: Option<SocketHandle>,
    /// Where the server leg goes.
    dst: IpEndpoint,
    /// Bytes an NF wrote that the other leg had no room for yet.
    pending_to_server: Vec<u8>,
    pending_to_client: Vec<u8>,
    /// An NF asked to close ([`Writer::close`]).
    closing: bool,
    /// The id NFs see (unique over the proxy's life).
    id: usize,
}

/// The split proxy: an interface, its sockets, and the connection table.
pub struct SplitProxy {
    cfg: ProxyConfig,
    iface: Interface,
    /// Packets in and out (inject what arrives, drain what to send).
    pub device: QueueDevice,
    sockets: SocketSet<'static>,
    listeners: Vec<SocketHandle>,
    conns: Vec<Option<Conn>>,
    next_port: u16,
    next_id: usize,
    stats: ProxyStats,
    /// Bytes read from a leg before the NF sees them (kept between polls).
    scratch: Vec<u8>,
    /// The NFs' writer, its buffers kept between calls.
    writer: Writer,
    /// Closed sockets kept for reuse ([`fresh`]), and those freed in this poll.
    spare: Vec<SocketHandle>,
    retired: Vec<SocketHandle>,
}

fn socket(cfg: &ProxyConfig) -> tcp::Socket<'static> {
    let mut s = tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; cfg.rx_buffer]),
        tcp::SocketBuffer::new(vec![0; cfg.tx_buffer]),
    );
    // A peer that never answers a SYN, or leaves sent bytes unacknowledged this long, is
    // given up (smoltcp has no retry limit of its own): the other leg is then closed.
    s.set_timeout(Some(LEG_TIMEOUT));
    s
}

impl SplitProxy {
    /// A proxy with its listener open.
    pub fn new(cfg: ProxyConfig, now: Instant) -> Self {
        let mut device = QueueDevice::new(4096, 1500);
        let mut iface = Interface::new(Config::new(HardwareAddress::Ip), &mut device, now);
        iface.update_ip_addrs(|a| {
            let _ = a.push(IpCidr::new(IpAddress::Ipv4(cfg.address), 0));
        });
        let _ = iface.routes_mut().add_default_ipv4_route(cfg.address);
        iface.set_any_ip(true);
        let mut proxy = Self {
            cfg,
            iface,
            device,
            sockets: SocketSet::new(vec![]),
            listeners: Vec::new(),
            conns: Vec::new(),
            next_port: 40000,
            next_id: 0,
            stats: ProxyStats::default(),
            scratch: Vec::new(),
            writer: Writer::default(),
            spare: Vec::new(),
            retired: Vec::new(),
        };
        proxy.listen();
        proxy
    }

    fn live(&self) -> usize {
        self.conns.iter().filter(|c| c.is_some()).count()
    }

    /// Keeps up to [`ProxyConfig::backlog`] listening sockets open (a smoltcp listener takes
    /// one SYN; concurrent SYNs need several), fewer near the connection limit.
    fn listen(&mut self) {
        let want = self.cfg.backlog.max(1).min(self.cfg.max_connections.saturating_sub(self.live()));
        while self.listeners.len() < want {
            let h = fresh(&self.cfg, &mut self.sockets, &mut self.spare);
            if self.sockets.get_mut::<tcp::Socket>(h).listen(self.cfg.port).is_err() {
                self.sockets.remove(h);
                return;
            }
            self.listeners.push(h);
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> &ProxyStats {
        &self.stats
    }

    /// Connections open now.
    pub fn connections(&self) -> usize {
        self.live()
    }

    /// One step: runs the interface, accepts, relays through `nf`, frees closed connections.
    pub fn poll(&mut self, now: Instant, nf: &mut dyn ProxyNf) {
        // Sockets freed by the last poll (their RST or last ACK went out since) are kept
        // for reuse, up to SPARE_SOCKETS.
        for h in self.retired.drain(..) {
            if self.spare.len() < SPARE_SOCKETS {
                self.spare.push(h);
            } else {
                self.sockets.remove(h);
            }
        }
        // One packet at a time, accepting (and opening new listeners) after each: a
        // smoltcp listener takes one SYN, so a burst of SYNs larger than the backlog in one
        // poll would otherwise be refused with RSTs (`ab -c 10`; docs/proxy.md).
        while !matches!(
            self.iface.poll_ingress_single(now, &mut self.device, &mut self.sockets),
            PollIngressSingleResult::None
        ) {
            self.accept();
        }
        self.egress(now);
        self.accept();
        if self.listeners.is_empty() {
            // At the limit: further SYNs get a RST until a slot frees.
            self.stats.at_limit += 1;
        }
        self.relay(nf);
        self.reap(nf);
        self.iface.poll(now, &mut self.device, &mut self.sockets);
        self.egress(now);
    }

    /// Sends until the sockets have nothing more to send now or the device queue is full.
    /// smoltcp sends at most one segment per socket per egress pass, so a single pass per
    /// poll capped a leg at one segment per poll (the proxy's throughput; docs/proxy.md).
    fn egress(&mut self, now: Instant) {
        for _ in 0..EGRESS_ROUNDS {
            let sent = self.iface.poll_egress(now, &mut self.device, &mut self.sockets);
            if matches!(sent, PollResult::None) || self.device.tx_len() >= self.device.limit() {
                break;
            }
        }
    }

    /// How long the host may wait for packets before the next [`SplitProxy::poll`] is due
    /// (a retransmission or delayed ACK timer, or zero when a socket has bytes to send now);
    /// `None` when nothing is due until a packet arrives.
    pub fn poll_delay(&mut self, now: Instant) -> Option<smoltcp::time::Duration> {
        let pending =
            self.conns.iter().flatten().any(|c| !c.pending_to_client.is_empty() || !c.pending_to_server.is_empty());
        if pending {
            return Some(smoltcp::time::Duration::ZERO);
        }
        self.iface.poll_delay(now, &self.sockets)
    }

    fn accept(&mut self) {
        let mut i = 0;
        while i < self.listeners.len() {
            let h = self.listeners[i];
            let s = self.sockets.get_mut::<tcp::Socket>(h);
            if matches!(s.state(), tcp::State::Listen) {
                i += 1;
                continue;
            }
            self.listeners.swap_remove(i);
            let Some(dst) = s.local_endpoint() else {
                s.abort();
                self.stats.refused += 1;
                continue;
            };
            let dst = self.cfg.origin.unwrap_or(dst);
            let server = if self.cfg.lazy_server {
                None
            } else {
                match connect(&self.cfg, &mut self.iface, &mut self.sockets, &mut self.spare, &mut self.next_port, dst)
                {
                    Some(s) => Some(s),
                    None => {
                        self.sockets.get_mut::<tcp::Socket>(h).abort();
                        self.stats.refused += 1;
                        continue;
                    }
                }
            };
            self.stats.server_legs += u64::from(server.is_some());
            let conn = Conn {
                client: h,
                server,
                dst,
                pending_to_server: Vec::new(),
                pending_to_client: Vec::new(),
                closing: false,
                id: self.next_id,
            };
            match self.conns.iter().position(|c| c.is_none()) {
                Some(j) => self.conns[j] = Some(conn),
                None => self.conns.push(Some(conn)),
            }
            self.next_id += 1;
            self.stats.accepted += 1;
        }
        self.listen();
    }

    /// Moves bytes between the legs of every connection, only as far as the receiving leg's
    /// send buffer has room (end-to-end flow control).
    fn relay(&mut self, nf: &mut dyn ProxyNf) {
        let mut buf = std::mem::take(&mut self.scratch);
        buf.resize(self.cfg.rx_buffer.max(1), 0);
        let mut writer = std::mem::take(&mut self.writer);
        for slot in self.conns.iter_mut() {
            let Some(c) = slot else { continue };
            // End Point: no server leg until the NFs write for it. Until then, read the
            // client as far as a new leg's send buffer and the client's own could take.
            if c.server.is_none() {
                let from = self.sockets.get_mut::<tcp::Socket>(c.client);
                if !c.pending_to_client.is_empty() && from.may_send() {
                    let n = from.send_slice(&c.pending_to_client).unwrap_or(0);
                    c.pending_to_client.drain(..n);
                }
                let room = if c.pending_to_client.is_empty() {
                    self.cfg.tx_buffer.min(from.send_capacity() - from.send_queue()).min(buf.len())
                } else {
                    0
                };
                if room == 0 || !from.can_recv() {
                    continue;
                }
                let n = from.recv_slice(&mut buf[..room]).unwrap_or(0);
                if n == 0 {
                    continue;
                }
                let mut w = Writer::default();
                nf.on_data(c.id, Leg::Client, &buf[..n], &mut w);
                c.closing |= w.closing();
                if !w.replied().is_empty() {
                    let sent = if from.may_send() { from.send_slice(w.replied()).unwrap_or(0) } else { 0 };
                    c.pending_to_client.extend_from_slice(&w.replied()[sent..]);
                    self.stats.bytes_replied += w.replied().len() as u64;
                }
                if !w.written().is_empty() {
                    c.pending_to_server.extend_from_slice(w.written());
                    self.stats.bytes_to_server += w.written().len() as u64;
                    match connect(
                        &self.cfg,
                        &mut self.iface,
                        &mut self.sockets,
                        &mut self.spare,
                        &mut self.next_port,
                        c.dst,
                    ) {
                        Some(s) => {
                            c.server = Some(s);
                            self.stats.server_legs += 1;
                        }
                        None => {
                            self.sockets.get_mut::<tcp::Socket>(c.client).abort();
                            self.stats.refused += 1;
                        }
                    }
                }
                continue;
            }
            let Some(server) = c.server else { continue };
            for (from_h, to_h, leg) in [(c.client, server, Leg::Client), (server, c.client, Leg::Server)] {
                let (pending, pending_back) = if leg == Leg::Client {
                    (&mut c.pending_to_server, &mut c.pending_to_client)
                } else {
                    (&mut c.pending_to_client, &mut c.pending_to_server)
                };
                // Flush what an NF wrote earlier first.
                let to = self.sockets.get_mut::<tcp::Socket>(to_h);
                if matches!(to.state(), tcp::State::Closed) {
                    // The other leg is gone (reset): nothing read here can go anywhere.
                    // Read and drop it, so this leg's window stays open for its FIN.
                    pending.clear();
                    let from = self.sockets.get_mut::<tcp::Socket>(from_h);
                    while let Ok(n @ 1..) = from.recv_slice(&mut buf) {
                        let _ = n;
                    }
                    continue;
                }
                if !pending.is_empty() && to.may_send() {
                    let n = to.send_slice(pending).unwrap_or(0);
                    pending.drain(..n);
                }
                let mut room = if to.may_send() && pending.is_empty() {
                    to.send_capacity() - to.send_queue()
                } else if matches!(to.state(), tcp::State::SynSent | tcp::State::SynReceived) {
                    // The other leg is still opening: hold what the NF writes (bounded by that
                    // leg's buffer) so that an NF answering itself (a cache hit) need not wait
                    // for the origin's handshake.
                    to.send_capacity().saturating_sub(pending.len())
                } else {
                    0
                };
                let from = self.sockets.get_mut::<tcp::Socket>(from_h);
                // Replies go back on this leg: read no more than it can take back either.
                if !pending_back.is_empty() {
                    room = 0;
                } else {
                    room = room.min(from.send_capacity() - from.send_queue());
                }
                if room == 0 {
                    if from.can_recv() {
                        self.stats.backpressure += 1;
                    }
                    continue;
                }
                let take = room.min(buf.len());
                let n = from.recv_slice(&mut buf[..take]).unwrap_or(0);
                if n == 0 {
                    continue;
                }
                let w = &mut writer;
                w.clear();
                nf.on_data(c.id, leg, &buf[..n], w);
                let to = self.sockets.get_mut::<tcp::Socket>(to_h);
                let sent = to.send_slice(w.written()).unwrap_or(0);
                pending.extend_from_slice(&w.written()[sent..]);
                if w.closing() {
                    c.closing = true;
                }
                if !w.replied().is_empty() {
                    let from = self.sockets.get_mut::<tcp::Socket>(from_h);
                    let sent = if from.may_send() { from.send_slice(w.replied()).unwrap_or(0) } else { 0 };
                    pending_back.extend_from_slice(&w.replied()[sent..]);
                    self.stats.bytes_replied += w.replied().len() as u64;
                }
                if leg == Leg::Client {
                    self.stats.bytes_to_server += w.written().len() as u64;
                } else {
                    self.stats.bytes_to_client += w.written().len() as u64;
                }
            }
        }
        self.scratch = buf;
        self.writer = writer;
    }

    /// Propagates FIN/RST from one leg to the other and frees connections both legs closed.
    ///
    /// A leg counts as finished only once its peer is done sending and every byte it sent
    /// was read: its FIN arrived (close-wait and later) or it was reset. A leg still opening
    /// (SYN-SENT, SYN-RECEIVED) is not finished: treating "may not receive yet" as "done"
    /// closed the client leg whenever it was established before the server leg, an empty
    /// answer (the cache hit path under `ab`, and the rare empty download; docs/proxy.md).
    fn reap(&mut self, nf: &mut dyn ProxyNf) {
        for slot in self.conns.iter_mut() {
            let Some(c) = slot else { continue };
            // A reset in SYN-RECEIVED sends smoltcp's socket back to LISTEN: that client is
            // gone, and the socket must not take a new connection as this one.
            let client = self.sockets.get_mut::<tcp::Socket>(c.client);
            if matches!(client.state(), tcp::State::Listen) {
                client.abort();
            }
            let Some(server) = c.server else {
                // End Point without a server leg: the client's FIN (or an NF's close) closes
                // the client leg once the replies are sent.
                let s = self.sockets.get_mut::<tcp::Socket>(c.client);
                let client_done = !s.may_recv() && !s.can_recv();
                if (client_done || c.closing) && c.pending_to_client.is_empty() && s.may_send() {
                    s.close();
                }
                if matches!(s.state(), tcp::State::Closed | tcp::State::TimeWait) {
                    self.retired.push(c.client);
                    nf.on_close(c.id);
                    *slot = None;
                    self.stats.closed += 1;
                }
                continue;
            };
            for (a, b, pend) in
                [(c.client, server, c.pending_to_server.is_empty()), (server, c.client, c.pending_to_client.is_empty())]
            {
                if pend && finished(self.sockets.get::<tcp::Socket>(a)) {
                    // Idempotent: FIN after what is queued (or gone, for a leg not yet open).
                    self.sockets.get_mut::<tcp::Socket>(b).close();
                }
            }
            if c.closing && c.pending_to_client.is_empty() && c.pending_to_server.is_empty() {
                self.sockets.get_mut::<tcp::Socket>(c.client).close();
                self.sockets.get_mut::<tcp::Socket>(server).abort();
            }
            let done = |s: &tcp::Socket| matches!(s.state(), tcp::State::Closed | tcp::State::TimeWait);
            let cd = done(self.sockets.get::<tcp::Socket>(c.client));
            let sd = done(self.sockets.get::<tcp::Socket>(server));
            if cd && sd {
                self.retired.extend([c.client, server]);
                nf.on_close(c.id);
                *slot = None;
                self.stats.closed += 1;
            }
        }
    }
}

/// True when a leg will carry no more bytes in: its peer's FIN arrived (or it was reset) and
/// everything it received was read.
fn finished(s: &tcp::Socket) -> bool {
    use tcp::State::*;
    matches!(s.state(), Closed | CloseWait | LastAck | Closing | TimeWait) && !s.can_recv()
}

/// Opens a server leg from the proxy's address to `dst`; `None` when smoltcp refuses.
fn connect(
    cfg: &ProxyConfig,
    iface: &mut Interface,
    sockets: &mut SocketSet<'static>,
    spare: &mut Vec<SocketHandle>,
    next_port: &mut u16,
    dst: IpEndpoint,
) -> Option<SocketHandle> {
    let h = fresh(cfg, sockets, spare);
    *next_port = if *next_port >= 60999 { 40000 } else { *next_port + 1 };
    let local = IpEndpoint::new(IpAddress::Ipv4(cfg.address), *next_port);
    if sockets.get_mut::<tcp::Socket>(h).connect(iface.context(), dst, local).is_err() {
        sockets.remove(h);
        return None;
    }
    Some(h)
}

/// A closed socket: a spare one when there is (its buffers are reused: `listen`/`connect`
/// reset its state without touching them), else a new one. Allocating (and zeroing) four
/// buffers per connection was the cost of a short connection (the cache hit path).
fn fresh(cfg: &ProxyConfig, sockets: &mut SocketSet<'static>, spare: &mut Vec<SocketHandle>) -> SocketHandle {
    spare.pop().unwrap_or_else(|| sockets.add(socket(cfg)))
}

#[cfg(test)]
mod tests;
