//! The app-file loader as a user meets it: paths relative to the app file, one list of every
//! problem (the same from `mbox run` and `mbox check`), hints, and bounded reads.

use std::path::Path;
use std::time::{Duration, Instant};

use tests::*;

fn error_lines(o: &std::process::Output) -> Vec<String> {
    String::from_utf8_lossy(&o.stderr)
        .lines()
        .map(|l| l.strip_prefix("mbox: error: ").unwrap_or(l).to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

/// Every example app loads from a directory that is not the repository root; the IDS runs
/// there, reading its rules next to the app file and writing its outputs where it runs.
#[test]
fn example_apps_work_from_any_directory() {
    let dir = tempfile::tempdir().unwrap();
    let mut apps = vec![repo_file("apps/ids.toml")];
    for sub in ["apps/fig7c", "apps/fig8"] {
        for e in std::fs::read_dir(repo_file(sub)).unwrap() {
            apps.push(e.unwrap().path());
        }
    }
    for app in &apps {
        if let Err(e) = microboxes::App::load(app) {
            panic!("{} does not load: {e}", app.display());
        }
    }
    let input = repo_file("tests/fixtures/captures/ids_http_attacks.pcap");
    let ids = repo_file("apps/ids.toml");
    let o = mbox(dir.path(), &["run", ids.to_str().unwrap(), "--input", input.to_str().unwrap(), "-q"]);
    assert!(o.status.success(), "{}", text(&o));
    let alerts = std::fs::read_to_string(dir.path().join("alerts.jsonl")).unwrap();
    assert!(alerts.lines().count() > 0, "no alerts: {}", text(&o));
    assert!(dir.path().join("dpi.jsonl").exists());
}

const SIX_ERRORS: &str = r#"
[runtime]
shards = "two"

[[nf]]
name = "fw"
kind = "firewall"
default = 3
rules = [{ action = "drop", dst_port = "80-" }]

[[nf]]
name = "fw"
kind = "flow_stats"
output = "f.jsonl"

[[nf]]
name = "tcp"
kind = "teleporter"
"#;

const LINKS: &str = r#"
[[nf]]
name = "fw"
kind = "firewall"
from = "nobody"

[[nf]]
name = "hash"
kind = "stream_hash"
output = "h.jsonl"
"#;

/// One pass reports every problem of every stage, and `run` and `check` print the same list.
#[test]
fn every_problem_at_once_the_same_from_run_and_check() {
    let dir = tempfile::tempdir().unwrap();
    let input = repo_file("tests/fixtures/captures/clean_oneshot.pcap");
    let app = dir.path().join("bad.toml");
    std::fs::write(&app, SIX_ERRORS).unwrap();
    let want = [
        "bad.toml: key `runtime.shards`: invalid type: string \"two\", expected u32",
        "bad.toml: nf `fw` (firewall): key `default`: invalid type: integer `3`, expected \"allow\" or \"drop\"",
        "bad.toml: nf `fw` (firewall): rule 1: key `dst_port`: `80-` is not a port or a `low-high` port range",
        "bad.toml: nf `fw`: two NFs have this name",
        "bad.toml: nf `tcp`: the name is reserved for the runtime (rx, tx, l23, tcp, splicer, proxy)",
        "bad.toml: nf `tcp`: unknown kind `teleporter` (known kinds: firewall, flow_stats, stream_hash, signature_match, dpi, logger, http_lb, memcached_lb, word_rewriter, cache, proxy_select)",
    ];
    let run = mbox(dir.path(), &["run", "bad.toml", "--input", input.to_str().unwrap()]);
    let check = mbox(dir.path(), &["check", "bad.toml", "--input", input.to_str().unwrap()]);
    assert!(!run.status.success() && !check.status.success());
    let lines = error_lines(&run);
    let mut sorted = lines.clone();
    sorted.sort();
    let mut w: Vec<String> = want.iter().map(|s| s.to_string()).collect();
    w.sort();
    assert_eq!(sorted, w, "mbox run:\n{}", lines.join("\n"));
    assert_eq!(error_lines(&check), lines, "mbox check differs from mbox run");

    // Link problems too, the same from both (mode a used to stop at the first NF).
    std::fs::write(&app, LINKS).unwrap();
    let run = mbox(dir.path(), &["run", "bad.toml", "--input", input.to_str().unwrap()]);
    let check = mbox(dir.path(), &["check", "bad.toml", "--input", input.to_str().unwrap()]);
    let lines = error_lines(&run);
    assert_eq!(error_lines(&check), lines);
    assert_eq!(lines.len(), 2, "{lines:#?}");
    assert!(lines[1].contains("there is no actor named `nobody`"), "{lines:#?}");
    // The hint replaces the controller's lines about DATA_RDY.
    assert_eq!(
        lines[0],
        "bad.toml: nf `hash` (stream_hash) reads `DATA_RDY`, `FLOW/TCP/TERMINATE`, which only the `tcp` µStack publishes: add `[stack.tcp]` to the app file"
    );
}

/// A rules file or app file that is a device or a FIFO is refused at once, naming it.
#[test]
fn unbounded_or_blocking_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status().is_ok_and(|s| s.success());
    let mut rules = vec![("/dev/zero".to_string(), "it is a device, not a regular file")];
    if made {
        rules.push((fifo.display().to_string(), "it is a FIFO, not a regular file"));
    } else {
        skip("app_loader fifo", "mkfifo is not available");
    }
    for (path, why) in &rules {
        let text = format!(
            "[stack.tcp]\n[[nf]]\nname = \"ids\"\nkind = \"signature_match\"\nrules = {path:?}\noutput = \"a.jsonl\"\n"
        );
        let t = Instant::now();
        let e = microboxes::App::parse_in(&text, "ids.toml", dir.path()).unwrap_err().to_string();
        assert!(t.elapsed() < Duration::from_secs(10));
        assert_eq!(e, format!("ids.toml: nf `ids` (signature_match): cannot read rules `{path}`: {why}"));
    }
    let e = microboxes::App::load(Path::new("/dev/zero")).unwrap_err().to_string();
    assert_eq!(e, "/dev/zero: cannot read the app file: it is a device, not a regular file");
    let big = dir.path().join("big.toml");
    std::fs::write(&big, format!("# {}\n", "x".repeat(2 << 20))).unwrap();
    let e = microboxes::App::load(&big).unwrap_err().to_string();
    assert!(e.contains("larger than the limit of 1048576 bytes"), "{e}");
}

/// Relative rule paths: against the app file's directory in `load`, the current directory
/// in `parse`.
#[test]
fn rule_paths_are_relative_to_the_app_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("conf")).unwrap();
    std::fs::copy(repo_file("apps/ids.rules"), dir.path().join("conf/my.rules")).unwrap();
    let text =
        "[stack.tcp]\n[[nf]]\nname = \"ids\"\nkind = \"signature_match\"\nrules = \"my.rules\"\noutput = \"a.jsonl\"\n";
    let app = dir.path().join("conf/app.toml");
    std::fs::write(&app, text).unwrap();
    let loaded = microboxes::App::load(&app).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(loaded.nfs[0].config.output(), Some(Path::new("a.jsonl")), "outputs stay relative to the run");
    let e = microboxes::App::parse(text, "app.toml").unwrap_err().to_string();
    assert!(e.contains("cannot read rules `my.rules`"), "{e}");
}

/// `parallel` applies in mode d only; the loader says so for the other modes.
#[test]
fn parallel_groups_outside_mode_d_get_a_note() {
    let text = "parallel = [[\"a\", \"b\"]]\n[[nf]]\nname = \"a\"\nkind = \"firewall\"\n[[nf]]\nname = \"b\"\nkind = \"firewall\"\n";
    let app = microboxes::App::parse(text, "p.toml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(app.parallel_note(microboxes::engine::Mode::D), None);
    assert_eq!(
        app.parallel_note(microboxes::engine::Mode::C).as_deref(),
        Some("p.toml: key `parallel`: NF groups run in parallel in mode d only; ignored in mode c")
    );
}

/// `mbox run` prints that note (and not with `-q`, nor in mode d).
#[test]
fn mbox_run_says_when_parallel_groups_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("t.pcap");
    gen_pcap(&input, &runtime::ports::gen::GenConfig { flows: 3, seed: 1, ..Default::default() });
    let app = dir.path().join("p.toml");
    let nf = |n: &str| format!("[[nf]]\nname = \"{n}\"\nkind = \"flow_stats\"\noutput = \"{n}.jsonl\"\n");
    std::fs::write(&app, format!("parallel = [[\"a\", \"b\"]]\n{}{}", nf("a"), nf("b"))).unwrap();
    let (a, i) = (app.to_str().unwrap(), input.to_str().unwrap());
    let note = "NF groups run in parallel in mode d only; ignored in mode c";
    let o = mbox(dir.path(), &["run", a, "--input", i]);
    assert!(o.status.success() && String::from_utf8_lossy(&o.stderr).contains(note), "{}", text(&o));
    let o = mbox(dir.path(), &["run", a, "--input", i, "-q"]);
    assert!(o.status.success() && !text(&o).contains(note), "{}", text(&o));
    let o = mbox(dir.path(), &["run", a, "--input", i, "--mode", "d"]);
    assert!(o.status.success() && !text(&o).contains("ignored in mode"), "{}", text(&o));
}

/// Every bad key of every `[stack.*]` table is reported, nested tables included.
#[test]
fn every_bad_stack_key_is_reported() {
    let text = "[stack.l23]\nmax_flow = 3\nmalformed = \"eat\"\n[stack.tcp]\nmemry = 1\n[stack.tcp.reassembly]\noverlap = \"middle\"\nmax_ahed = 3\n";
    let err = microboxes::App::parse(text, "s.toml").map(|_| ()).unwrap_err().to_string();
    for key in [
        "stack.l23.max_flow",
        "stack.l23.malformed",
        "stack.tcp.memry",
        "stack.tcp.reassembly.overlap",
        "stack.tcp.reassembly.max_ahed",
    ] {
        assert!(err.contains(&format!("key `{key}`")), "`{key}` not reported in:\n{err}");
    }
    assert_eq!(err.lines().count(), 5, "{err}");
}

/// `[port]` (the live receive rings): every bad key is reported, with the other tables'
/// problems, and the command line's ring flags override its keys one by one.
#[test]
fn port_table_keys_are_checked_and_flags_override_them() {
    let text = "[runtime]\nshards = 0\n[port]\nblock_sise = 4096\nblocks = \"many\"\nblock_size = 5000\nblock_timeout_ms = 0\n";
    let err = microboxes::App::parse(text, "p.toml").map(|_| ()).unwrap_err().to_string();
    let want = [
        "p.toml: key `runtime.shards`: must be between 1 and 64, found 0",
        "p.toml: key `port.block_sise`: unknown field `block_sise`, expected one of `block_size`, `blocks`, `block_timeout_ms`",
        "p.toml: key `port.blocks`: invalid type: string \"many\", expected u32",
        "p.toml: key `port.block_size`: must be a positive multiple of 4096 bytes, found 5000",
        "p.toml: key `port.block_timeout_ms`: must be at least 1 ms, found 0",
    ];
    for w in want {
        assert!(err.lines().any(|l| l.starts_with(w)), "`{w}` not reported in:\n{err}");
    }
    assert_eq!(err.lines().count(), want.len(), "{err}");

    let err = microboxes::App::parse("port = 3\n", "p.toml").map(|_| ()).unwrap_err().to_string();
    assert_eq!(err, "p.toml: key `port`: must be a table, not integer");
    let err = microboxes::App::parse("[port]\nblock_size = 1048576\nblocks = 8192\n", "p.toml")
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(err.contains("key `port`: block_size × blocks is 8589934592 bytes per interface"), "{err}");

    // Good keys, and the flags over them.
    let app =
        microboxes::App::parse("[port]\nblock_size = 65536\nblocks = 16\nblock_timeout_ms = 5\n", "p.toml").unwrap();
    let r = app.port.ring_with(None, None, None);
    assert_eq!((r.block_size, r.block_count, r.block_timeout_ms), (65536, 16, 5));
    let r = app.port.ring_with(Some(8192), None, Some(2));
    assert_eq!((r.block_size, r.block_count, r.block_timeout_ms), (8192, 16, 2));
    // Without the table: the runtime's defaults.
    let app = microboxes::App::parse("", "p.toml").unwrap();
    assert_eq!(app.port.ring_with(None, None, None), runtime::ports::RingConfig::default());
}

/// `[runtime]`'s idle policy keys: read into the executor's policy, bad values reported.
#[test]
fn runtime_idle_policy_keys_are_read_and_checked() {
    let app = microboxes::App::parse(
        "[runtime]\nidle_spin_rounds = 4\nidle_yield_rounds = 16\nidle_sleep_us = 0\nidle_sleep_after_us = 300\nidle_doorbell = false\n",
        "i.toml",
    )
    .unwrap();
    let p = app.runtime.idle_policy();
    assert_eq!((p.spin_rounds, p.yield_rounds, p.sleep), (4, 16, std::time::Duration::ZERO));
    assert_eq!(p.sleep_after, std::time::Duration::from_micros(300));
    assert!(!p.doorbell);
    let d = microboxes::App::parse("", "d.toml").unwrap().runtime.idle_policy();
    assert_eq!(d, runtime::executor::IdlePolicy::default());
    let text = "[runtime]\nidle_spin_rounds = 10\nidle_yield_rounds = 5\nidle_sleep_us = 200000\nidle_sleep_after_us = 2000000\n";
    let err = microboxes::App::parse(text, "i.toml").map(|_| ()).unwrap_err().to_string();
    for want in [
        "i.toml: key `runtime.idle_yield_rounds`: must be at least idle_spin_rounds, found 5",
        "i.toml: key `runtime.idle_sleep_us`: must be at most 100000 (100 ms), found 200000",
        "i.toml: key `runtime.idle_sleep_after_us`: must be at most 1000000 (1 s), found 2000000",
    ] {
        assert!(err.contains(want), "`{want}` not in:\n{err}");
    }
}
