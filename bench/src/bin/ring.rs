//! Ring throughput: our shared-memory SPSC ring against `ringbuf` 0.4, in the same run.
//!
//! `cargo run -p bench --release --bin ring -- [--items N]` (default 20 million).
//!
//! Both rings move 16-byte descriptors in bursts of 32 between a producer and a consumer thread
//! pinned to two different allowed CPUs (or the same one, with a note, if only one is
//! allowed). Three repetitions each, alternating, capacity 1024 for both; prints Mitems/s per
//! run, the best of each, and the ratio ours/ringbuf.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use ringbuf::traits::{Consumer as _, Producer as _, Split as _};
use runtime::ring;
use runtime::shm::Region;
use runtime::sys;

#[derive(Clone, Copy, Default)]
#[repr(C)]
struct Desc {
    seq: u64,
    payload: u64,
}

const BURST: usize = 32;
const CAPACITY: usize = 1024;
const REPS: usize = 3;

fn parse_items() -> Result<u64> {
    let mut items = 20_000_000u64;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--items" => {
                items = args
                    .next()
                    .context("--items needs a value")?
                    .replace('_', "")
                    .parse()
                    .context("--items must be a positive integer")?;
            }
            "-h" | "--help" => {
                println!("usage: ring [--items N]");
                std::process::exit(0);
            }
            other => bail!("unknown argument `{other}` (usage: ring [--items N])"),
        }
    }
    if items == 0 {
        bail!("--items must be positive");
    }
    Ok(items)
}

fn pin(cpu: usize) {
    if let Err(e) = sys::pin_current_thread(cpu) {
        eprintln!("warning: cannot pin to cpu {cpu}: {e}");
    }
}

/// Runs producer and consumer closures on pinned threads; returns the consumer's elapsed time.
fn run_pair<P, C>(cpus: (usize, usize), produce: P, consume: C) -> Duration
where
    P: FnOnce() + Send,
    C: FnOnce() -> u64 + Send,
{
    std::thread::scope(|s| {
        let start = Instant::now();
        let p = s.spawn(move || {
            pin(cpus.0);
            produce();
        });
        let c = s.spawn(move || {
            pin(cpus.1);
            consume()
        });
        let sum = c.join().expect("consumer panicked");
        p.join().expect("producer panicked");
        std::hint::black_box(sum);
        start.elapsed()
    })
}

/// Producer loop shared by both rings: bursts of numbered descriptors through `push`, which
/// returns how many it took.
fn produce(items: u64, mut push: impl FnMut(&[Desc]) -> usize) {
    let mut burst = [Desc::default(); BURST];
    let mut next = 0u64;
    while next < items {
        let n = ((items - next) as usize).min(BURST);
        for (i, d) in burst[..n].iter_mut().enumerate() {
            *d = Desc { seq: next + i as u64, payload: 1 };
        }
        let k = push(&burst[..n]);
        if k == 0 {
            std::hint::spin_loop();
        }
        next += k as u64;
    }
}

/// Consumer loop shared by both rings: `pop` takes one burst, folds it into the checksum and
/// returns how many it took.
fn consume(items: u64, mut pop: impl FnMut(&mut u64) -> usize) -> u64 {
    let (mut got, mut sum) = (0u64, 0u64);
    while got < items {
        let k = pop(&mut sum);
        if k == 0 {
            std::hint::spin_loop();
        }
        got += k as u64;
    }
    sum
}

fn fold(sum: &mut u64, ds: &[Desc]) {
    for d in ds {
        *sum = sum.wrapping_add(d.seq ^ d.payload);
    }
}

fn ours(region: &std::sync::Arc<Region>, rep: usize, items: u64, cpus: (usize, usize)) -> Result<Duration> {
    let (mut tx, mut rx) = ring::create::<Desc>(region, &format!("bench{rep}"), CAPACITY)?;
    let mut out = Vec::with_capacity(BURST);
    Ok(run_pair(
        cpus,
        move || produce(items, |b| tx.push_burst(b)),
        move || {
            consume(items, |sum| {
                out.clear();
                let k = rx.pop_burst(&mut out, BURST);
                fold(sum, &out);
                k
            })
        },
    ))
}

fn theirs(items: u64, cpus: (usize, usize)) -> Duration {
    let rb = ringbuf::HeapRb::<Desc>::new(CAPACITY);
    let (mut tx, mut rx) = rb.split();
    let mut out = [Desc::default(); BURST];
    run_pair(
        cpus,
        move || produce(items, |b| tx.push_slice(b)),
        move || {
            consume(items, |sum| {
                let k = rx.pop_slice(&mut out);
                fold(sum, &out[..k]);
                k
            })
        },
    )
}

fn main() -> Result<()> {
    let items = parse_items()?;
    let allowed = sys::allowed_cpus().context("reading the CPU affinity")?;
    let cpus = match allowed.as_slice() {
        [a, b, ..] => (*a, *b),
        [a] => {
            println!("note: only one allowed CPU ({a}); producer and consumer share it");
            (*a, *a)
        }
        [] => bail!("no allowed CPU"),
    };
    println!(
        "ring bench: {items} items of {} bytes, bursts of {BURST}, capacity {CAPACITY}, producer on cpu {}, consumer on cpu {}",
        std::mem::size_of::<Desc>(),
        cpus.0,
        cpus.1
    );
    let region = Region::create(&format!("bench-ring-{}", std::process::id()), 4 << 20)?;
    let mitems = |d: Duration| items as f64 / d.as_secs_f64() / 1e6;
    let (mut best_ours, mut best_theirs) = (0f64, 0f64);
    for rep in 0..REPS {
        let o = mitems(ours(&region, rep, items, cpus)?);
        let t = mitems(theirs(items, cpus));
        println!("rep {}: ours {o:8.1} Mitems/s   ringbuf {t:8.1} Mitems/s", rep + 1);
        best_ours = best_ours.max(o);
        best_theirs = best_theirs.max(t);
    }
    println!(
        "best: ours {best_ours:.1} Mitems/s, ringbuf {best_theirs:.1} Mitems/s, ratio ours/ringbuf = {:.2}",
        best_ours / best_theirs
    );
    Ok(())
}
