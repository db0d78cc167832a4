//! The L2/3 µStack actor: parses every frame once, names its flow, and publishes typed
//! packet events and flow lifecycle events.
//!
//! It subscribes to `FRAME` (raw frames from the RX port) and rewrites each into the most
//! specific packet type — `PKT/TCP/RST` over `PKT/TCP/SYN` over `PKT/TCP/FIN` over `PKT/TCP`;
//! `PKT/UDP`; `PKT/ICMP`; plain `PKT` for other IP protocols and non-IP frames — with the
//! header offsets in the descriptor's [`PacketMeta`](actors::PacketMeta), the flow id and the
//! direction (to the server = from the flow's initiator).
//!
//! Flows ([`crate::flow_table`]) are tracked in packet time: `FLOW` start is published just
//! before a flow's first packet event, `FLOW` end (timeout, FIN, RST, eviction) just before
//! the packet during which the table noticed it, and at end of input every remaining flow
//! ends (reason `fin`/`rst` when it had closed, else `shutdown`).
//!
//! **Malformed frames** ([`crate::parse::Malformed`]) are counted by reason. Policy
//! `malformed = "drop"` (the default) drops them with the drop reason
//! `malformed: <reason>`, so they appear in the run summary's drops; `"forward"` passes them
//! on as plain `PKT` events flagged `MALFORMED`, without a flow. Non-IP frames (ARP, LLDP)
//! are not malformed: they continue as plain `PKT` events without a flow.

use actors::desc::{meta_flags, EventDesc, FlowEndReason, FlowEvent, FlowRef};
use actors::event::builtin;
use actors::{Actor, ActorError, Context, Contract, Modifies, Publication, Subscription, Verdict};
use runtime::ports::LinkType;
use serde::Deserialize;
use std::sync::Arc;

use crate::flow::FlowKey;
use crate::flow_table::{Direction, EndReason, EndedFlow, FlowTable, FlowTableConfig};
use crate::parse::{parse, tcp_flags, Malformed, Parsed, Transport};
use crate::registry::{StackConfig, StackConfigError, StackContext, StackInstance, StackKind};

/// Flows ended per step at the end of input ([`FlowTable::drain_some`]).
const DRAIN_STEP: usize = 1024;

/// What to do with a frame the parser rejects.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MalformedPolicy {
    /// Drop it, counted under `malformed: <reason>`.
    #[default]
    Drop,
    /// Forward it as a plain `PKT` event flagged `MALFORMED`, without a flow.
    Forward,
}

/// The `[stack.l23]` section of an app file. Every key is optional.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct L23Config {
    /// Flow table capacity; at capacity the least recently seen flow is evicted (counted).
    pub max_flows: usize,
    /// Idle timeout of TCP flows, ms of packet time.
    pub tcp_idle_ms: u64,
    /// Idle timeout of UDP flows.
    pub udp_idle_ms: u64,
    /// Idle timeout of other flows (ICMP, ...).
    pub other_idle_ms: u64,
    /// How long a TCP flow stays after both FINs or an RST, so its last ACKs belong to it.
    pub closed_linger_ms: u64,
    /// Malformed-frame policy.
    pub malformed: MalformedPolicy,
}

impl Default for L23Config {
    fn default() -> Self {
        let f = FlowTableConfig::default();
        L23Config {
            max_flows: f.max_flows,
            tcp_idle_ms: f.tcp_idle_ms,
            udp_idle_ms: f.udp_idle_ms,
            other_idle_ms: f.other_idle_ms,
            closed_linger_ms: f.closed_linger_ms,
            malformed: MalformedPolicy::Drop,
        }
    }
}

impl L23Config {
    fn table(&self) -> FlowTableConfig {
        FlowTableConfig {
            max_flows: self.max_flows,
            tcp_idle_ms: self.tcp_idle_ms,
            udp_idle_ms: self.udp_idle_ms,
            other_idle_ms: self.other_idle_ms,
            closed_linger_ms: self.closed_linger_ms,
        }
    }

    /// Checks values that serde cannot.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_flows == 0 {
            return Err("max_flows must be at least 1".into());
        }
        Ok(())
    }
}

/// The L2/3 µStack (see the module docs).
pub struct L23Stack {
    contract: Contract,
    link: LinkType,
    policy: MalformedPolicy,
    table: FlowTable,
    ended: Vec<EndedFlow>,
    malformed: Vec<u64>,
    non_ip: u64,
    untracked: u64,
    last_ts: u64,
    last_seq: u64,
    /// Per flow-table slot: the sequence number of its flow's first packet.
    flow_start: Vec<u64>,
    /// Added to flow-table slots in flow ids, so that shards name their flows apart.
    slot_base: u32,
}

/// The packet types the stack publishes.
pub const PUBLISHES: &[actors::EventType] = &[
    builtin::PKT,
    builtin::PKT_TCP,
    builtin::PKT_TCP_SYN,
    builtin::PKT_TCP_FIN,
    builtin::PKT_TCP_RST,
    builtin::PKT_UDP,
    builtin::PKT_ICMP,
    builtin::FLOW,
];

impl L23Stack {
    /// A stack named `name` for frames of link type `link`.
    pub fn new(name: &str, cfg: &L23Config, link: LinkType) -> L23Stack {
        let contract = Contract {
            name: name.to_string(),
            kind: "l23".into(),
            subscriptions: vec![Subscription::new("frames", builtin::FRAME).consuming()],
            publications: PUBLISHES.iter().map(|t| Publication { port: "events".into(), event: *t }).collect(),
            modifies: Modifies { packets: false, stack_state: true },
            drop_reasons: Malformed::ALL.iter().map(|m| format!("malformed: {}", m.as_str())).collect(),
        };
        L23Stack {
            contract,
            link,
            policy: cfg.malformed,
            table: FlowTable::new(cfg.table()),
            ended: Vec::new(),
            malformed: vec![0; Malformed::ALL.len()],
            non_ip: 0,
            untracked: 0,
            last_ts: 0,
            last_seq: 0,
            flow_start: Vec::new(),
            slot_base: 0,
        }
    }

    /// This instance is shard `shard` of several: its flow ids start at `shard * max_flows`
    /// (as slots of one table would), so ids never collide between shards.
    pub fn with_shard(self, shard: u32, max_flows: usize) -> L23Stack {
        self.with_flow_base(shard.saturating_mul(max_flows.min(u32::MAX as usize) as u32))
    }

    /// This instance's flow ids start at `base` (a shard's range; see [`Self::with_shard`]).
    pub fn with_flow_base(mut self, base: u32) -> L23Stack {
        self.slot_base = base;
        self
    }

    fn start_of(&self, index: u32) -> u64 {
        self.flow_start.get(index as usize).copied().unwrap_or(0)
    }

    fn publish_ended(&mut self, cx: &mut Context<'_>, seq: u64, ts_ns: u64) {
        let ended = std::mem::take(&mut self.ended);
        for e in &ended {
            let reason = match e.reason {
                EndReason::IdleTimeout => FlowEndReason::Timeout,
                EndReason::Fin => FlowEndReason::Fin,
                EndReason::Rst => FlowEndReason::Rst,
                EndReason::Evicted => FlowEndReason::Evicted,
                EndReason::Shutdown => FlowEndReason::Shutdown,
            };
            let mut d = EventDesc::new(builtin::FLOW, 0, seq, ts_ns);
            d.flow = Some(FlowRef::new(self.slot_base + e.info.id.index, e.info.id.generation));
            d.flow_start = self.start_of(e.info.id.index);
            d.aux = FlowEvent::End(reason).encode();
            d.meta.proto = e.info.key.proto;
            cx.publish_before(d);
        }
        self.ended = ended;
        self.ended.clear();
    }

    fn fill_meta(ev: &mut EventDesc, p: &Parsed) {
        let m = &mut ev.meta;
        m.l3_offset = p.l3_offset;
        m.l4_offset = p.l4_offset;
        m.payload_offset = p.payload_offset;
        m.payload_len = p.payload_len;
        if p.payload_clipped {
            m.flags |= meta_flags::CLIPPED;
        }
        if let Some(ip) = &p.ip {
            m.ip_version = ip.version;
            m.proto = ip.proto;
        }
        ev.event_type = match p.transport {
            Transport::Tcp(t) => {
                m.tcp_flags = t.flags;
                m.flags |= meta_flags::HAS_PORTS;
                if t.flags & tcp_flags::RST != 0 {
                    builtin::PKT_TCP_RST
                } else if t.flags & tcp_flags::SYN != 0 {
                    builtin::PKT_TCP_SYN
                } else if t.flags & tcp_flags::FIN != 0 {
                    builtin::PKT_TCP_FIN
                } else {
                    builtin::PKT_TCP
                }
            }
            Transport::Udp(_) => {
                m.flags |= meta_flags::HAS_PORTS;
                builtin::PKT_UDP
            }
            Transport::Icmp { v6, kind, .. } => {
                let echo = if v6 { matches!(kind, 128 | 129) } else { matches!(kind, 0 | 8) };
                if echo {
                    m.flags |= meta_flags::HAS_PORTS;
                }
                builtin::PKT_ICMP
            }
            Transport::Other | Transport::None => builtin::PKT,
        };
    }
}

impl Actor for L23Stack {
    fn contract(&self) -> &Contract {
        &self.contract
    }

    fn handle(&mut self, ev: &mut EventDesc, cx: &mut Context<'_>) -> Verdict {
        let Some(h) = ev.packet else { return Verdict::Continue };
        let bytes = cx.packet_bytes(h);
        self.last_ts = self.last_ts.max(ev.ts_ns);
        self.last_seq = self.last_seq.max(ev.seq);
        let parsed = match parse(self.link, bytes) {
            Ok(p) => p,
            Err(m) => {
                let i = Malformed::ALL.iter().position(|x| *x == m).unwrap_or(0);
                self.malformed[i] += 1;
                return match self.policy {
                    MalformedPolicy::Drop => Verdict::Drop(i as u16),
                    MalformedPolicy::Forward => {
                        ev.event_type = builtin::PKT;
                        ev.meta.flags |= meta_flags::MALFORMED;
                        Verdict::Continue
                    }
                };
            }
        };
        Self::fill_meta(ev, &parsed);
        if parsed.ip.is_none() {
            self.non_ip += 1;
        }
        match FlowKey::from_parsed(&parsed) {
            Some((key, side)) => {
                let flags = match parsed.transport {
                    Transport::Tcp(t) => Some(t.flags),
                    _ => None,
                };
                let obs = self.table.observe(key, side, flags, ev.ts_ns, &mut self.ended);
                self.publish_ended(cx, ev.seq, ev.ts_ns);
                let flow = FlowRef::new(self.slot_base + obs.id.index, obs.id.generation);
                let slot = obs.id.index as usize;
                if obs.new {
                    if self.flow_start.len() <= slot {
                        self.flow_start.resize(slot + 1, 0);
                    }
                    self.flow_start[slot] = ev.seq;
                    let mut d = EventDesc::new(builtin::FLOW, 0, ev.seq, ev.ts_ns);
                    d.flow = Some(flow);
                    d.flow_start = ev.seq;
                    d.aux = FlowEvent::Start.encode();
                    d.meta.proto = key.proto;
                    cx.publish_before(d);
                }
                ev.flow = Some(flow);
                ev.flow_start = self.start_of(obs.id.index);
                if obs.dir == Direction::ToServer {
                    ev.meta.flags |= meta_flags::TO_SERVER;
                }
            }
            None => {
                if parsed.ip.is_some() {
                    self.untracked += 1;
                }
                self.table.expire(ev.ts_ns, &mut self.ended);
                self.publish_ended(cx, ev.seq, ev.ts_ns);
            }
        }
        Verdict::Continue
    }

    fn tick(&mut self, seq: u64, ts_ns: u64, cx: &mut Context<'_>) {
        self.last_ts = self.last_ts.max(ts_ns);
        self.table.expire(ts_ns, &mut self.ended);
        self.publish_ended(cx, seq, ts_ns);
    }

    fn finish(&mut self, cx: &mut Context<'_>) -> Result<(), ActorError> {
        while self.finish_step(cx)? {}
        Ok(())
    }

    fn finish_step(&mut self, cx: &mut Context<'_>) -> Result<bool, ActorError> {
        // Flows still open end "at" the last packet of the input (not this instance's last:
        // a shard sees only some packets).
        let seq = cx.end_seq().map_or(self.last_seq, |e| e.saturating_sub(1));
        let ts = self.last_ts;
        // In steps: the ended flows of one step at a time (the stage sends each step's
        // events on before the next), not of every flow at once.
        let more = self.table.drain_some(&mut self.ended, DRAIN_STEP) > 0;
        self.publish_ended(cx, seq, ts);
        Ok(more)
    }

    fn counters(&self) -> Vec<(String, u64)> {
        let s = self.table.stats();
        let mut c = vec![
            ("flows_created".to_string(), s.created),
            ("flows_max_active".to_string(), s.max_active),
            ("flows_ended_timeout".to_string(), s.ended_idle),
            ("flows_ended_fin".to_string(), s.ended_fin),
            ("flows_ended_rst".to_string(), s.ended_rst),
            ("flows_evicted".to_string(), s.evicted),
            ("flows_ended_shutdown".to_string(), s.ended_shutdown),
            ("flows_port_reuse".to_string(), s.port_reuse),
            ("non_ip_frames".to_string(), self.non_ip),
            ("untracked_ip_packets".to_string(), self.untracked),
        ];
        for (m, n) in Malformed::ALL.iter().zip(&self.malformed) {
            if *n > 0 {
                c.push((format!("malformed_{}", m.as_str()), *n));
            }
        }
        c
    }
}

/// The L2/3 µStack's registration ([`crate::registry`]): `[stack.l23]`, always present.
pub static STACK: StackKind =
    StackKind { table: "l23", actor: "l23", default: Some(default_stack), parse: parse_stack };

fn default_stack() -> Arc<dyn StackConfig> {
    Arc::new(L23Config::default())
}

fn parse_stack(v: toml::Value) -> Result<Arc<dyn StackConfig>, Vec<StackConfigError>> {
    let c: L23Config = crate::registry::parse_table(v, "stack.l23")?;
    c.validate().map_err(|e| vec![StackConfigError::new("stack.l23", e)])?;
    Ok(Arc::new(c))
}

impl StackConfig for L23Config {
    fn build(&self, actor: &str, cx: &StackContext<'_>) -> StackInstance {
        let stack = L23Stack::new(actor, self, cx.link).with_flow_base(cx.flow_base);
        StackInstance { actor: Box::new(stack), streams: None, loopback: None }
    }

    fn flow_ids(&self) -> Option<u32> {
        Some(self.max_flows.min(u32::MAX as usize) as u32)
    }
}
