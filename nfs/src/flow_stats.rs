//! Flow_Stats: packets and bytes of every flow in each direction, written as one JSON line
//! per flow when the flow ends and, for flows still open, at the end of input.
//!
//! ```toml
//! [[nf]]
//! name = "stats"
//! kind = "flow_stats"
//! output = "flows.jsonl"     # path of the JSON-lines file (created or truncated)
//! long_flow_avg_bytes = 800   # optional: publish EVENT/LONG_FLOW (default: off)
//! long_flow_min_packets = 4   # optional: packets a flow needs first (default 4)
//! ```
//!
//! **`EVENT/LONG_FLOW`.** With `long_flow_avg_bytes = N`, the first time a flow's average
//! packet length (frame bytes / packets, both directions together) is at least `N` — once
//! the flow has at least `long_flow_min_packets` packets — the NF publishes ONE
//! `EVENT/LONG_FLOW` for that flow, right after the packet event that crossed the threshold:
//! `flow` and `flow_start` are the packet's, `aux` is the average in bytes (rounded down), it
//! carries no packet. The publication is declared in the contract only when enabled; the
//! counter `long_flows` counts them. A flow is flagged at most once per flow (a new flow on
//! the same table slot starts afresh).
//!
//! It subscribes to `PKT` (main port; `subscribe`/`filter` in the app file narrow it) and to
//! `FLOW` (flow ends). A flow gets a record only if this NF saw at least one of its packets
//! (a flow whose packets an upstream firewall dropped has none; they are counted as
//! `flows_without_packets`). Bytes are frame bytes on the wire, as in Suricata.
//!
//! Record fields follow Suricata's EVE `flow` records where one exists:
//!
//! ```json
//! {"timestamp":"2023-11-14T22:13:20.001234Z","event_type":"flow","flow_id":4294967299,
//!  "proto":"TCP","src_ip":"192.0.2.1","src_port":1024,"dest_ip":"203.0.113.7","dest_port":80,
//!  "flow":{"pkts_toserver":7,"pkts_toclient":9,"bytes_toserver":845,"bytes_toclient":13002,
//!          "start":"2023-11-14T22:13:20.000000Z","end":"2023-11-14T22:13:20.001234Z",
//!          "reason":"fin"}}
//! ```
//!
//! `src` is the flow's initiator (client), `dest` the responder; `reason` is `timeout`,
//! `fin`, `rst`, `evicted` or `shutdown` (end of input); `timestamp` is the end time;
//! `flow_id` is the number of the flow's first packet in the input: unique within a run and
//! the same whichever stack instance tracked the flow.

use rustc_hash::FxHashMap;
use std::net::IpAddr;
use std::path::PathBuf;

use actors::desc::meta_flags;
use actors::desc::{EventDesc, FlowEvent, FlowRef};
use actors::event::{builtin, EventRegistry, EventType};
use actors::matcher::Tuple;
use actors::{Actor, ActorError, Context, Contract, Modifies, Publication, Subscription, Verdict};
use serde::{Deserialize, Serialize};

use crate::common::NfCommon;
use crate::output::{self, proto_name, rfc3339, Endpoints, JsonLines};
use crate::{Kind, NfOptions};

/// The kind's name in the app file.
pub const NAME: &str = "flow_stats";

/// The kind, for [`KINDS`](crate::KINDS).
pub const KIND: Kind<FlowStatsConfig> = Kind::new();

/// The name of the event type Flow_Stats publishes when `long_flow_avg_bytes` is set.
pub const LONG_FLOW_EVENT: &str = "EVENT/LONG_FLOW";

/// Flow_Stats options.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowStatsConfig {
    /// Where the JSON lines go.
    pub output: PathBuf,
    /// Publish `EVENT/LONG_FLOW` when a flow's average frame size reaches this (off when
    /// absent).
    #[serde(default)]
    pub long_flow_avg_bytes: Option<u64>,
    /// Packets a flow needs before it can be flagged (default 4).
    #[serde(default = "default_long_flow_min_packets")]
    pub long_flow_min_packets: u64,
    /// The `EVENT/LONG_FLOW` type, as registered when the app was loaded.
    #[serde(skip)]
    pub long_flow_event: EventType,
}

impl NfOptions for FlowStatsConfig {
    const NAME: &'static str = NAME;

    fn check(&mut self, common: &NfCommon, registry: &mut EventRegistry) -> Result<(), Vec<String>> {
        self.long_flow_event = registry.register(LONG_FLOW_EVENT).map_err(|e| vec![common.error(NAME, e)])?;
        Ok(())
    }

    crate::output_field!();

    fn build(&self, common: &NfCommon) -> Result<Box<dyn Actor>, String> {
        Ok(Box::new(FlowStats::from_config(common, self)?))
    }
}

fn default_long_flow_min_packets() -> u64 {
    4
}

impl FlowStatsConfig {
    /// A config writing to `output`, without `EVENT/LONG_FLOW`.
    pub fn new(output: PathBuf) -> FlowStatsConfig {
        FlowStatsConfig {
            output,
            long_flow_avg_bytes: None,
            long_flow_min_packets: default_long_flow_min_packets(),
            long_flow_event: EventType::default(),
        }
    }
}

#[derive(Clone, Debug)]
struct FlowAcc {
    flow_start: u64,
    proto: u8,
    client: Option<IpAddr>,
    client_port: Option<u16>,
    server: Option<IpAddr>,
    server_port: Option<u16>,
    pkts: [u64; 2],
    bytes: [u64; 2],
    first_ns: u64,
    last_ns: u64,
    /// `EVENT/LONG_FLOW` was published for this flow.
    long: bool,
}

/// One line of the output.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct FlowRecord {
    /// End time (RFC 3339, µs).
    pub timestamp: String,
    /// Always `"flow"`.
    pub event_type: String,
    /// The number of the flow's first packet in the input.
    pub flow_id: u64,
    /// `TCP`, `UDP`, `ICMP`, `IPv6-ICMP` or the protocol number.
    pub proto: String,
    /// Initiator (`src_ip`, `src_port`) and responder (`dest_ip`, `dest_port`).
    #[serde(flatten)]
    pub endpoints: Endpoints,
    /// Counters.
    pub flow: FlowCounters,
}

/// The `flow` object of a record.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct FlowCounters {
    /// Packets initiator → responder.
    pub pkts_toserver: u64,
    /// Packets responder → initiator.
    pub pkts_toclient: u64,
    /// Frame bytes initiator → responder.
    pub bytes_toserver: u64,
    /// Frame bytes responder → initiator.
    pub bytes_toclient: u64,
    /// First packet time.
    pub start: String,
    /// Last packet time.
    pub end: String,
    /// Why the flow ended.
    pub reason: String,
}

/// The Flow_Stats NF (see the module docs).
pub struct FlowStats {
    contract: Contract,
    out: JsonLines,
    /// Keyed by the flow table's slot and generation, not by packet contents: a fast
    /// unkeyed hash is safe.
    flows: FxHashMap<FlowRef, FlowAcc>,
    without_packets: u64,
    /// (threshold, minimum packets, event type) when `EVENT/LONG_FLOW` is on.
    long_flow: Option<(u64, u64, EventType)>,
    long_flows: u64,
}

impl FlowStats {
    /// A Flow_Stats writing to `path`.
    pub fn new(common: &NfCommon, path: PathBuf) -> Result<FlowStats, String> {
        FlowStats::from_config(common, &FlowStatsConfig::new(path))
    }

    /// A Flow_Stats from its full config (`EVENT/LONG_FLOW` when enabled).
    pub fn from_config(common: &NfCommon, cfg: &FlowStatsConfig) -> Result<FlowStats, String> {
        let out = JsonLines::create(&common.name, NAME, &cfg.output)?;
        let mut subscriptions = common.main_port("in", &[builtin::PKT]);
        // Flow ends from the L2/3 flow table (not the TCP monitor's FLOW/TCP descendants).
        subscriptions.push(Subscription { from: Some("l23".into()), ..Subscription::new("flows", builtin::FLOW) });
        let contract = Contract {
            name: common.name.clone(),
            kind: NAME.into(),
            subscriptions,
            publications: match cfg.long_flow_avg_bytes {
                Some(_) => vec![Publication { port: "long_flow".into(), event: cfg.long_flow_event }],
                None => vec![],
            },
            modifies: Modifies::default(),
            drop_reasons: vec![],
        };
        Ok(FlowStats {
            contract,
            out,
            flows: FxHashMap::default(),
            without_packets: 0,
            long_flow: cfg.long_flow_avg_bytes.map(|n| (n, cfg.long_flow_min_packets, cfg.long_flow_event)),
            long_flows: 0,
        })
    }

    fn emit(&mut self, _id: FlowRef, acc: FlowAcc, reason: &str) {
        let rec = FlowRecord {
            timestamp: rfc3339(acc.last_ns),
            event_type: "flow".into(),
            flow_id: acc.flow_start,
            proto: proto_name(acc.proto),
            endpoints: Endpoints::new(acc.client, acc.client_port, acc.server, acc.server_port),
            flow: FlowCounters {
                pkts_toserver: acc.pkts[0],
                pkts_toclient: acc.pkts[1],
                bytes_toserver: acc.bytes[0],
                bytes_toclient: acc.bytes[1],
                start: rfc3339(acc.first_ns),
                end: rfc3339(acc.last_ns),
                reason: reason.to_string(),
            },
        };
        self.out.write(&rec);
    }
}

impl Actor for FlowStats {
    fn contract(&self) -> &Contract {
        &self.contract
    }

    fn handle(&mut self, ev: &mut EventDesc, cx: &mut Context<'_>) -> Verdict {
        let Some(id) = ev.flow else { return Verdict::Continue };
        if ev.event_type == builtin::FLOW {
            if let Some(FlowEvent::End(reason)) = FlowEvent::decode(ev.aux) {
                match self.flows.remove(&id) {
                    Some(acc) => self.emit(id, acc, reason.as_str()),
                    None => self.without_packets += 1,
                }
            }
            return Verdict::Continue;
        }
        let Some(view) = cx.view(ev) else { return Verdict::Continue };
        let dir = usize::from(!ev.to_server());
        let acc = self.flows.entry(id).or_insert_with(|| {
            let t = Tuple::of(&view);
            let t = if ev.to_server() { t } else { t.reversed() };
            FlowAcc {
                flow_start: ev.flow_start,
                proto: t.proto,
                client: t.src,
                client_port: t.src_port,
                server: t.dst,
                server_port: t.dst_port,
                pkts: [0; 2],
                bytes: [0; 2],
                first_ns: ev.ts_ns,
                last_ns: ev.ts_ns,
                long: false,
            }
        });
        acc.pkts[dir] += 1;
        acc.bytes[dir] += u64::from(ev.meta.wire_len);
        acc.last_ns = acc.last_ns.max(ev.ts_ns);
        if let Some((threshold, min_packets, event)) = self.long_flow {
            let pkts = acc.pkts[0] + acc.pkts[1];
            let avg = (acc.bytes[0] + acc.bytes[1]) / pkts.max(1);
            if !acc.long && pkts >= min_packets && avg >= threshold {
                acc.long = true;
                let proto = acc.proto;
                let mut d = EventDesc::new(event, cx.me(), ev.seq, ev.ts_ns);
                d.flow = Some(id);
                d.flow_start = ev.flow_start;
                d.meta.flags = ev.meta.flags & meta_flags::TO_SERVER;
                d.meta.proto = proto;
                d.aux = avg;
                cx.publish(d);
                self.long_flows += 1;
            }
        }
        Verdict::Continue
    }

    fn finish(&mut self, _cx: &mut Context<'_>) -> Result<(), ActorError> {
        let mut rest: Vec<_> = self.flows.drain().collect();
        rest.sort_by_key(|(id, acc)| (acc.first_ns, *id));
        for (id, acc) in rest {
            self.emit(id, acc, "shutdown");
        }
        output::finish(&self.contract.name, Some(&mut self.out), 0)
    }

    fn counters(&self) -> Vec<(String, u64)> {
        vec![
            ("records_written".to_string(), self.out.lines()),
            ("flows_open".to_string(), self.flows.len() as u64),
            ("flows_without_packets".to_string(), self.without_packets),
            ("long_flows".to_string(), self.long_flows),
        ]
    }
}
