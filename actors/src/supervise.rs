//! NF supervision: what a stage does when its NF fails, so that one buggy NF never takes the
//! platform down.
//!
//! Every `[[nf]]` declares a policy, [`OnFailure`] (app-file key `on_failure`):
//!
//! * `stop` (the default): the run ends with an error naming the NF, the packet and the panic
//!   message;
//! * `bypass`: from then on the NF's events go on unchanged, as if it did not subscribe;
//! * `drop`: from then on the NF's events are dropped with the reason [`NF_FAILED`] (counted
//!   at TX like any drop, so `packets in = out + dropped` still holds);
//! * `restart`: a fresh instance of the NF is built and handles the next event. Its per-flow
//!   state is lost: flows that started before the restart are seen from the middle.
//!
//! A thread NF fails by panicking inside [`Actor::handle`], [`Actor::tick`] or
//! [`Actor::finish`]; the stage catches the panic ([`guarded`]) at that boundary. The event
//! being handled at the panic is lost to the NF: it goes on marked dropped with
//! [`NF_FAILED`] (so its packet is released and counted), and so does every event the NF had
//! published while handling it (they may be half-made; each holds its own packet
//! reference, which TX releases). Both are counted in [`Failure::events_lost`].
//!
//! An NF process fails by dying (a signal, an exit); the engine watches it (pidfd) and puts
//! a stand-in stage in its place (`src/engine/supervise.rs`). Its failures are reported with
//! the same [`Failure`] record.
//!
//! **Why catching the panic is sound.** `catch_unwind` needs the closure to be unwind-safe:
//! state it touches may be left half-updated by the panic. The only state the closure
//! touches that outlives it is the actor itself (the descriptor being handled and the
//! outbox are marked dropped and forwarded, never trusted again): after a panic the actor is
//! dropped (or replaced by a fresh one) and *never called again* — not even `counters` or
//! `finish` — so no broken invariant of its can be observed. Hence `AssertUnwindSafe`. Its
//! `Drop` runs under the same guard. Packet buffers it referenced are held only through
//! descriptors, which the stage still owns and forwards, so none leaks.
//!
//! The panic message goes into the report; the default panic hook's message on stderr is
//! silenced for panics caught here ([`guarded`] installs a hook once that stays quiet while a
//! supervised call runs on the current thread and defers to the previous hook otherwise).

use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Once};

use crate::contract::Actor;

/// The reason an NF's events are dropped with after it failed (policy `drop`), and the
/// reason of the events lost in a failure.
pub const NF_FAILED: &str = "nf failed";

/// At most this many failures of one NF are kept in detail; the rest are only counted.
pub const FAILURES_KEPT: usize = 32;

/// What to do when an NF fails (app-file key `on_failure`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    /// End the run with an error (the default).
    #[default]
    Stop,
    /// Forward the NF's events unchanged from then on.
    Bypass,
    /// Drop the NF's events from then on (reason [`NF_FAILED`]).
    Drop,
    /// Build a fresh instance and go on (per-flow state is lost).
    Restart,
}

impl OnFailure {
    /// The app-file spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            OnFailure::Stop => "stop",
            OnFailure::Bypass => "bypass",
            OnFailure::Drop => "drop",
            OnFailure::Restart => "restart",
        }
    }

    /// Parses the app-file spelling.
    pub fn parse(s: &str) -> Option<OnFailure> {
        match s {
            "stop" => Some(OnFailure::Stop),
            "bypass" => Some(OnFailure::Bypass),
            "drop" => Some(OnFailure::Drop),
            "restart" => Some(OnFailure::Restart),
            _ => None,
        }
    }
}

impl std::fmt::Display for OnFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One failure of an NF, as reported in the summary and `--stats-json`.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Failure {
    /// The NF.
    pub nf: String,
    /// `panic` (a thread NF, or inside an NF process, caught) or `process` (an NF process
    /// died).
    pub what: String,
    /// The panic message, or how the process ended (`killed by signal 9 (SIGKILL)`).
    pub message: String,
    /// The signal that ended the process, if one did.
    pub signal: Option<i32>,
    /// The NF process's pid (process failures).
    pub pid: Option<u32>,
    /// The pid of the process that took over (policy `restart` of a process).
    pub new_pid: Option<u32>,
    /// The policy applied.
    pub policy: OnFailure,
    /// The packet number of the event being handled (a panic), or of the last event the
    /// process took (a process death); `None` before any.
    pub seq: Option<u64>,
    /// That event's capture time (ns since the epoch).
    pub ts_ns: Option<u64>,
    /// When it happened, wall clock (ms since the epoch).
    pub unix_ms: u64,
    /// Events lost in the failure: the one being handled and what the NF had published for
    /// it (a panic); those the process had taken and not passed on (a death).
    pub events_lost: u64,
    /// Of those, packets (primary events): dropped with reason [`NF_FAILED`].
    pub packets_lost: u64,
}

/// Milliseconds since the epoch, now.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Builds a fresh instance of an NF (policy `restart`).
pub type Rebuild = Arc<dyn Fn() -> Result<Box<dyn Actor>, String> + Send + Sync>;

thread_local! {
    /// True while a supervised call runs on this thread (the panic hook stays quiet).
    static SUPERVISED: Cell<bool> = const { Cell::new(false) };
    /// Where the last quiet panic happened (`file:line`).
    static LOCATION: Cell<Option<String>> = const { Cell::new(None) };
}

/// Installs, once per process, a panic hook that says nothing for panics inside
/// [`guarded`] (the failure report carries the message) and defers to the previous hook for
/// every other panic.
fn install_quiet_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if SUPERVISED.with(Cell::get) {
                LOCATION.with(|l| l.set(info.location().map(|l| format!("{}:{}", l.file(), l.line()))));
                return;
            }
            previous(info);
        }));
    });
}

/// Runs `f`, catching a panic: `Err(message)` (with the panic's location) if it panicked.
/// See the module docs for why this is sound for an actor that is never used again after a
/// panic.
pub fn guarded<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    install_quiet_hook();
    let outer = SUPERVISED.with(|s| s.replace(true));
    LOCATION.with(|l| l.set(None));
    let result = catch_unwind(AssertUnwindSafe(f));
    SUPERVISED.with(|s| s.set(outer));
    result.map_err(|payload| {
        let msg = panic_message(payload.as_ref());
        match LOCATION.with(Cell::take) {
            Some(at) => format!("{msg} (at {at})"),
            None => msg,
        }
    })
}

/// The text of a panic payload.
pub fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "(a panic without a message)".to_string()
    }
}

/// A stage's supervision of its NF: the policy, how to rebuild it, and what happened.
pub struct Supervisor {
    /// The policy.
    pub policy: OnFailure,
    /// Builds a fresh instance (needed for `restart`).
    pub rebuild: Option<Rebuild>,
    /// The NF failed and (policy `bypass` or `drop`) no longer handles events.
    pub failed: bool,
    /// The failures, at most [`FAILURES_KEPT`].
    pub failures: Vec<Failure>,
    /// Every failure, kept or not.
    pub failure_count: u64,
    /// Events lost in failures.
    pub events_lost: u64,
    /// Events forwarded unchanged after a failure (`bypass`).
    pub bypassed: u64,
    /// Events dropped after a failure (`drop`).
    pub dropped: u64,
    /// Fresh instances built (`restart`).
    pub restarts: u64,
    /// The drop-reason index of [`NF_FAILED`] in the NF's plan.
    pub reason: u16,
}

impl Supervisor {
    /// Supervision with `policy`; `reason` is the index of [`NF_FAILED`] among the NF's drop
    /// reasons.
    pub fn new(policy: OnFailure, rebuild: Option<Rebuild>, reason: u16) -> Supervisor {
        Supervisor {
            policy,
            rebuild,
            failed: false,
            failures: Vec::new(),
            failure_count: 0,
            events_lost: 0,
            bypassed: 0,
            dropped: 0,
            restarts: 0,
            reason,
        }
    }

    /// Records a failure.
    pub fn record(&mut self, f: Failure) {
        self.failure_count += 1;
        self.events_lost += f.events_lost;
        if self.failures.len() < FAILURES_KEPT {
            self.failures.push(f);
        }
    }

    /// The counters the stage reports for its NF's failures (only those that happened).
    pub fn counters(&self) -> Vec<(String, u64)> {
        [
            ("failures", self.failure_count),
            ("events_lost_in_failure", self.events_lost),
            ("bypassed_after_failure", self.bypassed),
            ("dropped_after_failure", self.dropped),
            ("restarts", self.restarts),
        ]
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(k, n)| (k.to_string(), n))
        .collect()
    }
}

/// An NF process's custody record: shared cells (`runtime::cells`) that the process's stage
/// writes *before* it takes a burst from its input ring and *before* each push to its output
/// ring, so that when the process dies the run can tell exactly what it held.
///
/// Recovery (the process is dead and reaped; the run attaches both rings):
///
/// * **taken**: the input ring's consumer position `head` counts every event it took. Its
///   primaries are `TAKEN_PRIMARIES`, less `LAST_PRIMARIES` if `head` is short of
///   `HEAD_AFTER` (it died between recording a burst and taking it: the burst is still in
///   the ring).
/// * **passed on**: `FORWARDED_*` count what went out before the last push began; what that
///   push got out is read back from the output ring itself (positions `OUT_BEFORE..tail`:
///   only a producer writes slots, and the only one was the dead process), and classified
///   by the same rule as the stage: [`is_input`] (and `PRIMARY` for packets).
/// * **lost** = taken − passed on, for events and for packets.
///
/// Every cell is written by the process only; the run reads them after the process has
/// ended, then (restart) rewrites the baseline the next process starts from.
pub mod custody {
    use crate::desc::EventDesc;

    /// Cells in a custody record.
    pub const CELLS: usize = 12;
    /// Input position after the burst being taken.
    pub const HEAD_AFTER: usize = 0;
    /// Primaries taken, the last burst's included.
    pub const TAKEN_PRIMARIES: usize = 1;
    /// Primaries in the last burst.
    pub const LAST_PRIMARIES: usize = 2;
    /// Output position before the last push.
    pub const OUT_BEFORE: usize = 3;
    /// Input events passed on before the last push.
    pub const FORWARDED_INPUTS: usize = 4;
    /// Primaries passed on before the last push.
    pub const FORWARDED_PRIMARIES: usize = 5;
    /// The end marker's sequence number, once taken (0 before).
    pub const END_SEQ: usize = 6;
    /// The end marker's time.
    pub const END_TS: usize = 7;
    /// The last packet number taken.
    pub const LAST_SEQ: usize = 8;
    /// Its capture time.
    pub const LAST_TS: usize = 9;

    /// Whether an event the NF passes on is one it took from its input (not one it
    /// published): its publications carry its own index. An NF never rewrites an input
    /// event into its own publication (only µStacks consume events), so this is exact.
    pub fn is_input(ev: &EventDesc, me: u16) -> bool {
        ev.publisher != me
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guarded_catches_and_names_the_panic() {
        assert_eq!(guarded(|| 7), Ok(7));
        let e = guarded(|| -> u32 { panic!("boom {}", 3) }).unwrap_err();
        assert!(e.starts_with("boom 3 (at "), "{e}");
        assert!(e.contains("supervise.rs"), "{e}");
        // Nested guards restore the outer state.
        let r = guarded(|| guarded(|| -> () { panic!("inner") }).is_err());
        assert_eq!(r, Ok(true));
    }

    #[test]
    fn policies_parse_and_print() {
        for p in [OnFailure::Stop, OnFailure::Bypass, OnFailure::Drop, OnFailure::Restart] {
            assert_eq!(OnFailure::parse(p.as_str()), Some(p));
        }
        assert_eq!(OnFailure::parse("ignore"), None);
        assert_eq!(OnFailure::default(), OnFailure::Stop);
    }
}
