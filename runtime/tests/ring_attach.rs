//! Attaching to rings: type checks, claims on each side, missing rings.

use runtime::ring::{self, RingError};
use runtime::shm::Region;

fn region(test: &str) -> std::sync::Arc<Region> {
    Region::create(&format!("t{}-{test}", std::process::id()), 1 << 20).unwrap()
}

#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C)]
struct Desc {
    a: u64,
    b: u32,
}

#[test]
fn wrong_type_is_refused() {
    let r = region("wrongt");
    let (tx, rx) = ring::create::<u64>(&r, "q", 16).unwrap();
    drop(rx);
    // Same size and alignment, different type: the type tag catches it.
    let e = ring::attach_consumer::<i64>(&r, "q").unwrap_err();
    assert!(matches!(e, RingError::TypeMismatch { .. }), "{e}");
    assert!(e.to_string().contains("u64") && e.to_string().contains("i64"), "{e}");
    let e = ring::attach_consumer::<Desc>(&r, "q").unwrap_err();
    assert!(e.to_string().contains("Desc"), "{e}");
    // The right type attaches, and sees what the producer pushed.
    let mut tx = tx;
    tx.push(42).unwrap();
    let mut rx = ring::attach_consumer::<u64>(&r, "q").unwrap();
    assert_eq!(rx.pop(), Some(42));
}

#[test]
fn each_side_is_held_once() {
    let r = region("claims");
    let (tx, rx) = ring::create::<Desc>(&r, "q", 4).unwrap();
    let e = ring::attach_producer::<Desc>(&r, "q").unwrap_err();
    assert!(matches!(e, RingError::Held { side: "producer", .. }), "{e}");
    assert!(matches!(ring::attach_consumer::<Desc>(&r, "q"), Err(RingError::Held { .. })));
    drop(tx);
    let mut tx = ring::attach_producer::<Desc>(&r, "q").unwrap();
    tx.push(Desc { a: 1, b: 2 }).unwrap();
    drop(rx);
    let mut rx = ring::attach_consumer::<Desc>(&r, "q").unwrap();
    assert_eq!(rx.pop(), Some(Desc { a: 1, b: 2 }));
    let s = ring::peek_stats(&r, "q").unwrap();
    assert_eq!((s.enqueued, s.dequeued, s.capacity), (1, 1, 4));
}

#[test]
fn missing_ring_is_named() {
    let r = region("missing");
    let e = ring::attach_consumer::<u64>(&r, "nowhere").unwrap_err();
    assert!(e.to_string().contains("nowhere"), "{e}");
    // A block that is not a ring.
    r.reserve("ring.fake", 4096, 128).unwrap();
    let e = ring::attach_consumer::<u64>(&r, "fake").unwrap_err();
    assert!(matches!(e, RingError::NotARing { .. }), "{e}");
}
