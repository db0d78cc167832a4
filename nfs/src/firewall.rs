//! Firewall: ordered allow/drop rules on addresses, CIDRs, ports and protocol.
//!
//! ```toml
//! [[nf]]
//! name = "fw"
//! kind = "firewall"
//! default = "allow"          # verdict when no rule matches: "allow" or "drop"
//! stateful = true            # the default; see below
//! rules = [
//!   { action = "drop", proto = "udp", dst_port = 53, name = "no DNS" },
//!   { action = "allow", src = "192.0.2.0/24" },
//!   { action = "drop", dst = "203.0.113.0/24", dst_port = "8000-8100" },
//! ]
//! ```
//!
//! Rules are tried in order; the first whose every key matches decides (keys as in
//! [`FlowMatch`]: `proto`, `src`, `dst`, `src_port`, `dst_port`, plus `action` and an
//! optional `name` for the stats). Unknown keys are errors naming the rule.
//!
//! **Stateful** (default): the rules are evaluated once per flow, on its first packet, in
//! client → server terms (`src` is the initiator), and the verdict applies to every packet
//! of the flow in both directions — "drop connections to port 53" drops the answers too,
//! as an operator expects. The per-flow verdicts live as long as the L2/3 flow (the
//! firewall forgets a flow on its `FLOW` end event), so memory is bounded by the flow
//! table. Packets without a flow (non-IP frames) are judged one by one.
//! **Stateless** (`stateful = false`): every packet is judged on its own header fields —
//! until one is dropped: **a drop stops the flow**, in both modes, so every later packet of
//! that flow (both directions) is dropped with the same reason, whatever the rules say about
//! it (the flow is remembered until its `FLOW` end, like the stateful verdicts).
//!
//! Drop reasons in the run summary are `rule N: <name or rule text>` and `default`.
//!
//! **Passive** (`passive = true`): nothing is dropped; each packet the rules would drop is
//! counted as `would_drop` (and its flow in `flows_dropped`), the per-rule hits as usual —
//! for a tap, or to try a rule set on live traffic first. A passive live run (`mbox run APP
//! --iface A`) sets it for every firewall ([`NfOptions::set_passive`](crate::NfOptions::set_passive)).

use rustc_hash::FxHashMap;

use actors::desc::{EventDesc, FlowEvent, FlowRef};
use actors::event::builtin;
use actors::matcher::{FlowMatch, Tuple};
use actors::{Actor, Context, Contract, Subscription, Verdict};
use serde::Deserialize;

use actors::EventRegistry;

use crate::common::NfCommon;
use crate::{Kind, NfOptions};

/// The kind's name in the app file.
pub const NAME: &str = "firewall";

/// The kind, for [`KINDS`](crate::KINDS).
pub const KIND: Kind<FirewallConfig> = Kind::new();

/// Allow or drop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Let it through.
    Allow,
    /// Drop it.
    Drop,
}

impl<'de> Deserialize<'de> for Action {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Action;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("\"allow\" or \"drop\"")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Action, E> {
                match s {
                    "allow" => Ok(Action::Allow),
                    "drop" => Ok(Action::Drop),
                    _ => Err(E::invalid_value(serde::de::Unexpected::Str(s), &self)),
                }
            }
        }
        d.deserialize_str(V)
    }
}

/// One rule.
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    /// What to do on a match.
    pub action: Action,
    /// Name for the stats.
    pub name: Option<String>,
    /// The predicate.
    pub matches: FlowMatch,
}

/// The firewall's options.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FirewallConfig {
    /// Verdict when no rule matches.
    #[serde(default = "default_action")]
    pub default: Action,
    /// Judge flows (true) or packets (false).
    #[serde(default = "yes")]
    pub stateful: bool,
    /// Count what would be dropped (`would_drop`) instead of dropping.
    #[serde(default)]
    pub passive: bool,
    /// Rules as TOML tables; see [`FirewallConfig::rules`].
    #[serde(default)]
    rules: Vec<toml::Table>,
    /// The rules, parsed when the options are checked.
    #[serde(skip)]
    pub parsed: Vec<Rule>,
}

impl NfOptions for FirewallConfig {
    const NAME: &'static str = NAME;

    fn check(&mut self, common: &NfCommon, _registry: &mut EventRegistry) -> Result<(), Vec<String>> {
        self.parsed = self.rules(&common.name)?;
        Ok(())
    }

    fn set_passive(&mut self) {
        self.passive = true;
    }

    fn build(&self, common: &NfCommon) -> Result<Box<dyn Actor>, String> {
        let fw = Firewall::new(common, self.parsed.clone(), self.default, self.stateful).passive(self.passive);
        Ok(Box::new(Firewall { reload: common.reload.clone(), ..fw }))
    }

    /// The rules and the default can change; `stateful` and `passive` cannot, nor the drop
    /// reasons (one per rule, by its name, and `default`: they are part of the linked
    /// contract), so a reload keeps the number of rules and their names and may change what
    /// each matches and does.
    fn reload_changes(&self, new: &Self, common: &NfCommon) -> Result<Vec<String>, Vec<String>> {
        let mut errs = Vec::new();
        if new.stateful != self.stateful {
            errs.push(common.error(NAME, "key `stateful` cannot change while the run goes on"));
        }
        if new.passive != self.passive {
            errs.push(common.error(NAME, "key `passive` cannot change while the run goes on"));
        }
        let (old_r, new_r) = (drop_reasons(&self.parsed), drop_reasons(&new.parsed));
        if old_r != new_r {
            errs.push(common.error(
                NAME,
                format_args!(
                    "the drop reasons would change ({} -> {}): they are part of the linked contract, so a reload keeps the number of rules and their names (change what a rule matches, its action or the default; restart to add, remove or rename rules)",
                    old_r.join(", "),
                    new_r.join(", ")
                ),
            ));
        }
        if !errs.is_empty() {
            return Err(errs);
        }
        let mut changes = Vec::new();
        for (i, (a, b)) in self.parsed.iter().zip(&new.parsed).enumerate() {
            if a != b {
                changes.push(format!("rule {} ({}): {:?} {} -> {:?} {}", i + 1, new_r[i], a.action, describe(&a.matches), b.action, describe(&b.matches)));
            }
        }
        if new.default != self.default {
            changes.push(format!("default: {:?} -> {:?}", self.default, new.default));
        }
        Ok(changes)
    }
}

/// The drop reasons of a rule list: `rule N: NAME` (or what it matches), then `default`.
fn drop_reasons(rules: &[Rule]) -> Vec<String> {
    let mut r: Vec<String> = rules
        .iter()
        .enumerate()
        .map(|(i, r)| format!("rule {}: {}", i + 1, r.name.clone().unwrap_or_else(|| describe(&r.matches))))
        .collect();
    r.push("default".into());
    r
}

fn default_action() -> Action {
    Action::Allow
}
fn yes() -> bool {
    true
}

/// One rule as written: `action`, an optional `name`, and the [`FlowMatch`] keys.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    action: Action,
    name: Option<String>,
    proto: Option<actors::matcher::Proto>,
    src: Option<actors::matcher::Networks>,
    dst: Option<actors::matcher::Networks>,
    src_port: Option<actors::matcher::Ports>,
    dst_port: Option<actors::matcher::Ports>,
}

impl FirewallConfig {
    /// Parses the rule tables; every bad key of every rule is reported.
    pub fn rules(&self, nf: &str) -> Result<Vec<Rule>, Vec<String>> {
        let mut out = Vec::new();
        let mut errs = Vec::new();
        for (i, t) in self.rules.iter().enumerate() {
            let (rule, e) = crate::common::deserialize_all::<RawRule>(t.clone(), "");
            errs.extend(e.into_iter().map(|e| format!("nf `{nf}` ({NAME}): rule {}: {e}", i + 1)));
            if let Some(r) = rule {
                let matches =
                    FlowMatch { proto: r.proto, src: r.src, dst: r.dst, src_port: r.src_port, dst_port: r.dst_port };
                out.push(Rule { action: r.action, name: r.name, matches });
            }
        }
        if errs.is_empty() {
            Ok(out)
        } else {
            Err(errs)
        }
    }
}

/// The firewall NF (see the module docs).
#[derive(Debug)]
pub struct Firewall {
    contract: Contract,
    rules: Vec<Rule>,
    default: Action,
    stateful: bool,
    /// Decision per live flow: index of the deciding rule, `rules.len()` for the default
    /// (stateless: only flows stopped by a drop).
    /// Per flow (an internal reference: dense slot indices, no attacker-chosen keys).
    flows: FxHashMap<FlowRef, usize>,
    hits: Vec<u64>,
    flows_dropped: u64,
    flows_allowed: u64,
    passive: bool,
    would_drop: u64,
    /// New generations of the rules ([`crate::reload`]).
    reload: Option<std::sync::Arc<crate::reload::ReloadPort>>,
    /// The generation applied (1: the rules the run started with).
    generation: u32,
    reloads: u64,
}

impl Firewall {
    /// A firewall with these rules.
    pub fn new(common: &NfCommon, rules: Vec<Rule>, default: Action, stateful: bool) -> Firewall {
        let mut subscriptions = common.main_port("in", &[builtin::PKT]);
        // Flow ends from the L2/3 flow table (not the TCP monitor's FLOW/TCP descendants).
        subscriptions.push(Subscription { from: Some("l23".into()), ..Subscription::new("flows", builtin::FLOW) });
        let drop_reasons = drop_reasons(&rules);
        let contract = common.contract(NAME, subscriptions, drop_reasons);
        let hits = vec![0; rules.len() + 1];
        Firewall {
            contract,
            rules,
            default,
            stateful,
            flows: FxHashMap::default(),
            hits,
            flows_dropped: 0,
            flows_allowed: 0,
            passive: false,
            would_drop: 0,
            reload: None,
            generation: 1,
            reloads: 0,
        }
    }

    /// Takes a new generation of the rules when one is due at this event: each flow's
    /// decision is made again, with the new rules, at its next packet.
    fn reload_if_due(&mut self, seq: u64) {
        let Some(g) = self.reload.as_ref().and_then(|p| p.due(self.generation, seq)) else { return };
        self.generation = g.number;
        if let Some(cfg) = crate::reload::options_of::<FirewallConfig>(&g) {
            self.rules = cfg.parsed.clone();
            self.default = cfg.default;
            self.flows.clear();
            self.reloads += 1;
        }
    }

    /// With `passive`: counts `would_drop` instead of dropping (and declares no drop reasons).
    pub fn passive(mut self, passive: bool) -> Firewall {
        self.passive = passive;
        if passive {
            self.contract.drop_reasons.clear();
        }
        self
    }

    fn decide(&self, t: &Tuple) -> usize {
        self.rules.iter().position(|r| r.matches.matches(t)).unwrap_or(self.rules.len())
    }

    fn action(&self, decision: usize) -> Action {
        self.rules.get(decision).map_or(self.default, |r| r.action)
    }
}

fn describe(m: &FlowMatch) -> String {
    let mut parts = Vec::new();
    if let Some(p) = &m.proto {
        parts.push(format!("proto {p:?}").to_lowercase());
    }
    let nets = |n: &actors::matcher::Networks| n.0.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(",");
    let ports = |p: &actors::matcher::Ports| {
        p.0.iter().map(|(a, b)| if a == b { a.to_string() } else { format!("{a}-{b}") }).collect::<Vec<_>>().join(",")
    };
    if let Some(n) = &m.src {
        parts.push(format!("src {}", nets(n)));
    }
    if let Some(n) = &m.dst {
        parts.push(format!("dst {}", nets(n)));
    }
    if let Some(p) = &m.src_port {
        parts.push(format!("src_port {}", ports(p)));
    }
    if let Some(p) = &m.dst_port {
        parts.push(format!("dst_port {}", ports(p)));
    }
    if parts.is_empty() {
        "any".into()
    } else {
        parts.join(" ")
    }
}

impl Actor for Firewall {
    fn contract(&self) -> &Contract {
        &self.contract
    }

    fn handle(&mut self, ev: &mut EventDesc, cx: &mut Context<'_>) -> Verdict {
        self.reload_if_due(ev.seq);
        if ev.event_type == builtin::FLOW {
            if let (Some(FlowEvent::End(_)), Some(f)) = (FlowEvent::decode(ev.aux), ev.flow) {
                self.flows.remove(&f);
            }
            return Verdict::Continue;
        }
        let Some(view) = cx.view(ev) else { return Verdict::Continue };
        let tuple = Tuple::of(&view);
        let decision = match (self.stateful, ev.flow) {
            (true, Some(f)) => match self.flows.get(&f) {
                Some(d) => *d,
                None => {
                    let oriented = if ev.to_server() { tuple } else { tuple.reversed() };
                    let d = self.decide(&oriented);
                    self.flows.insert(f, d);
                    match self.action(d) {
                        Action::Allow => self.flows_allowed += 1,
                        Action::Drop => self.flows_dropped += 1,
                    }
                    d
                }
            },
            (false, Some(f)) => match self.flows.get(&f) {
                // An earlier packet of the flow was dropped: the flow stays stopped.
                Some(d) => *d,
                None => {
                    let d = self.decide(&tuple);
                    if self.action(d) == Action::Drop {
                        self.flows.insert(f, d);
                        self.flows_dropped += 1;
                    }
                    d
                }
            },
            (_, None) => self.decide(&tuple),
        };
        self.hits[decision] += 1;
        match self.action(decision) {
            Action::Allow => Verdict::Continue,
            Action::Drop if self.passive => {
                self.would_drop += 1;
                Verdict::Continue
            }
            Action::Drop => Verdict::Drop(decision as u16),
        }
    }

    fn counters(&self) -> Vec<(String, u64)> {
        let mut c = vec![
            ("flows_allowed".to_string(), self.flows_allowed),
            ("flows_dropped".to_string(), self.flows_dropped),
            ("flows_tracked".to_string(), self.flows.len() as u64),
            ("would_drop".to_string(), self.would_drop),
        ];
        if self.reloads > 0 {
            c.push(("reloads".to_string(), self.reloads));
            c.push(("generation".to_string(), u64::from(self.generation)));
        }
        for (i, h) in self.hits.iter().enumerate() {
            let name = if i == self.rules.len() { "default_hits".to_string() } else { format!("rule_{}_hits", i + 1) };
            c.push((name, *h));
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(s: &str) -> Result<Firewall, Vec<String>> {
        let t: toml::Table = toml::from_str(s).unwrap();
        let common = NfCommon::named("fw");
        let dir = std::path::Path::new("");
        crate::configure(NAME, &common, t.clone(), &mut EventRegistry::new(), dir)?;
        let (c, _) = crate::common::options::<FirewallConfig>("fw", NAME, t);
        let mut c = c.expect("configure passed");
        c.check(&common, &mut EventRegistry::new())?;
        Ok(Firewall::new(&common, c.parsed, c.default, c.stateful))
    }

    #[test]
    fn rules_parse_and_errors_name_the_rule() {
        let fw = cfg("default = \"drop\"\nrules = [{ action = \"allow\", proto = \"tcp\", dst_port = 80 }, { action = \"drop\", name = \"x\" }]").unwrap();
        assert_eq!(fw.rules.len(), 2);
        assert_eq!(fw.contract.drop_reasons, vec!["rule 1: proto tcp dst_port 80", "rule 2: x", "default"]);
        let e = cfg("rules = [{ action = \"allow\" }, { action = \"maybe\" }, { action = \"drop\", colour = 1 }, { dst_port = 1 }]").unwrap_err();
        assert_eq!(e.len(), 3, "{e:?}");
        assert!(e[0].contains("rule 2") && e[0].contains("maybe"), "{e:?}");
        assert!(e[1].contains("rule 3") && e[1].contains("colour"), "{e:?}");
        assert!(e[2].contains("rule 4") && e[2].contains("missing key `action`"), "{e:?}");
        let e = cfg("defualt = \"drop\"").unwrap_err();
        assert!(e[0].contains("defualt"), "{e:?}");
    }

    #[test]
    fn every_bad_key_of_every_rule_is_named_with_what_is_allowed() {
        let e = cfg("default = 3\nrules = [{ action = \"drop\", dst_port = \"80-\", proto = 300 }, { action = \"dorp\", src_port = true }]").unwrap_err();
        assert_eq!(
            e,
            [
                "nf `fw` (firewall): key `default`: invalid type: integer `3`, expected \"allow\" or \"drop\"",
                "nf `fw` (firewall): rule 1: key `dst_port`: `80-` is not a port or a `low-high` port range",
                "nf `fw` (firewall): rule 1: key `proto`: expected tcp, udp, icmp or a protocol number 0-255, found integer 300",
                "nf `fw` (firewall): rule 2: key `action`: invalid value: string \"dorp\", expected \"allow\" or \"drop\"",
                "nf `fw` (firewall): rule 2: key `src_port`: expected a port 0-65535, a range \"80-90\", or a list of them, found boolean true",
            ],
            "{e:#?}"
        );
    }

    #[test]
    fn first_match_wins() {
        let fw = cfg("rules = [{ action = \"drop\", proto = \"udp\", dst_port = 53 }, { action = \"allow\", proto = \"udp\" }, { action = \"drop\" }]").unwrap();
        let t = |proto, dp| Tuple {
            proto,
            src: "1.1.1.1".parse().ok(),
            dst: "2.2.2.2".parse().ok(),
            src_port: Some(1),
            dst_port: Some(dp),
        };
        assert_eq!(fw.decide(&t(17, 53)), 0);
        assert_eq!(fw.decide(&t(17, 54)), 1);
        assert_eq!(fw.decide(&t(6, 53)), 2);
    }
}
