//! The engine: turns an app file and an input into a running system, and the run into a
//! report.
//!
//! 1. open the input capture (its link type configures the L2/3 stack);
//! 2. build the actors — the L2/3 µStack, the TCP monitor when `[stack.tcp]` is present,
//!    then every `[[nf]]` in order — collecting every configuration problem;
//! 3. link them with the controller (type-checked plan);
//! 4. place each actor on a core (core-map file, or the documented default placement);
//! 5. create the shared-memory region, the packet pool and one SPSC ring between each pair
//!    of consecutive stages: `rx → l23 → [tcp →] nf1 → … → nfN → tx`;
//! 6. run one pinned executor thread per used core until the end-of-input marker has
//!    travelled the whole chain;
//! 7. collect the reports and check the books: every packet read is either emitted or
//!    dropped with a reason, and the pool balances. A mismatch is an error, never a
//!    footnote.
//!
//! The region is unlinked when the run ends — normally, on error, or after Ctrl-C (the stop
//! flag makes RX end the input early, and the chain drains as usual).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use actors::contract::StreamAccess;
use actors::controller::{self, Plan};
use actors::event::{builtin, EventRegistry};
use actors::io::{PacketSink, RxProgress, RxReport, RxStage, TxReport, TxSink};
use actors::observe::{Log, Observed};
use actors::parallel::{Merger, SeqMerger, Splitter};
use actors::private::{InnerTraceSlot, PrivateChain};
use actors::stage::{ReportSlot, Stage, StageReport};
use actors::Subscription;
use actors::{Actor, Contract, EventDesc, Publication};
use runtime::coremap::{default_placement, CoreMap, Placement, Role};
use runtime::executor::{self, CoreAssignment, Runnable};
use runtime::ports::{PcapReader, PcapWriter};
use runtime::ring::{Consumer, Producer, RingStats};
use runtime::shm::Region;
use runtime::trace::{Span, TraceActor, TraceData};
use runtime::{pool, ring, sys};
use stacks::tcp_monitor::TcpMonitor;
use stacks::L23Stack;

use crate::app::App;
use crate::report::{ActorSummary, DropLine, RunReport};

/// A progress callback (see [`RunOptions::progress`]).
pub type ProgressFn = Box<dyn FnMut(&RxProgress) + Send>;

/// How to run an app.
pub struct RunOptions {
    /// Input capture (pcap or pcapng).
    pub input: PathBuf,
    /// Output capture (pcap), if wanted.
    pub output: Option<PathBuf>,
    /// Core map; the default placement when `None`.
    pub core_map: Option<CoreMap>,
    /// Shared-memory prefix; `run<pid>-<n>` when `None`.
    pub prefix: Option<String>,
    /// Set to stop reading input early (Ctrl-C).
    pub stop: Arc<AtomicBool>,
    /// Called about every 10 ms with live input progress.
    pub progress: Option<ProgressFn>,
    /// Record a trace, keeping at most this many spans per actor.
    pub trace: Option<usize>,
    /// Execution mode.
    pub mode: Mode,
    /// Record every NF's observation log and every packet's fate (for `mbox check`).
    pub observe: bool,
    /// Put every actor on the first allowed CPU (overrides `core_map`).
    pub single_core: bool,
    /// A deliberate fault, to show that the consistency checker catches it (tests only).
    pub fault: Option<Fault>,
    /// NFs to run in their own OS process (`mbox nf`), each attached to this run's
    /// shared-memory region by name. Mode c only; the app must have been loaded from a file.
    pub external: Vec<String>,
    /// The `mbox` executable that serves external NFs (default: this program).
    pub nf_exe: Option<PathBuf>,
}

/// Deliberate faults (see [`RunOptions::fault`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Mergers go on with the first member's answer, without waiting for the others'.
    EagerMerger,
}

impl RunOptions {
    /// Options for `input` with everything else defaulted.
    pub fn new(input: impl Into<PathBuf>) -> RunOptions {
        RunOptions {
            input: input.into(),
            output: None,
            core_map: None,
            prefix: None,
            stop: Arc::default(),
            progress: None,
            trace: None,
            mode: Mode::C,
            observe: false,
            single_core: false,
            fault: None,
            external: Vec::new(),
            nf_exe: None,
        }
    }
}

/// Why a run could not start (or broke down).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// App, NF or link configuration problems, one per line.
    #[error("{}", .0.join("\n"))]
    Config(Vec<String>),
    /// The input could not be opened.
    #[error("input: {0}")]
    Input(#[from] runtime::ports::PortError),
    /// Output could not be created.
    #[error("output: {0}")]
    Output(String),
    /// Core placement.
    #[error("{0}")]
    CoreMap(#[from] runtime::coremap::CoreMapError),
    /// Shared memory, rings, pool.
    #[error("setting up shared memory: {0}")]
    Setup(String),
    /// An executor thread failed.
    #[error("{0}")]
    Exec(#[from] runtime::executor::ExecError),
}

/// How stacks and NFs are arranged (DESIGN.md §6, the paper's Figure 4).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Mode {
    /// Every NF has its own private stacks; NFs pipelined (the reference).
    A,
    /// One shared stack; one packet at a time through stack and NFs.
    B,
    /// The shared stack runs ahead asynchronously; NFs read snapshots (the default).
    #[default]
    C,
    /// As c, with read-only NFs in parallel groups behind a splitter.
    D,
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Mode, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "a" => Ok(Mode::A),
            "b" => Ok(Mode::B),
            "c" => Ok(Mode::C),
            "d" => Ok(Mode::D),
            other => Err(format!("unknown mode `{other}` (modes: a, b, c, d)")),
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mode::A => "a",
            Mode::B => "b",
            Mode::C => "c",
            Mode::D => "d",
        })
    }
}

/// Observation logs by NF name.
pub type Logs = BTreeMap<String, Log>;

/// The actors of an app, built and linked, not yet running.
pub struct Built {
    /// Actors after RX, in chain order (the L2/3 stack first, then the TCP monitor if any;
    /// in mode a, one private-stack chain per NF).
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
}

fn config_err(app: &App, problems: Vec<String>) -> RunError {
    RunError::Config(problems.into_iter().map(|p| format!("{}: {p}", app.source)).collect())
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

/// A stack instance: its actors, its TCP monitor's streams, its "events have left" counter.
type StackInstance = (Vec<Box<dyn Actor>>, Option<Arc<dyn StreamAccess>>, Arc<AtomicU64>);

/// The shared µStacks of `app`: L2/3, and the TCP monitor with `[stack.tcp]`.
fn build_stacks(app: &App, link: runtime::ports::LinkType, receiver_events: bool) -> StackInstance {
    build_shard(app, link, receiver_events, 0, Arc::new(AtomicU64::new(0)))
}

/// Stack instance `shard` (flow ids from `shard * max_flows`).
fn build_shard(
    app: &App,
    link: runtime::ports::LinkType,
    receiver_events: bool,
    shard: u32,
    completed: Arc<AtomicU64>,
) -> StackInstance {
    let l23 = L23Stack::new("l23", &app.l23, link).with_shard(shard, app.l23.max_flows);
    let mut stacks: Vec<Box<dyn Actor>> = vec![Box::new(l23)];
    let mut streams: Option<Arc<dyn StreamAccess>> = None;
    if let Some(cfg) = &app.tcp {
        let mut tcp = TcpMonitor::new("tcp", cfg);
        tcp.set_completed(completed.clone());
        tcp.set_receiver_events(receiver_events);
        streams = Some(tcp.streams());
        stacks.push(Box::new(tcp));
    }
    (stacks, streams, completed)
}

/// Builds and links the actors of `app` for frames of `link` type, arranged for `mode`.
/// Collects every problem.
pub fn build(app: &App, link: runtime::ports::LinkType, mode: Mode, logs: Option<&Logs>) -> Result<Built, RunError> {
    build_for(app, link, mode, logs, None, None)
}

/// As [`build`]; with `only`, the other NFs are contracts only (see `build_nfs`).
fn build_for(
    app: &App,
    link: runtime::ports::LinkType,
    mode: Mode,
    logs: Option<&Logs>,
    only: Option<&str>,
    trace: Option<usize>,
) -> Result<Built, RunError> {
    let registry = app.registry.clone();
    let rx = rx_contract();
    let nfs = build_nfs(app, logs, only)?;
    if mode == Mode::A {
        return build_private(app, link, nfs, registry, trace);
    }
    let receiver_events = app.nfs.iter().any(|nf| nf.common.side.is_some());
    let (mut actors, mut streams, completed) = build_stacks(app, link, receiver_events);
    let mut shards = Vec::new();
    if mode == Mode::D && app.runtime.shards > 1 {
        let per = app.l23.max_flows.min(u32::MAX as usize) as u32;
        let mut routes: Vec<(u32, Arc<dyn StreamAccess>)> = streams.iter().map(|s| (0, s.clone())).collect();
        for k in 1..app.runtime.shards {
            let (stacks, s, _) = build_shard(app, link, receiver_events, k, completed.clone());
            if let Some(s) = s {
                routes.push((k * per, s));
            }
            shards.push(stacks);
        }
        if streams.is_some() {
            streams = Some(Arc::new(stacks::shard::ShardedStreams { shards: routes }));
        }
    }
    actors.extend(nfs);
    let mut contracts: Vec<&Contract> = vec![&rx];
    contracts.extend(actors.iter().map(|a| a.contract()));
    let plan = controller::link(&contracts, &registry).map_err(|e| config_err(app, e.problems))?;
    Ok(Built { actors, streams, completed, plan, registry, shards, inner_traces: Vec::new() })
}

/// Mode a: one [`PrivateChain`] per NF, each with its own stacks.
fn build_private(
    app: &App,
    link: runtime::ports::LinkType,
    nfs: Vec<Box<dyn Actor>>,
    registry: EventRegistry,
    trace: Option<usize>,
) -> Result<Built, RunError> {
    let rx = rx_contract();
    let mut actors: Vec<Box<dyn Actor>> = Vec::new();
    let mut inner_traces = Vec::new();
    let mut upstream_contracts: Vec<Contract> = Vec::new();
    for (j, (nf, entry)) in nfs.into_iter().zip(&app.nfs).enumerate() {
        let (stacks, streams, completed) = build_stacks(app, link, entry.common.side.is_some());
        let standins: Vec<Contract> = upstream_contracts
            .iter()
            .map(|c| Contract {
                name: c.name.clone(),
                kind: "upstream".into(),
                publications: c.publications.clone(),
                ..Default::default()
            })
            .collect();
        let mut inner: Vec<&Contract> = vec![&rx];
        inner.extend(stacks.iter().map(|a| a.contract()));
        inner.extend(standins.iter());
        inner.push(nf.contract());
        let inner_plan = controller::link(&inner, &registry).map_err(|e| config_err(app, e.problems))?;
        let n_stacks = stacks.len();
        // Outer publisher k (k = 1..=j: the chain of upstream NF k-1) is stand-in
        // n_stacks + k in the inner plan.
        let upstream: Vec<Option<u16>> = (0..=j).map(|k| (k > 0).then_some((n_stacks + k) as u16)).collect();
        let nf_c = nf.contract().clone();
        let mut subscriptions =
            vec![Subscription { include_dropped: true, ..Subscription::new("frames", builtin::FRAME) }];
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
            name: nf_c.name.clone(),
            kind: format!("{}+stacks", nf_c.kind),
            subscriptions,
            publications: nf_c.publications.clone(),
            modifies: nf_c.modifies,
            drop_reasons: nf_c.drop_reasons.clone(),
        };
        upstream_contracts.push(nf_c);
        let mut chain = PrivateChain::new(outer, stacks, nf, inner_plan, upstream, streams, Some(completed));
        if let Some(cap) = trace {
            // The core is set when the spans are collected (every inner span ran on the
            // chain's core).
            chain = chain.with_trace(0, cap);
            inner_traces.extend(chain.trace_slot().map(|s| (entry.common.name.clone(), s)));
        }
        actors.push(Box::new(chain));
    }
    let mut contracts: Vec<&Contract> = vec![&rx];
    contracts.extend(actors.iter().map(|a| a.contract()));
    let plan = controller::link(&contracts, &registry).map_err(|e| config_err(app, e.problems))?;
    Ok(Built {
        actors,
        streams: None,
        completed: Arc::new(AtomicU64::new(0)),
        plan,
        registry,
        shards: Vec::new(),
        inner_traces,
    })
}

/// Mode d's parallel groups (plan indices): the app's `parallel` lists, checked, or groups
/// the controller forms from read-only NFs.
fn parallel_groups(app: &App, plan: &Plan, actors: &[Box<dyn Actor>]) -> Result<Vec<Vec<usize>>, RunError> {
    let rx = rx_contract();
    let mut contracts: Vec<&Contract> = vec![&rx];
    contracts.extend(actors.iter().map(|a| a.contract()));
    let nf_indices: Vec<usize> =
        (1..plan.actors.len()).filter(|&k| !matches!(plan.actors[k].kind.as_str(), "l23" | "tcp_monitor")).collect();
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

fn rx_contract() -> Contract {
    Contract {
        name: "rx".into(),
        kind: "rx".into(),
        publications: vec![Publication { port: "frames".into(), event: builtin::FRAME }],
        ..Default::default()
    }
}

/// All actor names in chain order, with their roles: rx, l23, the NFs, tx.
pub fn actor_roles(plan: &Plan) -> Vec<(String, Role)> {
    let mut v: Vec<(String, Role)> = plan
        .actors
        .iter()
        .map(|a| {
            let role = match a.kind.as_str() {
                "rx" => Role::Io,
                "l23" | "tcp_monitor" => Role::Stack,
                k if k.ends_with("+stacks") => Role::Nf,
                _ => Role::Nf,
            };
            (a.name.clone(), role)
        })
        .collect();
    v.push(("tx".into(), Role::Io));
    v
}

fn region_size(app: &App, rings: usize) -> usize {
    let rt = &app.runtime;
    let pool = rt.pool_buffers as usize * (rt.buffer_size as usize + 64) + 64 * 1024;
    let cap = (rt.ring_capacity as usize).next_power_of_two();
    let ring = cap * std::mem::size_of::<EventDesc>() + 64 * 1024;
    pool + rings * ring + (1 << 20)
}

/// Runs `app` over the input of `opts`.
pub fn run(app: &App, mut opts: RunOptions) -> Result<RunReport, RunError> {
    let started = Instant::now();
    let reader = PcapReader::open(&opts.input)?;
    let total_bytes = reader.total_bytes();
    let link = reader.link_type();
    let logs: Option<Logs> =
        opts.observe.then(|| app.nfs.iter().map(|nf| (nf.common.name.clone(), Log::default())).collect());
    let Built { actors, streams, completed, plan, registry, shards, inner_traces } =
        build_for(app, link, opts.mode, logs.as_ref(), None, opts.trace)?;
    let n_stacks = 1 + usize::from(app.tcp.is_some());
    let in_flight = (opts.mode == Mode::B).then(|| Arc::new(AtomicI64::new(0)));

    let mut roles = actor_roles(&plan);
    // Stack instances of shards 1.. are named `l23.1`, `tcp.1`, ...
    for k in 1..=shards.len() {
        for a in &plan.actors[1..=n_stacks] {
            roles.push((format!("{}.{k}", a.name), Role::Stack));
        }
    }
    let names: Vec<String> = roles.iter().map(|(n, _)| n.clone()).collect();
    let allowed = sys::allowed_cpus().map_err(|e| RunError::Setup(format!("reading the CPU affinity: {e}")))?;
    let placement: Placement = match &opts.core_map {
        _ if opts.single_core => Placement { cores: names.iter().map(|n| (n.clone(), allowed[0])).collect() },
        Some(map) => map.place(&names, &allowed)?,
        None => {
            let mut p = default_placement(&roles, &allowed);
            // Shard k's stacks on its own core where there are cores.
            for (name, core) in &mut p.cores {
                if let Some(k) = name.rsplit_once('.').and_then(|(_, k)| k.parse::<usize>().ok()) {
                    *core = allowed[k % allowed.len()];
                }
            }
            p
        }
    };

    let writer = match &opts.output {
        Some(p) => Some(PcapWriter::create(p, link).map_err(|e| RunError::Output(e.to_string()))?),
        None => None,
    };

    let prefix = opts.prefix.clone().unwrap_or_else(|| {
        // Unique in this process too: several runs may share it (tests, `mbox check`).
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        format!("run{}-{}", std::process::id(), NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
    });
    // The chain's layout: single stages, and in mode d parallel groups of NFs.
    let groups: Vec<Vec<usize>> = if opts.mode == Mode::D { parallel_groups(app, &plan, &actors)? } else { Vec::new() };
    let mut layout: Vec<Vec<usize>> = Vec::new(); // plan indices (1-based: after rx)
    let sharded = !shards.is_empty();
    let mut k = if sharded { 1 + n_stacks } else { 1 };
    while k < plan.actors.len() {
        match groups.iter().find(|g| g[0] == k) {
            Some(g) => {
                k += g.len();
                layout.push(g.clone());
            }
            None => {
                layout.push(vec![k]);
                k += 1;
            }
        }
    }
    let n_rings = 2
        + (shards.len() + 1) * (n_stacks + 1)
        + layout.iter().map(|n| if n.len() == 1 { 1 } else { 2 * n.len() + 1 }).sum::<usize>();
    let region = Region::create(&prefix, region_size(app, n_rings)).map_err(|e| RunError::Setup(e.to_string()))?;
    let setup = |e: &dyn std::fmt::Display| RunError::Setup(e.to_string());
    let (alloc, release, pool_view) =
        pool::create(&region, "packets", app.runtime.pool_buffers, app.runtime.buffer_size).map_err(|e| setup(&e))?;

    let ring_capacity = (app.runtime.ring_capacity as usize).next_power_of_two();
    let mut ring_names: Vec<String> = Vec::new();
    let rings_made = std::cell::Cell::new(0usize);
    let mut new_ring = |from: &str, to: &str| -> Result<(Producer<EventDesc>, Consumer<EventDesc>), RunError> {
        let i = ring_names.len();
        rings_made.set(i + 1);
        ring_names.push(format!("{from} -> {to}"));
        ring::create::<EventDesc>(&region, &format!("link{i}"), ring_capacity)
            .map_err(|e| RunError::Setup(e.to_string()))
    };
    // NFs served by their own processes: (name, input ring, output ring, core, report slot).
    let mut external: Vec<(String, String, String, usize, ReportSlot<StageReport>)> = Vec::new();
    for name in &opts.external {
        if opts.mode != Mode::C {
            return Err(RunError::Config(vec![format!(
                "NF `{name}` in its own process: only mode c supports that (this run is mode {})",
                opts.mode
            )]));
        }
        let Some(k) = plan.index_of(name) else {
            return Err(RunError::Config(vec![format!("--nf-process `{name}`: there is no NF of that name")]));
        };
        if plan.actors[usize::from(k)]
            .subscriptions
            .iter()
            .any(|s| s.event.covers(builtin::DATA_RDY) || builtin::DATA_RDY.covers(s.event))
        {
            return Err(RunError::Config(vec![format!(
                "NF `{name}` reads TCP bytestreams, which are shared between the threads of one process only: it cannot run in its own process yet"
            )]));
        }
    }

    let mut runnables: BTreeMap<String, Box<dyn Runnable>> = BTreeMap::new();
    // Splitters and mergers are not in core maps: each runs with its group's first / last member.
    let mut helpers: Vec<(String, Box<dyn Runnable>)> = Vec::new();
    let core_of = |name: &str| placement.core_of(name).unwrap_or(0) as u16;
    let name_of = |k: usize| plan.actors[k].name.clone();
    let first_name = if sharded {
        "shard-split".to_string()
    } else if layout[0].len() == 1 {
        name_of(1)
    } else {
        format!("split[{}]", layout[0].iter().map(|k| name_of(*k)).collect::<Vec<_>>().join("+"))
    };
    let (first, mut prev) = new_ring("rx", &first_name)?;
    let (mut rx, rx_slot, progress) = RxStage::new(Box::new(reader), alloc, first, opts.stop.clone());
    if let Some(f) = &in_flight {
        rx = rx.with_gate(f.clone());
    }
    if let Some(cap) = opts.trace {
        rx = rx.with_trace(core_of("rx"), cap);
    }
    runnables.insert("rx".into(), Box::new(rx));
    let mut stage_slots = Vec::new();
    let mut actors: Vec<Option<Box<dyn Actor>>> = actors.into_iter().map(Some).collect();
    let make_stage = |k: usize, actor: Box<dyn Actor>, input, output| {
        let planned = &plan.actors[k];
        let (mut stage, slot) = Stage::new(actor, planned.clone(), input, output, pool_view.clone());
        if let Some(s) = &streams {
            stage = stage.with_streams(s.clone());
        }
        if let Some(cap) = opts.trace {
            stage = stage.with_trace(core_of(&planned.name), cap);
        }
        if let Some(f) = &in_flight {
            stage = stage.with_in_flight(f.clone());
        }
        (stage, slot)
    };
    let node_name = |n: &Vec<usize>| {
        if n.len() == 1 {
            name_of(n[0])
        } else {
            format!("split[{}]", n.iter().map(|k| name_of(*k)).collect::<Vec<_>>().join("+"))
        }
    };
    if sharded {
        // rx -> shard-split -> K x (l23.k -> tcp.k) -> shard-merge -> the NFs.
        let mut instances: Vec<Vec<Box<dyn Actor>>> =
            vec![(1..=n_stacks).map(|k| actors[k - 1].take().expect("shard 0's stacks")).collect()];
        instances.extend(shards);
        let (mut to_shards, mut from_shards) = (Vec::new(), Vec::new());
        for (s, stacks) in instances.into_iter().enumerate() {
            let inst = |k: usize| if s == 0 { name_of(k) } else { format!("{}.{s}", name_of(k)) };
            let (p, mut c) = new_ring("shard-split", &inst(1))?;
            to_shards.push(p);
            for (j, actor) in stacks.into_iter().enumerate() {
                let k = j + 1;
                let to = if k == n_stacks { "shard-merge".to_string() } else { inst(k + 1) };
                let (p2, c2) = new_ring(&inst(k), &to)?;
                let (mut stage, slot) = make_stage(k, actor, c, p2);
                stage = stage.with_name(inst(k));
                if let Some(cap) = opts.trace {
                    stage = stage.with_trace(core_of(&inst(k)), cap);
                }
                runnables.insert(inst(k), Box::new(stage));
                stage_slots.push(slot);
                c = c2;
            }
            from_shards.push(c);
        }
        let next = layout.first().map_or_else(|| "tx".to_string(), node_name);
        let (p, c) = new_ring("shard-merge", &next)?;
        helpers
            .push(("rx".into(), Box::new(stacks::shard::ShardSplitter::new(prev, to_shards, pool_view.clone(), link))));
        helpers.push(("l23".into(), Box::new(SeqMerger::new("shard-merge".into(), from_shards, p))));
        prev = c;
    }
    for (ni, node) in layout.iter().enumerate() {
        let next_name = layout.get(ni + 1).map_or_else(|| "tx".to_string(), node_name);
        if let [k] = node.as_slice() {
            let in_ring = format!("link{}", rings_made.get() - 1);
            let (p, c) = new_ring(&name_of(*k), &next_name)?;
            let actor = actors[k - 1].take().expect("each actor once");
            if opts.external.contains(&name_of(*k)) {
                // Another process serves this stage: give up our ends of its rings.
                drop((actor, prev, p));
                let slot: ReportSlot<StageReport> = Arc::default();
                let out_ring = format!("link{}", rings_made.get() - 1);
                external.push((
                    name_of(*k),
                    in_ring,
                    out_ring,
                    placement.core_of(&name_of(*k)).unwrap_or(0),
                    slot.clone(),
                ));
                stage_slots.push(slot);
                prev = c;
                continue;
            }
            let (stage, slot) = make_stage(*k, actor, prev, p);
            runnables.insert(name_of(*k), Box::new(stage));
            stage_slots.push(slot);
            prev = c;
            continue;
        }
        let group = node.iter().map(|k| name_of(*k)).collect::<Vec<_>>().join("+");
        let (mut to_members, mut to_merger) = (Vec::new(), Vec::new());
        for &k in node {
            let (p, c) = new_ring(&format!("split[{group}]"), &name_of(k))?;
            let (q, d) = new_ring(&name_of(k), &format!("merge[{group}]"))?;
            let actor = actors[k - 1].take().expect("each actor once");
            let (stage, slot) = make_stage(k, actor, c, q);
            runnables.insert(name_of(k), Box::new(stage));
            stage_slots.push(slot);
            to_members.push(p);
            to_merger.push(d);
        }
        let (p, c) = new_ring(&format!("merge[{group}]"), &next_name)?;
        helpers.push((name_of(node[0]), Box::new(Splitter::new(format!("split[{group}]"), prev, to_members))));
        let mut merger = Merger::new(format!("merge[{group}]"), to_merger, p);
        if opts.fault == Some(Fault::EagerMerger) {
            merger = merger.with_fault_eager();
        }
        helpers.push((name_of(*node.last().expect("members")), Box::new(merger)));
        prev = c;
    }
    let n_rings = ring_names.len();
    let tx_input = prev;
    let sink: Box<dyn PacketSink> = Box::new(writer);
    let (mut tx, tx_slot) = TxSink::new(tx_input, release, pool_view.clone(), sink);
    tx.set_completed(completed);
    if let Some(cap) = opts.trace {
        tx = tx.with_trace(plan.actors.len() as u16, core_of("tx"), cap);
    }
    if let Some(f) = &in_flight {
        tx = tx.with_in_flight(f.clone());
    }
    if opts.observe {
        tx = tx.with_record();
    }
    runnables.insert("tx".into(), Box::new(tx));

    let assignments: Vec<CoreAssignment> = placement
        .by_core()
        .into_iter()
        .map(|(core, actor_names)| {
            let mut list: Vec<Box<dyn Runnable>> = Vec::new();
            for n in &actor_names {
                if let Some(r) = runnables.remove(n) {
                    list.push(r);
                }
                for (owner, h) in std::mem::take(&mut helpers) {
                    if &owner == n {
                        list.push(h);
                    } else {
                        helpers.push((owner, h));
                    }
                }
            }
            CoreAssignment { core, actors: list }
        })
        .collect();

    // `opts.stop` only asks RX to end the input (the chain then drains); the executor's own
    // flag aborts every thread at once and is set only when an actor panics, or when an NF
    // process fails.
    let abort = Arc::new(AtomicBool::new(false));
    let children = spawn_nf_processes(app, &opts, &prefix, link, &external, &abort)?;
    let exec = std::thread::Builder::new()
        .name("mbox-exec".into())
        .spawn(move || executor::run(assignments, abort))
        .map_err(|e| setup(&e))?;
    while !exec.is_finished() {
        if let Some(cb) = opts.progress.as_mut() {
            cb(&progress);
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    if let Some(cb) = opts.progress.as_mut() {
        cb(&progress);
    }
    let cores = exec.join().map_err(|_| RunError::Setup("the executor thread panicked".into()));
    if !matches!(cores, Ok(Ok(_))) {
        for c in &children {
            c.kill.store(true, Ordering::SeqCst);
        }
    }
    let (child_errors, nf_processes) = collect_nf_processes(children, &external);
    let cores = cores??;
    if !child_errors.is_empty() {
        return Err(RunError::Setup(child_errors.join("\n")));
    }

    let mut rx: RxReport = take(&rx_slot);
    let mut tx: TxReport = take(&tx_slot);
    let mut stages: Vec<StageReport> = stage_slots.iter().map(take).collect();
    let trace = opts.trace.map(|_| {
        let mut actors: Vec<TraceActor> = plan
            .actors
            .iter()
            .map(|a| TraceActor { name: a.name.clone(), kind: a.kind.clone(), core: core_of(&a.name) })
            .collect();
        actors.push(TraceActor { name: "tx".into(), kind: "tx".into(), core: core_of("tx") });
        let mut spans = std::mem::take(&mut rx.trace);
        let mut dropped = rx.trace_dropped + tx.trace_dropped;
        for s in &mut stages {
            spans.append(&mut s.trace);
            dropped += s.trace_dropped;
        }
        spans.append(&mut tx.trace);
        // Mode a: each chain's inner work, as actors `chain/l23`, `chain/tcp`, `chain/nf`.
        for (chain, slot) in &inner_traces {
            let inner = slot.lock().map(|g| g.clone()).unwrap_or_default();
            let base = actors.len() as u16;
            let core = core_of(chain);
            actors.extend(inner.actors.iter().map(|(n, k)| TraceActor {
                name: format!("{chain}/{n}"),
                kind: k.clone(),
                core,
            }));
            spans.extend(inner.spans.iter().map(|s| Span {
                actor: base + s.actor,
                publisher: base + s.publisher,
                core,
                ..*s
            }));
            dropped += inner.dropped;
        }
        let event_types = registry.iter().map(|(t, n)| (t.raw(), n.to_string())).collect();
        TraceData { actors, event_types, spans, dropped }
    });
    let rings: Vec<(String, RingStats)> = (0..n_rings)
        .map(|i| {
            let stats = ring::peek_stats(&region, &format!("link{i}")).unwrap_or_default();
            (ring_names[i].clone(), stats)
        })
        .collect();
    let pool = pool_view.stats();
    let elapsed = started.elapsed();
    drop(pool_view);
    drop(region);

    let report = assemble(AssembleInput {
        app,
        opts: &opts,
        plan: &plan,
        registry: &registry,
        placement: &placement,
        rx,
        tx,
        stages,
        rings,
        pool,
        cores,
        elapsed,
        total_bytes,
    });
    let observations = logs
        .map(|l| l.into_iter().map(|(k, v)| (k, v.lock().map(|g| g.clone()).unwrap_or_default())).collect())
        .unwrap_or_default();
    Ok(RunReport { trace, observations, nf_processes, ..report })
}

struct NfProcess {
    name: String,
    pid: u32,
    /// Set to have the watcher kill the process (the run failed without it).
    kill: Arc<AtomicBool>,
    report: PathBuf,
    watcher: std::thread::JoinHandle<Result<(), String>>,
}

/// Starts `mbox nf NAME --attach PREFIX ...` for every external NF, with a watcher thread
/// that aborts the run if the process fails (the chain could not finish without it).
fn spawn_nf_processes(
    app: &App,
    opts: &RunOptions,
    prefix: &str,
    link: runtime::ports::LinkType,
    external: &[(String, String, String, usize, ReportSlot<StageReport>)],
    abort: &Arc<AtomicBool>,
) -> Result<Vec<NfProcess>, RunError> {
    let mut out = Vec::new();
    for (name, input, output, core, _) in external {
        if !std::path::Path::new(&app.source).is_file() {
            return Err(RunError::Config(vec![format!(
                "NF `{name}` in its own process needs the app file on disk (`{}` is not a file)",
                app.source
            )]));
        }
        let exe = match &opts.nf_exe {
            Some(p) => p.clone(),
            None => {
                std::env::current_exe().map_err(|e| RunError::Setup(format!("finding the mbox executable: {e}")))?
            }
        };
        let report = std::env::temp_dir().join(format!("mbox-nf-{prefix}-{name}.json"));
        let mut child = std::process::Command::new(&exe)
            .args([
                "nf",
                name,
                "--app",
                &app.source,
                "--attach",
                prefix,
                "--input-ring",
                input,
                "--output-ring",
                output,
            ])
            .args(["--core", &core.to_string(), "--link", link_name(link), "--report"])
            .arg(&report)
            .stdin(std::process::Stdio::null())
            .spawn()
            .map_err(|e| RunError::Setup(format!("starting `{} nf {name}`: {e}", exe.display())))?;
        let pid = child.id();
        let abort = abort.clone();
        let who = name.clone();
        let kill = Arc::new(AtomicBool::new(false));
        let kill_flag = kill.clone();
        let watcher = std::thread::spawn(move || loop {
            match child.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(()),
                Ok(Some(status)) => {
                    abort.store(true, Ordering::SeqCst);
                    return Err(format!("NF process `{who}` (pid {pid}) failed: {status}"));
                }
                Ok(None) if kill_flag.load(Ordering::SeqCst) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!("NF process `{who}` (pid {pid}) was stopped because the run failed"));
                }
                Ok(None) => std::thread::sleep(std::time::Duration::from_millis(5)),
                Err(e) => return Err(format!("NF process `{who}`: {e}")),
            }
        });
        out.push(NfProcess { name: name.clone(), pid, kill, report, watcher });
    }
    Ok(out)
}

/// Waits for the NF processes and takes their reports into their slots.
fn collect_nf_processes(
    children: Vec<NfProcess>,
    external: &[(String, String, String, usize, ReportSlot<StageReport>)],
) -> (Vec<String>, Vec<(String, u32)>) {
    let mut errors = Vec::new();
    let pids = children.iter().map(|c| (c.name.clone(), c.pid)).collect();
    for c in children {
        match c.watcher.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => errors.push(e),
            Err(_) => errors.push(format!("watching NF process `{}` failed", c.name)),
        }
        let slot = external.iter().find(|e| e.0 == c.name).map(|e| e.4.clone());
        match std::fs::read_to_string(&c.report)
            .map_err(|e| e.to_string())
            .and_then(|t| serde_json::from_str::<StageReport>(&t).map_err(|e| e.to_string()))
        {
            Ok(r) => {
                if let Some(s) = slot {
                    actors::stage::publish(&s, &r);
                }
            }
            Err(e) => {
                errors.push(format!("reading the report of NF process `{}` ({}): {e}", c.name, c.report.display()))
            }
        }
        let _ = std::fs::remove_file(&c.report);
    }
    (errors, pids)
}

/// The `--link` name of a link type.
pub fn link_name(l: runtime::ports::LinkType) -> &'static str {
    match l {
        runtime::ports::LinkType::Ethernet => "ethernet",
        runtime::ports::LinkType::RawIp => "raw-ip",
        runtime::ports::LinkType::LinuxSll => "linux-sll",
    }
}

/// Parses a `--link` name.
pub fn parse_link(s: &str) -> Option<runtime::ports::LinkType> {
    match s {
        "ethernet" => Some(runtime::ports::LinkType::Ethernet),
        "raw-ip" => Some(runtime::ports::LinkType::RawIp),
        "linux-sll" => Some(runtime::ports::LinkType::LinuxSll),
        _ => None,
    }
}

/// Serves one NF of `app` in this process (`mbox nf`): attaches to the run's region by
/// prefix, to its input and output rings by name, and runs the NF's stage pinned to `core`
/// until the end marker has passed. The NF is linked exactly as in the main process (the
/// other NFs are built as contracts only, without side effects).
pub fn serve_nf(
    app: &App,
    name: &str,
    link: runtime::ports::LinkType,
    prefix: &str,
    input: &str,
    output: &str,
    core: usize,
) -> Result<StageReport, RunError> {
    let Built { actors, plan, .. } = build_for(app, link, Mode::C, None, Some(name), None)?;
    let k = plan
        .index_of(name)
        .ok_or_else(|| RunError::Config(vec![format!("there is no NF named `{name}` in {}", app.source)]))?;
    let k = usize::from(k);
    let actor = actors.into_iter().nth(k - 1).expect("plan and actors agree");
    let setup = |e: &dyn std::fmt::Display| RunError::Setup(e.to_string());
    let region = Region::attach(prefix).map_err(|e| setup(&e))?;
    let pool = pool::attach(&region, "packets").map_err(|e| setup(&e))?;
    let cons = ring::attach_consumer::<EventDesc>(&region, input).map_err(|e| setup(&e))?;
    let prod = ring::attach_producer::<EventDesc>(&region, output).map_err(|e| setup(&e))?;
    let (stage, slot) = Stage::new(actor, plan.actors[k].clone(), cons, prod, pool);
    // If the run's process goes away, stop instead of waiting for its events forever.
    let abort = Arc::new(AtomicBool::new(false));
    let parent = std::os::unix::process::parent_id();
    let (flag, done) = (abort.clone(), Arc::new(AtomicBool::new(false)));
    let done_flag = done.clone();
    let watchdog = std::thread::spawn(move || {
        while !done_flag.load(Ordering::SeqCst) {
            if std::os::unix::process::parent_id() != parent {
                flag.store(true, Ordering::SeqCst);
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    });
    let result = executor::run(vec![CoreAssignment { core, actors: vec![Box::new(stage)] }], abort.clone());
    done.store(true, Ordering::SeqCst);
    let _ = watchdog.join();
    result?;
    if abort.load(Ordering::SeqCst) {
        return Err(RunError::Setup("the run this NF served went away".into()));
    }
    Ok(take(&slot))
}

fn take<T: Clone + Default>(slot: &Arc<Mutex<T>>) -> T {
    slot.lock().map(|g| g.clone()).unwrap_or_default()
}

struct AssembleInput<'a> {
    app: &'a App,
    opts: &'a RunOptions,
    plan: &'a Plan,
    registry: &'a EventRegistry,
    placement: &'a Placement,
    rx: RxReport,
    tx: TxReport,
    stages: Vec<StageReport>,
    rings: Vec<(String, RingStats)>,
    pool: runtime::pool::PoolStats,
    cores: Vec<runtime::executor::CoreReport>,
    elapsed: std::time::Duration,
    total_bytes: Option<u64>,
}

fn assemble(i: AssembleInput<'_>) -> RunReport {
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let actor_name = |idx: u16| i.plan.actors.get(usize::from(idx)).map_or("?".to_string(), |a| a.name.clone());
    let reason_name = |idx: u16, r: u16| {
        i.plan
            .actors
            .get(usize::from(idx))
            .and_then(|a| a.drop_reasons.get(usize::from(r)).cloned())
            .unwrap_or_else(|| format!("reason {r}"))
    };
    let mut dropped: Vec<DropLine> =
        i.tx.packet_drops
            .iter()
            .map(|((a, r), n)| DropLine { actor: actor_name(*a), reason: reason_name(*a, *r), packets: *n })
            .collect();
    if i.rx.too_large > 0 {
        dropped.insert(
            0,
            DropLine { actor: "rx".into(), reason: "frame larger than pool buffer".into(), packets: i.rx.too_large },
        );
    }
    let event_drops: Vec<DropLine> =
        i.tx.event_drops
            .iter()
            .map(|((a, r), n)| DropLine { actor: actor_name(*a), reason: reason_name(*a, *r), packets: *n })
            .collect();
    let packets_dropped: u64 = dropped.iter().map(|d| d.packets).sum();

    if let Some(e) = &i.rx.error {
        errors.push(format!("reading `{}`: {e} (packets before it were processed)", i.opts.input.display()));
    }
    if let Some(n) = &i.rx.note {
        warnings.push(format!("`{}`: {n}", i.opts.input.display()));
    }
    if i.rx.interrupted {
        warnings.push("interrupted: input reading stopped early; the chain was drained and flushed".into());
    }
    if let Some(e) = &i.tx.error {
        errors.push(format!("writing the output: {e}"));
    }
    for s in &i.stages {
        if let Some(e) = &s.error {
            errors.push(e.clone());
        }
        if !s.finished {
            errors.push(format!("actor `{}` did not finish", s.name));
        }
    }
    if !i.rx.finished || !i.tx.finished {
        errors.push("the run did not reach the end of the chain".into());
    }
    if i.rx.packets_in != i.tx.packets_out + packets_dropped {
        errors.push(format!(
            "accounting mismatch: {} packets in, {} out + {} dropped — {} unaccounted for (this is a bug)",
            i.rx.packets_in,
            i.tx.packets_out,
            packets_dropped,
            i.rx.packets_in as i128 - (i.tx.packets_out + packets_dropped) as i128
        ));
    }
    if !i.pool.balanced() {
        errors.push(format!(
            "packet pool does not balance: {} allocated, {} freed, {} in use (this is a bug)",
            i.pool.allocated, i.pool.freed, i.pool.in_use
        ));
    }

    let actors = i
        .stages
        .iter()
        .map(|s| ActorSummary {
            name: s.name.clone(),
            kind: s.kind.clone(),
            core: i.placement.core_of(&s.name),
            handled: s.handled.iter().map(|(t, n)| (i.registry.name(*t), *n)).collect(),
            handled_total: s.handled_total(),
            passed: s.passed,
            published: s.published,
            drops: s.drops.clone(),
            stalls: s.stalls,
            counters: s.counters.iter().cloned().collect(),
        })
        .collect();

    let secs = i.elapsed.as_secs_f64();
    RunReport {
        app: i.app.source.clone(),
        input: i.opts.input.display().to_string(),
        input_bytes: i.total_bytes,
        output: i.opts.output.as_ref().map(|p| p.display().to_string()),
        packets_in: i.rx.packets_in,
        bytes_in: i.rx.bytes_in,
        packets_out: i.tx.packets_out,
        bytes_out: i.tx.bytes_out,
        packets_written: i.tx.written,
        packets_dropped,
        dropped,
        event_drops,
        rx_pool_stalls: i.rx.pool_stalls,
        rx_ring_stalls: i.rx.ring_stalls,
        actors,
        rings: i.rings.into_iter().map(|(n, s)| crate::report::RingLine { link: n, stats: s }).collect(),
        pool_balanced: i.pool.balanced(),
        pool: i.pool,
        cores: i.cores,
        links: i.plan.links.clone(),
        elapsed_s: secs,
        packets_per_s: if secs > 0.0 { i.rx.packets_in as f64 / secs } else { 0.0 },
        interrupted: i.rx.interrupted,
        warnings,
        errors,
        trace: None,
        observations: BTreeMap::new(),
        nf_processes: Vec::new(),
        mode: i.opts.mode.to_string(),
        emitted: i
            .tx
            .emitted
            .iter()
            .map(|(seq, flow, by)| crate::report::Emitted {
                seq: *seq,
                flow: *flow,
                dropped: by.map(|(a, r)| format!("{}: {}", actor_name(a), reason_name(a, r))),
            })
            .collect(),
    }
}
