//! The TCP splicer µStack (`[stack.splicer]`): an *active* stack that terminates clients'
//! handshakes for virtual services, asks a policy NF where each connection goes
//! (`FLOW_REQ` → `FLOW_DEST`, [`actors::splice`]) and splices the client's connection to a
//! backend's (the paper's §3.4, Figure 3c). docs/splicer.md has the whole story.
//!
//! * [`cookie`] — SYN cookies: no state before the handshake completes;
//! * [`wire`] — the Ethernet/IPv4/TCP and ARP frames it reads, builds and rewrites;
//! * [`core`](mod@core) — the state machine, free of I/O;
//! * this module — the configuration, the actor around the core, and its registration.
//!
//! The actor consumes `PKT` (after L2/3): frames for its virtual or source addresses (and
//! ARP requests for them) are its own — dropped from the chain with the reason
//! `terminated by splicer`, the frames it makes instead leave through TX's loopback
//! ([`actors::splice::Loopback`]); every other frame continues unchanged (the rest of the
//! link stays a bump in the wire). It publishes `FLOW_REQ` with the client's data packet
//! (so NF filters select by the virtual service) and takes `FLOW_DEST` through its
//! feedback port. Its timers run in [`Actor::idle`] and on every event.
//!
//! The client bytes held before the splice (at most `max_request_bytes` per flow) live in a
//! stream chunk store ([`runtime::streams`]) of its own, the kind the TCP monitor writes:
//! the splicer is its single writer, and the policy NFs read `[0, frontier)` of a
//! `FLOW_REQ` without locks through [`Context::read_stream`](actors::Context::read_stream),
//! from any thread or (when the engine places the store in the run's region) process —
//! the same [`SharedStreams`] access as the monitor's. Sized by `stream_chunk_size` and
//! `stream_chunks` (which is also the number of flows that can hold bytes at once).

pub mod cookie;
pub mod core;
pub mod wire;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actors::contract::StreamAccess;
use actors::desc::EventDesc;
use actors::event::builtin;
use actors::splice::{FlowDest, FlowReq, Loopback};
use actors::{Actor, Context, Contract, Modifies, Publication, Subscription, Verdict};
use serde::Deserialize;

use self::core::{Action, Core, OnBackendFailure, Settings};
use crate::registry::{StackConfig, StackConfigError, StackContext, StackInstance, StackKind};
use crate::tcp_monitor::SharedStreams;
use runtime::streams::{StoreConfig, MAX_CHUNKS, MAX_CHUNK_SIZE};

/// The `[stack.splicer]` table.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplicerConfig {
    /// Virtual services, `"ADDRESS:PORT"` (IPv4).
    pub services: Vec<String>,
    /// Source address of the backend legs (the splicer answers ARP for it).
    pub source: Ipv4Addr,
    /// The Ethernet address the splicer sends from and answers ARP with.
    #[serde(default = "default_mac")]
    pub mac: String,
    /// Largest MSS offered to clients and backends.
    #[serde(default = "default_mss")]
    pub mss: u16,
    /// Client bytes held per flow before `FLOW_DEST` (beyond: RST, counted).
    #[serde(default = "default_max_request")]
    pub max_request_bytes: usize,
    /// Bytes per chunk of the stream store holding the client bytes.
    #[serde(default = "default_stream_chunk_size")]
    pub stream_chunk_size: u32,
    /// Chunks (and flow records) of that store: flows holding bytes at once at most
    /// (beyond, or out of chunks: RST, counted `store_exhausted_resets`).
    #[serde(default = "default_stream_chunks")]
    pub stream_chunks: u32,
    /// Time from the handshake to `FLOW_DEST` (beyond: RST, counted).
    #[serde(default = "default_request_timeout")]
    pub request_timeout_ms: u64,
    /// Time for a backend's SYN-ACK, per SYN.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_ms: u64,
    /// SYNs sent to one backend before it counts as not answering.
    #[serde(default = "default_connect_tries")]
    pub connect_tries: u32,
    /// A flow with no segment for this long is reset on both legs.
    #[serde(default = "default_idle")]
    pub idle_timeout_ms: u64,
    /// How long a flow stays after both FINs (for the last ACKs).
    #[serde(default = "default_linger")]
    pub linger_ms: u64,
    /// `"next"` (the next backend of the `FLOW_DEST`) or `"rst"`.
    #[serde(default)]
    pub on_backend_failure: OnBackendFailure,
    /// Flows at most.
    #[serde(default = "default_max_flows")]
    pub max_flows: usize,
    /// Ports of the run (2 for an inline pair), where ARP requests go.
    #[serde(default = "default_ports")]
    pub ports: u8,
}

fn default_mac() -> String {
    "02:00:00:00:53:01".into()
}
fn default_mss() -> u16 {
    1460
}
fn default_max_request() -> usize {
    16 * 1024
}
fn default_stream_chunk_size() -> u32 {
    4096
}
fn default_stream_chunks() -> u32 {
    8192
}
fn default_request_timeout() -> u64 {
    5_000
}
fn default_connect_timeout() -> u64 {
    1_000
}
fn default_connect_tries() -> u32 {
    2
}
fn default_idle() -> u64 {
    60_000
}
fn default_linger() -> u64 {
    2_000
}
fn default_max_flows() -> usize {
    100_000
}
fn default_ports() -> u8 {
    2
}

fn parse_mac(s: &str) -> Option<wire::Mac> {
    let parts: Vec<u8> = s.split(':').map(|p| u8::from_str_radix(p, 16)).collect::<Result<_, _>>().ok()?;
    parts.try_into().ok()
}

impl SplicerConfig {
    fn settings(&self) -> Result<Settings, Vec<StackConfigError>> {
        let mut errs = Vec::new();
        let mut services = Vec::new();
        for s in &self.services {
            match s.parse::<SocketAddrV4>() {
                Ok(a) => services.push(a),
                Err(_) => errs.push(StackConfigError::new(
                    "stack.splicer.services",
                    format!("`{s}` is not an IPv4 ADDRESS:PORT"),
                )),
            }
        }
        if self.services.is_empty() {
            errs.push(StackConfigError::new("stack.splicer.services", "name at least one virtual service"));
        }
        if services.iter().any(|v| *v.ip() == self.source) {
            errs.push(StackConfigError::new("stack.splicer.source", "must differ from every virtual address"));
        }
        let mac = parse_mac(&self.mac);
        if mac.is_none() {
            errs.push(StackConfigError::new("stack.splicer.mac", format!("`{}` is not a MAC address", self.mac)));
        }
        if self.mss < 536 {
            errs.push(StackConfigError::new("stack.splicer.mss", "must be at least 536"));
        }
        if self.max_request_bytes == 0 || self.max_request_bytes > 1 << 20 {
            errs.push(StackConfigError::new("stack.splicer.max_request_bytes", "must be 1 to 1048576"));
        }
        if self.stream_chunk_size == 0 || self.stream_chunk_size > MAX_CHUNK_SIZE {
            errs.push(StackConfigError::new(
                "stack.splicer.stream_chunk_size",
                format!("must be 1 to {MAX_CHUNK_SIZE}"),
            ));
        }
        if self.stream_chunks == 0 || self.stream_chunks > MAX_CHUNKS {
            errs.push(StackConfigError::new("stack.splicer.stream_chunks", format!("must be 1 to {MAX_CHUNKS}")));
        }
        if self.connect_tries == 0 || self.max_flows == 0 || self.ports == 0 {
            errs.push(StackConfigError::new("stack.splicer", "connect_tries, max_flows and ports must be at least 1"));
        }
        for (k, v) in [
            ("request_timeout_ms", self.request_timeout_ms),
            ("connect_timeout_ms", self.connect_timeout_ms),
            ("idle_timeout_ms", self.idle_timeout_ms),
        ] {
            if v == 0 {
                errs.push(StackConfigError::new(format!("stack.splicer.{k}"), "must be at least 1"));
            }
        }
        if !errs.is_empty() {
            return Err(errs);
        }
        Ok(Settings {
            services,
            source: self.source,
            mac: mac.unwrap_or_default(),
            mss: self.mss,
            max_request_bytes: self.max_request_bytes,
            request_timeout: Duration::from_millis(self.request_timeout_ms),
            connect_timeout: Duration::from_millis(self.connect_timeout_ms),
            connect_tries: self.connect_tries,
            idle_timeout: Duration::from_millis(self.idle_timeout_ms),
            linger: Duration::from_millis(self.linger_ms),
            on_backend_failure: self.on_backend_failure,
            max_flows: self.max_flows,
        })
    }
}

#[derive(Debug)]
struct Parsed {
    cfg: SplicerConfig,
    settings: Settings,
}

impl StackConfig for Parsed {
    fn build(&self, actor: &str, _cx: &StackContext<'_>) -> StackInstance {
        let store = StoreConfig { chunk_size: self.cfg.stream_chunk_size, chunks: self.cfg.stream_chunks };
        let streams = Arc::new(SharedStreams::new(store));
        let loopback = Loopback::new();
        let splicer = Splicer {
            contract: contract(actor),
            core: Core::new(self.settings.clone(), self.cfg.ports, streams.clone()),
            loopback: loopback.clone(),
            out: Vec::new(),
            last_tick: Instant::now(),
            last_seq: 0,
            last_ts: 0,
        };
        StackInstance {
            actor: Box::new(splicer),
            streams: Some(streams as Arc<dyn StreamAccess>),
            loopback: Some(loopback),
        }
    }

    fn sends_frames(&self) -> Option<&'static str> {
        Some("[stack.splicer] is an active stack that owns its connections (mode a would give every NF a private splicer answering the same clients; mode d would shard the legs of one connection apart) (docs/splicer.md)")
    }
}

/// The actor's contract: consumes `PKT`, publishes `PKT` (what is not its own) and
/// `FLOW_REQ`, takes `FLOW_DEST` as feedback.
pub fn contract(name: &str) -> Contract {
    Contract {
        name: name.to_string(),
        kind: "splicer".into(),
        subscriptions: vec![
            Subscription::new("frames", builtin::PKT).consuming(),
            Subscription { feedback: true, ..Subscription::new("dest", builtin::FLOW_DEST) },
        ],
        publications: vec![
            Publication { port: "frames".into(), event: builtin::PKT },
            Publication { port: "frames".into(), event: builtin::PKT_TCP },
            Publication { port: "frames".into(), event: builtin::PKT_TCP_SYN },
            Publication { port: "frames".into(), event: builtin::PKT_TCP_FIN },
            Publication { port: "frames".into(), event: builtin::PKT_TCP_RST },
            Publication { port: "frames".into(), event: builtin::PKT_UDP },
            Publication { port: "frames".into(), event: builtin::PKT_ICMP },
            Publication { port: "requests".into(), event: builtin::FLOW_REQ },
        ],
        modifies: Modifies { packets: false, stack_state: true },
        drop_reasons: vec!["terminated by splicer".into()],
    }
}

/// The splicer actor (see the module docs).
pub struct Splicer {
    contract: Contract,
    core: Core,
    loopback: Arc<Loopback>,
    out: Vec<Action>,
    last_tick: Instant,
    last_seq: u64,
    last_ts: u64,
}

const TICK: Duration = Duration::from_millis(10);

impl Splicer {
    fn feedback(&mut self, now: Instant) {
        for ev in self.loopback.take_feedback() {
            if let Some(f) = ev.flow {
                self.core.on_dest(now, f, FlowDest::read(&ev), &mut self.out);
            }
        }
        if now.saturating_duration_since(self.last_tick) >= TICK {
            self.last_tick = now;
            self.core.tick(now, &mut self.out);
        }
    }

    /// Sends the frames; publishes the `FLOW_REQ`s (with `ev`'s packet when given).
    fn flush(&mut self, ev: Option<&EventDesc>, cx: &mut Context<'_>) {
        for a in self.out.drain(..) {
            match a {
                Action::Frame(port, f) => self.loopback.send(port, f),
                Action::FlowReq(fref, held) => {
                    let mut r = EventDesc::new(builtin::FLOW_REQ, cx.me(), self.last_seq, self.last_ts);
                    if let Some(ev) = ev {
                        r.packet = ev.packet;
                        r.meta = ev.meta;
                        r.flow_start = ev.flow_start;
                    }
                    r.flow = Some(fref);
                    FlowReq { held }.write(&mut r);
                    cx.publish(r);
                }
            }
        }
    }
}

impl Actor for Splicer {
    fn contract(&self) -> &Contract {
        &self.contract
    }

    fn handle(&mut self, ev: &mut EventDesc, cx: &mut Context<'_>) -> Verdict {
        self.last_seq = self.last_seq.max(ev.seq);
        self.last_ts = self.last_ts.max(ev.ts_ns);
        let now = Instant::now();
        self.feedback(now);
        let Some(h) = ev.packet else { return Verdict::Continue };
        let port = self.loopback.ingress_of(h.index());
        let mine = self.core.on_frame(now, port, cx.packet_bytes(h), ev.flow, &mut self.out);
        self.flush(Some(ev), cx);
        if mine {
            Verdict::Drop(0)
        } else {
            Verdict::Continue
        }
    }

    fn idle(&mut self, cx: &mut Context<'_>) {
        self.feedback(Instant::now());
        if !self.out.is_empty() {
            self.flush(None, cx);
        }
    }

    fn counters(&self) -> Vec<(String, u64)> {
        let s = &self.core.stats;
        let mut v: Vec<(&str, u64)> = vec![
            ("cookies_sent", s.cookies_sent),
            ("cookies_validated", s.cookies_validated),
            ("cookies_invalid", s.cookies_invalid),
            ("flow_reqs", s.flow_reqs),
            ("flow_dests", s.flow_dests),
            ("flow_dests_unknown", s.flow_dests_unknown),
            ("spliced", s.spliced),
            ("backend_refused", s.backend_refused),
            ("backend_timeouts", s.backend_timeouts),
            ("backend_retries", s.backend_retries),
            ("no_backend_resets", s.no_backend_resets),
            ("request_limit_resets", s.request_limit_resets),
            ("request_timeouts", s.request_timeouts),
            ("store_exhausted_resets", s.store_exhausted_resets),
            ("idle_timeouts", s.idle_timeouts),
            ("closed_fin", s.closed_fin),
            ("closed_rst", s.closed_rst),
            ("flows_full", s.flows_full),
            ("arp_replies", s.arp_replies),
            ("arp_requests", s.arp_requests),
            ("forwarded", s.forwarded),
            ("replay_resent", s.replay_resent),
            ("flows_open", s.flows),
            ("flows_peak", s.flows_peak),
        ];
        let st = self.core.store_stats();
        v.extend([("stream_chunks_in_use", st.chunks_in_use), ("stream_chunks_high_water", st.chunks_high_water)]);
        use std::sync::atomic::Ordering::Relaxed;
        let l = &self.loopback;
        let extra = [
            ("frames_sent", l.frames_sent.load(Relaxed)),
            ("frames_not_sent", l.frames_not_sent.load(Relaxed)),
            ("frames_dropped_queue_full", l.frames_dropped.load(Relaxed)),
        ];
        v.extend(extra);
        v.into_iter().map(|(k, n)| (k.to_string(), n)).collect()
    }
}

/// `[stack.splicer]`: present only with its table.
pub static STACK: StackKind = StackKind { table: "splicer", actor: "splicer", default: None, parse: parse_stack };

fn parse_stack(v: toml::Value) -> Result<Arc<dyn StackConfig>, Vec<StackConfigError>> {
    let cfg: SplicerConfig = crate::registry::parse_table(v, "stack.splicer")?;
    let settings = cfg.settings()?;
    Ok(Arc::new(Parsed { cfg, settings }))
}
