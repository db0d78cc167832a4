//! A rule reload on a live inline link (root only; skipped visibly without root, `ip`, veth
//! support, `ethtool`, `curl`, `python3`), docs/reconfiguration.md.
//!
//! Client `c0` ↔ `m0` | `mbox run ids.toml --iface m0,m1 --prefix P` | `m1` ↔ `s0`, a
//! `python3 -m http.server`. While a rate-limited 24 MB download runs through mbox:
//! a request carrying `X-Reload-Marker` does not alert (rules A have no rule for it);
//! `mbox ctl P reload` with rules B, which add one, is accepted and applies from a packet
//! number RX stamped; the same request on a new connection now alerts; a reload that would
//! replace an NF under its name is refused and changes nothing; a second flow log is added
//! (it counts the download's packets from the packet RX stamped), then both flow logs are
//! removed at a stamped packet; the download completes byte for byte (SHA-256) and the run
//! drops nothing.

mod netns;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use netns::{curl, have, inline_lab, stats_json, unavailable, wait_for_log, wait_forwarding, Lab};
use sha2::{Digest, Sha256};
use tests::{mbox_bin, skip};

const RULES_A: &str =
    "alert tcp any 8080 -> any any (msg:\"HTTP 200\"; content:\"200 OK\"; flow:to_client; sid:2004;)\n";
const RULES_B: &str =
    "alert tcp any 8080 -> any any (msg:\"HTTP 200\"; content:\"200 OK\"; flow:to_client; sid:2004;)\n\
alert tcp any any -> any 8080 (msg:\"reload marker\"; content:\"X-Reload-Marker\"; flow:to_server; sid:3001;)\n";

/// The IDS, then `extra` (more NFs).
fn app(extra: &str) -> String {
    format!(
        "[runtime]\npool_buffers = 8192\nbuffer_size = 2048\n\n[stack.tcp]\n\n[[nf]]\nname = \"ids\"\nkind = \"signature_match\"\nrules = \"ids.rules\"\noutput = \"alerts.jsonl\"\n{extra}"
    )
}

const FLOWS: &str = "\n[[nf]]\nname = \"flows\"\nkind = \"flow_stats\"\noutput = \"flows.jsonl\"\n";
const LATE: &str = "\n[[nf]]\nname = \"late\"\nkind = \"flow_stats\"\noutput = \"late.jsonl\"\n";

fn ctl(dir: &Path, prefix: &str, req: &str) -> serde_json::Value {
    let o = Command::new(mbox_bin()).args(["ctl", prefix, req, "--json"]).current_dir(dir).output().unwrap();
    serde_json::from_slice(&o.stdout).unwrap_or(serde_json::Value::Null)
}

#[test]
fn a_reloaded_rule_alerts_on_new_requests_and_nfs_are_added_and_removed_while_a_download_completes_intact() {
    let check = "live reload: a rule added by `mbox ctl reload` during a download";
    if let Some(why) = unavailable("r") {
        skip(check, &why);
        return;
    }
    if !have("pgrep") {
        skip(check, "`pgrep` is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let file: Vec<u8> = (0..24_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(d.join("big.bin"), &file).unwrap();
    std::fs::write(d.join("ok.txt"), b"fine\n").unwrap();
    std::fs::write(d.join("ids.rules"), RULES_A).unwrap();
    std::fs::write(d.join("ids.toml"), app(FLOWS)).unwrap();
    let out = d.join("out");
    std::fs::create_dir_all(&out).unwrap();
    let mut lab = Lab::new("r");
    let (c, m, s) = inline_lab(&mut lab, 31).unwrap();
    lab.spawn(&s, 120, d, &["python3", "-u", "-m", "http.server", "8080", "--bind", "10.99.31.2"], "server.log");
    assert!(wait_for_log(d, "server.log", "Serving HTTP", Duration::from_secs(15)), "the server did not start");
    let prefix = format!("lreload{}", std::process::id());
    let bin = mbox_bin();
    let mb = lab.spawn(
        &m,
        100,
        d,
        &[
            bin.to_str().unwrap(),
            "run",
            "ids.toml",
            "--iface",
            "m0,m1",
            "--prefix",
            &prefix,
            "--duration",
            "90",
            "--stats-json",
            "stats.json",
            "--output-dir",
            out.to_str().unwrap(),
        ],
        "mbox.log",
    );
    let url = |p: &str| format!("http://10.99.31.2:8080/{p}");
    let ok = url("ok.txt");
    wait_forwarding(&c, &ok, d);
    let marker = |port: &str| curl(&c, 20, &["--local-port", port, "-H", "X-Reload-Marker: 1", "-o", "/dev/null", &ok]);
    assert_eq!(marker("43001"), 0);

    // The long download, rate-limited to ~8 s.
    let got = d.join("got.bin");
    let big = url("big.bin");
    let dl = lab.spawn(
        &c,
        60,
        d,
        &["curl", "-sS", "--limit-rate", "3M", "--local-port", "43000", "-o", got.to_str().unwrap(), &big],
        "curl.log",
    );
    std::thread::sleep(Duration::from_secs(2));

    // A replacement under the same name is refused and changes nothing.
    std::fs::write(
        d.join("ids.toml"),
        app("\n[[nf]]\nname = \"flows\"\nkind = \"stream_hash\"\noutput = \"h.jsonl\"\n"),
    )
    .unwrap();
    let v = ctl(d, &prefix, "reload");
    assert_eq!(v["ok"], false, "{v}");
    assert!(v["error"].as_str().unwrap_or_default().contains("give the new NF another name"), "{v}");
    // A second flow log added while the download goes on.
    std::fs::write(d.join("ids.toml"), app(&format!("{FLOWS}{LATE}"))).unwrap();
    let v = ctl(d, &prefix, "reload");
    assert_eq!((v["ok"].as_bool(), v["generation"].as_u64()), (Some(true), Some(2)), "{v}");
    let added_at = v["from_packet"].as_u64().expect("stamped at once: traffic flows");
    // Rules B, with the marker rule.
    std::fs::write(d.join("ids.rules"), RULES_B).unwrap();
    let v = ctl(d, &prefix, "reload");
    assert_eq!((v["ok"].as_bool(), v["generation"].as_u64()), (Some(true), Some(3)), "{v}");
    assert!(v["from_packet"].as_u64().is_some(), "traffic flows: RX stamps the reload at once: {v}");
    assert_eq!(marker("43002"), 0);
    // Both flow logs removed while the download goes on.
    std::thread::sleep(Duration::from_secs(1));
    std::fs::write(d.join("ids.toml"), app("")).unwrap();
    let v = ctl(d, &prefix, "reload");
    assert_eq!((v["ok"].as_bool(), v["generation"].as_u64()), (Some(true), Some(4)), "{v}");
    let removed_at = v["from_packet"].as_u64().expect("stamped at once: traffic flows");
    let st = lab.wait(dl, Duration::from_secs(50));
    assert_eq!(st.and_then(|s| s.code()), Some(0), "the download did not complete");
    let body = std::fs::read(&got).unwrap();
    assert_eq!(Sha256::digest(&body), Sha256::digest(&file), "{} of {} bytes, SHA-256 differs", body.len(), file.len());
    let status = lab.interrupt_and_wait(mb, Duration::from_secs(20));
    let log = std::fs::read_to_string(d.join("mbox.log")).unwrap_or_default();
    assert_eq!(status.and_then(|s| s.code()), Some(130), "{log}");
    let stats = stats_json(d);
    assert_eq!(stats["packets_dropped"].as_u64(), Some(0), "{log}");
    let re = stats["reconfigurations"].as_array().unwrap();
    assert_eq!(re.len(), 4, "{re:?}");
    let actor = |n: &str| stats["actors"].as_array().unwrap().iter().find(|a| a["name"] == n).cloned().unwrap();
    let (flows, late) = (actor("flows"), actor("late"));
    assert_eq!(flows["counters"]["removed_at_packet"].as_u64(), Some(removed_at), "{flows}");
    assert_eq!(late["counters"]["removed_at_packet"].as_u64(), Some(removed_at), "{late}");
    assert_eq!(late["counters"]["added_at_packet"].as_u64(), Some(added_at), "{late}");
    assert!(re[0]["accepted"] == false && re[1..].iter().all(|r| r["accepted"] == true), "{re:?}");
    // The download's flow, in both logs: the NF added later counted part of its packets,
    // from its first event at or after `added_at` until the removal.
    let download = |f: &str| -> u64 {
        let text = std::fs::read_to_string(out.join(f)).unwrap_or_default();
        text.lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|v| v["src_port"] == 43000)
            .map(|v| v["flow"]["pkts_toserver"].as_u64().unwrap() + v["flow"]["pkts_toclient"].as_u64().unwrap())
            .sum()
    };
    let (all, part) = (download("flows.jsonl"), download("late.jsonl"));
    assert!(part > 0 && part < all, "the added NF saw the download from its add on: {part} of {all} packets");
    assert!(all < removed_at, "{all} packets before the removal at {removed_at}");
    let alerts: Vec<serde_json::Value> = std::fs::read_to_string(out.join("alerts.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let markers: Vec<u64> =
        alerts.iter().filter(|a| a["alert"]["signature_id"] == 3001).map(|a| a["src_port"].as_u64().unwrap()).collect();
    assert_eq!(markers, [43002], "only the request after the reload alerts: {alerts:?}");
    assert!(log.contains("reload (ctl, ") && log.contains("rules added: sid 3001"), "{log}");
    println!(
        "live reload: 24 MB intact (SHA-256), reload from packet {} of {} in; marker alert only after it",
        re[1]["from_packet"], stats["packets_in"]
    );
}
