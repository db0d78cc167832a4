//! The executor: pinning read back per thread, round-robin to completion, panics reported.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use runtime::executor::{self, CoreAssignment, ExecError, PollResult, Runnable};
use runtime::sys;

/// Busy for `work` polls, then idle a little, then finished.
struct Counter {
    name: String,
    work: u32,
    idle: u32,
}

impl Runnable for Counter {
    fn name(&self) -> &str {
        &self.name
    }
    fn poll(&mut self) -> PollResult {
        if self.work > 0 {
            self.work -= 1;
            PollResult::Busy(1)
        } else if self.idle > 0 {
            self.idle -= 1;
            PollResult::Idle
        } else {
            PollResult::Finished
        }
    }
}

fn counter(name: &str, work: u32) -> Box<dyn Runnable> {
    Box::new(Counter { name: name.to_string(), work, idle: 200 })
}

#[test]
fn threads_are_pinned_and_report_it() {
    let allowed = sys::allowed_cpus().unwrap();
    let mut assignments = vec![CoreAssignment { core: allowed[0], actors: vec![counter("a", 1000), counter("b", 10)] }];
    if allowed.len() > 1 {
        assignments.push(CoreAssignment { core: allowed[1], actors: vec![counter("c", 500)] });
    } else {
        common::skip("runtime executor_pin: second core", &format!("only one allowed CPU ({allowed:?})"));
    }
    let n = assignments.len();
    let reports = executor::run(assignments, Arc::new(AtomicBool::new(false))).unwrap();
    assert_eq!(reports.len(), n);
    assert_eq!(reports[0].affinity, vec![allowed[0]]);
    assert_eq!(reports[0].actors, vec!["a".to_string(), "b".to_string()]);
    assert_eq!(reports[0].busy_polls, 1010);
    assert!(reports[0].polls >= 1010 + 2 * 201);
    assert!(reports[0].idle_sleeps > 0, "idle rounds lead to sleeps: {:?}", reports[0]);
    assert!(reports[0].tid > 0);
    if n > 1 {
        assert_eq!(reports[1].affinity, vec![allowed[1]]);
        assert_ne!(reports[0].tid, reports[1].tid);
    }
    // The caller's own affinity is untouched.
    assert_eq!(sys::allowed_cpus().unwrap(), allowed);
}

/// Idles forever until stopped.
struct Forever;
impl Runnable for Forever {
    fn name(&self) -> &str {
        "forever"
    }
    fn poll(&mut self) -> PollResult {
        PollResult::Idle
    }
}

struct Bomb(u32);
impl Runnable for Bomb {
    fn name(&self) -> &str {
        "bomb"
    }
    fn poll(&mut self) -> PollResult {
        self.0 -= 1;
        if self.0 == 0 {
            panic!("boom at poll 50");
        }
        PollResult::Busy(1)
    }
}

#[test]
fn panic_is_reported_and_stops_everyone() {
    let allowed = sys::allowed_cpus().unwrap();
    let other = *allowed.last().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let e = executor::run(
        vec![
            CoreAssignment { core: allowed[0], actors: vec![Box::new(Forever), Box::new(Bomb(50))] },
            CoreAssignment { core: other, actors: vec![Box::new(Forever)] },
        ],
        Arc::clone(&stop),
    )
    .unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(10));
    match &e {
        ExecError::ActorPanicked { core, actor, message } => {
            assert_eq!((*core, actor.as_str()), (allowed[0], "bomb"));
            assert!(message.contains("boom"), "{message}");
        }
        other => panic!("unexpected error {other}"),
    }
    assert!(e.to_string().contains("`bomb`"), "{e}");
    assert!(stop.load(Ordering::Relaxed));
}

/// Idles forever, counting its polls where the test can see them.
struct CountingIdle(Arc<AtomicU64>);
impl Runnable for CountingIdle {
    fn name(&self) -> &str {
        "counting-idle"
    }
    fn poll(&mut self) -> PollResult {
        self.0.fetch_add(1, Ordering::Relaxed);
        PollResult::Idle
    }
}

#[test]
fn stop_flag_ends_idle_threads() {
    let allowed = sys::allowed_cpus().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let polls = Arc::new(AtomicU64::new(0));
    let (s2, p2) = (Arc::clone(&stop), Arc::clone(&polls));
    let t = std::thread::spawn(move || {
        // Wait (bounded) until the actor has idled long enough to be sleeping.
        let deadline = Instant::now() + Duration::from_secs(10);
        while p2.load(Ordering::Relaxed) < 200 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        s2.store(true, Ordering::Relaxed);
    });
    let reports =
        executor::run(vec![CoreAssignment { core: allowed[0], actors: vec![Box::new(CountingIdle(polls))] }], stop)
            .unwrap();
    t.join().unwrap();
    assert!(reports[0].polls >= 200);
    assert!(reports[0].idle_sleeps > 0, "{:?}", reports[0]);
}

#[test]
fn pin_failure_names_the_core() {
    let e = executor::run(
        vec![CoreAssignment { core: 4000, actors: vec![Box::new(Forever)] }],
        Arc::new(AtomicBool::new(false)),
    )
    .unwrap_err();
    assert!(matches!(e, ExecError::Pin { core: 4000, .. }), "{e}");
    assert!(e.to_string().contains("core 4000"), "{e}");
}

/// Idle until `stop`, recording the thread's timer slack at its first poll.
struct SlackProbe(Arc<AtomicU64>);

impl Runnable for SlackProbe {
    fn name(&self) -> &str {
        "slack-probe"
    }
    fn poll(&mut self) -> PollResult {
        if self.0.load(Ordering::Relaxed) == u64::MAX {
            let ns = sys::timer_slack().unwrap().as_nanos() as u64;
            self.0.store(ns, Ordering::Relaxed);
        }
        PollResult::Idle
    }
}

/// Runs `CountingIdle` under `policy` for at least 300 polls; its report and the slack seen.
fn idle_run(policy: executor::IdlePolicy) -> (executor::CoreReport, u64) {
    let allowed = sys::allowed_cpus().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let polls = Arc::new(AtomicU64::new(0));
    let slack = Arc::new(AtomicU64::new(u64::MAX));
    let (s2, p2) = (Arc::clone(&stop), Arc::clone(&polls));
    let t = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(10);
        while p2.load(Ordering::Relaxed) < 300 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        s2.store(true, Ordering::Relaxed);
    });
    let actors: Vec<Box<dyn Runnable>> = vec![Box::new(CountingIdle(polls)), Box::new(SlackProbe(slack.clone()))];
    let reports = executor::run_with(vec![CoreAssignment { core: allowed[0], actors }], stop, policy).unwrap();
    t.join().unwrap();
    (reports[0].clone(), slack.load(Ordering::Relaxed))
}

#[test]
fn idle_policy_sets_how_a_thread_waits() {
    // The default sleeps past its yield rounds, with a 1 µs timer slack.
    let (r, slack) = idle_run(executor::IdlePolicy::default());
    assert!(r.polls >= 300 && r.idle_sleeps > 0, "{r:?}");
    assert_eq!(slack, 1_000, "the default policy's timer slack, in ns");
    // Nothing but idle actors: almost all of the thread's time was spent waiting for work.
    assert!(r.idle_ms <= r.elapsed_ms && r.idle_ms > 0.5 * r.elapsed_ms, "{r:?}");
    // Asleep most of that time: its thread used CPU, but less than its wall time.
    assert!(r.cpu_ms > 0.0 && r.cpu_ms < r.elapsed_ms, "{r:?}");
    // No sleep: the thread only spins and yields, and leaves the kernel's slack alone.
    let never = executor::IdlePolicy {
        sleep: Duration::ZERO,
        timer_slack: Some(Duration::from_micros(1)),
        ..Default::default()
    };
    let (r, slack) = idle_run(never);
    assert!(r.polls >= 300, "{r:?}");
    assert_eq!(r.idle_sleeps, 0, "a policy without sleep never sleeps: {r:?}");
    assert_ne!(slack, 1_000, "a thread that never sleeps keeps the kernel's timer slack");
}

/// Pops a ring and notes when the first item arrived.
struct Inbox {
    ring: runtime::ring::Consumer<u64>,
    got: Arc<Mutex<Option<Instant>>>,
}

impl Runnable for Inbox {
    fn name(&self) -> &str {
        "inbox"
    }
    fn poll(&mut self) -> PollResult {
        match self.ring.pop() {
            Some(_) => {
                self.got.lock().unwrap().get_or_insert_with(Instant::now);
                PollResult::Busy(1)
            }
            None => PollResult::Idle,
        }
    }
}

/// A thread asleep for want of work (a 20 s sleep per idle round) wakes when a ring of the
/// process gets an item: the doorbell, not the end of its sleep.
#[test]
fn a_push_wakes_a_sleeping_core() {
    let region = runtime::shm::Region::create(&format!("exec-bell-{}", std::process::id()), 1 << 20).unwrap();
    let (mut tx, rx) = runtime::ring::create::<u64>(&region, "bell", 8).unwrap();
    let got = Arc::new(Mutex::new(None));
    let stop = Arc::new(AtomicBool::new(false));
    let policy = executor::IdlePolicy { sleep: Duration::from_secs(20), ..Default::default() };
    assert!(policy.doorbell, "the default policy sleeps on the doorbell");
    let core = sys::allowed_cpus().unwrap()[0];
    let actors: Vec<Box<dyn Runnable>> = vec![Box::new(Inbox { ring: rx, got: got.clone() })];
    let s2 = stop.clone();
    let t = std::thread::spawn(move || executor::run_with(vec![CoreAssignment { core, actors }], s2, policy));
    // Long enough for the thread to spin, yield and fall asleep.
    std::thread::sleep(Duration::from_millis(300));
    let pushed = Instant::now();
    tx.push(7).unwrap();
    let deadline = pushed + Duration::from_secs(15);
    while got.lock().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    let woke = got.lock().unwrap().map(|at| at.duration_since(pushed));
    // Stopping: ring once more so the thread sees the flag now, not after its 20 s sleep.
    stop.store(true, Ordering::SeqCst);
    for _ in 0..100 {
        if t.is_finished() {
            break;
        }
        runtime::doorbell::ring();
        std::thread::sleep(Duration::from_millis(10));
    }
    let reports = t.join().unwrap().unwrap();
    assert!(reports[0].idle_sleeps > 0, "the thread was asleep: {:?}", reports[0]);
    let woke = woke.expect("the item was handled");
    assert!(woke < Duration::from_secs(10), "woken by the push, not the 20 s sleep: {woke:?}");
}
