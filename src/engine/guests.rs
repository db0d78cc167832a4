//! NFs added while the run goes on (`mbox ctl PREFIX reload`, SIGHUP, with a file that adds
//! NFs): the engine's side of [`crate::reconfig::LiveHost`].
//!
//! A running chain is not rewired: an added NF becomes a **guest** of the stage of a kept NF
//! next to its place in the new chain ([`actors::guest`]) — after the NF before it, or,
//! when it comes first, before the NF after it — and runs in that stage, on its core, where a
//! stage of its own would have handled each event. Here it is built, linked against the
//! running graph (the running actors' contracts, in the new file's order, numbered with the
//! running plan's indices; a fresh index for each added NF) and placed; the controller posts
//! it when the reload is accepted, before RX stamps its first packet.
//!
//! Refused, with the reason: mode a (every NF has a private stack), a neighbour that runs in
//! its own process or in a parallel group (no stage here to host it), an added NF that a
//! kept NF would subscribe to (the running links were made at start), an added NF with
//! `side` in a run whose stack raises no receiver events, and an added NF placed before one
//! added earlier in the same host (guests only append).

use std::collections::BTreeMap;
use std::sync::Arc;

use actors::contract::Contract;
use actors::controller::{Plan, PlannedActor};
use actors::guest::{Guest, GuestBox};
use actors::stage::StageReport;
use actors::Actor;

use crate::app::App;
use crate::reconfig::{LiveHost, PostGuests};

/// The NF stages that can host added NFs, and why each other NF cannot.
#[derive(Default)]
pub(crate) struct Hostable {
    boxes: BTreeMap<String, Arc<GuestBox>>,
    refused: BTreeMap<String, String>,
}

impl Hostable {
    /// NF `name`'s stage hosts guests: its box.
    pub fn add(&mut self, name: &str) -> Arc<GuestBox> {
        self.boxes.entry(name.to_string()).or_default().clone()
    }

    /// NF `name` has no stage here to host guests, because it `why`.
    pub fn refuse(&mut self, name: &str, why: &str) {
        self.refused.insert(name.to_string(), why.to_string());
    }

    /// After the run: every guest's report with its plan (index order).
    pub fn reports(&self) -> Vec<(StageReport, PlannedActor)> {
        let mut out: Vec<_> = self.boxes.values().flat_map(|b| b.reports()).collect();
        out.sort_by_key(|(_, p)| p.index);
        out
    }

    fn share(&self) -> Hostable {
        Hostable { boxes: self.boxes.clone(), refused: self.refused.clone() }
    }
}

/// The running chain, as the controller adds NFs to it (see the module docs).
pub(crate) struct Guests {
    hosts: Hostable,
    /// Why no NF can be added to this run at all.
    none: Option<String>,
    /// RX, the µStacks and the NFs (and the guests added so far): contract and index.
    running: BTreeMap<String, (Contract, u16)>,
    /// The µStacks, in chain order.
    stacks: Vec<String>,
    /// Each guest's host and side (`true`: before the host's NF).
    placed: BTreeMap<String, (String, bool)>,
    next_index: u16,
    /// The stacks raise receiver events (some NF had `side` at start).
    receiver_events: bool,
}

impl Guests {
    /// The chain of `plan` (its actors after RX: `contracts`, in order), `stacks` µStacks
    /// first; `hosts` as wired; `none`: why nothing can be added (mode a).
    pub fn new(
        plan: &Plan,
        contracts: Vec<Contract>,
        stacks: usize,
        hosts: &Hostable,
        none: Option<String>,
        receiver_events: bool,
    ) -> Guests {
        let mut running = BTreeMap::new();
        running.insert(plan.actors[0].name.clone(), (actors::io::rx_contract(), 0));
        for (a, c) in plan.actors[1..].iter().zip(contracts) {
            running.insert(a.name.clone(), (c, a.index));
        }
        Guests {
            hosts: hosts.share(),
            none,
            running,
            stacks: plan.actors[1..=stacks.min(plan.actors.len() - 1)].iter().map(|a| a.name.clone()).collect(),
            placed: BTreeMap::new(),
            // TX's trace index is the plan's length: the guests come after it.
            next_index: plan.actors.len() as u16 + 1,
            receiver_events,
        }
    }

    /// Where the added NF at `p` in `order` goes: the host and side of the NF before it, or,
    /// first in the chain, before the first NF kept after it.
    fn place(
        &self,
        order: &[&str],
        p: usize,
        prev: &Option<(String, bool)>,
        added: &[String],
    ) -> Option<(String, bool)> {
        if let Some(hp) = prev {
            return Some(hp.clone());
        }
        let next = order[p + 1..].iter().find(|n| !added.iter().any(|a| a == *n))?;
        Some(self.placed.get(*next).cloned().unwrap_or((next.to_string(), true)))
    }
}

/// `a`'s indices, from the new link's numbering to the running chain's.
fn renumber(a: &mut PlannedActor, map: &[u16]) {
    let m = |i: u16| map.get(usize::from(i)).copied().unwrap_or(u16::MAX);
    a.index = m(a.index);
    for s in &mut a.subscriptions {
        s.publishers.iter_mut().for_each(|p| *p = m(*p));
        s.side_publishers.iter_mut().for_each(|p| *p = m(*p));
        s.from = s.from.map(m);
    }
}

impl LiveHost for Guests {
    fn prepare(&mut self, new: &App, added: &[String]) -> Result<PostGuests, Vec<String>> {
        if let Some(why) = &self.none {
            return Err(vec![why.clone()]);
        }
        let mut errs = Vec::new();
        let mut built: BTreeMap<String, Box<dyn Actor>> = BTreeMap::new();
        for nf in new.nfs.iter().filter(|n| added.contains(&n.common.name)) {
            if nf.common.side.is_some() && !self.receiver_events {
                errs.push(format!("nf `{}`: `side` needs the stack's receiver events, which this run does not raise (no NF had `side` at start): restart the run for this change", nf.common.name));
                continue;
            }
            match nf.config.build(&nf.common) {
                Ok(a) => {
                    let a = match nf.common.active.clone() {
                        Some(range) => Box::new(super::relink::Gated::new(a, range)) as Box<dyn Actor>,
                        None => a,
                    };
                    built.insert(nf.common.name.clone(), a);
                }
                Err(e) => errs.push(e),
            }
        }
        if !errs.is_empty() {
            return Err(errs);
        }
        // The new chain, linked: the running actors' contracts and the added ones'.
        let rx = actors::io::rx_contract();
        let mut contracts: Vec<&Contract> = vec![&rx];
        for name in self.stacks.iter().chain(new.nfs.iter().map(|n| &n.common.name)) {
            match (built.get(name), self.running.get(name)) {
                (Some(a), _) => contracts.push(a.contract()),
                (None, Some((c, _))) => contracts.push(c),
                (None, None) => errs.push(format!("nf `{name}` is not running (this is a bug)")),
            }
        }
        if !errs.is_empty() {
            return Err(errs);
        }
        let linked = actors::controller::link(&contracts, &new.registry).map_err(|e| e.problems)?;
        let mut next = self.next_index;
        let map: Vec<u16> = linked
            .actors
            .iter()
            .map(|a| match self.running.get(&a.name) {
                Some((_, i)) if !built.contains_key(&a.name) => *i,
                _ => {
                    next += 1;
                    next - 1
                }
            })
            .collect();
        // A running NF's links were made at start: none may now subscribe to an added NF.
        for a in linked.actors.iter().filter(|a| !built.contains_key(&a.name)) {
            let feeds =
                a.subscriptions.iter().flat_map(|s| &s.publishers).map(|p| &linked.actors[usize::from(*p)].name);
            for g in feeds.filter(|n| built.contains_key(*n)).collect::<std::collections::BTreeSet<_>>() {
                errs.push(format!("nf `{}` would receive what the added NF `{g}` publishes: a running NF's subscriptions were linked at start; restart the run for this change", a.name));
            }
        }
        // Each added NF's host.
        let order: Vec<&str> = new.nfs.iter().map(|n| n.common.name.as_str()).collect();
        let mut prev: Option<(String, bool)> = None;
        let mut posts: Vec<(String, (String, bool))> = Vec::new();
        for (p, name) in order.iter().enumerate() {
            if !built.contains_key(*name) {
                prev = Some(self.placed.get(*name).cloned().unwrap_or((name.to_string(), false)));
                continue;
            }
            let Some(place) = self.place(&order, p, &prev, added) else {
                errs.push(format!("nf `{name}`: no running NF is kept next to it to host it"));
                continue;
            };
            if !self.hosts.boxes.contains_key(&place.0) {
                let why = self.hosts.refused.get(&place.0).map_or("has no stage in this run", String::as_str);
                errs.push(format!("nf `{name}`: an NF added live runs in the stage of the NF next to it, `{}`, which {why}: restart the run for this change", place.0));
            }
            for (g, _) in self.placed.iter().filter(|(_, hp)| **hp == place) {
                if order.iter().position(|n| n == g).is_some_and(|gp| gp > p) {
                    errs.push(format!("nf `{name}`: placing it before `{g}`, an NF added earlier in this run next to the same NF, is not supported: put it after `{g}`"));
                }
            }
            prev = Some(place.clone());
            posts.push((name.to_string(), place));
        }
        if !errs.is_empty() {
            return Err(errs);
        }
        let mut guests = Vec::new();
        for (name, (host, before)) in posts {
            let i = linked.index_of(&name).map(usize::from).expect("linked");
            let mut planned = linked.actors[i].clone();
            renumber(&mut planned, &map);
            let actor = built.remove(&name).expect("built");
            self.running.insert(name.clone(), (actor.contract().clone(), planned.index));
            self.placed.insert(name, (host.clone(), before));
            guests.push((self.hosts.boxes[&host].clone(), actor, planned, before));
        }
        self.next_index = next;
        Ok(Box::new(move |from| {
            for (host, actor, planned, before) in guests {
                host.post(Guest::new(actor, planned, from.clone(), before));
            }
        }))
    }
}
