//! Signature_Match end to end: rules against hand-built TCP captures in stream and packet
//! mode (attacks in a URI and a body alerted once per rule and flow, a pattern split over two
//! segments, out-of-order segments, near misses), a real curl ↔ http.server capture, and
//! the consistency checker.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use microboxes::check::{check, CheckOptions};
use microboxes::{App, RunOptions};
use nfs::signature::AlertRecord;
use stacks::parse::tcp_flags::{ACK, SYN};
use tests::{read_all, repo_file, Capture};

const C: [u8; 4] = [192, 0, 2, 1];
const S: [u8; 4] = [203, 0, 113, 1];

/// This file's shorthands over the shared capture builder.
trait Cap {
    fn handshake(&mut self, port: u16);
    fn c(&mut self, port: u16, off: u32, data: &[u8]);
    fn s(&mut self, port: u16, off: u32, data: &[u8]);
}

impl Cap for Capture {
    fn handshake(&mut self, port: u16) {
        self.tcp((C, port), (S, 80), 1000, 0, SYN, b"");
        self.tcp((S, 80), (C, port), 5000, 1001, SYN | ACK, b"");
        self.tcp((C, port), (S, 80), 1001, 5001, ACK, b"");
    }

    /// Client data at stream offset `off`.
    fn c(&mut self, port: u16, off: u32, data: &[u8]) {
        self.tcp((C, port), (S, 80), 1001 + off, 5001, ACK, data);
    }

    /// Server data at stream offset `off`.
    fn s(&mut self, port: u16, off: u32, data: &[u8]) {
        self.tcp((S, 80), (C, port), 5001 + off, 1001, ACK, data);
    }
}

const RULES: &str = r#"
# URI attack, sent twice in one connection
alert tcp any any -> 203.0.113.0/24 80 (msg:"passwd in URI"; content:"/etc/passwd"; flow:to_server; sid:1; rev:3; classtype:attempted-recon;)
# body attack, case-insensitive
alert tcp any any -> any any (msg:"sqli in body"; content:"union select"; nocase; sid:2;)
# split across two segments
alert tcp any any -> any any (msg:"split"; content:"EVILPAYLOAD"; sid:3;)
# out of order
alert tcp any any -> any any (msg:"ooo"; content:"OUTOFORDER"; sid:4;)
# near misses: one byte off; wrong direction; outside depth
alert tcp any any -> any any (msg:"one byte off"; content:"ATTACKX"; sid:5;)
alert tcp any any <> any any (msg:"secret to client"; content:"SECRET"; flow:to_client; sid:6;)
alert tcp any any -> any any (msg:"deep"; content:"DEEP"; depth:10; sid:7;)
alert tcp any any -> any any (msg:"hello"; content:"HELLO"; depth:10; sid:8;)
# a chain with distance/within
alert tcp any any -> any 80 (msg:"admin"; content:"GET"; depth:3; content:"/admin"; distance:1; within:10; sid:9;)
# header near miss: wrong port
alert tcp any any -> any 8080 (msg:"port"; content:"GET"; sid:10;)
"#;

fn capture(path: &Path) {
    let mut k = Capture::default();
    // A: the URI attack twice (two requests), and SECRET in the response.
    k.handshake(40001);
    let req = b"GET /etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n";
    k.c(40001, 0, req);
    k.s(40001, 0, b"HTTP/1.1 200 OK\r\n\r\nSECRET");
    k.c(40001, req.len() as u32, req);
    // B: the attack in a POST body.
    k.handshake(40002);
    k.c(40002, 0, b"POST /q HTTP/1.1\r\nContent-Length: 25\r\n\r\nid=1 UNION SeLeCt * from t");
    // C: a pattern split across two segments.
    k.handshake(40003);
    k.c(40003, 0, b"xxxEVIL");
    k.c(40003, 7, b"PAYLOADyyy");
    // D: out of order: the second half first.
    k.handshake(40004);
    k.c(40004, 5, b"ORDER!!");
    k.c(40004, 0, b"OUTOF");
    // E: near misses: one byte off, SECRET towards the server.
    k.handshake(40005);
    k.c(40005, 0, b"..ATTACKY.. SECRET ..");
    // F: HELLO inside depth 10, DEEP outside.
    k.handshake(40006);
    k.c(40006, 0, b"HELLO12345DEEP");
    // G: the chain matches; H: /admin too far for `within`.
    k.handshake(40007);
    k.c(40007, 0, b"GET /admin HTTP/1.0\r\n\r\n");
    k.handshake(40008);
    k.c(40008, 0, b"GET /xxxxxxxxxxxxxxxx/admin HTTP/1.0\r\n\r\n");
    k.save(path);
}

fn app_text(rules: &Path, out: &Path, on: &str) -> String {
    format!(
        "[stack.tcp]\n\n[[nf]]\nname = \"ids\"\nkind = \"signature_match\"\nrules = {:?}\noutput = {:?}\non = {on:?}\n",
        rules.display().to_string(),
        out.display().to_string()
    )
}

struct Run {
    alerts: Vec<AlertRecord>,
    counters: std::collections::BTreeMap<String, u64>,
}

fn run(dir: &Path, rules: &str, pcap: &Path, on: &str) -> (App, Run) {
    let rp = dir.join(format!("{on}.rules"));
    std::fs::write(&rp, rules).unwrap();
    let out = dir.join(format!("{on}.alerts.jsonl"));
    let app = App::parse(&app_text(&rp, &out, on), "sig.toml").unwrap_or_else(|e| panic!("{e}"));
    let r = microboxes::run(&app, RunOptions::new(pcap)).unwrap();
    assert!(r.ok(), "{}", r.to_text());
    assert_eq!(r.packets_out, r.packets_in);
    let counters =
        r.actors.iter().find(|a| a.name == "ids").unwrap().counters.iter().map(|(k, v)| (k.clone(), *v)).collect();
    let text = std::fs::read_to_string(&out).unwrap();
    let alerts = text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}"))).collect();
    (app, Run { alerts, counters })
}

fn by_port(alerts: &[AlertRecord]) -> BTreeSet<(u16, u32)> {
    alerts
        .iter()
        .map(|a| {
            let client = if a.direction == "to_server" { a.src_port } else { a.dest_port };
            (client.unwrap(), a.alert.signature_id)
        })
        .collect()
}

fn expected(ooo: bool) -> BTreeSet<(u16, u32)> {
    let mut s: BTreeSet<_> =
        [(40001, 1), (40001, 6), (40002, 2), (40003, 3), (40006, 8), (40007, 9)].into_iter().collect();
    if ooo {
        s.insert((40004, 4));
    }
    s
}

#[test]
fn stream_mode_alerts_once_per_rule_and_flow_and_misses_near_misses() {
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("sig.pcap");
    capture(&pcap);
    let (_, r) = run(dir.path(), RULES, &pcap, "stream");
    assert_eq!(by_port(&r.alerts), expected(true), "{:#?}", r.alerts);
    assert_eq!(r.alerts.len(), expected(true).len(), "each rule at most once per flow: {:#?}", r.alerts);
    let a = r.alerts.iter().find(|a| a.alert.signature_id == 1).unwrap();
    assert_eq!(a.event_type, "alert");
    assert_eq!(
        (a.src_ip.as_deref(), a.src_port, a.dest_ip.as_deref(), a.dest_port),
        (Some("192.0.2.1"), Some(40001), Some("203.0.113.1"), Some(80))
    );
    assert_eq!((a.proto.as_str(), a.direction.as_str()), ("TCP", "to_server"));
    assert_eq!(
        (a.alert.action.as_str(), a.alert.gid, a.alert.rev, a.alert.signature.as_str()),
        ("alert", 1, 3, "passwd in URI")
    );
    assert_eq!(a.alert.category.as_deref(), Some("attempted-recon"));
    assert!(a.flow_id > 0 && a.timestamp.starts_with("2023-11-14T22:13:20"), "{a:?}");
    let s6 = r.alerts.iter().find(|a| a.alert.signature_id == 6).unwrap();
    assert_eq!((s6.direction.as_str(), s6.src_port, s6.dest_port), ("to_client", Some(80), Some(40001)));
    assert_eq!(r.counters["alerts"], expected(true).len() as u64);
    assert_eq!(r.counters["flows_tracked"], 8);
    assert_eq!(r.counters["flows_open"], 0);
    assert_eq!(r.counters["state_cap_hits"], 0);
    assert_eq!(r.counters["stream_read_errors"], 0);
    assert!(
        r.counters["bytes_scanned"] > 200 && r.counters["candidate_matches"] >= r.counters["alerts"],
        "{:?}",
        r.counters
    );
}

#[test]
fn packet_mode_finds_split_patterns_but_not_out_of_order_ones() {
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("sig.pcap");
    capture(&pcap);
    let (_, r) = run(dir.path(), RULES, &pcap, "packets");
    assert_eq!(by_port(&r.alerts), expected(false), "{:#?}", r.alerts);
    assert_eq!(r.alerts.len(), expected(false).len());
    assert_eq!(r.counters["flows_open"], 0);
}

#[test]
fn a_small_position_cap_is_counted_and_still_alerts_on_fresh_matches() {
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("cap.pcap");
    let mut k = Capture::default();
    k.handshake(40100);
    let mut off = 0;
    for _ in 0..50 {
        k.c(40100, off, b"aaaaaaaaaa");
        off += 10;
    }
    k.c(40100, off, b"aab");
    k.save(&pcap);
    let rules = "alert tcp any any -> any any (content:\"a\"; content:\"b\"; distance:0; within:1; sid:1;)\n";
    let rp = dir.path().join("r.rules");
    std::fs::write(&rp, rules).unwrap();
    let out = dir.path().join("a.jsonl");
    let text = app_text(&rp, &out, "stream") + "max_positions = 16\n";
    let app = App::parse(&text, "sig.toml").unwrap();
    let r = microboxes::run(&app, RunOptions::new(&pcap)).unwrap();
    assert!(r.ok(), "{}", r.to_text());
    let c = &r.actors.iter().find(|a| a.name == "ids").unwrap().counters;
    assert!(c["state_cap_hits"] > 0, "{c:?}");
    assert_eq!(c["alerts"], 1, "{c:?}");
    assert_eq!(std::fs::read_to_string(&out).unwrap().lines().count(), 1);
}

#[test]
fn real_capture_alerts_once_per_request() {
    let dir = tempfile::tempdir().unwrap();
    let pcap = repo_file("tests/fixtures/captures/clean_oneshot.pcap");
    // Requests: frames whose bytes hold "GET /" (one request per connection, one segment each).
    let requests = read_all(&pcap).iter().filter(|(_, f)| f.windows(5).any(|w| w == b"GET /")).count();
    assert!(requests >= 2, "{requests}");
    let rules = "alert tcp any any -> any 8000 (msg:\"GET /\"; content:\"GET /\"; depth:5; flow:to_server; sid:100;)\n";
    for on in ["stream", "packets"] {
        let (_, r) = run(dir.path(), rules, &pcap, on);
        assert_eq!(r.alerts.len(), requests, "{on}: {:#?}", r.alerts);
        let flows: BTreeSet<u64> = r.alerts.iter().map(|a| a.flow_id).collect();
        assert_eq!(flows.len(), requests);
        assert!(r.alerts.iter().all(|a| a.dest_port == Some(8000) && a.dest_ip.as_deref() == Some("10.77.0.2")));
    }
}

#[test]
fn keepalive_capture_alerts_once_for_its_one_connection() {
    let dir = tempfile::tempdir().unwrap();
    let pcap = repo_file("tests/fixtures/captures/clean_keepalive.pcap");
    let requests = read_all(&pcap).iter().filter(|(_, f)| f.windows(5).any(|w| w == b"GET /")).count();
    assert!(requests > 1);
    let rules = "alert tcp any any -> any any (content:\"GET /\"; flow:to_server; sid:100;)\n";
    let (_, r) = run(dir.path(), rules, &pcap, "stream");
    assert_eq!(r.alerts.len(), 1, "many requests, one connection: one alert");
    assert!(r.counters["pattern_matches"] >= requests as u64, "{:?}", r.counters);
}

#[test]
fn signature_apps_are_consistent_across_modes() {
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("sig.pcap");
    capture(&pcap);
    for on in ["stream", "packets"] {
        let (app, _) = run(dir.path(), RULES, &pcap, on);
        let rep = check(&app, &pcap, &CheckOptions::default()).unwrap();
        assert!(rep.consistent(), "{on}: {}", rep.to_text());
    }
    let (app, _) = run(
        dir.path(),
        "alert tcp any any -> any any (content:\"GET /\"; sid:1;)\n",
        &repo_file("tests/fixtures/captures/loss_reorder_dup.pcap"),
        "stream",
    );
    let rep =
        check(&app, &repo_file("tests/fixtures/captures/loss_reorder_dup.pcap"), &CheckOptions::default()).unwrap();
    assert!(rep.consistent(), "{}", rep.to_text());
}

#[test]
fn configuration_errors_name_the_file_line_and_option() {
    let dir = tempfile::tempdir().unwrap();
    let rp = dir.path().join("bad.rules");
    std::fs::write(&rp, "alert tcp any any -> any any (content:\"x\"; sid:1;)\nalert tcp any any -> any any (content:\"x\"; pcre:\"/x/\"; sid:2;)\nalert tcp any any -> any any (content:\"x\"; isdataat:1; sid:3;)\n").unwrap();
    let out: PathBuf = dir.path().join("a.jsonl");
    let e = App::parse(&app_text(&rp, &out, "stream"), "sig.toml").unwrap_err().to_string();
    assert!(e.contains("bad.rules:2: unsupported option `pcre`"), "{e}");
    assert!(e.contains("bad.rules:3: unsupported option `isdataat`"), "{e}");
    let e = App::parse(&(app_text(&rp, &out, "stream") + "bogus = 1\n"), "sig.toml").unwrap_err().to_string();
    assert!(e.contains("bogus"), "{e}");
    let e = App::parse(&app_text(&rp, &out, "frames"), "sig.toml").unwrap_err().to_string();
    assert!(e.contains("frames"), "{e}");
}

/// `stop_after_alert`: after a flow's first alert the matcher unsubscribes from the flow, so
/// a later rule of the same flow no longer fires — the same in every mode.
#[test]
fn stop_after_alert_drops_the_flows_subscription() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("r.rules");
    std::fs::write(&rules, "alert tcp any any -> any any (msg:\"first GET\"; content:\"GET /\"; sid:1;)\nalert tcp any any -> any any (msg:\"a POST\"; content:\"POST /\"; sid:2;)\n").unwrap();
    let input = tests::repo_file("tests/fixtures/captures/clean_keepalive.pcap");
    let count = |stop: bool| {
        let out = dir.path().join(format!("a-{stop}.jsonl"));
        let app = microboxes::App::parse(
            &format!(
                "[stack.tcp]\n[[nf]]\nname = \"ids\"\nkind = \"signature_match\"\nrules = {:?}\noutput = {:?}\nstop_after_alert = {stop}\n",
                rules.display().to_string(),
                out.display().to_string()
            ),
            "stop.toml",
        )
        .unwrap();
        let r = microboxes::run(&app, microboxes::RunOptions::new(&input)).unwrap();
        assert!(r.ok(), "{}", r.to_text());
        let check = microboxes::check::check(&app, &input, &microboxes::check::CheckOptions::default()).unwrap();
        assert!(check.consistent(), "{}", check.to_text());
        let ids = r.actors.iter().find(|a| a.name == "ids").unwrap().counters.clone();
        (std::fs::read_to_string(&out).unwrap().lines().count(), ids)
    };
    let (both, _) = count(false);
    let (first_only, counters) = count(true);
    assert_eq!(both, 2, "GET and POST alert without the option");
    assert_eq!(first_only, 1, "only the first alert with stop_after_alert");
    assert!(counters.get("not_delivered_by_flow_subscription").copied().unwrap_or(0) > 0, "{counters:?}");
}

/// `after_dpi = "http"`: the matcher leaves a flow alone until DPI says it is HTTP, then
/// scans what the stream already holds: the same alerts with far fewer events delivered,
/// and the same in every mode.
#[test]
fn after_dpi_inspects_only_http_flows_and_catches_up() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("r.rules");
    std::fs::write(&rules, "alert tcp any any -> any any (msg:\"GET\"; content:\"GET /\"; flow:to_server; sid:1;)\nalert tcp any any -> any any (msg:\"OK\"; content:\"200 OK\"; flow:to_client; sid:2;)\n").unwrap();
    let input = tests::repo_file("tests/fixtures/captures/loss_reorder_dup.pcap");
    let run = |gate: bool| {
        let out = dir.path().join(format!("a-{gate}.jsonl"));
        let text = format!(
            "[stack.tcp]\n[[nf]]\nname = \"dpi\"\nkind = \"dpi\"\n[[nf]]\nname = \"ids\"\nkind = \"signature_match\"\nrules = {:?}\noutput = {:?}\n{}",
            rules.display().to_string(),
            out.display().to_string(),
            if gate { "after_dpi = \"http\"\n" } else { "" }
        );
        let app = microboxes::App::parse(&text, "gate.toml").unwrap();
        let r = microboxes::run(&app, microboxes::RunOptions::new(&input)).unwrap();
        assert!(r.ok(), "{}", r.to_text());
        let check = microboxes::check::check(&app, &input, &microboxes::check::CheckOptions::default()).unwrap();
        assert!(check.consistent(), "{}", check.to_text());
        let ids = r.actors.iter().find(|a| a.name == "ids").unwrap();
        let mut lines: Vec<String> = std::fs::read_to_string(&out).unwrap().lines().map(str::to_string).collect();
        lines.sort();
        (lines, ids.handled_total, ids.counters.clone())
    };
    let (plain, plain_events, _) = run(false);
    let (gated, gated_events, counters) = run(true);
    assert!(!plain.is_empty());
    assert_eq!(gated, plain, "the same alerts");
    assert!(gated_events < plain_events, "fewer events: {gated_events} vs {plain_events}");
    assert!(counters["not_delivered_by_flow_subscription"] > 0, "{counters:?}");
}
