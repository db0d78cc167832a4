//! Signature_Match: an IDS that matches [Snort/Suricata-style rules](crate::rules) against
//! the TCP bytestreams (or packet payloads) and writes EVE-like alert lines.
//!
//! ```toml
//! [stack.tcp]                # stream mode needs the TCP monitor
//!
//! [[nf]]
//! name = "ids"
//! kind = "signature_match"
//! rules = "apps/ids.rules"   # rule file (see nfs::rules for the syntax)
//! output = "alerts.jsonl"
//! on = "stream"              # "stream" (default): DATA_RDY bytes; "packets": PKT/TCP + PKT/UDP payloads
//! max_positions = 4096       # optional: pattern matches remembered per flow and direction
//! ```
//!
//! **Matching.** Every rule's contents go into two Aho-Corasick DFAs (case-sensitive, and
//! ASCII-case-insensitive for `nocase` contents). Each flow and direction keeps its DFA
//! states and its absolute offset between events, and the DFAs are stepped one byte at a
//! time, so a pattern split over any number of segments or events is found at its absolute
//! offset — there is no window to evade. In stream mode the offset is the TCP stream offset
//! (out-of-order segments are matched once the monitor has reassembled them); in packet mode
//! it counts the payload bytes of that direction in arrival order (retransmitted bytes
//! count again, out-of-order segments are scanned as they arrive).
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
//! **Forgetting**: a flow's state goes on `FLOW/TCP/TERMINATE` (stream mode) or on the L2/3
//! `FLOW` end (packet mode), so memory is bounded by live flows.
//!
//! **Output**: it publishes `EVENT/IDS_ALERT` (`aux` = sid) and writes one JSON line per
//! alert: `{"timestamp","flow_id","event_type":"alert","src_ip","src_port","dest_ip",
//! "dest_port","proto","direction":"to_server"|"to_client","alert":{"action":"alert","gid":1,
//! "signature_id","rev","signature","category"}}` — `src` is the sender of the matching
//! bytes.

use std::collections::HashMap;
use std::fs::File;
use std::io::BufWriter;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, UNIX_EPOCH};

use actors::desc::{EventDesc, FlowEvent, FlowRef};
use actors::event::{builtin, EventType};
use actors::matcher::Tuple;
use actors::{Actor, ActorError, Context, Contract, Modifies, Publication, Subscription, Verdict};
use aho_corasick::automaton::{Automaton, StateID};
use aho_corasick::dfa::DFA;
use aho_corasick::{Anchored, MatchKind};
use serde::{Deserialize, Serialize};

use crate::common::NfCommon;
use crate::rules::Rule;

/// What to match.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum On {
    /// The TCP monitor's `DATA_RDY` bytes.
    #[default]
    Stream,
    /// `PKT/TCP` and `PKT/UDP` payloads.
    Packets,
}

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
    pub on: On,
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
    /// `EVENT/IDS_ALERT`, as registered.
    #[serde(skip)]
    pub alert_type: EventType,
}

impl SignatureConfig {
    /// Loads the rule file into `parsed`; errors name the NF.
    pub fn load(&mut self, nf: &str) -> Result<(), Vec<String>> {
        let rules = crate::rules::load_rules(&self.rules)
            .map_err(|es| es.into_iter().map(|e| format!("nf `{nf}` (signature_match): {e}")).collect::<Vec<_>>())?;
        if rules.is_empty() {
            return Err(vec![format!("nf `{nf}` (signature_match): `{}` holds no rules", self.rules.display())]);
        }
        if self.max_positions == 0 {
            return Err(vec![format!("nf `{nf}` (signature_match): `max_positions` must be > 0")]);
        }
        self.parsed = rules;
        Ok(())
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
    /// Sender of the matching bytes.
    pub src_ip: Option<String>,
    /// Its port.
    pub src_port: Option<u16>,
    /// Receiver.
    pub dest_ip: Option<String>,
    /// Its port.
    pub dest_port: Option<u16>,
    /// `TCP`, `UDP` or the number.
    pub proto: String,
    /// `to_server` or `to_client`.
    pub direction: String,
    /// The rule.
    pub alert: AlertInfo,
}

/// The `alert` object.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct AlertInfo {
    /// The rule's action (`alert`).
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

/// One automaton and the global pattern ids of its patterns.
struct Ac {
    dfa: DFA,
    global: Vec<u32>,
}

/// Contents compiled: automata, and per rule content the global pattern id.
struct Matcher {
    acs: Vec<Ac>,
    /// Per rule, per content: global pattern id.
    rule_pats: Vec<Vec<u32>>,
    /// Per global pattern: (length, rules using it).
    pats: Vec<(u64, Vec<u32>)>,
    /// Rules without content.
    bare: Vec<u32>,
    /// The automata's unanchored start states.
    starts: Vec<StateID>,
}

impl Matcher {
    fn new(rules: &[Rule]) -> Result<Matcher, String> {
        let mut ids: HashMap<(bool, Vec<u8>), u32> = HashMap::new();
        let mut lists: [Vec<Vec<u8>>; 2] = [Vec::new(), Vec::new()];
        let mut globals: [Vec<u32>; 2] = [Vec::new(), Vec::new()];
        let mut pats: Vec<(u64, Vec<u32>)> = Vec::new();
        let mut rule_pats = Vec::new();
        let mut bare = Vec::new();
        for (ri, r) in rules.iter().enumerate() {
            let mut v = Vec::new();
            for c in &r.contents {
                let key = (c.nocase, if c.nocase { c.bytes.to_ascii_lowercase() } else { c.bytes.clone() });
                let id = match ids.get(&key) {
                    Some(id) => *id,
                    None => {
                        let id = pats.len() as u32;
                        pats.push((key.1.len() as u64, Vec::new()));
                        lists[usize::from(key.0)].push(key.1.clone());
                        globals[usize::from(key.0)].push(id);
                        ids.insert(key, id);
                        id
                    }
                };
                if !pats[id as usize].1.contains(&(ri as u32)) {
                    pats[id as usize].1.push(ri as u32);
                }
                v.push(id);
            }
            if v.is_empty() {
                bare.push(ri as u32);
            }
            rule_pats.push(v);
        }
        let mut acs = Vec::new();
        for (nocase, (list, global)) in lists.into_iter().zip(globals).enumerate() {
            if list.is_empty() {
                continue;
            }
            let dfa = DFA::builder()
                .match_kind(MatchKind::Standard)
                .ascii_case_insensitive(nocase == 1)
                .build(&list)
                .map_err(|e| format!("building the pattern automaton: {e}"))?;
            acs.push(Ac { dfa, global });
        }
        let starts = acs
            .iter()
            .map(|a| a.dfa.start_state(Anchored::No))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("pattern automaton without an unanchored start: {e}"))?;
        Ok(Matcher { acs, rule_pats, pats, bare, starts })
    }
}

#[derive(Default)]
struct DirState {
    started: bool,
    offset: u64,
    states: Vec<StateID>,
    /// (global pattern, absolute end offset), in scan order.
    positions: Vec<(u32, u64)>,
}

/// A flow's (proto, client, client port, server, server port).
type FlowTuple = (u8, Option<IpAddr>, Option<u16>, Option<IpAddr>, Option<u16>);

struct FlowState {
    flow_start: u64,
    /// DPI said the wanted protocol (with `after_dpi`).
    cleared: bool,
    /// Unsubscribed from the flow's payload events until DPI clears it.
    gated: bool,
    /// (proto, client, client port, server, server port), when a packet was seen.
    tuple: Option<FlowTuple>,
    dirs: [DirState; 2],
    alerted: Vec<u32>,
}

/// The Signature_Match NF (see the module docs).
pub struct SignatureMatch {
    contract: Contract,
    on: On,
    rules: Vec<Rule>,
    m: Matcher,
    max_positions: usize,
    stop_after_alert: bool,
    gate: Option<(EventType, u64)>,
    /// Payload events of flows not (yet) cleared by DPI.
    gated_events: u64,
    alert_type: EventType,
    path: PathBuf,
    out: Option<BufWriter<File>>,
    flows: HashMap<FlowRef, FlowState>,
    error: Option<String>,
    bytes_scanned: u64,
    pattern_matches: u64,
    candidate_matches: u64,
    alerts: u64,
    flows_tracked: u64,
    state_cap_hits: u64,
    discontinuities: u64,
    read_errors: u64,
    /// Scratch: hits of the event being handled.
    hits: Vec<(u32, u64)>,
}

fn rfc3339(ns: u64) -> String {
    humantime::format_rfc3339_micros(UNIX_EPOCH + Duration::from_nanos(ns)).to_string()
}

/// True when the rule's content chain is satisfied by the remembered positions.
fn chain_ok(rule: &Rule, pats: &[u32], plen: &[(u64, Vec<u32>)], positions: &[(u32, u64)]) -> bool {
    let mut prev: Vec<u64> = vec![0];
    for (c, &pid) in rule.contents.iter().zip(pats) {
        let len = plen[pid as usize].0;
        let mut ends: Vec<u64> = positions.iter().filter(|(p, _)| *p == pid).map(|(_, e)| *e).collect();
        ends.sort_unstable();
        ends.dedup();
        let mut next = Vec::new();
        for e in ends {
            let s = e - len;
            if let Some(o) = c.offset {
                if s < o {
                    continue;
                }
            }
            if let Some(d) = c.depth {
                if e > c.offset.unwrap_or(0).saturating_add(d) {
                    continue;
                }
            }
            if c.is_relative() {
                let dist = i128::from(c.distance.unwrap_or(0));
                let hi = i128::from(s) - dist;
                let lo = c.within.map(|w| i128::from(e) - dist - i128::from(w)).unwrap_or(i128::MIN);
                let i = prev.partition_point(|&p| i128::from(p) < lo);
                if prev.get(i).is_none_or(|&p| i128::from(p) > hi) {
                    continue;
                }
            } else if prev.is_empty() {
                continue;
            }
            next.push(e);
        }
        if next.is_empty() {
            return false;
        }
        prev = next;
    }
    true
}

impl SignatureMatch {
    /// A Signature_Match built from its config (creates the output file).
    pub fn new(common: &NfCommon, cfg: &SignatureConfig) -> Result<SignatureMatch, String> {
        let m = Matcher::new(&cfg.parsed).map_err(|e| format!("nf `{}` (signature_match): {e}", common.name))?;
        let file = File::create(&cfg.output).map_err(|e| {
            format!("nf `{}` (signature_match): cannot create output `{}`: {e}", common.name, cfg.output.display())
        })?;
        let mut subscriptions;
        match cfg.on {
            On::Stream => {
                subscriptions = common.main_port("data", &[builtin::DATA_RDY]);
                subscriptions.push(Subscription::new("tuple", builtin::PKT_TCP));
                subscriptions.push(Subscription::new("end", builtin::FLOW_TCP_TERMINATE));
            }
            On::Packets => {
                subscriptions = common.main_port("in", &[builtin::PKT_TCP, builtin::PKT_UDP]);
                subscriptions
                    .push(Subscription { from: Some("l23".into()), ..Subscription::new("end", builtin::FLOW) });
            }
        }
        if let Some((dpi, _)) = cfg.gate {
            subscriptions.push(Subscription::new("dpi", dpi));
        }
        let contract = Contract {
            name: common.name.clone(),
            kind: "signature_match".into(),
            subscriptions,
            publications: vec![Publication { port: "alert".into(), event: cfg.alert_type }],
            modifies: Modifies::default(),
            drop_reasons: vec![],
        };
        Ok(SignatureMatch {
            contract,
            on: cfg.on,
            rules: cfg.parsed.clone(),
            m,
            max_positions: cfg.max_positions,
            stop_after_alert: cfg.stop_after_alert,
            gate: cfg.gate,
            gated_events: 0,
            alert_type: cfg.alert_type,
            path: cfg.output.clone(),
            out: Some(BufWriter::new(file)),
            flows: HashMap::new(),
            error: None,
            bytes_scanned: 0,
            pattern_matches: 0,
            candidate_matches: 0,
            alerts: 0,
            flows_tracked: 0,
            state_cap_hits: 0,
            discontinuities: 0,
            read_errors: 0,
            hits: Vec::new(),
        })
    }

    fn flow_entry<'f>(
        flows: &'f mut HashMap<FlowRef, FlowState>,
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
                tuple: None,
                dirs: [DirState::default(), DirState::default()],
                alerted: Vec::new(),
            }
        })
    }

    fn write(&mut self, rec: &AlertRecord) {
        crate::common::write_line(&mut self.out, &mut self.error, &self.path, rec);
    }

    /// Matches what this event brought (already scanned into `self.hits`) and alerts.
    /// DPI said the flow carries the wanted protocol: inspect it from now on, and in stream
    /// mode scan what the stream already holds, up to the detection's snapshot frontier.
    fn clear_flow(&mut self, flow: FlowRef, ev: &EventDesc, cx: &mut Context<'_>) {
        let fs = Self::flow_entry(&mut self.flows, &mut self.flows_tracked, flow, ev.flow_start);
        fs.cleared = true;
        if std::mem::take(&mut fs.gated) {
            cx.subscribe_flow(ev, builtin::PKT);
            cx.subscribe_flow(ev, builtin::DATA_RDY);
        }
        if self.on != On::Stream {
            return;
        }
        for dir in 0..2 {
            let to = ev.snap.frontier[dir];
            if to == 0 {
                continue;
            }
            let to_server = dir == 0;
            let mut hits = std::mem::take(&mut self.hits);
            hits.clear();
            let m = &self.m;
            let d = &mut self.flows.get_mut(&flow).expect("entry").dirs[dir];
            d.started = true;
            d.states.clone_from(&m.starts);
            d.offset = 0;
            let mut n = 0u64;
            if cx
                .read_stream(flow, to_server, 0, to, &mut |s| {
                    n += s.len() as u64;
                    scan(m, d, s, &mut hits);
                })
                .is_err()
            {
                // Already released: matching starts with the next DATA_RDY instead.
                d.started = false;
            }
            self.bytes_scanned += n;
            self.pattern_matches += hits.len() as u64;
            self.hits = hits;
            let mut e = *ev;
            e.meta.flags = (e.meta.flags & !actors::desc::meta_flags::TO_SERVER)
                | if to_server { actors::desc::meta_flags::TO_SERVER } else { 0 };
            if n > 0 {
                self.evaluate(flow, &e, true, cx);
            }
            self.hits.clear();
        }
    }

    fn evaluate(&mut self, flow: FlowRef, ev: &EventDesc, had_data: bool, cx: &mut Context<'_>) {
        let to_server = ev.to_server();
        let dir = usize::from(!to_server);
        let mut cands: Vec<u32> = Vec::new();
        for (p, _) in &self.hits {
            cands.extend_from_slice(&self.m.pats[*p as usize].1);
        }
        if had_data {
            cands.extend_from_slice(&self.m.bare);
        }
        cands.sort_unstable();
        cands.dedup();
        let Some(fs) = self.flows.get_mut(&flow) else { return };
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
            let rule = &self.rules[ri as usize];
            if !rule.header_matches(proto, (src, sport), (dst, dport), to_server) {
                continue;
            }
            self.candidate_matches += 1;
            if chain_ok(rule, &self.m.rule_pats[ri as usize], &self.m.pats, &d.positions) {
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
        for ri in fired {
            let rule = &self.rules[ri as usize];
            let rec = AlertRecord {
                timestamp: rfc3339(ev.ts_ns),
                flow_id: flow_start,
                event_type: "alert".into(),
                src_ip: src.map(|a| a.to_string()),
                src_port: sport,
                dest_ip: dst.map(|a| a.to_string()),
                dest_port: dport,
                proto: match proto {
                    6 => "TCP".into(),
                    17 => "UDP".into(),
                    n => n.to_string(),
                },
                direction: if to_server { "to_server" } else { "to_client" }.into(),
                alert: AlertInfo {
                    action: rule.action.as_str().into(),
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
            self.write(&rec);
        }
        if stop {
            cx.unsubscribe_flow(ev, builtin::PKT);
            cx.unsubscribe_flow(ev, builtin::DATA_RDY);
        }
    }
}

/// Steps the automata over `bytes`, recording hits at absolute offsets.
fn scan(m: &Matcher, d: &mut DirState, bytes: &[u8], hits: &mut Vec<(u32, u64)>) {
    for &b in bytes {
        d.offset += 1;
        for (ac, st) in m.acs.iter().zip(d.states.iter_mut()) {
            *st = ac.dfa.next_state(Anchored::No, *st, b);
            if ac.dfa.is_match(*st) {
                for i in 0..ac.dfa.match_len(*st) {
                    let pid = ac.dfa.match_pattern(*st, i);
                    hits.push((ac.global[pid.as_usize()], d.offset));
                }
            }
        }
    }
}

impl Actor for SignatureMatch {
    fn contract(&self) -> &Contract {
        &self.contract
    }

    fn handle(&mut self, ev: &mut EventDesc, cx: &mut Context<'_>) -> Verdict {
        let Some(flow) = ev.flow else { return Verdict::Continue };
        let t = ev.event_type;
        if t == builtin::FLOW_TCP_TERMINATE || (self.on == On::Packets && builtin::FLOW.covers(t)) {
            if matches!(FlowEvent::decode(ev.aux), Some(FlowEvent::End(_))) {
                self.flows.remove(&flow);
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
        let to_server = ev.to_server();
        let dir = usize::from(!to_server);
        self.hits.clear();
        let mut hits = std::mem::take(&mut self.hits);
        let mut had_data = false;
        if t == builtin::DATA_RDY {
            let d = &mut Self::flow_entry(&mut self.flows, &mut self.flows_tracked, flow, ev.flow_start).dirs[dir];
            let jump = d.started && d.offset != ev.aux;
            if !d.started || jump {
                d.started = true;
                d.states.clone_from(&self.m.starts);
                d.offset = ev.aux;
            }
            self.discontinuities += u64::from(jump);
            let m = &self.m;
            let d = &mut self.flows.get_mut(&flow).expect("entry").dirs[dir];
            let mut n = 0u64;
            if cx
                .data_ready(ev, &mut |s| {
                    n += s.len() as u64;
                    scan(m, d, s, &mut hits);
                })
                .is_err()
            {
                self.read_errors += 1;
            }
            self.bytes_scanned += n;
            had_data = n > 0;
        } else {
            let Some(view) = cx.view(ev) else {
                self.hits = hits;
                return Verdict::Continue;
            };
            let fs = Self::flow_entry(&mut self.flows, &mut self.flows_tracked, flow, ev.flow_start);
            if fs.tuple.is_none() {
                let tu = Tuple::of(&view);
                let tu = if to_server { tu } else { tu.reversed() };
                fs.tuple = Some((tu.proto, tu.src, tu.src_port, tu.dst, tu.dst_port));
            }
            if self.on == On::Packets {
                let d = &mut fs.dirs[dir];
                if !d.started {
                    d.started = true;
                    d.states.clone_from(&self.m.starts);
                }
                let payload = view.payload();
                scan(&self.m, d, payload, &mut hits);
                self.bytes_scanned += payload.len() as u64;
                had_data = !payload.is_empty();
            }
        }
        self.pattern_matches += hits.len() as u64;
        self.hits = hits;
        if had_data || !self.hits.is_empty() {
            self.evaluate(flow, ev, had_data, cx);
        }
        self.hits.clear();
        Verdict::Continue
    }

    fn finish(&mut self, _cx: &mut Context<'_>) -> Result<(), ActorError> {
        self.flows.clear();
        crate::common::close_output(&mut self.out, &mut self.error, &self.path);
        if self.read_errors > 0 {
            self.error.get_or_insert(format!("{} stream reads failed", self.read_errors));
        }
        match &self.error {
            Some(e) => Err(ActorError { actor: self.contract.name.clone(), message: e.clone() }),
            None => Ok(()),
        }
    }

    fn counters(&self) -> Vec<(String, u64)> {
        vec![
            ("rules".into(), self.rules.len() as u64),
            ("events_before_dpi".into(), self.gated_events),
            ("bytes_scanned".into(), self.bytes_scanned),
            ("pattern_matches".into(), self.pattern_matches),
            ("candidate_matches".into(), self.candidate_matches),
            ("alerts".into(), self.alerts),
            ("flows_tracked".into(), self.flows_tracked),
            ("flows_open".into(), self.flows.len() as u64),
            ("state_cap_hits".into(), self.state_cap_hits),
            ("stream_discontinuities".into(), self.discontinuities),
            ("stream_read_errors".into(), self.read_errors),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hits(rules: &str, chunks: &[&[u8]]) -> Vec<(u32, u64)> {
        let rules = crate::rules::parse_rules(rules, "t").unwrap();
        let m = Matcher::new(&rules).unwrap();
        let mut d = DirState { started: true, offset: 0, states: m.starts.clone(), positions: Vec::new() };
        let mut h = Vec::new();
        for c in chunks {
            scan(&m, &mut d, c, &mut h);
        }
        h.sort_unstable();
        h
    }

    #[test]
    fn overlapping_and_suffix_patterns_all_match_across_chunks() {
        let r = "alert tcp any any -> any any (content:\"abc\"; sid:1;)\n\
                 alert tcp any any -> any any (content:\"bc\"; sid:2;)\n\
                 alert tcp any any -> any any (content:\"BC\"; nocase; sid:3;)\n\
                 alert tcp any any -> any any (content:\"abc\"; content:\"bc\"; sid:4;)\n";
        // patterns: 0 = "abc", 1 = "bc", 2 = "bc" nocase
        assert_eq!(hits(r, &[b"xa", b"b", b"cbC"]), vec![(0, 4), (1, 4), (2, 4), (2, 6)]);
    }

    #[test]
    fn chains_follow_distance_and_within() {
        let rules = crate::rules::parse_rules(
            "alert tcp any any -> any any (content:\"ab\"; offset:1; depth:4; content:\"cd\"; distance:2; within:3; sid:1;)\n",
            "t",
        )
        .unwrap();
        let m = Matcher::new(&rules).unwrap();
        let ok = |pos: &[(u32, u64)]| chain_ok(&rules[0], &m.rule_pats[0], &m.pats, pos);
        // "ab" at [1,3); "cd" must start at >= 5 and end at <= 3 + 2 + 3 = 8.
        assert!(ok(&[(0, 3), (1, 7)]));
        assert!(ok(&[(0, 3), (1, 8)]));
        assert!(!ok(&[(0, 3), (1, 9)]), "outside within");
        assert!(!ok(&[(0, 3), (1, 6)]), "inside distance");
        assert!(!ok(&[(0, 2), (1, 6)]), "before offset");
        assert!(!ok(&[(0, 6), (1, 10)]), "past depth");
        assert!(ok(&[(0, 2), (0, 3), (0, 6), (1, 10), (1, 7)]), "any combination will do");
    }
}
