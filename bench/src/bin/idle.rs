//! What the executor's idle policy costs (`runtime::executor::IdlePolicy`): wake-up latency,
//! throughput and CPU time, for several policies, in one run.
//!
//! Two actors on two cores (one core when only one is allowed), joined by two of the runtime's
//! SPSC rings: `ping` sends a timestamp, `pong` sends it back, `ping` records the round trip.
//!
//! * **latency**: one message every `--gap-us` µs (default 500), so that both threads go idle
//!   between messages and each message meets the policy's wait (spin, yield or sleep) on both
//!   ends; p50 / p99 / max round trip, and the CPU the process used per wall second (1.0 = one
//!   core busy) while doing almost nothing;
//! * **throughput**: `--items` messages (default 50,000,000), as fast as the rings take them
//!   (bursts of 32), echoed; messages per second.
//!
//! Policies: `spin` (never yields nor sleeps), `yield` (spins, then yields; never sleeps),
//! the default (spins 8 rounds, yields to 64, then sleeps up to 50 µs on the process's
//! doorbell — a push into a ring wakes it — with a 1 µs timer slack), the default with a
//! plain sleep (no doorbell), with the kernel's timer slack too, and longer sleeps.
//!
//! `cargo run -p bench --release --bin idle -- [--gap-us N] [--pings N] [--items N]`

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use runtime::executor::{self, CoreAssignment, IdlePolicy, PollResult, Runnable};
use runtime::ring::{self, Consumer, Producer};
use runtime::shm::Region;

const BURST: usize = 32;

/// What the ping side measured.
#[derive(Default)]
struct Measured {
    rtts_ns: Vec<u64>,
    echoed: u64,
}

struct Ping {
    out: Producer<u64>,
    back: Consumer<u64>,
    epoch: Instant,
    /// Latency mode: the gap between sends; throughput mode: `None`.
    gap: Option<Duration>,
    to_send: u64,
    sent: u64,
    next_send: Duration,
    got: Vec<u64>,
    result: Arc<Mutex<Measured>>,
    measured: Measured,
}

impl Runnable for Ping {
    fn name(&self) -> &str {
        "ping"
    }

    fn poll(&mut self) -> PollResult {
        let mut work = 0;
        self.got.clear();
        let n = self.back.pop_burst(&mut self.got, BURST);
        if n > 0 {
            let now = self.epoch.elapsed().as_nanos() as u64;
            if self.gap.is_some() {
                self.measured.rtts_ns.extend(self.got.iter().map(|t| now.saturating_sub(*t)));
            }
            self.measured.echoed += n as u64;
            work += n;
        }
        if self.sent < self.to_send {
            match self.gap {
                Some(gap) => {
                    let now = self.epoch.elapsed();
                    if now >= self.next_send && self.out.push(now.as_nanos() as u64).is_ok() {
                        self.sent += 1;
                        self.next_send = now + gap;
                        work += 1;
                    }
                }
                None => {
                    let k = BURST.min((self.to_send - self.sent) as usize);
                    let batch = [self.sent; BURST];
                    let pushed = self.out.push_burst(&batch[..k]);
                    self.sent += pushed as u64;
                    work += pushed;
                }
            }
        }
        if self.measured.echoed == self.to_send {
            *self.result.lock().unwrap() = std::mem::take(&mut self.measured);
            return PollResult::Finished;
        }
        PollResult::from_work(work)
    }
}

struct Pong {
    input: Consumer<u64>,
    back: Producer<u64>,
    buf: Vec<u64>,
    pending: usize,
    left: u64,
}

impl Runnable for Pong {
    fn name(&self) -> &str {
        "pong"
    }

    fn poll(&mut self) -> PollResult {
        if self.pending == 0 {
            self.buf.clear();
            self.pending = self.input.pop_burst(&mut self.buf, BURST);
        }
        if self.pending == 0 {
            return if self.left == 0 { PollResult::Finished } else { PollResult::Idle };
        }
        let start = self.buf.len() - self.pending;
        let n = self.back.push_burst(&self.buf[start..]);
        self.pending -= n;
        self.left -= n as u64;
        PollResult::from_work(n)
    }
}

/// Process CPU time (user + system), seconds.
fn cpu_seconds() -> f64 {
    runtime::sys::process_cpu_seconds().unwrap_or(f64::NAN)
}

struct Outcome {
    rtts_ns: Vec<u64>,
    wall: f64,
    cpu: f64,
}

fn one_run(
    region: &Arc<Region>,
    tag: &str,
    cores: (usize, usize),
    policy: IdlePolicy,
    gap: Option<Duration>,
    n: u64,
) -> Result<Outcome> {
    let (out, input) = ring::create::<u64>(region, &format!("{tag}-there"), 1024)?;
    let (back_out, back) = ring::create::<u64>(region, &format!("{tag}-back"), 1024)?;
    let result = Arc::new(Mutex::new(Measured::default()));
    let ping = Ping {
        out,
        back,
        epoch: Instant::now(),
        gap,
        to_send: n,
        sent: 0,
        next_send: Duration::ZERO,
        got: Vec::with_capacity(BURST),
        result: result.clone(),
        measured: Measured::default(),
    };
    let pong = Pong { input, back: back_out, buf: Vec::with_capacity(BURST), pending: 0, left: n };
    let assignments = if cores.0 == cores.1 {
        vec![CoreAssignment { core: cores.0, actors: vec![Box::new(ping), Box::new(pong)] }]
    } else {
        vec![
            CoreAssignment { core: cores.0, actors: vec![Box::new(ping)] },
            CoreAssignment { core: cores.1, actors: vec![Box::new(pong)] },
        ]
    };
    let (cpu0, start) = (cpu_seconds(), Instant::now());
    executor::run_with(assignments, Arc::new(AtomicBool::new(false)), policy).context("executor")?;
    let (wall, cpu) = (start.elapsed().as_secs_f64(), cpu_seconds() - cpu0);
    let m = std::mem::take(&mut *result.lock().unwrap());
    anyhow::ensure!(m.echoed == n, "{tag}: {} of {n} messages came back", m.echoed);
    Ok(Outcome { rtts_ns: m.rtts_ns, wall, cpu })
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i] as f64 / 1e3
}

fn arg(args: &[String], name: &str, default: u64) -> Result<u64> {
    match args.iter().position(|a| a == name) {
        Some(i) => args
            .get(i + 1)
            .with_context(|| format!("{name} needs a value"))?
            .parse()
            .with_context(|| format!("{name} takes a number")),
        None => Ok(default),
    }
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("usage: idle [--gap-us N (500)] [--pings N (2000)] [--items N (50000000)]");
        return Ok(());
    }
    let gap = Duration::from_micros(arg(&args, "--gap-us", 500)?);
    let pings = arg(&args, "--pings", 2000)?.max(1);
    let items = arg(&args, "--items", 50_000_000)?.max(1);
    let allowed = runtime::sys::allowed_cpus().context("reading the allowed CPUs")?;
    let cores = (allowed[0], *allowed.get(1).unwrap_or(&allowed[0]));
    let region = Region::create(&format!("bench-idle-{}", std::process::id()), 4 << 20)?;
    let default = IdlePolicy::default();
    let policies = [
        (
            "spin (never yields or sleeps)",
            IdlePolicy {
                spin_rounds: u32::MAX,
                yield_rounds: u32::MAX,
                sleep: Duration::ZERO,
                sleep_after: Duration::ZERO,
                timer_slack: None,
                doorbell: false,
            },
        ),
        ("yield (spins 8, then yields)", IdlePolicy { yield_rounds: u32::MAX, sleep: Duration::ZERO, ..default }),
        ("default (sleep 50 us on the doorbell)", default),
        ("default, plain sleep (no doorbell)", IdlePolicy { doorbell: false, ..default }),
        ("plain sleep, kernel timer slack", IdlePolicy { timer_slack: None, doorbell: false, ..default }),
        ("sleeps 10 us", IdlePolicy { sleep: Duration::from_micros(10), ..default }),
        ("default, sleeps after 100 us idle", IdlePolicy { sleep_after: Duration::from_micros(100), ..default }),
        ("default, sleeps after 1 ms idle", IdlePolicy { sleep_after: Duration::from_millis(1), ..default }),
        ("sleeps 200 us", IdlePolicy { sleep: Duration::from_micros(200), ..default }),
        ("sleeps 1 ms", IdlePolicy { sleep: Duration::from_millis(1), ..default }),
    ];
    println!(
        "ping on core {}, pong on core {}; latency: {pings} messages {} us apart; throughput: {items} messages",
        cores.0,
        cores.1,
        gap.as_micros()
    );
    println!(
        "{:<36} {:>9} {:>9} {:>9} {:>13} {:>14} {:>8}",
        "policy", "p50 us", "p99 us", "max us", "CPU/wall idle", "msgs/s", "vs spin"
    );
    let mut spin_rate = None;
    for (i, (label, policy)) in policies.iter().enumerate() {
        let lat = one_run(&region, &format!("l{i}"), cores, *policy, Some(gap), pings)?;
        let mut rtts = lat.rtts_ns;
        rtts.sort_unstable();
        let thr = one_run(&region, &format!("t{i}"), cores, *policy, None, items)?;
        let rate = items as f64 / thr.wall;
        let base = *spin_rate.get_or_insert(rate);
        println!(
            "{:<36} {:>9.1} {:>9.1} {:>9.1} {:>13.2} {:>14.0} {:>7.2}x",
            label,
            percentile(&rtts, 0.5),
            percentile(&rtts, 0.99),
            percentile(&rtts, 1.0),
            lat.cpu / lat.wall,
            rate,
            rate / base
        );
    }
    println!("(latency: round trip ping -> pong -> ping, both ends idle between messages; CPU/wall: process CPU seconds per wall second during the latency run)");
    Ok(())
}
