//! External NF processes (`mbox run --nf-process NAME`, mode c): checking the request,
//! starting `mbox nf NAME --attach PREFIX ... --report -` for each with a watcher thread,
//! collecting their reports — and the other side, [`serve_nf`], which runs one NF of a run in
//! this process, attached to the run's shared memory by name.
//!
//! Contract:
//! * An external NF is linked exactly as in the main process (the other NFs are built as
//!   contracts only).
//! * Its report comes back through a pipe: one JSON line, the last on the process's stdout,
//!   read concurrently and capped at [`REPORT_MAX`] bytes (more is an error naming the
//!   limit); earlier lines go to stderr. No file in a shared directory is involved.
//! * The watcher notices the process's end by `waitpid` (every 5 ms). If it fails and the
//!   NF's `on_failure` is `stop` (the default), the watcher aborts the run (the chain could not
//!   finish without it); with `bypass` or `drop` a stand-in stage in the run takes its place
//!   on the same rings, with `restart` a new `mbox nf` process does (`supervise.rs` says how
//!   what the dead process held is found and reclaimed). If the run fails, the watcher kills
//!   the process.
//! * If the process takes nothing from its input ring for
//!   [`RunOptions::nf_stall_timeout`] while events wait there and its output ring has room
//!   (stopped, deadlocked, starved), the watcher kills it and aborts the run with an error
//!   naming the NF, its pid, how long it was stuck, how many events waited and the process
//!   state.
//! * A served NF stops instead of waiting forever when the run goes away: its parent
//!   changes, or the region's creator (pid and start time) has ended; attaching to a region
//!   whose creator has ended is refused at once ([`runtime::shm::ShmError::Orphaned`]).

use std::io::Read;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actors::controller::Plan;
use actors::stage::{Stage, StageReport};
use actors::EventDesc;
use runtime::executor::{self, CoreAssignment};
use runtime::ports::LinkType;
use runtime::shm::Region;
use runtime::{pool, ring};

use actors::supervise::{Failure, OnFailure};

use super::build::{build_for, Built};
use super::supervise::StandInCtl;
use super::wire::ExternalNf;
use super::{take, Mode, RunError, RunOptions};
use crate::app::App;

/// Refuses `--nf-process` requests the run cannot honour: not mode c or d, or an unknown NF.
/// (An NF that reads TCP bytestreams reads them from the stream store in the run's region.)
pub(super) fn check_external(opts: &RunOptions, plan: &Plan) -> Result<(), RunError> {
    for name in &opts.external {
        if !matches!(opts.mode, Mode::C | Mode::D) {
            return Err(RunError::Config(vec![format!(
                "NF `{name}` in its own process: only modes c and d support that (this run is mode {}; docs/modes-and-checker.md says why)",
                opts.mode
            )]));
        }
        if plan.index_of(name).is_none() {
            let nfs: Vec<&str> = plan.actors[1..]
                .iter()
                .filter(|a| a.role() == actors::ActorRole::Nf)
                .map(|a| a.name.as_str())
                .collect();
            return Err(RunError::Config(vec![format!(
                "--nf-process `{name}`: there is no NF of that name (NFs in this app: {})",
                nfs.join(", ")
            )]));
        }
    }
    Ok(())
}

/// The largest report an NF process may send back (its stdout), in bytes.
pub const REPORT_MAX: usize = 16 << 20;

/// How often a watcher looks at its NF's rings for progress.
const STALL_POLL: Duration = Duration::from_millis(100);

/// At most this many new processes are started for one NF (`restart`); one more death
/// stops the run.
pub const MAX_PROCESS_RESTARTS: usize = 16;

/// A started NF process.
pub(super) struct NfProcess {
    name: String,
    pid: u32,
    /// Set to have the watcher kill the process (the run failed without it).
    pub kill: Arc<AtomicBool>,
    watcher: std::thread::JoinHandle<WatchEnd>,
}

/// What a watcher leaves when it ends.
struct WatchEnd {
    /// An error that stops the run.
    result: Result<(), String>,
    /// The last process's stdout (its report), when it ended normally.
    report: Option<Result<Vec<u8>, String>>,
    /// The NF's process failures that were contained.
    failures: Vec<actors::supervise::Failure>,
    /// Every pid that served the NF.
    pids: Vec<u32>,
}

impl NfProcess {
    /// `` `name` (pid N) ``, for messages.
    pub fn describe(&self) -> String {
        format!("`{}` (pid {})", self.name, self.pid)
    }
}

/// Starts `mbox nf NAME --attach PREFIX ... --report -` for every external NF, with a watcher
/// thread that applies the NF's `on_failure` policy if the process dies, aborts the run if it
/// stalls, and (a reader thread) takes its report from its stdout.
pub(super) fn spawn_nf_processes(
    app: &App,
    opts: &RunOptions,
    region: &Arc<Region>,
    link: LinkType,
    external: &[ExternalNf],
    abort: &Arc<AtomicBool>,
) -> Result<Vec<NfProcess>, RunError> {
    let mut out = Vec::new();
    for ext in external {
        let ExternalNf { name, input, output, core, .. } = ext;
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
        let mut cmd = std::process::Command::new(&exe);
        cmd.args(["nf", name, "--app", &app.source, "--attach", region.prefix(), "--input-ring", input])
            .args(["--output-ring", output, "--core", &core.to_string(), "--link", link_name(link)])
            .args(["--report", "-", "--mode", &opts.mode.to_string()])
            .args(opts.output_dir.iter().flat_map(|d| [std::ffi::OsStr::new("--output-dir"), d.as_os_str()]))
            .args(opts.live.as_ref().filter(|l| !l.inline()).map(|_| "--passive"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        let spawn_err = {
            let (exe, name) = (exe.clone(), name.clone());
            move |e: std::io::Error| format!("starting `{} nf {name}`: {e}", exe.display())
        };
        let child = cmd.spawn().map_err(|e| RunError::Setup(spawn_err(e)))?;
        let pid = child.id();
        let kill = Arc::new(AtomicBool::new(false));
        let policy = app.nfs.iter().find(|n| &n.common.name == name).map(|n| n.common.on_failure).unwrap_or_default();
        let watch = Watch {
            name: name.clone(),
            region: region.clone(),
            input: input.clone(),
            output: output.clone(),
            stall_timeout: opts.nf_stall_timeout,
            abort: abort.clone(),
            kill: kill.clone(),
            policy,
            me: ext.index,
            stand_in: ext.stand_in.clone(),
            sweep: ext.sweep.clone(),
            respawn: Box::new(move || cmd.spawn().map_err(&spawn_err)),
        };
        let watcher = std::thread::spawn(move || watch.run(child));
        out.push(NfProcess { name: name.clone(), pid, kill, watcher });
    }
    Ok(out)
}

/// What a watcher thread needs to watch one NF process.
struct Watch {
    name: String,
    region: Arc<Region>,
    input: String,
    output: String,
    stall_timeout: Duration,
    abort: Arc<AtomicBool>,
    kill: Arc<AtomicBool>,
    /// The NF's `on_failure`.
    policy: OnFailure,
    /// The NF's plan index.
    me: u16,
    /// The stand-in waiting in the run's executor.
    stand_in: Arc<StandInCtl>,
    /// Set when a process died (TX reclaims what it held).
    sweep: Arc<AtomicBool>,
    /// Starts a new process for the NF (`restart`).
    respawn: Box<dyn FnMut() -> Result<Child, String> + Send>,
}

/// A thread reading a process's stdout (its report), capped at [`REPORT_MAX`].
type Reader = std::thread::JoinHandle<Result<Vec<u8>, String>>;

fn reader(child: &mut Child, who: String) -> Reader {
    let stdout = child.stdout.take();
    std::thread::spawn(move || match stdout {
        Some(s) => read_capped(s, REPORT_MAX, &who),
        None => Err(format!("NF process {who} has no stdout")),
    })
}

impl Watch {
    /// Waits for the process; kills it when asked to, or when it made no progress with work
    /// pending for `stall_timeout` (then aborts the run). When it dies, applies the policy:
    /// `stop` aborts the run; `bypass` and `drop` hand its place to the stand-in; `restart`
    /// starts a new process and watches that one.
    fn run(mut self, mut child: Child) -> WatchEnd {
        let who = self.name.clone();
        let who = &who;
        let mut pid = child.id();
        let mut out = WatchEnd { result: Ok(()), report: None, failures: Vec::new(), pids: vec![pid] };
        let mut rd = reader(&mut child, format!("`{who}` (pid {pid})"));
        let mut progress = Progress::default();
        let mut last_look = Instant::now();
        loop {
            match child.try_wait() {
                Ok(Some(status)) if status.success() => {
                    self.stand_in.release();
                    out.report = Some(rd.join().unwrap_or_else(|_| Err(format!("reading NF process `{who}` failed"))));
                    return out;
                }
                Ok(Some(status)) => {
                    let _ = rd.join();
                    let (how, signal) = super::supervise::describe_exit(status);
                    if self.policy == OnFailure::Stop || self.kill.load(Ordering::SeqCst) {
                        self.stand_in.release();
                        self.abort.store(true, Ordering::SeqCst);
                        out.result = Err(format!(
                            "NF process `{who}` (pid {pid}) failed: {how} (on_failure = \"{}\")",
                            self.policy
                        ));
                        return out;
                    }
                    match self.contain(pid, how, signal, out.failures.len()) {
                        Ok((failure, None)) => {
                            out.failures.push(failure);
                            return out;
                        }
                        Ok((failure, Some(mut next))) => {
                            pid = next.id();
                            out.failures.push(failure);
                            out.pids.push(pid);
                            rd = reader(&mut next, format!("`{who}` (pid {pid})"));
                            child = next;
                            progress = Progress::default();
                        }
                        Err(e) => {
                            self.stand_in.release();
                            self.abort.store(true, Ordering::SeqCst);
                            out.result = Err(e);
                            return out;
                        }
                    }
                }
                Ok(None) if self.kill.load(Ordering::SeqCst) => {
                    end(&mut child);
                    let _ = rd.join();
                    self.stand_in.release();
                    out.result = Err(format!("NF process `{who}` (pid {pid}) was stopped because the run failed"));
                    return out;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                Err(e) => {
                    self.abort.store(true, Ordering::SeqCst);
                    end(&mut child);
                    let _ = rd.join();
                    self.stand_in.release();
                    out.result = Err(format!("NF process `{who}` (pid {pid}): {e}"));
                    return out;
                }
            }
            if last_look.elapsed() < STALL_POLL {
                continue;
            }
            last_look = Instant::now();
            if let Some(waiting) = progress.stalled(&self, self.stall_timeout) {
                let state = process_state(pid);
                end(&mut child);
                let _ = rd.join();
                self.stand_in.release();
                self.abort.store(true, Ordering::SeqCst);
                out.result = Err(format!(
                    "NF process `{who}` (pid {pid}) made no progress for {:.1} s with {waiting} event(s) waiting in its input ring `{}` (process state: {state}): killed it and aborted the run (limit: --nf-stall-timeout {})",
                    progress.since.elapsed().as_secs_f64(),
                    self.input,
                    self.stall_timeout.as_secs_f64()
                ));
                return out;
            }
        }
    }

    /// The process `pid` died (`how`) and the policy contains it: finds out what it held,
    /// asks TX to reclaim its buffers, and hands its place on (to the stand-in, or to a new
    /// process, returned). `failures` is how many this NF had before.
    fn contain(
        &mut self,
        pid: u32,
        how: String,
        signal: Option<i32>,
        failures: usize,
    ) -> Result<(Failure, Option<Child>), String> {
        let who = self.name.clone();
        let rec = super::supervise::recover(&self.region, &who, &self.input, &self.output, self.me)
            .map_err(|e| format!("NF process `{who}` (pid {pid}) failed: {how}; its place could not be taken: {e}"))?;
        self.sweep.store(true, Ordering::SeqCst);
        let mut failure = Failure {
            nf: who.clone(),
            what: "process".into(),
            message: how.clone(),
            signal,
            pid: Some(pid),
            new_pid: None,
            policy: self.policy,
            seq: rec.last.map(|l| l.0),
            ts_ns: rec.last.map(|l| l.1),
            unix_ms: actors::supervise::unix_ms(),
            events_lost: rec.events_lost,
            packets_lost: rec.packets_lost,
        };
        if self.policy != OnFailure::Restart || rec.end_taken.is_some() {
            // The stand-in takes over (under `restart` too when only the end marker is left
            // to pass on).
            self.stand_in.take_over(self.policy, rec.end_taken);
            return Ok((failure, None));
        }
        if failures >= MAX_PROCESS_RESTARTS {
            return Err(format!(
                "NF process `{who}` (pid {pid}) failed: {how}; it was restarted {MAX_PROCESS_RESTARTS} times already: stopped the run"
            ));
        }
        let next = (self.respawn)()
            .map_err(|e| format!("NF process `{who}` (pid {pid}) failed: {how}; restarting it: {e}"))?;
        failure.new_pid = Some(next.id());
        Ok((failure, Some(next)))
    }
}

/// A watcher's view of its NF's progress: the counters last seen, and since when they have
/// not moved while work was pending.
struct Progress {
    dequeued: u64,
    enqueued: u64,
    since: Instant,
}

impl Default for Progress {
    fn default() -> Progress {
        Progress { dequeued: 0, enqueued: 0, since: Instant::now() }
    }
}

impl Progress {
    /// `Some(events waiting)` when the NF has had events waiting in its input ring, room in
    /// its output ring and taken nothing for longer than `limit`.
    fn stalled(&mut self, w: &Watch, limit: Duration) -> Option<u64> {
        let (Ok(input), Ok(output)) = (ring::peek_stats(&w.region, &w.input), ring::peek_stats(&w.region, &w.output))
        else {
            return None;
        };
        let moved = input.dequeued != self.dequeued || output.enqueued != self.enqueued;
        let idle = input.occupancy() == 0;
        // A full output ring means the chain behind the NF is slow, not the NF.
        let blocked = output.occupancy() >= output.capacity;
        (self.dequeued, self.enqueued) = (input.dequeued, output.enqueued);
        if moved || idle || blocked {
            self.since = Instant::now();
            return None;
        }
        (self.since.elapsed() > limit).then(|| input.occupancy())
    }
}

/// Kills and reaps a child (SIGKILL also ends a stopped process).
fn end(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// The state of process `pid` in words (`/proc/PID/stat` field 3).
fn process_state(pid: u32) -> String {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat.rfind(')').and_then(|i| stat[i + 1..].split_whitespace().next()).unwrap_or("?");
    match state {
        "R" => "running".into(),
        "S" => "sleeping".into(),
        "D" => "waiting for I/O".into(),
        "T" | "t" => "stopped (SIGSTOP or a debugger)".into(),
        "Z" => "exited".into(),
        other => format!("`{other}`"),
    }
}

/// Reads `from` to its end, keeping at most `max` bytes (the rest is read and dropped, so the
/// writer never blocks); more than `max` is an error naming the limit.
fn read_capped(mut from: impl Read, max: usize, who: &str) -> Result<Vec<u8>, String> {
    let mut kept = Vec::new();
    let mut buf = [0u8; 64 << 10];
    let mut total = 0usize;
    loop {
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                total = total.saturating_add(n);
                if kept.len() < max {
                    kept.extend_from_slice(&buf[..n.min(max - kept.len())]);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("reading the output of NF process {who}: {e}")),
        }
    }
    if total > max {
        return Err(format!(
            "NF process {who} wrote {total} bytes to its stdout, more than the {max}-byte limit for its report"
        ));
    }
    Ok(kept)
}

/// Waits for the NF processes and takes their reports into their slots: the last process's,
/// or the stand-in's if it took over; with the NF's contained failures added.
pub(super) fn collect_nf_processes(
    children: Vec<NfProcess>,
    external: &[ExternalNf],
) -> (Vec<String>, Vec<(String, u32)>) {
    let mut errors = Vec::new();
    let mut pids = Vec::new();
    for c in children {
        let who = c.describe();
        let end = c.watcher.join().unwrap_or_else(|_| WatchEnd {
            result: Err(format!("watching NF process {who} failed")),
            report: None,
            failures: Vec::new(),
            pids: vec![c.pid],
        });
        pids.extend(end.pids.iter().map(|p| (c.name.clone(), *p)));
        let failed = match end.result {
            Ok(()) => false,
            Err(e) => {
                errors.push(e);
                true
            }
        };
        let Some(ext) = external.iter().find(|e| e.name == c.name) else { continue };
        let stand_in = ext.stand_in.report.lock().ok().and_then(|mut r| r.take());
        let report = match (end.report, stand_in) {
            (_, Some(r)) => Some(r),
            (Some(output), None) => match output.and_then(|bytes| parse_report(&bytes, &who)) {
                Ok(r) => Some(r),
                Err(e) => {
                    // A failed process's missing report says nothing new.
                    if !failed {
                        errors.push(e);
                    }
                    None
                }
            },
            (None, None) => None,
        };
        let mut r = report.unwrap_or_else(|| StageReport {
            name: c.name.clone(),
            // Only the end marker was left to pass on: the stand-in did that.
            finished: !end.failures.is_empty() && !failed,
            ..StageReport::default()
        });
        let lost: u64 = end.failures.iter().map(|f| f.events_lost).sum();
        if !end.failures.is_empty() {
            r.counters.retain(|(k, _)| k != "failures");
            r.counters.push(("failures".into(), end.failures.len() as u64));
        }
        r.events_lost_in_failure += lost;
        let mut failures = end.failures;
        failures.append(&mut r.failures);
        r.failures = failures;
        actors::stage::publish(&ext.slot, &r);
    }
    (errors, pids)
}

/// The report in an NF process's stdout: its last line, as JSON. Earlier lines (anything
/// the NF itself printed) go to stderr.
fn parse_report(bytes: &[u8], who: &str) -> Result<StageReport, String> {
    let text = String::from_utf8_lossy(bytes);
    let mut lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let last = lines.pop().ok_or_else(|| format!("NF process {who} sent no report"))?;
    for l in lines {
        eprintln!("nf {who}: {l}");
    }
    serde_json::from_str(last).map_err(|e| format!("the report of NF process {who} is not valid: {e}"))
}
/// The `--link` name of a link type.
pub fn link_name(l: LinkType) -> &'static str {
    match l {
        LinkType::Ethernet => "ethernet",
        LinkType::RawIp => "raw-ip",
        LinkType::LinuxSll => "linux-sll",
    }
}

/// Parses a `--link` name.
pub fn parse_link(s: &str) -> Option<LinkType> {
    match s {
        "ethernet" => Some(LinkType::Ethernet),
        "raw-ip" => Some(LinkType::RawIp),
        "linux-sll" => Some(LinkType::LinuxSll),
        _ => None,
    }
}

/// Serves one NF of `app` in this process (`mbox nf`): attaches to the run's region by
/// prefix, to its input and output rings by name, and runs the NF's stage pinned to `core`
/// until the end marker has passed. The NF is linked exactly as in the main process (the
/// other NFs are built as contracts only, without side effects).
#[allow(clippy::too_many_arguments)]
pub fn serve_nf(
    app: &App,
    name: &str,
    link: LinkType,
    mode: Mode,
    prefix: &str,
    input: &str,
    output: &str,
    core: usize,
) -> Result<StageReport, RunError> {
    if !matches!(mode, Mode::C | Mode::D) {
        return Err(RunError::Config(vec![format!("an NF process serves a run of mode c or d, not {mode}")]));
    }
    let Built { actors, plan, streams, shards, .. } = build_for(app, link, mode, None, Some(name), None)?;
    let layout_hash = hash_of(app, mode, &plan, &actors, shards.len(), streams.as_deref())?;
    let k = plan
        .index_of(name)
        .ok_or_else(|| RunError::Config(vec![format!("there is no NF named `{name}` in {}", app.source)]))?;
    let k = usize::from(k);
    let actor = actors.into_iter().nth(k - 1).expect("plan and actors agree");
    let setup = |e: &dyn std::fmt::Display| RunError::Setup(e.to_string());
    let region = Region::attach_layout(prefix, layout_hash).map_err(|e| setup(&e))?;
    if let Some(s) = &streams {
        s.share(&region, super::layout::STREAMS_NAME, false).map_err(|e| setup(&e))?;
    }
    let pool = pool::attach(&region, "packets").map_err(|e| setup(&e))?;
    let cons = ring::attach_consumer::<EventDesc>(&region, input).map_err(|e| setup(&e))?;
    let prod = ring::attach_producer::<EventDesc>(&region, output).map_err(|e| setup(&e))?;
    let (mut stage, slot) = Stage::new(actor, plan.actors[k].clone(), cons, prod, pool);
    // The custody record `mbox run` made for this NF (`supervise.rs`); a region made by
    // other means (an NF served by hand) has none, and then no one supervises the process.
    if let Ok(custody) = runtime::cells::attach(&region, &super::supervise::custody_name(name)) {
        stage = stage.with_custody(custody);
    }
    if let Some(s) = super::supervise::supervisors(app, &plan, link, mode, None).remove(name) {
        stage = stage.with_supervision(s);
    }
    if let Some(s) = streams {
        stage = stage.with_streams(s);
    }
    // If the run's process goes away, stop instead of waiting for its events forever.
    let abort = Arc::new(AtomicBool::new(false));
    let (flag, done) = (abort.clone(), Arc::new(AtomicBool::new(false)));
    let done_flag = done.clone();
    let watched = region.clone();
    let watchdog = std::thread::spawn(move || watch_run(&watched, &flag, &done_flag));
    let result = executor::run_with(
        vec![CoreAssignment { core, actors: vec![Box::new(stage)] }],
        abort.clone(),
        app.runtime.idle_policy(),
    );
    done.store(true, Ordering::SeqCst);
    let gone = watchdog.join().unwrap_or(None);
    result?;
    if let Some(why) = gone {
        return Err(RunError::Aborted(why));
    }
    Ok(take(&slot))
}

/// The layout hash a run of `app` in `mode` records in its region (what `mbox nf` expects).
pub fn layout_hash(app: &App, link: LinkType, mode: Mode) -> Result<u64, RunError> {
    let Built { actors, plan, streams, shards, .. } = build_for(app, link, mode, None, None, None)?;
    hash_of(app, mode, &plan, &actors, shards.len(), streams.as_deref())
}

fn hash_of(
    app: &App,
    mode: Mode,
    plan: &Plan,
    actors: &[Box<dyn actors::Actor>],
    extra_shards: usize,
    streams: Option<&dyn actors::contract::StreamAccess>,
) -> Result<u64, RunError> {
    let groups = if mode == Mode::D { super::build::parallel_groups(app, plan, actors)? } else { Vec::new() };
    let layout = super::layout::Layout::new(plan, app.stacks.len(), extra_shards, &groups);
    let stream_blocks = streams.map(|s| s.region_blocks()).unwrap_or_default();
    Ok(layout.hash(&app.runtime, &stream_blocks))
}

/// How often a served NF checks that its run is still there.
const RUN_CHECK: Duration = Duration::from_millis(100);

/// Watches, until `done`, that the run a served NF belongs to is still there: this process's
/// parent (when started by `mbox run`) and the region's creator (pid and start time). When
/// either has gone, sets `abort` and says why.
fn watch_run(region: &Region, abort: &AtomicBool, done: &AtomicBool) -> Option<String> {
    let parent = std::os::unix::process::parent_id();
    let creator = region.creator();
    while !done.load(Ordering::SeqCst) {
        let why = if !creator.is_alive() {
            format!(
                "the run that created region `{}` (pid {}) has ended: nothing will come to serve",
                region.prefix(),
                creator.pid
            )
        } else if std::os::unix::process::parent_id() != parent {
            format!("the process that started this NF (pid {parent}) has ended")
        } else {
            std::thread::sleep(RUN_CHECK);
            continue;
        };
        abort.store(true, Ordering::SeqCst);
        return Some(why);
    }
    None
}
