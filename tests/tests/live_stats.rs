//! Live statistics of `mbox run`: `--stats-interval` prints lines while the run goes on (none
//! with `-q`), `--metrics` serves the counters to a real `curl` while the run goes on, and a
//! `--metrics` address in use is a clear error.
//!
//! The runs read a named pipe that a thread feeds with generated traffic for a set time, so
//! they last long enough for several intervals and scrapes whatever the machine's speed.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use runtime::ports::gen::{generate, GenConfig};
use runtime::ports::{LinkType, PcapWriter};
use tests::*;

/// A named pipe fed with generated traffic until `stop` is set, 30 s pass, or the reader goes
/// away; then closed (the run sees the end of its input).
fn feed(dir: &Path, stop: Arc<AtomicBool>) -> (PathBuf, JoinHandle<()>) {
    let fifo = dir.join("in.pcap");
    // mkfifo(1) rather than libc: this crate forbids unsafe code.
    assert!(Command::new("mkfifo").args(["-m", "600"]).arg(&fifo).status().unwrap().success(), "mkfifo");
    let path = fifo.clone();
    let feeder = std::thread::spawn(move || {
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        let mut w = PcapWriter::new(std::io::BufWriter::new(f), &path, LinkType::Ethernet).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let cfg = GenConfig { flows: 2000, seed: 3, ..GenConfig::default() };
        let mut n = 0u64;
        let _ = generate(&cfg, |ts, frame| {
            if stop.load(Ordering::SeqCst) || Instant::now() > deadline {
                return Err(std::io::Error::other("enough"));
            }
            n += 1;
            if n.is_multiple_of(16) {
                std::thread::sleep(Duration::from_micros(300));
            }
            w.write(ts, frame, frame.len() as u32).map_err(|e| std::io::Error::other(e.to_string()))
        });
        // A partial last record would only warn; flushing keeps the capture whole.
        let _ = w.into_inner().map(|mut b| b.flush());
    });
    (fifo, feeder)
}

fn spawn_run(dir: &Path, input: &Path, extra: &[&str]) -> Child {
    let app = example_app(dir);
    Command::new(mbox_bin())
        .args(["run", app.to_str().unwrap(), "--input", input.to_str().unwrap(), "--no-progress"])
        .args(extra)
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Feeds a run with `extra` arguments for `secs`, and returns its stdout + stderr.
fn fed_run(extra: &[&str], secs: f64) -> String {
    let dir = tempfile::tempdir().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (fifo, feeder) = feed(dir.path(), stop.clone());
    let child = spawn_run(dir.path(), &fifo, extra);
    std::thread::sleep(Duration::from_secs_f64(secs));
    stop.store(true, Ordering::SeqCst);
    feeder.join().unwrap();
    let out = child.wait_with_output().unwrap();
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    t
}

#[test]
fn stats_interval_prints_lines_while_the_run_goes_on() {
    let t = fed_run(&["--stats-interval", "0.1"], 1.5);
    let lines: Vec<&str> = t.lines().filter(|l| l.starts_with("mbox stats ")).collect();
    assert!(lines.len() >= 2, "expected at least 2 stats lines in 1.5 s at 0.1 s:\n{t}");
    for l in &lines {
        for field in ["s: in ", " pkt/s, ", " total; out ", "; dropped ", "; pool ", " in use", "; fullest ring "] {
            assert!(l.contains(field), "`{field}` missing in `{l}`");
        }
        assert!(!l.contains("kernel drops"), "a capture has no kernel drops: {l}");
    }
    let totals: Vec<u64> = lines
        .iter()
        .map(|l| l.split(" pkt/s, ").nth(1).and_then(|r| r.split(' ').next()).unwrap().parse().unwrap())
        .collect();
    assert!(totals.windows(2).all(|w| w[0] <= w[1]), "packets-in totals never go back: {totals:?}");
    assert!(*totals.last().unwrap() > 0, "{t}");
    println!("checked {} stats lines, e.g. {}", lines.len(), lines[lines.len() - 1]);
}

#[test]
fn quiet_prints_no_stats_lines() {
    let t = fed_run(&["--stats-interval", "0.1", "-q"], 0.8);
    assert!(!t.contains("mbox stats"), "{t}");
}

/// The value of the sample `name` (no labels) in a metrics text.
fn sample(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

fn curl(url: &str) -> String {
    let out = Command::new("curl").args(["-sS", "--max-time", "5", url]).output().unwrap();
    assert!(out.status.success(), "curl {url}: {}", text(&out));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn metrics_are_served_to_curl_while_the_run_goes_on() {
    if !Command::new("curl").arg("--version").output().is_ok_and(|o| o.status.success()) {
        skip("--metrics scraped with curl", "curl is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (fifo, feeder) = feed(dir.path(), stop.clone());
    let json = dir.path().join("stats.json");
    let mut child = spawn_run(dir.path(), &fifo, &["--metrics", "127.0.0.1:0", "--stats-json", json.to_str().unwrap()]);
    // The address (port 0: the system picks one) is on stderr's first line.
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        for l in stderr.lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let first = rx.recv_timeout(Duration::from_secs(30)).expect("a line on stderr");
    let url = first.strip_prefix("mbox: serving live metrics on ").unwrap_or_else(|| panic!("{first}")).to_string();
    std::thread::sleep(Duration::from_millis(500));
    let a = curl(&url);
    std::thread::sleep(Duration::from_millis(400));
    let b = curl(&url);
    for name in [
        "mbox_packets_in_total",
        "mbox_bytes_in_total",
        "mbox_packets_out_total",
        "mbox_bytes_out_total",
        "mbox_pool_buffers_in_use",
        "mbox_pool_buffers",
        "mbox_ring_items{ring=\"rx -> l23\"}",
        "mbox_ring_capacity{ring=\"rx -> l23\"}",
        "mbox_elapsed_seconds",
        "mbox_run_finished 0",
        "# TYPE mbox_packets_dropped counter",
    ] {
        assert!(b.contains(name), "{name} missing in:\n{b}");
    }
    assert!(!b.contains("kernel_drops"), "a capture has no kernel drops:\n{b}");
    let (in_a, in_b) = (sample(&a, "mbox_packets_in_total").unwrap(), sample(&b, "mbox_packets_in_total").unwrap());
    assert!(in_a > 0 && in_b >= in_a, "packets in: {in_a} then {in_b}");
    assert!(curl(&url.replace("/metrics", "/other")).contains("only /metrics"));

    stop.store(true, Ordering::SeqCst);
    feeder.join().unwrap();
    let status = child.wait().unwrap();
    reader.join().unwrap();
    assert!(status.success());
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let final_in = report["packets_in"].as_u64().unwrap();
    assert!(in_b <= final_in, "scraped {in_b} packets in, the report says {final_in}");
    println!("scraped {url}: packets in {in_a} then {in_b}, final {final_in}");
}

#[test]
fn metrics_address_in_use_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let input = dir.path().join("in.pcap");
    gen_pcap(&input, &GenConfig { flows: 5, ..GenConfig::default() });
    let app = example_app(dir.path());
    let out = mbox(dir.path(), &["run", app.to_str().unwrap(), "-i", input.to_str().unwrap(), "--metrics", &addr]);
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(t.contains(&format!("--metrics {addr}: cannot listen: the address is in use")), "{t}");
    assert!(!t.contains("panicked"), "{t}");
}
