//! NF supervision of NF processes: `mbox run --nf-process stats` on a capture large enough
//! to be mid-run, the `stats` process killed with SIGKILL once it has taken events, under
//! each `on_failure` policy. With `bypass`, `drop` and `restart` the run finishes with exit
//! 0, the pool balances, every input packet is accounted for and the failure is reported;
//! with `restart` a new pid serves the NF and its flow records of the flows that started
//! after the restart equal the in-thread run's. With `stop` the run fails, naming the NF.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use runtime::ports::gen::GenConfig;
use tests::*;

/// True when `pid` runs `mbox nf` (it has exec'd: killing a child between fork and exec
/// would hit its parent inside `spawn`).
fn serving(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c.split(|b| *b == 0).any(|a| a == b"--attach"))
}

/// CPU ticks `pid` has used (utime + stime), 0 when gone.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let Some(i) = stat.rfind(')') else { return 0 };
    let f: Vec<&str> = stat[i + 1..].split_whitespace().collect();
    f.get(11).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0)
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).stderr(Stdio::null()).status();
}

/// The example app (firewall + flow_stats) with `on_failure` on `stats` and its flow log in
/// `dir/out/`.
fn app(dir: &Path, policy: &str) -> PathBuf {
    let text = std::fs::read_to_string(repo_file("apps/firewall_stats.toml")).unwrap();
    let text = text.replace("name = \"stats\"\n", &format!("name = \"stats\"\non_failure = \"{policy}\"\n"));
    assert!(text.contains("on_failure"), "the example app names its NF `stats`");
    let p = dir.join(format!("app-{policy}.toml"));
    std::fs::write(&p, text).unwrap();
    p
}

/// The flow records of a flow log, by flow id.
fn flows(path: &Path) -> BTreeMap<u64, serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("a JSON line");
            (v["flow_id"].as_u64().expect("flow_id"), v)
        })
        .collect()
}

struct Killed {
    status: Option<ExitStatus>,
    stats: Option<serde_json::Value>,
    out: String,
    killed_pid: u32,
    dir: PathBuf,
}

/// Runs the app with `stats` in its own process, SIGKILLs that process once it has used CPU
/// (it is taking events), and waits for the run. Every process it started is ended by pid.
fn run_and_kill(dir: &Path, input: &Path, policy: &str, attempt: usize) -> Killed {
    let app = app(dir, policy);
    let run_dir = dir.join(format!("{policy}-{attempt}"));
    std::fs::create_dir_all(&run_dir).unwrap();
    let prefix = format!("sup{}-{policy}-{attempt}", std::process::id());
    let mut run = Command::new(mbox_bin())
        .arg("run")
        .arg(&app)
        .arg("-i")
        .arg(input)
        .args(["--prefix", &prefix, "--nf-process", "stats", "--no-progress", "--stats-json", "s.json"])
        .args(["--output-dir", "."])
        .current_dir(&run_dir)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(run_dir.join("out")).unwrap())
        .stderr(std::fs::File::create(run_dir.join("err")).unwrap())
        .spawn()
        .expect("start mbox run");
    let start = Instant::now();
    let mut seen: Vec<u32> = Vec::new();
    let killed_pid = loop {
        let nf = children_of(run.id()).into_iter().find(|p| serving(*p));
        if let Some(nf) = nf {
            if !seen.contains(&nf) {
                seen.push(nf);
            }
            // Some CPU time used: it has attached and is taking events.
            if cpu_ticks(nf) >= 2 {
                signal(nf, "KILL");
                break nf;
            }
        }
        if start.elapsed() > Duration::from_secs(60) || run.try_wait().unwrap().is_some() {
            let _ = run.kill();
            let _ = run.wait();
            panic!("no busy NF process appeared\n{}", read_logs(&run_dir));
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    // Later NF processes (restart) are the run's children too: remember them to end them.
    let status = loop {
        let new: Vec<u32> = children_of(run.id()).into_iter().filter(|p| serving(*p) && !seen.contains(p)).collect();
        seen.extend(new);
        if let Some(s) = run.try_wait().unwrap() {
            break Some(s);
        }
        if start.elapsed() > Duration::from_secs(180) {
            break wait_bounded(&mut run, Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    for p in seen {
        if serving(p) {
            signal(p, "KILL");
        }
    }
    let stats = std::fs::read_to_string(run_dir.join("s.json")).ok().and_then(|t| serde_json::from_str(&t).ok());
    Killed { status, stats, out: read_logs(&run_dir), killed_pid, dir: run_dir }
}

fn read_logs(dir: &Path) -> String {
    let read = |n: &str| std::fs::read_to_string(dir.join(n)).unwrap_or_default();
    format!("{}{}", read("out"), read("err"))
}

fn input(dir: &Path) -> PathBuf {
    let p = dir.join("t.pcap");
    gen_pcap(&p, &GenConfig { flows: 4_000, seed: 23, ..GenConfig::default() });
    p
}

/// The in-thread run's flow records.
fn thread_run(dir: &Path, input: &Path) -> BTreeMap<u64, serde_json::Value> {
    let d = dir.join("thread");
    std::fs::create_dir_all(&d).unwrap();
    let app = app(dir, "stop");
    let o = mbox(&d, &["run", app.to_str().unwrap(), "-i", input.to_str().unwrap(), "-q", "--output-dir", "."]);
    assert!(o.status.success(), "{}", text(&o));
    flows(&d.join("flows.jsonl"))
}

#[test]
fn a_killed_nf_process_is_contained_by_bypass_drop_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let input = input(dir.path());
    let reference = thread_run(dir.path(), &input);
    for policy in ["bypass", "drop", "restart"] {
        // The kill must land mid-run, after the NF took events: retry (bounded) otherwise.
        let mut k = None;
        for attempt in 0..4 {
            let r = run_and_kill(dir.path(), &input, policy, attempt);
            let f = r.stats.as_ref().map(|s| s["failures"].clone()).unwrap_or_default();
            if f[0]["seq"].is_u64() {
                k = Some(r);
                break;
            }
            eprintln!("{policy}: attempt {attempt}: the NF had taken nothing when killed; again\n{}", r.out);
        }
        let k = k.unwrap_or_else(|| panic!("{policy}: never killed the NF mid-run"));
        let out = &k.out;
        assert!(k.status.is_some_and(|s| s.success()), "{policy}: {:?}\n{out}", k.status);
        let s = k.stats.as_ref().expect("stats json");
        let n = |key: &str| s[key].as_u64().unwrap_or_else(|| panic!("{key} in {s}"));
        assert!(s["pool_balanced"].as_bool().unwrap(), "{policy}: {}", s["pool"]);
        assert_eq!(n("packets_in"), n("packets_out") + n("packets_dropped"), "{policy}: {out}");
        let failures = s["failures"].as_array().unwrap();
        assert_eq!(failures.len(), 1, "{policy}: {failures:?}");
        let f = &failures[0];
        assert_eq!(f["nf"], "stats", "{policy}");
        assert_eq!(f["what"], "process", "{policy}");
        assert_eq!(f["signal"], 9, "{policy}");
        assert_eq!(f["policy"], policy, "{policy}");
        assert_eq!(f["pid"].as_u64(), Some(u64::from(k.killed_pid)), "{policy}");
        assert!(f["message"].as_str().unwrap().contains("SIGKILL"), "{policy}: {f}");
        let seq = f["seq"].as_u64().unwrap();
        assert!(seq < n("packets_in"), "{policy}: killed mid-run: {f}");
        let lost = f["packets_lost"].as_u64().unwrap();
        let nf_failed = s["dropped"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["actor"] == "stats" && d["reason"] == "nf failed")
            .map(|d| d["packets"].as_u64().unwrap())
            .sum::<u64>();
        let stats = s["actors"].as_array().unwrap().iter().find(|a| a["name"] == "stats").unwrap();
        assert_eq!(stats["events_lost_in_failure"], f["events_lost"], "{policy}");
        assert!(out.contains("NF failure: `stats`"), "{policy}: {out}");
        eprintln!("{policy}: {f}\n  reclaimed {} buffer reference(s)", s["buffers_reclaimed"]);
        match policy {
            "drop" => assert!(nf_failed > lost, "{policy}: later packets are dropped too: {nf_failed} vs {lost}"),
            "bypass" => assert_eq!(nf_failed, lost, "{policy}"),
            _ => {
                assert_eq!(nf_failed, lost, "{policy}");
                let new_pid = f["new_pid"].as_u64().expect("a new pid");
                assert_ne!(new_pid, u64::from(k.killed_pid));
                let pids: Vec<u64> =
                    s["nf_processes"].as_array().unwrap().iter().map(|p| p[1].as_u64().unwrap()).collect();
                assert!(pids.contains(&new_pid), "{pids:?}");
                // Flows that started after the restart are seen whole by the new process.
                let got = flows(&k.dir.join("flows.jsonl"));
                let after: Vec<&u64> = reference.keys().filter(|id| **id > seq).collect();
                assert!(!after.is_empty(), "no flow started after packet {seq}");
                let checked = after.len();
                for id in after {
                    assert_eq!(got.get(id), reference.get(id), "flow {id} (started after the restart at {seq})");
                }
                eprintln!(
                    "restart: the {checked} flow record(s) of flows after packet {seq} equal the in-thread run's"
                );
            }
        }
    }
}

#[test]
fn a_killed_nf_process_with_stop_fails_the_run_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let input = input(dir.path());
    let k = run_and_kill(dir.path(), &input, "stop", 0);
    assert_eq!(k.status.and_then(|s| s.code()), Some(1), "{}", k.out);
    assert!(
        k.out.contains(&format!("NF process `stats` (pid {}) failed: killed by signal 9 (SIGKILL)", k.killed_pid)),
        "{}",
        k.out
    );
    assert!(!Path::new(&format!("/dev/shm/mbox.sup{}-stop-0.region", std::process::id())).exists());
}
