//! Helpers shared by the runtime's integration tests.

/// Reports a check that could not run here: prints `SKIPPED: <check>: <why>` on stdout and
/// stderr, and appends it to `$MBOX_SKIP_LOG` when set (`.ci/run` prints that list), as
/// `tests::skip` does for the workspace's integration tests (this crate cannot depend on
/// `tests`, which depends on it).
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
