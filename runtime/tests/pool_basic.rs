//! The packet pool: balance, exhaustion, oversize, reference counts, bad releases, threads.

use std::sync::Arc;
use std::time::{Duration, Instant};

use runtime::pool::{self, AllocError, PacketHandle};
use runtime::ring;
use runtime::shm::Region;

fn region(test: &str) -> Arc<Region> {
    Region::create(&format!("t{}-{test}", std::process::id()), 4 << 20).unwrap()
}

#[test]
fn handle_is_index_plus_one() {
    assert_eq!(std::mem::size_of::<Option<PacketHandle>>(), 4);
    assert_eq!(PacketHandle::from_index(0).index(), 0);
    assert_eq!(PacketHandle::from_index(77).index(), 77);
}

#[test]
fn alloc_release_balances() {
    let r = region("balance");
    let (mut a, mut rel, view) = pool::create(&r, "p", 8, 128).unwrap();
    assert_eq!((view.count(), view.buf_size()), (8, 128));
    let hs: Vec<_> = (0..8u8).map(|i| a.alloc(&[i; 100][..usize::from(i) + 1]).unwrap()).collect();
    for (i, &h) in hs.iter().enumerate() {
        assert_eq!(view.data(h), &vec![i as u8; i + 1][..]);
        assert_eq!(view.refcount(h), 1);
    }
    assert_eq!(view.stats().in_use, 8);
    assert!(!view.stats().balanced());
    for h in hs {
        assert!(rel.release(h));
        assert_eq!(view.refcount(h), 0);
    }
    let s = view.stats();
    assert!(s.balanced(), "{s:?}");
    assert_eq!((s.allocated, s.freed), (8, 8));
    // Buffers are reusable after release.
    assert_eq!(a.available(), 8);
    let h = a.alloc(b"again").unwrap();
    // Another view, attached by name, sees the same bytes and counters.
    let v2 = pool::attach(&r, "p").unwrap();
    assert_eq!(v2.data(h), b"again");
    assert_eq!(v2.stats().allocated, 9);
    rel.release(h);
    assert!(v2.stats().balanced());
}

#[test]
fn exhaustion_and_too_large_are_counted() {
    let r = region("exhaust");
    let (mut a, mut rel, view) = pool::create(&r, "p", 2, 64).unwrap();
    let h1 = a.alloc(b"1").unwrap();
    let h2 = a.alloc(b"2").unwrap();
    assert_eq!(a.alloc(b"3"), Err(AllocError::Exhausted));
    assert_eq!(a.alloc(b"4"), Err(AllocError::Exhausted));
    let e = a.alloc(&[0; 65]).unwrap_err();
    assert_eq!(e, AllocError::TooLarge { len: 65, buf_size: 64 });
    assert!(e.to_string().contains("65") && e.to_string().contains("64"));
    let s = view.stats();
    assert_eq!((s.exhausted, s.too_large, s.allocated), (2, 1, 2));
    rel.release(h1);
    rel.release(h2);
    assert!(view.stats().balanced());
    assert!(a.alloc(&[9; 64]).is_ok(), "exactly buf_size fits");
}

#[test]
fn retain_release_frees_on_last() {
    let r = region("refcnt");
    let (mut a, mut rel, view) = pool::create(&r, "p", 4, 64).unwrap();
    let h = a.alloc(b"shared").unwrap();
    view.retain(h);
    view.retain(h);
    assert_eq!(view.refcount(h), 3);
    assert!(!rel.release(h));
    assert!(!rel.release(h));
    assert_eq!(view.stats().freed, 0);
    assert!(rel.release(h));
    assert_eq!(view.stats().freed, 1);
    assert!(view.stats().balanced());
}

#[test]
fn bad_release_is_counted_never_double_freed() {
    let r = region("badrel");
    let (mut a, mut rel, view) = pool::create(&r, "p", 2, 64).unwrap();
    let h = a.alloc(b"x").unwrap();
    assert!(rel.release(h));
    assert!(!rel.release(h));
    assert!(!rel.release(PacketHandle::from_index(1)));
    let s = view.stats();
    assert_eq!((s.freed, s.bad_release), (1, 2));
    assert!(s.balanced());
    // The free list still holds each buffer once: two allocations, then exhaustion.
    let h1 = a.alloc(b"a").unwrap();
    let h2 = a.alloc(b"b").unwrap();
    assert_ne!(h1, h2);
    assert_eq!(a.alloc(b"c"), Err(AllocError::Exhausted));
}

#[test]
fn bad_config_is_refused() {
    let r = region("badcfg");
    assert!(pool::create(&r, "z", 0, 64).is_err());
    assert!(pool::create(&r, "z", 4, 0).is_err());
    let e = pool::create(&r, "huge", 1 << 20, 2048).unwrap_err();
    assert!(e.to_string().contains("full"), "{e}");
    assert!(pool::attach(&r, "none").is_err());
}

#[test]
fn cross_thread_alloc_and_release_balance() {
    const N: u32 = 100_000;
    let r = region("xthread");
    let (mut a, mut rel, view) = pool::create(&r, "p", 64, 256).unwrap();
    let (mut tx, mut rx) = ring::create::<PacketHandle>(&r, "to-release", 128).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let view2 = view.clone();
    let releaser = std::thread::spawn(move || {
        let mut got = 0u32;
        let mut out = Vec::with_capacity(32);
        while got < N {
            assert!(Instant::now() < deadline, "releaser timed out at {got}");
            out.clear();
            if rx.pop_burst(&mut out, 32) == 0 {
                std::thread::yield_now();
                continue;
            }
            for &h in &out {
                assert_eq!(view2.data(h), &got.to_le_bytes());
                assert!(rel.release(h));
                got += 1;
            }
        }
    });
    let mut sent = 0u32;
    while sent < N {
        assert!(Instant::now() < deadline, "allocator timed out at {sent}");
        match a.alloc(&sent.to_le_bytes()) {
            Ok(h) => {
                let mut h = h;
                loop {
                    match tx.push(h) {
                        Ok(()) => break,
                        Err(back) => {
                            h = back;
                            assert!(Instant::now() < deadline, "ring stuck");
                            std::thread::yield_now();
                        }
                    }
                }
                sent += 1;
            }
            Err(AllocError::Exhausted) => std::thread::yield_now(),
            Err(e) => panic!("{e}"),
        }
    }
    releaser.join().unwrap();
    let s = view.stats();
    assert!(s.balanced(), "{s:?}");
    assert_eq!(s.allocated, u64::from(N));
    assert_eq!(s.bad_release, 0);
}

/// Lending (the DPDK port's zero-copy receive): buffers taken off the free list for a
/// device, written in place, adopted as packets, released, lent again; the pool balances
/// only once every lent buffer is adopted or returned.
#[test]
fn lend_adopt_return_balances() {
    let r = region("lend");
    let (mut a, mut rel, view) = pool::create(&r, "p", 8, 128).unwrap();
    assert_eq!(view.stride(), 128);
    let mut lent = Vec::new();
    assert_eq!(a.lend(6, &mut lent), 6);
    assert_eq!(a.available(), 2, "lent buffers are off the free list");
    // A device writes into buffer lent[0] in place; its address maps back to its index.
    let addr = view.buffer_addr(lent[0]).unwrap();
    assert_eq!(view.index_of(addr), Some(lent[0]));
    // SAFETY: (test) addr is the start of a 128-byte buffer nobody else uses.
    unsafe { std::ptr::copy_nonoverlapping(b"in place".as_ptr(), addr, 8) };
    let h = a.adopt(lent[0], 8).unwrap();
    assert_eq!((view.data(h), view.refcount(h)), (&b"in place"[..], 1));
    // A copied frame into a lent (spare) buffer.
    // SAFETY: (test) lent[1] is lent and written by nobody else.
    let h2 = unsafe { a.fill_lent(lent[1], b"copied") }.unwrap();
    assert_eq!(view.data(h2), b"copied");
    assert_eq!(a.adopt(lent[2], 129), Err(AllocError::TooLarge { len: 129, buf_size: 128 }));
    assert!(view.index_of(addr.wrapping_add(1)).is_none(), "not a buffer's start");
    assert!(view.buffer_addr(8).is_none());
    assert!(rel.release(h) && rel.release(h2));
    let s = view.stats();
    assert_eq!((s.lent, s.adopted, s.allocated, s.freed), (6, 2, 2, 2), "{s:?}");
    assert!(!s.balanced(), "4 lent buffers not accounted for yet: {s:?}");
    // The released buffers come back off the free list: lent again.
    let mut again = Vec::new();
    assert_eq!(a.lend(8, &mut again), 4, "2 never lent + 2 released");
    a.returned(8);
    let s = view.stats();
    assert_eq!((s.lent, s.adopted, s.returned), (10, 2, 8), "{s:?}");
    assert!(s.balanced(), "{s:?}");
}

/// Hot reuse: the buffer freed last is the one filled next (its lines are the warmest), the
/// ones freed long ago wait; counts and lending see every free buffer, wherever it waits.
#[test]
fn the_buffer_freed_last_is_reused_first() {
    let r = region("hot");
    let (mut a, mut rel, view) = pool::create(&r, "p", 8, 64).unwrap();
    let hs: Vec<_> = (0..4u8).map(|i| a.alloc(&[i]).unwrap()).collect();
    assert_eq!(a.available(), 4);
    assert!(rel.release(hs[1]));
    assert!(rel.release(hs[3]));
    assert!(rel.release(hs[0]));
    assert_eq!(a.available(), 7);
    assert_eq!(a.in_use(), 1);
    let next = a.alloc(b"x").unwrap();
    assert_eq!(next, hs[0], "the buffer freed last");
    assert_eq!(view.data(next), b"x");
    assert_eq!(a.alloc(b"y").unwrap(), hs[3]);
    assert!(rel.release(hs[2]));
    assert_eq!(a.alloc(b"z").unwrap(), hs[2], "freed after the others still waiting");
    assert_eq!(a.alloc(b"w").unwrap(), hs[1]);
    // Lending takes the hottest first too, and every free buffer is found exactly once.
    let mut lent = Vec::new();
    assert_eq!(a.lend(16, &mut lent), 4);
    lent.sort_unstable();
    lent.dedup();
    assert_eq!(lent.len(), 4);
    assert_eq!(a.available(), 0);
    assert_eq!(a.alloc(b"none"), Err(AllocError::Exhausted));
    a.returned(4);
    for h in [hs[0], hs[1], hs[2], hs[3]] {
        assert!(rel.release(h));
    }
    assert!(view.stats().balanced(), "{:?}", view.stats());
}
