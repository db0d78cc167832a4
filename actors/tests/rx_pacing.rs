//! RX pacing (actors::io, issue 14): RX stops reading ahead while enough packets are in
//! flight and the chain keeps freeing buffers, and reads on when nothing comes back.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use actors::io::{PacketSource, RxStage, PACE_RAISE_FREES, PACE_STALL_POLLS};
use actors::stage::BURST;
use actors::EventDesc;
use runtime::executor::Runnable;
use runtime::ports::{PacketRecord, PortError};
use runtime::shm::Region;
use runtime::{pool, ring};

struct Frames {
    left: u64,
    frame: Vec<u8>,
}

impl PacketSource for Frames {
    fn next_packet(&mut self) -> Result<Option<PacketRecord<'_>>, PortError> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        Ok(Some(PacketRecord { ts_ns: self.left, data: &self.frame, orig_len: self.frame.len() as u32 }))
    }
    fn bytes_read(&self) -> u64 {
        0
    }
}

fn region(test: &str) -> Arc<Region> {
    Region::create(&format!("pace{}-{test}", std::process::id()), 16 << 20).unwrap()
}

/// A chain that frees what it takes: RX never has more than the limit (half its ring) plus
/// one burst in flight, waits when it has, and still reads every frame.
#[test]
fn rx_waits_while_the_chain_frees_buffers() {
    let r = region("frees");
    let (alloc, mut release, view) = pool::create(&r, "p", 2048, 128).unwrap();
    let (p0, mut c0) = ring::create::<EventDesc>(&r, "r0", 1024).unwrap();
    let n = 5000u64;
    let (mut rx, slot, _) =
        RxStage::new(Box::new(Frames { left: n, frame: vec![7; 60] }), alloc, p0, Arc::new(AtomicBool::new(false)));
    let limit = 1024 / 2;
    let mut held = std::collections::VecDeque::new();
    let (mut max_in_use, mut frames, mut ended) = (0u64, 0u64, false);
    let mut buf = Vec::new();
    for _ in 0..1_000_000 {
        rx.poll();
        max_in_use = max_in_use.max(view.stats().in_use);
        // The chain: takes 16 descriptors a round, holds each for 100 more, then frees it.
        buf.clear();
        c0.pop_burst(&mut buf, 16);
        for d in &buf {
            if d.is_end() {
                ended = true;
            } else if let Some(h) = d.packet {
                frames += 1;
                held.push_back(h);
            }
        }
        while held.len() > 100 || (ended && !held.is_empty()) {
            release.release(held.pop_front().unwrap());
        }
        if ended {
            break;
        }
    }
    assert!(ended, "RX reached the end of its frames");
    assert_eq!(frames, n);
    assert!(max_in_use >= limit, "RX read ahead up to the limit ({max_in_use} in flight at most)");
    assert!(max_in_use <= limit + BURST as u64, "RX read ahead past the limit: {max_in_use} in flight");
    let rep = slot.lock().unwrap().clone();
    assert!(rep.paced > 0, "RX waited for the chain: {rep:?}");
    assert_eq!(rep.ring_stalls, 0, "the ring never filled: {rep:?}");
    assert!(view.stats().balanced());
}

/// A chain that stops for a moment (a core not scheduled for a few milliseconds) and then
/// frees again: RX raises its limit to read on during the stall, and once the chain has
/// moved on, it is back to the configured limit — not reading ahead to the ring's end for
/// the rest of the run.
#[test]
fn rx_paces_again_after_the_chain_stalled_once() {
    let r = region("stall");
    let (alloc, mut release, view) = pool::create(&r, "p", 4096, 128).unwrap();
    let (p0, mut c0) = ring::create::<EventDesc>(&r, "r0", 1024).unwrap();
    let limit = 1024 / 2;
    // Enough frames to free PACE_RAISE_FREES times a raised limit after the stall, and more.
    let n = PACE_RAISE_FREES * 4 * limit + 20_000;
    let (mut rx, slot, _) =
        RxStage::new(Box::new(Frames { left: n, frame: vec![5; 60] }), alloc, p0, Arc::new(AtomicBool::new(false)));
    let mut held = std::collections::VecDeque::new();
    let (mut frames, mut ended, mut round) = (0u64, false, 0u64);
    let mut max_in_use_late = 0u64;
    let mut buf = Vec::new();
    let stall = 200..400u64;
    for _ in 0..5_000_000 {
        round += 1;
        rx.poll();
        if stall.contains(&round) {
            // The chain takes nothing and frees nothing, for 200 rounds of 20 µs or more.
            std::thread::sleep(std::time::Duration::from_micros(20));
            continue;
        }
        if frames + 10_000 >= n && !ended {
            max_in_use_late = max_in_use_late.max(view.stats().in_use);
        }
        buf.clear();
        c0.pop_burst(&mut buf, 16);
        for d in &buf {
            if d.is_end() {
                ended = true;
            } else if let Some(h) = d.packet {
                frames += 1;
                held.push_back(h);
            }
        }
        while held.len() > 100 || (ended && !held.is_empty()) {
            release.release(held.pop_front().unwrap());
        }
        if ended {
            break;
        }
    }
    assert!(ended, "RX reached the end of its frames");
    assert_eq!(frames, n);
    let rep = slot.lock().unwrap().clone();
    assert!(rep.pace_raised >= 1, "the stall raised the limit: {rep:?}");
    assert!(
        max_in_use_late <= limit + BURST as u64,
        "long after the stall RX still read ahead past the limit: {max_in_use_late} in flight ({rep:?})"
    );
    assert!(view.stats().balanced());
}

/// A chain that holds every buffer (an NF keeping packets until it sees more): RX does not
/// wait for buffers that never come back; it reads on until the ring or the pool is full.
#[test]
fn rx_reads_on_when_no_buffer_comes_back() {
    let r = region("holds");
    let (alloc, mut release, view) = pool::create(&r, "p", 2048, 128).unwrap();
    let (p0, mut c0) = ring::create::<EventDesc>(&r, "r0", 1024).unwrap();
    let n = 1500u64;
    let (mut rx, slot, _) =
        RxStage::new(Box::new(Frames { left: n, frame: vec![9; 60] }), alloc, p0, Arc::new(AtomicBool::new(false)));
    let mut held = Vec::new();
    let mut ended = false;
    let mut buf = Vec::new();
    // Bounded: each round sleeps 20 µs, so the 1 ms without progress passes within
    // PACE_STALL_POLLS + 50 rounds; 200 000 rounds is far more than enough.
    for _ in 0..200_000 {
        rx.poll();
        buf.clear();
        c0.pop_burst(&mut buf, 64);
        for d in &buf {
            if d.is_end() {
                ended = true;
            } else if let Some(h) = d.packet {
                held.push(h);
            }
        }
        if ended {
            break;
        }
        std::thread::sleep(std::time::Duration::from_micros(20));
    }
    assert!(ended, "RX read every frame although no buffer came back ({} held)", held.len());
    assert_eq!(held.len() as u64, n);
    let rep = slot.lock().unwrap().clone();
    assert!(rep.paced >= u64::from(PACE_STALL_POLLS), "RX first waited: {rep:?}");
    for h in held {
        release.release(h);
    }
    assert!(view.stats().balanced());
}

/// `pacing(0)` turns pacing off: RX reads until the ring is full, as it did before.
#[test]
fn pacing_off_fills_the_ring() {
    let r = region("off");
    let (alloc, _release, view) = pool::create(&r, "p", 2048, 128).unwrap();
    let (p0, _c0) = ring::create::<EventDesc>(&r, "r0", 512).unwrap();
    let (rx, _, _) =
        RxStage::new(Box::new(Frames { left: 1000, frame: vec![1; 60] }), alloc, p0, Arc::new(AtomicBool::new(false)));
    let mut rx = rx.pacing(0);
    for _ in 0..100 {
        rx.poll();
    }
    assert_eq!(view.stats().in_use, 512 + BURST as u64, "the ring's 512 and one burst waiting in RX");
}

/// A poll that waits for pacing counts as busy (the chain is working on what RX read: the
/// core neither yields nor sleeps for it); one that waits for a free buffer of an exhausted
/// pool does not (a chain that holds every buffer must not keep a core spinning).
#[test]
fn a_pacing_wait_is_busy_and_a_pool_wait_is_not() {
    use runtime::executor::{PollResult, Runnable as _};
    let r = region("busy");
    let (alloc, mut release, _view) = pool::create(&r, "p", 600, 128).unwrap();
    let (p0, mut c0) = ring::create::<EventDesc>(&r, "r0", 1024).unwrap();
    let (mut rx, slot, _) =
        RxStage::new(Box::new(Frames { left: 5000, frame: vec![3; 60] }), alloc, p0, Arc::new(AtomicBool::new(false)));
    // Read up to the limit (512), then the first pacing wait.
    let mut first_wait = None;
    for _ in 0..100 {
        if let PollResult::Busy(0) = rx.poll() {
            first_wait = Some(());
            break;
        }
    }
    assert!(first_wait.is_some(), "a pacing wait is a busy poll: {:?}", slot.lock().unwrap());
    // The chain takes everything and frees nothing: after the 1 ms stall RX reads on until
    // the pool (600) is empty, and then its polls are idle.
    let mut held = Vec::new();
    let mut buf = Vec::new();
    let mut last = PollResult::Busy(0);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        last = rx.poll();
        buf.clear();
        c0.pop_burst(&mut buf, 64);
        held.extend(buf.iter().filter_map(|d| d.packet));
        if held.len() == 600 && last == PollResult::Idle {
            break;
        }
        std::thread::sleep(std::time::Duration::from_micros(20));
    }
    assert_eq!(held.len(), 600, "RX read on past the pacing limit to the pool's end");
    assert_eq!(last, PollResult::Idle, "waiting for a buffer is not busy: {:?}", slot.lock().unwrap());
    for h in held {
        release.release(h);
    }
}
