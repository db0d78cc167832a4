//! What `mbox` tells a person: `--output-dir` and the files written, errors said once, a
//! summary laid out with a legend (always on stdout, errors on stderr, nothing but errors with
//! `-q`), a clear message when /dev/shm is too small, `mbox shm list|clean`, and `mbox check`'s
//! progress lines.

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;

use runtime::ports::gen::GenConfig;
use tests::*;

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The example firewall + flow_stats app as written in the repository (`output =
/// "flows.jsonl"`, relative), copied into `dir`.
fn relative_example(dir: &Path) -> std::path::PathBuf {
    let p = dir.join("app.toml");
    std::fs::copy(repo_file("apps/firewall_stats.toml"), &p).unwrap();
    p
}

fn input(dir: &Path, flows: usize) -> std::path::PathBuf {
    let p = dir.join("t.pcap");
    gen_pcap(&p, &GenConfig { flows, seed: 3, ..GenConfig::default() });
    p
}

#[test]
fn output_dir_takes_relative_outputs_and_every_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let (app, inp) = (relative_example(dir.path()), input(dir.path(), 20));
    let out_dir = dir.path().join("out/sub");
    let o = mbox(
        dir.path(),
        &[
            "run",
            app.to_str().unwrap(),
            "-i",
            inp.to_str().unwrap(),
            "--output-dir",
            out_dir.to_str().unwrap(),
            "-o",
            "emitted.pcap",
            "--stats-json",
            "stats.json",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let flows = out_dir.join("flows.jsonl");
    assert!(flows.is_file(), "{}", text(&o));
    assert!(!dir.path().join("flows.jsonl").exists(), "relative outputs go under --output-dir");
    let lines = std::fs::read_to_string(&flows).unwrap().lines().count();
    assert!(lines > 0);
    let summary = stdout(&o);
    assert!(summary.contains("files written:"), "{summary}");
    let flow_line = summary.lines().find(|l| l.contains("flows.jsonl")).unwrap_or_default();
    assert!(flow_line.contains(&format!("{lines} lines")) && flow_line.contains("by stats"), "{summary}");
    assert!(summary.lines().any(|l| l.contains("emitted.pcap") && l.contains("packets")), "{summary}");
    assert!(summary.lines().any(|l| l.contains("stats.json") && l.contains("--stats-json")), "{summary}");

    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("stats.json")).unwrap()).unwrap();
    let files = json["files"].as_array().expect("files array");
    let f = files.iter().find(|f| f["written_by"] == "stats").expect("the flow log is listed");
    assert_eq!(f["path"].as_str(), Some(flows.to_str().unwrap()));
    assert_eq!(f["bytes"].as_u64(), Some(std::fs::metadata(&flows).unwrap().len()));
    assert_eq!(f["lines"].as_u64(), Some(lines as u64));
    let pcap = files.iter().find(|f| f["written_by"] == "tx").expect("the -o capture is listed");
    assert_eq!(pcap["packets"], json["packets_written"]);
    // Existing fields stay.
    for k in ["packets_in", "packets_out", "actors", "rings", "pool_balanced"] {
        assert!(json.get(k).is_some(), "{k}");
    }
}

#[test]
fn output_dir_leaves_absolute_paths_and_reports_a_directory_it_cannot_create() {
    let dir = tempfile::tempdir().unwrap();
    let (app, inp) = (example_app(dir.path()), input(dir.path(), 5)); // absolute output path
    let o = mbox(dir.path(), &["run", app.to_str().unwrap(), "-i", inp.to_str().unwrap(), "--output-dir", "elsewhere"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(dir.path().join("flows.jsonl").is_file(), "an absolute output path stays");
    assert!(!dir.path().join("elsewhere/flows.jsonl").exists());

    std::fs::write(dir.path().join("plain"), b"a file").unwrap();
    let o = mbox(dir.path(), &["run", app.to_str().unwrap(), "-i", inp.to_str().unwrap(), "--output-dir", "plain/sub"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(stderr(&o).contains("--output-dir plain/sub: cannot create the directory"), "{}", text(&o));
}

#[test]
fn each_cause_is_said_once() {
    let dir = tempfile::tempdir().unwrap();
    let o = mbox(dir.path(), &["gen", "-o", "/nonexistent/dir/x.pcap"]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert_eq!(e.matches("No such file or directory").count(), 1, "{e}");
    assert_eq!(e.matches("/nonexistent/dir/x.pcap").count(), 1, "{e}");

    std::fs::write(dir.path().join("not.pcap"), b"hello").unwrap();
    let o = mbox(dir.path(), &["streams", "not.pcap"]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert_eq!(e.matches("not a pcap or pcapng capture").count(), 1, "{e}");
    assert_eq!(e.lines().count(), 1, "{e}");
}

#[test]
fn the_summary_explains_itself_and_lines_up() {
    let dir = tempfile::tempdir().unwrap();
    let inp = input(dir.path(), 30);
    let out = dir.path().join("out");
    // The IDS on traffic without attacks: its counters show `alerts 0`.
    let o = Command::new(mbox_bin())
        .args(["run", "apps/ids.toml", "-i", inp.to_str().unwrap(), "--mode", "d", "--output-dir"])
        .arg(&out)
        .current_dir(repo_file(""))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(stderr(&o).is_empty(), "the summary goes to stdout: {}", stderr(&o));
    let s = stdout(&o);
    assert!(s.contains("alerts 0"), "{s}");
    for term in ["handled:", "published:", "passed:", "stalls:"] {
        assert!(s.contains(term), "legend lacks {term}: {s}");
    }
    assert!(s.contains("packets/s") && s.contains(" B") && (s.contains(" ms") || s.contains(" s,")), "{s}");
    // Each core line says how much of the run its thread waited for work (which core limits).
    let cores: Vec<&str> = s.lines().filter(|l| l.trim_start().starts_with("core ")).collect();
    assert!(!cores.is_empty(), "{s}");
    for c in &cores {
        let pct =
            c.split("waited for work ").nth(1).and_then(|r| r.split(" %").next()).and_then(|n| n.parse::<u32>().ok());
        assert!(pct.is_some_and(|p| p <= 100), "core line without its idle share: `{c}`");
        let cpu = c.split("; ").last().and_then(|r| r.strip_suffix(" s CPU)")).and_then(|n| n.parse::<f64>().ok());
        assert!(cpu.is_some_and(|t| t > 0.0), "core line without the CPU time its thread used: `{c}`");
    }
    // Mode d's ring table: every row's numbers end in the same columns as the header's.
    let lines: Vec<&str> = s.lines().collect();
    let head = lines.iter().position(|l| l.trim_start().starts_with("ring ")).expect("ring header");
    let end = |l: &str, col: &str| l.find(col).map(|i| i + col.len());
    let cap_end = end(lines[head], "capacity").unwrap();
    let rows: Vec<&str> = lines[head + 1..].iter().copied().take_while(|l| l.contains(" -> ")).collect();
    assert!(rows.iter().any(|r| r.contains("split[dpi+ids]")), "{s}");
    for r in &rows {
        let digits_end = r[..cap_end].trim_end().len();
        assert_eq!(digits_end, cap_end, "misaligned ring row `{r}` in:\n{s}");
    }
}

/// A capture whose last record claims 4 GiB: the run processes what came before, then fails.
fn corrupt(dir: &Path) -> std::path::PathBuf {
    use std::io::Write as _;
    let p = input(dir, 10);
    let mut f = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
    for word in [1u32, 0, 0xFFFF_FF00, 0xFFFF_FF00] {
        f.write_all(&word.to_le_bytes()).unwrap();
    }
    f.write_all(&[0; 32]).unwrap();
    p
}

#[test]
fn a_failed_run_keeps_the_summary_on_stdout_and_quiet_prints_only_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (app, inp) = (example_app(dir.path()), corrupt(dir.path()));
    let o = mbox(dir.path(), &["run", app.to_str().unwrap(), "-i", inp.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(stdout(&o).contains("packets:"), "the summary goes to stdout: {}", text(&o));
    assert!(!stdout(&o).contains("error"), "errors go to stderr only: {}", stdout(&o));
    let e = stderr(&o);
    assert!(e.contains("the run had 1 error(s)") && e.contains("corrupt capture"), "{e}");
    assert_eq!(e.matches("corrupt capture").count(), 1, "{e}");
    assert_eq!(e.matches("t.pcap").count(), 1, "the capture is named once: {e}");

    let o = mbox(dir.path(), &["run", app.to_str().unwrap(), "-i", inp.to_str().unwrap(), "-q"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).is_empty(), "-q prints no summary: {}", stdout(&o));
    assert!(stderr(&o).starts_with("mbox: error: the run had 1 error(s)"), "{}", stderr(&o));
}

#[test]
fn a_small_dev_shm_names_the_keys_that_shrink_the_region() {
    let name = "cli_summary::a_small_dev_shm_names_the_keys_that_shrink_the_region";
    if runtime::sys::effective_uid() != 0 {
        return skip(name, "needs root for a private mount namespace");
    }
    let dir = tempfile::tempdir().unwrap();
    let inp = input(dir.path(), 5);
    let app = dir.path().join("big.toml");
    let flows = dir.path().join("flows.jsonl");
    std::fs::write(
        &app,
        format!("[runtime]\npool_buffers = 8192\n[[nf]]\nname = \"s\"\nkind = \"flow_stats\"\noutput = {flows:?}\n"),
    )
    .unwrap();
    let script = format!(
        "mount -t tmpfs -o size=16m mbox-test /dev/shm || {{ echo 'mount failed'; exit 99; }}; \
         '{}' run '{}' -i '{}'; rc=$?; echo \"left:[$(ls -A /dev/shm)]\"; exit $rc",
        mbox_bin().display(),
        app.display(),
        inp.display()
    );
    let o = match Command::new("timeout")
        .args(["60", "unshare", "--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
    {
        Ok(o) => o,
        Err(e) => return skip(name, &format!("cannot run unshare: {e}")),
    };
    let t = text(&o);
    if o.status.code() == Some(99) || t.contains("unshare failed") {
        return skip(name, &format!("no private mount namespace here: {}", t.trim()));
    }
    assert_eq!(o.status.code(), Some(1), "exit 1 with a message, no signal 7:\n{t}");
    for want in [
        "not enough shared memory",
        "pool_buffers (now 8192)",
        "buffer_size (now 10240 B)",
        "ring_capacity (now 1024)",
        "--shm-size",
    ] {
        assert!(t.contains(want), "missing `{want}`:\n{t}");
    }
    assert!(!t.contains("setting up shared memory"), "{t}");
    assert!(t.contains("left:[]"), "a file was left in /dev/shm:\n{t}");
    assert!(!flows.exists(), "no output for a run that did not start");
}

/// A pid that no longer runs: a child that has exited and been reaped.
fn dead_pid() -> u32 {
    let mut child = Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

#[test]
fn shm_list_and_clean_tell_dead_from_live() {
    let dir = tempfile::tempdir().unwrap();
    let (dead, live) = (format!("clidead{}", std::process::id()), format!("clilive{}", std::process::id()));
    let r = runtime::shm::Region::create(&dead, 64 << 10).unwrap();
    let dead_path = r.path().to_path_buf();
    std::mem::forget(r); // as if its run were killed
    let pid = dead_pid();
    // The creator pid sits at byte offset 36 of the header.
    std::fs::OpenOptions::new().write(true).open(&dead_path).unwrap().write_all_at(&pid.to_ne_bytes(), 36).unwrap();
    let kept = runtime::shm::Region::create(&live, 64 << 10).unwrap();

    let o = mbox(dir.path(), &["shm", "list"]);
    assert!(o.status.success(), "{}", text(&o));
    let s = stdout(&o);
    let line = |p: &str| s.lines().find(|l| l.contains(&format!("mbox.{p}.region"))).unwrap_or_default().to_string();
    assert!(line(&dead).contains(&format!("dead (pid {pid}")), "{s}");
    assert!(line(&live).contains(&format!("live (pid {}", std::process::id())), "{s}");
    assert!(s.lines().next().unwrap().contains("owner uid"), "{s}");

    let o = mbox(dir.path(), &["shm", "clean", "--prefix", &dead]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(stdout(&o).contains(&format!("removed {}", dead_path.display())), "{}", text(&o));
    assert!(!dead_path.exists());

    let o = mbox(dir.path(), &["shm", "clean", "--prefix", &live]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(stdout(&o).contains("kept") && stdout(&o).contains("in use by pid"), "{}", text(&o));
    assert!(kept.path().exists(), "a live run's region is kept");
}

#[test]
fn check_says_which_mode_runs_unless_quiet() {
    let dir = tempfile::tempdir().unwrap();
    let (app, inp) = (example_app(dir.path()), input(dir.path(), 10));
    let o = mbox(dir.path(), &["check", app.to_str().unwrap(), "-i", inp.to_str().unwrap(), "--modes", "c"]);
    assert!(o.status.success(), "{}", text(&o));
    let e = stderr(&o);
    for want in
        ["[1/2] mode a (the reference): running", "[1/2] mode a (the reference): done in", "[2/2] mode c: done in"]
    {
        assert!(e.contains(want), "missing `{want}`:\n{e}");
    }
    assert!(stdout(&o).contains("consistent"), "{}", text(&o));
    let o = mbox(dir.path(), &["check", app.to_str().unwrap(), "-i", inp.to_str().unwrap(), "--modes", "c", "-q"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(o.stderr.is_empty() && o.stdout.is_empty(), "{}", text(&o));
}

#[test]
fn output_dir_reaches_an_nf_in_its_own_process() {
    let dir = tempfile::tempdir().unwrap();
    let (app, inp) = (relative_example(dir.path()), input(dir.path(), 10));
    let o = mbox(
        dir.path(),
        &["run", app.to_str().unwrap(), "-i", inp.to_str().unwrap(), "--nf-process", "stats", "--output-dir", "od"],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(dir.path().join("od/flows.jsonl").is_file(), "{}", text(&o));
    assert!(!dir.path().join("flows.jsonl").exists());
}
