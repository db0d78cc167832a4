//! The proxy actor between a client and an origin (smoltcp interfaces of medium IP, their
//! packets wrapped in Ethernet here), in memory: ARP, framing, the End Point's lazy server
//! leg, the NF chain, frames that are not the proxy's, the table's checks, and the per-flow
//! upgrade (held SYN → proxy, → pass, → timeout) through `Actor::handle` and `idle`.

use super::*;
use crate::proxy::QueueDevice;
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::wire::{HardwareAddress, IpCidr};

const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
const ORIGIN: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 11);
const VIP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 100);
const SOURCE: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 200);
const CMAC: Mac = [2, 0, 0, 0, 0, 1];
const OMAC: Mac = [2, 0, 0, 0, 0, 11];
const PMAC: Mac = [2, 0, 0, 0, 0x50, 1];

fn table(text: &str) -> toml::Value {
    toml::Value::Table(toml::from_str(text).unwrap())
}

fn settings(text: &str) -> Result<Settings, Vec<StackConfigError>> {
    let cfg: ProxyStackConfig = crate::registry::parse_table(table(text), "stack.proxy")?;
    cfg.settings()
}

struct Host {
    iface: Interface,
    dev: QueueDevice,
    sockets: SocketSet<'static>,
}

fn host(addr: Ipv4Addr) -> Host {
    let mut dev = QueueDevice::new(4096, 1500);
    let mut iface = Interface::new(Config::new(HardwareAddress::Ip), &mut dev, smoltcp::time::Instant::from_millis(0));
    iface.update_ip_addrs(|a| {
        let _ = a.push(IpCidr::new(IpAddress::Ipv4(addr), 24));
    });
    Host { iface, dev, sockets: SocketSet::new(vec![]) }
}

fn eth(dst: Mac, src: Mac, ip: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend_from_slice(ip);
    f
}

/// An Ethernet/IPv4 frame from the client to `dst`, protocol `proto`, carrying `l4`.
fn ip_frame(proto: u8, dst: Ipv4Addr, l4: &[u8]) -> Vec<u8> {
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&(20 + l4.len() as u16).to_be_bytes());
    ip.extend_from_slice(&[0, 0, 0, 0, 64, proto, 0, 0]);
    ip.extend_from_slice(&CLIENT.octets());
    ip.extend_from_slice(&dst.octets());
    ip.extend_from_slice(l4);
    eth(OMAC, CMAC, &ip)
}

/// A TCP SYN from the client's port 50000 to `dst:dport` (20-byte headers, no payload).
fn tcp_frame(dst: Ipv4Addr, dport: u16) -> Vec<u8> {
    let mut tcp = 50000u16.to_be_bytes().to_vec();
    tcp.extend_from_slice(&dport.to_be_bytes());
    tcp.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
    ip_frame(6, dst, &tcp)
}

/// Where the IPv4 header and the TCP header start in [`tcp_frame`]'s frames.
const IP_AT: usize = 14;
const TCP_AT: usize = 34;

/// Answers a PING itself (End Point); passes everything else.
struct Pong;
impl ProxyNf for Pong {
    fn on_data(&mut self, _c: usize, from: Leg, data: &[u8], out: &mut Writer) {
        if from == Leg::Client && data == b"PING" {
            out.reply(b"PONG");
        } else {
            out.write(data);
        }
    }
    fn counters(&self) -> Vec<(String, u64)> {
        vec![("seen".into(), 1)]
    }
}

/// Upper-cases the client's bytes.
struct Upper;
impl ProxyNf for Upper {
    fn on_data(&mut self, _c: usize, from: Leg, data: &[u8], out: &mut Writer) {
        out.write(&if from == Leg::Client { data.to_ascii_uppercase() } else { data.to_vec() });
    }
}

struct Net {
    actor: ProxyActor,
    client: Host,
    origin: Host,
    t: smoltcp::time::Instant,
    arp_answered: usize,
}

impl Net {
    fn new(nfs: Vec<(&str, MakeProxyNf)>) -> Net {
        let s = settings(
            "services = [\"10.99.0.100:80\"]\norigin = \"10.99.0.11:8000\"\nsource = \"10.99.0.200\"\nendpoint = true\nrx_buffer = 4096\ntx_buffer = 4096\n",
        )
        .unwrap();
        let specs: Vec<ProxyNfSpec> =
            nfs.into_iter().map(|(n, make)| ProxyNfSpec { name: n.into(), kind: "test".into(), make }).collect();
        let actor = ProxyActor::new("proxy", s, Chain::new(&specs), Loopback::new());
        let mut n = Net {
            actor,
            client: host(CLIENT),
            origin: host(ORIGIN),
            t: smoltcp::time::Instant::from_millis(0),
            arp_answered: 0,
        };
        // The client asks for the virtual address first; the proxy answers.
        assert!(n.actor.on_frame(0, &wire::build_arp(1, CMAC, CLIENT, [0; 6], VIP)));
        let mut out = Vec::new();
        n.actor.loopback.take_frames(&mut out);
        assert_eq!(out.len(), 1);
        let a = wire::arp(&out[0].1).unwrap();
        assert_eq!((out[0].0, a.op, a.sha, a.spa), (0, 2, PMAC, VIP), "ARP reply for the service");
        n
    }

    /// One round: hosts run, their packets go to the actor, its frames to the hosts.
    fn step(&mut self) {
        self.t += smoltcp::time::Duration::from_millis(1);
        self.client.iface.poll(self.t, &mut self.client.dev, &mut self.client.sockets);
        self.origin.iface.poll(self.t, &mut self.origin.dev, &mut self.origin.sockets);
        for p in self.client.dev.drain().collect::<Vec<_>>() {
            assert!(self.actor.on_frame(0, &eth(PMAC, CMAC, &p)), "the client's packets are the proxy's");
        }
        for p in self.origin.dev.drain().collect::<Vec<_>>() {
            assert!(self.actor.on_frame(1, &eth(PMAC, OMAC, &p)), "the origin's answers are the proxy's");
        }
        self.actor.poll(Instant::now());
        let mut out = Vec::new();
        self.actor.loopback.take_frames(&mut out);
        for (port, f) in out {
            if let Some(a) = wire::arp(&f) {
                assert_eq!((a.op, a.spa), (1, SOURCE), "the proxy asks from its source address");
                if a.tpa == ORIGIN && port == 1 {
                    self.arp_answered += 1;
                    assert!(self.actor.on_frame(1, &wire::build_arp(2, OMAC, ORIGIN, PMAC, SOURCE)));
                }
                continue;
            }
            assert_eq!(&f[6..12], &PMAC, "sent from the proxy's MAC");
            match (port, <Mac>::try_from(&f[..6]).unwrap()) {
                (0, CMAC) => self.client.dev.inject(f[14..].to_vec()),
                (1, OMAC) => self.origin.dev.inject(f[14..].to_vec()),
                other => panic!("frame to {other:?}"),
            };
        }
    }

    /// A listener of the origin on port 8000 (it takes one connection).
    fn listen(&mut self) -> SocketHandle {
        let buf = || tcp::SocketBuffer::new(vec![0u8; 1 << 16]);
        let mut l = tcp::Socket::new(buf(), buf());
        l.listen(8000).unwrap();
        self.origin.sockets.add(l)
    }

    /// Opens a client connection to the service and sends `req`.
    fn connect(&mut self, req: &[u8], port: u16) -> SocketHandle {
        let buf = || tcp::SocketBuffer::new(vec![0u8; 1 << 16]);
        let ch = self.client.sockets.add(tcp::Socket::new(buf(), buf()));
        let cx = self.client.iface.context();
        self.client.sockets.get_mut::<tcp::Socket>(ch).connect(cx, (IpAddress::Ipv4(VIP), 80), port).unwrap();
        let mut sent = false;
        for _ in 0..2000 {
            self.step();
            let c = self.client.sockets.get_mut::<tcp::Socket>(ch);
            if c.may_send() && !sent {
                c.send_slice(req).unwrap();
                sent = true;
                break;
            }
        }
        assert!(sent, "the client's handshake with the proxy completed");
        ch
    }

    fn read(&mut self, ch: SocketHandle, want: usize, origin: Option<(SocketHandle, &[u8])>) -> (Vec<u8>, Vec<u8>) {
        let (mut got, mut at_origin, mut answered) = (Vec::new(), Vec::new(), false);
        let mut b = [0u8; 4096];
        for _ in 0..5000 {
            self.step();
            if let Some((lh, answer)) = origin {
                let s = self.origin.sockets.get_mut::<tcp::Socket>(lh);
                while s.can_recv() {
                    let n = s.recv_slice(&mut b).unwrap();
                    at_origin.extend_from_slice(&b[..n]);
                }
                if !at_origin.is_empty() && !answered && s.may_send() {
                    s.send_slice(answer).unwrap();
                    answered = true;
                }
            }
            let c = self.client.sockets.get_mut::<tcp::Socket>(ch);
            while c.can_recv() {
                let n = c.recv_slice(&mut b).unwrap();
                got.extend_from_slice(&b[..n]);
            }
            if got.len() >= want {
                break;
            }
        }
        (got, at_origin)
    }
}

#[test]
fn an_end_point_answer_opens_no_server_leg_and_a_miss_does() {
    let pong: MakeProxyNf = Arc::new(|| Box::new(Pong) as Box<dyn ProxyNf + Send>);
    let upper: MakeProxyNf = Arc::new(|| Box::new(Upper) as Box<dyn ProxyNf + Send>);
    // Pong first: a PING is answered before Upper sees it; other bytes are upper-cased.
    let mut n = Net::new(vec![("pong", pong), ("upper", upper)]);

    let lh = n.listen();
    let ch = n.connect(b"PING", 50000);
    let (got, _) = n.read(ch, 4, None);
    assert_eq!(got, b"PONG");
    let st = n.actor.proxy.stats().clone();
    assert_eq!((st.accepted, st.server_legs, st.bytes_replied), (1, 0, 4), "{st:?}");
    assert_eq!(n.arp_answered, 0, "no server leg: nothing asked about the origin");

    let ch2 = n.connect(b"get /x", 50001);
    let (got, at_origin) = n.read(ch2, 5, Some((lh, b"hello")));
    assert_eq!(at_origin, b"GET /X", "the chain in order: pong passes, upper upper-cases");
    assert_eq!(got, b"hello");
    let st = n.actor.proxy.stats().clone();
    assert_eq!((st.accepted, st.server_legs), (2, 1), "{st:?}");
    assert!(n.arp_answered >= 1, "the origin's address was asked by ARP");
    let counters: HashMap<String, u64> = n.actor.counters().into_iter().collect();
    assert_eq!(counters["pong.seen"], 1, "NF counters are prefixed with the NF's name");
    assert_eq!(counters["server_legs"], 1);
    assert_eq!(counters["unresolved_dropped"], 0);
}

/// The answer to the client is lost; no frame comes in after it; the actor's idle step
/// alone ([`ProxyActor::tick`], what `Actor::idle` runs) makes smoltcp retransmit it.
#[test]
fn idle_steps_run_the_retransmission_timer() {
    let pong: MakeProxyNf = Arc::new(|| Box::new(Pong) as Box<dyn ProxyNf + Send>);
    let mut n = Net::new(vec![("pong", pong)]);
    let ch = n.connect(b"PING", 50000);
    let mut lost = 0;
    let mut got = Vec::new();
    let mut b = [0u8; 64];
    // Bounded: 3 s of wall time at most (smoltcp's retransmission timeout is far shorter).
    let start = Instant::now();
    while got.is_empty() && start.elapsed() < Duration::from_secs(3) {
        n.t += smoltcp::time::Duration::from_millis(1);
        n.client.iface.poll(n.t, &mut n.client.dev, &mut n.client.sockets);
        for p in n.client.dev.drain().collect::<Vec<_>>() {
            assert!(n.actor.on_frame(0, &eth(PMAC, CMAC, &p)));
        }
        n.actor.tick(Instant::now());
        let mut out = Vec::new();
        n.actor.loopback.take_frames(&mut out);
        for (_, f) in out {
            // The first segment carrying the answer (TCP payload) is lost.
            let ihl = usize::from(f[14] & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes([f[16], f[17]]));
            let payload = total - ihl - usize::from(f[14 + ihl + 12] >> 4) * 4;
            if payload > 0 && lost == 0 {
                lost += 1;
                continue;
            }
            n.client.dev.inject(f[14..].to_vec());
        }
        let c = n.client.sockets.get_mut::<tcp::Socket>(ch);
        while c.can_recv() {
            let k = c.recv_slice(&mut b).unwrap();
            got.extend_from_slice(&b[..k]);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(lost, 1, "the answer was sent once and lost");
    assert_eq!(got, b"PONG", "retransmitted by the idle steps' polls");
}

#[test]
fn frames_that_are_not_the_proxys_continue() {
    let s = settings("intercept_port = 8080\nsource = \"10.99.0.200\"\n").unwrap();
    let mut a = ProxyActor::new("proxy", s, Chain::new(&[]), Loopback::new());
    let tcp_to = tcp_frame;
    assert!(!a.on_frame(0, &tcp_to(ORIGIN, 80)), "another port passes");
    assert!(a.on_frame(0, &tcp_to(ORIGIN, 8080)), "the intercepted port, any address, is the proxy's");
    assert!(a.on_frame(0, &tcp_to(SOURCE, 9)), "anything to the source address is the proxy's");
    assert!(!a.on_frame(0, &wire::build_arp(1, CMAC, CLIENT, [0; 6], ORIGIN)), "ARP for others passes");
    let mut padded = tcp_to(ORIGIN, 8080);
    padded.extend_from_slice(&[0; 6]);
    assert!(a.on_frame(0, &padded), "Ethernet padding is cut off");
    assert!(!a.on_frame(0, &padded[..30]), "a cut frame is not parsed");
}

/// What the proxy does with a frame it cannot take (module docs, "Reading frames"): the
/// frame continues (`on_frame` false: `Verdict::Continue`), never reaches smoltcp
/// (`frames_in` does not move) and is counted by why. Every frame is addressed to the
/// proxy's own address *and* its intercepted port: only how it is broken decides.
#[test]
fn frames_the_proxy_cannot_read_continue_and_are_counted() {
    use crate::parse::Malformed;
    let s = settings("intercept_port = 8080\nsource = \"10.99.0.200\"\n").unwrap();
    let mut a = ProxyActor::new("proxy", s, Chain::new(&[]), Loopback::new());
    let counter = |a: &ProxyActor, name: &str| a.counters().into_iter().find(|(k, _)| k == name).unwrap().1;
    let good = tcp_frame(SOURCE, 8080);
    let edit = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut g = good.clone();
        f(&mut g);
        g
    };
    let mut with_payload = good.clone();
    with_payload[IP_AT + 3] = 45;
    with_payload.extend_from_slice(b"hello");
    let mut vlan = good[..12].to_vec();
    vlan.extend_from_slice(&[0x81, 0x00, 0x00, 0x0a]);
    vlan.extend_from_slice(&good[12..]);

    let malformed: [(&str, Vec<u8>, Malformed); 7] = [
        ("IPv4 header cut short", good[..IP_AT + 12].to_vec(), Malformed::TruncatedIpv4),
        ("IHL of 4 words", edit(&|g| g[IP_AT] = 0x44), Malformed::Ipv4BadHeaderLength),
        ("IHL past the total length", edit(&|g| g[IP_AT] = 0x4f), Malformed::Ipv4TotalLengthTooShort),
        ("TCP data offset 0", edit(&|g| g[TCP_AT + 12] = 0x00), Malformed::TcpBadDataOffset),
        ("TCP data offset of 4 words", edit(&|g| g[TCP_AT + 12] = 0x40), Malformed::TcpBadDataOffset),
        ("TCP data offset past the packet", edit(&|g| g[TCP_AT + 12] = 0xf0), Malformed::TcpBadDataOffset),
        (
            "TCP header of 4 bytes (the ports only)",
            edit(&|g| {
                g[IP_AT + 3] = 24;
                g.truncate(TCP_AT + 4);
            }),
            Malformed::TruncatedTcp,
        ),
    ];
    for (n, (what, f, why)) in malformed.iter().enumerate() {
        assert_eq!(parse(LinkType::Ethernet, f).unwrap_err(), *why, "{what}: the parser's reason");
        assert!(!a.on_frame(0, f), "{what}: continues");
        assert_eq!(counter(&a, "passed_malformed"), n as u64 + 1, "{what}: counted");
    }

    // Read, but not the proxy's kind: VLAN-tagged, or cut by the snap length.
    assert!(parse(LinkType::Ethernet, &vlan).is_ok_and(|p| p.vlan == Some(10)));
    assert!(!a.on_frame(0, &vlan), "VLAN-tagged: continues (the proxy answers untagged)");
    assert_eq!(counter(&a, "passed_vlan_tagged"), 1);
    let clipped = &with_payload[..with_payload.len() - 2];
    assert!(parse(LinkType::Ethernet, clipped).is_ok_and(|p| p.payload_clipped));
    assert!(!a.on_frame(0, clipped), "an IP packet longer than its frame: continues");
    assert_eq!(counter(&a, "passed_clipped"), 1);
    // Another protocol continues, uncounted.
    let mut ipv6 = eth(OMAC, CMAC, &[0x60, 0, 0, 0, 0, 0, 59, 64]);
    ipv6[12..14].copy_from_slice(&[0x86, 0xdd]);
    ipv6.extend_from_slice(&[0; 32]);
    assert!(parse(LinkType::Ethernet, &ipv6).is_ok());
    assert!(!a.on_frame(0, &ipv6), "IPv6 continues");
    assert_eq!(counter(&a, "frames_in"), 0, "none of these reached smoltcp");

    // Non-TCP: to the intercepted port of another address it continues; to the proxy's
    // own address it is the proxy's (as before).
    let udp = |dst| ip_frame(17, dst, &[0xc3, 0x50, 0x1f, 0x90, 0, 8, 0, 0]);
    assert!(!a.on_frame(0, &udp(ORIGIN)), "UDP to the intercepted port of another address continues");
    assert!(a.on_frame(0, &udp(SOURCE)), "UDP to the proxy's address is the proxy's");
    assert!(a.on_frame(0, &ip_frame(1, SOURCE, &[8, 0, 0, 0, 0, 1, 0, 1])), "so is a ping");
    // A first fragment holds the TCP header, but interception never reads a fragment's.
    let fragment = |dst| {
        let mut f = tcp_frame(dst, 8080);
        f[IP_AT + 6] = 0x20; // more fragments
        f
    };
    assert!(!a.on_frame(0, &fragment(ORIGIN)), "a fragment is never intercepted");
    assert!(a.on_frame(0, &fragment(SOURCE)), "a fragment to the proxy's address is the proxy's");
    assert!(a.on_frame(0, &good), "the unbroken frame is the proxy's");
    assert_eq!(counter(&a, "frames_in"), 4, "UDP, ping, fragment, unbroken: into smoltcp");
    let unread: Vec<u64> =
        ["passed_malformed", "passed_vlan_tagged", "passed_clipped"].iter().map(|c| counter(&a, c)).collect();
    assert_eq!(unread, [7, 1, 1], "nothing else was counted");
}

#[test]
fn the_table_is_checked() {
    let e = settings(
        "services = [\"10.0.0.1:80\"]\nintercept_port = 80\nsource = \"10.0.0.2\"\norigin = \"x\"\nbacklog = 0\n",
    )
    .unwrap_err();
    let keys: Vec<&str> = e.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, ["stack.proxy", "stack.proxy.origin", "stack.proxy.backlog"], "{e:?}");
    let e = settings("intercept_port = 0\nsource = \"10.0.0.2\"\n").unwrap_err();
    assert_eq!(e[0].key, "stack.proxy.intercept_port");
    let s = settings("intercept_port = 8080\nsource = \"10.0.0.2\"\nendpoint = true\nmax_connections = 8\n").unwrap();
    assert!(s.transparent && s.proxy.lazy_server && s.proxy.origin.is_none());
    assert_eq!((s.port, s.proxy.backlog), (8080, 8), "backlog at most max_connections");
    assert!(parse_stack(table("intercept_port = 1\nsource = \"10.0.0.2\"\n")).unwrap().sends_frames().is_some());
}

/// The upgrade's setup: the actor (`upgrade = "on_request"`, transparent on port 80) driven
/// through `Actor::handle`/`idle` with a packet pool, and a smoltcp client.
struct Gated {
    _region: Arc<runtime::shm::Region>,
    alloc: runtime::pool::PoolAllocator,
    view: runtime::pool::PoolView,
    actor: ProxyActor,
    client: Host,
    t: smoltcp::time::Instant,
}

const FLOW: FlowRef = FlowRef { slot: std::num::NonZeroU32::MIN, generation: 7 };

impl Gated {
    fn new(test: &str) -> Gated {
        let s = settings(
            "intercept_port = 80\nsource = \"10.99.0.200\"\nupgrade = \"on_request\"\nhold_ms = 50\nhold_max = 4\n",
        )
        .unwrap();
        let region = runtime::shm::Region::create(&format!("t{}-up-{test}", std::process::id()), 4 << 20).unwrap();
        let (alloc, _release, view) = runtime::pool::create(&region, "p", 64, 2048).unwrap();
        Gated {
            _region: region,
            alloc,
            view,
            actor: ProxyActor::new("proxy", s, Chain::new(&[]), Loopback::new()),
            client: host(CLIENT),
            t: smoltcp::time::Instant::from_millis(0),
        }
    }

    /// The client's next frames (Ethernet-wrapped).
    fn client_frames(&mut self) -> Vec<Vec<u8>> {
        self.t += smoltcp::time::Duration::from_millis(1);
        self.client.iface.poll(self.t, &mut self.client.dev, &mut self.client.sockets);
        self.client.dev.drain().map(|p| eth(OMAC, CMAC, &p)).collect()
    }

    /// `Actor::handle` on frame `f` of `flow`: the verdict and what was published.
    fn handle(&mut self, f: &[u8], flow: FlowRef) -> (Verdict, Vec<EventDesc>) {
        let h = self.alloc.alloc(f).unwrap();
        let mut ev = EventDesc::new(builtin::PKT_TCP, 0, 1, 0);
        ev.packet = Some(h);
        ev.flow = Some(flow);
        let mut out = actors::contract::Outbox::new();
        let mut cx = Context::new(&self.view, &mut out, 1, None);
        let v = self.actor.handle(&mut ev, &mut cx);
        let published = cx.published().cloned().collect();
        (v, published)
    }

    fn idle(&mut self) -> Vec<(u8, Vec<u8>)> {
        let mut out = actors::contract::Outbox::new();
        let mut cx = Context::new(&self.view, &mut out, 1, None);
        self.actor.idle(&mut cx);
        let mut frames = Vec::new();
        self.actor.loopback.take_frames(&mut frames);
        frames
    }

    /// The policy's answer, as TX hands it to the feedback path.
    fn answer(&self, flow: FlowRef, choice: ProxyChoice) {
        let mut d = EventDesc::new(builtin::FLOW_DEST, 2, 1, 0);
        d.flow = Some(flow);
        choice.write(&mut d);
        self.actor.loopback.feed(d);
    }

    fn counter(&self, name: &str) -> u64 {
        self.actor.counters().into_iter().find(|(k, _)| k == name).unwrap_or_else(|| panic!("no counter {name}")).1
    }

    /// The client connects to the origin's port 80; its SYN is held and one `FLOW_REQ`
    /// (with the SYN's packet, for `flow`) published. Returns the client socket and the SYN.
    fn held_syn(&mut self, flow: FlowRef, port: u16) -> (SocketHandle, Vec<u8>) {
        let buf = || tcp::SocketBuffer::new(vec![0u8; 1 << 16]);
        let ch = self.client.sockets.add(tcp::Socket::new(buf(), buf()));
        let cx = self.client.iface.context();
        self.client.sockets.get_mut::<tcp::Socket>(ch).connect(cx, (IpAddress::Ipv4(ORIGIN), 80), port).unwrap();
        let frames = self.client_frames();
        assert_eq!(frames.len(), 1, "the client's SYN");
        let syn = frames[0].clone();
        let (v, published) = self.handle(&syn, flow);
        assert_eq!(v, Verdict::Drop(1), "held");
        assert_eq!(self.actor.contract().drop_reasons[1], DROP_HELD);
        assert_eq!(published.len(), 1, "one FLOW_REQ");
        assert_eq!(published[0].event_type, builtin::FLOW_REQ);
        assert_eq!(published[0].flow, Some(flow));
        assert!(published[0].packet.is_some(), "with the SYN's packet (filters, the policy's view)");
        let (v, published) = self.handle(&syn, flow);
        assert_eq!((v, published.len()), (Verdict::Drop(1), 0), "a retransmitted SYN while held: no new request");
        assert!(self.idle().is_empty(), "nothing sent while undecided");
        assert_eq!(self.counter("syns_held_now"), 1);
        (ch, syn)
    }
}

#[test]
fn a_held_syn_answered_proxy_is_terminated_by_the_proxy() {
    let mut g = Gated::new("proxy");
    let (ch, _) = g.held_syn(FLOW, 40000);
    g.answer(FLOW, ProxyChoice::Proxy);
    let mut established = false;
    for _ in 0..100 {
        for (port, f) in g.idle() {
            if let Some(a) = wire::arp(&f) {
                assert_eq!(a.tpa, ORIGIN, "the proxy asks for the origin (its server leg)");
                continue;
            }
            assert_eq!((port, &f[..6]), (0, &CMAC[..]), "the proxy answers the client");
            g.client.dev.inject(f[14..].to_vec());
        }
        for f in g.client_frames() {
            assert_eq!(g.handle(&f, FLOW).0, Verdict::Drop(0), "the flow's frames are the proxy's now");
        }
        if g.client.sockets.get_mut::<tcp::Socket>(ch).state() == tcp::State::Established {
            established = true;
            break;
        }
    }
    assert!(established, "the client's handshake completed with the proxy (for the origin's address)");
    assert_eq!(g.counter("flows_upgraded_to_proxy"), 1);
    assert_eq!(g.counter("flows_passed"), 0);
    assert_eq!(g.counter("accepted"), 1);
    assert_eq!((g.counter("decision_entries"), g.counter("syns_held_now")), (1, 0));
}

#[test]
fn a_held_syn_answered_pass_goes_on_unchanged_and_so_does_its_flow() {
    let mut g = Gated::new("pass");
    let (_, syn) = g.held_syn(FLOW, 40001);
    g.answer(FLOW, ProxyChoice::Pass);
    let out = g.idle();
    assert_eq!(out, vec![(1, syn.clone())], "the SYN, byte for byte, out of the other port");
    // Later frames of the flow (here a retransmitted SYN and a data segment) continue.
    assert_eq!(g.handle(&syn, FLOW), (Verdict::Continue, vec![]));
    let mut data = syn.clone();
    data[14 + 20 + 13] = 0x18;
    data.extend_from_slice(b"GET / HTTP/1.0\r\n\r\n");
    assert_eq!(g.handle(&data, FLOW).0, Verdict::Continue);
    assert!(g.idle().is_empty());
    assert_eq!((g.counter("flows_passed"), g.counter("flows_upgraded_to_proxy")), (1, 0));
    assert_eq!((g.counter("decision_entries"), g.counter("accepted"), g.counter("frames_in")), (1, 0, 0));
    // A second flow is asked about on its own.
    let other = FlowRef::new(9, 1);
    g.held_syn(other, 40002);
    assert_eq!(g.counter("syns_held_now"), 1);
}

#[test]
fn a_held_syn_without_an_answer_passes_after_its_timeout() {
    let mut g = Gated::new("timeout");
    let (_, syn) = g.held_syn(FLOW, 40003);
    // Bounded: the hold is 50 ms; 2 s of wall time at most.
    let start = Instant::now();
    let mut out = Vec::new();
    while out.is_empty() && start.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(10));
        out = g.idle();
    }
    assert_eq!(out, vec![(1, syn.clone())], "passed unchanged at the timeout");
    assert_eq!((g.counter("hold_timeouts"), g.counter("flows_passed")), (1, 1));
    // The answer comes too late: counted, nothing sent, the flow stays on the cheap path.
    g.answer(FLOW, ProxyChoice::Proxy);
    assert!(g.idle().is_empty());
    assert_eq!(g.counter("late_answers"), 1);
    assert_eq!(g.handle(&syn, FLOW).0, Verdict::Continue);
    assert_eq!(g.counter("flows_upgraded_to_proxy"), 0);
}

/// With the upgrade, a malformed SYN to the intercepted port is not held and asks nothing:
/// it continues, counted, as every frame the proxy cannot read.
#[test]
fn a_malformed_syn_is_neither_held_nor_asked_about() {
    let mut g = Gated::new("malformed");
    let mut bad = tcp_frame(ORIGIN, 80);
    bad[TCP_AT + 12] = 0x40;
    assert_eq!(g.handle(&bad, FLOW), (Verdict::Continue, vec![]));
    assert_eq!((g.counter("passed_malformed"), g.counter("syns_held_now")), (1, 0));
    let (v, published) = g.handle(&tcp_frame(ORIGIN, 80), FLOW);
    assert_eq!((v, published.len()), (Verdict::Drop(1), 1), "the same SYN unbroken: held, asked about");
}

#[test]
fn the_upgrade_keys_are_checked() {
    let e = settings(
        "services = [\"10.0.0.1:80\"]\norigin = \"10.0.0.3:80\"\nsource = \"10.0.0.2\"\nupgrade = \"on_request\"\n",
    )
    .unwrap_err();
    assert_eq!(e[0].key, "stack.proxy.upgrade");
    assert!(e[0].to_string().contains("needs `intercept_port`"), "{e:?}");
    let e =
        settings("intercept_port = 80\nsource = \"10.0.0.2\"\nupgrade = \"on_request\"\nhold_ms = 0\n").unwrap_err();
    assert_eq!(e[0].key, "stack.proxy.hold_ms");
    assert!(settings("intercept_port = 80\nsource = \"10.0.0.2\"\nupgrade = \"sometimes\"\n").is_err());
    let c = contract("proxy", true);
    assert!(c.publications.iter().any(|p| p.event == builtin::FLOW_REQ));
    assert!(c.subscriptions.iter().any(|s| s.feedback && s.event == builtin::FLOW_DEST));
    assert!(!contract("proxy", false).publications.iter().any(|p| p.event == builtin::FLOW_REQ));
}
