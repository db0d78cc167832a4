//! NF supervision in the engine: each NF's `on_failure` policy (app-file key, see
//! [`actors::supervise`]) handed to its stage, with the means to rebuild it.
//!
//! * Every NF of the plan gets one more drop reason, [`NF_FAILED`], after its own: what its
//!   stage drops under policy `drop` and what was lost in a failure is counted under it. It
//!   is added to the plan after linking (not to the contract, where the controller would
//!   take the NF for a dropper when it forms parallel groups), identically in the run and
//!   in an NF process (both build the plan with `build_for`).
//! * Policy `restart` rebuilds the NF the way the run built it (`build_for` with only this
//!   NF built for real, wrapped in its observer when the run records logs; mode a: its
//!   private chain with fresh private stacks) and takes the fresh actor.

use std::collections::BTreeMap;
use std::sync::Arc;

use actors::controller::Plan;
use actors::supervise::{Rebuild, Supervisor, NF_FAILED};
use runtime::ports::LinkType;

use super::build::{build_for, Built};
use super::{Logs, Mode};
use crate::app::App;

/// Adds [`NF_FAILED`] to the drop reasons of every NF of `plan` that lacks it.
pub(super) fn add_failure_reasons(app: &App, plan: &mut Plan) {
    for nf in &app.nfs {
        if let Some(k) = plan.index_of(&nf.common.name) {
            let reasons = &mut plan.actors[usize::from(k)].drop_reasons;
            if !reasons.iter().any(|r| r == NF_FAILED) {
                reasons.push(NF_FAILED.into());
            }
        }
    }
}

/// The index of [`NF_FAILED`] among the drop reasons of plan actor `k` (0 if it has none,
/// which [`add_failure_reasons`] rules out for NFs).
pub(super) fn failure_reason(plan: &Plan, k: usize) -> u16 {
    plan.actors.get(k).and_then(|a| a.drop_reasons.iter().position(|r| r == NF_FAILED)).unwrap_or(0) as u16
}

/// A builder of fresh instances of NF `name`, as the run built it.
pub(super) fn rebuild(app: &App, link: LinkType, mode: Mode, logs: Option<&Logs>, name: &str) -> Rebuild {
    let (app, logs, name) = (app.clone(), logs.cloned(), name.to_string());
    Arc::new(move || {
        let Built { actors, plan, .. } =
            build_for(&app, link, mode, logs.as_ref(), Some(&name), None).map_err(|e| e.to_string())?;
        let k = plan.index_of(&name).ok_or_else(|| format!("no NF named `{name}`"))?;
        actors.into_iter().nth(usize::from(k) - 1).ok_or_else(|| format!("no actor for NF `{name}`"))
    })
}

/// A supervisor for every NF of `app`, by name.
pub(super) fn supervisors(
    app: &App,
    plan: &Plan,
    link: LinkType,
    mode: Mode,
    logs: Option<&Logs>,
) -> BTreeMap<String, Supervisor> {
    app.nfs
        .iter()
        .filter_map(|nf| {
            let name = &nf.common.name;
            let k = usize::from(plan.index_of(name)?);
            let policy = nf.common.on_failure;
            let rebuild =
                (policy == actors::supervise::OnFailure::Restart).then(|| rebuild(app, link, mode, logs, name));
            Some((name.clone(), Supervisor::new(policy, rebuild, failure_reason(plan, k))))
        })
        .collect()
}

// ---- NF processes: recovery after a death, and the stand-in that takes the dead one's place.
//
// When an NF process dies (its watcher, `nf_process.rs`, reaps it: waitpid), the run knows
// from the process's custody record (`actors::supervise::custody`, cells written by the
// process before each take and each push) and from the two rings' positions exactly what it
// had taken and not passed on: those events are lost (`events_lost_in_failure`), their
// packets counted as dropped by the NF with reason `nf failed`. The packet buffers they
// referenced (and those of events the NF had published but not pushed) are held by no
// descriptor any more: TX releases every buffer still referenced when the end marker
// reaches it, once a process has died (`TxSink::with_sweep`) — then nothing else in the run
// holds a reference — so the pool balances exactly.
//
// The rings are SPSC, with the ends claimed by pid. The dead process has been reaped, so its
// claims are stale (`kill(pid, 0)` fails) and one new holder can take each end over: the
// stand-in stage (bypass, drop) in this process, or a new `mbox nf` process (restart). The
// input ring's `head` and the output ring's `tail` are the dead process's last published
// positions: the new holder goes on from there — events it had taken are not taken again,
// and nothing it pushed is overwritten.

/// What the watcher of a dead NF process found out ([`recover`]).
#[derive(Debug, Default)]
pub(crate) struct Recovered {
    /// Events it had taken from its input ring and not passed on.
    pub events_lost: u64,
    /// Of those, packets.
    pub packets_lost: u64,
    /// The last packet number it took, and its time.
    pub last: Option<(u64, u64)>,
    /// It took the end marker and did not pass it on: `(seq, ts)`.
    pub end_taken: Option<(u64, u64)>,
}

/// Reads what a dead NF process (plan index `me`) held, from its custody cells and its
/// rings (see above), and rewrites the custody baseline so that a successor starts from a
/// consistent record (what was lost is settled).
pub(crate) fn recover(
    region: &Arc<runtime::shm::Region>,
    name: &str,
    input: &str,
    output: &str,
    me: u16,
) -> Result<Recovered, String> {
    use actors::supervise::custody as k;
    use actors::EventDesc;
    let cells = runtime::cells::attach(region, &custody_name(name)).map_err(|e| e.to_string())?;
    let cons = runtime::ring::attach_consumer::<EventDesc>(region, input).map_err(|e| e.to_string())?;
    let prod = runtime::ring::attach_producer::<EventDesc>(region, output).map_err(|e| e.to_string())?;
    let head = cons.position();
    let taken_primaries =
        cells.get(k::TAKEN_PRIMARIES) - if head < cells.get(k::HEAD_AFTER) { cells.get(k::LAST_PRIMARIES) } else { 0 };
    let recent = prod.recent(cells.get(k::OUT_BEFORE));
    let forwarded_inputs = cells.get(k::FORWARDED_INPUTS) + recent.iter().filter(|e| k::is_input(e, me)).count() as u64;
    let forwarded_primaries =
        cells.get(k::FORWARDED_PRIMARIES) + recent.iter().filter(|e| e.is_primary()).count() as u64;
    let end_seq = cells.get(k::END_SEQ);
    let end_committed = end_seq != 0 && head >= cells.get(k::HEAD_AFTER);
    let end_forwarded = prod.recent(prod.position().saturating_sub(1)).iter().any(EventDesc::is_end);
    let r = Recovered {
        events_lost: head.saturating_sub(forwarded_inputs),
        packets_lost: taken_primaries.saturating_sub(forwarded_primaries),
        last: (cells.get(k::LAST_SEQ) != 0).then(|| (cells.get(k::LAST_SEQ), cells.get(k::LAST_TS))),
        end_taken: (end_committed && !end_forwarded).then(|| (end_seq, cells.get(k::END_TS))),
    };
    // The successor's baseline: everything taken so far is settled (passed on or lost).
    cells.set(k::TAKEN_PRIMARIES, taken_primaries);
    cells.set(k::LAST_PRIMARIES, 0);
    cells.set(k::HEAD_AFTER, head);
    cells.set(k::FORWARDED_INPUTS, head);
    cells.set(k::FORWARDED_PRIMARIES, taken_primaries);
    cells.set(k::OUT_BEFORE, prod.position());
    Ok(r)
}

/// The name of NF `name`'s custody cells in the region.
pub(crate) fn custody_name(name: &str) -> String {
    format!("custody.{name}")
}

/// How a process ended, in words, and the signal if one ended it.
pub(crate) fn describe_exit(status: std::process::ExitStatus) -> (String, Option<i32>) {
    use std::os::unix::process::ExitStatusExt;
    if let Some(sig) = status.signal() {
        // Linux's numbers (the platform this runs on).
        let name = match sig {
            1 => "SIGHUP",
            2 => "SIGINT",
            4 => "SIGILL",
            6 => "SIGABRT",
            7 => "SIGBUS",
            8 => "SIGFPE",
            9 => "SIGKILL",
            11 => "SIGSEGV",
            15 => "SIGTERM",
            _ => "",
        };
        let name = if name.is_empty() { String::new() } else { format!(" ({name})") };
        return (format!("killed by signal {sig}{name}"), Some(sig));
    }
    (format!("exited with status {}", status.code().unwrap_or(-1)), None)
}

/// The stand-in's state: waiting, not needed (the process ended normally, or the run
/// failed), or asked to take over.
const WAITING: u8 = 0;
const NOT_NEEDED: u8 = 1;
const TAKE_OVER: u8 = 2;

/// How the watcher of an NF process talks to the stand-in that waits in the run's executor
/// (a [`StandIn`] placed with TX), and where the stand-in leaves its report.
#[derive(Default)]
pub(crate) struct StandInCtl {
    state: std::sync::atomic::AtomicU8,
    take_over: std::sync::Mutex<Option<TakeOver>>,
    /// The stand-in's report, once it finished (it took over).
    pub report: std::sync::Mutex<Option<actors::stage::StageReport>>,
}

/// What the stand-in is asked to do.
struct TakeOver {
    policy: actors::supervise::OnFailure,
    /// The dead process took the end marker: only pass it on.
    end: Option<(u64, u64)>,
}

impl StandInCtl {
    /// The stand-in is not needed: it finishes.
    pub fn release(&self) {
        let _ = self.state.compare_exchange(
            WAITING,
            NOT_NEEDED,
            std::sync::atomic::Ordering::AcqRel,
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// The stand-in takes the dead process's place (policy `bypass` or `drop`), or (`end`)
    /// only passes on the end marker the dead process had taken.
    pub fn take_over(&self, policy: actors::supervise::OnFailure, end: Option<(u64, u64)>) {
        if let Ok(mut t) = self.take_over.lock() {
            *t = Some(TakeOver { policy, end });
        }
        self.state.store(TAKE_OVER, std::sync::atomic::Ordering::Release);
    }
}

/// Waits, in the run's executor, to take an NF process's place (see [`StandInCtl`]).
pub(crate) struct StandIn {
    pub ctl: Arc<StandInCtl>,
    pub name: String,
    pub plan: actors::controller::PlannedActor,
    pub region: Arc<runtime::shm::Region>,
    pub pool: runtime::pool::PoolView,
    pub input: String,
    pub output: String,
    /// The drop reason `nf failed`.
    pub reason: u16,
    /// Running: the stage and where it reports.
    pub running: Option<(actors::stage::Stage, actors::stage::ReportSlot<actors::stage::StageReport>)>,
    /// Only the end marker to pass on.
    pub end: Option<(runtime::ring::Producer<actors::EventDesc>, actors::EventDesc)>,
}

impl StandIn {
    /// Attaches the dead process's rings and becomes its stage (or passes on its end marker).
    fn start(&mut self, t: TakeOver) {
        use actors::EventDesc;
        // Failing here leaves the chain without its NF: end the run saying why.
        let fail = |what: &str, e: &dyn std::fmt::Display| -> ! {
            std::panic::resume_unwind(Box::new(format!(
                "taking NF `{}`'s place after its process died: {what}: {e}",
                self.name
            )))
        };
        let prod = runtime::ring::attach_producer::<EventDesc>(&self.region, &self.output)
            .unwrap_or_else(|e| fail("its output ring", &e));
        if let Some((seq, ts)) = t.end {
            self.end = Some((prod, EventDesc::end_of_input(seq, ts)));
            return;
        }
        let cons = runtime::ring::attach_consumer::<EventDesc>(&self.region, &self.input)
            .unwrap_or_else(|e| fail("its input ring", &e));
        let sup = actors::supervise::Supervisor::new(t.policy, None, self.reason);
        self.running = Some(actors::stage::Stage::stand_in(self.plan.clone(), cons, prod, self.pool.clone(), sup));
    }
}

impl runtime::executor::Runnable for StandIn {
    fn name(&self) -> &str {
        &self.name
    }

    fn poll(&mut self) -> runtime::executor::PollResult {
        use runtime::executor::PollResult;
        use std::sync::atomic::Ordering;
        if let Some((prod, end)) = self.end.as_mut() {
            return if prod.push(*end).is_ok() { PollResult::Finished } else { PollResult::Idle };
        }
        if let Some((stage, slot)) = self.running.as_mut() {
            let r = stage.poll();
            if r == PollResult::Finished {
                if let (Ok(mut dst), Ok(src)) = (self.ctl.report.lock(), slot.lock()) {
                    *dst = Some(src.clone());
                }
            }
            return r;
        }
        match self.ctl.state.load(Ordering::Acquire) {
            NOT_NEEDED => PollResult::Finished,
            TAKE_OVER => {
                let t = self.ctl.take_over.lock().ok().and_then(|mut t| t.take());
                match t {
                    Some(t) => {
                        self.start(t);
                        PollResult::Busy(1)
                    }
                    None => PollResult::Idle,
                }
            }
            _ => PollResult::Idle,
        }
    }
}
