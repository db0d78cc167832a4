//! Step 5 of a run: wiring the built actors along the [`Layout`] — create every ring of the
//! layout in the shared-memory region, then hand each stage, splitter, merger, the RX stage
//! and the TX sink the ends of its rings.
//!
//! Contract: every ring of the layout is created, in its order, as `link{i}`; each end is
//! taken by exactly the runnable the layout names (a stage served by another process,
//! `--nf-process`, gives its ends up and is recorded as an [`ExternalNf`]). Stage reports
//! come back in chain order: the stack shards' instances first (shard by shard), then the
//! nodes. Splitters and mergers are helpers that run with a stage of theirs (see
//! [`Wired::helpers`]).

use std::collections::BTreeMap;
use std::sync::atomic::AtomicI64;
use std::sync::Arc;

use actors::contract::StreamAccess;
use actors::controller::Plan;
use actors::io::{Ingress, PacketSink, PacketSource, RxProgress, RxReport, RxStage, TxLive, TxReport, TxSink};
use actors::parallel::{Merger, SeqMerger, Splitter};
use actors::stage::{ReportSlot, Stage, StageReport};
use actors::{Actor, EventDesc};
use runtime::coremap::Placement;
use runtime::executor::Runnable;
use runtime::pool::{PoolAllocator, PoolReleaser, PoolView};
use runtime::ports::LinkType;
use runtime::ring::{self, Consumer, Producer};
use runtime::shm::Region;
use stacks::shard::ShardSplitter;

use super::layout::{shm_name, End, Layout, Node};
use super::{Fault, Mode, RunError, RunOptions};

/// An NF served by its own process (`mbox nf`): the names of its rings in the region.
pub(crate) struct ExternalNf {
    /// The NF's name.
    pub name: String,
    /// The ring it reads.
    pub input: String,
    /// The ring it writes.
    pub output: String,
    /// The core it is placed on.
    pub core: usize,
    /// Where its report goes when the process has written it.
    pub slot: ReportSlot<StageReport>,
    /// Its plan index (the `publisher` of what it publishes).
    pub index: u16,
    /// The stand-in that takes its place if its process dies (`on_failure` bypass, drop).
    pub stand_in: Arc<super::supervise::StandInCtl>,
    /// Set when its process died: TX reclaims, at the end, the buffers it held.
    pub sweep: Arc<std::sync::atomic::AtomicBool>,
}

/// The wired chain, ready to be placed on cores.
pub(crate) struct Wired {
    /// Every stage, RX and TX, by name.
    pub runnables: BTreeMap<String, Box<dyn Runnable>>,
    /// Splitters and mergers, each with the name of the actor whose core it runs on (they are
    /// not in core maps: each runs with its group's first / last member, the shard splitter
    /// with RX, the shard merger with the first stack).
    pub helpers: Vec<(String, Box<dyn Runnable>)>,
    /// The NFs other processes serve.
    pub external: Vec<ExternalNf>,
    /// RX's live progress.
    pub progress: Arc<RxProgress>,
    /// TX's live counters (drops sized from the plan's drop reasons).
    pub tx_live: Arc<TxLive>,
    /// Where RX, TX and the stages leave their reports.
    pub slots: Slots,
    /// The NF stages that can host NFs added while the run goes on, by NF name, and why
    /// each other NF cannot (`guests.rs`).
    pub hosts: super::guests::Hostable,
}

/// Where the chain's runnables leave their reports when they finish.
pub(crate) struct Slots {
    /// RX's report.
    pub rx: ReportSlot<RxReport>,
    /// TX's report.
    pub tx: ReportSlot<TxReport>,
    /// Every stage's report, in chain order.
    pub stages: Vec<ReportSlot<StageReport>>,
}

/// What the wiring needs besides the actors.
pub(crate) struct WireInput<'a> {
    pub opts: &'a RunOptions,
    pub plan: &'a Plan,
    pub layout: &'a Layout,
    pub placement: &'a Placement,
    pub region: &'a Arc<Region>,
    pub ring_capacity: usize,
    pub link: LinkType,
    pub streams: Option<Arc<dyn StreamAccess>>,
    pub completed: Arc<std::sync::atomic::AtomicU64>,
    pub pool: PoolView,
    /// `EVENT/IDS_REJECT`, when an NF registered it: TX answers it with TCP resets.
    pub reject: Option<actors::event::EventType>,
    /// The splicer's feedback path and frames (TX feeds and sends them).
    pub loopback: Option<Arc<actors::splice::Loopback>>,
    /// Where RX stamps live reloads with its next packet number.
    pub boundary: std::sync::Arc<actors::boundary::Boundary>,
    /// With a control socket (modes b-d): the plan index of the first NF; every NF stage
    /// from it on, in this process and in no parallel group, can host NFs added live.
    pub first_nf: Option<usize>,
}

/// Each NF's supervisor by name (`supervise.rs`): its stage takes it.
pub(crate) type Supervisors = BTreeMap<String, actors::supervise::Supervisor>;

/// The packet pool's ends and the capture's.
pub(crate) struct Io {
    pub source: Box<dyn PacketSource>,
    pub alloc: PoolAllocator,
    pub release: PoolReleaser,
    /// Where emitted frames go: the `-o` capture (or nothing), or a live inline pair.
    pub sink: Box<dyn PacketSink>,
    /// Live inline runs: each buffer's ingress port, shared by RX and TX.
    pub ingress: Option<Arc<Ingress>>,
    /// DPDK runs sharded by receive queue (`--dpdk-shard queue`): each buffer's queue,
    /// noted by RX, read by mode d's shard splitter.
    pub queues: Option<Arc<Ingress>>,
}

/// The layout's rings, created; each end taken once by whoever the layout says.
struct Rings {
    ends: Vec<RingEnds>,
}

/// A created ring: who writes and reads it, and the ends not yet handed out.
struct RingEnds {
    from: End,
    to: End,
    producer: Option<Producer<EventDesc>>,
    consumer: Option<Consumer<EventDesc>>,
}

impl Rings {
    fn create(region: &Arc<Region>, layout: &Layout, capacity: usize) -> Result<Rings, RunError> {
        let mut ends = Vec::with_capacity(layout.rings.len());
        for (i, r) in layout.rings.iter().enumerate() {
            let (p, c) = ring::create::<EventDesc>(region, &shm_name(i), capacity)
                .map_err(|e| RunError::Setup(e.to_string()))?;
            ends.push(RingEnds { from: r.from.clone(), to: r.to.clone(), producer: Some(p), consumer: Some(c) });
        }
        Ok(Rings { ends })
    }

    /// The index of the first ring written by `from` whose writing end is still here.
    fn from(&self, from: &End) -> usize {
        self.ends.iter().position(|e| &e.from == from && e.producer.is_some()).expect("the layout has this ring")
    }

    /// The index of the first ring read by `to` whose reading end is still here.
    fn to(&self, to: &End) -> usize {
        self.ends.iter().position(|e| &e.to == to && e.consumer.is_some()).expect("the layout has this ring")
    }

    /// The writing end of `from`'s (next) output ring.
    fn output(&mut self, from: &End) -> Producer<EventDesc> {
        let i = self.from(from);
        self.ends[i].producer.take().expect("not taken")
    }

    /// The reading end of `to`'s (next) input ring.
    fn input(&mut self, to: &End) -> Consumer<EventDesc> {
        let i = self.to(to);
        self.ends[i].consumer.take().expect("not taken")
    }

    /// The writing ends of every ring `from` writes, in layout order.
    fn outputs(&mut self, from: &End, n: usize) -> Vec<Producer<EventDesc>> {
        (0..n).map(|_| self.output(from)).collect()
    }

    /// The reading ends of every ring `to` reads, in layout order.
    fn inputs(&mut self, to: &End, n: usize) -> Vec<Consumer<EventDesc>> {
        (0..n).map(|_| self.input(to)).collect()
    }
}

/// Wires `actors` (the plan's, after RX) and the `shards`' stack instances along the layout.
pub(crate) fn wire(
    i: WireInput<'_>,
    io: Io,
    actors: Vec<Box<dyn Actor>>,
    shards: Vec<Vec<Box<dyn Actor>>>,
    supervisors: Supervisors,
) -> Result<Wired, RunError> {
    let mut rings = Rings::create(i.region, i.layout, i.ring_capacity)?;
    let in_flight = (i.opts.mode == Mode::B).then(|| Arc::new(AtomicI64::new(0)));
    let core_of = |name: &str| i.placement.core_of(name).unwrap_or(0) as u16;

    let (mut rx, rx_slot, progress) = RxStage::new(io.source, io.alloc, rings.output(&End::Rx), i.opts.stop.clone());
    if let Some(f) = &in_flight {
        rx = rx.with_gate(f.clone());
    }
    if let Some(cap) = i.opts.trace {
        rx = rx.with_trace(core_of("rx"), cap);
    }
    if let Some(t) = &io.ingress {
        rx = rx.with_ingress(t.clone());
    }
    if let Some(q) = &io.queues {
        rx = rx.with_queues(q.clone());
    }
    rx = rx.with_boundary(i.boundary.clone());
    let mut w = Wiring {
        i: &i,
        rings,
        in_flight,
        actors: actors.into_iter().map(Some).collect(),
        runnables: BTreeMap::new(),
        helpers: Vec::new(),
        stage_slots: Vec::new(),
        external: Vec::new(),
        supervisors,
        sweep: Arc::default(),
        hosts: Default::default(),
        in_group: false,
    };
    w.runnables.insert("rx".into(), Box::new(rx));
    if !i.layout.shards.is_empty() {
        w.wire_shards(shards, io.queues);
    }
    for node in &i.layout.nodes {
        match node {
            Node::Stage(k) => w.wire_stage(*k)?,
            Node::Group(members) => w.wire_group(members)?,
        }
    }
    let (mut tx, tx_slot) = TxSink::new(w.rings.input(&End::Tx), io.release, i.pool.clone(), io.sink);
    if let (Some(l), Some(t)) = (&i.loopback, &io.ingress) {
        l.set_ingress(t.clone());
    }
    if let Some(t) = io.ingress {
        tx = tx.with_ingress(t);
    }
    if let Some(l) = &i.loopback {
        tx = tx.with_loopback(l.clone());
    }
    if let Some(t) = i.reject {
        tx = tx.with_rejects(t);
    }
    tx.set_completed(i.completed.clone());
    if let Some(cap) = i.opts.trace {
        tx = tx.with_trace(i.plan.actors.len() as u16, core_of("tx"), cap);
    }
    if let Some(f) = &w.in_flight {
        tx = tx.with_in_flight(f.clone());
    }
    if i.opts.observe {
        tx = tx.with_record();
    }
    let reasons: Vec<usize> = i.plan.actors.iter().map(|a| a.drop_reasons.len()).collect();
    let tx_live = Arc::new(TxLive::new(&reasons));
    tx = tx.with_live(tx_live.clone());
    if !w.external.is_empty() {
        tx = tx.with_sweep(w.sweep.clone());
    }
    w.runnables.insert("tx".into(), Box::new(tx));
    Ok(Wired {
        runnables: w.runnables,
        helpers: w.helpers,
        external: w.external,
        progress,
        tx_live,
        slots: Slots { rx: rx_slot, tx: tx_slot, stages: w.stage_slots },
        hosts: w.hosts,
    })
}

/// The wiring in progress.
struct Wiring<'a> {
    i: &'a WireInput<'a>,
    rings: Rings,
    /// Mode b: descriptors in the chain (RX's gate).
    in_flight: Option<Arc<AtomicI64>>,
    /// The plan's actors after RX (plan index k at k - 1), each taken once.
    actors: Vec<Option<Box<dyn Actor>>>,
    runnables: BTreeMap<String, Box<dyn Runnable>>,
    helpers: Vec<(String, Box<dyn Runnable>)>,
    stage_slots: Vec<ReportSlot<StageReport>>,
    external: Vec<ExternalNf>,
    supervisors: Supervisors,
    /// Set when an NF process died (shared by every external NF and TX).
    sweep: Arc<std::sync::atomic::AtomicBool>,
    hosts: super::guests::Hostable,
    /// Wiring a parallel group's members (they host no added NFs).
    in_group: bool,
}

impl Wiring<'_> {
    fn name_of(&self, k: usize) -> String {
        self.i.plan.actors[k].name.clone()
    }

    fn take_actor(&mut self, k: usize) -> Box<dyn Actor> {
        self.actors[k - 1].take().expect("each actor once")
    }

    /// A stage for plan actor `k` running `actor` as `name`, between its rings.
    fn add_stage(&mut self, k: usize, name: String, actor: Box<dyn Actor>) {
        let input = self.rings.input(&End::Stage(name.clone()));
        let output = self.rings.output(&End::Stage(name.clone()));
        let planned = &self.i.plan.actors[k];
        let (mut stage, slot) = Stage::new(actor, planned.clone(), input, output, self.i.pool.clone());
        if name != planned.name {
            stage = stage.with_name(name.clone());
        }
        if let Some(s) = &self.i.streams {
            stage = stage.with_streams(s.clone());
        }
        if let Some(cap) = self.i.opts.trace {
            stage = stage.with_trace(self.i.placement.core_of(&name).unwrap_or(0) as u16, cap);
        }
        if let Some(f) = &self.in_flight {
            stage = stage.with_in_flight(f.clone());
        }
        if let Some(s) = self.supervisors.remove(&name) {
            stage = stage.with_supervision(s);
        }
        if self.i.first_nf.is_some_and(|f| k >= f) {
            if self.in_group {
                self.hosts.refuse(&name, "is in a parallel group (mode d)");
            } else {
                stage = stage.with_guests(self.hosts.add(&name));
            }
        }
        self.runnables.insert(name, Box::new(stage));
        self.stage_slots.push(slot);
    }

    /// rx -> shard-split -> K × (the stacks' instances) -> shard-merge.
    fn wire_shards(&mut self, shards: Vec<Vec<Box<dyn Actor>>>, queues: Option<Arc<Ingress>>) {
        let layout = self.i.layout;
        let first: Vec<Box<dyn Actor>> = layout.shards[0].iter().map(|&(k, _)| self.take_actor(k)).collect();
        let instances = std::iter::once(first).chain(shards);
        for (stacks, names) in instances.zip(&layout.shards) {
            for (actor, (k, name)) in stacks.into_iter().zip(names) {
                self.add_stage(*k, name.clone(), actor);
            }
        }
        let n = layout.shards.len();
        let input = self.rings.input(&End::ShardSplit);
        let to_shards = self.rings.outputs(&End::ShardSplit, n);
        let from_shards = self.rings.inputs(&End::ShardMerge, n);
        let output = self.rings.output(&End::ShardMerge);
        let mut splitter = ShardSplitter::new(input, to_shards, self.i.pool.clone(), self.i.link);
        if let Some(q) = queues {
            splitter = splitter.with_queues(q);
        }
        self.helpers.push(("rx".into(), Box::new(splitter)));
        let first_stack = self.name_of(1);
        self.helpers.push((first_stack, Box::new(SeqMerger::new("shard-merge".into(), from_shards, output))));
    }

    /// One stage, here or (`--nf-process`) in another process.
    fn wire_stage(&mut self, k: usize) -> Result<(), RunError> {
        let name = self.name_of(k);
        let actor = self.take_actor(k);
        if !self.i.opts.external.contains(&name) {
            self.add_stage(k, name, actor);
            return Ok(());
        }
        // Another process serves this stage: give up our ends of its rings.
        self.hosts.refuse(&name, "runs in its own process (--nf-process)");
        let end = End::Stage(name.clone());
        let (input, output) = (self.rings.to(&end), self.rings.from(&end));
        drop((actor, self.rings.input(&end), self.rings.output(&end)));
        let slot: ReportSlot<StageReport> = Arc::default();
        let core = self.i.placement.core_of(&name).unwrap_or(0);
        // The process's custody record, and the stand-in that waits (with TX) to take its
        // place if it dies (`supervise.rs`).
        runtime::cells::create(
            self.i.region,
            &super::supervise::custody_name(&name),
            actors::supervise::custody::CELLS,
        )
        .map_err(|e| RunError::Setup(format!("NF `{name}`: its custody record: {e}")))?;
        let stand_in = Arc::new(super::supervise::StandInCtl::default());
        let (input, output) = (shm_name(input), shm_name(output));
        self.helpers.push((
            "tx".into(),
            Box::new(super::supervise::StandIn {
                ctl: stand_in.clone(),
                name: format!("{name} (stand-in)"),
                plan: self.i.plan.actors[k].clone(),
                region: self.i.region.clone(),
                pool: self.i.pool.clone(),
                input: input.clone(),
                output: output.clone(),
                reason: super::supervise::failure_reason(self.i.plan, k),
                running: None,
                end: None,
            }),
        ));
        let sweep = self.sweep.clone();
        self.external.push(ExternalNf {
            name,
            input,
            output,
            core,
            slot: slot.clone(),
            index: k as u16,
            stand_in,
            sweep,
        });
        self.stage_slots.push(slot);
        Ok(())
    }

    /// split[group] -> each member -> merge[group].
    fn wire_group(&mut self, members: &[usize]) -> Result<(), RunError> {
        let label = Layout::group_label(self.i.plan, members);
        self.in_group = true;
        for &k in members {
            self.wire_stage(k)?;
        }
        self.in_group = false;
        let (split, merge) = (End::Split(label.clone()), End::Merge(label.clone()));
        let input = self.rings.input(&split);
        let to_members = self.rings.outputs(&split, members.len());
        let to_merger = self.rings.inputs(&merge, members.len());
        let output = self.rings.output(&merge);
        self.helpers
            .push((self.name_of(members[0]), Box::new(Splitter::new(format!("split[{label}]"), input, to_members))));
        let mut merger = Merger::new(format!("merge[{label}]"), to_merger, output);
        if self.i.opts.fault == Some(Fault::EagerMerger) {
            merger = merger.with_fault_eager();
        }
        let last = self.name_of(*members.last().expect("members"));
        self.helpers.push((last, Box::new(merger)));
        Ok(())
    }
}
