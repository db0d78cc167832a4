//! The split proxy as a µStack of `mbox run` (`[stack.proxy]`): the actor around
//! [`SplitProxy`], its configuration and its registration. docs/proxy.md ("Split proxy
//! µStack in an app", "End Point") has the whole story.
//!
//! The actor runs after L2/3 and consumes `PKT`, as the splicer does. A frame is its own
//! when it is
//!
//! * an ARP request for one of its addresses (a virtual service's, or `source`, the server
//!   legs' address): answered with `mac`; or an ARP reply to a question it asked;
//! * IPv4 to a virtual service address (`services`), or — transparent interception,
//!   `intercept_port` — TCP to *any* address on that port;
//! * IPv4 to `source` (the origins' answers on the server legs).
//!
//! Its own frames lose their Ethernet header and go into the proxy's smoltcp device (the
//! sender's Ethernet address and port are learned on the way); they are dropped from the
//! chain with the reason `terminated by proxy`. The IP packets smoltcp sends get an Ethernet
//! header (the neighbour's address learned, or asked by ARP from `source` on every port;
//! packets wait for the answer, at most [`WAITING_PER_ADDRESS`] per address, beyond which
//! they are dropped and counted) and leave through TX's loopback
//! ([`actors::splice::Loopback`]). Every other frame continues unchanged.
//!
//! **Reading frames, malformed ones.** Frames are read by [`crate::parse::parse`], the
//! parser of L2/3, so the proxy and the rest of the platform agree on what a frame is. The
//! proxy takes only what it can terminate: untagged Ethernet, IPv4, not cut by the snap
//! length, and for TCP a whole header. Every other frame continues unchanged and never
//! reaches smoltcp:
//!
//! * a frame the parser refuses (an IPv4 header cut short or with a bad IHL, a TCP data
//!   offset below 5 words or past the packet, ...) reaches the proxy only when L2/3
//!   forwards malformed frames (`malformed = "forward"`; with the default `"drop"` L2/3
//!   drops it first). It then continues, as that policy asks — one policy for the
//!   platform, L2/3's — counted `passed_malformed`, even when it was addressed to the
//!   proxy (its addresses cannot be trusted);
//! * a VLAN-tagged frame (the proxy answers untagged) is counted `passed_vlan_tagged`, an
//!   IPv4 packet longer than its captured frame `passed_clipped`; other protocols (IPv6,
//!   LLDP, ...) are not counted;
//! * interception reads the TCP header, so a fragment never matches it: every fragment of
//!   a datagram goes the same way. To the proxy's own addresses, every IPv4 packet (TCP,
//!   UDP, ICMP, fragments) goes into smoltcp.
//!
//! **Timing.** A frame is only queued into the device when it arrives; the proxy is polled
//! (smoltcp's timers, retransmissions, the relay between the legs) on [`Actor::idle`] —
//! which the stage calls after every burst and while no input comes — and also from
//! [`Actor::handle`] when a burst grows past [`POLL_BATCH`] frames or [`POLL_EVERY`] has
//! passed, so a busy link cannot starve the timers.
//!
//! **NFs.** The NFs an app puts on the proxy (`[[nf]]` entries whose kind is a proxy NF,
//! e.g. `cache`; [`ProxyNfSpec`]) run *inside this actor*, through [`ProxyNf`], chained in
//! app-file order ([`Chain`]): bytes from the client go through them first to last, bytes
//! from the server last to first; what one NF writes is the next one's input, and what any
//! NF replies goes straight back to its leg (not through the NFs before it). With none, the
//! proxy passes bytes unchanged.
//!
//! **Per-flow upgrade** (`upgrade = "on_request"`, transparent interception only): a SYN to
//! the intercepted port is held and the actor publishes `FLOW_REQ` (with the SYN's packet)
//! to a policy NF (e.g. `proxy_select`), which answers with a `FLOW_DEST` carrying a
//! [`ProxyChoice`] on the `dest` feedback port: `Proxy` puts the held SYN into smoltcp,
//! `Pass` sends it on unchanged (out of the other port) and lets every later frame of the
//! flow continue. The bookkeeping is [`super::upgrade::Gate`].

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddrV4};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actors::desc::{EventDesc, FlowRef};
use actors::event::builtin;
use actors::splice::{Loopback, ProxyChoice};
use actors::{Actor, Context, Contract, Modifies, Publication, Subscription, Verdict};
use runtime::ports::LinkType;
use serde::Deserialize;
use smoltcp::wire::{IpAddress, IpEndpoint};

use super::upgrade::{Gate, Key, Step, UpgradeConfig};
pub use actors::proxy_nf::MakeProxyNf;

use super::{Leg, ProxyConfig, ProxyNf, SplitProxy, Writer};
use crate::parse::{parse, IpHeader, TcpHeader, Transport};
use crate::registry::{StackConfig, StackConfigError, StackContext, StackInstance, StackKind};
use crate::splicer::wire::{self, Mac};

/// Packets waiting for one neighbour's ARP answer, at most (beyond: dropped, counted).
pub const WAITING_PER_ADDRESS: usize = 64;
/// Neighbours with packets waiting, at most.
const WAITING_ADDRESSES: usize = 1024;
/// Neighbours remembered, at most (a flood from spoofed addresses cannot grow the table
/// further; beyond, new ones are not learned, counted `neighbours_full`).
pub const MAX_NEIGHBOURS: usize = 65_536;
/// Frames queued into the device before `handle` polls the proxy itself.
pub const POLL_BATCH: usize = 32;
/// Longest time between two polls while frames keep coming.
pub const POLL_EVERY: Duration = Duration::from_millis(1);
/// An ARP question for one address is repeated at most this often.
const ARP_RETRY: Duration = Duration::from_millis(200);

/// An NF of the app that runs inside the proxy actor (see the module docs).
#[derive(Clone)]
pub struct ProxyNfSpec {
    /// Its name in the app file (prefixes its counters).
    pub name: String,
    /// Its kind.
    pub kind: String,
    /// Its constructor.
    pub make: MakeProxyNf,
}

impl fmt::Debug for ProxyNfSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ProxyNfSpec({} = {})", self.name, self.kind)
    }
}

/// The proxy's NFs in app-file order, as one [`ProxyNf`] (see the module docs).
pub struct Chain {
    nfs: Vec<(String, Box<dyn ProxyNf + Send>)>,
}

impl Chain {
    /// The chain of `specs`' NFs, each made once.
    pub fn new(specs: &[ProxyNfSpec]) -> Chain {
        Chain { nfs: specs.iter().map(|s| (s.name.clone(), (s.make)())).collect() }
    }
}

impl ProxyNf for Chain {
    fn on_data(&mut self, conn: usize, from: Leg, data: &[u8], out: &mut Writer) {
        if self.nfs.is_empty() {
            out.write(data);
            return;
        }
        let n = self.nfs.len();
        let mut input = data.to_vec();
        for k in 0..n {
            let i = if from == Leg::Client { k } else { n - 1 - k };
            let mut w = Writer::default();
            self.nfs[i].1.on_data(conn, from, &input, &mut w);
            out.reply(w.replied());
            if w.closing() {
                out.close();
            }
            input = w.written().to_vec();
        }
        out.write(&input);
    }

    fn on_close(&mut self, conn: usize) {
        for (_, nf) in &mut self.nfs {
            nf.on_close(conn);
        }
    }

    fn counters(&self) -> Vec<(String, u64)> {
        self.nfs
            .iter()
            .flat_map(|(name, nf)| nf.counters().into_iter().map(move |(k, v)| (format!("{name}.{k}"), v)))
            .collect()
    }
}

/// The `[stack.proxy]` table.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyStackConfig {
    /// Virtual services, `"ADDRESS:PORT"` (IPv4, one port for all); needs `origin`.
    #[serde(default)]
    pub services: Vec<String>,
    /// Transparent interception: TCP to any address on this port (instead of `services`).
    pub intercept_port: Option<u16>,
    /// Where every server leg goes, `"ADDRESS:PORT"`; without it (transparent only), the
    /// address and port the client asked for.
    pub origin: Option<String>,
    /// Source address of the server legs (the proxy answers ARP for it).
    pub source: Ipv4Addr,
    /// The Ethernet address the proxy sends from and answers ARP with.
    #[serde(default = "default_mac")]
    pub mac: String,
    /// End Point: open a server leg only when the NFs write bytes for it (a cache hit opens
    /// none).
    #[serde(default)]
    pub endpoint: bool,
    /// Receive buffer of each socket, bytes.
    #[serde(default = "default_buffer")]
    pub rx_buffer: usize,
    /// Send buffer of each socket, bytes.
    #[serde(default = "default_buffer")]
    pub tx_buffer: usize,
    /// Connections at once, at most (beyond: RST).
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Handshakes in progress at once, at most.
    #[serde(default = "default_backlog")]
    pub backlog: usize,
    /// Ports of the run (2 for an inline pair), where ARP questions go.
    #[serde(default = "default_ports")]
    pub ports: u8,
    /// Which flows to `intercept_port` the proxy terminates: all (`"always"`), or those a
    /// policy NF chooses at their SYN (`"on_request"`).
    #[serde(default)]
    pub upgrade: UpgradeMode,
    /// `on_request`: SYNs held at once for a decision, at most (beyond: the flow passes).
    #[serde(default = "default_hold_max")]
    pub hold_max: usize,
    /// `on_request`: longest wait for the policy's answer, ms (then the flow passes).
    #[serde(default = "default_hold_ms")]
    pub hold_ms: u64,
    /// `on_request`: decided flows remembered at once, at most (beyond: new flows pass).
    #[serde(default = "default_max_decisions")]
    pub max_decisions: usize,
}

/// `[stack.proxy] upgrade`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpgradeMode {
    /// Every flow to the intercepted port is terminated.
    #[default]
    Always,
    /// A policy NF chooses per flow, at its SYN.
    OnRequest,
}

fn default_hold_max() -> usize {
    1024
}
fn default_hold_ms() -> u64 {
    500
}
fn default_max_decisions() -> usize {
    65_536
}

fn default_mac() -> String {
    "02:00:00:00:50:01".into()
}
fn default_buffer() -> usize {
    64 * 1024
}
fn default_max_connections() -> usize {
    1024
}
fn default_backlog() -> usize {
    64
}
fn default_ports() -> u8 {
    2
}

/// The checked settings.
#[derive(Clone, Debug)]
struct Settings {
    vips: Vec<Ipv4Addr>,
    port: u16,
    transparent: bool,
    source: Ipv4Addr,
    mac: Mac,
    ports: u8,
    proxy: ProxyConfig,
    /// `upgrade = "on_request"`.
    upgrade: Option<UpgradeConfig>,
}

fn parse_mac(s: &str) -> Option<Mac> {
    let parts: Vec<u8> = s.split(':').map(|p| u8::from_str_radix(p, 16)).collect::<Result<_, _>>().ok()?;
    parts.try_into().ok()
}

const MAX_BUFFER: usize = 16 << 20;

impl ProxyStackConfig {
    fn settings(&self) -> Result<Settings, Vec<StackConfigError>> {
        let key = |k: &str| format!("stack.proxy.{k}");
        let mut errs = Vec::new();
        let mut services = Vec::new();
        for s in &self.services {
            match s.parse::<SocketAddrV4>() {
                Ok(a) => services.push(a),
                Err(_) => {
                    errs.push(StackConfigError::new(key("services"), format!("`{s}` is not an IPv4 ADDRESS:PORT")))
                }
            }
        }
        let port = match (services.first(), self.intercept_port) {
            (Some(_), Some(_)) => {
                errs.push(StackConfigError::new(
                    "stack.proxy",
                    "give `services` (virtual addresses) or `intercept_port` (transparent), not both",
                ));
                0
            }
            (None, None) if self.services.is_empty() => {
                errs.push(StackConfigError::new(
                    "stack.proxy",
                    "give `services = [\"ADDRESS:PORT\"]` or `intercept_port = PORT`: what the proxy terminates",
                ));
                0
            }
            (None, None) => 0,
            (Some(first), None) => {
                if services.iter().any(|s| s.port() != first.port()) {
                    errs.push(StackConfigError::new(
                        key("services"),
                        "all services share one port (one listening port per proxy)",
                    ));
                }
                first.port()
            }
            (None, Some(p)) => p,
        };
        if port == 0 && self.intercept_port == Some(0) {
            errs.push(StackConfigError::new(key("intercept_port"), "must be 1 to 65535"));
        }
        let origin = match &self.origin {
            None => None,
            Some(o) => match o.parse::<SocketAddrV4>() {
                Ok(a) => Some(a),
                Err(_) => {
                    errs.push(StackConfigError::new(key("origin"), format!("`{o}` is not an IPv4 ADDRESS:PORT")));
                    None
                }
            },
        };
        if !self.services.is_empty() && self.origin.is_none() {
            errs.push(StackConfigError::new(
                key("origin"),
                "virtual services need an origin (\"ADDRESS:PORT\" the server legs go to)",
            ));
        }
        if services.iter().any(|v| *v.ip() == self.source) {
            errs.push(StackConfigError::new(key("source"), "must differ from every service address"));
        }
        let mac = parse_mac(&self.mac);
        if mac.is_none() {
            errs.push(StackConfigError::new(key("mac"), format!("`{}` is not a MAC address", self.mac)));
        }
        for (k, v) in [("rx_buffer", self.rx_buffer), ("tx_buffer", self.tx_buffer)] {
            if !(1024..=MAX_BUFFER).contains(&v) {
                errs.push(StackConfigError::new(key(k), format!("must be 1024 to {MAX_BUFFER} bytes, found {v}")));
            }
        }
        for (k, v) in
            [("max_connections", self.max_connections), ("backlog", self.backlog), ("ports", usize::from(self.ports))]
        {
            if v == 0 {
                errs.push(StackConfigError::new(key(k), "must be at least 1"));
            }
        }
        let on_request = self.upgrade == UpgradeMode::OnRequest;
        if on_request && self.intercept_port.is_none() {
            errs.push(StackConfigError::new(
                key("upgrade"),
                "`upgrade = \"on_request\"` needs `intercept_port` (transparent interception): a virtual service's flows are always the proxy's",
            ));
        }
        if on_request {
            for (k, v) in [
                ("hold_max", self.hold_max as u64),
                ("hold_ms", self.hold_ms),
                ("max_decisions", self.max_decisions as u64),
            ] {
                if v == 0 {
                    errs.push(StackConfigError::new(key(k), "must be at least 1"));
                }
            }
            if self.hold_ms > 60_000 {
                errs.push(StackConfigError::new(
                    key("hold_ms"),
                    "must be at most 60000 (a held SYN is a client waiting)",
                ));
            }
        }
        if !errs.is_empty() {
            return Err(errs);
        }
        let mut vips: Vec<Ipv4Addr> = services.iter().map(|s| *s.ip()).collect();
        vips.dedup();
        Ok(Settings {
            vips,
            port,
            transparent: self.intercept_port.is_some(),
            source: self.source,
            mac: mac.unwrap_or_default(),
            ports: self.ports,
            proxy: ProxyConfig {
                address: self.source,
                port,
                rx_buffer: self.rx_buffer,
                tx_buffer: self.tx_buffer,
                max_connections: self.max_connections,
                backlog: self.backlog.min(self.max_connections),
                origin: origin.map(|o| IpEndpoint::new(IpAddress::Ipv4(*o.ip()), o.port())),
                lazy_server: self.endpoint,
            },
            upgrade: on_request.then_some(UpgradeConfig {
                hold_max: self.hold_max,
                hold: Duration::from_millis(self.hold_ms),
                max_decisions: self.max_decisions,
            }),
        })
    }
}

#[derive(Debug)]
struct Parsed {
    settings: Settings,
}

impl StackConfig for Parsed {
    fn build(&self, actor: &str, cx: &StackContext<'_>) -> StackInstance {
        let loopback = Loopback::new();
        let a = ProxyActor::new(actor, self.settings.clone(), Chain::new(cx.proxy_nfs), loopback.clone());
        StackInstance { actor: Box::new(a), streams: None, loopback: Some(loopback) }
    }

    fn sends_frames(&self) -> Option<&'static str> {
        Some("[stack.proxy] terminates TCP and sends frames of its own (docs/proxy.md)")
    }
}

/// The actor's contract: consumes `PKT`, publishes `PKT` (what is not its own); with
/// `on_request` also publishes `FLOW_REQ` and takes `FLOW_DEST` as feedback.
pub fn contract(name: &str, on_request: bool) -> Contract {
    let frames = |event| Publication { port: "frames".into(), event };
    let mut c = Contract {
        name: name.to_string(),
        kind: "proxy".into(),
        subscriptions: vec![Subscription::new("frames", builtin::PKT).consuming()],
        publications: vec![
            frames(builtin::PKT),
            frames(builtin::PKT_TCP),
            frames(builtin::PKT_TCP_SYN),
            frames(builtin::PKT_TCP_FIN),
            frames(builtin::PKT_TCP_RST),
            frames(builtin::PKT_UDP),
            frames(builtin::PKT_ICMP),
        ],
        modifies: Modifies { packets: false, stack_state: true },
        drop_reasons: vec!["terminated by proxy".into()],
    };
    if on_request {
        c.subscriptions.push(Subscription { feedback: true, ..Subscription::new("dest", builtin::FLOW_DEST) });
        c.publications.push(Publication { port: "requests".into(), event: builtin::FLOW_REQ });
        c.drop_reasons.push(DROP_HELD.into());
    }
    c
}

/// Why a held SYN leaves the chain (it is sent on, or put into the proxy, once decided).
const DROP_HELD: &str = "held for the proxy's upgrade decision";

/// Counters of the actor around the proxy.
#[derive(Clone, Debug, Default)]
struct ActorStats {
    frames_in: u64,
    packets_out: u64,
    arp_replies: u64,
    arp_requests: u64,
    unresolved_dropped: u64,
    neighbours_full: u64,
    polls: u64,
    /// Held SYNs sent on unchanged (the flow passes).
    syns_passed_on: u64,
    /// Frames the parser refused, continued (see the module docs).
    passed_malformed: u64,
    /// VLAN-tagged frames, continued.
    passed_vlan_tagged: u64,
    /// IPv4 packets longer than their captured frame, continued.
    passed_clipped: u64,
}

/// What [`ProxyActor::classify`] did with a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Taken {
    /// Not the proxy's: it continues.
    No,
    /// Into the proxy (or an ARP it answered).
    Mine,
    /// A new flow's SYN, held: publish a `FLOW_REQ` for the flow.
    Ask(FlowRef),
    /// A retransmitted SYN of a held flow: dropped.
    Held,
}

/// Held SYNs and decision entries are checked for their time at most this often.
const EXPIRE_EVERY: Duration = Duration::from_millis(10);

/// The split proxy actor (see the module docs).
pub struct ProxyActor {
    contract: Contract,
    s: Settings,
    proxy: SplitProxy,
    nfs: Chain,
    loopback: Arc<Loopback>,
    neighbours: HashMap<Ipv4Addr, (Mac, u8)>,
    asked: HashMap<Ipv4Addr, Instant>,
    waiting: HashMap<Ipv4Addr, VecDeque<Vec<u8>>>,
    epoch: Instant,
    last_poll: Instant,
    queued: usize,
    stats: ActorStats,
    last_expiry: Instant,
    /// `on_request`: the decisions and held SYNs.
    gate: Option<Gate>,
    /// Sequence number and time of the last event (for the `FLOW_REQ`s published).
    last_seq: u64,
    last_ts: u64,
}

impl ProxyActor {
    fn new(name: &str, s: Settings, nfs: Chain, loopback: Arc<Loopback>) -> ProxyActor {
        let epoch = Instant::now();
        let proxy = SplitProxy::new(s.proxy.clone(), smoltcp::time::Instant::from_micros(0));
        ProxyActor {
            contract: contract(name, s.upgrade.is_some()),
            gate: s.upgrade.map(Gate::new),
            last_seq: 0,
            last_ts: 0,
            s,
            proxy,
            nfs,
            loopback,
            neighbours: HashMap::new(),
            asked: HashMap::new(),
            waiting: HashMap::new(),
            epoch,
            last_poll: epoch,
            last_expiry: epoch,
            queued: 0,
            stats: ActorStats::default(),
        }
    }

    fn owns(&self, ip: Ipv4Addr) -> bool {
        ip == self.s.source || self.s.vips.contains(&ip)
    }

    /// Takes frame `f` (in by `port`) when it is the proxy's; false when it continues (for
    /// the tests: no upgrade decisions).
    #[cfg(test)]
    fn on_frame(&mut self, port: u8, f: &[u8]) -> bool {
        self.classify(Instant::now(), port, f, None) == Taken::Mine
    }

    /// Takes frame `f` (in by `port`, of L2/3 flow `flow`) when it is the proxy's.
    fn classify(&mut self, now: Instant, port: u8, f: &[u8], flow: Option<FlowRef>) -> Taken {
        if let Some(a) = wire::arp(f) {
            return if self.on_arp(port, a) { Taken::Mine } else { Taken::No };
        }
        let ip = match ipv4(f) {
            Ok(ip) => ip,
            Err(why) => {
                self.count_unread(why);
                return Taken::No;
            }
        };
        // Interception reads the TCP header: never a fragment's (module docs).
        let tcp = ip.tcp.filter(|_| !ip.fragment);
        let intercepted = self.s.transparent && tcp.is_some_and(|t| t.dst_port == self.s.port);
        let owned = self.owns(ip.dst);
        if !owned && !intercepted {
            return Taken::No;
        }
        if let (true, Some(gate), Some(tcp)) = (intercepted && !owned, self.gate.as_mut(), tcp) {
            let key = Key { src: (ip.src, tcp.src_port), dst: (ip.dst, self.s.port) };
            match gate.on_frame(now, key, tcp.flags, f, port, flow) {
                Step::Pass => return Taken::No,
                Step::Held => return Taken::Held,
                Step::Ask(r) => return Taken::Ask(r),
                Step::Proxy => {}
            }
        }
        self.take(port, f, &ip);
        Taken::Mine
    }

    /// Counts a frame [`ipv4`] did not read (it continues).
    fn count_unread(&mut self, why: Unread) {
        match why {
            Unread::NotIpv4 => {}
            Unread::Malformed => self.stats.passed_malformed += 1,
            Unread::VlanTagged => self.stats.passed_vlan_tagged += 1,
            Unread::Clipped => self.stats.passed_clipped += 1,
        }
    }

    /// Puts IP frame `f` (in by `port`) into the proxy.
    fn take(&mut self, port: u8, f: &[u8], ip: &Ip) {
        if let Some(src_mac) = f.get(6..12).and_then(|m| <Mac>::try_from(m).ok()) {
            self.learn(ip.src, src_mac, port);
        }
        self.stats.frames_in += 1;
        // Always within `f` (`ipv4` checked the length); never a panic regardless.
        let Some(packet) = f.get(ETH_LEN..ETH_LEN + ip.len) else { return };
        if self.proxy.device.inject(packet.to_vec()) {
            self.queued += 1;
        }
    }

    /// The policy's answers (the feedback port) and the held SYNs past their time.
    fn decide(&mut self, now: Instant) {
        let Some(gate) = self.gate.as_mut() else { return };
        let mut into_proxy = Vec::new();
        let mut passed = Vec::new();
        for ev in self.loopback.take_feedback() {
            let Some(flow) = ev.flow else { continue };
            let choice = ProxyChoice::read(&ev).map(|c| c == ProxyChoice::Proxy);
            match gate.on_answer(now, flow, choice) {
                Some((f, port, true)) => into_proxy.push((f, port)),
                Some((f, port, false)) => passed.push((f, port)),
                None => {}
            }
        }
        if now.saturating_duration_since(self.last_expiry) >= EXPIRE_EVERY {
            self.last_expiry = now;
            passed.extend(gate.expire(now));
        }
        for (f, port) in passed {
            // Unchanged, out of the other port of the pair (as the chain would have sent it).
            let egress = if self.s.ports >= 2 { port ^ 1 } else { port };
            self.loopback.send(egress, f);
            self.stats.syns_passed_on += 1;
        }
        for (f, port) in into_proxy {
            // Read once already, when it was held.
            if let Ok(ip) = ipv4(&f) {
                self.take(port, &f, &ip);
            }
        }
    }

    fn on_arp(&mut self, port: u8, a: wire::Arp) -> bool {
        let asked = self.asked.remove(&a.spa).is_some();
        if a.spa != Ipv4Addr::UNSPECIFIED && (asked || self.owns(a.tpa) || self.neighbours.contains_key(&a.spa)) {
            self.learn(a.spa, a.sha, port);
            if let Some(q) = self.waiting.remove(&a.spa) {
                for p in q {
                    // Dropped (as before) when the table was full and `a.spa` not learned.
                    let _ = self.send_ip(a.spa, p);
                }
            }
        }
        if !self.owns(a.tpa) {
            return false;
        }
        if a.op == 1 {
            self.loopback.send(port, wire::build_arp(2, self.s.mac, a.tpa, a.sha, a.spa));
            self.stats.arp_replies += 1;
        }
        true
    }

    /// Remembers where `ip` is (bounded by [`MAX_NEIGHBOURS`]).
    fn learn(&mut self, ip: Ipv4Addr, mac: Mac, port: u8) {
        if self.neighbours.len() >= MAX_NEIGHBOURS && !self.neighbours.contains_key(&ip) {
            self.stats.neighbours_full += 1;
            return;
        }
        self.neighbours.insert(ip, (mac, port));
    }

    /// Sends IP packet `p` to neighbour `dst`; gives `p` back when `dst` is not known.
    fn send_ip(&mut self, dst: Ipv4Addr, p: Vec<u8>) -> Result<(), Vec<u8>> {
        let Some(&(mac, port)) = self.neighbours.get(&dst) else { return Err(p) };
        let mut f = Vec::with_capacity(14 + p.len());
        f.extend_from_slice(&mac);
        f.extend_from_slice(&self.s.mac);
        f.extend_from_slice(&[0x08, 0x00]);
        f.extend_from_slice(&p);
        self.loopback.send(port, f);
        self.stats.packets_out += 1;
        Ok(())
    }

    /// Runs the proxy and sends what it emitted.
    fn poll(&mut self, now: Instant) {
        self.last_poll = now;
        self.queued = 0;
        self.stats.polls += 1;
        let t = smoltcp::time::Instant::from_micros(now.saturating_duration_since(self.epoch).as_micros() as i64);
        self.proxy.poll(t, &mut self.nfs);
        let out: Vec<Vec<u8>> = self.proxy.device.drain().collect();
        for p in out {
            let Some(dst) = p.get(16..20).and_then(|b| <[u8; 4]>::try_from(b).ok()).map(Ipv4Addr::from) else {
                continue;
            };
            // One look-up: the packet comes back when `dst` is not known yet.
            let Err(p) = self.send_ip(dst, p) else { continue };
            if !self.waiting.contains_key(&dst) && self.waiting.len() >= WAITING_ADDRESSES {
                self.stats.unresolved_dropped += 1;
                continue;
            }
            let q = self.waiting.entry(dst).or_default();
            if q.len() >= WAITING_PER_ADDRESS {
                self.stats.unresolved_dropped += 1;
            } else {
                q.push_back(p);
            }
            self.ask(now, dst);
        }
        // Questions nobody answered: their packets go (smoltcp retransmits), counted.
        let stale: Vec<Ipv4Addr> = self
            .asked
            .iter()
            .filter(|(_, t)| now.saturating_duration_since(**t) > ARP_RETRY * 5)
            .map(|(ip, _)| *ip)
            .collect();
        for ip in stale {
            self.asked.remove(&ip);
            if let Some(q) = self.waiting.remove(&ip) {
                self.stats.unresolved_dropped += q.len() as u64;
            }
        }
    }

    /// The stage's idle step: polls when frames wait in the device or [`POLL_EVERY`] has
    /// passed — so smoltcp's timers (retransmissions, FIN timeouts) run with no frame coming.
    fn tick(&mut self, now: Instant) {
        if self.queued > 0 || now.saturating_duration_since(self.last_poll) >= POLL_EVERY {
            self.poll(now);
        }
    }

    fn ask(&mut self, now: Instant, ip: Ipv4Addr) {
        if self.asked.get(&ip).is_some_and(|t| now.saturating_duration_since(*t) < ARP_RETRY) {
            return;
        }
        self.asked.insert(ip, now);
        for port in 0..self.s.ports {
            self.loopback.send(port, wire::build_arp(1, self.s.mac, self.s.source, [0; 6], ip));
            self.stats.arp_requests += 1;
        }
    }
}

/// An untagged Ethernet header's length: where the IP packet starts.
const ETH_LEN: usize = 14;

/// The parts of an IPv4 frame the proxy classifies by.
struct Ip {
    src: Ipv4Addr,
    dst: Ipv4Addr,
    /// The TCP header, when the packet carries one (`None`: another protocol, or a
    /// fragment past the first).
    tcp: Option<TcpHeader>,
    /// Part of a fragmented datagram.
    fragment: bool,
    /// The IP packet's length, `f[ETH_LEN..ETH_LEN + len]` (Ethernet padding may follow).
    len: usize,
}

/// Why [`ipv4`] did not read a frame as one the proxy may take; it continues unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Unread {
    /// Not IPv4 (IPv6, LLDP, ...): not counted.
    NotIpv4,
    /// The parser refused it: `passed_malformed`.
    Malformed,
    /// VLAN-tagged (the proxy answers untagged): `passed_vlan_tagged`.
    VlanTagged,
    /// The IPv4 packet is longer than the captured frame: `passed_clipped`.
    Clipped,
}

/// Reads an Ethernet frame with [`parse`] (the module docs say what the proxy takes).
fn ipv4(f: &[u8]) -> Result<Ip, Unread> {
    let p = parse(LinkType::Ethernet, f).map_err(|_| Unread::Malformed)?;
    if p.vlan.is_some() {
        return Err(Unread::VlanTagged);
    }
    let Some(IpHeader { src: IpAddr::V4(src), dst: IpAddr::V4(dst), fragment, .. }) = p.ip else {
        return Err(Unread::NotIpv4);
    };
    if p.payload_clipped {
        return Err(Unread::Clipped);
    }
    // The total length, which `parse` checked: at least the header, within the frame.
    let total = f.get(ETH_LEN + 2..ETH_LEN + 4).and_then(|b| <[u8; 2]>::try_from(b).ok());
    let len = usize::from(u16::from_be_bytes(total.unwrap_or_default()));
    let tcp = match p.transport {
        Transport::Tcp(t) => Some(t),
        _ => None,
    };
    Ok(Ip { src, dst, tcp, fragment: fragment.is_some(), len })
}

impl Actor for ProxyActor {
    fn contract(&self) -> &Contract {
        &self.contract
    }

    fn handle(&mut self, ev: &mut EventDesc, cx: &mut Context<'_>) -> Verdict {
        self.last_seq = self.last_seq.max(ev.seq);
        self.last_ts = self.last_ts.max(ev.ts_ns);
        let now = Instant::now();
        self.decide(now);
        let Some(h) = ev.packet else { return Verdict::Continue };
        let port = self.loopback.ingress_of(h.index());
        let taken = self.classify(now, port, cx.packet_bytes(h), ev.flow);
        if self.queued >= POLL_BATCH || now.saturating_duration_since(self.last_poll) >= POLL_EVERY {
            self.poll(now);
        }
        match taken {
            Taken::No => Verdict::Continue,
            Taken::Mine => Verdict::Drop(0),
            Taken::Held => Verdict::Drop(1),
            Taken::Ask(flow) => {
                let mut r = EventDesc::new(builtin::FLOW_REQ, cx.me(), self.last_seq, self.last_ts);
                r.packet = ev.packet;
                r.meta = ev.meta;
                r.flow_start = ev.flow_start;
                r.flow = Some(flow);
                cx.publish(r);
                Verdict::Drop(1)
            }
        }
    }

    fn idle(&mut self, _cx: &mut Context<'_>) {
        let now = Instant::now();
        self.decide(now);
        self.tick(now);
    }

    fn counters(&self) -> Vec<(String, u64)> {
        let p = self.proxy.stats();
        let l = &self.loopback;
        let a = &self.stats;
        let mut v: Vec<(String, u64)> = [
            ("accepted", p.accepted),
            ("server_legs", p.server_legs),
            ("refused", p.refused),
            ("closed", p.closed),
            ("connections_open", self.proxy.connections() as u64),
            ("at_limit", p.at_limit),
            ("bytes_to_server", p.bytes_to_server),
            ("bytes_to_client", p.bytes_to_client),
            ("bytes_replied", p.bytes_replied),
            ("backpressure", p.backpressure),
            ("frames_in", a.frames_in),
            ("device_rx_dropped", self.proxy.device.rx_dropped),
            ("packets_out", a.packets_out),
            ("arp_replies", a.arp_replies),
            ("arp_requests", a.arp_requests),
            ("unresolved_dropped", a.unresolved_dropped),
            ("neighbours", self.neighbours.len() as u64),
            ("neighbours_full", a.neighbours_full),
            ("polls", a.polls),
            ("passed_malformed", a.passed_malformed),
            ("passed_vlan_tagged", a.passed_vlan_tagged),
            ("passed_clipped", a.passed_clipped),
            ("frames_sent", l.frames_sent.load(Relaxed)),
            ("frames_not_sent", l.frames_not_sent.load(Relaxed)),
            ("frames_dropped_queue_full", l.frames_dropped.load(Relaxed)),
        ]
        .into_iter()
        .map(|(k, n)| (k.to_string(), n))
        .collect();
        if let Some(g) = &self.gate {
            let s = &g.stats;
            v.extend(
                [
                    ("flows_upgraded_to_proxy", s.flows_proxied),
                    ("flows_passed", s.flows_passed),
                    ("hold_timeouts", s.hold_timeouts),
                    ("syns_held_now", g.held() as u64),
                    ("decision_entries", g.decisions() as u64),
                    ("hold_full", s.hold_full),
                    ("decisions_full", s.decisions_full),
                    ("late_answers", s.late_answers),
                    ("foreign_answers", s.foreign_answers),
                    ("syns_passed_on", a.syns_passed_on),
                ]
                .into_iter()
                .map(|(k, n)| (k.to_string(), n)),
            );
        }
        v.extend(self.nfs.counters());
        v
    }
}

/// `[stack.proxy]`: present only with its table.
pub static STACK: StackKind = StackKind { table: "proxy", actor: "proxy", default: None, parse: parse_stack };

fn parse_stack(v: toml::Value) -> Result<Arc<dyn StackConfig>, Vec<StackConfigError>> {
    let cfg: ProxyStackConfig = crate::registry::parse_table(v, "stack.proxy")?;
    let settings = cfg.settings()?;
    Ok(Arc::new(Parsed { settings }))
}

#[cfg(test)]
mod tests;
