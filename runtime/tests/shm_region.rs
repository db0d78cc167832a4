//! The shared-memory region: create / attach / reserve / lookup, stale files, permissions.

use std::os::unix::fs::PermissionsExt;

use runtime::shm::{self, Region, ShmError};

fn prefix(test: &str) -> String {
    format!("t{}-{test}", std::process::id())
}

#[test]
fn create_attach_lookup() {
    let p = prefix("basic");
    let r = Region::create(&p, 1 << 20).unwrap();
    assert_eq!(r.prefix(), p);
    assert_eq!(r.size(), 1 << 20);
    assert_eq!(r.path(), std::path::Path::new(&format!("/dev/shm/mbox.{p}.region")));
    let used0 = r.used();
    let a = r.reserve("alpha", 100, 64).unwrap();
    let b = r.reserve("beta", 10, 4096).unwrap();
    assert_eq!(a % 64, 0);
    assert_eq!(b % 4096, 0);
    assert!(b >= a + 100);
    assert!(r.used() >= used0 + 110);
    assert_eq!(r.lookup("alpha").unwrap(), (a, 100));

    let other = Region::attach(&p).unwrap();
    assert_eq!(other.size(), r.size());
    assert_eq!(other.lookup("beta").unwrap(), (b, 10));
    assert_eq!(other.names(), vec!["alpha".to_string(), "beta".to_string()]);
    // A reservation through one mapping is visible through the other.
    let c = other.reserve("gamma", 8, 8).unwrap();
    assert_eq!(r.lookup("gamma").unwrap(), (c, 8));

    assert!(matches!(r.reserve("alpha", 1, 1), Err(ShmError::NameExists { .. })));
    let e = r.lookup("nope").unwrap_err();
    assert!(e.to_string().contains("nope"), "{e}");
    assert!(matches!(r.reserve("", 1, 1), Err(ShmError::BadName { .. })));
    assert!(matches!(r.reserve(&"x".repeat(49), 1, 1), Err(ShmError::BadName { .. })));
    assert!(matches!(r.reserve("odd", 1, 3), Err(ShmError::BadAlign { .. })));
    // An attached region does not unlink the file.
    drop(other);
    assert!(r.path().exists());
}

#[test]
fn stale_file_is_removed_and_create_is_exclusive() {
    let p = prefix("stale");
    let path = format!("/dev/shm/mbox.{p}.region");
    std::fs::write(&path, b"left by a killed run").unwrap();
    std::fs::write(format!("/dev/shm/mbox.{p}.other"), b"x").unwrap();
    let r = Region::create(&p, 64 << 10).unwrap();
    assert!(!std::path::Path::new(&format!("/dev/shm/mbox.{p}.other")).exists());
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 64 << 10);
    drop(r);
    assert_eq!(shm::remove_stale(&p).unwrap(), 0);
    std::fs::write(&path, b"x").unwrap();
    assert_eq!(shm::remove_stale(&p).unwrap(), 1);
}

#[test]
fn attach_rejects_garbage() {
    let p = prefix("garbage");
    let path = format!("/dev/shm/mbox.{p}.region");
    std::fs::write(&path, vec![7u8; 64 << 10]).unwrap();
    let e = Region::attach(&p).unwrap_err();
    std::fs::remove_file(&path).unwrap();
    assert!(matches!(e, ShmError::BadHeader { .. }), "{e}");
    assert!(matches!(Region::attach(&prefix("absent")), Err(ShmError::Io { .. })));
}

#[test]
fn mode_is_0600_and_file_gone_after_drop() {
    let r = Region::create(&prefix("mode"), 64 << 10).unwrap();
    let path = r.path().to_path_buf();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let r2 = r.clone();
    drop(r);
    assert!(path.exists(), "still referenced");
    drop(r2);
    assert!(!path.exists());
}

#[test]
fn bad_prefix_is_named() {
    for bad in ["", "a/b", "a.b", "with space", &"x".repeat(65)] {
        let e = Region::create(bad, 1 << 16).unwrap_err();
        assert!(matches!(e, ShmError::BadPrefix { .. }), "{bad}: {e}");
        assert!(e.to_string().contains(&format!("`{bad}`")), "{e}");
    }
    assert!(shm::remove_stale("../x").is_err());
}

#[test]
fn full_region_says_how_much() {
    let r = Region::create(&prefix("full"), 64 << 10).unwrap();
    let left = r.size() - r.used();
    let e = r.reserve("big", 1 << 20, 8).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, ShmError::Full { .. }), "{msg}");
    assert!(msg.contains("1048576") && msg.contains(&left.to_string()), "{msg}");
    assert_eq!(r.size() - r.used(), left, "a failed reserve takes nothing");
    // Exactly what is left still fits.
    r.reserve("rest", left, 1).unwrap();
    assert!(matches!(r.reserve("one", 1, 1), Err(ShmError::Full { .. })));
    assert!(matches!(Region::create(&prefix("tiny"), 100), Err(ShmError::TooSmall { .. })));
}

#[test]
fn concurrent_reserves_get_disjoint_blocks() {
    let r = Region::create(&prefix("conc"), 1 << 20).unwrap();
    let blocks: Vec<(usize, usize)> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..4)
            .map(|t| {
                let r = &r;
                s.spawn(move || {
                    (0..25).map(|i| (r.reserve(&format!("b{t}.{i}"), 100, 16).unwrap(), 100)).collect::<Vec<_>>()
                })
            })
            .collect();
        hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let mut sorted = blocks.clone();
    sorted.sort();
    for w in sorted.windows(2) {
        assert!(w[0].0 + w[0].1 <= w[1].0, "overlap {w:?}");
    }
    assert_eq!(r.names().len(), 100);
}

#[test]
fn attach_checks_the_layout_hash() {
    let r = Region::create_with_layout(&prefix("layout"), 64 << 10, 0xfeed).unwrap();
    assert_eq!(Region::attach_layout(r.prefix(), 0xfeed).unwrap().layout_hash(), 0xfeed);
    let e = Region::attach_layout(r.prefix(), 0xbeef).unwrap_err().to_string();
    assert!(e.contains("was made for another layout") && e.contains("0x000000000000feed"), "{e}");
    // A region of another version is refused by the plain attach too, naming both versions.
    let path = r.path().to_path_buf();
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.write_all_at(&99u32.to_le_bytes(), 8).unwrap();
    let e = Region::attach(r.prefix()).unwrap_err().to_string();
    assert!(e.contains("region version 99"), "{e}");
}
