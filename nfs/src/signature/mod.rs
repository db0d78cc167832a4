//! Signature_Match: an IDS that matches [Snort/Suricata-style rules](rules) against
//! the TCP bytestreams (or packet payloads) and writes EVE-like alert lines.
//!
//! The rule language is [`rules`] and the automata and per-direction scan state are
//! [`matcher`], both free of I/O; this module is the actor around them.
//!
//! ```toml
//! [stack.tcp]                # stream mode needs the TCP monitor
//!
//! [[nf]]
//! name = "ids"
//! kind = "signature_match"
//! rules = "ids.rules"        # rule file, relative to the app file (see nfs::rules for the syntax)
//! output = "alerts.jsonl"
//! on = "stream"              # "stream" (default): DATA_RDY bytes; "packets": PKT/TCP + PKT/UDP payloads
//! max_positions = 4096       # optional: pattern matches remembered per flow and direction
//! passive = false            # true: `drop`/`reject` rules only report "would drop"
//! ```
//!
//! **Matching** ([`matcher`]). Every rule's contents go into two Aho-Corasick DFAs (case-sensitive, and
//! ASCII-case-insensitive for `nocase` contents). Each flow and direction keeps its DFA
//! states and its absolute offset between events, so a pattern split over any number of
//! segments or events is found at its absolute offset — there is no window to evade. Within
//! an event's bytes a SIMD prefilter skips to where a pattern can start and the DFAs are
//! stepped only from there (every byte where such places are dense); the matches are
//! exactly those of stepping every byte (see [`matcher`]). In stream mode the offset is the TCP stream offset
//! (out-of-order segments are matched once the monitor has reassembled them); in packet mode
//! it counts the payload bytes of that direction in arrival order (retransmitted bytes
//! count again, out-of-order segments are scanned as they arrive).
//!
//! A **stream gap** (bytes the TCP monitor never received, [`actors::Chunk::Gap`]) is
//! skipped in O(1), never scanned: the automata restart after it (no pattern matches across
//! a gap) and the offset moves over it; its bytes are counted as `gap_bytes`.
//!
//! Each pattern match's end offset is remembered per flow and direction (at most
//! `max_positions`; beyond that new matches are used for the event at hand and then
//! forgotten, counted as `state_cap_hits`). A rule is a candidate when one of its patterns
//! matched in the event; its content chain is then checked over everything remembered
//! (offset/depth from the stream start, distance/within from the previous content's match
//! end), its header against the flow's addresses (oriented by the event's direction) and its
//! `flow:to_server/to_client` against the direction. A rule with no content is checked on
//! every event with data. Each rule alerts **at most once per flow**.
//!
//! **Addresses in stream mode**: `DATA_RDY` carries no packet, so the NF also subscribes to
//! the monitor's `PKT/TCP` events and remembers each connection's client and server from the
//! first one it sees; until then only `any` addresses and ports match. `udp` rules never
//! match in stream mode.
//!
//! **Dynamic subscriptions** (`after_dpi`): see [`gate`] — the flow is inspected once DPI
//! says its protocol, after a catch-up scan of what its streams hold; load-time checks refuse
//! or warn about configurations under which that cannot work.
//!
//! **Forgetting**: a flow's state goes on `FLOW/TCP/TERMINATE` (stream mode) or on the L2/3
//! `FLOW` end (packet mode), so memory is bounded by live flows.
//!
//! **Verdicts** (Suricata's IPS actions): a `drop` rule's match drops the packet that
//! completed it and every later packet of the flow, both directions (verdict `Drop`, reason
//! `drop sid N: <msg>`), and the flow is no longer inspected; `reject` does the same, reason
//! `reject sid N: <msg>`, and publishes `EVENT/IDS_REJECT` (`aux` = sid; a copy of the event
//! that matched, so with the packet and snapshot when there is one): the request to reset
//! both ends. The TX sink answers it with two TCP resets (`actors::io`, `runtime::ports::rst`):
//! sent on a live inline pair, written to the `-o` capture offline, else counted as not
//! sent (docs/live.md). In **stream mode** the match is normally found on a `DATA_RDY`, which carries no
//! packet and follows its packet's `PKT/TCP` event; so when the rules can drop, the NF scans
//! at each `PKT/TCP` event the bytes that packet added to its stream — from the event's
//! snapshot frontier (before the packet) to its `aux` (after it, set by the TCP monitor) —
//! and drops that packet on a match; the `DATA_RDY` that follows finds those bytes scanned.
//! A match on bytes no packet event brought (gaps skipped at the end, the scan after DPI)
//! blocks the flow from its next packet. With `passive = true` nothing is dropped: matches of
//! `drop`/`reject` rules are written with `"action":"allowed"` and counted as `would_drop`,
//! and the flow stays inspected. A passive live run (`mbox run APP --iface A`) sets it
//! itself ([`NfOptions::set_passive`]).
//!
//! **Output**: it publishes `EVENT/IDS_ALERT` (`aux` = sid) and writes one JSON line per
//! alert: `{"timestamp","flow_id","event_type":"alert","src_ip","src_port","dest_ip",
//! "dest_port","proto","direction":"to_server"|"to_client","alert":{"action","gid":1,
//! "signature_id","rev","signature","category"}}` — `src` is the sender of the matching
//! bytes; `action` is `"alert"` for `alert` rules, and as in Suricata's EVE `"blocked"` for
//! an enforced `drop`/`reject`, `"allowed"` for one in passive mode.

pub mod gate;
mod dfa;
pub mod matcher;
mod prefilter;
pub mod rules;

use rustc_hash::FxHashMap;
use std::net::IpAddr;
use std::path::PathBuf;

use actors::desc::{EventDesc, FlowEvent, FlowRef};
use actors::event::{builtin, EventRegistry, EventType};
use actors::matcher::Tuple;
use actors::{Actor, ActorError, Chunk, Context, Contract, Modifies, Publication, Subscription, Verdict};
use serde::{Deserialize, Serialize};

use self::matcher::{DirState, Hit, Matcher};
use self::rules::Rule;
use crate::common::{NfCommon, PayloadSource};
use crate::dpi::{self, Protocol};
use crate::output::{self, proto_name, rfc3339, Endpoints, JsonLines};
use crate::{Kind, NfOptions};

/// The kind's name in the app file.
pub const NAME: &str = "signature_match";

/// The kind, for [`KINDS`](crate::KINDS).
pub const KIND: Kind<SignatureConfig> = Kind::new();

/// The name of the event type this NF publishes, one per alert.
pub const ALERT_EVENT: &str = "EVENT/IDS_ALERT";

/// The name of the event type this NF publishes for each `reject` match (inline only):
/// a request to reset both ends of the flow, for a port that can send (`aux` = sid).
pub const REJECT_EVENT: &str = "EVENT/IDS_REJECT";

fn default_max_positions() -> usize {
    4096
}

/// Signature_Match options (the rules are loaded by [`configure`](crate::configure)).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureConfig {
    /// The rule file.
    pub rules: PathBuf,
    /// Where the alert lines go.
    pub output: PathBuf,
    /// Stream or packets.
    #[serde(default)]
    pub on: PayloadSource,
    /// Pattern matches remembered per flow and direction.
    #[serde(default = "default_max_positions")]
    pub max_positions: usize,
    /// After a flow's first alert, unsubscribe from its payload events (dynamic
    /// subscriptions: they are no longer delivered; counted by the runner).
    #[serde(default)]
    pub stop_after_alert: bool,
    /// Inspect a flow only once a `dpi` NF (before this one) said it carries this protocol
    /// (`http`, `tls`, `ssh`, `dns`, `smtp`): until then the matcher unsubscribes from the
    /// flow's payload events; on `EVENT/DPI_DETECT` it subscribes again and, in stream mode,
    /// first scans the stream from its start up to the detection's snapshot frontier.
    #[serde(default)]
    pub after_dpi: Option<String>,
    /// `EVENT/DPI_DETECT` and the protocol code, when `after_dpi` is set.
    #[serde(skip)]
    pub gate: Option<(EventType, u64)>,
    /// The parsed rules.
    #[serde(skip)]
    pub parsed: Vec<Rule>,
    /// Report `drop`/`reject` matches as "would drop" (`alert.action` `"allowed"`, counted
    /// as `would_drop`) instead of dropping: for a tap or a trial run of a rule set.
    #[serde(default)]
    pub passive: bool,
    /// `EVENT/IDS_ALERT`, as registered.
    #[serde(skip)]
    pub alert_type: EventType,
    /// `EVENT/IDS_REJECT`, registered when the rules hold a `reject` and `passive` is off.
    #[serde(skip)]
    pub reject_type: Option<EventType>,
}

impl NfOptions for SignatureConfig {
    const NAME: &'static str = NAME;

    fn inputs(&mut self) -> Vec<&mut PathBuf> {
        vec![&mut self.rules]
    }

    /// Passive: no drops and no resets (the `EVENT/IDS_REJECT` type registered by `check`
    /// stays in the registry, unpublished).
    fn set_passive(&mut self) {
        self.passive = true;
        self.reject_type = None;
    }

    fn check(&mut self, common: &NfCommon, registry: &mut EventRegistry) -> Result<(), Vec<String>> {
        let loaded = self.load(&common.name);
        self.alert_type = registry.register(ALERT_EVENT).map_err(|e| vec![common.error(NAME, e)])?;
        let mut errs = loaded.err().unwrap_or_default();
        if !self.passive && self.parsed.iter().any(|r| r.action == rules::Action::Reject) {
            match registry.register(REJECT_EVENT) {
                Ok(t) => self.reject_type = Some(t),
                Err(e) => errs.push(common.error(NAME, e)),
            }
        }
        if let Some(p) = &self.after_dpi {
            let Some(protocol) = Protocol::from_name(p) else {
                let names: Vec<&str> = Protocol::ALL.iter().map(|p| p.name()).collect();
                let msg = format_args!("key `after_dpi`: unknown protocol `{p}` ({})", names.join(", "));
                errs.push(common.error(NAME, msg));
                return Err(errs);
            };
            match registry.resolve(dpi::DETECT_EVENT) {
                Ok(detect) => self.gate = Some((detect, u64::from(protocol.code()))),
                Err(_) => errs.push(common.error(NAME, format_args!("`after_dpi` needs a `{}` NF before it", dpi::NAME))),
            }
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(errs)
        }
    }

    crate::output_field!();

    fn build(&self, common: &NfCommon) -> Result<Box<dyn Actor>, String> {
        Ok(Box::new(SignatureMatch::new(common, self)?))
    }

    /// The rule file and its rules can change; the other keys cannot, nor the drop reasons
    /// (one per `drop`/`reject` rule: part of the linked contract), so a reload may add,
    /// remove and change `alert` rules and change what a blocking rule matches, keeping its
    /// action, sid and msg.
    fn reload_changes(&self, new: &Self, common: &NfCommon) -> Result<Vec<String>, Vec<String>> {
        let mut errs = Vec::new();
        let fixed = [
            ("on", self.on != new.on),
            ("max_positions", self.max_positions != new.max_positions),
            ("stop_after_alert", self.stop_after_alert != new.stop_after_alert),
            ("after_dpi", self.after_dpi != new.after_dpi),
            ("passive", self.passive != new.passive),
        ];
        for (key, changed) in fixed {
            if changed {
                errs.push(common.error(NAME, format_args!("key `{key}` cannot change while the run goes on")));
            }
        }
        let reasons = |c: &SignatureConfig| Verdicts::new(&c.parsed, c.passive, c.reject_type, c.on).drop_reasons;
        let (old_r, new_r) = (reasons(self), reasons(new));
        if old_r != new_r {
            errs.push(common.error(
                NAME,
                format_args!(
                    "the `drop`/`reject` rules would change ([{}] -> [{}]): their drop reasons are part of the linked contract; a reload may change `alert` rules freely and what a blocking rule matches (same action, sid and msg); restart for the rest",
                    old_r.join(", "),
                    new_r.join(", ")
                ),
            ));
        }
        if let Err(e) = Matcher::new(&new.parsed) {
            errs.push(common.error(NAME, e));
        }
        if !errs.is_empty() {
            return Err(errs);
        }
        let mut changes = Vec::new();
        if self.rules != new.rules {
            changes.push(format!("rules: {} -> {}", self.rules.display(), new.rules.display()));
        }
        fn sids(c: &SignatureConfig) -> std::collections::BTreeMap<u32, &Rule> {
            c.parsed.iter().map(|r| (r.sid, r)).collect()
        }
        let (a, b) = (sids(self), sids(new));
        let list = |v: Vec<u32>| v.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
        let added: Vec<u32> = b.keys().filter(|s| !a.contains_key(s)).copied().collect();
        let removed: Vec<u32> = a.keys().filter(|s| !b.contains_key(s)).copied().collect();
        let changed: Vec<u32> = b.iter().filter(|(s, r)| a.get(s).is_some_and(|o| o != *r)).map(|(s, _)| *s).collect();
        for (what, v) in [("added", added), ("removed", removed), ("changed", changed)] {
            if !v.is_empty() {
                changes.push(format!("rules {what}: sid {}", list(v)));
            }
        }
        changes.push(format!("{} rules -> {} rules", self.parsed.len(), new.parsed.len()));
        Ok(changes)
    }
}

impl SignatureConfig {
    /// Loads the rule file into `parsed`; errors name the NF (all of them).
    pub fn load(&mut self, nf: &str) -> Result<(), Vec<String>> {
        let mut errs = Vec::new();
        if self.max_positions == 0 {
            errs.push(format!("nf `{nf}` ({NAME}): key `max_positions`: must be at least 1, found 0"));
        }
        match rules::load_rules(&self.rules) {
            Ok(rules) if rules.is_empty() => {
                errs.push(format!("nf `{nf}` ({NAME}): `{}` holds no rules", self.rules.display()))
            }
            Ok(rules) if rules.iter().filter(|r| r.action.blocks()).count() >= usize::from(u16::MAX) => errs.push(
                format!("nf `{nf}` ({NAME}): `{}` holds more than 65534 `drop`/`reject` rules", self.rules.display()),
            ),
            Ok(rules) if errs.is_empty() => self.parsed = rules,
            Ok(_) => {}
            Err(es) => errs.extend(es.into_iter().map(|e| format!("nf `{nf}` ({NAME}): {e}"))),
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(errs)
        }
    }
}

/// One alert line.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct AlertRecord {
    /// Time of the event that completed the match (RFC 3339, µs).
    pub timestamp: String,
    /// The number of the flow's first packet in the input.
    pub flow_id: u64,
    /// Always `"alert"`.
    pub event_type: String,
    /// Sender (`src_ip`, `src_port`) and receiver (`dest_ip`, `dest_port`) of the matching
    /// bytes.
    #[serde(flatten)]
    pub endpoints: Endpoints,
    /// `TCP`, `UDP` or the number.
    pub proto: String,
    /// `to_server` or `to_client`.
    pub direction: String,
    /// The rule.
    pub alert: AlertInfo,
}

output::deref_endpoints!(AlertRecord);

/// The `alert` object.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct AlertInfo {
    /// `"alert"` for an `alert` rule; for `drop`/`reject` rules, as Suricata's EVE:
    /// `"blocked"` (the flow is dropped from this packet on), or `"allowed"` with
    /// `passive = true` (it would have been).
    pub action: String,
    /// Always 1.
    pub gid: u32,
    /// sid.
    pub signature_id: u32,
    /// rev.
    pub rev: u32,
    /// msg.
    pub signature: String,
    /// classtype.
    pub category: Option<String>,
}

/// What the NF does on a `drop`/`reject` match (see the module docs).
struct Verdicts {
    /// Per rule: its drop reason (index into `drop_reasons`) for blocking rules, inline.
    reason: Vec<Option<u16>>,
    /// `drop sid N: msg` / `reject sid N: msg`, one per blocking rule (none when passive).
    drop_reasons: Vec<String>,
    passive: bool,
    reject_type: Option<EventType>,
    /// Stream mode with blocking rules, inline: a packet's `PKT/TCP` event scans the bytes the
    /// packet added to its stream (up to its `aux`, the frontier after it), so the packet
    /// that completes a match is the one dropped; its `DATA_RDY` then finds them scanned.
    early: bool,
}

impl Verdicts {
    fn new(rules: &[Rule], passive: bool, reject_type: Option<EventType>, on: PayloadSource) -> Verdicts {
        let mut drop_reasons = Vec::new();
        let reason = rules
            .iter()
            .map(|r| {
                if passive || !r.action.blocks() {
                    return None;
                }
                let i = u16::try_from(drop_reasons.len()).unwrap_or(u16::MAX);
                let msg = if r.msg.is_empty() { String::new() } else { format!(": {}", r.msg) };
                drop_reasons.push(format!("{} sid {}{msg}", r.action.as_str(), r.sid));
                Some(i)
            })
            .collect();
        let early = on == PayloadSource::Stream && !drop_reasons.is_empty();
        Verdicts { reason, drop_reasons, passive, reject_type, early }
    }
}

/// A flow's (proto, client, client port, server, server port).
type FlowTuple = (u8, Option<IpAddr>, Option<u16>, Option<IpAddr>, Option<u16>);

struct FlowState {
    flow_start: u64,
    /// DPI said the wanted protocol (with `after_dpi`).
    cleared: bool,
    /// Unsubscribed from the flow's payload events until DPI clears it.
    gated: bool,
    /// Per direction: stream offset scanned when DPI cleared the flow ([`gate`]).
    caught_up: [u64; 2],
    /// Packet mode: the last packet scanned (one scan per packet, see [`gate`]).
    last_packet: Option<u64>,
    /// (proto, client, client port, server, server port), when a packet was seen.
    tuple: Option<FlowTuple>,
    dirs: [DirState; 2],
    alerted: Vec<u32>,
    /// A `drop`/`reject` rule matched: every later packet is dropped with this reason.
    blocked: Option<u16>,
}

/// The Signature_Match NF (see the module docs).
pub struct SignatureMatch {
    contract: Contract,
    on: PayloadSource,
    m: Matcher,
    max_positions: usize,
    stop_after_alert: bool,
    gate: Option<(EventType, u64)>,
    /// The directions the main port takes (`direction`): [to server, to client].
    inspects: [bool; 2],
    /// Payload events of flows not (yet) cleared by DPI.
    gated_events: u64,
    alert_type: EventType,
    verdicts: Verdicts,
    out: JsonLines,
    flows: FxHashMap<FlowRef, FlowState>,
    bytes_scanned: u64,
    /// Stream gap bytes skipped (never scanned).
    gap_bytes: u64,
    pattern_matches: u64,
    candidate_matches: u64,
    alerts: u64,
    flows_tracked: u64,
    state_cap_hits: u64,
    discontinuities: u64,
    read_errors: u64,
    drops: u64,
    rejects: u64,
    would_drop: u64,
    flows_blocked: u64,
    packets_dropped: u64,
    /// Scratch: hits of the event being handled.
    hits: Vec<Hit>,
    /// New generations of the rules ([`crate::reload`]).
    reload: Option<std::sync::Arc<crate::reload::ReloadPort>>,
    /// The generation applied (1: the rules the run started with).
    generation: u32,
    reloads: u64,
}

impl SignatureMatch {
    /// A Signature_Match built from its config (creates the output file).
    pub fn new(common: &NfCommon, cfg: &SignatureConfig) -> Result<SignatureMatch, String> {
        let m = Matcher::new(&cfg.parsed).map_err(|e| common.error(NAME, e))?;
        let out = JsonLines::create(&common.name, NAME, &cfg.output)?;
        let mut subscriptions;
        match cfg.on {
            PayloadSource::Stream => {
                subscriptions = common.main_port("data", &[builtin::DATA_RDY]);
                subscriptions.push(Subscription::new("tuple", builtin::PKT_TCP));
                subscriptions.push(Subscription::new("end", builtin::FLOW_TCP_TERMINATE));
            }
            PayloadSource::Packets => {
                subscriptions = common.main_port("in", &[builtin::PKT_TCP, builtin::PKT_UDP]);
                subscriptions
                    .push(Subscription { from: Some("l23".into()), ..Subscription::new("end", builtin::FLOW) });
            }
        }
        if let Some((dpi, _)) = cfg.gate {
            subscriptions.push(Subscription::new("dpi", dpi));
        }
        let verdicts = Verdicts::new(&cfg.parsed, cfg.passive, cfg.reject_type, cfg.on);
        let mut publications = vec![Publication { port: "alert".into(), event: cfg.alert_type }];
        if let Some(event) = cfg.reject_type {
            publications.push(Publication { port: "reject".into(), event });
        }
        let contract = Contract {
            name: common.name.clone(),
            kind: NAME.into(),
            subscriptions,
            publications,
            modifies: Modifies::default(),
            drop_reasons: verdicts.drop_reasons.clone(),
        };
        Ok(SignatureMatch {
            contract,
            on: cfg.on,
            m,
            max_positions: cfg.max_positions,
            stop_after_alert: cfg.stop_after_alert,
            gate: cfg.gate,
            inspects: [common.to_server != Some(false), common.to_server != Some(true)],
            gated_events: 0,
            alert_type: cfg.alert_type,
            verdicts,
            out,
            flows: FxHashMap::default(),
            bytes_scanned: 0,
            gap_bytes: 0,
            pattern_matches: 0,
            candidate_matches: 0,
            alerts: 0,
            flows_tracked: 0,
            state_cap_hits: 0,
            discontinuities: 0,
            read_errors: 0,
            drops: 0,
            rejects: 0,
            would_drop: 0,
            flows_blocked: 0,
            packets_dropped: 0,
            hits: Vec::new(),
            reload: common.reload.clone(),
            generation: 1,
            reloads: 0,
        })
    }

    /// Takes a new generation of the rules when one is due at this event (see
    /// docs/reconfiguration.md): the new automata apply to each flow from its next event —
    /// to the bytes that event brings, not to bytes scanned before; a rule (by sid) that
    /// already alerted on a flow does not alert on it again; a blocked flow stays blocked.
    fn reload_if_due(&mut self, seq: u64) {
        let Some(g) = self.reload.as_ref().and_then(|p| p.due(self.generation, seq)) else { return };
        self.generation = g.number;
        let Some(cfg) = crate::reload::options_of::<SignatureConfig>(&g) else { return };
        let Ok(m) = Matcher::new(&cfg.parsed) else { return };
        let old_sids: Vec<u32> = self.m.rules().iter().map(|r| r.sid).collect();
        for fs in self.flows.values_mut() {
            for d in &mut fs.dirs {
                d.started = false;
                d.positions.clear();
            }
            fs.alerted = fs
                .alerted
                .iter()
                .filter_map(|i| old_sids.get(*i as usize))
                .filter_map(|sid| m.rules().iter().position(|r| r.sid == *sid))
                .map(|i| i as u32)
                .collect();
        }
        self.m = m;
        self.verdicts = Verdicts::new(&cfg.parsed, cfg.passive, cfg.reject_type, cfg.on);
        self.reloads += 1;
    }

    fn flow_entry<'f>(
        flows: &'f mut FxHashMap<FlowRef, FlowState>,
        tracked: &mut u64,
        flow: FlowRef,
        flow_start: u64,
    ) -> &'f mut FlowState {
        flows.entry(flow).or_insert_with(|| {
            *tracked += 1;
            FlowState {
                flow_start,
                cleared: false,
                gated: false,
                caught_up: [0; 2],
                last_packet: None,
                tuple: None,
                dirs: [DirState::default(), DirState::default()],
                alerted: Vec::new(),
                blocked: None,
            }
        })
    }

    /// Scans what this event brings — a `DATA_RDY`'s bytes; in packet mode a packet's
    /// payload; in stream mode with [early](Verdicts::early) verdicts, the bytes the packet
    /// added to its stream — and evaluates the rules. Returns the drop reason when a
    /// `drop`/`reject` rule fired (inline).
    fn inspect(&mut self, flow: FlowRef, ev: &EventDesc, cx: &mut Context<'_>) -> Option<u16> {
        let to_server = ev.to_server();
        let dir = usize::from(!to_server);
        self.hits.clear();
        let mut hits = std::mem::take(&mut self.hits);
        let had_data = if ev.event_type == builtin::DATA_RDY {
            self.scan_stream(flow, ev, ev.aux, ev.snap.frontier[dir], cx, &mut hits)
        } else if let Some(view) = cx.view(ev) {
            let fs = Self::flow_entry(&mut self.flows, &mut self.flows_tracked, flow, ev.flow_start);
            if fs.tuple.is_none() {
                let tu = Tuple::of(&view);
                let tu = if to_server { tu } else { tu.reversed() };
                fs.tuple = Some((tu.proto, tu.src, tu.src_port, tu.dst, tu.dst_port));
            }
            let on = if self.on == PayloadSource::Packets && self.packet_scanned(flow, ev) { None } else { Some(self.on) };
            match on {
                None => false,
                Some(PayloadSource::Packets) => {
                    let fs = self.flows.get_mut(&flow).expect("entry made above");
                    let d = &mut fs.dirs[dir];
                    if !d.started {
                        self.m.restart(d, d.offset);
                    }
                    let payload = view.payload();
                    self.m.scan(d, payload, &mut hits);
                    self.bytes_scanned += payload.len() as u64;
                    !payload.is_empty()
                }
                // The packet's snapshot frontier is the one before its bytes; `aux` the one after.
                Some(PayloadSource::Stream) if self.verdicts.early => {
                    self.scan_stream(flow, ev, ev.snap.frontier[dir], ev.aux, cx, &mut hits)
                }
                Some(PayloadSource::Stream) => false,
            }
        } else {
            false
        };
        self.pattern_matches += hits.len() as u64;
        self.hits = hits;
        let block = if had_data || !self.hits.is_empty() { self.evaluate(flow, ev, had_data, cx) } else { None };
        self.hits.clear();
        block
    }

    /// Scans bytes `[from, to)` of the event's direction of the stream into `hits`; returns
    /// whether there were data bytes. The automata restart when the stream does not go on
    /// where the last scan ended (counted as a discontinuity); bytes already scanned (by a
    /// packet event's early verdict, or up to a DPI decision) are skipped.
    fn scan_stream(
        &mut self,
        flow: FlowRef,
        ev: &EventDesc,
        mut from: u64,
        to: u64,
        cx: &mut Context<'_>,
        hits: &mut Vec<Hit>,
    ) -> bool {
        let to_server = ev.to_server();
        let d = &mut Self::flow_entry(&mut self.flows, &mut self.flows_tracked, flow, ev.flow_start).dirs
            [usize::from(!to_server)];
        // Bytes already scanned (by a packet event's early verdict, or when DPI cleared the
        // flow up to its snapshot frontier) are not scanned again: the stream is append-only.
        if d.started && from < d.offset {
            from = d.offset;
        }
        if to <= from {
            return false;
        }
        let jump = d.started && d.offset != from;
        if !d.started || jump {
            self.m.restart(d, from);
        }
        self.discontinuities += u64::from(jump);
        let m = &self.m;
        let (mut n, mut gaps) = (0u64, 0u64);
        if cx
            .read_stream(flow, to_server, from, to, &mut |c| match c {
                Chunk::Data(s) => {
                    n += s.len() as u64;
                    m.scan(d, s, hits);
                }
                Chunk::Gap(len) => {
                    m.gap(d, len);
                    gaps += len;
                }
            })
            .is_err()
        {
            self.read_errors += 1;
        }
        self.bytes_scanned += n;
        self.gap_bytes += gaps;
        n > 0
    }

    /// Matches what this event brought (already scanned into `self.hits`), alerts, and
    /// returns the drop reason when a `drop`/`reject` rule fired inline (the flow is then
    /// blocked).
    fn evaluate(&mut self, flow: FlowRef, ev: &EventDesc, had_data: bool, cx: &mut Context<'_>) -> Option<u16> {
        let to_server = ev.to_server();
        let dir = usize::from(!to_server);
        let cands = self.m.candidates(&self.hits, had_data);
        let fs = self.flows.get_mut(&flow)?;
        let d = &mut fs.dirs[dir];
        d.positions.extend_from_slice(&self.hits);
        let mut fired = Vec::new();
        let (proto, src, sport, dst, dport) = match fs.tuple {
            Some((p, c, cp, s, sp)) if to_server => (p, c, cp, s, sp),
            Some((p, c, cp, s, sp)) => (p, s, sp, c, cp),
            None => (6, None, None, None, None),
        };
        for ri in cands {
            if fs.alerted.contains(&ri) {
                continue;
            }
            let rule = &self.m.rules()[ri as usize];
            if !rule.header_matches(proto, (src, sport), (dst, dport), to_server) {
                continue;
            }
            self.candidate_matches += 1;
            if self.m.chain_ok(ri, &d.positions) {
                fs.alerted.push(ri);
                fired.push(ri);
            }
        }
        if d.positions.len() > self.max_positions {
            d.positions.truncate(self.max_positions);
            self.state_cap_hits += 1;
        }
        let flow_start = fs.flow_start;
        let stop = self.stop_after_alert && !fs.alerted.is_empty();
        let mut block = None;
        for ri in fired {
            let rule = &self.m.rules()[ri as usize];
            let action = match (rule.action, self.verdicts.passive) {
                (rules::Action::Alert, _) => "alert",
                (_, true) => {
                    self.would_drop += 1;
                    "allowed"
                }
                (action, false) => {
                    if let (rules::Action::Reject, Some(t)) = (action, self.verdicts.reject_type) {
                        self.rejects += 1;
                        // For a port that can send: reset both ends (the event carries the
                        // packet, when there is one, and the snapshot's sequence numbers).
                        let mut r = *ev;
                        r.event_type = t;
                        r.aux = u64::from(rule.sid);
                        r.flow = Some(flow);
                        r.flow_start = flow_start;
                        cx.publish(r);
                    } else {
                        self.drops += 1;
                    }
                    block = block.or(self.verdicts.reason[ri as usize]);
                    "blocked"
                }
            };
            let rec = AlertRecord {
                timestamp: rfc3339(ev.ts_ns),
                flow_id: flow_start,
                event_type: "alert".into(),
                endpoints: Endpoints::new(src, sport, dst, dport),
                proto: proto_name(proto),
                direction: if to_server { "to_server" } else { "to_client" }.into(),
                alert: AlertInfo {
                    action: action.into(),
                    gid: 1,
                    signature_id: rule.sid,
                    rev: rule.rev,
                    signature: rule.msg.clone(),
                    category: rule.classtype.clone(),
                },
            };
            self.alerts += 1;
            let mut a = EventDesc::new(self.alert_type, 0, ev.seq, ev.ts_ns);
            a.flow = Some(flow);
            a.flow_start = flow_start;
            a.aux = u64::from(rule.sid);
            a.meta.proto = proto;
            a.meta.flags = ev.meta.flags & actors::desc::meta_flags::TO_SERVER;
            cx.publish(a);
            self.out.write(&rec);
        }
        if let (Some(r), Some(fs)) = (block, self.flows.get_mut(&flow)) {
            fs.blocked = Some(r);
            self.flows_blocked += 1;
        }
        if stop {
            // A blocked flow's packets must still come, to be dropped.
            if block.is_none() {
                cx.unsubscribe_flow(ev, builtin::PKT);
            }
            cx.unsubscribe_flow(ev, builtin::DATA_RDY);
        }
        block
    }
}

impl Actor for SignatureMatch {
    fn contract(&self) -> &Contract {
        &self.contract
    }

    fn handle(&mut self, ev: &mut EventDesc, cx: &mut Context<'_>) -> Verdict {
        self.reload_if_due(ev.seq);
        let Some(flow) = ev.flow else { return Verdict::Continue };
        let t = ev.event_type;
        if t == builtin::FLOW_TCP_TERMINATE || (self.on == PayloadSource::Packets && builtin::FLOW.covers(t)) {
            if matches!(FlowEvent::decode(ev.aux), Some(FlowEvent::End(_))) {
                self.flows.remove(&flow);
            }
            return Verdict::Continue;
        }
        if let Some(reason) = self.flows.get(&flow).and_then(|f| f.blocked) {
            // A `drop`/`reject` rule matched earlier: every later packet goes, nothing more is
            // inspected.
            if builtin::PKT.covers(t) {
                self.packets_dropped += 1;
                return Verdict::Drop(reason);
            }
            return Verdict::Continue;
        }
        if let Some((dpi, code)) = self.gate {
            if t == dpi {
                if ev.aux == code {
                    self.clear_flow(flow, ev, cx);
                }
                return Verdict::Continue;
            }
            let fs = Self::flow_entry(&mut self.flows, &mut self.flows_tracked, flow, ev.flow_start);
            if !fs.cleared {
                // Not (yet) a flow of the wanted protocol: learn its tuple, then stop getting
                // its payload events until DPI says so.
                if fs.tuple.is_none() {
                    if let Some(view) = cx.view(ev) {
                        let tu = Tuple::of(&view);
                        let tu = if ev.to_server() { tu } else { tu.reversed() };
                        fs.tuple = Some((tu.proto, tu.src, tu.src_port, tu.dst, tu.dst_port));
                    }
                }
                if !fs.gated {
                    fs.gated = true;
                    cx.unsubscribe_flow(ev, builtin::PKT);
                    cx.unsubscribe_flow(ev, builtin::DATA_RDY);
                }
                self.gated_events += 1;
                return Verdict::Continue;
            }
        }
        let block = self.inspect(flow, ev, cx);
        match block {
            Some(reason) if builtin::PKT.covers(t) => {
                self.packets_dropped += 1;
                Verdict::Drop(reason)
            }
            _ => Verdict::Continue,
        }
    }

    fn finish(&mut self, _cx: &mut Context<'_>) -> Result<(), ActorError> {
        self.flows.clear();
        output::finish(&self.contract.name, Some(&mut self.out), self.read_errors)
    }

    fn counters(&self) -> Vec<(String, u64)> {
        let mut c: Vec<(String, u64)> = vec![
            ("rules".into(), self.m.rules().len() as u64),
            ("events_before_dpi".into(), self.gated_events),
            ("bytes_scanned".into(), self.bytes_scanned),
            ("gap_bytes".into(), self.gap_bytes),
            ("pattern_matches".into(), self.pattern_matches),
            ("candidate_matches".into(), self.candidate_matches),
            ("alerts".into(), self.alerts),
            ("flows_tracked".into(), self.flows_tracked),
            ("flows_open".into(), self.flows.len() as u64),
            ("state_cap_hits".into(), self.state_cap_hits),
            ("stream_discontinuities".into(), self.discontinuities),
            ("stream_read_errors".into(), self.read_errors),
            ("drop_matches".into(), self.drops),
            ("reject_matches".into(), self.rejects),
            ("would_drop".into(), self.would_drop),
            ("flows_blocked".into(), self.flows_blocked),
            ("packets_dropped".into(), self.packets_dropped),
        ];
        if self.reloads > 0 {
            c.push(("reloads".into(), self.reloads));
            c.push(("generation".into(), u64::from(self.generation)));
        }
        c
    }
}
