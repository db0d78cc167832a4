//! The split proxy µStack and the cache NF on live traffic between network namespaces
//! (root only; skipped visibly without root or the tools). docs/proxy.md.
//!
//! The proxy runs as `nfs/examples/proxy_tun` (the µStack on a TUN device; `[stack.proxy]`
//! is not in the app loader yet) in namespace `p`: client `c` (10.98.0.1) ↔ `p` ↔ server `s`
//! (10.98.1.2, `python3 -m http.server 80`). In `p`, TCP to port 80 arriving from the client
//! is routed into the TUN device (a policy rule), where the proxy answers for the server's
//! address (`set_any_ip`) and opens the server leg from 10.98.2.1.
//!
//! [`split_proxy_carries_1000_downloads_intact`]: 1,000 small objects (1–2,000 bytes) and six
//! large ones (100 KB – 3 MB) through the pass-through proxy, each compared by SHA-256.
//! [`cache_answers_the_second_request_without_the_origin`]: 20 objects fetched twice through
//! the cache: the origin's access log holds each once, both bodies equal the file; a request
//! with `Cache-Control: no-store` reaches the origin every time.

mod netns;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use netns::{have, unavailable, Lab};
use sha2::{Digest, Sha256};
use tests::skip;

fn proxy_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>").to_path_buf();
    let release = profile_dir.file_name().is_some_and(|n| n == "release");
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args(["build", "--quiet", "-p", "nfs", "--example", "proxy_tun", "--manifest-path"]).arg(&manifest);
    if release {
        cmd.arg("--release");
    }
    cmd.env("CARGO_TARGET_DIR", profile_dir.parent().expect("target dir"));
    assert!(cmd.status().expect("cargo build").success(), "building proxy_tun failed");
    profile_dir.join("examples/proxy_tun")
}

/// Namespaces, addresses, routes and the origin server; returns (lab, client ns, proxy ns).
fn topology(tag: &str, www: &Path) -> Result<(Lab, String, String), String> {
    let mut lab = Lab::new(tag);
    let c = lab.netns("c")?;
    let p = lab.netns("p")?;
    let s = lab.netns("s")?;
    lab.veth(&c, "pxc0", &p, "pxp0")?;
    lab.veth(&s, "pxs0", &p, "pxp1")?;
    for (ns, cmd) in [
        (&c, "ip addr add 10.98.0.1/24 dev pxc0"),
        (&c, "ip route add default via 10.98.0.254"),
        (&p, "ip addr add 10.98.0.254/24 dev pxp0"),
        (&p, "ip addr add 10.98.1.254/24 dev pxp1"),
        (&s, "ip addr add 10.98.1.2/24 dev pxs0"),
        (&s, "ip route add default via 10.98.1.254"),
        (&p, "sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0"),
        (&p, "ip tuntap add dev tun0 mode tun"),
        (&p, "ip link set tun0 up"),
        (&p, "sysctl -qw net.ipv4.conf.tun0.rp_filter=0"),
        (&p, "ip route add 10.98.2.0/24 dev tun0"),
        (&p, "ip rule add iif pxp0 ipproto tcp dport 80 lookup 100"),
        (&p, "ip route add default dev tun0 table 100"),
    ] {
        lab.exec(ns, &cmd.split(' ').collect::<Vec<_>>())?;
    }
    lab.spawn(&s, 300, www, &["python3", "-m", "http.server", "80", "--bind", "10.98.1.2"], "origin.log");
    Ok((lab, c, p))
}

fn sha(b: &[u8]) -> Vec<u8> {
    Sha256::digest(b).to_vec()
}

/// Fetches every `(path, out)` in one curl run (a new connection each: the origin is
/// HTTP/1.0), at most `secs`. curl reports every transfer (`-w`): any that is not a `200`
/// with as many bytes as the file on the origin (`sizes`, when given) is named in the error
/// with its status, size and curl's message, so a failure says what went wrong.
fn fetch_all(
    ns: &str,
    items: &[(String, PathBuf)],
    sizes: Option<&[usize]>,
    extra: &[&str],
    cfg: &Path,
    secs: u32,
) -> Result<(), String> {
    let mut k = String::new();
    for (path, out) in items {
        k.push_str(&format!("url = \"http://10.98.1.2/{path}\"\noutput = \"{}\"\n", out.display()));
    }
    std::fs::write(cfg, k).map_err(|e| e.to_string())?;
    let secs = secs.to_string();
    let mut v = vec!["timeout", &secs, "ip", "netns", "exec", ns, "curl", "-sS", "--fail", "--max-time", "20"];
    v.extend_from_slice(&["--connect-timeout", "5", "-w", "%{http_code} %{size_download} %{errormsg}\\n"]);
    v.extend_from_slice(extra);
    let cfg = cfg.to_str().expect("utf-8");
    v.extend_from_slice(&["-K", cfg]);
    let o = Command::new(v[0]).args(&v[1..]).output().map_err(|e| format!("curl: {e}"))?;
    let report = String::from_utf8_lossy(&o.stdout);
    let lines: Vec<&str> = report.lines().collect();
    let mut bad = Vec::new();
    for (i, (path, _)) in items.iter().enumerate() {
        let Some(line) = lines.get(i) else {
            bad.push(format!("{path}: no report (curl stopped: {})", o.status));
            continue;
        };
        let mut f = line.splitn(3, ' ');
        let (code, size, err) = (f.next().unwrap_or(""), f.next().unwrap_or(""), f.next().unwrap_or("").trim());
        let size_ok = sizes.is_none_or(|s| size.parse::<usize>().ok() == Some(s[i]));
        if code != "200" || !size_ok || !err.is_empty() {
            let want = sizes.map(|s| format!(" of {}", s[i])).unwrap_or_default();
            bad.push(format!("{path}: status {code}, {size} bytes{want}, `{err}`"));
        }
    }
    if bad.is_empty() && o.status.success() {
        return Ok(());
    }
    Err(format!(
        "{} of {} transfers failed (curl {}): {}; stderr: {}",
        bad.len(),
        items.len(),
        o.status,
        bad[..bad.len().min(10)].join("; "),
        String::from_utf8_lossy(&o.stderr).lines().take(5).collect::<Vec<_>>().join(" | ")
    ))
}

fn wait_up(ns: &str, dir: &Path) {
    for _ in 0..50 {
        if fetch_all(ns, &[("probe".into(), dir.join("probe.out"))], None, &[], &dir.join("probe.k"), 5).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("the path through the proxy did not come up in 10 s");
}

fn origin_gets(dir: &Path, path: &str) -> usize {
    let log = std::fs::read_to_string(dir.join("origin.log")).unwrap_or_default();
    log.lines().filter(|l| l.contains(&format!("\"GET /{path} HTTP"))).count()
}

// Once flaky (about 1 in 1,000 came back empty): the proxy closed a client leg that was up
// before its server leg (docs/proxy.md, "Fixed"); `fetch_all` now names any failed transfer.
#[test]
fn split_proxy_carries_1000_downloads_intact() {
    let check = "live_proxy";
    if let Some(why) = unavailable("px") {
        skip(check, &why);
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let www = dir.path();
    std::fs::write(www.join("probe"), b"up").unwrap();
    let mut items = Vec::new();
    let mut want = Vec::new();
    let mut seed = 0x9e37_79b9_u32;
    let mut bytes = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                seed as u8
            })
            .collect()
    };
    let sizes: Vec<usize> = (0..1000)
        .map(|i| 1 + (i * 7919) % 2000)
        .chain([100_000, 400_000, 1 << 20, 2 << 20, 3_000_000, 3 << 20])
        .collect();
    for (i, n) in sizes.iter().enumerate() {
        let body = bytes(*n);
        std::fs::write(www.join(format!("o{i}")), &body).unwrap();
        want.push(sha(&body));
        items.push((format!("o{i}"), www.join(format!("got{i}"))));
    }
    let (mut lab, c, p) = topology("px", www).unwrap_or_else(|e| panic!("lab: {e}"));
    let bin = proxy_bin();
    lab.spawn(&p, 300, www, &[bin.to_str().unwrap(), "tun0", "10.98.2.1", "80", "280", "pass"], "proxy.log");
    wait_up(&c, www);
    fetch_all(&c, &items, Some(&sizes), &[], &www.join("all.k"), 240).unwrap_or_else(|e| panic!("downloads: {e}"));
    let mut bad = Vec::new();
    for (i, (_, out)) in items.iter().enumerate() {
        let got = std::fs::read(out).unwrap_or_default();
        if sha(&got) != want[i] {
            bad.push((i, sizes[i], got.len()));
        }
    }
    assert!(
        bad.is_empty(),
        "{} of {} bodies differ (index, size, got): {:?}",
        bad.len(),
        items.len(),
        &bad[..bad.len().min(10)]
    );
    println!(
        "{check}: {} downloads ({} bytes) through the split proxy, all SHA-256 equal",
        items.len(),
        sizes.iter().sum::<usize>()
    );
}

#[test]
fn cache_answers_the_second_request_without_the_origin() {
    let check = "live_proxy cache";
    if let Some(why) = unavailable("pc") {
        skip(check, &why);
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let www = dir.path();
    std::fs::write(www.join("probe"), b"up").unwrap();
    let mut files = Vec::new();
    for i in 0..20usize {
        let body: Vec<u8> = (0..(10 + i * 37_000)).map(|j| (j * 31 + i) as u8).collect();
        std::fs::write(www.join(format!("c{i}")), &body).unwrap();
        files.push(body);
    }
    std::fs::write(www.join("ns"), b"never cached").unwrap();
    let (mut lab, c, p) = topology("pc", www).unwrap_or_else(|e| panic!("lab: {e}"));
    let bin = proxy_bin();
    lab.spawn(&p, 300, www, &[bin.to_str().unwrap(), "tun0", "10.98.2.1", "80", "280", "cache"], "proxy.log");
    wait_up(&c, www);
    for round in 0..2 {
        let items: Vec<_> = (0..20).map(|i| (format!("c{i}"), www.join(format!("r{round}_{i}")))).collect();
        fetch_all(&c, &items, None, &[], &www.join("c.k"), 120).unwrap_or_else(|e| panic!("round {round}: {e}"));
        for (i, (_, out)) in items.iter().enumerate() {
            assert_eq!(std::fs::read(out).unwrap_or_default(), files[i], "round {round}: body of c{i}");
        }
    }
    for i in 0..20 {
        assert_eq!(origin_gets(www, &format!("c{i}")), 1, "c{i}: the origin saw the second request");
    }
    let ns: Vec<_> = (0..3).map(|k| ("ns".to_string(), www.join(format!("ns{k}")))).collect();
    fetch_all(&c, &ns, None, &["-H", "Cache-Control: no-store"], &www.join("ns.k"), 60)
        .unwrap_or_else(|e| panic!("no-store: {e}"));
    assert_eq!(origin_gets(www, "ns"), 3, "no-store requests must all reach the origin");
    // `ab` on the hit path: HTTP/1.0, the cache answers and closes (or keeps the connection
    // with -k); one and ten connections at a time. Every answer whole, none to the origin.
    if have("ab") {
        for flags in [&["-c", "1"][..], &["-c", "10"], &["-k", "-c", "10"]] {
            let mut v = vec!["timeout", "120", "ip", "netns", "exec", &c, "ab", "-s", "10", "-n", "500"];
            v.extend_from_slice(flags);
            v.push("http://10.98.1.2/c1");
            let o = Command::new(v[0]).args(&v[1..]).output().expect("ab");
            let text = String::from_utf8_lossy(&o.stdout);
            let field = |name: &str| {
                text.lines().find_map(|l| l.strip_prefix(name)).map(|v| v.trim().to_string()).unwrap_or_default()
            };
            let what = format!("ab {}: {}{}", flags.join(" "), text, String::from_utf8_lossy(&o.stderr));
            assert!(o.status.success(), "{what}");
            assert_eq!(field("Complete requests:"), "500", "{what}");
            assert_eq!(field("Failed requests:"), "0", "{what}");
            assert_eq!(field("Document Length:"), format!("{} bytes", files[1].len()), "{what}");
        }
        assert_eq!(origin_gets(www, "c1"), 1, "ab's requests must all be hits");
        println!("{check}: ab -n 500 (-c 1, -c 10, -k -c 10) on a hit: every answer whole, none to the origin");
    } else {
        skip("live_proxy cache ab", "`ab` (apache2-utils) is not installed");
    }
    println!("{check}: 20 objects twice, the origin saw each once; 3 no-store requests all reached it");
}
