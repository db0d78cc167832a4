//! The controller: links subscriptions to publications, type-checks every link, and produces
//! the plan the runtime executes.
//!
//! Input: the contracts of every actor in chain order (the RX port first, then the µStacks,
//! then the network functions in app-file order) and the event registry. For every
//! subscription of type `S` the controller finds the publications whose type equals `S` or
//! descends from it ([`EventType::covers`]). It rejects, with a message naming actor, port
//! and types:
//!
//! * a subscription that no publication can satisfy (it lists what *is* published);
//! * an ambiguous one — the same type would arrive from two publishers and no `from` says
//!   which;
//! * a `from` naming an unknown actor, or one that publishes nothing matching;
//! * a subscription only publishers placed after it could satisfy (events only flow down the
//!   chain);
//! * two actors with the same name.
//!
//! A µStack that *consumes* a type (its subscription is marked
//! [`consumes`](crate::Subscription::consumes)) rewrites those events into its own: actors
//! after it receive that type from it, not from the original publisher. This is how stacks
//! layer: `FRAME` → L2/3 → `PKT/...`; L2/3's `PKT/TCP` → TCP monitor → `PKT/TCP` with a
//! snapshot.
//!
//! Every problem is collected before failing, so a user fixes an app file in one pass.
//!
//! The [`Plan`] is sequential for now: one stage per actor, in chain order. Each event
//! travels down the stages; a stage whose actor subscribed to it handles it and answers, and
//! when the stage has answered the event continues to the next stage (a stage of one
//! subscriber is a reference count of one). Parallel groups (a splitter publishing to N
//! read-only actors with a reference count of N, mode d) are checked or formed by
//! [`groups`] over the same contracts.

use std::collections::HashMap;

use crate::contract::{ActorRole, Contract, Subscription};
use crate::event::{builtin, EventRegistry, EventType};
use crate::matcher::FlowMatch;

/// A subscription after linking.
#[derive(Clone, Debug)]
pub struct LinkedSubscription {
    /// Port name.
    pub port: String,
    /// Subscribed type (covers descendants).
    pub event: EventType,
    /// Packet filter.
    pub filter: Option<FlowMatch>,
    /// Plan indices of the actors whose publications feed it.
    pub publishers: Vec<u16>,
    /// When set, only events from this plan index are accepted.
    pub from: Option<u16>,
    /// Only TCP-monitor events of this half's updates.
    pub side: Option<crate::contract::Side>,
    /// The publishers (plan indices) whose events `side` applies to: the µStacks among
    /// `publishers`. An event an NF publishes is not a stack's update, even when it carries
    /// a copy of the snapshot of the event that raised it (DPI's `EVENT/DPI_DETECT` does):
    /// `side` never filters it.
    pub side_publishers: Vec<u16>,
    /// Only events of packets sent this way.
    pub to_server: Option<bool>,
    /// The actor rewrites these events into its own publications.
    pub consumes: bool,
    /// Dropped events are delivered too.
    pub include_dropped: bool,
}

/// One actor in the plan.
#[derive(Clone, Debug)]
pub struct PlannedActor {
    /// Plan index (also the `publisher` stamped on its events).
    pub index: u16,
    /// Name.
    pub name: String,
    /// Kind.
    pub kind: String,
    /// Linked subscriptions.
    pub subscriptions: Vec<LinkedSubscription>,
    /// Drop reason names.
    pub drop_reasons: Vec<String>,
}

/// The executable plan: sequential stages in chain order.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Actors in chain order; `actors[i].index == i`.
    pub actors: Vec<PlannedActor>,
    /// Human-readable links, `"fw.pkt <- l23 (PKT, PKT/TCP, ...)"`, for `--explain` output.
    pub links: Vec<String>,
}

impl PlannedActor {
    /// The actor's role, as its contract declared it ([`Contract::role`]).
    pub fn role(&self) -> ActorRole {
        crate::contract::role_of(self.subscriptions.iter().map(|s| s.consumes))
    }
}

impl Plan {
    /// Index of an actor by name.
    pub fn index_of(&self, name: &str) -> Option<u16> {
        self.actors.iter().find(|a| a.name == name).map(|a| a.index)
    }
}

/// Everything wrong with an application's links (one line per problem).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .problems.join("\n"))]
pub struct LinkError {
    /// Each problem, naming actor, port and types.
    pub problems: Vec<String>,
}

/// Links `contracts` (in chain order) into a [`Plan`].
pub fn link(contracts: &[&Contract], registry: &EventRegistry) -> Result<Plan, LinkError> {
    let mut problems = Vec::new();
    let mut by_name: HashMap<&str, usize> = HashMap::new();
    for (i, c) in contracts.iter().enumerate() {
        if let Some(prev) = by_name.insert(c.name.as_str(), i) {
            problems.push(format!(
                "two actors are named `{}` (positions {} and {} in the chain); names must be unique",
                c.name,
                prev + 1,
                i + 1
            ));
        }
    }
    if contracts.len() > usize::from(u16::MAX) {
        problems.push(format!("{} actors is more than a plan can hold", contracts.len()));
    }
    let linker = Linker { contracts, registry, by_name };
    let mut actors = Vec::with_capacity(contracts.len());
    let mut links = Vec::new();
    for (i, c) in contracts.iter().enumerate() {
        let mut subscriptions = Vec::new();
        for s in &c.subscriptions {
            match linker.subscription(i, s) {
                Ok((linked, line)) => {
                    links.push(line);
                    subscriptions.push(linked);
                }
                Err(problem) => problems.push(problem),
            }
        }
        actors.push(PlannedActor {
            index: i as u16,
            name: c.name.clone(),
            kind: c.kind.clone(),
            subscriptions,
            drop_reasons: c.drop_reasons.clone(),
        });
    }
    problems.extend(policy_problems(contracts, &actors, registry));
    if problems.is_empty() {
        Ok(Plan { actors, links })
    } else {
        Err(LinkError { problems })
    }
}

/// Every `FLOW_REQ` publisher (the splicer) needs exactly one policy NF per request: an
/// actor after it that subscribes to its `FLOW_REQ` and publishes `FLOW_DEST`. None is an
/// error, and so are two whose filters can both accept the same request (they overlap
/// unless their `proto`, `dst_port` or `dst` sets are disjoint).
fn policy_problems(contracts: &[&Contract], actors: &[PlannedActor], registry: &EventRegistry) -> Vec<String> {
    let mut problems = Vec::new();
    let publishes = |c: &Contract, t: EventType| c.publications.iter().any(|p| p.event == t);
    for (j, c) in contracts.iter().enumerate() {
        if !publishes(c, builtin::FLOW_REQ) {
            continue;
        }
        let mut policies: Vec<(usize, &LinkedSubscription)> = Vec::new();
        for (i, a) in actors.iter().enumerate().skip(j + 1) {
            if !publishes(contracts[i], builtin::FLOW_DEST) {
                continue;
            }
            for s in &a.subscriptions {
                if s.event.covers(builtin::FLOW_REQ) && s.publishers.contains(&(j as u16)) {
                    policies.push((i, s));
                }
            }
        }
        let req = registry.name(builtin::FLOW_REQ);
        if policies.is_empty() {
            problems.push(format!(
                "actor `{}` publishes `{req}`, but no policy NF takes it (one that subscribes to `{req}` and publishes `FLOW_DEST`, e.g. `http_lb` for the splicer, `proxy_select` for the proxy): its flows would wait forever",
                c.name
            ));
        }
        for (x, (ia, sa)) in policies.iter().enumerate() {
            for (ib, sb) in &policies[x + 1..] {
                if filters_overlap(sa.filter.as_ref(), sb.filter.as_ref()) {
                    problems.push(format!(
                        "actor `{}` publishes `{req}` to two policy NFs whose filters overlap: `{}` and `{}` could both answer the same request; give them disjoint `filter`s (e.g. dst_port = 80 and dst_port = 11211)",
                        c.name, contracts[*ia].name, contracts[*ib].name
                    ));
                }
            }
        }
        let fed = c.subscriptions.iter().any(|s| s.feedback && s.event.covers(builtin::FLOW_DEST));
        if !fed {
            problems.push(format!("actor `{}` publishes `{req}` but has no feedback port for `FLOW_DEST`", c.name));
        }
    }
    problems
}

/// Whether two subscription filters can accept the same event (conservatively: yes, unless
/// some key is set in both with disjoint values).
pub fn filters_overlap(a: Option<&FlowMatch>, b: Option<&FlowMatch>) -> bool {
    let (Some(a), Some(b)) = (a, b) else { return true };
    if let (Some(pa), Some(pb)) = (a.proto, b.proto) {
        if pa != pb {
            return false;
        }
    }
    if let (Some(pa), Some(pb)) = (&a.dst_port, &b.dst_port) {
        let any = pa.0.iter().any(|(l1, h1)| pb.0.iter().any(|(l2, h2)| l1 <= h2 && l2 <= h1));
        if !any {
            return false;
        }
    }
    if let (Some(na), Some(nb)) = (&a.dst, &b.dst) {
        let any = na.0.iter().any(|x| nb.0.iter().any(|y| x.contains(&y.network()) || y.contains(&x.network())));
        if !any {
            return false;
        }
    }
    true
}

/// Publishers of one subscription: `(chain index, the types of its publications it covers)`.
type Feeds = Vec<(usize, Vec<EventType>)>;

/// What linking one subscription needs to know about the whole chain.
struct Linker<'a> {
    contracts: &'a [&'a Contract],
    registry: &'a EventRegistry,
    /// Chain index of each actor name (the last, when a name repeats).
    by_name: HashMap<&'a str, usize>,
}

impl Linker<'_> {
    /// Type names, comma-separated.
    fn names(&self, ts: impl Iterator<Item = EventType>) -> String {
        ts.map(|t| self.registry.name(t)).collect::<Vec<_>>().join(", ")
    }

    /// Links subscription `s` of actor `i`: the linked subscription and its `--explain` line,
    /// or the problem naming actor, port and types.
    fn subscription(&self, i: usize, s: &Subscription) -> Result<(LinkedSubscription, String), String> {
        let c = self.contracts[i];
        let what = format!("actor `{}` port `{}` subscribes to `{}`", c.name, s.port, self.registry.name(s.event));
        let from = match &s.from {
            None => None,
            Some(f) => match self.by_name.get(f.as_str()) {
                Some(&j) => Some(j),
                None => {
                    return Err(format!(
                        "{what} from `{f}`, but there is no actor named `{f}` (actors: {})",
                        self.contracts.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", ")
                    ));
                }
            },
        };
        let (mut upstream, mut downstream) = self.feeds(i, s, from);
        if s.feedback {
            // Feedback comes back from later actors (through TX's loopback).
            std::mem::swap(&mut upstream, &mut downstream);
            if upstream.is_empty() {
                return Err(format!("{what} as feedback, but no actor after `{}` publishes it", c.name));
            }
        }
        if upstream.is_empty() {
            return Err(self.unlinked(&what, i, s, &downstream));
        }
        if !s.feedback {
            // Feedback ports take every policy's answer (each answers its own flows).
            self.ambiguity(&what, &upstream)?;
        }
        self.deaf(&what, s, &upstream)?;
        let matches = upstream;
        let line = format!(
            "{}.{} <- {}",
            c.name,
            s.port,
            matches
                .iter()
                .map(|(j, ts)| format!("{} ({})", self.contracts[*j].name, self.names(ts.iter().copied())))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let linked = LinkedSubscription {
            port: s.port.clone(),
            event: s.event,
            filter: s.filter.clone(),
            publishers: matches.iter().map(|(j, _)| *j as u16).collect(),
            from: from.map(|f| f as u16),
            side: s.side,
            side_publishers: matches
                .iter()
                .filter(|(j, _)| self.contracts[*j].role() == ActorRole::Stack)
                .map(|(j, _)| *j as u16)
                .collect(),
            to_server: s.to_server,
            consumes: s.consumes,
            include_dropped: s.include_dropped,
        };
        Ok((linked, line))
    }

    /// A subscription that no linked publication can pass: a `filter` looks at the event's
    /// packet, and `DATA_RDY` and `FLOW` events carry none — such a port would receive
    /// nothing, silently.
    fn deaf(&self, what: &str, s: &Subscription, upstream: &Feeds) -> Result<(), String> {
        let packetless = |t: &EventType| builtin::DATA_RDY.covers(*t) || builtin::FLOW.covers(*t);
        if s.filter.is_some() && upstream.iter().all(|(_, ts)| ts.iter().all(packetless)) {
            let types = self.names(upstream.iter().flat_map(|(_, ts)| ts.iter().copied()));
            return Err(format!(
                "{what} with a `filter`, but a filter looks at the event's packet and `{types}` events carry none: the port would receive nothing (filter the packets before, e.g. with a firewall, or use `direction`)"
            ));
        }
        Ok(())
    }

    /// Every (actor, types) whose publications subscription `s` of actor `i` covers (only
    /// actor `from`, if set), split into those before `i` that reach it and those after it.
    /// A type consumed (rewritten) by a µStack between its publisher and `i` never arrives
    /// from the original publisher.
    fn feeds(&self, i: usize, s: &Subscription, from: Option<usize>) -> (Feeds, Feeds) {
        let contracts = self.contracts;
        let consumed_between = |j: usize, t: EventType| {
            (j + 1..i).any(|k| {
                contracts[k].subscriptions.iter().any(|cs| {
                    cs.consumes && cs.event.covers(t) && cs.from.as_deref().is_none_or(|f| f == contracts[j].name)
                })
            })
        };
        let mut upstream = Vec::new();
        let mut downstream = Vec::new();
        for (j, p) in contracts.iter().enumerate() {
            if j == i || from.is_some_and(|f| f != j) {
                continue;
            }
            let types: Vec<EventType> = p
                .publications
                .iter()
                .map(|p| p.event)
                .filter(|t| s.event.covers(*t) && !(j < i && consumed_between(j, *t)))
                .collect();
            if !types.is_empty() {
                if j < i {
                    upstream.push((j, types))
                } else {
                    downstream.push((j, types))
                }
            }
        }
        (upstream, downstream)
    }

    /// The problem of subscription `s` of actor `i` that nothing before it satisfies: a
    /// publisher placed after it, or none at all (listing what is published).
    fn unlinked(&self, what: &str, i: usize, s: &Subscription, downstream: &Feeds) -> String {
        let c = self.contracts[i];
        if let Some((j, ts)) = downstream.first() {
            return format!(
                "{what}, published by `{}` ({}), which comes after `{}` in the chain; events only flow down the chain, so move `{}` before `{}`",
                self.contracts[*j].name,
                self.names(ts.iter().copied()),
                c.name,
                self.contracts[*j].name,
                c.name
            );
        }
        let published = self
            .contracts
            .iter()
            .filter(|p| !p.publications.is_empty())
            .map(|p| format!("{}: {}", p.name, self.names(p.publications.iter().map(|x| x.event))))
            .collect::<Vec<_>>()
            .join("; ");
        let whose = match &s.from {
            Some(f) => format!("`{f}` does not publish"),
            None => "no actor publishes".to_string(),
        };
        format!(
            "{what}, but {whose} `{}` or a descendant of it (published: {})",
            self.registry.name(s.event),
            if published.is_empty() { "nothing".to_string() } else { published }
        )
    }

    /// Ambiguous: one concrete type reaching the subscriber from two publishers.
    fn ambiguity(&self, what: &str, upstream: &Feeds) -> Result<(), String> {
        let mut twice = Vec::new();
        for (a, (ja, ta)) in upstream.iter().enumerate() {
            for (jb, tb) in &upstream[a + 1..] {
                for t in ta.iter().filter(|t| tb.contains(t)) {
                    twice.push(format!(
                        "`{}` from both `{}` and `{}`",
                        self.registry.name(*t),
                        self.contracts[*ja].name,
                        self.contracts[*jb].name
                    ));
                }
            }
        }
        if twice.is_empty() {
            return Ok(());
        }
        Err(format!(
            "{what}, which is ambiguous: it would receive {}; add `from = \"...\"` to choose",
            twice.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::{Publication, Subscription};
    use crate::event::builtin::*;

    fn actor(name: &str, subs: &[(&str, EventType, Option<&str>)], pubs: &[EventType]) -> Contract {
        Contract {
            name: name.into(),
            kind: "test".into(),
            subscriptions: subs
                .iter()
                .map(|(p, e, f)| Subscription { from: f.map(Into::into), ..Subscription::new(p, *e) })
                .collect(),
            publications: pubs.iter().map(|e| Publication { port: "out".into(), event: *e }).collect(),
            ..Default::default()
        }
    }

    fn l23() -> Contract {
        actor("l23", &[("frames", FRAME, None)], &[PKT, PKT_TCP, PKT_TCP_SYN, PKT_UDP, FLOW])
    }

    fn rx() -> Contract {
        actor("rx", &[], &[FRAME])
    }

    #[test]
    fn links_descendants() {
        let reg = EventRegistry::new();
        let nf = actor("nf", &[("tcp", PKT_TCP, None), ("flows", FLOW, None)], &[]);
        let (rx, l23) = (rx(), l23());
        let plan = link(&[&rx, &l23, &nf], &reg).unwrap();
        assert_eq!(plan.actors.len(), 3);
        assert_eq!(plan.actors[2].subscriptions[0].publishers, vec![1]);
        assert!(plan.links.iter().any(|l| l.starts_with("nf.tcp <- l23 (PKT/TCP, PKT/TCP/SYN)")), "{:?}", plan.links);
    }

    #[test]
    fn unlinked_subscription_names_actor_port_and_type() {
        let reg = EventRegistry::new();
        let nf = actor("ids", &[("conn", FLOW_TCP, None)], &[]);
        let (rx, l23) = (rx(), l23());
        let e = link(&[&rx, &l23, &nf], &reg).unwrap_err().to_string();
        assert!(e.contains("actor `ids` port `conn` subscribes to `FLOW/TCP`"), "{e}");
        assert!(e.contains("l23: PKT"), "{e}");
    }

    #[test]
    fn ambiguity_and_from() {
        let mut reg = EventRegistry::new();
        let t = reg.register("EVENT/X").unwrap();
        let (a, b) = (actor("a", &[], &[t]), actor("b", &[], &[t]));
        let c = actor("c", &[("x", EVENT, None)], &[]);
        let e = link(&[&a, &b, &c], &reg).unwrap_err().to_string();
        assert!(e.contains("ambiguous") && e.contains("`EVENT/X` from both `a` and `b`"), "{e}");
        let c = actor("c", &[("x", EVENT, Some("b"))], &[]);
        let plan = link(&[&a, &b, &c], &reg).unwrap();
        assert_eq!(plan.actors[2].subscriptions[0].from, Some(1));
        let c = actor("c", &[("x", EVENT, Some("zz"))], &[]);
        let e = link(&[&a, &b, &c], &reg).unwrap_err().to_string();
        assert!(e.contains("no actor named `zz`"), "{e}");
    }

    #[test]
    fn order_and_duplicates_are_checked_all_at_once() {
        let mut reg = EventRegistry::new();
        let t = reg.register("EVENT/LATE").unwrap();
        let early = actor("early", &[("late", t, None)], &[]);
        let late = actor("late", &[], &[t]);
        let dup = actor("late", &[("p", PKT_ICMP, None)], &[]);
        let e = link(&[&early, &late, &dup], &reg).unwrap_err();
        assert_eq!(e.problems.len(), 3, "{e}");
        assert!(e.to_string().contains("comes after `early`"), "{e}");
        assert!(e.to_string().contains("two actors are named `late`"), "{e}");
        assert!(e.to_string().contains("`PKT/ICMP`"), "{e}");
    }

    #[test]
    fn stacks_layer_by_consuming() {
        let reg = EventRegistry::new();
        let rx = rx();
        let mut l23 = l23();
        l23.subscriptions[0].consumes = true;
        let mut tcp = actor("tcp", &[("pkt", PKT_TCP, Some("l23"))], &[PKT_TCP, PKT_TCP_SYN, DATA_RDY]);
        tcp.subscriptions[0].consumes = true;
        let before = actor("before", &[("tcp", PKT_TCP, None)], &[]);
        let after = actor("after", &[("all", PKT, None), ("tcp", PKT_TCP, None)], &[]);
        let plan = link(&[&rx, &l23, &before, &tcp, &after], &reg).unwrap();
        assert_eq!(plan.actors[2].subscriptions[0].publishers, vec![1], "before the TCP monitor: from l23");
        assert_eq!(plan.actors[4].subscriptions[0].publishers, vec![1, 3], "PKT: UDP etc. from l23, TCP from tcp");
        assert_eq!(plan.actors[4].subscriptions[1].publishers, vec![3], "PKT/TCP only from tcp");
        assert!(plan.actors[3].subscriptions[0].consumes);
        let roles: Vec<ActorRole> = plan.actors.iter().map(|a| a.role()).collect();
        use ActorRole::{Nf, Stack};
        assert_eq!(roles, [Nf, Stack, Nf, Stack, Nf], "consuming actors are stacks");
        assert_eq!((l23.role(), after.role()), (Stack, Nf), "the contract says the same");
        // Without consumption the same chain is ambiguous.
        tcp.subscriptions[0].consumes = false;
        let e = link(&[&rx, &l23, &tcp, &after], &reg).unwrap_err().to_string();
        assert!(e.contains("`PKT/TCP` from both `l23` and `tcp`"), "{e}");
    }
}

/// Why a parallel group was refused, or how one was formed.
pub mod groups {
    use super::*;

    /// Checks (explicit) or forms (automatic) parallel groups of NFs.
    ///
    /// `contracts` are the whole chain in order (RX, stacks, NFs); `candidates` the plan
    /// indices that may be grouped (the NFs). A group is a run of consecutive NFs that all
    /// receive an event at once from a splitter; the merger then combines their answers
    /// (drop if any drops). A group is refused, with a message naming the members, when:
    ///
    /// * a member modifies packets or stack state and the group has any other member (a writer
    ///   beside a reader, or two writers of the same data);
    /// * a member subscribes to what another member publishes (it could not receive it);
    /// * a member that can drop packets is followed in the group by a member that receives
    ///   packet events (in sequence it would see fewer packets than in parallel) — a dropping
    ///   NF may be the last member;
    /// * the members are not consecutive in the chain.
    pub fn check(contracts: &[&Contract], group: &[usize], registry: &EventRegistry) -> Vec<String> {
        let names: Vec<&str> = group.iter().map(|&i| contracts[i].name.as_str()).collect();
        let g = format!("parallel group [{}]", names.join(", "));
        let mut problems = Vec::new();
        if group.len() < 2 {
            problems.push(format!("{g}: a group needs at least two NFs"));
        }
        if group.windows(2).any(|w| w[1] != w[0] + 1) {
            problems.push(format!("{g}: members must be consecutive in the chain"));
        }
        for &i in group {
            let c = contracts[i];
            if (c.modifies.packets || c.modifies.stack_state) && group.len() > 1 {
                let what = if c.modifies.packets { "packets" } else { "stack state" };
                let others: Vec<&str> = names.iter().copied().filter(|n| *n != c.name).collect();
                problems.push(format!(
                    "{g}: `{}` modifies {what}, so it cannot run beside {} (a writer beside a reader of the same data)",
                    c.name,
                    others.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
                ));
            }
            for &j in group {
                if i == j {
                    continue;
                }
                let p = contracts[j];
                for s in &c.subscriptions {
                    if s.from.as_deref().is_none_or(|f| f == p.name)
                        && p.publications.iter().any(|x| s.event.covers(x.event))
                    {
                        problems.push(format!(
                            "{g}: `{}` subscribes to `{}` published by `{}`, which runs beside it",
                            c.name,
                            registry.name(s.event),
                            p.name
                        ));
                    }
                }
            }
        }
        for (k, &i) in group.iter().enumerate() {
            if contracts[i].drop_reasons.is_empty() {
                continue;
            }
            for &j in &group[k + 1..] {
                if contracts[j]
                    .subscriptions
                    .iter()
                    .any(|s| crate::event::builtin::PKT.covers(s.event) || s.event.covers(crate::event::builtin::PKT))
                {
                    problems.push(format!(
                        "{g}: `{}` can drop packets and `{}` after it receives packet events: in sequence `{}` would not see what `{}` dropped; put `{}` last in the group",
                        contracts[i].name, contracts[j].name, contracts[j].name, contracts[i].name, contracts[i].name
                    ));
                }
            }
        }
        problems
    }

    /// Forms groups automatically: maximal runs of consecutive candidates that pass
    /// [`check`], greedily from the front.
    pub fn auto(contracts: &[&Contract], candidates: &[usize], registry: &EventRegistry) -> Vec<Vec<usize>> {
        let mut out = Vec::new();
        let mut cur: Vec<usize> = Vec::new();
        for &i in candidates {
            let mut trial = cur.clone();
            trial.push(i);
            let ok = trial.len() < 2 || check(contracts, &trial, registry).is_empty();
            if ok {
                cur = trial;
            } else {
                if cur.len() >= 2 {
                    out.push(std::mem::take(&mut cur));
                }
                cur = vec![i];
            }
        }
        if cur.len() >= 2 {
            out.push(cur);
        }
        out
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use crate::contract::{Modifies, Publication, Subscription};
        use crate::event::builtin::*;

        fn nf(name: &str, modifies: Modifies, drops: bool, subs: &[crate::EventType]) -> Contract {
            Contract {
                name: name.into(),
                subscriptions: subs.iter().map(|t| Subscription::new("in", *t)).collect(),
                modifies,
                drop_reasons: if drops { vec!["x".into()] } else { vec![] },
                ..Default::default()
            }
        }

        #[test]
        fn a_packet_writer_beside_a_reader_is_refused() {
            let w = nf("rewriter", Modifies { packets: true, stack_state: false }, false, &[PKT]);
            let r = nf("stats", Modifies::default(), false, &[PKT]);
            let p = check(&[&w, &r], &[0, 1], &EventRegistry::new());
            assert_eq!(p.len(), 1, "{p:?}");
            assert!(p[0].contains("`rewriter` modifies packets, so it cannot run beside `stats`"), "{p:?}");
        }

        #[test]
        fn droppers_go_last_and_publishers_cannot_feed_peers() {
            let fw = nf("fw", Modifies::default(), true, &[PKT]);
            let stats = nf("stats", Modifies::default(), false, &[PKT]);
            assert!(check(&[&stats, &fw], &[0, 1], &EventRegistry::new()).is_empty());
            let p = check(&[&fw, &stats], &[0, 1], &EventRegistry::new());
            assert!(p[0].contains("put `fw` last"), "{p:?}");
            let mut dpi = nf("dpi", Modifies::default(), false, &[PKT]);
            dpi.publications = vec![Publication { port: "o".into(), event: EVENT }];
            let ids = nf("ids", Modifies::default(), false, &[EVENT]);
            let p = check(&[&dpi, &ids], &[0, 1], &EventRegistry::new());
            assert!(p[0].contains("`ids` subscribes to `EVENT` published by `dpi`"), "{p:?}");
        }

        #[test]
        fn automatic_groups_are_maximal_valid_runs() {
            let a = nf("a", Modifies::default(), false, &[PKT]);
            let b = nf("b", Modifies::default(), false, &[PKT]);
            let fw = nf("fw", Modifies::default(), true, &[PKT]);
            let c = nf("c", Modifies::default(), false, &[PKT]);
            let d = nf("d", Modifies::default(), false, &[PKT]);
            let all = [&a, &b, &fw, &c, &d];
            assert_eq!(auto(&all, &[0, 1, 2, 3, 4], &EventRegistry::new()), vec![vec![0, 1, 2], vec![3, 4]]);
        }
    }
}

#[cfg(test)]
mod policy_tests {
    use super::filters_overlap;
    use crate::matcher::FlowMatch;

    fn m(text: &str) -> FlowMatch {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn filters_overlap_unless_some_key_is_disjoint() {
        assert!(filters_overlap(None, Some(&m("dst_port = 80"))));
        assert!(!filters_overlap(Some(&m("dst_port = 80")), Some(&m("dst_port = 11211"))));
        assert!(filters_overlap(Some(&m("dst_port = \"1-1000\"")), Some(&m("dst_port = 80"))));
        assert!(!filters_overlap(Some(&m("dst = \"10.0.0.0/24\"")), Some(&m("dst = \"10.0.1.0/24\""))));
        assert!(!filters_overlap(Some(&m("proto = \"tcp\"")), Some(&m("proto = \"udp\""))));
        assert!(filters_overlap(Some(&m("dst_port = 80")), Some(&m("src_port = 80"))));
    }
}
