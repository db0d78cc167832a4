//! `mbox graph APP`: the publish/subscribe graph the controller links for an app file — which
//! actor's events reach which NF port, of which types, under which `side`, `direction`,
//! `filter` and `from` — as text (one line per link) or Graphviz DOT, without running
//! anything or creating any output file (NFs are built as contracts only).
//!
//! The chain is the one modes b, c and d run: RX, the app's µStacks in their fixed order,
//! then the NFs in file order. Each edge is one linked subscription from one publisher.

use std::fmt::Write as _;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use actors::controller::{self, LinkedSubscription, Plan};
use actors::{Actor, Contract, EventRegistry};
use stacks::registry::StackContext;

use crate::App;

/// One link: `publisher`'s events of `types` reach port `port` of `subscriber`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Edge {
    /// The publishing actor.
    pub publisher: String,
    /// The subscribing actor.
    pub subscriber: String,
    /// Its port.
    pub port: String,
    /// The subscribed type (descendants included).
    pub event: String,
    /// `side`, `direction`, `filter`, `from`, consumed, dropped events included — as written
    /// in an app file, empty when none applies.
    pub conditions: Vec<String>,
}

/// An actor of the graph.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// Name.
    pub name: String,
    /// Kind (`rx`, `l23`, `tcp`, an NF kind).
    pub kind: String,
    /// `"port"` (RX), `"stack"` or `"nf"`.
    pub role: &'static str,
}

/// The linked graph of an app.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Graph {
    /// Actors in chain order.
    pub nodes: Vec<Node>,
    /// Links in chain order of the subscriber, then port order.
    pub edges: Vec<Edge>,
    /// NFs that run inside a µStack (the split proxy's), in their order there, with the
    /// µStack's name: they are no actors of the chain and have no links.
    pub inside: Vec<(String, Node)>,
}

/// Links `app` as a run would (modes b–d) and returns its graph; errors are the link
/// problems (an app that loaded has none).
pub fn graph(app: &App) -> Result<Graph, Vec<String>> {
    let completed = Arc::new(AtomicU64::new(0));
    let receiver_events = app.nfs.iter().any(|nf| nf.common.side.is_some());
    let proxy_nfs = app.proxy_specs();
    let cx = StackContext::for_linking(&completed, receiver_events, &proxy_nfs);
    let mut actors: Vec<Box<dyn Actor>> = app.stacks.iter().map(|s| s.build(&cx).actor).collect();
    for nf in &app.nfs {
        actors.push(nf.config.contract_only(&nf.common).map_err(|e| vec![e])?);
    }
    let rx = actors::io::rx_contract();
    let mut contracts: Vec<&Contract> = vec![&rx];
    contracts.extend(actors.iter().map(|a| a.contract()));
    let plan = controller::link(&contracts, &app.registry).map_err(|e| e.problems)?;
    let mut g = of_plan(&plan, &contracts, &app.registry);
    let host = app.stacks.iter().find(|s| std::ptr::eq(s.kind, &stacks::proxy::actor::STACK)).map(|s| s.name());
    if let Some(host) = host {
        g.inside = app
            .proxy_nfs
            .iter()
            .map(|nf| {
                (host.to_string(), Node { name: nf.common.name.clone(), kind: nf.kind.clone(), role: "proxy nf" })
            })
            .collect();
    }
    Ok(g)
}

fn of_plan(plan: &Plan, contracts: &[&Contract], registry: &EventRegistry) -> Graph {
    let nodes = plan
        .actors
        .iter()
        .zip(contracts)
        .map(|(a, c)| Node {
            name: a.name.clone(),
            kind: c.kind.clone(),
            role: match a.role() {
                _ if a.index == 0 => "port",
                actors::ActorRole::Stack => "stack",
                actors::ActorRole::Nf => "nf",
            },
        })
        .collect();
    let mut edges = Vec::new();
    for a in &plan.actors {
        for s in &a.subscriptions {
            for &p in &s.publishers {
                edges.push(Edge {
                    publisher: plan.actors[usize::from(p)].name.clone(),
                    subscriber: a.name.clone(),
                    port: s.port.clone(),
                    event: registry.name(s.event).to_string(),
                    conditions: conditions(s, p, plan),
                });
            }
        }
    }
    Graph { nodes, edges, inside: Vec::new() }
}

/// What a link from `publisher` is subject to (`side` only where the publisher is a µStack).
fn conditions(s: &LinkedSubscription, publisher: u16, plan: &Plan) -> Vec<String> {
    let mut c = Vec::new();
    if let (Some(side), true) = (s.side, s.side_publishers.contains(&publisher)) {
        c.push(format!("side = {:?}", format!("{side:?}").to_lowercase()));
    }
    if let Some(d) = s.to_server {
        c.push(format!("direction = \"{}\"", if d { "to_server" } else { "to_client" }));
    }
    if let Some(f) = &s.filter {
        let mut parts = Vec::new();
        if let Some(v) = &f.proto {
            parts.push(format!("proto: {v:?}"));
        }
        if let Some(v) = &f.src {
            parts.push(format!("src: {v:?}"));
        }
        if let Some(v) = &f.dst {
            parts.push(format!("dst: {v:?}"));
        }
        if let Some(v) = &f.src_port {
            parts.push(format!("src_port: {v:?}"));
        }
        if let Some(v) = &f.dst_port {
            parts.push(format!("dst_port: {v:?}"));
        }
        c.push(format!("filter {{ {} }}", parts.join(", ")));
    }
    if let Some(f) = s.from {
        c.push(format!("from = \"{}\"", plan.actors[usize::from(f)].name));
    }
    if s.consumes {
        c.push("consumes".into());
    }
    if s.include_dropped {
        c.push("dropped events too".into());
    }
    c
}

impl Graph {
    /// One line per actor, then one per link: `tcp --DATA_RDY--> ids.data [side = "server"]`.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let actors: Vec<String> = self.nodes.iter().map(|n| format!("{} ({}, {})", n.name, n.kind, n.role)).collect();
        let _ = writeln!(out, "actors, in chain order: {}", actors.join(" -> "));
        for e in &self.edges {
            let cond = if e.conditions.is_empty() { String::new() } else { format!("  [{}]", e.conditions.join(", ")) };
            let _ = writeln!(out, "{} --{}--> {}.{}{cond}", e.publisher, e.event, e.subscriber, e.port);
        }
        if let Some((host, _)) = self.inside.first() {
            let nfs: Vec<String> = self.inside.iter().map(|(_, n)| format!("{} ({})", n.name, n.kind)).collect();
            let _ = writeln!(out, "inside {host}, on its bytestreams, in order: {}", nfs.join(" -> "));
        }
        out
    }

    /// Graphviz DOT: µStacks as boxes, NFs as ellipses, one labelled edge per link.
    pub fn to_dot(&self) -> String {
        let q = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n"));
        let mut out = String::from("digraph mbox {\n  rankdir=LR;\n");
        for n in &self.nodes {
            let shape = if n.role == "stack" { "box" } else { "ellipse" };
            let _ = writeln!(out, "  {} [shape={shape}, label={}];", q(&n.name), q(&format!("{}\n{}", n.name, n.kind)));
        }
        for e in &self.edges {
            let mut label = format!("{} → {}", e.event, e.port);
            for c in &e.conditions {
                label += &format!("\n{c}");
            }
            let _ = writeln!(out, "  {} -> {} [label={}];", q(&e.publisher), q(&e.subscriber), q(&label));
        }
        for (host, n) in &self.inside {
            let _ = writeln!(
                out,
                "  {} [shape=ellipse, style=dashed, label={}];",
                q(&n.name),
                q(&format!("{}\n{}", n.name, n.kind))
            );
            let _ = writeln!(out, "  {} -> {} [style=dashed, label=\"bytestreams (inside)\"];", q(host), q(&n.name));
        }
        out.push_str("}\n");
        out
    }
}
