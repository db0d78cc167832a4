//! Enforced verdicts on the real HTTP-attack capture (`ids_http_attacks.pcap`, see
//! `ids_real.rs`): `drop`/`reject` rules of `signature_match` drop the packet that completes
//! the match and every later packet of its flow (stream and packet mode), the other flows
//! reach the output capture intact, the matches are written with `alert.action`
//! `"blocked"`, `passive = true` reports them as `"allowed"` and counts `would_drop`, and the
//! checker finds every packet's fate the same in modes a–d.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use etherparse::{SlicedPacket, TransportSlice};
use microboxes::check::{check, CheckOptions};
use microboxes::{App, Mode, RunOptions, RunReport};
use nfs::output::rfc3339;
use nfs::signature::AlertRecord;
use tests::{read_all, repo_file};

const ATTACKS: &str = "tests/fixtures/captures/ids_http_attacks.pcap";

/// The fixture's rules with `passwd` as `drop` and the POST-body `UNION SELECT` as `reject`.
fn ips_rules(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(repo_file("tests/fixtures/captures/ids.rules")).unwrap();
    let text: Vec<String> = text
        .lines()
        .map(|l| {
            if l.contains("sid:1001;") {
                l.replacen("alert", "drop", 1)
            } else if l.contains("sid:1004;") {
                l.replacen("alert", "reject", 1)
            } else {
                l.to_string()
            }
        })
        .collect();
    let p = dir.join("ips.rules");
    std::fs::write(&p, text.join("\n") + "\n").unwrap();
    p
}

fn app(rules: &Path, out: &Path, on: &str, extra: &str) -> App {
    let text = format!(
        "[stack.tcp]\n\n[[nf]]\nname = \"ids\"\nkind = \"signature_match\"\nrules = {:?}\noutput = {:?}\non = {on:?}\n{extra}",
        rules.display().to_string(),
        out.display().to_string()
    );
    App::parse(&text, "ips.toml").unwrap_or_else(|e| panic!("{e}"))
}

struct Run {
    app: App,
    report: RunReport,
    alerts: Vec<AlertRecord>,
    lines: Vec<String>,
    pcap_out: PathBuf,
}

fn run(dir: &Path, rules: &Path, tag: &str, on: &str, extra: &str) -> Run {
    let out = dir.join(format!("{tag}.alerts.jsonl"));
    let pcap_out = dir.join(format!("{tag}.out.pcap"));
    let app = app(rules, &out, on, extra);
    let mut opts = RunOptions::new(repo_file(ATTACKS));
    opts.output = Some(pcap_out.clone());
    let report = microboxes::run(&app, opts).unwrap();
    assert!(report.ok(), "{}", report.to_text());
    let text = std::fs::read_to_string(&out).unwrap();
    let lines: Vec<String> = text.lines().map(str::to_string).collect();
    let alerts = lines.iter().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}"))).collect();
    Run { app, report, alerts, lines, pcap_out }
}

/// The client port of a frame of the capture (0 for frames that are not TCP to/from 8000).
fn client_port(f: &[u8]) -> u16 {
    let Ok(p) = SlicedPacket::from_ethernet(f) else { return 0 };
    match p.transport {
        Some(TransportSlice::Tcp(t)) if t.destination_port() == 8000 => t.source_port(),
        Some(TransportSlice::Tcp(t)) if t.source_port() == 8000 => t.destination_port(),
        _ => 0,
    }
}

fn by_port(frames: Vec<(u64, Vec<u8>)>) -> BTreeMap<u16, Vec<(u64, Vec<u8>)>> {
    let mut m: BTreeMap<u16, Vec<(u64, Vec<u8>)>> = BTreeMap::new();
    for f in frames {
        m.entry(client_port(&f.1)).or_default().push(f);
    }
    m
}

fn counter(r: &RunReport, name: &str) -> u64 {
    r.actors.iter().find(|a| a.name == "ids").unwrap().counters[name]
}

/// Every blocked flow lost exactly the packet that completed the match (the client frame
/// with the alert's time) and everything after it; every other flow is intact. A `reject`
/// flow's capture ends with the two TCP resets TX made from that packet (written to the `-o`
/// capture, as nothing can send them offline).
fn assert_blocked_flows_cut(r: &Run) {
    let blocked: BTreeMap<u16, &AlertRecord> =
        r.alerts.iter().filter(|a| a.alert.action == "blocked").map(|a| (a.src_port.unwrap(), a)).collect();
    assert!(blocked.len() >= 2, "{:?}", r.alerts);
    let input = by_port(read_all(&repo_file(ATTACKS)));
    let mut output = by_port(read_all(&r.pcap_out));
    let (mut dropped, mut resets) = (0, 0);
    for (port, frames) in &input {
        let got = output.remove(port).unwrap_or_default();
        let want: Vec<(u64, Vec<u8>)> = match blocked.get(port) {
            Some(a) => {
                let at = frames
                    .iter()
                    .position(|(ts, f)| rfc3339(*ts) == a.timestamp && client_port(f) == a.src_port.unwrap())
                    .unwrap_or_else(|| panic!("no frame of port {port} at {}", a.timestamp));
                let mut w = frames[..at].to_vec();
                dropped += frames.len() - at;
                if a.alert.signature_id == 1004 {
                    let rst = runtime::ports::Resets::for_frame(&frames[at].1).unwrap();
                    w.extend([(frames[at].0, rst.forward), (frames[at].0, rst.backward)]);
                    resets += 2;
                }
                w
            }
            None => frames.clone(),
        };
        assert!(got == want, "port {port}: {} frames out, {} expected", got.len(), want.len());
    }
    let rs = &r.report.resets;
    assert_eq!((rs.rejects * 2, rs.rst_captured, rs.rst_sent, rs.rst_not_sent), (resets, resets, 0, 0), "{rs:?}");
    assert!(output.is_empty(), "frames of unknown flows in the output");
    assert_eq!(r.report.packets_in - r.report.packets_out, dropped as u64);
    assert_eq!(counter(&r.report, "packets_dropped"), dropped as u64);
}

#[test]
fn drop_and_reject_rules_cut_their_flows_at_the_matching_packet_in_every_mode() {
    let dir = tempfile::tempdir().unwrap();
    let rules = ips_rules(dir.path());
    for on in ["stream", "packets"] {
        let r = run(dir.path(), &rules, on, on, "");
        for a in &r.alerts {
            let want = match a.alert.signature_id {
                1001 | 1004 => "blocked",
                _ => "alert",
            };
            assert_eq!(a.alert.action, want, "{on}: {a:?}");
        }
        assert_blocked_flows_cut(&r);
        let sids: BTreeSet<u32> =
            r.alerts.iter().filter(|a| a.alert.action == "blocked").map(|a| a.alert.signature_id).collect();
        assert_eq!(sids, BTreeSet::from([1001, 1004]), "{on}");
        let blocked = |sid| r.alerts.iter().filter(|a| a.alert.signature_id == sid).count() as u64;
        assert_eq!(counter(&r.report, "drop_matches"), blocked(1001), "{on}");
        assert_eq!(counter(&r.report, "reject_matches"), blocked(1004), "{on}");
        assert_eq!(counter(&r.report, "would_drop"), 0);
        assert_eq!(counter(&r.report, "flows_blocked"), blocked(1001) + blocked(1004), "{on}");
        let drops = &r.report.actors.iter().find(|a| a.name == "ids").unwrap().drops;
        let reasons: BTreeSet<&str> = drops.keys().map(String::as_str).collect();
        assert_eq!(
            reasons,
            BTreeSet::from([
                "drop sid 1001: passwd file in request",
                "reject sid 1004: UNION SELECT with a space (POST body)"
            ]),
            "{on}: {drops:?}"
        );
        let text = r.report.to_text();
        assert!(text.contains("drop sid 1001: passwd file in request"), "{text}");
        // Every packet's fate (and every observation, every alert line) is the same in
        // modes b, c and d as in mode a.
        let opts = CheckOptions { modes: vec![Mode::B, Mode::C, Mode::D], ..CheckOptions::default() };
        let rep = check(&r.app, &repo_file(ATTACKS), &opts).unwrap();
        assert!(rep.consistent(), "{on}: {}", rep.to_text());
        for (m, c) in &rep.modes {
            let c = c.as_ref().unwrap();
            assert!(c.packets > 0, "mode {m} compared nothing: {c:?}");
        }
    }
}

/// Offline without `-o` nothing can carry a `reject`'s resets: they are counted as not sent,
/// and the summary says so.
#[test]
fn reject_resets_without_a_capture_are_counted_as_not_sent() {
    let dir = tempfile::tempdir().unwrap();
    let rules = ips_rules(dir.path());
    let app = app(&rules, &dir.path().join("a.jsonl"), "stream", "");
    let report = microboxes::run(&app, RunOptions::new(repo_file(ATTACKS))).unwrap();
    let rs = &report.resets;
    assert!(rs.rejects > 0, "{rs:?}");
    assert_eq!((rs.rst_sent, rs.rst_captured, rs.rst_not_sent), (0, 0, 2 * rs.rejects), "{rs:?}");
    let text = report.to_text();
    assert!(
        text.contains(&format!("{} not sent (no interface can send them and there is no -o capture)", 2 * rs.rejects)),
        "{text}"
    );
    println!("{}", text.lines().find(|l| l.contains("reject:")).unwrap());
}

/// `passive = true`: nothing is dropped; the drop/reject matches are written as `"allowed"`
/// (Suricata's word for a drop rule that did not drop) and counted as `would_drop`; the
/// lines are otherwise those of the same rules as plain `alert` rules, byte for byte.
#[test]
fn passive_mode_reports_would_drop_and_drops_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let rules = ips_rules(dir.path());
    let alert_rules = repo_file("tests/fixtures/captures/ids.rules");
    let passive = run(dir.path(), &rules, "passive", "stream", "passive = true\n");
    let plain = run(dir.path(), &alert_rules, "plain", "stream", "");
    assert_eq!(passive.report.packets_out, passive.report.packets_in);
    assert_eq!(read_all(&passive.pcap_out), read_all(&repo_file(ATTACKS)));
    let would: Vec<&AlertRecord> = passive.alerts.iter().filter(|a| a.alert.action == "allowed").collect();
    assert!(!would.is_empty());
    assert!(would.iter().all(|a| [1001, 1004].contains(&a.alert.signature_id)));
    assert_eq!(counter(&passive.report, "would_drop"), would.len() as u64);
    assert_eq!(counter(&passive.report, "packets_dropped"), 0);
    let as_alerts: Vec<String> =
        passive.lines.iter().map(|l| l.replace("\"action\":\"allowed\"", "\"action\":\"alert\"")).collect();
    assert_eq!(as_alerts, plain.lines);
}

/// Two TCP connections to port 80 and one to 443: the stateless rule drops only what the
/// server of port 80 sends, yet from the first of those packets on, the client's packets of
/// that flow go too (a drop stops the flow); the 443 flow is intact.
fn fw_capture(path: &Path) -> Vec<Vec<u8>> {
    use stacks::parse::tcp_flags::{ACK, SYN};
    const C: [u8; 4] = [192, 0, 2, 1];
    const S: [u8; 4] = [203, 0, 113, 1];
    let mut k = tests::Capture::default();
    for (cport, sport) in [(40001, 80), (40002, 443)] {
        k.tcp((C, cport), (S, sport), 1000, 0, SYN, b"");
        k.tcp((S, sport), (C, cport), 5000, 1001, SYN | ACK, b"");
        k.tcp((C, cport), (S, sport), 1001, 5001, ACK, b"");
        k.tcp((C, cport), (S, sport), 1001, 5001, ACK, b"GET / HTTP/1.0\r\n\r\n");
    }
    k.save(path);
    k.frames.clone()
}

fn fw_app(extra: &str) -> App {
    let text = format!(
        "[[nf]]\nname = \"fw\"\nkind = \"firewall\"\nstateful = false\n{extra}rules = [{{ action = \"drop\", proto = \"tcp\", src_port = 80, name = \"from web\" }}]\n"
    );
    App::parse(&text, "fw.toml").unwrap_or_else(|e| panic!("{e}"))
}

fn fw_counter(r: &RunReport, name: &str) -> u64 {
    r.actors.iter().find(|a| a.name == "fw").unwrap().counters[name]
}

#[test]
fn a_stateless_firewall_drop_stops_the_flow_and_passive_drops_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("fw.pcap");
    let frames = fw_capture(&input);
    let out = dir.path().join("fw.out.pcap");
    let mut opts = RunOptions::new(&input);
    opts.output = Some(out.clone());
    let r = microboxes::run(&fw_app(""), opts).unwrap();
    assert!(r.ok(), "{}", r.to_text());
    let got: Vec<Vec<u8>> = read_all(&out).into_iter().map(|(_, f)| f).collect();
    // Port 80: the SYN passes; the SYN-ACK is dropped by the rule, and the client's ACK and
    // request after it because the flow is stopped. Port 443: all four.
    assert_eq!(got, [&frames[..1], &frames[4..]].concat());
    let drops = &r.actors.iter().find(|a| a.name == "fw").unwrap().drops;
    assert_eq!(drops.get("rule 1: from web"), Some(&3), "{drops:?}");
    assert_eq!(fw_counter(&r, "flows_dropped"), 1);
    let opts = CheckOptions { modes: vec![Mode::B, Mode::C, Mode::D], ..CheckOptions::default() };
    let rep = check(&fw_app(""), &input, &opts).unwrap();
    assert!(rep.consistent(), "{}", rep.to_text());

    let mut opts = RunOptions::new(&input);
    opts.output = Some(out.clone());
    let r = microboxes::run(&fw_app("passive = true\n"), opts).unwrap();
    assert!(r.ok(), "{}", r.to_text());
    assert_eq!(read_all(&out).into_iter().map(|(_, f)| f).collect::<Vec<_>>(), frames);
    assert_eq!(fw_counter(&r, "would_drop"), 3);
    assert_eq!(r.packets_out, r.packets_in);
}
