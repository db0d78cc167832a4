//! Logger: one JSON line per event it receives — by default every packet (`PKT`), or, with
//! `only_long_flows = true`, only the events of flows that an upstream Flow_Stats flagged
//! with `EVENT/LONG_FLOW` (the paper's example of an NF that narrows its work by another
//! NF's event).
//!
//! ```toml
//! [[nf]]
//! name = "log"
//! kind = "logger"
//! output = "log.jsonl"       # path of the JSON-lines file (created or truncated)
//! only_long_flows = true     # optional (default false)
//! ```
//!
//! Its main port (`in`) takes `PKT` (`subscribe`/`filter`/`from` in the app file change it,
//! as for every NF). With `only_long_flows = true` it also subscribes to `EVENT/LONG_FLOW`
//! (published by a `flow_stats` NF placed before it, with `long_flow_avg_bytes` set) and
//! to `FLOW` from `l23`; it keeps the set of flagged flows (by `flow_id`), and logs an
//! event only when its flow is in that set: the `EVENT/LONG_FLOW` itself, every later event
//! of the flow, and its `FLOW` end, after which the flow is forgotten. Events of flows not
//! (yet) flagged are skipped and counted (`skipped_not_long`); the packet that crossed the
//! threshold is one of them, since the flag comes right after it.
//!
//! A line:
//!
//! ```json
//! {"seq":17,"event":"PKT/TCP","flow_id":3,"src_ip":"203.0.113.7","src_port":80,
//!  "dest_ip":"192.0.2.1","dest_port":1024,"len":1514,"aux":0}
//! ```
//!
//! `seq` is the number of the input packet that caused the event (so a log is the same in
//! every execution mode, up to line order), `event` the type's name, `flow_id` the number of
//! the flow's first packet (0: no flow); addresses and ports are the packet's own (sender
//! first) and `len` its frame length, present only when the event has a packet; `aux` is
//! the event's data (for `EVENT/LONG_FLOW`: the flow's average frame size). Counters:
//! `logged`, `skipped_not_long`.

use rustc_hash::FxHashSet;
use std::path::PathBuf;

use actors::desc::{EventDesc, FlowEvent};
use actors::event::{builtin, EventRegistry, EventType};
use actors::matcher::Tuple;
use actors::{Actor, ActorError, Context, Contract, Subscription, Verdict};
use serde::{Deserialize, Serialize};

use crate::common::NfCommon;
use crate::flow_stats::LONG_FLOW_EVENT;
use crate::output::{self, Endpoints, JsonLines};
use crate::{Kind, NfOptions};

/// The kind's name in the app file.
pub const NAME: &str = "logger";

/// The kind, for [`KINDS`](crate::KINDS).
pub const KIND: Kind<LoggerConfig> = Kind::new();

/// Logger options.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoggerConfig {
    /// Where the JSON lines go.
    pub output: PathBuf,
    /// Log only the events of flows flagged by `EVENT/LONG_FLOW` (default false).
    #[serde(default)]
    pub only_long_flows: bool,
    /// The event types known when the app was loaded (for the names).
    #[serde(skip)]
    pub registry: EventRegistry,
    /// The `EVENT/LONG_FLOW` type, resolved when `only_long_flows` is set.
    #[serde(skip)]
    pub long_flow_event: Option<EventType>,
}

impl NfOptions for LoggerConfig {
    const NAME: &'static str = NAME;

    fn check(&mut self, common: &NfCommon, registry: &mut EventRegistry) -> Result<(), Vec<String>> {
        if self.only_long_flows {
            let needs = format_args!(
                "only_long_flows needs a `{}` NF with `long_flow_avg_bytes` before it",
                crate::flow_stats::NAME
            );
            let needs = common.error(NAME, needs);
            self.long_flow_event = Some(registry.resolve(LONG_FLOW_EVENT).map_err(|_| vec![needs])?);
        }
        self.registry = registry.clone();
        Ok(())
    }

    crate::output_field!();

    fn build(&self, common: &NfCommon) -> Result<Box<dyn Actor>, String> {
        Ok(Box::new(Logger::new(common, self)?))
    }
}

/// One line of the output.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct LogRecord {
    /// Number of the input packet that caused the event.
    pub seq: u64,
    /// The event type's name.
    pub event: String,
    /// Number of the flow's first packet (0: no flow).
    pub flow_id: u64,
    /// The packet's sender and receiver (each key left out when unknown).
    #[serde(flatten, serialize_with = "Endpoints::skip_unknown")]
    pub endpoints: Endpoints,
    /// Frame length on the wire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub len: Option<u32>,
    /// The event's `aux` word.
    pub aux: u64,
}

output::deref_endpoints!(LogRecord);

/// The Logger NF (see the module docs).
pub struct Logger {
    contract: Contract,
    out: JsonLines,
    registry: EventRegistry,
    long_flow_event: Option<EventType>,
    flagged: FxHashSet<u64>,
    logged: u64,
    skipped: u64,
}

impl Logger {
    /// A Logger (creates its output file).
    pub fn new(common: &NfCommon, cfg: &LoggerConfig) -> Result<Logger, String> {
        let out = JsonLines::create(&common.name, NAME, &cfg.output)?;
        let mut subscriptions = common.main_port("in", &[builtin::PKT]);
        let long_flow_event = if cfg.only_long_flows {
            let t = cfg
                .long_flow_event
                .ok_or_else(|| common.error(NAME, format_args!("only_long_flows needs {LONG_FLOW_EVENT}")))?;
            subscriptions.push(Subscription::new("long_flow", t));
            subscriptions.push(Subscription { from: Some("l23".into()), ..Subscription::new("flows", builtin::FLOW) });
            Some(t)
        } else {
            None
        };
        let contract = common.contract(NAME, subscriptions, vec![]);
        Ok(Logger {
            contract,
            out,
            registry: cfg.registry.clone(),
            long_flow_event,
            flagged: FxHashSet::default(),
            logged: 0,
            skipped: 0,
        })
    }

    fn write(&mut self, ev: &EventDesc, cx: &Context<'_>) {
        let view = cx.view(ev);
        let t = view.as_ref().map(Tuple::of);
        let rec = LogRecord {
            seq: ev.seq,
            event: self.registry.name(ev.event_type),
            flow_id: ev.flow_start,
            endpoints: t.map(|t| Endpoints::new(t.src, t.src_port, t.dst, t.dst_port)).unwrap_or_default(),
            len: ev.packet.map(|_| ev.meta.wire_len),
            aux: ev.aux,
        };
        self.logged += 1;
        self.out.write(&rec);
    }
}

impl Actor for Logger {
    fn contract(&self) -> &Contract {
        &self.contract
    }

    fn handle(&mut self, ev: &mut EventDesc, cx: &mut Context<'_>) -> Verdict {
        let Some(long) = self.long_flow_event else {
            self.write(ev, cx);
            return Verdict::Continue;
        };
        let flow = ev.flow_start;
        if ev.event_type == long && flow != 0 {
            self.flagged.insert(flow);
        }
        let is_end = ev.event_type == builtin::FLOW && matches!(FlowEvent::decode(ev.aux), Some(FlowEvent::End(_)));
        if flow != 0 && self.flagged.contains(&flow) {
            self.write(ev, cx);
        } else {
            self.skipped += 1;
        }
        if is_end {
            self.flagged.remove(&flow);
        }
        Verdict::Continue
    }

    fn finish(&mut self, _cx: &mut Context<'_>) -> Result<(), ActorError> {
        output::finish(&self.contract.name, Some(&mut self.out), 0)
    }

    fn counters(&self) -> Vec<(String, u64)> {
        vec![
            ("logged".to_string(), self.logged),
            ("skipped_not_long".to_string(), self.skipped),
            ("long_flows_open".to_string(), self.flagged.len() as u64),
        ]
    }
}
