//! The ring against a `VecDeque` model: random push / push_burst / pop / pop_burst sequences.

use std::collections::VecDeque;

use proptest::prelude::*;
use runtime::ring;
use runtime::shm::Region;

#[derive(Clone, Debug)]
enum Op {
    Push(u32),
    PushBurst(Vec<u32>),
    Pop,
    PopBurst(usize),
    Len,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        any::<u32>().prop_map(Op::Push),
        proptest::collection::vec(any::<u32>(), 0..24).prop_map(Op::PushBurst),
        Just(Op::Pop),
        (0usize..24).prop_map(Op::PopBurst),
        Just(Op::Len),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn ring_matches_vecdeque(cap_log in 0u32..5, ops in proptest::collection::vec(op(), 1..200)) {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let region = Region::create(&format!("t{}-model{n}", std::process::id()), 64 << 10).unwrap();
        let cap = 1usize << cap_log;
        let (mut tx, mut rx) = ring::create::<u32>(&region, "m", cap).unwrap();
        let mut model = VecDeque::new();
        let (mut enq, mut deq, mut full, mut refused, mut peak) = (0u64, 0u64, 0u64, 0u64, 0u64);
        for op in ops {
            match op {
                Op::Push(v) => {
                    let r = tx.push(v);
                    if model.len() < cap {
                        prop_assert_eq!(r, Ok(()));
                        model.push_back(v);
                        enq += 1;
                    } else {
                        prop_assert_eq!(r, Err(v));
                        full += 1;
                        refused += 1;
                    }
                }
                Op::PushBurst(items) => {
                    let fit = items.len().min(cap - model.len());
                    prop_assert_eq!(tx.push_burst(&items), fit);
                    model.extend(&items[..fit]);
                    enq += fit as u64;
                    if fit < items.len() {
                        full += 1;
                        refused += (items.len() - fit) as u64;
                    }
                }
                Op::Pop => {
                    let want = model.pop_front();
                    prop_assert_eq!(rx.pop(), want);
                    deq += u64::from(want.is_some());
                }
                Op::PopBurst(max) => {
                    let mut out = vec![7, 7];
                    let k = rx.pop_burst(&mut out, max);
                    let want: Vec<u32> = (0..max.min(model.len())).map(|_| model.pop_front().unwrap()).collect();
                    prop_assert_eq!(k, want.len());
                    prop_assert_eq!(&out[..2], &[7, 7]);
                    prop_assert_eq!(&out[2..], &want[..]);
                    deq += k as u64;
                }
                Op::Len => {
                    prop_assert_eq!(rx.len(), model.len());
                    prop_assert_eq!(rx.is_empty(), model.is_empty());
                    prop_assert_eq!(tx.free_slots(), cap - model.len());
                }
            }
            peak = peak.max(model.len() as u64);
            let s = tx.stats();
            prop_assert_eq!(s.enqueued, enq);
            prop_assert_eq!(s.dequeued, deq);
            prop_assert_eq!(s.full_events, full);
            prop_assert_eq!(s.refused_items, refused);
            prop_assert_eq!(s.occupancy(), model.len() as u64);
            prop_assert!(s.high_water >= peak && s.high_water <= cap as u64, "{:?} peak {}", s, peak);
            if full > 0 {
                prop_assert_eq!(s.high_water, cap as u64);
            }
        }
        prop_assert_eq!(rx.stats().name, "m");
        prop_assert_eq!(rx.capacity(), cap);
    }
}

#[test]
fn bad_capacity_is_explained() {
    let region = Region::create(&format!("t{}-badcap", std::process::id()), 64 << 10).unwrap();
    let e = ring::create::<u64>(&region, "r", 1000).unwrap_err();
    assert!(e.to_string().contains("1024"), "{e}");
    assert!(ring::create::<u64>(&region, "r", 0).is_err());
    let e = ring::create::<u64>(&region, "big", 1 << 20).unwrap_err();
    assert!(e.to_string().contains("full"), "{e}");
}
