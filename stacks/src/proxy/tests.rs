//! A client and a server (each a smoltcp interface) talk through the split proxy in memory.

use super::*;
use smoltcp::wire::Ipv4Packet;

struct Host {
    iface: Interface,
    dev: QueueDevice,
    sockets: SocketSet<'static>,
}

fn host(addr: Ipv4Address, gw: Ipv4Address, now: Instant) -> Host {
    let mut dev = QueueDevice::new(4096, 1500);
    let mut iface = Interface::new(Config::new(HardwareAddress::Ip), &mut dev, now);
    iface.update_ip_addrs(|a| {
        let _ = a.push(IpCidr::new(IpAddress::Ipv4(addr), 24));
    });
    let _ = iface.routes_mut().add_default_ipv4_route(gw);
    Host { iface, dev, sockets: SocketSet::new(vec![]) }
}

fn dst(p: &[u8]) -> Ipv4Address {
    Ipv4Packet::new_checked(p).map(|p| p.dst_addr()).unwrap_or(Ipv4Address::UNSPECIFIED)
}

/// Upper-cases what the client sends; passes the server's answer.
struct Upper;
impl ProxyNf for Upper {
    fn on_data(&mut self, _c: usize, from: Leg, data: &[u8], out: &mut Writer) {
        if from == Leg::Client {
            out.write(&data.to_ascii_uppercase());
        } else {
            out.write(data);
        }
    }
}

#[test]
fn relays_both_ways_through_an_nf_with_small_buffers() {
    let ca = Ipv4Address::new(10, 0, 0, 1);
    let sa = Ipv4Address::new(10, 0, 1, 2);
    let pa = Ipv4Address::new(10, 0, 0, 254);
    let mut t = Instant::from_millis(0);
    let mut client = host(ca, pa, t);
    let mut server = host(sa, pa, t);
    let cfg = ProxyConfig {
        address: pa,
        port: 80,
        rx_buffer: 2048,
        tx_buffer: 2048,
        max_connections: 4,
        backlog: 2,
        ..ProxyConfig::default()
    };
    let mut proxy = SplitProxy::new(cfg, t);

    let big = |n| tcp::SocketBuffer::new(vec![0u8; n]);
    let mut ss = tcp::Socket::new(big(1 << 20), big(1 << 20));
    ss.listen(80).unwrap();
    let sh = server.sockets.add(ss);
    let cs = tcp::Socket::new(big(1 << 20), big(1 << 20));
    let ch = client.sockets.add(cs);
    client
        .sockets
        .get_mut::<tcp::Socket>(ch)
        .connect(client.iface.context(), (IpAddress::Ipv4(sa), 80), 50000)
        .unwrap();

    let request: Vec<u8> = (0..100_000u32).map(|i| b"abcdefghij"[(i % 10) as usize]).collect();
    let reply: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let (mut sent_req, mut sent_rep) = (0, 0);
    let (mut got_req, mut got_rep) = (Vec::new(), Vec::new());
    let mut nf = Upper;
    for _ in 0..200_000 {
        t += smoltcp::time::Duration::from_millis(1);
        client.iface.poll(t, &mut client.dev, &mut client.sockets);
        server.iface.poll(t, &mut server.dev, &mut server.sockets);
        for p in client.dev.drain().chain(server.dev.drain()).collect::<Vec<_>>() {
            proxy.device.inject(p);
        }
        proxy.poll(t, &mut nf);
        for p in proxy.device.drain().collect::<Vec<_>>() {
            if dst(&p) == ca {
                client.dev.inject(p);
            } else if dst(&p) == pa || dst(&p) == sa {
                server.dev.inject(p);
            }
        }
        let c = client.sockets.get_mut::<tcp::Socket>(ch);
        if c.may_send() && sent_req < request.len() {
            sent_req += c.send_slice(&request[sent_req..]).unwrap();
        }
        let mut b = [0u8; 4096];
        while c.can_recv() {
            let n = c.recv_slice(&mut b).unwrap();
            got_rep.extend_from_slice(&b[..n]);
        }
        let s = server.sockets.get_mut::<tcp::Socket>(sh);
        while s.can_recv() {
            let n = s.recv_slice(&mut b).unwrap();
            got_req.extend_from_slice(&b[..n]);
        }
        if s.may_send() && sent_rep < reply.len() {
            sent_rep += s.send_slice(&reply[sent_rep..]).unwrap();
        }
        if got_req.len() == request.len() && got_rep.len() == reply.len() {
            break;
        }
    }
    assert_eq!(got_req, request.to_ascii_uppercase());
    assert_eq!(got_rep, reply);
    let st = proxy.stats();
    assert_eq!(st.accepted, 1);
    assert_eq!(st.bytes_to_server, request.len() as u64);
    assert_eq!(st.bytes_to_client, reply.len() as u64);
    assert!(st.backpressure > 0, "2 KiB buffers must have pushed back: {st:?}");
}

/// A client host, a server host and the proxy between them, stepped 1 ms at a time; each
/// host's packets can be held back (a slow link) to order the two handshakes.
struct Net {
    t: Instant,
    client: Host,
    server: Host,
    proxy: SplitProxy,
    hold_client: bool,
    hold_server: bool,
    held_client: Vec<Vec<u8>>,
    held_server: Vec<Vec<u8>>,
}

const CA: Ipv4Address = Ipv4Address::new(10, 0, 0, 1);
const SA: Ipv4Address = Ipv4Address::new(10, 0, 1, 2);
const PA: Ipv4Address = Ipv4Address::new(10, 0, 0, 254);

impl Net {
    fn new(cfg: ProxyConfig) -> Self {
        let t = Instant::from_millis(0);
        Net {
            t,
            client: host(CA, PA, t),
            server: host(SA, PA, t),
            proxy: SplitProxy::new(cfg, t),
            hold_client: false,
            hold_server: false,
            held_client: Vec::new(),
            held_server: Vec::new(),
        }
    }

    fn step(&mut self, nf: &mut dyn ProxyNf) {
        self.t += smoltcp::time::Duration::from_millis(1);
        let t = self.t;
        self.client.iface.poll(t, &mut self.client.dev, &mut self.client.sockets);
        self.server.iface.poll(t, &mut self.server.dev, &mut self.server.sockets);
        self.held_client.extend(self.client.dev.drain());
        self.held_server.extend(self.server.dev.drain());
        if !self.hold_client {
            for p in self.held_client.drain(..) {
                self.proxy.device.inject(p);
            }
        }
        if !self.hold_server {
            for p in self.held_server.drain(..) {
                self.proxy.device.inject(p);
            }
        }
        self.proxy.poll(t, nf);
        for p in self.proxy.device.drain().collect::<Vec<_>>() {
            if dst(&p) == CA {
                self.client.dev.inject(p);
            } else if dst(&p) == PA || dst(&p) == SA {
                self.server.dev.inject(p);
            }
        }
    }

    fn connect(&mut self, port: u16) -> SocketHandle {
        let mut s = tcp::Socket::new(tcp::SocketBuffer::new(vec![0; 65536]), tcp::SocketBuffer::new(vec![0; 65536]));
        s.connect(self.client.iface.context(), (IpAddress::Ipv4(SA), 80), port).unwrap();
        self.client.sockets.add(s)
    }

    /// `n` listening sockets on the server (one per connection the proxy will open).
    fn server_listen(&mut self, n: usize) -> Vec<SocketHandle> {
        (0..n)
            .map(|_| {
                let buf = || tcp::SocketBuffer::new(vec![0; 65536]);
                let mut s = tcp::Socket::new(buf(), buf());
                s.listen(80).unwrap();
                self.server.sockets.add(s)
            })
            .collect()
    }
}

fn read_all(s: &mut tcp::Socket, into: &mut Vec<u8>) {
    let mut b = [0u8; 4096];
    while let Ok(n @ 1..) = s.recv_slice(&mut b) {
        into.extend_from_slice(&b[..n]);
    }
}

/// One request/answer over the proxy where one leg's handshake completes well before the
/// other's; the answer must arrive whole, followed by the server's close.
fn exchange_with_held(hold_server_first: bool) -> (Vec<u8>, Vec<u8>, tcp::State) {
    let mut net = Net::new(ProxyConfig { address: PA, port: 80, ..ProxyConfig::default() });
    let sh = net.server_listen(1)[0];
    let ch = net.connect(50000);
    let mut nf = PassThrough;
    if hold_server_first {
        // The server is slow to answer the proxy's SYN: the client leg is up first.
        net.hold_server = true;
    } else {
        // The client's ACK of the proxy's SYN-ACK is slow: the server leg is up first.
        for _ in 0..100 {
            net.step(&mut nf);
            if net.proxy.stats().accepted == 1 {
                break;
            }
        }
        assert_eq!(net.proxy.stats().accepted, 1, "the proxy never took the SYN");
        net.hold_client = true;
    }
    let mut sent = false;
    for _ in 0..50 {
        net.step(&mut nf);
        let c = net.client.sockets.get_mut::<tcp::Socket>(ch);
        if hold_server_first && !sent && c.may_send() {
            c.send_slice(b"GET / HTTP/1.0\r\n\r\n").unwrap();
            sent = true;
        }
    }
    assert!(sent || !hold_server_first, "the client leg never came up");
    net.hold_client = false;
    net.hold_server = false;
    let (mut req, mut answer) = (Vec::new(), Vec::new());
    let mut answered = false;
    for _ in 0..2000 {
        net.step(&mut nf);
        let c = net.client.sockets.get_mut::<tcp::Socket>(ch);
        if !sent && c.may_send() {
            c.send_slice(b"GET / HTTP/1.0\r\n\r\n").unwrap();
            sent = true;
        }
        read_all(c, &mut answer);
        if !c.may_recv() && c.state() != tcp::State::SynSent && c.state() != tcp::State::SynReceived {
            c.close();
        }
        let s = net.server.sockets.get_mut::<tcp::Socket>(sh);
        read_all(s, &mut req);
        if !answered && req.ends_with(b"\r\n\r\n") && s.may_send() {
            s.send_slice(b"HTTP/1.0 200 OK\r\n\r\nhello").unwrap();
            s.close();
            answered = true;
        }
        if net.proxy.stats().closed == 1 {
            break;
        }
    }
    let state = net.client.sockets.get::<tcp::Socket>(ch).state();
    (req, answer, state)
}

#[test]
fn client_leg_up_before_the_server_leg_is_not_closed() {
    let (req, answer, _) = exchange_with_held(true);
    assert_eq!(req, b"GET / HTTP/1.0\r\n\r\n", "the request must reach the server");
    assert_eq!(answer, b"HTTP/1.0 200 OK\r\n\r\nhello", "the answer must reach the client");
}

#[test]
fn server_leg_up_before_the_client_leg_is_not_closed() {
    let (req, answer, _) = exchange_with_held(false);
    assert_eq!(req, b"GET / HTTP/1.0\r\n\r\n", "the request must reach the server");
    assert_eq!(answer, b"HTTP/1.0 200 OK\r\n\r\nhello", "the answer must reach the client");
}

/// Answers every request itself (the End Point use) with `size` bytes and closes.
struct Answer {
    size: usize,
}
impl ProxyNf for Answer {
    fn on_data(&mut self, _c: usize, from: Leg, data: &[u8], out: &mut Writer) {
        if from == Leg::Client && data.ends_with(b"\r\n\r\n") {
            out.reply(&(0..self.size).map(|i| (i % 253) as u8).collect::<Vec<_>>());
            out.close();
        }
    }
}

/// `rounds` rounds of `conc` concurrent connections, each answered by the NF and closed
/// (`ab -c conc` on the cache hit path); returns the answers' lengths.
fn reply_and_close(rounds: usize, conc: usize, size: usize, hold_server: bool) -> Vec<usize> {
    let mut net = Net::new(ProxyConfig { address: PA, port: 80, backlog: 4, ..ProxyConfig::default() });
    let _sh = net.server_listen(rounds * conc);
    let mut nf = Answer { size };
    let mut lens = Vec::new();
    let mut port = 50000;
    // The origin never answers the proxy's SYN in time: the hits must not wait for it.
    net.hold_server = hold_server;
    for _ in 0..rounds {
        let mut conns: Vec<(SocketHandle, bool, Vec<u8>)> = (0..conc)
            .map(|_| {
                port += 1;
                (net.connect(port), false, Vec::new())
            })
            .collect();
        for _ in 0..2000 {
            net.step(&mut nf);
            let mut open = 0;
            for (h, sent, got) in conns.iter_mut() {
                let c = net.client.sockets.get_mut::<tcp::Socket>(*h);
                if !*sent && c.may_send() {
                    c.send_slice(b"GET /x HTTP/1.0\r\n\r\n").unwrap();
                    *sent = true;
                }
                read_all(c, got);
                if *sent && !c.may_recv() {
                    c.close();
                }
                if !matches!(c.state(), tcp::State::Closed | tcp::State::TimeWait) {
                    open += 1;
                }
            }
            if open == 0 {
                break;
            }
        }
        for (h, _, got) in conns {
            lens.push(got.len());
            net.client.sockets.remove(h);
        }
    }
    for _ in 0..100 {
        net.step(&mut nf);
    }
    let st = net.proxy.stats();
    assert_eq!(st.accepted as usize, rounds * conc, "{st:?}");
    assert_eq!(st.closed as usize, rounds * conc, "every connection freed: {st:?}");
    assert_eq!(net.proxy.connections(), 0);
    lens
}

#[test]
fn replies_and_closes_arrive_whole_one_at_a_time() {
    let lens = reply_and_close(20, 1, 5000, false);
    assert_eq!(lens, vec![5000; 20]);
}

#[test]
fn replies_and_closes_arrive_whole_ten_at_a_time() {
    let lens = reply_and_close(5, 10, 5000, false);
    assert_eq!(lens, vec![5000; 50]);
}

#[test]
fn replies_need_no_server_leg() {
    let lens = reply_and_close(3, 10, 20_000, true);
    assert_eq!(lens, vec![20_000; 30]);
}

/// One poll sends as much as the window allows, not one segment per socket (smoltcp sends
/// one per egress pass; a single pass per poll capped the proxy's throughput).
#[test]
fn one_poll_sends_more_than_one_segment_per_leg() {
    let mut net = Net::new(ProxyConfig { address: PA, port: 80, ..ProxyConfig::default() });
    let sh = net.server_listen(1)[0];
    let ch = net.connect(50000);
    let mut nf = PassThrough;
    for _ in 0..100 {
        net.step(&mut nf);
        if net.server.sockets.get::<tcp::Socket>(sh).may_send() && net.client.sockets.get::<tcp::Socket>(ch).may_send()
        {
            break;
        }
    }
    assert!(net.server.sockets.get::<tcp::Socket>(sh).may_send(), "the server leg never came up");
    let s = net.server.sockets.get_mut::<tcp::Socket>(sh);
    let data = vec![7u8; 60_000];
    assert_eq!(s.send_slice(&data).unwrap(), data.len());
    // The server sends what its window allows; the proxy gets all of it in one poll and
    // must pass it on in that same poll.
    let t = net.t + smoltcp::time::Duration::from_millis(1);
    net.server.iface.poll(t, &mut net.server.dev, &mut net.server.sockets);
    let mut segs = 0;
    for _ in 0..64 {
        net.server.iface.poll(t, &mut net.server.dev, &mut net.server.sockets);
    }
    for p in net.server.dev.drain().collect::<Vec<_>>() {
        net.proxy.device.inject(p);
    }
    net.proxy.poll(t, &mut nf);
    for p in net.proxy.device.drain().collect::<Vec<_>>() {
        if dst(&p) == CA && p.len() > 1000 {
            segs += 1;
        }
    }
    assert!(segs >= 10, "one poll sent {segs} full segments to the client");
}

/// An origin that never answers the proxy's SYN: after the legs' timeout (30 s) the server
/// leg is given up, the client leg closed, the connection freed — not held for ever.
#[test]
fn a_silent_origin_is_given_up() {
    let mut net = Net::new(ProxyConfig { address: PA, port: 80, ..ProxyConfig::default() });
    let ch = net.connect(50000);
    let mut nf = PassThrough;
    net.hold_server = true;
    let mut sent = false;
    let mut steps = 0;
    for _ in 0..40_000 {
        net.step(&mut nf);
        net.held_server.clear(); // the origin's host drops everything
        steps += 1;
        let c = net.client.sockets.get_mut::<tcp::Socket>(ch);
        if !sent && c.may_send() {
            c.send_slice(b"GET / HTTP/1.0\r\n\r\n").unwrap();
            sent = true;
        }
        if sent && !c.may_recv() {
            c.close();
        }
        if net.proxy.stats().closed == 1 {
            break;
        }
    }
    assert!(sent, "the client leg never came up");
    assert_eq!(net.proxy.stats().closed, 1, "not freed after {steps} ms: {:?}", net.proxy.stats());
    assert!(steps >= 30_000, "given up after {steps} ms, before the 30 s timeout");
    assert_eq!(net.proxy.connections(), 0);
}
