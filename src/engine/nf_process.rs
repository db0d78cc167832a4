//! External NF processes (`mbox run --nf-process NAME`, mode c): checking the request,
//! starting `mbox nf NAME --attach PREFIX ...` for each with a watcher thread, collecting
//! their reports — and the other side, [`serve_nf`], which runs one NF of a run in this
//! process, attached to the run's shared memory by name.
//!
//! Contract: an external NF is linked exactly as in the main process (the other NFs are
//! built as contracts only); if its process fails, the watcher aborts the run (the chain
//! could not finish without it); if the run fails, the watcher kills the process; if the
//! run's process goes away, the served NF stops instead of waiting forever.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use actors::controller::Plan;
use actors::event::builtin;
use actors::stage::{Stage, StageReport};
use actors::EventDesc;
use runtime::executor::{self, CoreAssignment};
use runtime::ports::LinkType;
use runtime::shm::Region;
use runtime::{pool, ring};

use super::build::{build_for, Built};
use super::wire::ExternalNf;
use super::{take, Mode, RunError, RunOptions};
use crate::app::App;

/// Refuses `--nf-process` requests the run cannot honour: not mode c, an unknown NF, or an
/// NF that reads TCP bytestreams (shared between the threads of one process only).
pub(super) fn check_external(opts: &RunOptions, plan: &Plan) -> Result<(), RunError> {
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
    Ok(())
}

/// A started NF process.
pub(super) struct NfProcess {
    name: String,
    pid: u32,
    /// Set to have the watcher kill the process (the run failed without it).
    pub kill: Arc<AtomicBool>,
    report: PathBuf,
    watcher: std::thread::JoinHandle<Result<(), String>>,
}

/// Starts `mbox nf NAME --attach PREFIX ...` for every external NF, with a watcher thread
/// that aborts the run if the process fails (the chain could not finish without it).
pub(super) fn spawn_nf_processes(
    app: &App,
    opts: &RunOptions,
    prefix: &str,
    link: LinkType,
    external: &[ExternalNf],
    abort: &Arc<AtomicBool>,
) -> Result<Vec<NfProcess>, RunError> {
    let mut out = Vec::new();
    for ExternalNf { name, input, output, core, .. } in external {
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
            .args(opts.output_dir.iter().flat_map(|d| [std::ffi::OsStr::new("--output-dir"), d.as_os_str()]))
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
pub(super) fn collect_nf_processes(
    children: Vec<NfProcess>,
    external: &[ExternalNf],
) -> (Vec<String>, Vec<(String, u32)>) {
    let mut errors = Vec::new();
    let pids = children.iter().map(|c| (c.name.clone(), c.pid)).collect();
    for c in children {
        match c.watcher.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => errors.push(e),
            Err(_) => errors.push(format!("watching NF process `{}` failed", c.name)),
        }
        let slot = external.iter().find(|e| e.name == c.name).map(|e| e.slot.clone());
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
pub fn serve_nf(
    app: &App,
    name: &str,
    link: LinkType,
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
