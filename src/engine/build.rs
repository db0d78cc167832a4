//! Step 2 and 3 of a run: build the actors of an app and link them into a plan.
//!
//! * the NFs, each wrapped in an observer when the run records observation logs;
//! * modes b, c, d: one instance of every µStack of the app ([`stacks::registry`]), then the
//!   NFs, linked in chain order; mode d with `[runtime] shards > 1` builds one more stack
//!   instance per extra shard, its flow ids in its own range, and lets the NFs read every
//!   instance's bytestreams through [`ShardedStreams`];
//! * mode a: one [`PrivateChain`] per NF, each with private instances of the stacks, linked
//!   inside itself (the upstream NFs as publishing stand-ins) and outside as one actor;
//! * mode d's parallel groups of NFs, from the app or formed by the controller.
//!
//! Every configuration and link problem is collected before failing ([`RunError::Config`]).

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use actors::contract::StreamAccess;
use actors::controller::{self, Plan};
use actors::event::{builtin, EventRegistry};
use actors::observe::Observed;
use actors::private::{InnerTraceSlot, PrivateChain};
use actors::Subscription;
use actors::{Actor, ActorRole, Contract};
use runtime::ports::LinkType;
use stacks::registry::{self, StackContext};
use stacks::shard::ShardedStreams;

use actors::io::rx_contract;

use super::{Logs, Mode, RunError};
use crate::app::{App, NfEntry};

/// The actors of an app, built and linked, not yet running.
pub struct Built {
    /// Actors after RX, in chain order (the µStacks first, then the NFs; in mode a, one
    /// private-stack chain per NF).
    pub actors: Vec<Box<dyn Actor>>,
    /// The TCP monitor's streams, for the stages after it (none in mode a: each NF reads its
    /// private monitor's).
    pub streams: Option<Arc<dyn StreamAccess>>,
    /// Where TX reports how far events have left the chain (the TCP monitor frees stream
    /// memory by it).
    pub completed: Arc<AtomicU64>,
    /// The linked plan (RX at index 0).
    pub plan: Plan,
    /// Event names.
    pub registry: EventRegistry,
    /// Mode d: the stack instances of shards 1.. (shard 0's are the first `actors`).
    pub shards: Vec<Vec<Box<dyn Actor>>>,
    /// Mode a with tracing: each private chain's inner spans (its stacks' and its NF's work),
    /// by chain name.
    pub inner_traces: Vec<(String, InnerTraceSlot)>,
    /// The splicer's feedback path and frames, for TX (an app with `[stack.splicer]`).
    pub loopback: Option<Arc<actors::splice::Loopback>>,
}

/// The problems of `app`, each prefixed with its file.
pub(super) fn config_err(app: &App, problems: Vec<String>) -> RunError {
    RunError::Config(problems.into_iter().map(|p| format!("{}: {p}", app.source)).collect())
}

/// Builds and links the actors of `app` for frames of `link` type, arranged for `mode`.
/// Collects every problem.
pub fn build(app: &App, link: LinkType, mode: Mode, logs: Option<&Logs>) -> Result<Built, RunError> {
    build_for(app, link, mode, logs, None, None)
}

/// As [`build`]; with `only`, the other NFs are contracts only (see `build_nfs`); with
/// `trace`, mode a's private chains record their inner spans.
pub(super) fn build_for(
    app: &App,
    link: LinkType,
    mode: Mode,
    logs: Option<&Logs>,
    only: Option<&str>,
    trace: Option<usize>,
) -> Result<Built, RunError> {
    let registry = app.registry.clone();
    let nfs = build_nfs(app, logs, only)?;
    if let (Some(why), Mode::A | Mode::D) = (app.stacks.iter().find_map(|s| s.config.sends_frames()), mode) {
        return Err(config_err(
            app,
            vec![format!("{why}: it runs in modes b and c only, not mode {}", format!("{mode:?}").to_lowercase())],
        ));
    }
    if mode == Mode::A {
        return build_private(app, link, nfs, registry, trace);
    }
    let receiver_events = app.nfs.iter().any(|nf| nf.common.side.is_some());
    let completed = Arc::new(AtomicU64::new(0));
    let (mut actors, mut streams, loopback) = build_stacks(app, link, receiver_events, 0, &completed);
    let mut shards = Vec::new();
    if mode == Mode::D && app.runtime.shards > 1 {
        let per = registry::flow_ids_per_instance(&app.stacks);
        let mut routes: Vec<(u32, Arc<dyn StreamAccess>)> = streams.iter().map(|s| (0, s.clone())).collect();
        for k in 1..app.runtime.shards {
            let (stacks, s, _) = build_stacks(app, link, receiver_events, k, &completed);
            routes.extend(s.map(|s| (k.saturating_mul(per), s)));
            shards.push(stacks);
        }
        if streams.is_some() {
            streams = Some(Arc::new(ShardedStreams { shards: routes }));
        }
    }
    actors.extend(nfs);
    let mut plan = link_chain(app, &actors, &registry)?;
    super::supervise::add_failure_reasons(app, &mut plan);
    Ok(Built { actors, streams, completed, plan, registry, shards, inner_traces: Vec::new(), loopback })
}

/// Links RX and `actors` in chain order.
fn link_chain(app: &App, actors: &[Box<dyn Actor>], registry: &EventRegistry) -> Result<Plan, RunError> {
    let rx = rx_contract();
    let mut contracts: Vec<&Contract> = vec![&rx];
    contracts.extend(actors.iter().map(|a| a.contract()));
    controller::link(&contracts, registry).map_err(|e| config_err(app, e.problems))
}

/// Builds the NFs of `app`, each wrapped in an observer when `logs` asks for it. With
/// `only`, every other NF is built without side effects (for its contract).
fn build_nfs(app: &App, logs: Option<&Logs>, only: Option<&str>) -> Result<Vec<Box<dyn Actor>>, RunError> {
    let mut errs = Vec::new();
    let mut out = Vec::new();
    for nf in &app.nfs {
        let built = match only {
            Some(n) if n != nf.common.name => nf.config.contract_only(&nf.common),
            _ => nf.config.build(&nf.common),
        };
        // An NF an offline relink adds or removes handles only its packets (`relink.rs`).
        let built = built.map(|a| match nf.common.active.clone() {
            Some(range) => Box::new(super::relink::Gated::new(a, range)) as Box<dyn Actor>,
            None => a,
        });
        match built {
            Ok(a) => match logs.and_then(|l| l.get(&nf.common.name)) {
                Some(log) => out.push(Box::new(Observed::new(a, app.registry.clone(), log.clone())) as Box<dyn Actor>),
                None => out.push(a),
            },
            Err(e) => errs.push(e),
        }
    }
    if errs.is_empty() {
        Ok(out)
    } else {
        Err(config_err(app, errs))
    }
}

/// A stack instance of every µStack, in chain order, and the streams the NFs read.
type StackSet = (Vec<Box<dyn Actor>>, Option<Arc<dyn StreamAccess>>, Option<Arc<actors::splice::Loopback>>);

/// One instance of every µStack of `app`, for shard `shard` (flow ids from `shard ×` the
/// stacks' flow-id range), in chain order; and the streams of the last that has some.
fn build_stacks(app: &App, link: LinkType, receiver_events: bool, shard: u32, completed: &Arc<AtomicU64>) -> StackSet {
    let flow_base = shard.saturating_mul(registry::flow_ids_per_instance(&app.stacks));
    let proxy_nfs = app.proxy_specs();
    let cx = StackContext { link, shard, flow_base, completed, receiver_events, proxy_nfs: &proxy_nfs };
    let mut actors = Vec::new();
    let mut streams = None;
    let mut loopback = None;
    for stack in &app.stacks {
        let instance = stack.build(&cx);
        actors.push(instance.actor);
        streams = instance.streams.or(streams);
        loopback = instance.loopback.or(loopback);
    }
    (actors, streams, loopback)
}

/// Mode a: one [`PrivateChain`] per NF, each with its own stacks.
fn build_private(
    app: &App,
    link: LinkType,
    nfs: Vec<Box<dyn Actor>>,
    registry: EventRegistry,
    trace: Option<usize>,
) -> Result<Built, RunError> {
    let mut actors: Vec<Box<dyn Actor>> = Vec::new();
    let mut inner_traces = Vec::new();
    let mut upstream_contracts: Vec<Contract> = Vec::new();
    for (nf, entry) in nfs.into_iter().zip(&app.nfs) {
        let mut chain = private_chain(app, link, nf, entry, &upstream_contracts, &registry)?;
        upstream_contracts.push(chain.nf_contract);
        if let Some(cap) = trace {
            // The core is set when the spans are collected (every inner span ran on the
            // chain's core).
            chain.chain = chain.chain.with_trace(0, cap);
            inner_traces.extend(chain.chain.trace_slot().map(|s| (entry.common.name.clone(), s)));
        }
        actors.push(Box::new(chain.chain));
    }
    let mut plan = link_chain(app, &actors, &registry)?;
    super::supervise::add_failure_reasons(app, &mut plan);
    Ok(Built {
        actors,
        streams: None,
        completed: Arc::new(AtomicU64::new(0)),
        plan,
        registry,
        shards: Vec::new(),
        inner_traces,
        loopback: None,
    })
}

/// One of mode a's private chains, and its NF's own contract (for the chains after it).
struct Private {
    chain: PrivateChain,
    nf_contract: Contract,
}

/// The private chain of `nf`: its own stacks, stand-ins for the NFs before it (which
/// publish into it from outside: `upstream`), the NF itself.
fn private_chain(
    app: &App,
    link: LinkType,
    nf: Box<dyn Actor>,
    entry: &NfEntry,
    upstream: &[Contract],
    registry: &EventRegistry,
) -> Result<Private, RunError> {
    let completed = Arc::new(AtomicU64::new(0));
    let (stacks, streams, _) = build_stacks(app, link, entry.common.side.is_some(), 0, &completed);
    let standins: Vec<Contract> = upstream
        .iter()
        .map(|c| Contract {
            name: c.name.clone(),
            kind: "upstream".into(),
            publications: c.publications.clone(),
            ..Default::default()
        })
        .collect();
    let rx = rx_contract();
    let mut inner: Vec<&Contract> = vec![&rx];
    inner.extend(stacks.iter().map(|a| a.contract()));
    inner.extend(standins.iter());
    inner.push(nf.contract());
    let inner_plan = controller::link(&inner, registry).map_err(|e| config_err(app, e.problems))?;
    let n_stacks = stacks.len();
    // Outer publisher k (k = 1..=j: the chain of upstream NF k-1) is stand-in
    // n_stacks + k in the inner plan.
    let publishers: Vec<Option<u16>> = (0..=upstream.len()).map(|k| (k > 0).then_some((n_stacks + k) as u16)).collect();
    let nf_contract = nf.contract().clone();
    let mut subscriptions = vec![Subscription { include_dropped: true, ..Subscription::new("frames", builtin::FRAME) }];
    let last = inner_plan.actors.last().expect("the NF");
    for s in &last.subscriptions {
        for p in &s.publishers {
            let p = usize::from(*p);
            if p > n_stacks {
                let name = inner_plan.actors[p].name.clone();
                subscriptions.push(Subscription { from: Some(name), ..Subscription::new(&s.port, s.event) });
            }
        }
    }
    let outer = Contract {
        name: nf_contract.name.clone(),
        kind: format!("{}+stacks", nf_contract.kind),
        subscriptions,
        publications: nf_contract.publications.clone(),
        modifies: nf_contract.modifies,
        drop_reasons: nf_contract.drop_reasons.clone(),
    };
    let chain = PrivateChain::new(outer, stacks, nf, inner_plan, publishers, streams, Some(completed));
    Ok(Private { chain, nf_contract })
}

/// Mode d's parallel groups (plan indices): the app's `parallel` lists, checked, or groups
/// the controller forms from read-only NFs.
pub(super) fn parallel_groups(app: &App, plan: &Plan, actors: &[Box<dyn Actor>]) -> Result<Vec<Vec<usize>>, RunError> {
    let rx = rx_contract();
    let mut contracts: Vec<&Contract> = vec![&rx];
    contracts.extend(actors.iter().map(|a| a.contract()));
    let nf_indices: Vec<usize> = (1..plan.actors.len()).filter(|&k| plan.actors[k].role() == ActorRole::Nf).collect();
    if app.parallel.is_empty() {
        return Ok(controller::groups::auto(&contracts, &nf_indices, &app.registry));
    }
    let mut problems = Vec::new();
    let mut out = Vec::new();
    for names in &app.parallel {
        let idx: Vec<usize> = names.iter().filter_map(|n| plan.index_of(n).map(usize::from)).collect();
        problems.extend(controller::groups::check(&contracts, &idx, &app.registry));
        out.push(idx);
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(config_err(app, problems))
    }
}
