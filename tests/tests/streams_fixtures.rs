//! `mbox streams` against tshark on real captures: curl and Python's HTTP server talking
//! through network namespaces, clean and through a lossy, reordering, duplicating forwarder
//! (scripts/captures/). For every connection the SHA-256 of each direction's reassembled
//! bytes must equal what `tshark -z follow,tcp,raw,N` gave when the fixtures were recorded
//! (stored beside each pcap, so CI needs no tshark).

use std::path::PathBuf;

use microboxes::streams::{streams, StreamsOptions};
use serde_json::Value;
use tests::repo_file;

fn fixtures() -> Vec<(PathBuf, Value)> {
    let dir = repo_file("tests/fixtures/captures");
    let mut out = Vec::new();
    for e in std::fs::read_dir(&dir).expect("fixtures dir") {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        if let Some(stem) = name.strip_suffix(".expected.json") {
            let expected: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
            // Only tshark's answers (other fixtures describe other expectations).
            if expected.get("streams").is_some_and(Value::is_array) {
                out.push((dir.join(format!("{stem}.pcap")), expected));
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn every_stream_matches_tshark() {
    let all = fixtures();
    assert!(all.len() >= 4, "expected the recorded captures, found {}", all.len());
    let mut differences = Vec::new();
    let mut compared = 0;
    for (pcap, expected) in &all {
        let report = streams(pcap, StreamsOptions::default()).unwrap_or_else(|e| panic!("{}: {e}", pcap.display()));
        let want = expected["streams"].as_array().unwrap();
        let name = pcap.file_name().unwrap().to_string_lossy();
        if report.connections.len() != want.len() {
            differences.push(format!(
                "{name}: {} connections, tshark has {} streams",
                report.connections.len(),
                want.len()
            ));
        }
        for w in want {
            let n = w["stream"].as_u64().unwrap();
            compared += 1;
            let Some(c) = report.connections.iter().find(|c| c.index == n) else {
                differences.push(format!("{name} stream {n}: missing"));
                continue;
            };
            let checks = [
                ("client", c.client.to_string(), w["client"].as_str().unwrap().to_string()),
                ("server", c.server.to_string(), w["server"].as_str().unwrap().to_string()),
                ("client bytes", c.to_server.stream_bytes.to_string(), w["client_bytes"].to_string()),
                ("server bytes", c.to_client.stream_bytes.to_string(), w["server_bytes"].to_string()),
                ("client sha256", c.to_server.sha256.clone(), w["client_sha256"].as_str().unwrap().to_string()),
                ("server sha256", c.to_client.sha256.clone(), w["server_sha256"].as_str().unwrap().to_string()),
            ];
            for (what, ours, theirs) in checks {
                if ours != theirs {
                    differences.push(format!("{name} stream {n} ({}): {what}: ours {ours}, tshark {theirs}", c.client));
                }
            }
            assert_eq!(
                c.to_server.gap_bytes + c.to_client.gap_bytes,
                0,
                "{name} stream {n}: no holes in these captures"
            );
        }
    }
    assert!(differences.is_empty(), "{} of {compared} streams differ:\n{}", differences.len(), differences.join("\n"));
}

#[test]
fn impaired_captures_show_retransmissions_and_reordering() {
    let pcap = repo_file("tests/fixtures/captures/loss_reorder_dup.pcap");
    let r = streams(&pcap, StreamsOptions::default()).unwrap();
    let retrans: u64 = r.connections.iter().map(|c| c.to_server.retransmissions + c.to_client.retransmissions).sum();
    let ooo: u64 = r.connections.iter().map(|c| c.to_server.out_of_order + c.to_client.out_of_order).sum();
    assert!(retrans > 10, "retransmissions {retrans}");
    assert!(ooo > 0, "out-of-order segments {ooo}");
    assert!(
        r.connections.iter().all(|c| c.end == "fin"),
        "{:?}",
        r.connections.iter().map(|c| &c.end).collect::<Vec<_>>()
    );
}

#[test]
fn dump_writes_the_reassembled_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let pcap = repo_file("tests/fixtures/captures/clean_oneshot.pcap");
    let r = streams(&pcap, StreamsOptions { dump: Some(dir.path().to_path_buf()), ..Default::default() }).unwrap();
    for c in &r.connections {
        for (side, d) in [("client", &c.to_server), ("server", &c.to_client)] {
            let bytes = std::fs::read(dir.path().join(format!("{}-{side}.bin", c.index))).unwrap();
            assert_eq!(bytes.len() as u64, d.stream_bytes);
            use sha2::Digest;
            let h: String = sha2::Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(h, d.sha256);
        }
    }
}

/// The same comparison through the running system: L2/3 and the TCP monitor on one core, an
/// NF hashing `DATA_RDY` bytes on the other, small rings so the stack runs ahead of the NF.
#[test]
fn the_tcp_monitor_actor_delivers_the_same_bytes_as_tshark() {
    use microboxes::{App, RunOptions};
    let allowed = runtime::sys::allowed_cpus().unwrap();
    let (a, b) = (allowed[0], *allowed.get(1).unwrap_or(&allowed[0]));
    let dir = tempfile::tempdir().unwrap();
    let mut differences = Vec::new();
    for (pcap, expected) in fixtures() {
        let out = dir.path().join("hash.jsonl");
        let app = App::parse(
            &format!(
                "[runtime]\nring_capacity = 16\n[stack.tcp]\n[[nf]]\nname = \"hash\"\nkind = \"stream_hash\"\noutput = {:?}\n",
                out.display().to_string()
            ),
            "hash.toml",
        )
        .unwrap();
        let mut opts = RunOptions::new(&pcap);
        let map = format!("[cores]\nrx = {a}\nl23 = {a}\ntcp = {a}\nhash = {b}\ntx = {b}\n");
        opts.core_map = Some(runtime::coremap::CoreMap::parse(&map, "map").unwrap());
        let report = microboxes::run(&app, opts).unwrap();
        assert!(report.ok(), "{}", report.to_text());
        let recs: Vec<Value> =
            std::fs::read_to_string(&out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let name = pcap.file_name().unwrap().to_string_lossy().to_string();
        for w in expected["streams"].as_array().unwrap() {
            let Some(r) = recs.iter().find(|r| r["client"] == w["client"] && r["server"] == w["server"]) else {
                differences.push(format!("{name} stream {}: no record", w["stream"]));
                continue;
            };
            if r["sha256_toserver"] != w["client_sha256"] || r["sha256_toclient"] != w["server_sha256"] {
                differences.push(format!(
                    "{name} stream {}: hashes differ ({} / {} bytes, tshark {} / {})",
                    w["stream"], r["bytes_toserver"], r["bytes_toclient"], w["client_bytes"], w["server_bytes"]
                ));
            }
        }
        let tcp = report.actors.iter().find(|x| x.name == "tcp").unwrap();
        assert!(tcp.counters["reassembly_memory_high_water"] > 0);
    }
    assert!(differences.is_empty(), "{}", differences.join("\n"));
}
