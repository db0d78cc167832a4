//! Waking a sleeping core thread when work arrives: a best-effort doorbell.
//!
//! A core thread none of whose actors has had work for a while sleeps ([`crate::executor`],
//! `IdlePolicy`). Without a doorbell, work pushed into a ring while its consumer sleeps
//! waits for the sleep to end (50 µs by default, about twice that in practice): every hop of
//! a quiet pipeline adds it. With the doorbell the sleeping thread waits on a futex instead,
//! with the same sleep as its timeout, and a producer that pushes into any ring of this
//! process ([`crate::ring::Producer::push_burst`]) wakes it.
//!
//! # Contract
//!
//! * One doorbell per process (a few static words): a push wakes every parked core thread of
//!   the process; those without work go back to sleep. A push from another process (an NF
//!   running in its own, `--nf-process`) rings that process's doorbell, not ours: across
//!   processes a sleeping thread still waits out its sleep.
//! * **Best effort, bounded.** [`ring`] costs one relaxed load while nobody is parked, and at
//!   most one `futex` wake per parking. It takes no fence after the producer's store of its
//!   ring tail, so in a narrow race (the push lands in the window between a thread's last
//!   poll and its parking, and the load of the parked count does not see the parking yet)
//!   the wake is missed: that thread then sleeps its full timeout, exactly as without a
//!   doorbell. Never longer, never a hang.
//! * A thread parks in three steps: [`arm`] (counts it parked and takes the doorbell's
//!   sequence number), one more poll of all its actors (work that came before the arm is
//!   seen there), then [`wait`] (sleeps until the sequence moves or the timeout passes) —
//!   or drop the [`Armed`] if that poll found work.
//!
//! Hand-written: futexes are what Linux offers for this, and the `libc` crate already
//! exposes the syscall; a parking crate (`parking_lot_core`) parks by address too, but adds
//! a global hash table and locks on the wake path where a single word does.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

/// Bumped by every wake; the futex word threads wait on.
static SEQ: AtomicU32 = AtomicU32::new(0);
/// Core threads armed or asleep.
static PARKED: AtomicU32 = AtomicU32::new(0);
/// A wake was sent since the last [`arm`]: later pushes need not make the syscall again.
static RUNG: AtomicBool = AtomicBool::new(false);
/// Wakes sent (futex syscalls made by [`ring`]), for tests and statistics.
static WAKES: AtomicU32 = AtomicU32::new(0);

/// A thread's parking in progress (see the module docs): pass it to [`wait`], or drop it
/// (work was found, or the thread ends or unwinds while armed) to end the parking.
#[derive(Debug)]
#[must_use = "an armed doorbell must be waited on or disarmed"]
pub struct Armed {
    seq: u32,
}

impl Drop for Armed {
    fn drop(&mut self) {
        PARKED.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Counts the calling thread as parked and takes the doorbell's sequence; poll once more,
/// then [`wait`] (nothing found) or drop the result (work found).
pub fn arm() -> Armed {
    RUNG.store(false, Ordering::Relaxed);
    PARKED.fetch_add(1, Ordering::SeqCst);
    Armed { seq: SEQ.load(Ordering::SeqCst) }
}

/// Sleeps until a producer rings the doorbell (its sequence moved since [`arm`]) or
/// `timeout` passes, whichever comes first; then no longer parked.
pub fn wait(a: Armed, timeout: Duration) {
    if SEQ.load(Ordering::Acquire) == a.seq {
        let ts = libc::timespec {
            tv_sec: timeout.as_secs().min(i64::MAX as u64) as libc::time_t,
            tv_nsec: timeout.subsec_nanos() as libc::c_long,
        };
        // SAFETY: SEQ is a live, aligned 32-bit word for the whole program; `ts` outlives the
        // call. FUTEX_WAIT returns at once if SEQ no longer holds `a.seq`, on a wake, on the
        // timeout or on a signal: every outcome is fine here (the caller polls again).
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                SEQ.as_ptr(),
                libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
                a.seq,
                &ts as *const libc::timespec,
            );
        }
    }
    // Dropping `a` ends the parking.
}

/// Work was pushed: wakes the parked core threads, if any (see the module docs).
#[inline]
pub fn ring() {
    if PARKED.load(Ordering::Relaxed) != 0 {
        ring_slow();
    }
}

#[cold]
fn ring_slow() {
    if RUNG.swap(true, Ordering::AcqRel) {
        return;
    }
    SEQ.fetch_add(1, Ordering::Release);
    WAKES.fetch_add(1, Ordering::Relaxed);
    // SAFETY: SEQ is a live, aligned 32-bit word; FUTEX_WAKE only reads its address.
    unsafe {
        libc::syscall(libc::SYS_futex, SEQ.as_ptr(), libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG, i32::MAX);
    }
}

/// Wakes sent so far by this process ([`ring`] calls that made the syscall).
pub fn wakes() -> u32 {
    WAKES.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn a_ring_wakes_a_waiting_thread_long_before_its_timeout() {
        let t = std::thread::spawn(|| {
            let a = arm();
            let start = Instant::now();
            wait(a, Duration::from_secs(5));
            start.elapsed()
        });
        // Ring until the thread has woken (it may not be parked yet at the first rings).
        let deadline = Instant::now() + Duration::from_secs(4);
        while !t.is_finished() && Instant::now() < deadline {
            ring();
            std::thread::sleep(Duration::from_millis(1));
        }
        let slept = t.join().unwrap();
        assert!(slept < Duration::from_secs(4), "woken by the doorbell, not the 5 s timeout: {slept:?}");
    }

    #[test]
    fn a_wait_without_a_ring_ends_at_its_timeout() {
        let a = arm();
        let start = Instant::now();
        wait(a, Duration::from_millis(20));
        // Another test's ring may end it early; it never sleeps much past the timeout.
        assert!(start.elapsed() < Duration::from_secs(2), "{:?}", start.elapsed());
    }
}
