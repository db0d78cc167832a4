//! The DPDK port on virtual devices, with no hugepages and no NIC (`--features dpdk`; needs
//! libdpdk-dev, dpdk-dev, pkg-config, libclang-dev and clang, which `.ci/run` installs):
//!
//! * `net_pcap` in → the IDS app (TCP monitor, DPI, signature matching, flow records) →
//!   `net_pcap` out: the alerts, DPI and flow records are byte-identical to the same app's
//!   pcap-mode run, and the frames the second device wrote equal the pcap run's `-o` capture;
//!   every port counter agrees (frames in, out, nothing missed);
//!   in both receive modes (zero-copy: received straight into the pool's lent buffers; copy),
//!   and the zero-copy books balance (every frame adopted, every lent mbuf back in DPDK's
//!   mempool, `lent == adopted + returned`);
//! * `net_null` ↔ `net_null` inline: 500,000 frames through `rx → l23 → tx`, none lost (the
//!   devices' counters, the run's books and the pool agree); the rate is printed;
//! * zero-copy with `net_ring` (which hands over TX's own mbufs): those frames are copied
//!   into spare pool buffers, `net_null`'s adopted, and the pool still balances;
//! * two RX queues per `net_null` port (RSS advertised) feed mode d's two shards: each shard
//!   handles exactly its queue's frames (per-queue counters); `--dpdk-shard hash` hashes
//!   instead;
//! * the fallbacks are printed: fewer queues than asked (`net_pcap`), no RSS (`net_ring`),
//!   queues that cannot pick the shards;
//! * `net_af_packet` on the veths of the live tests' namespace lab: a real `curl` download
//!   through the DPDK ports arrives intact (SHA-256); skipped visibly without root, namespaces
//!   or the tools.
//!
//! `rte_eal_init` runs once per process, so every run is an `mbox` subprocess (built with the
//! feature). The runs are serialised: each busy-polls a core.
#![cfg(feature = "dpdk")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use runtime::ports::gen::GenConfig;
use sha2::{Digest, Sha256};
use tests::{gen_pcap, read_all, repo_file, skip, text};

mod netns;

use netns::{unavailable, Lab};

/// The runs of this file, one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// EAL arguments that need no hugepages, no NIC and no shared files.
const EAL: &str = "-l 0 --no-huge -m 256 --no-pci --no-shconf --log-level=warning";

/// `mbox` built with `--features dpdk`, as `mbox-dpdk` beside the default binary.
fn mbox_dpdk() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| tests::build_mbox(&["dpdk"], "mbox-dpdk")).clone()
}

fn run(dir: &Path, args: &[&str]) -> Output {
    Command::new(mbox_dpdk()).args(args).current_dir(dir).output().expect("run mbox")
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("read json")).expect("json parses")
}

/// The IDS app with flow records, its outputs relative to the current directory.
fn ids_app(dir: &Path) -> PathBuf {
    let rules = repo_file("apps/ids.rules");
    let app = dir.join("ids_flows.toml");
    std::fs::write(
        &app,
        format!(
            "[stack.tcp]\n\n[[nf]]\nname = \"dpi\"\nkind = \"dpi\"\noutput = \"dpi.jsonl\"\n\n\
             [[nf]]\nname = \"ids\"\nkind = \"signature_match\"\nrules = \"{}\"\noutput = \"alerts.jsonl\"\n\n\
             [[nf]]\nname = \"stats\"\nkind = \"flow_stats\"\noutput = \"flows.jsonl\"\n",
            rules.display()
        ),
    )
    .unwrap();
    app
}

/// Checks a zero-copy run's books: every one of the `n` frames was received straight into a
/// lent pool buffer, the pool balances with `lent == adopted + returned`, and every lent mbuf
/// is back in DPDK's mempool. Returns the number of mbufs lent.
fn zero_copy_books(st: &serde_json::Value, n: u64) -> u64 {
    let z = &st["dpdk"];
    assert_eq!(z["rx_mode"], "zero-copy", "{st}");
    assert_eq!(z["zero_copy_frames"].as_u64(), Some(n), "every frame received into the pool: {st}");
    assert_eq!((z["copied_frames"].as_u64(), z["lost_frames"].as_u64()), (Some(0), Some(0)), "{st}");
    let lent = z["lent_buffers"].as_u64().unwrap();
    assert!(lent > 0, "{st}");
    assert!(
        z["extmem_registered_bytes"].as_u64().unwrap() >= lent * 10240,
        "the lent buffers' span registered with rte_extmem_register: {st}"
    );
    assert_eq!(z["mempool_free_mbufs"].as_u64(), Some(lent), "every lent mbuf back in DPDK's mempool: {st}");
    let p = &st["pool"];
    let g = |f: &str| p[f].as_u64().unwrap_or_else(|| panic!("pool.{f}: {st}"));
    assert_eq!(g("adopted"), n, "{st}");
    assert_eq!(g("allocated"), g("freed"), "{st}");
    assert_eq!(g("lent"), g("adopted") + g("returned"), "{st}");
    assert!(g("lent") > n.min(lent), "buffers are lent again after use: {st}");
    assert_eq!(st["pool_balanced"], true, "{st}");
    lent
}

#[test]
fn net_pcap_through_the_ids_equals_the_pcap_run() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let input = d.join("in.pcap");
    let cfg = GenConfig { flows: 300, seed: 16, attacks: 6, vlan_fraction: 0.1, ..GenConfig::default() };
    gen_pcap(&input, &cfg);
    let frames = read_all(&input);
    let n = frames.len();
    let app = ids_app(d);
    let app = app.to_str().unwrap();
    let (pcap_dir, dpdk_dir) = (d.join("pcap"), d.join("dpdk"));
    std::fs::create_dir_all(&pcap_dir).unwrap();
    std::fs::create_dir_all(&dpdk_dir).unwrap();

    let o = run(&pcap_dir, &["run", app, "-i", input.to_str().unwrap(), "-o", "out.pcap", "-q"]);
    assert!(o.status.success(), "pcap run failed:\n{}", text(&o));

    // Port 0 reads the capture (and would write what leaves through it to out0.pcap); port 1
    // only writes: frames from port 0 leave through port 1.
    let eal = format!(
        "{EAL} --vdev=net_pcap0,rx_pcap={},tx_pcap=out0.pcap --vdev=net_pcap1,tx_pcap=out1.pcap",
        input.display()
    );
    let count = n.to_string();
    // Copy mode first, in its own directory; then the default (zero-copy) in `dpdk`.
    let copy_dir = d.join("copy");
    std::fs::create_dir_all(&copy_dir).unwrap();
    let o = run(
        &copy_dir,
        &[
            "run",
            app,
            "--dpdk",
            &eal,
            "--ports",
            "0,1",
            "--count",
            &count,
            "--dpdk-rx",
            "copy",
            "--stats-json",
            "stats.json",
        ],
    );
    assert!(o.status.success(), "DPDK copy-mode run failed:\n{}", text(&o));
    let st = json(&copy_dir.join("stats.json"));
    assert_eq!(st["dpdk"]["rx_mode"], "copy", "{st}");
    assert_eq!(st["pool"]["lent"], serde_json::Value::Null, "copy mode lends nothing: {st}");
    for f in ["alerts.jsonl", "dpi.jsonl", "flows.jsonl"] {
        let (a, b) = (std::fs::read(pcap_dir.join(f)).unwrap(), std::fs::read(copy_dir.join(f)).unwrap());
        assert!(a == b, "{f} differs between the pcap run and the DPDK copy-mode run");
    }
    let o = run(
        &dpdk_dir,
        &["run", app, "--dpdk", &eal, "--ports", "0,1", "--count", &count, "--stats-json", "stats.json"],
    );
    let log = text(&o);
    assert!(o.status.success(), "DPDK run failed:\n{log}");

    for f in ["alerts.jsonl", "dpi.jsonl", "flows.jsonl"] {
        let (a, b) = (std::fs::read(pcap_dir.join(f)).unwrap(), std::fs::read(dpdk_dir.join(f)).unwrap());
        assert!(!a.is_empty(), "{f} of the pcap run is empty");
        assert!(a == b, "{f} differs between the pcap run and the DPDK run:\n{log}");
    }
    let alerts = std::fs::read_to_string(pcap_dir.join("alerts.jsonl")).unwrap().lines().count();
    let flows = std::fs::read_to_string(pcap_dir.join("flows.jsonl")).unwrap().lines().count();
    assert!(alerts >= 6, "{alerts} alerts for 6 planted attacks");

    // net_pcap stamps what it writes with its own clock: compare the frames' bytes, in order.
    let want: Vec<Vec<u8>> = read_all(&pcap_dir.join("out.pcap")).into_iter().map(|(_, f)| f).collect();
    let got: Vec<Vec<u8>> = read_all(&dpdk_dir.join("out1.pcap")).into_iter().map(|(_, f)| f).collect();
    assert_eq!(want.len(), n, "the pcap run forwards every frame");
    assert_eq!(got.len(), want.len(), "frames written by net_pcap1 vs the pcap run's -o");
    assert!(got == want, "the frames net_pcap1 wrote differ from the pcap run's output capture");
    assert!(read_all(&dpdk_dir.join("out0.pcap")).is_empty(), "nothing leaves through the ingress port");

    let st = json(&dpdk_dir.join("stats.json"));
    assert_eq!(st["input"], "dpdk ports 0,1 (inline)", "{st}");
    assert_eq!((st["packets_in"].as_u64(), st["packets_out"].as_u64()), (Some(n as u64), Some(n as u64)), "{st}");
    let ports = st["dpdk_ports"].as_array().unwrap_or_else(|| panic!("no dpdk_ports in stats.json: {st}"));
    assert_eq!(ports.len(), 2, "{st}");
    let c = |i: usize, f: &str| ports[i][f].as_u64().unwrap_or_else(|| panic!("no {f}: {}", ports[i]));
    assert_eq!(ports[0]["port"], "0 (net_pcap0)");
    assert_eq!((c(0, "ipackets"), c(0, "opackets"), c(1, "ipackets"), c(1, "opackets")), (n as u64, 0, 0, n as u64));
    for i in 0..2 {
        for f in ["imissed", "ierrors", "oerrors", "rx_nombuf"] {
            assert_eq!(c(i, f), 0, "port {i} {f}");
        }
    }
    assert!(log.contains(&format!("dpdk port 0 (net_pcap0): {n} frames in, 0 out; imissed 0")), "{log}");
    let lent = zero_copy_books(&st, n as u64);
    println!(
        "net_pcap -> IDS -> net_pcap: {n} frames; {alerts} alerts, {flows} flow records, DPI records and \
         the {n} emitted frames equal to the pcap-mode run's, received zero-copy (all {n} in lent pool \
         buffers; {lent} mbufs lent, all back) and copied; port counters in {n}/out {n}, 0 missed"
    );
}

#[test]
fn net_null_inline_loses_nothing() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("l23.toml"), "# rx -> l23 -> tx\n").unwrap();
    let n: u64 = 500_000;
    let eal = format!("{EAL} --vdev=net_null0 --vdev=net_null1");
    let o = run(
        d,
        &["run", "l23.toml", "--dpdk", &eal, "--ports", "0,1", "--count", &n.to_string(), "--stats-json", "s.json"],
    );
    let log = text(&o);
    assert!(o.status.success(), "{log}");
    let st = json(&d.join("s.json"));
    assert_eq!(st["packets_in"].as_u64(), Some(n), "{st}");
    assert_eq!(st["packets_out"].as_u64(), Some(n), "{st}");
    assert_eq!(st["packets_dropped"].as_u64(), Some(0), "{st}");
    assert_eq!(st["pool_balanced"], true, "{st}");
    let ports = st["dpdk_ports"].as_array().unwrap();
    let sum = |f: &str| ports.iter().map(|p| p[f].as_u64().unwrap()).sum::<u64>();
    assert_eq!(sum("ipackets"), n, "devices received exactly --count frames: {st}");
    assert_eq!(sum("opackets"), n, "devices sent every frame: {st}");
    for f in ["imissed", "ierrors", "oerrors", "rx_nombuf"] {
        assert_eq!(sum(f), 0, "{f}: {st}");
    }
    // Each frame leaves by the other port.
    assert_eq!(ports[0]["ipackets"], ports[1]["opackets"], "{st}");
    assert_eq!(ports[1]["ipackets"], ports[0]["opackets"], "{st}");
    zero_copy_books(&st, n);
    println!(
        "net_null0 <-> net_null1: {n} frames in, {n} out, 0 lost, 0 missed; {:.0} packets/s (this build, this machine)",
        st["packets_per_s"].as_f64().unwrap()
    );
}

#[test]
fn net_af_packet_carries_a_real_download() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(why) = unavailable("d") {
        skip("DPDK net_af_packet download through mbox (network namespaces)", &why);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let file: Vec<u8> = (0..3_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect();
    std::fs::write(d.join("file.bin"), &file).unwrap();
    let mut lab = Lab::new("d");
    let (c, m, s) = netns::inline_lab(&mut lab, 16).unwrap();

    lab.spawn(&s, 90, d, &["python3", "-m", "http.server", "8080", "--bind", "10.99.16.2"], "server.log");
    let bin = mbox_dpdk();
    let app = repo_file("apps/firewall_stats.toml");
    let eal = format!("{EAL} --vdev=net_af_packet0,iface=m0 --vdev=net_af_packet1,iface=m1");
    let args = [
        bin.to_str().unwrap(),
        "run",
        app.to_str().unwrap(),
        "--dpdk",
        &eal,
        "--ports",
        "0,1",
        "--duration",
        "60",
        "--stats-json",
        "stats.json",
        "--output-dir",
        d.to_str().unwrap(),
    ];
    let mb = lab.spawn(&m, 80, d, &args, "mbox.log");
    let got = d.join("got.bin");
    let fetched = lab.fetch(&c, "http://10.99.16.2:8080/file.bin", &got);
    let status = lab.interrupt_and_wait(mb, Duration::from_secs(15));
    let log = std::fs::read_to_string(d.join("mbox.log")).unwrap_or_default();
    fetched.unwrap_or_else(|e| panic!("curl through the DPDK ports failed: {e}\nmbox:\n{log}"));
    let status = status.unwrap_or_else(|| panic!("mbox did not end within 15 s of SIGINT:\n{log}"));
    assert_eq!(status.code(), Some(130), "Ctrl-C ends the run with 130 after draining:\n{log}");
    let body = std::fs::read(&got).unwrap();
    let (want, have) = (Sha256::digest(&file), Sha256::digest(&body));
    assert_eq!(have, want, "{} bytes arrived, {} sent: SHA-256 differs\n{log}", body.len(), file.len());

    let st = json(&d.join("stats.json"));
    let (pin, pout) = (st["packets_in"].as_u64().unwrap(), st["packets_out"].as_u64().unwrap());
    assert!(pin > 2000 && pout == pin - st["packets_dropped"].as_u64().unwrap(), "{st}");
    let ports = st["dpdk_ports"].as_array().unwrap_or_else(|| panic!("no dpdk_ports: {st}"));
    let names: Vec<&str> = ports.iter().map(|p| p["port"].as_str().unwrap()).collect();
    assert_eq!(names, ["0 (net_af_packet0)", "1 (net_af_packet1)"], "{st}");
    let ipackets: u64 = ports.iter().map(|p| p["ipackets"].as_u64().unwrap()).sum();
    let opackets: u64 = ports.iter().map(|p| p["opackets"].as_u64().unwrap()).sum();
    // A device may have received frames RX had not read when the run stopped.
    assert!(ipackets >= pin, "devices received {ipackets}, rx read {pin}: {st}");
    assert_eq!(opackets, pout, "every emitted frame was sent: {st}");
    let flows = std::fs::read_to_string(d.join("flows.jsonl")).unwrap();
    let rec = flows
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| r["proto"] == "TCP" && r["dest_port"] == 8080 && r["dest_ip"] == "10.99.16.2")
        .max_by_key(|r| r["flow"]["bytes_toclient"].as_u64().unwrap_or(0))
        .unwrap_or_else(|| panic!("no flow record of the download:\n{flows}"));
    assert!(rec["flow"]["bytes_toclient"].as_u64().unwrap() >= file.len() as u64, "{rec}");
    println!(
        "net_af_packet m0 <-> m1: {} bytes by curl, SHA-256 {:x} equal; {pin} frames in, {pout} out; devices {ipackets} in, {opackets} out",
        body.len(),
        have
    );
}

#[test]
fn foreign_mbufs_are_copied_in_zero_copy_mode() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("l23.toml"), "").unwrap();
    // net_ring0 sends back to itself what it is given: the frames it receives are TX's own
    // mbufs, not lent pool buffers, so zero-copy RX copies them into spare pool buffers;
    // net_null0's frames land in lent buffers.
    let n: u64 = 20_000;
    let eal = format!("{EAL} --vdev=net_ring0 --vdev=net_null0");
    let o = run(
        d,
        &["run", "l23.toml", "--dpdk", &eal, "--ports", "0,1", "--count", &n.to_string(), "--stats-json", "s.json"],
    );
    let log = text(&o);
    assert!(o.status.success(), "{log}");
    let st = json(&d.join("s.json"));
    assert_eq!((st["packets_in"].as_u64(), st["packets_out"].as_u64()), (Some(n), Some(n)), "{st}");
    let ports = st["dpdk_ports"].as_array().unwrap();
    let ring_in = ports[0]["ipackets"].as_u64().unwrap();
    let null_in = ports[1]["ipackets"].as_u64().unwrap();
    assert!(ring_in > 0 && null_in > 0, "{st}");
    let z = &st["dpdk"];
    assert_eq!(z["copied_frames"].as_u64(), Some(ring_in), "net_ring's frames copied: {st}");
    assert_eq!(z["zero_copy_frames"].as_u64(), Some(null_in), "net_null's frames adopted: {st}");
    assert_eq!(z["lost_frames"].as_u64(), Some(0), "{st}");
    assert_eq!(z["mempool_free_mbufs"], z["lent_buffers"], "{st}");
    let p = &st["pool"];
    assert_eq!(p["adopted"].as_u64(), Some(n), "copied frames are adopted from spare buffers: {st}");
    assert_eq!(p["lent"].as_u64().unwrap(), p["adopted"].as_u64().unwrap() + p["returned"].as_u64().unwrap());
    assert_eq!(st["pool_balanced"], true, "{st}");
    assert!(!log.contains("warning: `dpdk"), "copies are not a warning: {log}");
    println!("net_ring0 <-> net_null0, zero-copy: {null_in} frames received into lent buffers, {ring_in} foreign mbufs copied; the pool balances");
}

#[test]
fn two_rx_queues_feed_two_shards() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("l23.toml"), "[runtime]\nshards = 2\n").unwrap();
    let n: u64 = 100_000;
    let eal = format!("{EAL} --vdev=net_null0 --vdev=net_null1");
    let args = |extra: &[&'static str]| {
        let mut v: Vec<String> = ["run", "l23.toml", "--mode", "d", "--dpdk", &eal, "--ports", "0,1", "--count"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        v.push(n.to_string());
        v.extend(["--stats-json", "s.json"].iter().map(|s| s.to_string()));
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let handled = |st: &serde_json::Value, name: &str| -> u64 {
        let a = st["actors"].as_array().unwrap().iter().find(|a| a["name"] == name);
        a.and_then(|a| a["handled"]["FRAME"].as_u64()).unwrap_or(0)
    };
    // Default queues in mode d: one per shard; net_null advertises RSS, so `auto` takes the
    // queues as the shards.
    let a = args(&[]);
    let o = run(d, &a.iter().map(String::as_str).collect::<Vec<_>>());
    let log = text(&o);
    assert!(o.status.success(), "{log}");
    assert!(log.contains("dpdk: 2 shards fed by RX queue (symmetric RSS on every port)"), "{log}");
    let st = json(&d.join("s.json"));
    assert_eq!(st["dpdk"]["shard_by"], "queue", "{st}");
    assert_eq!(st["packets_in"].as_u64(), Some(n), "{st}");
    assert_eq!(st["packets_out"].as_u64(), Some(n), "{st}");
    let ports = st["dpdk_ports"].as_array().unwrap();
    let mut per_queue = [0u64; 2];
    for p in ports {
        assert_eq!((p["rx_queues"].as_u64(), p["rss"].as_bool()), (Some(2), Some(true)), "{p}");
        let q = p["queues"].as_array().unwrap();
        assert_eq!(q.len(), 2, "{p}");
        let qs: Vec<u64> = q.iter().map(|q| q["ipackets"].as_u64().unwrap()).collect();
        assert!(qs.iter().all(|&c| c > 0), "both queues received: {p}");
        assert_eq!(qs.iter().sum::<u64>(), p["ipackets"].as_u64().unwrap(), "queues add up to the port: {p}");
        per_queue[0] += qs[0];
        per_queue[1] += qs[1];
    }
    let shards = [handled(&st, "l23"), handled(&st, "l23.1")];
    assert_eq!(shards, per_queue, "shard k handled exactly the frames of queue k: {st}");
    zero_copy_books(&st, n);

    // Hashing in software instead: net_null's frames carry no IP flow, so every one goes to
    // shard 0 (the splitter's rule for frames without a flow).
    let a = args(&["--dpdk-shard", "hash"]);
    let o = run(d, &a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "{}", text(&o));
    let st = json(&d.join("s.json"));
    assert_eq!(st["dpdk"]["shard_by"], "hash", "{st}");
    assert_eq!([handled(&st, "l23"), handled(&st, "l23.1")], [n, 0], "{st}");
    println!(
        "net_null x2, 2 RX queues each with RSS: shard 0 handled {} frames = queue 0's, shard 1 {} = queue 1's; \
         --dpdk-shard hash: all {n} to shard 0 (no IP flows)",
        per_queue[0], per_queue[1]
    );
}

#[test]
fn fallbacks_are_printed() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("l23.toml"), "[runtime]\nshards = 2\n").unwrap();
    let input = d.join("in.pcap");
    gen_pcap(&input, &GenConfig { flows: 60, seed: 3, attacks: 4, ..GenConfig::default() });
    let n = read_all(&input).len().to_string();
    // net_pcap: one RX queue, no RSS. The IDS app in mode d, hashed in software after the
    // fallback, gives the same alerts and flow records as the pcap-mode run in mode d.
    let app = ids_app(d);
    let app = app.to_str().unwrap();
    let (pcap_dir, dpdk_dir) = (d.join("pcap"), d.join("dpdk"));
    std::fs::create_dir_all(&pcap_dir).unwrap();
    std::fs::create_dir_all(&dpdk_dir).unwrap();
    let o = run(&pcap_dir, &["run", app, "--mode", "d", "-i", input.to_str().unwrap(), "-q"]);
    assert!(o.status.success(), "pcap run failed:\n{}", text(&o));
    let eal = format!("{EAL} --vdev=net_pcap0,rx_pcap={}", input.display());
    let o = run(
        &dpdk_dir,
        &[
            "run",
            app,
            "--mode",
            "d",
            "--dpdk",
            &eal,
            "--ports",
            "0",
            "--count",
            &n,
            "--dpdk-queues",
            "2",
            "--dpdk-shard",
            "queue",
            "--stats-json",
            "s.json",
        ],
    );
    let log = text(&o);
    assert!(o.status.success(), "{log}");
    for want in [
        "dpdk: port 0 (net_pcap0): 2 RX queues asked, the device has 1: using 1",
        "dpdk: --dpdk-shard queue: shards chosen by flow hash in software instead: port 0 (net_pcap0) has 1 RX queue(s), not 2",
    ] {
        assert!(log.contains(want), "missing `{want}` in:\n{log}");
    }
    let st = json(&dpdk_dir.join("s.json"));
    assert_eq!(st["dpdk"]["shard_by"], "hash", "{st}");
    assert_eq!(st["dpdk"]["notes"].as_array().map(Vec::len), Some(2), "{st}");
    assert_eq!(st["packets_in"].as_u64(), n.parse().ok(), "{st}");
    for f in ["alerts.jsonl", "dpi.jsonl", "flows.jsonl"] {
        let (a, b) = (std::fs::read(pcap_dir.join(f)).unwrap(), std::fs::read(dpdk_dir.join(f)).unwrap());
        assert!(!a.is_empty() && a == b, "{f}: mode d over net_pcap differs from mode d over the file:\n{log}");
    }
    zero_copy_books(&st, n.parse().unwrap());
    // net_ring: several queues, but no RSS.
    let eal = format!("{EAL} --vdev=net_ring0");
    let o = run(d, &["run", "l23.toml", "--mode", "d", "--dpdk", &eal, "--ports", "0", "--duration", "0.3"]);
    let log = text(&o);
    assert!(o.status.success(), "{log}");
    for want in [
        "dpdk: port 0 (net_ring0): no RSS on this device: its 2 RX queues are not spread by flow",
        "dpdk: --dpdk-shard auto: shards chosen by flow hash in software instead: port 0 (net_ring0) has no RSS",
    ] {
        assert!(log.contains(want), "missing `{want}` in:\n{log}");
    }
    // Queues that do not match the shards.
    let eal = format!("{EAL} --vdev=net_null0");
    let o = run(
        d,
        &["run", "l23.toml", "--mode", "d", "--dpdk", &eal, "--ports", "0", "--count", "1000", "--dpdk-queues", "3"],
    );
    let log = text(&o);
    assert!(o.status.success(), "{log}");
    let want =
        "dpdk: --dpdk-shard auto: shards chosen by flow hash in software instead: 3 RX queues per port for 2 shards";
    assert!(log.contains(want), "missing `{want}` in:\n{log}");
    let o = run(d, &["run", "l23.toml", "--dpdk", &eal, "--ports", "0", "--dpdk-rx", "sideways"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    println!(
        "fallbacks printed: fewer queues than asked (net_pcap; the IDS in mode d then equal to the pcap run's), \
         no RSS (net_ring), queues != shards (net_null); a bad --dpdk-rx refused"
    );
}

#[test]
fn bad_ports_and_eal_arguments_are_named() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("l23.toml"), "").unwrap();
    let eal = format!("{EAL} --vdev=net_null0");
    let o = run(d, &["run", "l23.toml", "--dpdk", &eal, "--ports", "5"]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(t.contains("DPDK port 5 does not exist; ports: 0 (net_null0)"), "{t}");
    let o = run(d, &["run", "l23.toml", "--dpdk", &eal, "--ports", "0,0"]);
    assert!(text(&o).contains("an inline pair needs two different ports"), "{}", text(&o));
    let o = run(d, &["run", "l23.toml", "--dpdk", "--no-such-eal-option", "--ports", "0"]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(t.contains("DPDK EAL initialisation failed (--no-such-eal-option)"), "{t}");
    println!("unknown port, a port twice and a bad EAL argument: each an error that names it");
}
