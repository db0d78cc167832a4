//! The README's IDS example on `mbox gen --attacks` traffic: `apps/ids.toml` (the
//! repository's file and rules, unchanged) writes one alert per planted attack, on the flow
//! and with the sid the manifest names, and none elsewhere.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;
use tests::{mbox, repo_file, text};

/// (client port, sid) of every carrier in a `mbox gen --manifest` file.
fn manifest_attacks(p: &Path) -> BTreeSet<(u64, u64)> {
    let m: Value = serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
    m["flows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f.get("attack").is_some())
        .map(|f| {
            let port = f["client"].as_str().unwrap().rsplit(':').next().unwrap().parse().unwrap();
            (port, f["attack"]["sid"].as_u64().unwrap())
        })
        .collect()
}

#[test]
fn the_ids_example_alerts_on_every_planted_attack() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // The example's layout: apps/ids.toml and apps/ids.rules, run from the directory above.
    std::fs::create_dir(d.join("apps")).unwrap();
    for f in ["ids.toml", "ids.rules"] {
        std::fs::copy(repo_file(&format!("apps/{f}")), d.join("apps").join(f)).unwrap();
    }
    let o =
        mbox(d, &["gen", "--flows", "500", "--seed", "3", "--attacks", "8", "-o", "t.pcap", "--manifest", "t.json"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("planted 8 of 8 attacks"), "{}", text(&o));
    let want = manifest_attacks(&d.join("t.json"));
    assert_eq!(want.len(), 8);
    assert_eq!(want.iter().map(|w| w.1).collect::<BTreeSet<_>>(), (1_000_001..=1_000_004).collect());

    let o = mbox(d, &["run", "apps/ids.toml", "--input", "t.pcap"]);
    assert!(o.status.success(), "{}", text(&o));
    // Outputs land next to the app file or in the current directory.
    let alerts = [d.join("alerts.jsonl"), d.join("apps/alerts.jsonl")]
        .into_iter()
        .find(|p| p.exists())
        .expect("alerts.jsonl written");
    let got: BTreeSet<(u64, u64)> = std::fs::read_to_string(alerts)
        .unwrap()
        .lines()
        .map(|l| {
            let a: Value = serde_json::from_str(l).unwrap();
            let client = if a["direction"] == "to_server" { &a["src_port"] } else { &a["dest_port"] };
            (client.as_u64().unwrap(), a["alert"]["signature_id"].as_u64().unwrap())
        })
        .collect();
    assert_eq!(got, want);
}
