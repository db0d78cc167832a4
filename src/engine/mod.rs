//! The engine: turns an app file and an input into a running system, and the run into a
//! report. [`run`] is the orchestration; each step lives in its own module:
//!
//! 1. open the input capture (its link type configures the L2/3 stack);
//! 2. build the actors — the app's µStacks ([`stacks::registry`], in chain order), then
//!    every `[[nf]]` in order; mode a gives each NF private stacks — collecting every
//!    configuration problem (`build.rs`);
//! 3. link them with the controller (type-checked plan; also `build.rs`);
//! 4. place each actor on a core: core-map file, or the documented default placement
//!    (`place.rs`);
//! 5. lay the chain out once — every ring, from where to where (`layout.rs`) — size the
//!    shared-memory region from it, create the region and the packet pool, and wire the
//!    stages, splitters, mergers and stack shards along it (`wire.rs`):
//!    `rx → l23 → [tcp →] nf1 → … → nfN → tx`;
//! 6. start the NFs that run in their own processes (`nf_process.rs`) and run one pinned
//!    executor thread per used core until the end-of-input marker has travelled the whole
//!    chain;
//! 7. collect the reports and the trace, and check the books: every packet read is either
//!    emitted or dropped with a reason, and the pool balances. A mismatch is an error, never a
//!    footnote (`assemble.rs`).
//!
//! The region is unlinked when the run ends — normally, on error, or after Ctrl-C (the stop
//! flag makes RX end the input early, and the chain drains as usual; a chain that has not
//! drained [`RunOptions::drain_timeout`] after the request is aborted, and the run fails
//! saying so). The execution modes are described in docs/architecture.md.

mod assemble;
mod build;
mod dpdk;
mod guests;
mod layout;
mod live;
mod nf_process;
mod place;
mod reconfigure;
mod relink;
mod supervise;
mod wire;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actors::io::{PacketSink, PacketSource, RxProgress};
use actors::observe::Log;
use runtime::coremap::CoreMap;
use runtime::executor::{self, CoreAssignment, CoreReport};
use runtime::pool;
use runtime::ports::{LinkType, PcapReader, PcapWriter};
use runtime::shm::Region;

use crate::app::App;
use crate::live_stats::{LiveFn, LiveSources};
use crate::report::RunReport;

pub use build::{build, Built};
pub use dpdk::{DpdkOptions, DpdkPortLine, DpdkRunLine};
pub use live::LiveOptions;
pub use nf_process::{layout_hash, link_name, parse_link, serve_nf};
pub use place::actor_roles;

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
    /// Live statistics (`--stats-interval`, `--metrics`): called about every 10 ms with the
    /// chain's live counters, and once more when the executor has ended.
    pub live_stats: Option<LiveFn>,
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
    /// `--output-dir`: the directory the app's relative NF output paths were resolved into
    /// (by [`resolve_outputs`], before the run); passed on to NFs in their own process.
    pub output_dir: Option<PathBuf>,
    /// An NF process that takes nothing from its input ring for this long while events wait
    /// there (and its output ring has room) is killed and the run fails.
    pub nf_stall_timeout: Duration,
    /// After a stop request (`stop`), a chain that has not drained within this time is
    /// aborted: NF processes are killed and the run fails, saying what was lost.
    pub drain_timeout: Duration,
    /// Read live interfaces instead of `input` (`--iface`).
    pub live: Option<LiveOptions>,
    /// Stop (as on Ctrl-C) after this long (`--duration`).
    pub duration: Option<Duration>,
    /// Read DPDK ports instead of `input` (`--dpdk`; needs the `dpdk` cargo feature).
    pub dpdk: Option<DpdkOptions>,
    /// Reloads at given packet numbers (`--reload-at N:FILE`, docs/reconfiguration.md).
    pub reloads: Vec<crate::reconfig::ScheduledReload>,
    /// The app file, re-read by a reload request (`mbox ctl PREFIX reload`, SIGHUP).
    pub app_file: Option<PathBuf>,
    /// Serve the control socket `/dev/shm/mbox.PREFIX.ctl` (`mbox ctl`).
    pub control: bool,
    /// Set (by a SIGHUP handler) to reload the app file.
    pub reload_signal: Option<Arc<AtomicBool>>,
}

/// Default of [`RunOptions::nf_stall_timeout`].
pub const NF_STALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Default of [`RunOptions::drain_timeout`].
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an aborted executor may take to end before the run gives up on it.
const ABANDON_AFTER: Duration = Duration::from_secs(2);

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
            live_stats: None,
            trace: None,
            mode: Mode::C,
            observe: false,
            single_core: false,
            fault: None,
            external: Vec::new(),
            nf_exe: None,
            output_dir: None,
            nf_stall_timeout: NF_STALL_TIMEOUT,
            drain_timeout: DRAIN_TIMEOUT,
            live: None,
            duration: None,
            dpdk: None,
            reloads: Vec::new(),
            app_file: None,
            control: false,
            reload_signal: None,
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
    /// Starting the run: CPU affinity, rings, threads, NF processes (the message says what).
    #[error("{0}")]
    Setup(String),
    /// The shared-memory region or the packet pool could not be created.
    #[error("setting up shared memory: {0}")]
    Shm(String),
    /// The file system under `/dev/shm` has too little space for the run's region.
    #[error(
        "{error}\n  the region holds the packet pool and the rings; make it smaller in the app file's [runtime] table: \
         pool_buffers (now {pool_buffers}), buffer_size (now {buffer_size} B), ring_capacity (now {ring_capacity})\n  \
         or give /dev/shm more room: `docker run --shm-size=1g ...`, or `mount -o remount,size=1G /dev/shm` as root"
    )]
    ShmSpace {
        /// The region's error (size needed, space free).
        error: runtime::shm::ShmError,
        /// `[runtime] pool_buffers`.
        pool_buffers: u32,
        /// `[runtime] buffer_size`.
        buffer_size: u32,
        /// `[runtime] ring_capacity`.
        ring_capacity: u32,
    },
    /// The run broke down after it started (an executor thread or an NF process failed).
    #[error("the run broke down: {0}")]
    Failed(String),
    /// An executor thread failed.
    #[error("{0}")]
    Exec(#[from] runtime::executor::ExecError),
    /// The run was aborted: an NF process failed or stalled, the chain did not drain after a
    /// stop request, or (in `mbox nf`) the run being served went away.
    #[error("{0}")]
    Aborted(String),
}

/// Makes every relative NF output path of `app` relative to `dir` (`--output-dir`);
/// absolute paths stay. Returns the NFs' output paths after the change.
pub fn resolve_outputs(app: &mut App, dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for nf in &mut app.nfs {
        if let Some(p) = nf.config.output().map(std::path::Path::to_path_buf) {
            let p = if p.is_relative() { dir.join(p) } else { p };
            nf.config.set_output(p.clone());
            out.push(p);
        }
    }
    out
}

/// How stacks and NFs are arranged (docs/architecture.md, the paper's Figure 4).
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

/// Runs `app` over the input of `opts`.
pub fn run(app: &App, mut opts: RunOptions) -> Result<RunReport, RunError> {
    let started = Instant::now();
    // A passive live run (one interface) enforces nothing: every NF that can drop reports
    // "would drop" instead, as with its own `passive = true` (docs/live.md).
    let passive_app;
    let passive = opts.live.as_ref().is_some_and(|l| !l.inline()) || opts.dpdk.as_ref().is_some_and(|d| !d.inline());
    let app = match passive {
        true => {
            let mut a = app.clone();
            a.set_passive();
            passive_app = a;
            &passive_app
        }
        _ => app,
    };
    // Every NF gets a reload port; the controller keeps the app in force.
    let mut attached = app.clone();
    let controller = crate::reconfig::Controller::attach(
        &mut attached,
        passive,
        &opts.external,
        opts.output_dir.as_deref(),
        opts.control,
    );
    let prefix = opts.prefix.clone().unwrap_or_else(unique_prefix);
    let mut ctl = reconfigure::Ctl::new(controller, &opts, &prefix)?;
    // The graph to link: the app, plus the NFs an offline relink adds (`relink.rs`).
    let union = ctl.controller.union().clone();
    let app = &union;
    // A DPDK run opens its ports once the pool exists (zero-copy receive lends its buffers).
    let (source, total_bytes, link): (Option<Box<dyn PacketSource>>, _, _) = match (&opts.live, &opts.dpdk) {
        (Some(l), _) => (Some(live::open_source(l)?), None, LinkType::Ethernet),
        (None, Some(_)) => (None, None, LinkType::Ethernet),
        (None, None) => {
            let r = PcapReader::open(&opts.input)?;
            let (t, l) = (r.total_bytes(), r.link_type());
            (Some(Box::new(r)), t, l)
        }
    };
    let logs: Option<Logs> =
        opts.observe.then(|| app.nfs.iter().map(|nf| (nf.common.name.clone(), Log::default())).collect());
    let Built { actors, streams, completed, plan, registry, shards, inner_traces, loopback } =
        build::build_for(app, link, opts.mode, logs.as_ref(), None, opts.trace)?;
    let placement = place::place(&opts, &plan, shards.len())?;
    let writer = match &opts.output {
        Some(p) => Some(PcapWriter::create(p, link).map_err(|e| RunError::Output(e.to_string()))?),
        None => None,
    };
    let groups = if opts.mode == Mode::D { build::parallel_groups(app, &plan, &actors)? } else { Vec::new() };
    let layout = layout::Layout::new(&plan, app.stacks.len(), shards.len(), &groups);
    // The streams go into the region only when an NF in another process reads them: the
    // store is reserved at its full size (`stream_chunks`), which a run whose readers are all
    // threads need not pay for (its monitor takes a heap store, whose pages are touched as
    // used).
    let placed = streams.as_ref().filter(|_| !opts.external.is_empty());
    let stream_blocks = placed.map(|s| s.region_blocks()).unwrap_or_default();
    let size = layout.region_size(&app.runtime) + layout::streams_size(&stream_blocks);
    let region = Region::create_with_layout(&prefix, size, layout.hash(&app.runtime, &stream_blocks))
        .map_err(|e| shm_error(app, e))?;
    ctl.serve(&opts)?;
    if let Some(s) = placed {
        s.share(&region, layout::STREAMS_NAME, true).map_err(RunError::Shm)?;
    }
    let (mut alloc, release, pool_view) =
        pool::create(&region, "packets", app.runtime.pool_buffers, app.runtime.buffer_size)
            .map_err(|e| RunError::Shm(e.to_string()))?;
    let mut dpdk_ports = None;
    let source = match (source, &opts.dpdk) {
        (Some(s), _) => s,
        (None, Some(d)) => {
            let shards = u16::try_from(layout.shards.len()).unwrap_or(u16::MAX);
            let (s, p) = dpdk::open(d, shards, &mut alloc)?;
            dpdk_ports = Some(p);
            s
        }
        (None, None) => unreachable!("a source is opened for every run but a DPDK one"),
    };
    let (sink, ingress) = match (&opts.live, &opts.dpdk, &dpdk_ports) {
        (Some(l), _, _) => live::open_sink(l, app.runtime.pool_buffers, writer)?,
        (None, Some(d), Some(p)) => dpdk::open_sink(p, d, app.runtime.pool_buffers, writer),
        _ => (Box::new(writer) as Box<dyn PacketSink>, None),
    };
    let queues = dpdk_ports.as_ref().and_then(|p| dpdk::shard_queues(p, app.runtime.pool_buffers));
    nf_process::check_external(&opts, &plan)?;
    if let (Some(name), true) = (opts.external.first(), loopback.is_some()) {
        let why = app.stacks.iter().find_map(|s| s.config.sends_frames()).unwrap_or("a µStack sends frames of its own");
        return Err(RunError::Config(vec![format!(
            "--nf-process `{name}`: {why}; such an app keeps every NF in the run's process (the splicer's per-backend counts, which the policies read, the proxy's NFs and the modification board are in-process)"
        )]));
    }

    let input = wire::WireInput {
        opts: &opts,
        plan: &plan,
        layout: &layout,
        placement: &placement,
        region: &region,
        ring_capacity: layout::ring_capacity(&app.runtime),
        link,
        streams,
        completed,
        pool: pool_view.clone(),
        reject: registry.resolve(nfs::signature::REJECT_EVENT).ok(),
        loopback,
        boundary: ctl.controller.boundary(),
        first_nf: (opts.control && opts.mode != Mode::A).then_some(1 + app.stacks.len()),
    };
    // The running actors' contracts: an NF added live is linked against them (`guests.rs`).
    let contracts: Vec<actors::Contract> = actors.iter().map(|a| a.contract().clone()).collect();
    let io = wire::Io { source, alloc, release, sink, ingress, queues };
    let supervisors = supervise::supervisors(app, &plan, link, opts.mode, logs.as_ref());
    let wired = wire::wire(input, io, actors, shards, supervisors)?;
    let no_guests = match (opts.mode, opts.control) {
        (Mode::A, _) => Some("NFs cannot be added while a mode a run goes on: every NF there has a private stack, built at start (modes b, c and d can)".to_string()),
        (_, false) => Some("NFs cannot be added to a run without a control socket".to_string()),
        _ => None,
    };
    let receiver_events = app.nfs.iter().any(|nf| nf.common.side.is_some());
    ctl.controller.set_live_host(Box::new(guests::Guests::new(
        &plan,
        contracts,
        app.stacks.len(),
        &wired.hosts,
        no_guests,
        receiver_events,
    )));
    let assignments = place::assign(&placement, wired.runnables, wired.helpers);
    let live = LiveSources {
        started: Instant::now(),
        rx: wired.progress.clone(),
        tx: wired.tx_live.clone(),
        pool: pool_view.clone(),
        region: region.clone(),
        rings: layout.rings.iter().enumerate().map(|(i, r)| (r.label(), layout::shm_name(i))).collect(),
        actors: plan.actors.iter().map(|a| (a.name.clone(), a.drop_reasons.clone())).collect(),
    };
    let done = Arc::new(AtomicBool::new(false));
    let timed_out = opts.duration.map(|d| live::stop_after(opts.stop.clone(), d, done.clone()));
    let executed = execute(app, &mut opts, &region, link, assignments, &wired.external, (&live, &mut ctl));
    done.store(true, Ordering::SeqCst);
    drop(live);
    let Executed { cores, nf_processes } = executed?;
    let duration_ended = timed_out.is_some_and(|f| f.load(Ordering::SeqCst));

    let mut report = assemble::finish(assemble::Finished {
        app,
        opts: &opts,
        plan: &plan,
        registry: &registry,
        placement: &placement,
        layout: &layout,
        region,
        pool: pool_view,
        slots: wired.slots,
        guests: wired.hosts.reports(),
        inner_traces: &inner_traces,
        logs,
        cores,
        nf_processes,
        started,
        total_bytes,
        duration_ended,
    });
    // The ports' final counters; stopping them also flushes a `net_pcap` device's tx_pcap.
    if let Some(p) = &dpdk_ports {
        let (ports, run) = dpdk::finish(p);
        report.dpdk_ports = ports;
        report.dpdk = Some(run);
        report.warnings.extend(dpdk::warnings(&report.dpdk_ports));
    }
    report.reconfigurations = ctl.controller.log();
    if let Some(t) = report.trace.as_mut() {
        for r in report.reconfigurations.iter().filter(|r| r.accepted) {
            if let Some(seq) = r.from_packet {
                t.marks.push(runtime::trace::TraceMark {
                    seq,
                    name: format!("reload: generation {} ({})", r.generation, r.trigger),
                    detail: r.changes.join("; "),
                });
            }
        }
    }
    Ok(report)
}

/// Step 6: starts the external NF processes, runs the executor on its own thread while
/// reporting progress, and waits for both. The NF processes' reports go into their slots.
///
/// Bounded in time: a stalled NF process aborts the run (its watcher, `nf_process.rs`); a
/// chain that has not drained [`RunOptions::drain_timeout`] after a stop request is aborted;
/// an executor that does not end [`ABANDON_AFTER`] after an abort is given up on (NF
/// processes killed, the region file removed).
fn execute(
    app: &App,
    opts: &mut RunOptions,
    region: &Arc<Region>,
    link: runtime::ports::LinkType,
    assignments: Vec<CoreAssignment>,
    external: &[wire::ExternalNf],
    (live, ctl): (&LiveSources, &mut reconfigure::Ctl),
) -> Result<Executed, RunError> {
    let progress = live.rx();
    // `opts.stop` only asks RX to end the input (the chain then drains); the executor's own
    // flag aborts every thread at once and is set when an actor panics, when an NF process
    // fails or stalls, or when the chain does not drain in time after a stop request.
    let abort = Arc::new(AtomicBool::new(false));
    let children = nf_process::spawn_nf_processes(app, opts, region, link, external, &abort)?;
    let exec_abort = abort.clone();
    let idle = app.runtime.idle_policy();
    let exec = std::thread::Builder::new()
        .name("mbox-exec".into())
        .spawn(move || executor::run_with(assignments, exec_abort, idle))
        .map_err(|e| RunError::Setup(format!("starting the executor thread: {e}")))?;
    let mut stopped: Option<Instant> = None;
    let mut aborted: Option<Instant> = None;
    let mut drain_failed = false;
    while !exec.is_finished() {
        if let Some(cb) = opts.progress.as_mut() {
            cb(progress);
        }
        if let Some(cb) = opts.live_stats.as_mut() {
            cb(live, false);
        }
        ctl.poll(live);
        if opts.stop.load(Ordering::SeqCst) {
            let since = *stopped.get_or_insert_with(Instant::now);
            if !drain_failed && since.elapsed() > opts.drain_timeout {
                drain_failed = true;
                abort.store(true, Ordering::SeqCst);
            }
        }
        if abort.load(Ordering::SeqCst) && aborted.get_or_insert_with(Instant::now).elapsed() > ABANDON_AFTER {
            return Err(abandon(region, children, external));
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    if let Some(cb) = opts.progress.as_mut() {
        cb(progress);
    }
    if let Some(cb) = opts.live_stats.as_mut() {
        cb(live, true);
    }
    let cores = exec.join().map_err(|_| RunError::Failed("the executor thread panicked".into()));
    if !matches!(cores, Ok(Ok(_))) || abort.load(Ordering::SeqCst) {
        for c in &children {
            c.kill.store(true, Ordering::SeqCst);
        }
    }
    let (mut child_errors, nf_processes) = nf_process::collect_nf_processes(children, external);
    let cores = cores??;
    if drain_failed {
        child_errors.insert(
            0,
            format!(
                "the chain did not drain within {:.1} s of the stop request: aborted the run; {} packet(s) had been read, and those still in the chain were neither emitted nor counted",
                opts.drain_timeout.as_secs_f64(),
                progress.packets.load(Ordering::Relaxed)
            ),
        );
    }
    if !child_errors.is_empty() {
        return Err(RunError::Aborted(child_errors.join("\n")));
    }
    Ok(Executed { cores, nf_processes })
}

/// The region's error as a [`RunError`]: too little room under `/dev/shm` names the app
/// keys that size the region.
fn shm_error(app: &App, e: runtime::shm::ShmError) -> RunError {
    match e {
        e @ runtime::shm::ShmError::NoSpace { .. } => RunError::ShmSpace {
            error: e,
            pool_buffers: app.runtime.pool_buffers,
            buffer_size: app.runtime.buffer_size,
            ring_capacity: app.runtime.ring_capacity,
        },
        e => RunError::Shm(e.to_string()),
    }
}

/// Gives up on an executor that did not end after an abort (an actor stuck inside a poll):
/// kills the NF processes and removes the region file now (the stuck thread still maps it).
fn abandon(region: &Region, children: Vec<nf_process::NfProcess>, external: &[wire::ExternalNf]) -> RunError {
    for c in &children {
        c.kill.store(true, Ordering::SeqCst);
    }
    let (errors, _) = nf_process::collect_nf_processes(children, external);
    let _ = std::fs::remove_file(region.path());
    let mut lines = vec![format!(
        "the run was aborted but its executor did not stop within {:.1} s (an actor is stuck): gave up on it and removed {}; the packets in the chain were lost",
        ABANDON_AFTER.as_secs_f64(),
        region.path().display()
    )];
    lines.extend(errors);
    RunError::Aborted(lines.join("\n"))
}

/// What [`execute`] returns: each core's report, and each NF process's name and pid.
struct Executed {
    cores: Vec<CoreReport>,
    nf_processes: Vec<(String, u32)>,
}

/// A shared-memory prefix unique to this run: `run<pid>-<n>` (several runs of one process
/// may share it: tests, `mbox check`).
fn unique_prefix() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    format!("run{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// A copy of what a report slot holds.
fn take<T: Clone + Default>(slot: &Arc<Mutex<T>>) -> T {
    slot.lock().map(|g| g.clone()).unwrap_or_default()
}
