//! An impaired generated capture (`mbox gen --loss --reorder --duplicate`) reassembles to
//! exactly the byte streams of the same configuration unimpaired — through `mbox streams`'
//! tracker, through the TCP monitor actor (a `stream_hash` NF behind it), and through tshark
//! when it is installed; and `mbox gen` takes the new options, refuses bad ones clearly, and
//! [`GenConfig::cli_args`] reproduces a configuration.

use std::collections::HashMap;
use std::path::Path;

use microboxes::streams::{streams, ConnectionRecord, StreamsOptions};
use runtime::ports::gen::{GenConfig, SizeDist};
use serde_json::Value;
use sha2::Digest;
use tests::{gen_pcap, have_tshark, mbox, read_all, text};

/// HTTP, TLS, SSH and DNS; IPv6 and VLANs; FIN and RST teardowns; log-uniform responses.
fn base() -> GenConfig {
    GenConfig {
        flows: 120,
        seed: 23,
        udp_fraction: 0.15,
        tls_fraction: 0.2,
        ssh_fraction: 0.1,
        ipv6_fraction: 0.2,
        vlan_fraction: 0.2,
        rst_fraction: 0.3,
        mss: 700,
        response_size: (0, 60_000),
        response_size_dist: SizeDist::LogUniform,
        attacks: 4,
        concurrency: 24,
        ..GenConfig::default()
    }
}

fn impaired() -> GenConfig {
    GenConfig { loss: 0.05, reorder: 0.05, duplicate: 0.03, ..base() }
}

/// `mbox streams`' records, by (client, server).
fn records(pcap: &Path) -> HashMap<String, ConnectionRecord> {
    let report = streams(pcap, StreamsOptions::default()).expect("mbox streams");
    report.connections.into_iter().map(|c| (format!("{} {}", c.client, c.server), c)).collect()
}

#[test]
fn impaired_capture_reassembles_to_the_unimpaired_streams() {
    same_streams(&base(), &impaired());
}

/// Heavy impairment of small segments: a fifth of them lost, reordered or duplicated each.
#[test]
fn heavily_impaired_small_segments_reassemble_too() {
    let base = GenConfig { flows: 40, seed: 4, mss: 100, response_size: (0, 8_000), ..base() };
    same_streams(&base, &GenConfig { loss: 0.2, reorder: 0.2, duplicate: 0.2, ..base.clone() });
}

/// Checks that `impaired` reassembles to the streams of `base` (see the module docs).
fn same_streams(base: &GenConfig, impaired: &GenConfig) {
    let dir = tempfile::tempdir().unwrap();
    let (plain_pcap, pcap) = (dir.path().join("plain.pcap"), dir.path().join("impaired.pcap"));
    let plain = gen_pcap(&plain_pcap, base);
    let s = gen_pcap(&pcap, impaired);
    assert!(s.lost > 0 && s.reordered > 0 && s.duplicated > 0, "{} {} {}", s.lost, s.reordered, s.duplicated);
    assert_eq!(s.packets, plain.packets + s.duplicated);
    let (want, got) = (records(&plain_pcap), records(&pcap));
    assert_eq!(got.len(), s.flows.iter().filter(|f| f.proto == "tcp").count());
    assert_eq!(want.len(), got.len());
    let (mut retrans, mut ooo) = (0, 0);
    for (key, w) in &want {
        let g = &got[key];
        for (d, (gd, wd)) in [("to server", (&g.to_server, &w.to_server)), ("to client", (&g.to_client, &w.to_client))]
        {
            assert_eq!((&gd.sha256, gd.stream_bytes), (&wd.sha256, wd.stream_bytes), "{key} {d}");
            assert_eq!((gd.gap_bytes, gd.overlap_conflict_bytes, gd.refused_segments), (0, 0, 0), "{key} {d}");
            retrans += gd.retransmissions;
            ooo += gd.out_of_order;
        }
        assert_eq!((&g.end, g.midstream), (&w.end, w.midstream), "{key}");
    }
    // Each duplicate arrives as a retransmission; each lost or reordered segment lets a
    // later one arrive beyond the frontier first.
    assert!(retrans >= s.duplicated, "{retrans} retransmissions, {} duplicates", s.duplicated);
    assert!(ooo >= s.lost + s.reordered, "{ooo} out of order, {} lost + {} reordered", s.lost, s.reordered);

    // Per flow, the generator's counts are what `mbox streams` saw on the wire.
    for f in s.flows.iter().filter(|f| f.proto == "tcp") {
        let g = &got[&format!("{} {}", f.client, f.server)];
        assert_eq!((g.to_server.packets, g.to_client.packets), (f.pkts_toserver, f.pkts_toclient), "flow {}", f.id);
        assert_eq!((g.to_server.payload_bytes, g.to_client.payload_bytes), (f.payload_toserver, f.payload_toclient));
    }

    // The TCP monitor actor and an NF hashing its DATA_RDY bytes agree.
    let hashes = stream_hash_run(dir.path(), &pcap);
    assert_eq!(hashes.len(), want.len(), "a record per connection");
    for (key, (to_server, to_client)) in &hashes {
        let w = &want[key];
        assert_eq!((to_server, to_client), (&w.to_server.sha256, &w.to_client.sha256), "{key}: the actor's hashes");
    }

    // tshark's "follow tcp" gives the same bytes.
    if !have_tshark() {
        tests::skip("gen_impair_streams: comparing with tshark", "tshark is not installed (CI installs it)");
        return;
    }
    let theirs = tshark_follow(&pcap, got.len());
    for g in got.values() {
        let (c, srv) = &theirs[&g.index];
        assert_eq!(
            (&hex_sha(c), &hex_sha(srv)),
            (&g.to_server.sha256, &g.to_client.sha256),
            "tshark stream {}",
            g.index
        );
    }
}

fn hex_sha(b: &[u8]) -> String {
    sha2::Sha256::digest(b).iter().map(|x| format!("{x:02x}")).collect()
}

/// Runs a TCP monitor with a `stream_hash` NF on `pcap`: (to-server, to-client) SHA-256 per
/// "client server".
fn stream_hash_run(dir: &Path, pcap: &Path) -> HashMap<String, (String, String)> {
    use microboxes::{App, RunOptions};
    let out = dir.join("hash.jsonl");
    let app = App::parse(
        &format!(
            "[stack.tcp]\n[[nf]]\nname = \"hash\"\nkind = \"stream_hash\"\noutput = {:?}\n",
            out.display().to_string()
        ),
        "hash.toml",
    )
    .unwrap();
    let report = microboxes::run(&app, RunOptions::new(pcap)).unwrap();
    assert!(report.ok(), "{}", report.to_text());
    std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| {
            let r: Value = serde_json::from_str(l).unwrap();
            let s = |k: &str| r[k].as_str().unwrap().to_string();
            (format!("{} {}", s("client"), s("server")), (s("sha256_toserver"), s("sha256_toclient")))
        })
        .collect()
}

/// tshark's `follow,tcp,raw` of streams `0..n`, in one pass: (client bytes, server bytes).
fn tshark_follow(pcap: &Path, n: usize) -> HashMap<u64, (Vec<u8>, Vec<u8>)> {
    let mut cmd = std::process::Command::new("tshark");
    cmd.arg("-r").arg(pcap).arg("-q");
    for k in 0..n {
        cmd.arg("-z").arg(format!("follow,tcp,raw,{k}"));
    }
    let o = cmd.output().expect("run tshark");
    assert!(o.status.success(), "tshark: {}", String::from_utf8_lossy(&o.stderr));
    let mut out = HashMap::new();
    let mut cur: Option<(u64, Vec<u8>, Vec<u8>)> = None;
    let unhex = |s: &str| -> Vec<u8> {
        (0..s.len() / 2).map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("hex")).collect()
    };
    for line in String::from_utf8_lossy(&o.stdout).lines() {
        if let Some(k) = line.strip_prefix("Filter: tcp.stream eq ") {
            cur = Some((k.trim().parse().unwrap(), Vec::new(), Vec::new()));
        } else if line.starts_with("=====") {
            if let Some((k, c, s)) = cur.take() {
                out.insert(k, (c, s));
            }
        } else if let Some((_, c, s)) = cur.as_mut() {
            if line.starts_with("Node ") || line.starts_with("Follow:") || line.is_empty() {
                continue;
            }
            match line.strip_prefix('\t') {
                Some(h) => s.extend(unhex(h.trim())),
                None => c.extend(unhex(line.trim())),
            }
        }
    }
    assert_eq!(out.len(), n, "tshark followed every stream");
    out
}

#[test]
fn mbox_gen_takes_the_new_options_and_cli_args_reproduce_a_config() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = impaired();
    let args = cfg.cli_args();
    assert!(args.contains(&"--response-size 0~60000".to_string()), "{args:?}");
    assert!(args.contains(&"--loss 0.05".to_string()), "{args:?}");
    let mut argv = vec!["gen".to_string()];
    argv.extend(args.iter().flat_map(|a| a.split(' ').map(str::to_string)));
    argv.extend(["-o".to_string(), "cli.pcap".to_string(), "--manifest".to_string(), "cli.json".to_string()]);
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let o = mbox(dir.path(), &argv);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("lost before the capture point"), "{}", text(&o));
    let s = gen_pcap(&dir.path().join("lib.pcap"), &cfg);
    assert!(read_all(&dir.path().join("cli.pcap")) == read_all(&dir.path().join("lib.pcap")), "same bytes");
    let manifest: Value = serde_json::from_str(&std::fs::read_to_string(dir.path().join("cli.json")).unwrap()).unwrap();
    assert_eq!(manifest["lost"], s.lost);
    assert_eq!(manifest["duplicated"], s.duplicated);
    // The default command line names only flows and seed.
    assert_eq!(GenConfig::default().cli_args(), ["--flows 100", "--seed 1"]);
}

#[test]
fn mbox_gen_refuses_bad_impairment_and_size_options() {
    let dir = tempfile::tempdir().unwrap();
    for (args, want) in [
        (&["--loss", "1.5"][..], "`1.5` is not a probability between 0 and 1"),
        (&["--reorder", "x"], "`x` is not a probability"),
        (&["--response-size", "9~3"], "`9~3`: MIN is larger than MAX"),
        (&["--response-size", "1~a"], "`1~a` is not N, MIN-MAX or MIN~MAX"),
        (&["--response-size", "a-1"], "`a-1` is not N, MIN-MAX or MIN~MAX"),
        (&["--loss", "0.5", "--reorder", "0.4", "--duplicate", "0.2"], "loss + reorder + duplicate must be at most 1"),
    ] {
        let mut argv = vec!["gen", "-o", "x.pcap"];
        argv.extend_from_slice(args);
        let o = mbox(dir.path(), &argv);
        assert!(!o.status.success(), "{args:?} accepted");
        assert!(text(&o).contains(want), "{args:?}: {}", text(&o));
    }
    assert!(!dir.path().join("x.pcap").exists(), "nothing written for a refused configuration");
}
