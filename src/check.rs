//! `mbox check`: runs one input through several execution modes and compares everything the
//! network functions observed and did against mode a (every NF with its own private stack,
//! one packet at a time) — the promise of docs/architecture.md (execution modes), made
//! executable.
//!
//! For each mode the run records (1) every NF's observation log
//! ([`actors::observe`]): each event it handled with its snapshot, the hash of the bytes it
//! could see, its verdict and what it published; (2) every packet's fate at the end of the
//! chain, in order; (3) every NF's output file (flow records, stream hashes), each mode
//! writing its own copy. The comparison reports the first divergence — mode, NF, flow,
//! packet number, expected and actual — or `consistent` with the counts compared.
//!
//! Logs are compared in their canonical form (sorted by packet number, handling order kept
//! within a packet); emitted packets per flow in order; output files as sorted lines.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use actors::observe::canonical;

use crate::app::App;
use crate::engine::{run, Mode, RunError, RunOptions};
use crate::report::RunReport;

/// One difference from the reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Divergence {
    /// The mode that differs from mode a.
    pub mode: Mode,
    /// What differs: an NF's name, `emitted packets`, or `output of <nf>`.
    pub what: String,
    /// The flow (canonical name: its first packet's number), when known.
    pub flow: Option<String>,
    /// The packet number, when known.
    pub seq: Option<u64>,
    /// What mode a had.
    pub expected: String,
    /// What this mode had.
    pub actual: String,
}

impl std::fmt::Display for Divergence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "mode {} diverges from mode a in {}", self.mode, self.what)?;
        if let Some(seq) = self.seq {
            write!(f, " at packet {seq}")?;
        }
        if let Some(flow) = &self.flow {
            write!(f, " (flow {flow})")?;
        }
        write!(f, "\n  expected: {}\n  actual:   {}", self.expected, self.actual)
    }
}

/// What one mode compared.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Compared {
    /// Observation lines compared.
    pub observations: u64,
    /// Packets whose fate was compared.
    pub packets: u64,
    /// Output lines compared.
    pub output_lines: u64,
}

/// The checker's answer.
#[derive(Clone, Debug)]
pub struct CheckReport {
    /// Per mode checked: what was compared, or the first divergence.
    pub modes: Vec<(Mode, Result<Compared, Divergence>)>,
}

impl CheckReport {
    /// True when every mode agreed with mode a.
    pub fn consistent(&self) -> bool {
        self.modes.iter().all(|(_, r)| r.is_ok())
    }

    /// The text `mbox check` prints.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        for (m, r) in &self.modes {
            match r {
                Ok(c) => {
                    s += &format!(
                        "mode {m}: consistent with mode a ({} observations, {} packets, {} output lines compared)\n",
                        c.observations, c.packets, c.output_lines
                    )
                }
                Err(d) => s += &format!("{d}\n"),
            }
        }
        s += if self.consistent() { "consistent\n" } else { "INCONSISTENT\n" };
        s
    }
}

/// How to check.
#[derive(Clone, Debug)]
pub struct CheckOptions {
    /// Modes to compare with mode a.
    pub modes: Vec<Mode>,
    /// Every actor on one core.
    pub single_core: bool,
    /// Where each mode's NF outputs go (a temporary directory when `None`).
    pub work_dir: Option<PathBuf>,
    /// A deliberate fault in the modes checked (never in mode a), to test the checker.
    pub fault: Option<crate::engine::Fault>,
    /// Say on stderr when each mode starts and finishes (with its time), and show a progress
    /// bar while a large input is read when stderr is a terminal (`mbox check` without `-q`).
    pub progress: bool,
    /// Reloads at given packets, the same in every mode (`--reload-at N:FILE`).
    pub reloads: Vec<crate::reconfig::ScheduledReload>,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            modes: vec![Mode::B, Mode::C, Mode::D],
            single_core: false,
            work_dir: None,
            fault: None,
            progress: false,
            reloads: Vec::new(),
        }
    }
}

/// Why checking could not be done.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// A run could not start.
    #[error("mode {mode}: {source}")]
    Run {
        /// Which.
        mode: Mode,
        /// Why.
        source: RunError,
    },
    /// A run reported errors.
    #[error("mode {mode}: the run failed:\n{errors}")]
    Failed {
        /// Which.
        mode: Mode,
        /// Its errors.
        errors: String,
    },
    /// Work files.
    #[error("{0}")]
    Io(String),
}

/// A number no other check of this process uses (checks may run concurrently).
fn unique() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

struct ModeRun {
    report: RunReport,
    outputs: BTreeMap<String, Vec<String>>,
}

fn run_mode(app: &App, input: &Path, mode: Mode, opts: &CheckOptions, dir: &Path) -> Result<ModeRun, CheckError> {
    let mut app = app.clone();
    let mode_dir = dir.join(format!("mode-{mode}"));
    std::fs::create_dir_all(&mode_dir).map_err(|e| CheckError::Io(format!("{}: {e}", mode_dir.display())))?;
    let mut files = Vec::new();
    for nf in &mut app.nfs {
        if let Some(out) = nf.config.output() {
            let name = out.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_else(|| "out".into());
            let path = mode_dir.join(format!("{}-{name}", nf.common.name));
            nf.config.set_output(path.clone());
            files.push((nf.common.name.clone(), path));
        }
    }
    let mut ro = RunOptions::new(input);
    ro.mode = mode;
    ro.observe = true;
    ro.single_core = opts.single_core;
    ro.fault = if mode == Mode::A { None } else { opts.fault };
    ro.prefix = Some(format!("check{}-{}-{mode}", std::process::id(), unique()));
    ro.reloads = opts.reloads.clone();
    // NFs a relink adds write their outputs here too.
    ro.output_dir = Some(mode_dir.clone());
    if opts.progress {
        ro.progress = crate::report::progress_bar(input);
    }
    let report = run(&app, ro).map_err(|source| CheckError::Run { mode, source })?;
    if !report.ok() {
        return Err(CheckError::Failed { mode, errors: report.errors.join("\n") });
    }
    let mut outputs = BTreeMap::new();
    for (nf, path) in files {
        let text = std::fs::read_to_string(&path).map_err(|e| CheckError::Io(format!("{}: {e}", path.display())))?;
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        lines.sort();
        outputs.insert(nf, lines);
    }
    Ok(ModeRun { report, outputs })
}

fn field(line: &str, key: &str) -> Option<String> {
    line.split(' ').find_map(|w| w.strip_prefix(key)).map(str::to_string)
}

/// Mode a names a packet dropped by an NF's private stack `<nf>: <stack>: <reason>` (the
/// NF's chain dropped it); the other modes `<stack>: <reason>`. The stack's name is kept.
fn private_stack_drop(d: &str, stacks: &[&str]) -> String {
    match d.split_once(": ") {
        Some((_, rest)) if stacks.iter().any(|s| rest.strip_prefix(s).is_some_and(|r| r.starts_with(": "))) => {
            rest.to_string()
        }
        _ => d.to_string(),
    }
}

fn compare(mode: Mode, reference: &ModeRun, other: &ModeRun) -> Result<Compared, Divergence> {
    let mut c = Compared::default();
    let div = |what: String, flow: Option<String>, seq: Option<u64>, expected: String, actual: String| Divergence {
        mode,
        what,
        flow,
        seq,
        expected,
        actual,
    };
    for (nf, want) in &reference.report.observations {
        let want = canonical(want);
        let got = canonical(other.report.observations.get(nf).map(Vec::as_slice).unwrap_or(&[]));
        for i in 0..want.len().max(got.len()) {
            let (w, g) = (want.get(i), got.get(i));
            if w != g {
                let line = w.or(g).expect("one side has a line");
                return Err(div(
                    format!("what NF `{nf}` observed (event {} of {})", i + 1, want.len()),
                    field(line, "flow="),
                    line.split(' ').next().and_then(|n| n.parse().ok()),
                    w.cloned().unwrap_or_else(|| "(nothing more)".into()),
                    g.cloned().unwrap_or_else(|| "(nothing more)".into()),
                ));
            }
            c.observations += 1;
        }
    }
    // Packets: the same fate, and per flow the same order.
    let by_flow = |r: &ModeRun| {
        let mut m: BTreeMap<u64, Vec<(u64, Option<String>)>> = BTreeMap::new();
        for e in &r.report.emitted {
            m.entry(e.flow).or_default().push((e.seq, e.dropped.clone()));
        }
        m
    };
    let (want, got) = (by_flow(reference), by_flow(other));
    for (flow, w) in &want {
        let g = got.get(flow).cloned().unwrap_or_default();
        for i in 0..w.len().max(g.len()) {
            if w.get(i) != g.get(i) {
                let show = |x: Option<&(u64, Option<String>)>| match x {
                    Some((seq, None)) => format!("packet {seq} emitted"),
                    Some((seq, Some(r))) => format!("packet {seq} dropped by {r}"),
                    None => "(nothing more)".into(),
                };
                return Err(div(
                    "emitted packets".into(),
                    Some(flow.to_string()),
                    w.get(i).or(g.get(i)).map(|x| x.0),
                    show(w.get(i)),
                    show(g.get(i)),
                ));
            }
            c.packets += 1;
        }
    }
    if got.len() != want.len() {
        return Err(div(
            "emitted packets".into(),
            None,
            None,
            format!("{} flows", want.len()),
            format!("{} flows", got.len()),
        ));
    }
    for (nf, w) in &reference.outputs {
        let g = other.outputs.get(nf).cloned().unwrap_or_default();
        for i in 0..w.len().max(g.len()) {
            if w.get(i) != g.get(i) {
                return Err(div(
                    format!("output of `{nf}` (sorted line {})", i + 1),
                    None,
                    None,
                    w.get(i).cloned().unwrap_or_else(|| "(nothing more)".into()),
                    g.get(i).cloned().unwrap_or_else(|| "(nothing more)".into()),
                ));
            }
            c.output_lines += 1;
        }
    }
    Ok(c)
}

/// Runs `input` through mode a and every mode of `opts`, and compares.
pub fn check(app: &App, input: &Path, opts: &CheckOptions) -> Result<CheckReport, CheckError> {
    let tmp;
    let dir = match &opts.work_dir {
        Some(d) => d.clone(),
        None => {
            tmp = std::env::temp_dir().join(format!("mbox-check-{}-{}", std::process::id(), unique()));
            tmp
        }
    };
    let others: Vec<Mode> = opts.modes.iter().copied().filter(|m| *m != Mode::A).collect();
    let step = |i: usize, mode: Mode| -> Result<ModeRun, CheckError> {
        let what = if mode == Mode::A { "mode a (the reference)".to_string() } else { format!("mode {mode}") };
        if opts.progress {
            eprintln!("mbox check: [{}/{}] {what}: running", i + 1, others.len() + 1);
        }
        let t = std::time::Instant::now();
        let r = run_mode(app, input, mode, opts, &dir)?;
        if opts.progress {
            eprintln!(
                "mbox check: [{}/{}] {what}: done in {} ({} packets)",
                i + 1,
                others.len() + 1,
                crate::report::human_duration(t.elapsed().as_secs_f64()),
                r.report.packets_in
            );
        }
        Ok(r)
    };
    let mut reference = step(0, Mode::A)?;
    // Mode a names a private stack's drop after the NF's chain: compare it as the shared
    // stack's own.
    let stacks: Vec<&str> = app.stacks.iter().map(|s| s.name()).collect();
    for e in &mut reference.report.emitted {
        if let Some(d) = &mut e.dropped {
            *d = private_stack_drop(d, &stacks);
        }
    }
    let mut modes = Vec::new();
    for (i, m) in others.iter().enumerate() {
        let other = step(i + 1, *m)?;
        modes.push((*m, compare(*m, &reference, &other)));
    }
    if opts.work_dir.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(CheckReport { modes })
}
