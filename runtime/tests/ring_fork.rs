//! Cross-process: a forked child attaches to the region by name and consumes the ring.
//!
//! The child does minimal work, catches any panic, and leaves with `_exit` (no destructors, no
//! test harness). The parent bounds everything in time and kills the child by pid if needed.

use std::time::{Duration, Instant};

use runtime::ring;
use runtime::shm::Region;

const N: u64 = 200_000;
const RING: &str = "xproc";

#[derive(Clone, Copy)]
#[repr(C)]
struct Desc {
    seq: u64,
    check: u64,
}

fn mix(x: u64) -> u64 {
    x.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (x >> 7)
}

/// Runs in the child. Returns true if every item arrived in order with the right checksum.
fn child(prefix: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(15);
    let Ok(region) = Region::attach(prefix) else {
        return false;
    };
    let Ok(mut rx) = ring::attach_consumer::<Desc>(&region, RING) else {
        return false;
    };
    let mut out = Vec::with_capacity(32);
    let (mut next, mut sum) = (0u64, 0u64);
    while next < N {
        if Instant::now() > deadline {
            return false;
        }
        out.clear();
        if rx.pop_burst(&mut out, 32) == 0 {
            std::thread::yield_now();
            continue;
        }
        for d in &out {
            if d.seq != next || d.check != mix(d.seq) {
                return false;
            }
            sum = sum.wrapping_add(d.check);
            next += 1;
        }
    }
    sum == (0..N).map(mix).fold(0u64, u64::wrapping_add)
}

#[test]
fn child_process_consumes_by_name() {
    let prefix = format!("t{}-fork", std::process::id());
    let region = Region::create(&prefix, 1 << 20).unwrap();
    let (mut tx, rx) = ring::create::<Desc>(&region, RING, 1024).unwrap();
    drop(rx); // release the consumer side for the child to claim

    // SAFETY: the child only runs `child` (no locks held by other threads are needed: glibc
    // resets malloc in the child) and leaves with _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let ok = std::panic::catch_unwind(|| child(&prefix)).unwrap_or(false);
        // SAFETY: _exit ends the child without running destructors (which would unlink the
        // parent's region file) or the test harness.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }

    let deadline = Instant::now() + Duration::from_secs(20);
    let mut next = 0u64;
    let mut burst = Vec::with_capacity(32);
    let mut timed_out = false;
    while next < N {
        if Instant::now() > deadline {
            timed_out = true;
            break;
        }
        burst.clear();
        burst.extend((next..(next + 32).min(N)).map(|s| Desc { seq: s, check: mix(s) }));
        let k = tx.push_burst(&burst);
        next += k as u64;
        if k < burst.len() {
            std::thread::yield_now();
        }
    }
    let mut status = 0;
    loop {
        // SAFETY: waitpid on our own child with a valid status pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            break;
        }
        if timed_out || Instant::now() > deadline {
            // SAFETY: killing and reaping our own child by pid.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            panic!("child {pid} did not finish within 20 s (producer sent {next} of {N})");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(libc::WIFEXITED(status), "child ended abnormally: status {status:#x}");
    assert_eq!(libc::WEXITSTATUS(status), 0, "child saw a wrong item or checksum");
    let s = tx.stats();
    assert_eq!((s.enqueued, s.dequeued), (N, N));
}
