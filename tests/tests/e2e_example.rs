//! The example app end to end through the `mbox` command: generated traffic in, a pcap and
//! flow records out, and the books balance.

use std::collections::HashMap;

use runtime::ports::gen::GenConfig;
use serde_json::Value;
use tests::*;

#[test]
fn example_app_on_2000_generated_flows() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("t.pcap");
    let output = dir.path().join("o.pcap");
    let stats = dir.path().join("stats.json");
    // The same traffic as `mbox gen --flows 2000 --seed 7`.
    let truth = gen_pcap(&input, &GenConfig { flows: 2000, seed: 7, ..GenConfig::default() });
    let app = example_app(dir.path());

    let o = mbox(
        dir.path(),
        &[
            "run",
            app.to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
            "--output",
            output.to_str().unwrap(),
            "--stats-json",
            stats.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "mbox run failed:\n{}", text(&o));
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&stats).unwrap()).unwrap();
    let n = |k: &str| report[k].as_u64().unwrap_or_else(|| panic!("{k} in {report}"));

    // Books: every packet read is emitted or dropped with a reason; the pool balances.
    assert_eq!(n("packets_in"), truth.packets);
    assert_eq!(n("packets_out") + n("packets_dropped"), n("packets_in"));
    assert_eq!(report["pool_balanced"], Value::Bool(true), "{}", report["pool"]);
    assert_eq!(report["pool"]["allocated"], report["pool"]["freed"]);
    assert!(report["errors"].as_array().unwrap().is_empty(), "{}", report["errors"]);

    // The output capture holds exactly the emitted packets.
    let out = read_all(&output);
    assert_eq!(out.len() as u64, n("packets_out"));
    assert_eq!(out.len() as u64, n("packets_written"));
    if have_tshark() {
        let t = std::process::Command::new("tshark")
            .args(["-r", output.to_str().unwrap(), "-T", "fields", "-e", "frame.number"])
            .output()
            .unwrap();
        assert!(t.status.success(), "tshark could not read the output: {}", String::from_utf8_lossy(&t.stderr));
        assert_eq!(
            String::from_utf8_lossy(&t.stdout).lines().count() as u64,
            n("packets_out"),
            "tshark's packet count"
        );
    } else {
        tests::skip("e2e_example: reading the output with tshark", "tshark is not installed (CI installs it)");
    }

    // Flow records match the generated flows, except those the firewall dropped.
    let recs: Vec<Value> = std::fs::read_to_string(dir.path().join("flows.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let key = |ip: &Value, port: &Value, dip: &Value, dport: &Value| {
        format!("{}:{}>{}:{}", ip.as_str().unwrap(), port, dip.as_str().unwrap(), dport)
    };
    let by_tuple: HashMap<String, &Value> =
        recs.iter().map(|r| (key(&r["src_ip"], &r["src_port"], &r["dest_ip"], &r["dest_port"]), r)).collect();
    assert_eq!(by_tuple.len(), recs.len(), "one record per flow");
    let mut expected_records = 0;
    let mut expected_drops = 0;
    for f in &truth.flows {
        let k = key(
            &Value::from(f.client.ip().to_string()),
            &Value::from(f.client.port()),
            &Value::from(f.server.ip().to_string()),
            &Value::from(f.server.port()),
        );
        let dropped = f.proto == "udp" && f.server.port() == 53 && f.client.ip().to_string().starts_with("198.51.100.");
        if dropped {
            expected_drops += f.pkts_toserver + f.pkts_toclient;
            assert!(!by_tuple.contains_key(&k), "flow {k} should have been dropped by the firewall");
            continue;
        }
        expected_records += 1;
        let r = by_tuple.get(&k).unwrap_or_else(|| panic!("no record for generated flow {k}"));
        let fl = &r["flow"];
        assert_eq!(fl["pkts_toserver"].as_u64(), Some(f.pkts_toserver), "{k}");
        assert_eq!(fl["pkts_toclient"].as_u64(), Some(f.pkts_toclient), "{k}");
        assert_eq!(fl["bytes_toserver"].as_u64(), Some(f.bytes_toserver), "{k}");
        assert_eq!(fl["bytes_toclient"].as_u64(), Some(f.bytes_toclient), "{k}");
        assert_eq!(r["proto"].as_str(), Some(if f.proto == "tcp" { "TCP" } else { "UDP" }), "{k}");
        let want = match f.teardown.as_str() {
            "fin" => "fin",
            "rst" => "rst",
            _ => "shutdown",
        };
        assert_eq!(fl["reason"].as_str(), Some(want), "{k}: teardown {}", f.teardown);
    }
    assert!(expected_drops > 0, "the example should drop something");
    assert_eq!(recs.len(), expected_records);
    assert_eq!(n("packets_dropped"), expected_drops);
    let drops = report["dropped"].as_array().unwrap();
    assert_eq!(drops.len(), 1, "{drops:?}");
    assert_eq!(drops[0]["actor"], "fw");
    assert!(drops[0]["reason"].as_str().unwrap().starts_with("rule 1"), "{drops:?}");

    // The human summary says the same.
    let summary = String::from_utf8_lossy(&o.stdout);
    assert!(
        summary.contains(&format!(
            "{} in, {} out, {} dropped",
            n("packets_in"),
            n("packets_out"),
            n("packets_dropped")
        )),
        "{summary}"
    );
    assert!(summary.contains("balanced"), "{summary}");
}
