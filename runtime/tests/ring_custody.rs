//! What NF supervision needs from rings and shared cells: a consumer can peek a burst and
//! take it later (the items stay in the ring until `commit`), a producer that takes over a
//! ring reads back what its predecessor last pushed (`recent`), and shared cells are seen by
//! another handle of the same region.

use runtime::shm::Region;
use runtime::{cells, ring};

fn region(tag: &str) -> std::sync::Arc<Region> {
    Region::create(&format!("rc-{tag}-{}", std::process::id()), 1 << 20).unwrap()
}

#[test]
fn peek_keeps_items_until_commit() {
    let r = region("peek");
    let (mut p, mut c) = ring::create::<u64>(&r, "x", 4).unwrap();
    assert_eq!(p.push_burst(&[1, 2, 3, 4]), 4);
    let mut out = Vec::new();
    assert_eq!(c.peek_burst(&mut out, 3), 3);
    assert_eq!(out, [1, 2, 3]);
    // Not taken: the producer has no room, a second peek sees the same items.
    assert_eq!(p.push_burst(&[5]), 0);
    out.clear();
    assert_eq!(c.peek_burst(&mut out, 8), 4);
    assert_eq!(out, [1, 2, 3, 4]);
    c.commit(2);
    assert_eq!(c.position(), 2);
    assert_eq!(p.push_burst(&[5, 6, 7]), 2);
    out.clear();
    assert_eq!(c.pop_burst(&mut out, 8), 4);
    assert_eq!(out, [3, 4, 5, 6]);
    // Committing more than was seen takes only what was seen.
    c.commit(100);
    assert_eq!(c.position(), 6);
}

#[test]
fn a_new_producer_reads_back_what_the_old_one_pushed() {
    let r = region("recent");
    let (mut p, mut c) = ring::create::<u64>(&r, "y", 4).unwrap();
    assert_eq!(p.push_burst(&[1, 2, 3]), 3);
    let mut out = Vec::new();
    assert_eq!(c.pop_burst(&mut out, 2), 2);
    assert_eq!(p.push_burst(&[4, 5, 6]), 3);
    drop(p);
    let q = ring::attach_producer::<u64>(&r, "y").unwrap();
    assert_eq!(q.position(), 6);
    assert_eq!(q.recent(4), [5, 6]);
    // Only the last `capacity` pushes are still there.
    assert_eq!(q.recent(0), [3, 4, 5, 6]);
    assert_eq!(q.recent(6), Vec::<u64>::new());
}

#[test]
fn cells_are_shared_and_bounded() {
    let r = region("cells");
    let a = cells::create(&r, "k", 3).unwrap();
    let b = cells::attach(&r, "k").unwrap();
    assert_eq!(b.len(), 3);
    a.set(1, 7);
    assert_eq!(b.get(1), 7);
    a.set(9, 1); // out of range: nothing
    assert_eq!(b.get(9), 0);
    assert!(cells::attach(&r, "none").is_err());
}
