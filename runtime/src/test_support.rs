//! Support for the test suites of every crate: a visible skip.
//!
//! A check that cannot run on this machine (no root, a missing tool, one CPU) must not pass
//! silently. [`skip`] prints `SKIPPED: <check>: <why>` on stdout and stderr and appends the
//! line to the file named by `$MBOX_SKIP_LOG` when set; `.ci/run` sets it and prints the
//! list at the end. It lives here, in the lowest crate, so that every crate's tests share it.

/// Reports that `check` did not run here, and why. See the module docs.
pub fn skip(check: &str, why: &str) {
    let line = format!("SKIPPED: {check}: {why}");
    println!("{line}");
    eprintln!("{line}");
    if let Some(log) = std::env::var_os("MBOX_SKIP_LOG") {
        use std::io::Write as _;
        if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(log) {
            let _ = writeln!(f, "{line}");
        }
    }
}
