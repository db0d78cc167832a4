//! Two threads pass 1,000,000 u64s through a ring in bursts; all arrive, in order.

use std::time::{Duration, Instant};

use runtime::ring;
use runtime::shm::Region;

#[test]
fn million_items_in_order() {
    const N: u64 = 1_000_000;
    let region = Region::create(&format!("t{}-threads", std::process::id()), 1 << 20).unwrap();
    let (mut tx, mut rx) = ring::create::<u64>(&region, "pipe", 256).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let producer = std::thread::spawn(move || {
        let mut next = 0u64;
        let mut burst = Vec::with_capacity(32);
        while next < N {
            assert!(Instant::now() < deadline, "producer timed out at {next}");
            burst.clear();
            burst.extend(next..(next + 32).min(N));
            let k = tx.push_burst(&burst);
            next += k as u64;
            if k < burst.len() {
                std::thread::yield_now();
            }
        }
        tx
    });
    let mut expect = 0u64;
    let mut out = Vec::with_capacity(64);
    while expect < N {
        assert!(Instant::now() < deadline, "consumer timed out at {expect}");
        out.clear();
        if rx.pop_burst(&mut out, 64) == 0 {
            std::thread::yield_now();
            continue;
        }
        for &v in &out {
            assert_eq!(v, expect);
            expect += 1;
        }
    }
    let tx = producer.join().unwrap();
    assert!(rx.is_empty());
    let s = tx.stats();
    assert_eq!(s.enqueued, N);
    assert_eq!(s.dequeued, N);
    assert!(s.high_water <= 256);
}
