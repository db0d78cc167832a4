//! DPI: identifies the application protocol of every flow from its first bytes and
//! publishes one `EVENT/DPI_DETECT` per flow — the paper's example of an NF that raises a
//! custom µEvent for the NFs after it.
//!
//! ```toml
//! [stack.tcp]                # needed by on = "stream" (the default)
//!
//! [[nf]]
//! name = "dpi"
//! kind = "dpi"
//! on = "stream"              # or "packets"
//! max_bytes = 4096           # bytes kept per direction before giving up (1..=65536)
//! max_packets = 16           # payload-carrying events per flow before giving up
//! output = "dpi.jsonl"       # optional JSON lines, one per flow decided
//! ```
//!
//! **What it detects** is the business of [`classify`](fn@classify) (module [`classify`](mod@classify),
//! pure and I/O-free): HTTP, TLS, SSH, DNS and SMTP, with the host where the protocol names
//! one (HTTP `Host`, TLS SNI, DNS qname, SMTP banner host).
//!
//! **Protocol codes** (the event's `aux`): 1 http, 2 tls, 3 ssh, 4 dns, 5 smtp, 255 unknown.
//!
//! **Inputs.** `on = "stream"`: TCP bytes from the TCP monitor's `DATA_RDY` events (main
//! port `data`; reassembled, in order), UDP from `PKT/UDP` payloads (port `udp`), and the
//! flow's addresses from its `PKT/TCP/SYN` (port `syn`: a connection picked up mid-stream
//! has none, and its record has null addresses). `on = "packets"`: the payloads of `PKT/TCP`
//! and `PKT/UDP` (main port `pkt`) in arrival order — no reassembly, so a retransmission is
//! read twice — and the addresses from the flow's first packet. For UDP only the first
//! datagram of each direction is classified (datagrams are not concatenated).
//!
//! **Per flow** (keyed by the event's flow): bytes are accumulated up to `max_bytes` per
//! direction, and only up to a stream gap ([`actors::Chunk::Gap`]: bytes never received;
//! what follows one is not read into the prefix, so a gap costs nothing); after each addition [`classify`](fn@classify) runs on the whole prefix. When it detects a
//! protocol, or says no known protocol can match, or a bound is hit (`max_bytes` in a
//! direction or `max_packets` payload events: a *likely* protocol — e.g. a TLS ClientHello
//! whose SNI lies beyond the bound — is taken without host, else unknown), or the flow ends
//! with payload seen but no decision (unknown), the NF publishes ONE `EVENT/DPI_DETECT`:
//! `aux` = the code, `flow`/`flow_start` copied from the deciding event, `meta.flags` its
//! `TO_SERVER` bit, `meta.proto` the IP protocol, no packet, and the deciding event's
//! snapshot — whose frontier, when a TCP packet decided, includes that packet's bytes (its
//! `aux`), so that an NF that starts inspecting on the detection can read everything up to
//! and including what decided (`signature_match`'s `after_dpi`, see `signature::gate`).
//! With `side = "both"` a packet's two update events are read once. The flow then goes to a small
//! "done" set and the NF unsubscribes from the flow's `PKT` and `DATA_RDY` events (dynamic
//! subscriptions: they are no longer delivered, counted by the runner as
//! `not_delivered_by_flow_subscription`); any that still arrive are counted as
//! `events_after_detection`. State is
//! forgotten on the flow's end: `FLOW` end from `l23` (port `end`) and, in stream mode,
//! `FLOW/TCP/TERMINATE` (port `term`; a TCP flow's `FLOW` end is ignored there, since the
//! monitor's last `DATA_RDY`s follow it). A flow with no payload gets no event.
//!
//! **JSON lines** (optional), one per decided flow, written at the decision:
//! `{"flow_id", "proto", "app_proto", "host", "src_ip", "src_port", "dest_ip", "dest_port"}`
//! — `flow_id` is the flow's first packet number, `proto` `"TCP"`/`"UDP"`, `app_proto` as in
//! Suricata (`"http"`, `"tls"`, `"ssh"`, `"dns"`, `"smtp"`, `"unknown"`), `src` the initiator.
//!
//! Counters: `detected_<proto>`, `unknown`, `bytes_inspected`, `events_after_detection`,
//! `flows_open`, `records_written`, `stream_read_errors`.

pub mod classify;

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use actors::desc::{meta_flags, snapshot_update, EventDesc, FlowEvent, FlowRef};
use actors::event::{builtin, EventRegistry, EventType};
use actors::matcher::Tuple;
use actors::{
    Actor, ActorError, Chunk, Context, Contract, Modifies, Publication, Subscription, Verdict as ActorVerdict,
};
use rustc_hash::{FxHashMap, FxHashSet};
use serde::{Deserialize, Serialize};

pub use self::classify::{classify, Protocol, Verdict, UNKNOWN_CODE};
use crate::common::{NfCommon, PayloadSource};
use crate::output::{self, proto_name, Endpoints, JsonLines};
use crate::{Kind, NfOptions};

/// The kind's name in the app file.
pub const NAME: &str = "dpi";

/// The kind, for [`KINDS`](crate::KINDS).
pub const KIND: Kind<DpiConfig> = Kind::new();

/// The name of the event type this NF publishes.
pub const DETECT_EVENT: &str = "EVENT/DPI_DETECT";

fn default_max_bytes() -> usize {
    4096
}

fn default_max_packets() -> u32 {
    16
}

/// DPI options.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DpiConfig {
    /// `"stream"` (default) or `"packets"`.
    #[serde(default)]
    pub on: PayloadSource,
    /// Bytes kept per direction before giving up (1..=65536; default 4096).
    #[serde(default = "default_max_bytes")]
    pub max_bytes: usize,
    /// Payload-carrying events per flow before giving up (1..=65536; default 16).
    #[serde(default = "default_max_packets")]
    pub max_packets: u32,
    /// Optional JSON-lines output.
    #[serde(default)]
    pub output: Option<PathBuf>,
    /// The `EVENT/DPI_DETECT` type, as registered when the app was loaded.
    #[serde(skip)]
    pub event: EventType,
}

impl NfOptions for DpiConfig {
    const NAME: &'static str = NAME;

    fn check(&mut self, common: &NfCommon, registry: &mut EventRegistry) -> Result<(), Vec<String>> {
        self.validate(&common.name)?;
        self.event = registry.register(DETECT_EVENT).map_err(|e| vec![common.error(NAME, e)])?;
        Ok(())
    }

    fn output(&self) -> Option<&Path> {
        self.output.as_deref()
    }

    fn set_output(&mut self, path: PathBuf) {
        self.output = Some(path);
    }

    fn build(&self, common: &NfCommon) -> Result<Box<dyn Actor>, String> {
        Ok(Box::new(Dpi::new(common, self.clone())?))
    }
}

impl DpiConfig {
    /// Checks the bounds.
    pub fn validate(&self, nf: &str) -> Result<(), Vec<String>> {
        let mut errs = Vec::new();
        if !(1..=65536).contains(&self.max_bytes) {
            errs.push(format!("nf `{nf}` ({NAME}): key `max_bytes`: {} is not within 1..=65536", self.max_bytes));
        }
        if !(1..=65536).contains(&self.max_packets) {
            errs.push(format!("nf `{nf}` ({NAME}): key `max_packets`: {} is not within 1..=65536", self.max_packets));
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(errs)
        }
    }
}

/// One line of the optional output.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct DpiRecord {
    /// The number of the flow's first packet in the input.
    pub flow_id: u64,
    /// `"TCP"`, `"UDP"` or the protocol number.
    pub proto: String,
    /// `"http"`, `"tls"`, `"ssh"`, `"dns"`, `"smtp"` or `"unknown"`.
    pub app_proto: String,
    /// The host, where the protocol names one.
    pub host: Option<String>,
    /// Initiator (`src_ip`, `src_port`) and responder (`dest_ip`, `dest_port`).
    #[serde(flatten)]
    pub endpoints: Endpoints,
}

output::deref_endpoints!(DpiRecord);

#[derive(Default)]
struct FlowState {
    proto: u8,
    /// (client, client port, server, server port).
    tuple: Option<(IpAddr, u16, IpAddr, u16)>,
    buf: [Vec<u8>; 2],
    /// Per direction: a stream gap was met; the prefix classified ends there.
    gap: [bool; 2],
    /// Payload-carrying events seen.
    events: u32,
    /// The last packet read: `side = "both"` delivers each packet twice (both halves'
    /// updates); its payload is read once.
    last_packet: Option<u64>,
}

/// The DPI NF (see the module docs).
pub struct Dpi {
    contract: Contract,
    cfg: DpiConfig,
    out: Option<JsonLines>,
    /// Keyed by the flow table's slot and generation, not by packet contents: a fast
    /// unkeyed hash is safe.
    flows: FxHashMap<FlowRef, FlowState>,
    done: FxHashSet<FlowRef>,
    detected: [u64; 5],
    unknown: u64,
    bytes_inspected: u64,
    after_detection: u64,
    read_errors: u64,
}

impl Dpi {
    /// A DPI NF (creates its output file, if any).
    pub fn new(common: &NfCommon, cfg: DpiConfig) -> Result<Dpi, String> {
        let out = cfg.output.as_deref().map(|path| JsonLines::create(&common.name, NAME, path)).transpose()?;
        let mut subscriptions = match cfg.on {
            PayloadSource::Stream => {
                let mut s = common.main_port("data", &[builtin::DATA_RDY]);
                s.push(Subscription::new("udp", builtin::PKT_UDP));
                s.push(Subscription::new("syn", builtin::PKT_TCP_SYN));
                s.push(Subscription::new("term", builtin::FLOW_TCP_TERMINATE));
                s
            }
            PayloadSource::Packets => common.main_port("pkt", &[builtin::PKT_TCP, builtin::PKT_UDP]),
        };
        subscriptions.push(Subscription { from: Some("l23".into()), ..Subscription::new("end", builtin::FLOW) });
        let contract = Contract {
            name: common.name.clone(),
            kind: NAME.into(),
            subscriptions,
            publications: vec![Publication { port: "detect".into(), event: cfg.event }],
            modifies: Modifies::default(),
            drop_reasons: vec![],
        };
        Ok(Dpi {
            contract,
            cfg,
            out,
            flows: FxHashMap::default(),
            done: FxHashSet::default(),
            detected: [0; 5],
            unknown: 0,
            bytes_inspected: 0,
            after_detection: 0,
            read_errors: 0,
        })
    }

    /// Publishes the decision about `flow` on event `ev` and moves it to the done set.
    fn decide(
        &mut self,
        flow: FlowRef,
        st: &FlowState,
        result: Option<(Protocol, Option<String>)>,
        ev: &EventDesc,
        cx: &mut Context<'_>,
    ) {
        let mut d = EventDesc::new(self.cfg.event, cx.me(), ev.seq, ev.ts_ns);
        d.flow = Some(flow);
        d.flow_start = ev.flow_start;
        // The deciding event's snapshot: NFs that start inspecting the flow now know how far
        // its streams were at the decision (`signature_match`'s `after_dpi`).
        d.snap = ev.snap;
        if ev.snap.update != snapshot_update::NONE && builtin::PKT_TCP.covers(ev.event_type) {
            // A packet's snapshot frontier is the one before its bytes, `aux` the one after:
            // the stream as of the decision includes the deciding packet.
            let dir = usize::from(!ev.to_server());
            d.snap.frontier[dir] = d.snap.frontier[dir].max(ev.aux);
        }
        d.meta.flags = ev.meta.flags & meta_flags::TO_SERVER;
        d.meta.proto = st.proto;
        d.aux = result.as_ref().map_or(u64::from(UNKNOWN_CODE), |(p, _)| u64::from(p.code()));
        cx.publish(d);
        match &result {
            Some((p, _)) => self.detected[usize::from(p.code() - 1)] += 1,
            None => self.unknown += 1,
        }
        if let Some(out) = self.out.as_mut() {
            let endpoints = match st.tuple {
                Some((c, cp, s, sp)) => Endpoints::new(Some(c), Some(cp), Some(s), Some(sp)),
                None => Endpoints::default(),
            };
            out.write(&DpiRecord {
                flow_id: ev.flow_start,
                proto: proto_name(st.proto),
                app_proto: result.as_ref().map_or("unknown", |(p, _)| p.name()).to_string(),
                host: result.and_then(|(_, h)| h),
                endpoints,
            });
        }
    }

    /// The flow ended: an undecided flow with payload is unknown; forget it.
    fn end_flow(&mut self, flow: FlowRef, ev: &EventDesc, cx: &mut Context<'_>) {
        self.done.remove(&flow);
        if let Some(st) = self.flows.remove(&flow) {
            if st.events > 0 {
                let ports = st.tuple.map_or((0, 0), |t| (t.1, t.3));
                let result = match classify(&st.buf[0], &st.buf[1], st.proto, ports) {
                    Verdict::Detected { protocol, host } => Some((protocol, host)),
                    Verdict::NeedMore { likely: Some(p) } => Some((p, None)),
                    _ => None,
                };
                self.decide(flow, &st, result, ev, cx);
            }
        }
    }
}

impl Actor for Dpi {
    fn contract(&self) -> &Contract {
        &self.contract
    }

    fn handle(&mut self, ev: &mut EventDesc, cx: &mut Context<'_>) -> ActorVerdict {
        let Some(flow) = ev.flow else { return ActorVerdict::Continue };
        let t = ev.event_type;
        if t == builtin::FLOW {
            if let Some(FlowEvent::End(_)) = FlowEvent::decode(ev.aux) {
                // In stream mode the monitor's last DATA_RDYs and TERMINATE follow a TCP end.
                if !(self.cfg.on == PayloadSource::Stream && ev.meta.proto == 6) {
                    self.end_flow(flow, ev, cx);
                }
            }
            return ActorVerdict::Continue;
        }
        if t == builtin::FLOW_TCP_TERMINATE {
            self.end_flow(flow, ev, cx);
            return ActorVerdict::Continue;
        }
        let is_data = t == builtin::DATA_RDY;
        if !is_data && ev.packet.is_none() {
            return ActorVerdict::Continue;
        }
        if self.done.contains(&flow) {
            self.after_detection += 1;
            return ActorVerdict::Continue;
        }
        let max = self.cfg.max_bytes;
        let dir = usize::from(!ev.to_server());
        let st = self.flows.entry(flow).or_default();
        let (mut added, mut kept) = (0usize, 0usize);
        if is_data {
            st.proto = 6;
            let (buf, gap) = (&mut st.buf[dir], &mut st.gap[dir]);
            let res = cx.data_ready(ev, &mut |c| match c {
                // Bytes after a gap do not continue the prefix: not kept.
                Chunk::Data(s) if !*gap => {
                    let n = s.len().min(max.saturating_sub(buf.len()));
                    buf.extend_from_slice(&s[..n]);
                    added += s.len();
                    kept += n;
                }
                Chunk::Data(_) => {}
                Chunk::Gap(_) => *gap = true,
            });
            if res.is_err() {
                self.read_errors += 1;
            }
        } else {
            let Some(view) = cx.view(ev) else { return ActorVerdict::Continue };
            if st.last_packet.replace(ev.seq) == Some(ev.seq) {
                return ActorVerdict::Continue;
            }
            if st.tuple.is_none() {
                let tu = Tuple::of(&view);
                let tu = if ev.to_server() { tu } else { tu.reversed() };
                st.proto = tu.proto;
                if let (Some(c), Some(cp), Some(s), Some(sp)) = (tu.src, tu.src_port, tu.dst, tu.dst_port) {
                    st.tuple = Some((c, cp, s, sp));
                }
            }
            let proto = view.proto();
            // In stream mode TCP packets only name the flow; the bytes come with DATA_RDY.
            let read = proto == 17 || (proto == 6 && self.cfg.on == PayloadSource::Packets);
            let payload = view.payload();
            if read && !payload.is_empty() {
                st.proto = proto;
                let buf = &mut st.buf[dir];
                // UDP: only the first datagram of each direction.
                if proto == 6 || buf.is_empty() {
                    let n = payload.len().min(max.saturating_sub(buf.len()));
                    buf.extend_from_slice(&payload[..n]);
                    kept = n;
                }
                added = payload.len();
            }
        }
        if added == 0 {
            return ActorVerdict::Continue;
        }
        st.events = st.events.saturating_add(1);
        self.bytes_inspected += kept as u64;
        let ports = st.tuple.map_or((0, 0), |t| (t.1, t.3));
        let verdict = classify(&st.buf[0], &st.buf[1], st.proto, ports);
        let at_bound = st.buf.iter().any(|b| b.len() >= max) || st.events >= self.cfg.max_packets;
        let result = match verdict {
            Verdict::Detected { protocol, host } => Some(Some((protocol, host))),
            Verdict::Unknown => Some(None),
            Verdict::NeedMore { likely } if at_bound => Some(likely.map(|p| (p, None))),
            Verdict::NeedMore { .. } => None,
        };
        if let Some(result) = result {
            let st = self.flows.remove(&flow).unwrap_or_default();
            self.done.insert(flow);
            self.decide(flow, &st, result, ev, cx);
            // Decided: the flow's payload events are no longer delivered to this NF (the
            // flow-end events still are, to forget it).
            cx.unsubscribe_flow(ev, builtin::PKT);
            cx.unsubscribe_flow(ev, builtin::DATA_RDY);
        }
        ActorVerdict::Continue
    }

    fn finish(&mut self, _cx: &mut Context<'_>) -> Result<(), ActorError> {
        output::finish(&self.contract.name, self.out.as_mut(), self.read_errors)
    }

    fn counters(&self) -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = Protocol::ALL
            .iter()
            .map(|p| (format!("detected_{}", p.name()), self.detected[usize::from(p.code() - 1)]))
            .collect();
        v.push(("unknown".into(), self.unknown));
        v.push(("bytes_inspected".into(), self.bytes_inspected));
        v.push(("events_after_detection".into(), self.after_detection));
        v.push(("flows_open".into(), self.flows.len() as u64));
        v.push(("records_written".into(), self.out.as_ref().map_or(0, JsonLines::lines)));
        v.push(("stream_read_errors".into(), self.read_errors));
        v
    }
}
