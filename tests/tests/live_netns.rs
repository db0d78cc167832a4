//! Live traffic through `mbox run --iface` in network namespaces (root only; skipped visibly
//! without root, `ip`, veth support, `ethtool`, `curl` or `python3`).
//!
//! * inline: client ns `c0` ↔ `m0` | mbox in the middle ns | `m1` ↔ `s0` server ns, one subnet
//!   (a bump in the wire). Real `curl` downloads a few MB from `python3 -m http.server`
//!   through `mbox run apps/firewall_stats.toml --iface m0,m1`; the bytes' SHA-256 equals the
//!   file's, and the connection's flow record is in flows.jsonl; the kernel's ring counters of
//!   both ports are in stats.json (`ports`) and on the summary's `port` lines.
//! * passive: `--iface` on one end of a veth pair; an HTTP download between the ends is seen
//!   (packets_in > 0) and nothing is sent (the other end receives only what the kernel sent).
//!
//! Every process runs under `timeout`, is kept by PID and killed by PID; the namespaces are
//! deleted by a guard's Drop, also when a check panics. Traffic stays in these namespaces.

use std::path::Path;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tests::{mbox_bin, repo_file, skip};

mod netns;

use netns::{stats_json, sysfs_counter, tcp_out_segs, unavailable, Lab};

/// `mbox run apps/firewall_stats.toml --iface IFACES --duration SECS`, writing stats.json
/// and the NF outputs into `dir`.
fn live_run_args(dir: &Path, ifaces: &str, secs: &str) -> Vec<String> {
    let app = repo_file("apps/firewall_stats.toml");
    let bin = mbox_bin();
    let args = ["run", app.to_str().unwrap(), "--iface", ifaces, "--duration", secs, "--stats-json", "stats.json"];
    let mut v = vec![bin.to_str().unwrap().to_string()];
    v.extend(args.iter().map(|a| a.to_string()));
    v.extend(["--output-dir".to_string(), dir.to_str().unwrap().to_string()]);
    v
}

#[test]
fn inline_download_through_firewall_stats() {
    if let Some(why) = unavailable("i") {
        skip("live inline download through mbox (network namespaces)", &why);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let file: Vec<u8> = (0..3_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(d.join("file.bin"), &file).unwrap();
    let mut lab = Lab::new("i");
    let (c, m, s) = (lab.netns("c").unwrap(), lab.netns("m").unwrap(), lab.netns("s").unwrap());
    lab.veth(&c, "c0", &m, "m0").unwrap();
    lab.veth(&s, "s0", &m, "m1").unwrap();
    lab.exec(&c, &["ip", "addr", "add", "10.99.0.1/24", "dev", "c0"]).unwrap();
    lab.exec(&s, &["ip", "addr", "add", "10.99.0.2/24", "dev", "s0"]).unwrap();

    let srv = ["python3", "-m", "http.server", "8080", "--bind", "10.99.0.2"];
    lab.spawn(&s, 90, d, &srv, "server.log");
    let mbox_args = live_run_args(d, "m0,m1", "60");
    let mbox_args: Vec<&str> = mbox_args.iter().map(String::as_str).collect();
    let mb = lab.spawn(&m, 80, d, &mbox_args, "mbox.log");

    let got = d.join("got.bin");
    let fetched = lab.fetch(&c, "http://10.99.0.2:8080/file.bin", &got);
    let status = lab.interrupt_and_wait(mb, Duration::from_secs(15));
    let log = std::fs::read_to_string(d.join("mbox.log")).unwrap_or_default();
    fetched.unwrap_or_else(|e| panic!("curl through mbox failed: {e}\nmbox:\n{log}"));
    let status = status.unwrap_or_else(|| panic!("mbox did not end within 15 s of SIGINT:\n{log}"));
    assert_eq!(status.code(), Some(130), "Ctrl-C ends a live run with 130 after draining:\n{log}");

    let body = std::fs::read(&got).unwrap();
    let (want, have) = (Sha256::digest(&file), Sha256::digest(&body));
    assert_eq!(have, want, "{} bytes arrived, {} sent: SHA-256 differs\n{log}", body.len(), file.len());
    println!("inline: {} bytes through mbox --iface m0,m1, SHA-256 {:x} equal", body.len(), have);

    let st = stats_json(d);
    let (pin, pout) = (st["packets_in"].as_u64().unwrap(), st["packets_out"].as_u64().unwrap());
    assert!(pin > 2000 && pout == pin - st["packets_dropped"].as_u64().unwrap(), "{st}");
    assert!(st["input"].as_str().unwrap().contains("m0,m1"), "{}", st["input"]);
    // The kernel's ring counters of both ports: in the JSON (`ports`) and on the summary's
    // `port` lines (0 drops is fine: the point is that they are reported).
    let ports = st["ports"].as_array().unwrap_or_else(|| panic!("no `ports` in stats.json: {st}"));
    let names: Vec<&str> = ports.iter().map(|p| p["iface"].as_str().unwrap()).collect();
    assert_eq!(names, ["m0", "m1"], "{}", st["ports"]);
    for p in ports {
        for f in ["tp_packets", "tp_drops", "tp_freeze_q_cnt", "csum_not_ready"] {
            assert!(p[f].is_u64(), "port field `{f}` missing: {p}");
        }
        let line = format!(
            "port {}: {} frames from the kernel; kernel ring drops: {} (tp_drops)",
            p["iface"].as_str().unwrap(),
            p["tp_packets"],
            p["tp_drops"]
        );
        assert!(log.contains(&line), "no `{line}` in the summary:\n{log}");
    }
    let kernel_packets: u64 = ports.iter().map(|p| p["tp_packets"].as_u64().unwrap()).sum();
    let kernel_drops: u64 = ports.iter().map(|p| p["tp_drops"].as_u64().unwrap()).sum();
    assert!(kernel_packets >= pin, "the kernel passed {kernel_packets} frames to the ports, rx read {pin}");
    let flows = std::fs::read_to_string(d.join("flows.jsonl")).unwrap();
    let rec = flows
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| {
            r["proto"] == "TCP" && r["dest_port"] == 8080 && r["src_ip"] == "10.99.0.1" && r["dest_ip"] == "10.99.0.2"
        })
        // The readiness probes before the server listened are flows too (a SYN and a RST):
        // the download is the largest.
        .max_by_key(|r| r["flow"]["bytes_toclient"].as_u64().unwrap_or(0))
        .unwrap_or_else(|| panic!("no flow record of the download in flows.jsonl:\n{flows}"));
    let to_client = rec["flow"]["bytes_toclient"].as_u64().unwrap();
    assert!(to_client >= file.len() as u64, "flow record counts {to_client} bytes to the client: {rec}");
    println!("inline: {pin} packets in, {pout} out; kernel: {kernel_packets} frames, {kernel_drops} ring drops; flow record: {rec}");
}

#[test]
fn passive_sees_traffic_and_sends_nothing() {
    if let Some(why) = unavailable("p") {
        skip("live passive tap (network namespaces)", &why);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut lab = Lab::new("p");
    let (a, b) = (lab.netns("a").unwrap(), lab.netns("b").unwrap());
    lab.veth(&a, "a0", &b, "b0").unwrap();
    lab.exec(&a, &["ip", "addr", "add", "10.99.1.1/24", "dev", "a0"]).unwrap();
    lab.exec(&b, &["ip", "addr", "add", "10.99.1.2/24", "dev", "b0"]).unwrap();
    let args = live_run_args(d, "b0", "4");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    std::fs::write(d.join("small.bin"), vec![7u8; 100_000]).unwrap();
    lab.spawn(&b, 30, d, &["python3", "-m", "http.server", "8081", "--bind", "10.99.1.2"], "server.log");
    let mb = lab.spawn(&b, 30, d, &args, "mbox.log");
    std::thread::sleep(Duration::from_millis(700));
    let (rx0, out0) = (sysfs_counter(&lab, &a, "a0", "rx_packets"), tcp_out_segs(&lab, &b));
    let curl = [
        "curl",
        "-sS",
        "--retry",
        "10",
        "--retry-connrefused",
        "--retry-delay",
        "1",
        "--max-time",
        "20",
        "-o",
        "/dev/null",
        "http://10.99.1.2:8081/small.bin",
    ];
    let fetched = lab.exec(&a, &curl);
    let (rx1, out1) = (sysfs_counter(&lab, &a, "a0", "rx_packets"), tcp_out_segs(&lab, &b));
    let status = lab.wait(mb, Duration::from_secs(15));
    let log = std::fs::read_to_string(d.join("mbox.log")).unwrap_or_default();
    fetched.unwrap_or_else(|e| panic!("curl across the tapped pair failed: {e}\nmbox:\n{log}"));
    let status = status.unwrap_or_else(|| panic!("--duration 4 did not end the run:\n{log}"));
    assert_eq!(status.code(), Some(0), "a run ended by --duration succeeds:\n{log}");
    // Every frame a0 receives was sent by B's kernel (TCP segments, plus an ARP reply or two);
    // a passive port that sent what it read out of b0 would add A's own frames.
    let (got, sent_by_b) = (rx1 - rx0, out1 - out0);
    assert!(
        got <= sent_by_b + 3,
        "a0 received {got} frames, B's kernel sent {sent_by_b}: mbox must send nothing\n{log}"
    );
    let st = stats_json(d);
    let pin = st["packets_in"].as_u64().unwrap();
    assert!(pin >= sent_by_b, "mbox saw {pin} packets; B alone sent {sent_by_b}: {st}");
    assert!(!st["interrupted"].as_bool().unwrap(), "--duration is the normal end of a live run: {st}");
    println!(
        "passive: mbox saw {pin} packets; B sent {sent_by_b} TCP segments, a0 received {got} frames (nothing added)"
    );
}

#[test]
fn live_flags_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let app = repo_file("apps/firewall_stats.toml");
    let app = app.to_str().unwrap();
    let both = tests::mbox(d, &["run", app, "--input", "x.pcap", "--iface", "lo"]);
    assert!(!both.status.success());
    assert!(tests::text(&both).contains("cannot be used with"), "{}", tests::text(&both));
    let neither = tests::mbox(d, &["run", app]);
    assert!(!neither.status.success() && tests::text(&neither).contains("--input"), "{}", tests::text(&neither));
    let three = tests::mbox(d, &["run", app, "--iface", "a0,b0,c0"]);
    assert!(tests::text(&three).contains("one interface (passive) or two (inline), not 3"), "{}", tests::text(&three));
    let same = tests::mbox(d, &["run", app, "--iface", "lo,lo"]);
    assert!(tests::text(&same).contains("two different interfaces"), "{}", tests::text(&same));
    let missing = tests::mbox(d, &["run", app, "--iface", "no-such-if0", "--duration", "1"]);
    let t = tests::text(&missing);
    assert!(!missing.status.success() && t.contains("interface `no-such-if0`"), "{t}");
    let ring = tests::mbox(d, &["run", app, "--input", "x.pcap", "--ring-blocks", "8"]);
    assert!(!ring.status.success() && tests::text(&ring).contains("--iface"), "{}", tests::text(&ring));
}
