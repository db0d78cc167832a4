//! The per-core executor: one pinned OS thread per core, multiplexing that core's actors.
//!
//! An actor is anything [`Runnable`]: it is polled, does a bounded amount of work (typically a
//! burst from its input rings) and says whether it was busy, idle or finished. [`run`] starts
//! one thread per [`CoreAssignment`], named `mbox-core<N>`, pins it with `sched_setaffinity`,
//! reads the affinity back from inside the thread, and round-robins over the actors.
//!
//! # Contract
//!
//! * Pinning failure is an error naming the core ([`ExecError::Pin`]); the affinity the
//!   thread actually has is recorded in its [`CoreReport`], so a test can check it.
//! * An actor that returned [`PollResult::Finished`] is not polled again. A thread ends when
//!   all its actors finished or when `stop` is set; [`run`] returns when every thread ended.
//! * A panicking actor is caught (`catch_unwind`); its thread sets `stop` so the other threads
//!   end too, and [`run`] returns [`ExecError::ActorPanicked`] naming the core and the actor.
//!   Any error in one thread stops all of them; [`run`] returns one error, preferring an actor
//!   panic (the root cause) over the others, then assignment order.
//! * Idle strategy ([`IdlePolicy`]), because the machines have few cores and several actors
//!   share one: a thread never yields or sleeps while any of its actors had work in the last
//!   round. After [`SPIN_ROUNDS`] consecutive rounds in which no actor was busy it calls
//!   `yield_now()`, after [`YIELD_ROUNDS`] it sleeps [`IDLE_SLEEP`] per round (counted in
//!   `idle_sleeps`) — with [`IdlePolicy::sleep_after`], only once it has been idle that long.
//!   Any busy poll resets the count. A thread that may sleep sets its timer slack to
//!   [`IdlePolicy::timer_slack`] (1 µs; the kernel's default of 50 µs would stretch every
//!   50 µs sleep to about 100 µs): work that arrives while it sleeps waits at most about one
//!   sleep. `[runtime] idle_spin_rounds`, `idle_yield_rounds`, `idle_sleep_us` and
//!   `idle_sleep_after_us` set the policy of a run. By default the sleep is a wait on the
//!   process's [`doorbell`](crate::doorbell) with the sleep as its timeout: a push into any
//!   ring of the process wakes the thread at once (`[runtime] idle_doorbell = false`: a
//!   plain sleep); `cargo run -p bench --release --bin idle`
//!   measures what each costs (wake-up latency, throughput and CPU time while idle;
//!   docs/benchmarks.md, "The executor's idle policy").

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::{doorbell, sys};

/// Idle rounds spent spinning before yielding.
pub const SPIN_ROUNDS: u32 = 8;
/// Idle rounds (spinning plus yielding) before sleeping.
pub const YIELD_ROUNDS: u32 = 64;
/// Idle time before a thread may sleep ([`IdlePolicy::sleep_after`]).
pub const SLEEP_AFTER: Duration = Duration::from_micros(0);
/// Sleep per idle round once past [`YIELD_ROUNDS`].
pub const IDLE_SLEEP: Duration = Duration::from_micros(50);

/// How a core thread waits when none of its actors had work (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdlePolicy {
    /// Idle rounds spent spinning before yielding.
    pub spin_rounds: u32,
    /// Idle rounds (spinning plus yielding) before sleeping; `u32::MAX`: never sleep.
    pub yield_rounds: u32,
    /// Sleep per idle round once past `yield_rounds` (zero: yield instead).
    pub sleep: Duration,
    /// ...and only once the thread has been idle this long: short gaps in a busy pipeline
    /// (a ring briefly empty, a neighbour briefly behind) are waited out by yielding, not by
    /// a sleep that leaves the work that arrives meanwhile waiting for a timer.
    pub sleep_after: Duration,
    /// The thread's timer slack while it may sleep (`PR_SET_TIMERSLACK`); `None` leaves the
    /// kernel's (50 µs by default).
    pub timer_slack: Option<Duration>,
    /// Sleep on the process's [`crate::doorbell`] (a futex, `sleep` as its timeout), so that
    /// a push into any ring of the process wakes the thread at once; false: a plain sleep.
    pub doorbell: bool,
}

impl Default for IdlePolicy {
    fn default() -> Self {
        IdlePolicy {
            spin_rounds: SPIN_ROUNDS,
            yield_rounds: YIELD_ROUNDS,
            sleep: IDLE_SLEEP,
            sleep_after: SLEEP_AFTER,
            timer_slack: Some(Duration::from_micros(1)),
            doorbell: true,
        }
    }
}

impl IdlePolicy {
    /// What the thread does after `idle_rounds` consecutive idle rounds, idle since
    /// `idle_since`; with the doorbell, `armed` carries a parking across rounds. True when
    /// it slept.
    fn wait(&self, idle_rounds: u32, idle_since: Instant, armed: &mut Option<doorbell::Armed>) -> bool {
        if idle_rounds > self.yield_rounds && !self.sleep.is_zero() && idle_since.elapsed() >= self.sleep_after {
            if !self.doorbell {
                std::thread::sleep(self.sleep);
                return true;
            }
            match armed.take() {
                // Parked now: poll every actor once more before sleeping (doorbell docs).
                None => {
                    *armed = Some(doorbell::arm());
                    false
                }
                Some(a) => {
                    doorbell::wait(a, self.sleep);
                    true
                }
            }
        } else if idle_rounds > self.spin_rounds {
            std::thread::yield_now();
            false
        } else {
            std::hint::spin_loop();
            false
        }
    }
}

/// What one poll of an actor achieved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PollResult {
    /// Did work (how many items, for statistics).
    Busy(usize),
    /// Nothing to do right now.
    Idle,
    /// Done for good; do not poll again.
    Finished,
}

impl PollResult {
    /// `Busy(n)` when `n > 0` items were moved, else `Idle`.
    pub fn from_work(n: usize) -> PollResult {
        if n > 0 {
            PollResult::Busy(n)
        } else {
            PollResult::Idle
        }
    }
}

/// An actor as the executor sees it.
pub trait Runnable: Send {
    /// Actor name, as in the core map.
    fn name(&self) -> &str;
    /// Does a bounded amount of work.
    fn poll(&mut self) -> PollResult;
}

/// The actors to run on one core.
pub struct CoreAssignment {
    /// CPU id to pin the thread to.
    pub core: usize,
    /// Actors, polled round-robin in this order.
    pub actors: Vec<Box<dyn Runnable>>,
}

/// What one core thread did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct CoreReport {
    /// Core it was pinned to.
    pub core: usize,
    /// Kernel thread id.
    pub tid: i32,
    /// Affinity read back inside the thread after pinning.
    pub affinity: Vec<usize>,
    /// Actor names, in polling order.
    pub actors: Vec<String>,
    /// Polls made.
    pub polls: u64,
    /// Polls that returned `Busy`.
    pub busy_polls: u64,
    /// Idle sleeps taken.
    pub idle_sleeps: u64,
    /// Wall time of the thread, in milliseconds.
    pub elapsed_ms: f64,
    /// Of that, the time it spent with no actor busy (waiting for work: spinning, yielding
    /// or asleep), in milliseconds. The core whose share is smallest is the one that limits
    /// a pipeline.
    pub idle_ms: f64,
    /// CPU time the thread used (user and system), in milliseconds: its wall time less what
    /// it spent preempted or asleep. On a shared machine this tells a core's work from
    /// its waiting for a CPU (waiting for work by spinning or yielding still counts).
    pub cpu_ms: f64,
}

/// Why [`run`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The thread could not be started.
    #[error("core {core}: cannot start thread: {source}")]
    Spawn {
        /// Core.
        core: usize,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
    /// `sched_setaffinity` (or reading it back) failed.
    #[error("core {core}: cannot pin thread to core {core} (allowed cores: {allowed}): {source}")]
    Pin {
        /// Core.
        core: usize,
        /// The allowed set, formatted like `0-1`.
        allowed: String,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
    /// An actor panicked.
    #[error("core {core}: actor `{actor}` panicked: {message}")]
    ActorPanicked {
        /// Core.
        core: usize,
        /// Actor name.
        actor: String,
        /// Panic message.
        message: String,
    },
    /// The core thread itself panicked outside an actor (a bug in the executor).
    #[error("core {core}: executor thread panicked: {message}")]
    ThreadPanicked {
        /// Core.
        core: usize,
        /// Panic message.
        message: String,
    },
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-string panic payload)".to_string()
    }
}

fn run_core(
    core: usize,
    mut actors: Vec<Box<dyn Runnable>>,
    stop: &AtomicBool,
    policy: IdlePolicy,
) -> Result<CoreReport, ExecError> {
    let start = Instant::now();
    let pin_err = |source| ExecError::Pin {
        core,
        allowed: sys::allowed_cpus().map(|c| sys::format_cpu_list(&c)).unwrap_or_else(|e| format!("unknown: {e}")),
        source,
    };
    sys::pin_current_thread(core).map_err(pin_err)?;
    let affinity = sys::current_thread_affinity().map_err(pin_err)?;
    if let (Some(slack), false) = (policy.timer_slack, policy.sleep.is_zero()) {
        // Best effort: a thread that cannot set it sleeps a little longer, nothing else.
        let _ = sys::set_timer_slack(slack);
    }
    let names: Vec<String> = actors.iter().map(|a| a.name().to_string()).collect();
    let mut live = vec![true; actors.len()];
    let mut remaining = actors.len();
    let (mut polls, mut busy_polls, mut idle_sleeps) = (0u64, 0u64, 0u64);
    let mut idle_rounds = 0u32;
    let mut idle_since = Instant::now();
    // Time from the first idle round of a stretch to the next busy one (what the thread
    // spent waiting for work, spinning, yielding or asleep).
    let mut idle_ns = 0u64;
    // A parking in progress (the doorbell: armed, one more round of polls, then asleep).
    let mut armed: Option<doorbell::Armed> = None;
    while remaining > 0 && !stop.load(Ordering::Acquire) {
        let mut busy = false;
        for (i, actor) in actors.iter_mut().enumerate() {
            if !live[i] {
                continue;
            }
            polls += 1;
            match catch_unwind(AssertUnwindSafe(|| actor.poll())) {
                Ok(PollResult::Busy(_)) => {
                    busy = true;
                    busy_polls += 1;
                }
                Ok(PollResult::Idle) => {}
                Ok(PollResult::Finished) => {
                    live[i] = false;
                    remaining -= 1;
                    // Finishing is progress: do not start sleeping because of it.
                    busy = true;
                }
                Err(payload) => {
                    return Err(ExecError::ActorPanicked {
                        core,
                        actor: names[i].clone(),
                        message: panic_message(payload.as_ref()),
                    });
                }
            }
        }
        if busy {
            // Work came: a parking in progress ends (dropping it disarms).
            armed = None;
            if idle_rounds > 0 {
                idle_ns += idle_since.elapsed().as_nanos() as u64;
            }
            idle_rounds = 0;
        } else {
            if idle_rounds == 0 {
                idle_since = Instant::now();
            }
            idle_rounds = idle_rounds.saturating_add(1);
            if policy.wait(idle_rounds, idle_since, &mut armed) {
                idle_sleeps += 1;
            }
        }
    }
    drop(armed);
    if idle_rounds > 0 {
        idle_ns += idle_since.elapsed().as_nanos() as u64;
    }
    Ok(CoreReport {
        core,
        tid: sys::current_tid(),
        affinity,
        actors: names,
        polls,
        busy_polls,
        idle_sleeps,
        elapsed_ms: start.elapsed().as_secs_f64() * 1e3,
        idle_ms: idle_ns as f64 / 1e6,
        cpu_ms: sys::thread_cpu_ns() as f64 / 1e6,
    })
}

/// Runs each assignment on its own pinned thread until its actors finish or `stop` is set.
///
/// Returns one [`CoreReport`] per assignment, in the given order, or the first error (see the
/// module contract). On error, `stop` has been set and every thread has ended.
pub fn run(assignments: Vec<CoreAssignment>, stop: Arc<AtomicBool>) -> Result<Vec<CoreReport>, ExecError> {
    run_with(assignments, stop, IdlePolicy::default())
}

/// [`run`] with the idle policy `policy`.
pub fn run_with(
    assignments: Vec<CoreAssignment>,
    stop: Arc<AtomicBool>,
    policy: IdlePolicy,
) -> Result<Vec<CoreReport>, ExecError> {
    let mut handles = Vec::with_capacity(assignments.len());
    let mut first_err: Option<ExecError> = None;
    for a in assignments {
        let core = a.core;
        let stop_t = Arc::clone(&stop);
        let spawned = std::thread::Builder::new().name(format!("mbox-core{core}")).spawn(move || {
            let r = run_core(core, a.actors, &stop_t, policy);
            if r.is_err() {
                stop_t.store(true, Ordering::Release);
            }
            r
        });
        match spawned {
            Ok(h) => handles.push((core, h)),
            Err(source) => {
                stop.store(true, Ordering::Release);
                first_err = Some(ExecError::Spawn { core, source });
                break;
            }
        }
    }
    let mut reports = Vec::with_capacity(handles.len());
    let mut errors = Vec::new();
    for (core, h) in handles {
        match h.join() {
            Ok(Ok(r)) => reports.push(r),
            Ok(Err(e)) => errors.push(e),
            Err(payload) => {
                stop.store(true, Ordering::Release);
                errors.push(ExecError::ThreadPanicked { core, message: panic_message(payload.as_ref()) });
            }
        }
    }
    // An actor panic is the root cause; a pin failure comes next; spawn failures last.
    errors.sort_by_key(|e| match e {
        ExecError::ActorPanicked { .. } => 0,
        ExecError::ThreadPanicked { .. } => 1,
        _ => 2,
    });
    if let Some(e) = errors.into_iter().next() {
        return Err(e);
    }
    if let Some(e) = first_err {
        return Err(e);
    }
    Ok(reports)
}
