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
//! Limits: the device is a bounded queue ([`device::QueueDevice`]) the host feeds and drains,
//! not yet the packet pool itself; IPv4 only; one service port per proxy.

pub mod device;

use smoltcp::iface::{Config, Interface, PollIngressSingleResult, SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr, IpEndpoint, Ipv4Address};

pub use device::QueueDevice;

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
        }
    }
}

/// Which side of the proxy bytes came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Leg {
    /// The connection the client opened to the proxy.
    Client,
    /// The connection the proxy opened to the server.
    Server,
}

/// Where an NF writes the bytes the other leg carries.
#[derive(Debug, Default)]
pub struct Writer {
    out: Vec<u8>,
    back: Vec<u8>,
    close: bool,
}

impl Writer {
    /// Appends bytes for the other leg.
    pub fn write(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
    }

    /// What was written for the other leg so far.
    pub fn written(&self) -> &[u8] {
        &self.out
    }

    /// What was written back for the leg data came from so far.
    pub fn replied(&self) -> &[u8] {
        &self.back
    }

    /// Closes the connection (both legs) once what was written is sent: an End Point answer
    /// to a client that expects the close (HTTP/1.0).
    pub fn close(&mut self) {
        self.close = true;
    }

    /// Appends bytes sent back on the leg the data came from (the End Point use: an NF
    /// answering a request itself, e.g. a cache hit).
    pub fn reply(&mut self, bytes: &[u8]) {
        self.back.extend_from_slice(bytes);
    }
}

/// A network function on the split proxy.
pub trait ProxyNf {
    /// DATA_RDY: `data` was read from `from` on connection `conn`; write into `out` what the
    /// other leg carries. At most `room` bytes are read per call so that what is written
    /// back fits; an NF that writes more makes the proxy buffer the rest (bounded by `room`
    /// of the next calls, since no more is read until it drains).
    fn on_data(&mut self, conn: usize, from: Leg, data: &[u8], out: &mut Writer);

    /// Connection `conn` is closed and freed: forget its state (ids are not reused).
    fn on_close(&mut self, conn: usize) {
        let _ = conn;
    }
}

/// Passes every byte unchanged.
#[derive(Debug, Default)]
pub struct PassThrough;

impl ProxyNf for PassThrough {
    fn on_data(&mut self, _conn: usize, _from: Leg, data: &[u8], out: &mut Writer) {
        out.write(data);
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
}

struct Conn {
    client: SocketHandle,
    server: SocketHandle,
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
}

fn socket(cfg: &ProxyConfig) -> tcp::Socket<'static> {
    tcp::Socket::new(tcp::SocketBuffer::new(vec![0; cfg.rx_buffer]), tcp::SocketBuffer::new(vec![0; cfg.tx_buffer]))
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
            let mut s = socket(&self.cfg);
            if s.listen(self.cfg.port).is_err() {
                return;
            }
            self.listeners.push(self.sockets.add(s));
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
        // One packet at a time, accepting (and opening new listeners) after each: a
        // smoltcp listener takes one SYN, so a burst of SYNs larger than the backlog in one
        // poll would otherwise be refused with RSTs (`ab -c 10`; docs/proxy.md).
        while !matches!(
            self.iface.poll_ingress_single(now, &mut self.device, &mut self.sockets),
            PollIngressSingleResult::None
        ) {
            self.accept();
        }
        self.iface.poll_egress(now, &mut self.device, &mut self.sockets);
        self.accept();
        if self.listeners.is_empty() {
            // At the limit: further SYNs get a RST until a slot frees.
            self.stats.at_limit += 1;
        }
        self.relay(nf);
        self.reap(nf);
        self.iface.poll(now, &mut self.device, &mut self.sockets);
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
            let mut server = socket(&self.cfg);
            self.next_port = if self.next_port >= 60999 { 40000 } else { self.next_port + 1 };
            let local = IpEndpoint::new(IpAddress::Ipv4(self.cfg.address), self.next_port);
            if server.connect(self.iface.context(), dst, local).is_err() {
                self.sockets.get_mut::<tcp::Socket>(h).abort();
                self.stats.refused += 1;
                continue;
            }
            let server = self.sockets.add(server);
            let conn = Conn {
                client: h,
                server,
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
        let mut buf = vec![0u8; self.cfg.rx_buffer.max(1)];
        for slot in self.conns.iter_mut() {
            let Some(c) = slot else { continue };
            for (from_h, to_h, leg) in [(c.client, c.server, Leg::Client), (c.server, c.client, Leg::Server)] {
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
                let mut w = Writer::default();
                nf.on_data(c.id, leg, &buf[..n], &mut w);
                let to = self.sockets.get_mut::<tcp::Socket>(to_h);
                let sent = to.send_slice(&w.out).unwrap_or(0);
                pending.extend_from_slice(&w.out[sent..]);
                if w.close {
                    c.closing = true;
                }
                if !w.back.is_empty() {
                    let from = self.sockets.get_mut::<tcp::Socket>(from_h);
                    let sent = if from.may_send() { from.send_slice(&w.back).unwrap_or(0) } else { 0 };
                    pending_back.extend_from_slice(&w.back[sent..]);
                    self.stats.bytes_replied += w.back.len() as u64;
                }
                if leg == Leg::Client {
                    self.stats.bytes_to_server += w.out.len() as u64;
                } else {
                    self.stats.bytes_to_client += w.out.len() as u64;
                }
            }
        }
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
            for (a, b, pend) in [
                (c.client, c.server, c.pending_to_server.is_empty()),
                (c.server, c.client, c.pending_to_client.is_empty()),
            ] {
                if pend && finished(self.sockets.get::<tcp::Socket>(a)) {
                    // Idempotent: FIN after what is queued (or gone, for a leg not yet open).
                    self.sockets.get_mut::<tcp::Socket>(b).close();
                }
            }
            if c.closing && c.pending_to_client.is_empty() && c.pending_to_server.is_empty() {
                self.sockets.get_mut::<tcp::Socket>(c.client).close();
                self.sockets.get_mut::<tcp::Socket>(c.server).abort();
            }
            let done = |s: &tcp::Socket| matches!(s.state(), tcp::State::Closed | tcp::State::TimeWait);
            let cd = done(self.sockets.get::<tcp::Socket>(c.client));
            let sd = done(self.sockets.get::<tcp::Socket>(c.server));
            if cd && sd {
                self.sockets.remove(c.client);
                self.sockets.remove(c.server);
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

#[cfg(test)]
mod tests;
