//! The split proxy and End Point µStacks as `mbox run` runs them (`[stack.proxy]`,
//! apps/proxy.toml and apps/cache.toml), on a live inline pair with real clients and an
//! origin in network namespaces (root only; skipped visibly without root, `ip`, veth
//! support, `ethtool`, `curl` or `python3`). docs/proxy.md.
//!
//! Topology: client `c0` (10.99.0.1) ↔ `m0` | `mbox run APP --iface m0,m1` (mode c) | `m1`
//! ↔ `s0`, the origin 10.99.0.11 (`python3 -m http.server 8000`, its access log kept). The
//! apps are the repository's own: the virtual service 10.99.0.100:80, server legs from
//! 10.99.0.200 to the origin.
//!
//! [`split_proxy_app_carries_200_mixed_downloads_intact`]: 200 curl downloads of 1 B – 2 MB
//! (each printed as `%{http_code} %{size_download} %{errormsg}` when one fails), every
//! SHA-256 equal to the served file's; the origin's log holds each once; the proxy's
//! counters (in the run's `--stats-json`) agree.
//!
//! [`cache_app_answers_the_second_request_from_memory`]: 20 objects fetched twice through
//! apps/cache.toml: both bodies equal the file, the origin's log holds each object once,
//! and the proxy opened no server leg for the hits (`server_legs` = the requests in the
//! origin's log, which closes after each); three requests with `Cache-Control: no-store` all reach the origin.
//!
//! [`per_flow_upgrade_caches_only_the_selected_host`]: apps/proxy_select.toml (transparent
//! interception of port 80, `upgrade = "on_request"`, `proxy_select` naming 10.99.0.11):
//! two origins in `s0`, 10.99.0.11 and 10.99.0.12, each serving the same objects with its
//! own access log; every object fetched twice from each: all bodies intact, the selected
//! origin's log holds one GET per object (the cache answered the second), the other's two
//! (its flows passed unchanged); the proxy's upgrade counters agree.

mod netns;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use netns::{have, inline_pair, spawn_mbox_run, stats_json, unavailable, wait_for_log, wait_forwarding, Lab};
use sha2::{Digest, Sha256};
use tests::skip;

/// One `mbox` at a time: its executor threads poll without sleeping.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn sha(b: &[u8]) -> String {
    Sha256::digest(b).iter().map(|x| format!("{x:02x}")).collect()
}

fn app(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../apps").join(name)
}

/// Deterministic bytes of length `n` (seeded by `seed`).
fn bytes(n: usize, seed: u32) -> Vec<u8> {
    (0..n as u32).map(|i| (i.wrapping_add(seed).wrapping_mul(2_654_435_761) >> 13) as u8).collect()
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

/// The origin's GET lines for `path` (exact, no query).
fn origin_gets(www: &Path, path: &str) -> usize {
    let log = std::fs::read_to_string(www.join("http.log")).unwrap_or_default();
    log.lines().filter(|l| l.contains(&format!("\"GET {path} HTTP/"))).count()
}

fn counter(stats: &serde_json::Value, name: &str) -> u64 {
    let a = stats["actors"].as_array().expect("actors").iter().find(|a| a["name"] == "proxy").expect("proxy in stats");
    a["counters"][name].as_u64().unwrap_or_else(|| panic!("counter `{name}` in {}", a["counters"]))
}

/// The lab with the origin serving `www` and `mbox run APP` in the middle; returns the lab,
/// the client namespace and mbox's process index.
fn start(tag: &str, dir: &Path, www: &Path, app: &Path) -> (Lab, String, usize) {
    let mut lab = Lab::new(tag);
    let (c, m, s) = inline_pair(&mut lab, "10.99.0.1", &["10.99.0.11"]).unwrap();
    lab.spawn(&s, 400, www, &["python3", "-u", "-m", "http.server", "8000", "--bind", "10.99.0.11"], "http.log");
    assert!(wait_for_log(www, "http.log", "Serving HTTP", Duration::from_secs(15)), "origin did not start");
    let mbox = spawn_mbox_run(&mut lab, &m, 380, dir, app);
    wait_forwarding(&c, "http://10.99.0.100/ready", dir);
    (lab, c, mbox)
}

/// `ab -n N -c 10` on `url` from `c` (when `ab` is installed: `.ci/run` installs it):
/// asserts N complete and 0 failed; prints what ab said. Returns the requests it made.
fn ab(c: &str, check: &str, n: u32, url: &str) -> u64 {
    if !have("ab") {
        skip(check, "`ab` is not installed (the ab part only)");
        return 0;
    }
    let (code, text) = exec(c, 120, &["ab", "-n", &n.to_string(), "-c", "10", "-s", "10", url]);
    let field = |name: &str| {
        let rest = text.lines().find_map(|l| l.strip_prefix(name))?;
        rest.split_whitespace().next().map(str::to_string)
    };
    assert_eq!(code, 0, "ab failed:\n{text}");
    assert_eq!(field("Complete requests:"), Some(n.to_string()), "{text}");
    assert_eq!(field("Failed requests:"), Some("0".into()), "{text}");
    println!(
        "checked: ab -n {n} -c 10 {url}: {n} complete, 0 failed ({} requests/s, this run)",
        field("Requests per second:").unwrap_or_default()
    );
    u64::from(n)
}

/// Fetches `http://HOST/k0` .. `k{n-1}` with one curl into `prefix-i` and asserts each equals
/// `www/k{i}` and that curl exited 0; `label` names the batch in the failures.
fn fetch_and_check(c: &str, dir: &Path, host: &str, n: usize, www: &Path, prefix: &Path, label: &str) {
    let file = |i: usize| PathBuf::from(format!("{}-{i}", prefix.display()));
    let urls: Vec<(String, PathBuf)> = (0..n).map(|i| (format!("http://{host}/k{i}"), file(i))).collect();
    let list = format!("{}.cfg", prefix.file_name().unwrap().to_string_lossy());
    let (code, lines) = curl_all(c, dir, &list, &urls, "");
    for i in 0..n {
        let want = std::fs::read(www.join(format!("k{i}"))).unwrap();
        let got = std::fs::read(file(i)).unwrap_or_default();
        assert_eq!(
            sha(&got),
            sha(&want),
            "{label} k{i}: {} of {} bytes; curl exit {code}: {}",
            got.len(),
            want.len(),
            lines.get(i).map_or("-", |l| l)
        );
    }
    assert_eq!(code, 0, "{label}: curl exit code");
}

/// Fetches `urls` (name, url, output) with one curl; returns the per-transfer lines
/// (`CODE SIZE ERROR` each) and curl's exit code.
fn curl_all(c: &str, dir: &Path, list: &str, urls: &[(String, PathBuf)], extra: &str) -> (i32, Vec<String>) {
    let mut cfg = format!(
        "silent\nshow-error\nmax-time = 30\nwrite-out = \"%{{http_code}} %{{size_download}} %{{errormsg}}\\n\"\n{extra}"
    );
    for (url, out) in urls {
        cfg.push_str(&format!("url = \"{url}\"\noutput = \"{}\"\n", out.display()));
    }
    let path = dir.join(list);
    std::fs::write(&path, cfg).unwrap();
    let (code, text) = exec(c, 300, &["curl", "-K", path.to_str().unwrap()]);
    (code, text.lines().map(str::to_string).collect())
}

#[test]
fn split_proxy_app_carries_200_mixed_downloads_intact() {
    let check = "live_proxy_app (proxy)";
    if let Some(why) = unavailable("pa") {
        skip(check, &why);
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let www = dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("ready"), b"ready\n").unwrap();
    const SIZES: [usize; 10] = [1, 100, 1460, 1461, 4096, 65_535, 65_536, 100_000, 500_000, 2_000_000];
    let mut want = Vec::new();
    for i in 0..200 {
        let size = SIZES[i % 10] - usize::from(i >= 10 && SIZES[i % 10] > 1) * (i / 10);
        let b = bytes(size, i as u32);
        std::fs::write(www.join(format!("o{i}")), &b).unwrap();
        want.push((size, sha(&b)));
    }
    let (mut lab, c, mbox) = start("pa", dir, &www, &app("proxy.toml"));

    let out = dir.join("out");
    std::fs::create_dir_all(&out).unwrap();
    let urls: Vec<(String, PathBuf)> =
        (0..200).map(|i| (format!("http://10.99.0.100/o{i}"), out.join(i.to_string()))).collect();
    let (code, lines) = curl_all(&c, dir, "curl.cfg", &urls, "");
    let mut bad = Vec::new();
    for (i, (size, digest)) in want.iter().enumerate() {
        let got = std::fs::read(out.join(i.to_string())).unwrap_or_default();
        if got.len() != *size || sha(&got) != *digest {
            bad.push(format!(
                "o{i} ({size} bytes): got {} bytes; curl: {}",
                got.len(),
                lines.get(i).map_or("-", |l| l)
            ));
        }
    }
    let total: usize = want.iter().map(|w| w.0).sum();
    assert!(bad.is_empty(), "{} of 200 downloads wrong (curl exit {code}):\n{}", bad.len(), bad.join("\n"));
    assert_eq!(code, 0, "curl exit code");
    assert_eq!(lines.len(), 200, "one write-out line per transfer");
    assert!(lines.iter().all(|l| l.starts_with("200 ")), "every transfer answered 200");
    let once = (0..200).filter(|i| origin_gets(&www, &format!("/o{i}")) == 1).count();
    assert_eq!(once, 200, "the origin served every object once");
    println!("checked: 200 downloads of 1 B - 2 MB ({total} bytes) through apps/proxy.toml, every SHA-256 equal; the origin served each once");
    let _ = ab(&c, check, 500, "http://10.99.0.100/ready");

    assert!(lab.interrupt_and_wait(mbox, Duration::from_secs(30)).is_some(), "mbox did not stop");
    let stats = stats_json(dir);
    let n = |k: &str| counter(&stats, k);
    println!(
        "checked: proxy counters: accepted {}, server_legs {}, closed {}, bytes_to_client {}, backpressure {}, frames_not_sent {}, unresolved_dropped {}, device_rx_dropped {}",
        n("accepted"),
        n("server_legs"),
        n("closed"),
        n("bytes_to_client"),
        n("backpressure"),
        n("frames_not_sent"),
        n("unresolved_dropped"),
        n("device_rx_dropped")
    );
    assert!(n("accepted") >= 201, "200 downloads and the readiness probe (and ab's)");
    assert_eq!(n("server_legs"), n("accepted"), "without endpoint, every connection has a server leg");
    assert!(n("bytes_to_client") >= total as u64, "the bodies crossed the proxy");
    assert_eq!(n("frames_not_sent"), 0);
    assert_eq!(n("frames_dropped_queue_full"), 0);
}

#[test]
fn cache_app_answers_the_second_request_from_memory() {
    let check = "live_proxy_app (cache)";
    if let Some(why) = unavailable("ca") {
        skip(check, &why);
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let www = dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("ready"), b"ready\n").unwrap();
    let sizes = |i: usize| [1usize, 700, 3000, 65_536, 1_000_000][i % 5] + i;
    for i in 0..20 {
        std::fs::write(www.join(format!("k{i}")), bytes(sizes(i), 7 + i as u32)).unwrap();
    }
    std::fs::write(www.join("fresh"), b"never stored\n").unwrap();
    let (mut lab, c, mbox) = start("ca", dir, &www, &app("cache.toml"));

    let out = dir.join("out");
    std::fs::create_dir_all(&out).unwrap();
    for round in 0..2 {
        fetch_and_check(&c, dir, "10.99.0.100", 20, &www, &out.join(round.to_string()), &format!("round {round}"));
    }
    let per: Vec<usize> = (0..20).map(|i| origin_gets(&www, &format!("/k{i}"))).collect();
    assert_eq!(per, vec![1; 20], "the origin's log holds every object once (the second request never reached it)");
    println!("checked: 20 objects fetched twice through apps/cache.toml: bodies equal both times; the origin's log holds each once");

    let urls: Vec<(String, PathBuf)> =
        (0..3).map(|i| ("http://10.99.0.100/fresh".to_string(), out.join(format!("fresh{i}")))).collect();
    let (code, lines) = curl_all(&c, dir, "nostore.cfg", &urls, "header = \"Cache-Control: no-store\"\n");
    assert_eq!(code, 0, "no-store requests: {lines:?}");
    for i in 0..3 {
        assert_eq!(std::fs::read(out.join(format!("fresh{i}"))).unwrap(), b"never stored\n");
    }
    assert_eq!(origin_gets(&www, "/fresh"), 3, "every no-store request reached the origin");
    println!("checked: 3 requests with Cache-Control: no-store, all 3 reached the origin");
    // HTTP/1.0, 10 at once, all hits: answered from memory, the origin never asked.
    let ab_hits = ab(&c, check, 500, "http://10.99.0.100/k0");
    assert_eq!(origin_gets(&www, "/k0"), 1, "ab's requests were all hits");

    assert!(lab.interrupt_and_wait(mbox, Duration::from_secs(30)).is_some(), "mbox did not stop");
    let stats = stats_json(dir);
    let n = |k: &str| counter(&stats, k);
    println!(
        "checked: counters: accepted {}, server_legs {}, cache.hits {}, cache.misses {}, cache.stored {}, bytes_replied {}",
        n("accepted"),
        n("server_legs"),
        n("cache.hits"),
        n("cache.misses"),
        n("cache.stored"),
        n("bytes_replied")
    );
    assert_eq!(n("cache.hits"), 20 + ab_hits, "the second round (and ab) answered from memory");
    let origin_requests = std::fs::read_to_string(www.join("http.log")).unwrap_or_default().matches("\"GET ").count();
    assert_eq!(
        n("server_legs") as usize,
        origin_requests,
        "one server leg per request the origin saw (it closes after each): none for the hits (End Point)"
    );
    assert!(n("accepted") > n("server_legs"), "some connections had no server leg");
    assert_eq!(n("frames_not_sent"), 0);
}

#[test]
fn per_flow_upgrade_caches_only_the_selected_host() {
    let check = "live_proxy_app (per-flow upgrade)";
    if let Some(why) = unavailable("ua") {
        skip(check, &why);
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (www11, www12) = (dir.join("www11"), dir.join("www12"));
    let sizes = |i: usize| [1usize, 700, 3000, 65_536, 300_000][i % 5] + i;
    for www in [&www11, &www12] {
        std::fs::create_dir_all(www).unwrap();
        std::fs::write(www.join("ready"), b"ready\n").unwrap();
        for i in 0..10 {
            std::fs::write(www.join(format!("k{i}")), bytes(sizes(i), 11 + i as u32)).unwrap();
        }
    }
    let mut lab = Lab::new("ua");
    let (c, m, s) = inline_pair(&mut lab, "10.99.0.1", &["10.99.0.11", "10.99.0.12"]).unwrap();
    for (www, addr) in [(&www11, "10.99.0.11"), (&www12, "10.99.0.12")] {
        lab.spawn(&s, 400, www, &["python3", "-u", "-m", "http.server", "80", "--bind", addr], "http.log");
        assert!(wait_for_log(www, "http.log", "Serving HTTP", Duration::from_secs(15)), "origin {addr} did not start");
    }
    let mbox = spawn_mbox_run(&mut lab, &m, 380, dir, &app("proxy_select.toml"));
    wait_forwarding(&c, "http://10.99.0.12/ready", dir);
    wait_forwarding(&c, "http://10.99.0.11/ready", dir);

    let out = dir.join("out");
    std::fs::create_dir_all(&out).unwrap();
    for round in 0..2 {
        for host in ["10.99.0.11", "10.99.0.12"] {
            let name = format!("{host}-{round}");
            fetch_and_check(&c, dir, host, 10, &www11, &out.join(name), &format!("{host} round {round}"));
        }
    }
    let gets = |www: &Path| (0..10).map(|i| origin_gets(www, &format!("/k{i}"))).collect::<Vec<_>>();
    assert_eq!(gets(&www11), vec![1; 10], "the selected origin served each object once (the cache the second time)");
    assert_eq!(gets(&www12), vec![2; 10], "the other origin served each object twice (its flows passed)");
    println!("checked: 10 objects fetched twice from each of two origins through apps/proxy_select.toml: bodies intact; 10.99.0.11 (selected) served each once, 10.99.0.12 each twice");

    assert!(lab.interrupt_and_wait(mbox, Duration::from_secs(30)).is_some(), "mbox did not stop");
    let stats = stats_json(dir);
    let n = |k: &str| counter(&stats, k);
    println!(
        "checked: counters: flows_upgraded_to_proxy {}, flows_passed {}, hold_timeouts {}, decision_entries {}, cache.hits {}, accepted {}",
        n("flows_upgraded_to_proxy"),
        n("flows_passed"),
        n("hold_timeouts"),
        n("decision_entries"),
        n("cache.hits"),
        n("accepted")
    );
    // curl reuses a connection per host within one run: at least one flow per round each way.
    assert!(n("flows_upgraded_to_proxy") >= 3, "the selected host's flows (readiness probe and 2 rounds)");
    assert!(n("flows_passed") >= 3, "the other host's flows");
    assert_eq!(n("accepted"), n("flows_upgraded_to_proxy"), "only upgraded flows reached smoltcp");
    assert_eq!(n("cache.hits"), 10, "the second round to the selected host, from memory");
    assert_eq!(n("frames_not_sent"), 0);
}
