//! Shared-memory hygiene: a live run's prefix is refused, dead runs' files are cleaned, other
//! users' files are never touched, planted links and FIFOs neither redirect nor hang us, and a
//! `/dev/shm` too small for the region is a clear error instead of a SIGBUS.
//!
//! The tests that need root (other users' files, a private mount namespace) print a line
//! `SKIPPED: ...` when they cannot run, and append it to `$MBOX_SKIP_LOG` if set, so that the
//! skip is visible in CI's output.

mod common;

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;

use runtime::shm::owner::{self, State};
use runtime::shm::{self, Region, ShmError};

fn prefix(test: &str) -> String {
    format!("h{}-{test}", std::process::id())
}

fn skip(test: &str, why: &str) {
    common::skip(&format!("runtime shm_hygiene::{test}"), why);
}

fn is_root() -> bool {
    runtime::sys::effective_uid() == 0
}

/// A pid that is certainly not running any more: a child that has exited and been reaped.
fn dead_pid() -> u32 {
    let mut child = Command::new("true").spawn().expect("spawn `true`");
    let pid = child.id();
    child.wait().unwrap();
    pid
}

/// Makes the region file at `path` look as if pid `pid` had created it.
fn set_creator_pid(path: &Path, pid: u32) {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    // The creator pid sits right after `count` in the header (offset 36).
    f.write_all_at(&pid.to_ne_bytes(), 36).unwrap();
}

#[test]
fn a_live_runs_prefix_is_refused_and_its_region_survives() {
    let p = prefix("live");
    let r = Region::create(&p, 64 << 10).unwrap();
    r.reserve("mine", 16, 8).unwrap();
    let e = Region::create(&p, 64 << 10).unwrap_err();
    assert!(matches!(e, ShmError::InUse { pid, .. } if pid == std::process::id()), "{e}");
    assert!(e.to_string().contains("in use by a live run"), "{e}");
    assert_eq!(shm::remove_stale(&p).unwrap(), 0, "a live region is not stale");
    // The first run's region is intact.
    assert!(r.lookup("mine").is_ok());
    assert!(Region::attach(&p).unwrap().lookup("mine").is_ok());
    assert_eq!(r.creator(), shm::Creator::current());
    assert!(r.creator_alive());
}

#[test]
fn a_dead_runs_region_is_orphaned_and_cleaned() {
    let p = prefix("dead");
    let r = Region::create(&p, 64 << 10).unwrap();
    let path = r.path().to_path_buf();
    std::mem::forget(r); // as if killed: nothing unlinks the file
    set_creator_pid(&path, dead_pid());
    std::fs::write(format!("/dev/shm/mbox.{p}.extra"), b"x").unwrap();
    let info = owner::inspect(&path).unwrap();
    assert!(matches!(info.state, State::Dead(_)), "{info:?}");
    let e = Region::attach(&p).unwrap_err();
    assert!(matches!(e, ShmError::Orphaned { .. }), "{e}");
    let cleaned = owner::clean(Some(&p)).unwrap();
    assert_eq!(cleaned.removed.len(), 2, "{cleaned:?}");
    assert!(!path.exists());
    // A new run may use the prefix again.
    Region::create(&p, 64 << 10).unwrap();
}

#[test]
fn planted_links_and_fifos_neither_redirect_nor_hang() {
    let p = prefix("plant");
    let dir = std::env::temp_dir().join(format!("mbox-plant-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let victim = dir.join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    let region = format!("/dev/shm/mbox.{p}.region");
    std::os::unix::fs::symlink(&victim, &region).unwrap();
    // Attaching does not follow the link.
    assert!(Region::attach(&p).is_err());
    // Creating removes the link (ours, no live run), never writes through it.
    let r = Region::create(&p, 64 << 10).unwrap();
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    drop(r);
    // A FIFO in the region's place: inspecting and attaching return at once.
    let c = std::ffi::CString::new(region.clone()).unwrap();
    assert_eq!(unsafe_free_mkfifo(&c), 0, "mkfifo");
    let t = std::time::Instant::now();
    assert!(matches!(owner::inspect(Path::new(&region)).unwrap().state, State::Other(_)));
    assert!(matches!(Region::attach(&p), Err(ShmError::BadHeader { .. })));
    assert!(t.elapsed() < std::time::Duration::from_secs(5));
    assert_eq!(shm::remove_stale(&p).unwrap(), 1);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `mkfifo` through the `mkfifo` command (this crate's tests stay free of unsafe code).
fn unsafe_free_mkfifo(path: &std::ffi::CStr) -> i32 {
    let ok = Command::new("mkfifo").arg(path.to_str().unwrap()).status().is_ok_and(|s| s.success());
    if ok {
        0
    } else {
        -1
    }
}

#[test]
fn other_users_files_are_never_touched() {
    if !is_root() {
        return skip("other_users_files_are_never_touched", "needs root to give a file to another user");
    }
    let p = prefix("foreign");
    let region = format!("/dev/shm/mbox.{p}.region");
    std::fs::write(&region, b"someone else's").unwrap();
    let ok = Command::new("chown").args(["65534:65534", &region]).status().is_ok_and(|s| s.success());
    assert!(ok, "chown");
    assert_eq!(shm::remove_stale(&p).unwrap(), 0);
    let e = Region::create(&p, 64 << 10).unwrap_err();
    assert!(matches!(e, ShmError::NotOwned { uid: 65534, .. }), "{e}");
    assert_eq!(std::fs::read(&region).unwrap(), b"someone else's");
    let cleaned = owner::clean(Some(&p)).unwrap();
    assert!(cleaned.removed.is_empty() && cleaned.kept.len() == 1, "{cleaned:?}");
    std::fs::remove_file(&region).unwrap();
}

/// Runs inside a private mount namespace whose /dev/shm is a 4 MiB tmpfs (see below).
fn small_shm_child() {
    let p = prefix("small");
    let e = Region::create(&p, 16 << 20).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, ShmError::NoSpace { needed, .. } if needed == 16 << 20), "{msg}");
    assert!(msg.contains("16.0 MiB") && msg.contains("/dev/shm has"), "{msg}");
    assert!(!Path::new(&format!("/dev/shm/mbox.{p}.region")).exists(), "no file left behind");
    // What fits still works.
    Region::create(&p, 1 << 20).unwrap();
    println!("small-shm child: ok: {msg}");
}

#[test]
fn a_small_dev_shm_is_a_clear_error_not_a_sigbus() {
    if std::env::var_os("MBOX_SMALL_SHM_CHILD").is_some() {
        return small_shm_child();
    }
    let name = "a_small_dev_shm_is_a_clear_error_not_a_sigbus";
    if !is_root() {
        return skip(name, "needs root for a private mount namespace");
    }
    let exe = std::env::current_exe().unwrap();
    let script = format!(
        "mount -t tmpfs -o size=4m mbox-test /dev/shm && exec '{}' --exact {name} --nocapture --test-threads 1",
        exe.display()
    );
    let out = match Command::new("timeout")
        .args(["60", "unshare", "--mount", "--propagation", "private", "sh", "-c", &script])
        .env("MBOX_SMALL_SHM_CHILD", "1")
        .output()
    {
        Ok(o) => o,
        Err(e) => return skip(name, &format!("cannot run unshare: {e}")),
    };
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if !out.status.success() && text.contains("unshare failed") {
        return skip(name, &format!("no private mount namespace here: {}", text.trim()));
    }
    assert!(out.status.success(), "child failed ({}):\n{text}", out.status);
    assert!(text.contains("small-shm child: ok"), "{text}");
}

#[test]
fn clean_own_removes_this_processs_region_and_clean_does_not() {
    let p = prefix("own");
    let r = Region::create(&p, 64 << 10).unwrap();
    let path = r.path().to_path_buf();
    std::mem::forget(r); // as at a second Ctrl-C: the process exits without dropping it
    assert!(owner::clean(Some(&p)).unwrap().removed.is_empty(), "a live region is kept");
    assert_eq!(owner::clean_own(&p).unwrap().removed, vec![path.clone()]);
    assert!(!path.exists());
}
