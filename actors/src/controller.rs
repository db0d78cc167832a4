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
//!
//! A µStack that *consumes* a type (its subscription is marked
//! [`consumes`](crate::Subscription::consumes)) rewrites those events into its own: actors
//! after it receive that type from it, not from the original publisher. This is how stacks
//! layer: `FRAME` → L2/3 → `PKT/...`; L2/3's `PKT/TCP` → TCP monitor → `PKT/TCP` with a
//! snapshot.
//! * two actors with the same name.
//!
//! Every problem is collected before failing, so a user fixes an app file in one pass.
//!
//! The [`Plan`] is sequential for now: one stage per actor, in chain order. Each event
//! travels down the stages; a stage whose actor subscribed to it handles it and answers, and
//! when the stage has answered the event continues to the next stage (a stage of one
//! subscriber is a reference count of one). Parallel groups (a splitter publishing to N
//! read-only actors with a reference count of N) come with the consistency work.

use std::collections::HashMap;

use crate::contract::Contract;
use crate::event::{EventRegistry, EventType};
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
    let names = |ts: &mut dyn Iterator<Item = EventType>| ts.map(|t| registry.name(t)).collect::<Vec<_>>().join(", ");

    let mut actors = Vec::with_capacity(contracts.len());
    let mut links = Vec::new();
    for (i, c) in contracts.iter().enumerate() {
        let mut subscriptions = Vec::new();
        for s in &c.subscriptions {
            let what = format!("actor `{}` port `{}` subscribes to `{}`", c.name, s.port, registry.name(s.event));
            let from = match &s.from {
                None => None,
                Some(f) => match by_name.get(f.as_str()) {
                    Some(&j) => Some(j),
                    None => {
                        problems.push(format!(
                            "{what} from `{f}`, but there is no actor named `{f}` (actors: {})",
                            contracts.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", ")
                        ));
                        continue;
                    }
                },
            };
            // Every (actor, types) whose publications the subscription covers and that reach
            // this actor: a type is consumed (rewritten) by a µStack between its publisher
            // and this actor never arrives from the original publisher.
            let consumed_between = |j: usize, t: EventType| {
                (j + 1..i).any(|k| {
                    contracts[k].subscriptions.iter().any(|cs| {
                        cs.consumes && cs.event.covers(t) && cs.from.as_deref().is_none_or(|f| f == contracts[j].name)
                    })
                })
            };
            let mut upstream: Vec<(usize, Vec<EventType>)> = Vec::new();
            let mut downstream: Vec<(usize, Vec<EventType>)> = Vec::new();
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
                    if j < i { upstream.push((j, types)) } else { downstream.push((j, types)) }
                }
            }
            if upstream.is_empty() {
                if let Some((j, ts)) = downstream.first() {
                    problems.push(format!(
                        "{what}, published by `{}` ({}), which comes after `{}` in the chain; events only flow down the chain, so move `{}` before `{}`",
                        contracts[*j].name,
                        names(&mut ts.iter().copied()),
                        c.name,
                        contracts[*j].name,
                        c.name
                    ));
                    continue;
                }
                let published = contracts
                    .iter()
                    .filter(|p| !p.publications.is_empty())
                    .map(|p| format!("{}: {}", p.name, names(&mut p.publications.iter().map(|x| x.event))))
                    .collect::<Vec<_>>()
                    .join("; ");
                let whose = match &s.from {
                    Some(f) => format!("`{f}` does not publish"),
                    None => "no actor publishes".to_string(),
                };
                problems.push(format!(
                    "{what}, but {whose} `{}` or a descendant of it (published: {})",
                    registry.name(s.event),
                    if published.is_empty() { "nothing".to_string() } else { published }
                ));
                continue;
            }
            // Ambiguous: one concrete type reaching this actor from two publishers.
            let mut twice = Vec::new();
            for (a, (ja, ta)) in upstream.iter().enumerate() {
                for (jb, tb) in &upstream[a + 1..] {
                    for t in ta.iter().filter(|t| tb.contains(t)) {
                        twice.push(format!("`{}` from both `{}` and `{}`", registry.name(*t), contracts[*ja].name, contracts[*jb].name));
                    }
                }
            }
            if !twice.is_empty() {
                problems.push(format!("{what}, which is ambiguous: it would receive {}; add `from = \"...\"` to choose", twice.join(", ")));
                continue;
            }
            let matches = upstream;
            links.push(format!(
                "{}.{} <- {}",
                c.name,
                s.port,
                matches
                    .iter()
                    .map(|(j, ts)| format!("{} ({})", contracts[*j].name, names(&mut ts.iter().copied())))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            subscriptions.push(LinkedSubscription {
                port: s.port.clone(),
                event: s.event,
                filter: s.filter.clone(),
                publishers: matches.iter().map(|(j, _)| *j as u16).collect(),
                from: from.map(|f| f as u16),
                side: s.side,
                consumes: s.consumes,
                include_dropped: s.include_dropped,
            });
        }
        actors.push(PlannedActor {
            index: i as u16,
            name: c.name.clone(),
            kind: c.kind.clone(),
            subscriptions,
            drop_reasons: c.drop_reasons.clone(),
        });
    }
    if problems.is_empty() {
        Ok(Plan { actors, links })
    } else {
        Err(LinkError { problems })
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
        // Without consumption the same chain is ambiguous.
        tcp.subscriptions[0].consumes = false;
        let e = link(&[&rx, &l23, &tcp, &after], &reg).unwrap_err().to_string();
        assert!(e.contains("`PKT/TCP` from both `l23` and `tcp`"), "{e}");
    }
}
