//! The TCP splicer µStack with its HTTP and memcached load balancers, on a live link with
//! real clients and servers in network namespaces (root only; skipped visibly without root,
//! `ip`, veth support, `ethtool`, `curl`, `python3`, `memcached` or `ab`). docs/splicer.md.
//!
//! Topology: client `c0` (10.99.0.1) ↔ `m0` | `mbox run APP --iface m0,m1` (mode c) | `m1`
//! ↔ `s0` carrying the three backends 10.99.0.11-13, each with `python3 -m http.server
//! 8000` and `memcached` on 11211. The app ([`APP`]): one splicer for 10.99.0.100:80 and
//! :11211 (source address 10.99.0.200), `http_lb` (round robin over the three; Host
//! `static.example` + path `/static/` → only .13) and `memcached_lb`.
//!
//! [`splicer_balances_real_clients_and_survives_a_flood_and_a_dead_backend`] checks, in
//! order (each step printed):
//!
//! 1. 1000 `curl` requests, one connection each: every body's SHA-256 equals the served
//!    file; the backends' logs hold 1000 of them, split round robin (max − min ≤ 1);
//! 2. Host/path rules: 20 requests for `static.example/static/` all on .13; 21 for the same
//!    host with another path split 7/7/7;
//! 3. a 20 MB download, byte-identical;
//! 4. `ab -n 1000 -c 10`: 1000 complete, 0 failed;
//! 5. memcached: `set` then `get` of 1000 keys through the virtual address (one connection
//!    each) return the stored values; a direct `get` at each server finds every key on the
//!    server [`nfs::balance::Ring`] names, and only there;
//! 6. a crafted SYN flood (20,000 SYNs from spoofed addresses, `AF_PACKET` in the client
//!    namespace) while real requests go on: the requests succeed, the splicer kept no state
//!    for the flood (`flows_peak` far below the SYNs; SYN cookies), and `mbox`'s resident
//!    memory grew by less than 32 MiB;
//! 7. a backend killed: 30 new requests all succeed (none hangs: each is bounded), none
//!    reaches the dead one; the splicer counted its refusal and retried the next backend;
//! 8. the run's counters: cookies sent/validated, spliced flows, no frames lost.
//!
//! [`splicer_in_mode_b`] runs the same app in mode b: `ab -n 300 -c 5`, 300 complete, 0
//! failed, exactly 100 per backend.
//!
//! [`controller_rejects_a_flow_req_without_policy_or_with_two`] (no root) loads apps
//! where the splicer's `FLOW_REQ` has no policy NF, or two whose filters overlap.

mod netns;

use std::collections::HashMap;
use std::net::SocketAddrV4;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use netns::{curl, have, inline_pair, spawn_mbox_run, stats_json, unavailable, wait_for_log, wait_forwarding, Lab};

/// One `mbox` at a time: its executor threads poll without sleeping.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
use sha2::{Digest, Sha256};
use tests::{mbox_bin, skip};

const APP: &str = r#"[runtime]
pool_buffers = 8192
buffer_size = 2048

[stack.l23]
max_flows = 4096

[stack.splicer]
services = ["10.99.0.100:80", "10.99.0.100:11211"]
source = "10.99.0.200"
on_backend_failure = "next"

[[nf]]
name = "web"
kind = "http_lb"
filter = { dst_port = 80 }
default_pool = "main"
pools = [
  { name = "main", backends = ["10.99.0.11:8000", "10.99.0.12:8000", "10.99.0.13:8000"] },
  { name = "static", backends = ["10.99.0.13:8000"] },
]
rules = [ { host = "static.example", path_prefix = "/static/", pool = "static" } ]

[[nf]]
name = "cache"
kind = "memcached_lb"
filter = { dst_port = 11211 }
backends = ["10.99.0.11:11211", "10.99.0.12:11211", "10.99.0.13:11211"]
"#;

const BACKENDS: [&str; 3] = ["10.99.0.11", "10.99.0.12", "10.99.0.13"];

/// set/get through the VIP, then a direct get at every server: prints one JSON object.
const MEMCACHED_PY: &str = r#"
import json, socket, sys
def cmd(host, data, ends):
    s = socket.create_connection((host, 11211), timeout=5)
    s.sendall(data)
    out = b""
    while not any(out.endswith(e) for e in ends):
        d = s.recv(65536)
        if not d:
            break
        out += d
    s.close()
    return out
n = int(sys.argv[1])
res = {"stored": 0, "got": 0, "where": {}}
for k in range(n):
    if cmd("10.99.0.100", b"set key%d 0 0 8\r\nval%05d\r\n" % (k, k), [b"STORED\r\n", b"ERROR\r\n"]) == b"STORED\r\n":
        res["stored"] += 1
for k in range(n):
    if cmd("10.99.0.100", b"get key%d\r\n" % k, [b"END\r\n"]) == b"VALUE key%d 0 8\r\nval%05d\r\nEND\r\n" % (k, k):
        res["got"] += 1
for h in sys.argv[2:]:
    res["where"][h] = [k for k in range(n) if cmd(h, b"get key%d\r\n" % k, [b"END\r\n"]).startswith(b"VALUE")]
print(json.dumps(res))
"#;

/// A bounded SYN flood from spoofed addresses and random MACs, out of `c0`.
const FLOOD_PY: &str = r#"
import random, socket, struct, sys, time
n = int(sys.argv[1])
def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s > 0xffff:
        s = (s & 0xffff) + (s >> 16)
    return (~s) & 0xffff
sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
sock.bind(("c0", 0))
dst = socket.inet_aton("10.99.0.100")
dmac = bytes.fromhex("020000005301")
rnd = random.Random(7)
for i in range(n):
    src = socket.inet_aton("10.99.0.%d" % (20 + i % 60))
    smac = bytes([2, 0x66, rnd.randrange(256), rnd.randrange(256), rnd.randrange(256), rnd.randrange(256)])
    tcp = struct.pack("!HHIIBBHHH", rnd.randrange(1024, 65535), 80, rnd.randrange(2**32), 0, 6 << 4, 0x02, 64240, 0, 0) + b"\x02\x04\x05\xb4"
    pseudo = src + dst + struct.pack("!BBH", 0, 6, len(tcp))
    tcp = tcp[:16] + struct.pack("!H", csum(pseudo + tcp)) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), i & 0xffff, 0, 64, 6, 0, src, dst)
    ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
    sock.send(dmac + smac + b"\x08\x00" + ip + tcp)
    if i % 500 == 499:
        time.sleep(0.01)
print("sent", n)
"#;

fn sha(b: &[u8]) -> String {
    Sha256::digest(b).iter().map(|x| format!("{x:02x}")).collect()
}

/// Runs a command in `ns` under an outer `timeout`; (exit code, stdout).
fn exec(ns: &str, secs: u32, cmd: &[&str]) -> (i32, String) {
    let o = Command::new("timeout")
        .args([secs.to_string().as_str(), "ip", "netns", "exec", ns])
        .args(cmd)
        .output()
        .expect("run a command in a namespace");
    (o.status.code().unwrap_or(-1), String::from_utf8_lossy(&o.stdout).into_owned())
}

/// GET lines of `path_part` in each backend's log.
fn hits(dir: &Path, path_part: &str) -> Vec<usize> {
    BACKENDS
        .iter()
        .map(|b| {
            let log = std::fs::read_to_string(dir.join(format!("http-{b}.log"))).unwrap_or_default();
            log.lines().filter(|l| l.contains("\"GET ") && l.contains(path_part)).count()
        })
        .collect()
}

fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn counter(stats: &serde_json::Value, actor: &str, name: &str) -> u64 {
    let a = stats["actors"].as_array().expect("actors").iter().find(|a| a["name"] == actor).expect("actor in stats");
    a["counters"][name].as_u64().unwrap_or(0)
}

#[test]
fn splicer_balances_real_clients_and_survives_a_flood_and_a_dead_backend() {
    let check = "live_splicer";
    if let Some(why) = unavailable("sp") {
        skip(check, &why);
        return;
    }
    for tool in ["memcached", "ab"] {
        if !have(tool) {
            skip(check, &format!("`{tool}` is not installed"));
            return;
        }
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let www = dir.join("www");
    std::fs::create_dir_all(www.join("static")).unwrap();
    let body: Vec<u8> = (0..65_536u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(www.join("body.bin"), &body).unwrap();
    std::fs::write(www.join("static/x"), b"static\n").unwrap();
    std::fs::write(www.join("other"), b"other\n").unwrap();
    let big: Vec<u8> = (0..20_000_000u32).map(|i| (i.wrapping_mul(2_246_822_519) >> 11) as u8).collect();
    std::fs::write(www.join("big.bin"), &big).unwrap();
    let app = dir.join("splicer.toml");
    std::fs::write(&app, APP).unwrap();

    let mut lab = Lab::new("sp");
    let (c, m, s) = inline_pair(&mut lab, "10.99.0.1", &BACKENDS).unwrap();
    let mut servers = Vec::new();
    for b in BACKENDS {
        let log = format!("http-{b}.log");
        let i = lab.spawn(&s, 300, &www, &["python3", "-u", "-m", "http.server", "8000", "--bind", b], &log);
        // Its log is in `www` (the server's directory).
        servers.push(i);
        lab.spawn(
            &s,
            300,
            dir,
            &["memcached", "-u", "nobody", "-l", b, "-p", "11211", "-U", "0"],
            &format!("mc-{b}.log"),
        );
    }
    for b in BACKENDS {
        assert!(wait_for_log(&www, &format!("http-{b}.log"), "Serving HTTP", Duration::from_secs(15)), "server {b}");
    }
    let mbox = spawn_mbox_run(&mut lab, &m, 280, dir, &app);
    wait_forwarding(&c, "http://10.99.0.100/other", dir);

    // 1. 1000 requests, one connection each.
    let bodies = dir.join("bodies");
    std::fs::create_dir_all(&bodies).unwrap();
    let mut cfg = String::from("silent\nshow-error\nheader = \"Connection: close\"\nmax-time = 10\n");
    for i in 0..1000 {
        cfg.push_str(&format!("url = \"http://10.99.0.100/body.bin?r={i}\"\noutput = \"{}/{i}\"\n", bodies.display()));
    }
    std::fs::write(dir.join("curl.cfg"), cfg).unwrap();
    let (code, _) = exec(&c, 250, &["curl", "-K", dir.join("curl.cfg").to_str().unwrap()]);
    assert_eq!(code, 0, "curl of 1000 requests failed");
    let want = sha(&body);
    let good = (0..1000).filter(|i| std::fs::read(bodies.join(i.to_string())).is_ok_and(|b| sha(&b) == want)).count();
    assert_eq!(good, 1000, "bodies whose SHA-256 matches");
    let rr = hits(&www, "body.bin?r=");
    let (min, max) = (rr.iter().min().unwrap(), rr.iter().max().unwrap());
    println!("checked: 1000 curl requests through 10.99.0.100:80, 1000 bodies with the served SHA-256; backends got {rr:?} (round robin)");
    assert_eq!(rr.iter().sum::<usize>(), 1000);
    assert!(max - min <= 1, "round robin within ±1: {rr:?}");

    // 2. Host/path rules.
    for i in 0..20 {
        let url = format!("http://10.99.0.100/static/x?s={i}");
        assert_eq!(curl(&c, 10, &["-o", "/dev/null", "-H", "Host: static.example", &url]), 0);
    }
    for i in 0..21 {
        let url = format!("http://10.99.0.100/other?o={i}");
        assert_eq!(curl(&c, 10, &["-o", "/dev/null", "-H", "Host: static.example", &url]), 0);
    }
    let st = hits(&www, "/static/x?s=");
    let ot = hits(&www, "/other?o=");
    println!("checked: Host static.example + /static/ -> {st:?} (all on .13); same host, other path -> {ot:?} (main pool, round robin)");
    assert_eq!(st, vec![0, 0, 20]);
    assert_eq!(ot, vec![7, 7, 7]);

    // 3. 20 MB.
    let out = dir.join("big.out");
    let (code, _) =
        exec(&c, 120, &["curl", "-sS", "--max-time", "100", "-o", out.to_str().unwrap(), "http://10.99.0.100/big.bin"]);
    assert_eq!(code, 0);
    let got = std::fs::read(&out).unwrap();
    assert_eq!(sha(&got), sha(&big), "20 MB download intact");
    println!("checked: a 20 MB download through the splicer, SHA-256 equal ({} bytes)", got.len());

    // 4. ab.
    let (code, text) = exec(&c, 200, &["ab", "-n", "1000", "-c", "10", "-s", "10", "http://10.99.0.100/body.bin"]);
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse::<u64>().ok())
    };
    assert_eq!(code, 0, "ab failed:\n{text}");
    assert_eq!(field("Complete requests:"), Some(1000), "{text}");
    assert_eq!(field("Failed requests:"), Some(0), "{text}");
    println!("checked: ab -n 1000 -c 10: 1000 complete, 0 failed");

    // 5. memcached.
    std::fs::write(dir.join("mc.py"), MEMCACHED_PY).unwrap();
    let script = dir.join("mc.py").to_string_lossy().into_owned();
    let mut args = vec!["python3", script.as_str(), "1000"];
    args.extend(BACKENDS);
    let (code, text) = exec(&c, 250, &args);
    assert_eq!(code, 0, "memcached client: {text}");
    let res: serde_json::Value = serde_json::from_str(text.trim()).expect("client's JSON");
    assert_eq!(res["stored"], 1000, "sets stored through the VIP");
    assert_eq!(res["got"], 1000, "gets through the VIP returned the stored value");
    let backends: Vec<SocketAddrV4> = BACKENDS.iter().map(|b| format!("{b}:11211").parse().unwrap()).collect();
    let ring = nfs::balance::Ring::new(&backends);
    let mut per: HashMap<String, usize> = HashMap::new();
    for (i, b) in BACKENDS.iter().enumerate() {
        let keys: Vec<u64> = res["where"][*b].as_array().unwrap().iter().map(|k| k.as_u64().unwrap()).collect();
        for k in &keys {
            assert_eq!(ring.pick(format!("key{k}").as_bytes()), Some(backends[i]), "key{k} found on {b}");
        }
        per.insert(b.to_string(), keys.len());
    }
    assert_eq!(per.values().sum::<usize>(), 1000, "every key on exactly one server: {per:?}");
    println!("checked: memcached set+get of 1000 keys through 10.99.0.100:11211; each key only on the server its hash names ({per:?})");

    // 6. SYN flood with real clients meanwhile.
    let pid = lab.command_pid(mbox).expect("mbox pid");
    let before = rss_kib(pid);
    std::fs::write(dir.join("flood.py"), FLOOD_PY).unwrap();
    let flood = lab.spawn(&c, 60, dir, &["python3", dir.join("flood.py").to_str().unwrap(), "20000"], "flood.log");
    let mut served = 0;
    for i in 0..20 {
        let (code, _) = exec(
            &c,
            30,
            &["curl", "-sS", "--max-time", "15", "-o", "/dev/null", &format!("http://10.99.0.100/other?f={i}")],
        );
        served += usize::from(code == 0);
    }
    assert!(lab.wait(flood, Duration::from_secs(60)).is_some_and(|s| s.success()), "the flood script");
    let after = rss_kib(pid);
    println!("checked: 20000 spoofed SYNs while 20 real requests ran: {served}/20 served; mbox RSS {before} KiB -> {after} KiB");
    assert_eq!(served, 20);
    assert!(after < before + 32 * 1024, "memory grew: {before} -> {after} KiB");

    // 7. A backend killed.
    lab.kill_command(servers[1]);
    let dead_before = hits(&www, "?k=")[1];
    for i in 0..30 {
        let (code, _) = exec(
            &c,
            30,
            &["curl", "-sS", "--max-time", "10", "-o", "/dev/null", &format!("http://10.99.0.100/other?k={i}")],
        );
        assert_eq!(code, 0, "request {i} after the kill");
    }
    let k = hits(&www, "?k=");
    println!("checked: backend 10.99.0.12 killed; 30 new requests all answered, by {k:?}");
    assert_eq!(k[1], dead_before);
    assert_eq!(k[0] + k[2], 30);

    // 8. Stop and read the counters.
    let status = lab.interrupt_and_wait(mbox, Duration::from_secs(30));
    assert!(status.is_some(), "mbox did not stop");
    let stats = stats_json(dir);
    let sp = |n: &str| counter(&stats, "splicer", n);
    println!(
        "checked: splicer counters: cookies_sent {}, cookies_validated {}, spliced {}, flows_peak {}, backend_refused {}, backend_retries {}, frames_not_sent {}, store_exhausted_resets {}, stream_chunks_high_water {}",
        sp("cookies_sent"),
        sp("cookies_validated"),
        sp("spliced"),
        sp("flows_peak"),
        sp("backend_refused"),
        sp("backend_retries"),
        sp("frames_not_sent"),
        sp("store_exhausted_resets"),
        sp("stream_chunks_high_water")
    );
    assert!(sp("cookies_sent") >= 10_000 + 4000, "SYN-ACKs with cookies for the flood and the clients");
    assert!(sp("cookies_validated") >= 4000);
    assert!(sp("spliced") >= 4000);
    assert!(sp("flows_peak") < 5000, "the flood left no state (SYN cookies): peak {}", sp("flows_peak"));
    assert!(sp("backend_refused") >= 1 && sp("backend_retries") >= 1, "the dead backend's refusal was retried");
    assert_eq!(sp("frames_not_sent"), 0);
    assert_eq!(sp("store_exhausted_resets"), 0, "the held bytes fit the stream store");
    assert!(sp("stream_chunks_high_water") >= 1, "the held bytes went through the stream store");
    assert_eq!(sp("frames_dropped_queue_full"), 0);
    assert_eq!(stats["pool_balanced"], true);
}

/// Mode b (each packet through the whole chain before the next): `ab -n 300 -c 5` through
/// the splicer, 300 complete, 0 failed, round robin exact (100 each).
#[test]
fn splicer_in_mode_b() {
    let check = "live_splicer (mode b)";
    if let Some(why) = unavailable("sb") {
        skip(check, &why);
        return;
    }
    if !have("ab") {
        skip(check, "`ab` is not installed");
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let www = dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("small"), vec![b'x'; 1024]).unwrap();
    let app = dir.join("splicer.toml");
    std::fs::write(&app, APP).unwrap();
    let mut lab = Lab::new("sb");
    let (c, m, s) = inline_pair(&mut lab, "10.99.0.1", &BACKENDS).unwrap();
    for b in BACKENDS {
        lab.spawn(
            &s,
            200,
            &www,
            &["python3", "-u", "-m", "http.server", "8000", "--bind", b],
            &format!("http-{b}.log"),
        );
    }
    for b in BACKENDS {
        assert!(wait_for_log(&www, &format!("http-{b}.log"), "Serving HTTP", Duration::from_secs(15)), "server {b}");
    }
    let bin = mbox_bin();
    let args = [bin.to_str().unwrap(), "run", app.to_str().unwrap(), "--iface", "m0,m1", "--mode", "b"];
    let mbox = lab.spawn(&m, 180, dir, &args, "mbox.log");
    wait_forwarding(&c, "http://10.99.0.100/small?warm", dir);
    let (code, text) = exec(&c, 120, &["ab", "-n", "300", "-c", "5", "-s", "10", "http://10.99.0.100/small"]);
    assert_eq!(code, 0, "ab: {text}");
    assert!(text.contains("Complete requests:      300") && text.contains("Failed requests:        0"), "{text}");
    let per = hits(&www, "/small HTTP");
    println!("checked: mode b: ab -n 300 -c 5 through the splicer: 300 complete, 0 failed; backends got {per:?}");
    assert_eq!(per, vec![100, 100, 100]);
    assert!(lab.interrupt_and_wait(mbox, Duration::from_secs(30)).is_some(), "mbox did not stop");
}

#[test]
fn controller_rejects_a_flow_req_without_policy_or_with_two() {
    let tmp = tempfile::tempdir().unwrap();
    let head = "[stack.splicer]\nservices = [\"10.0.0.100:80\", \"10.0.0.100:11211\"]\nsource = \"10.0.0.200\"\n";
    let lb = |name: &str, port: &str| {
        format!("[[nf]]\nname = \"{name}\"\nkind = \"memcached_lb\"\nfilter = {{ dst_port = {port} }}\nbackends = [\"10.0.0.1:11211\"]\n")
    };
    let cases = [
        ("none", head.to_string(), "no policy NF takes it"),
        (
            "overlap",
            format!("{head}{}{}", lb("a", "\"1-1000\""), lb("b", "80")),
            "two policy NFs whose filters overlap: `a` and `b`",
        ),
    ];
    for (name, text, want) in cases {
        let p = tmp.path().join(format!("{name}.toml"));
        std::fs::write(&p, text).unwrap();
        let o = Command::new(mbox_bin()).args(["graph", p.to_str().unwrap()]).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(want), "{name}: {err}");
        println!("checked: {name}: {}", err.trim());
    }
    let ok = tmp.path().join("ok.toml");
    std::fs::write(&ok, format!("{head}{}{}", lb("a", "80"), lb("b", "11211"))).unwrap();
    let o = Command::new(mbox_bin()).args(["graph", ok.to_str().unwrap()]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}
