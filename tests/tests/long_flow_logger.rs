//! Flow_Stats' `EVENT/LONG_FLOW` and the Logger NF end to end: generated HTTP + DNS-like
//! traffic; the expected flags come from replaying the capture per flow in the test (the
//! running average frame size, as Flow_Stats computes it), cross-checked against the
//! generator's ground truth; the filtered log against an unfiltered one; and the
//! consistency checker.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::Path;

use microboxes::check::{check, CheckOptions};
use microboxes::{App, RunOptions};
use nfs::logger::LogRecord;
use runtime::ports::gen::{GenConfig, GenSummary};
use runtime::ports::LinkType;
use stacks::parse::{parse, Transport};
use tests::*;

const N: u64 = 700;
const MIN_PACKETS: u64 = 4;

fn app_text(dir: &Path, tcp: bool, threshold: u64) -> String {
    let p = |n: &str| dir.join(n).display().to_string();
    format!(
        "{tcp}[[nf]]\nname = \"stats\"\nkind = \"flow_stats\"\noutput = {:?}\nlong_flow_avg_bytes = {threshold}\n\n\
         [[nf]]\nname = \"log_all\"\nkind = \"logger\"\noutput = {:?}\n\n\
         [[nf]]\nname = \"log_long\"\nkind = \"logger\"\noutput = {:?}\nonly_long_flows = true\n",
        p("flows.jsonl"),
        p("all.jsonl"),
        p("long.jsonl"),
        tcp = if tcp { "[stack.tcp]\n" } else { "" },
    )
}

fn gen(dir: &Path) -> (std::path::PathBuf, GenSummary) {
    let input = dir.join("t.pcap");
    let truth = gen_pcap(&input, &GenConfig { flows: 200, seed: 23, udp_fraction: 0.3, ..GenConfig::default() });
    (input, truth)
}

/// Per generated flow (by id): (flow_start, Some((seq, average)) of the packet after which
/// the running average first reached `n` with at least MIN_PACKETS packets).
fn expected_flags(input: &Path, truth: &GenSummary, n: u64) -> BTreeMap<u64, (u64, Option<(u64, u64)>)> {
    let by_client: HashMap<SocketAddr, u64> = truth.flows.iter().map(|f| (f.client, f.id)).collect();
    // flow id -> (flow_start, packets, bytes, flag)
    type Acc = (u64, u64, u64, Option<(u64, u64)>);
    let mut acc: HashMap<u64, Acc> = HashMap::new();
    for (i, (_, frame)) in read_all(input).iter().enumerate() {
        let seq = i as u64 + 1;
        let p = parse(LinkType::Ethernet, frame).expect("generated frames parse");
        let ip = p.ip.expect("IP");
        let (sp, dp) = match p.transport {
            Transport::Tcp(t) => (t.src_port, t.dst_port),
            Transport::Udp(u) => (u.src_port, u.dst_port),
            t => panic!("unexpected transport {t:?}"),
        };
        let id = by_client
            .get(&SocketAddr::new(ip.src, sp))
            .or_else(|| by_client.get(&SocketAddr::new(ip.dst, dp)))
            .copied()
            .expect("packet of a generated flow");
        let a = acc.entry(id).or_insert((seq, 0, 0, None));
        a.1 += 1;
        a.2 += frame.len() as u64;
        let avg = a.2 / a.1;
        if a.3.is_none() && a.1 >= MIN_PACKETS && avg >= n {
            a.3 = Some((seq, avg));
        }
    }
    // The replay agrees with the generator's ground truth.
    for f in &truth.flows {
        let a = acc[&f.id];
        assert_eq!(a.1, f.pkts_toserver + f.pkts_toclient, "{f:?}");
        assert_eq!(a.2, f.bytes_toserver + f.bytes_toclient, "{f:?}");
    }
    acc.into_iter().map(|(id, a)| (id, (a.0, a.3))).collect()
}

fn read_log(path: &Path) -> Vec<LogRecord> {
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn counters(r: &microboxes::RunReport, nf: &str) -> HashMap<String, u64> {
    r.actors.iter().find(|a| a.name == nf).unwrap().counters.iter().map(|(k, v)| (k.clone(), *v)).collect()
}

#[test]
fn long_flows_are_flagged_once_and_only_their_events_are_logged() {
    let dir = tempfile::tempdir().unwrap();
    let (input, truth) = gen(dir.path());
    let expect = expected_flags(&input, &truth, N);
    let flagged: BTreeMap<u64, (u64, u64)> = expect.values().filter_map(|(start, f)| f.map(|f| (*start, f))).collect();
    // The traffic has both kinds, and the flagged ones are the HTTP flows with big responses.
    let udp_ids: Vec<u64> = truth.flows.iter().filter(|f| f.proto == "udp").map(|f| f.id).collect();
    assert!(udp_ids.len() > 30);
    for id in &udp_ids {
        assert!(expect[id].1.is_none(), "DNS-like flow {id} never reaches {N}");
    }
    assert!(flagged.len() > 40 && flagged.len() < truth.flows.len() - udp_ids.len(), "{} flagged", flagged.len());
    // Every flow whose final average is well above N passed N at some point.
    for f in &truth.flows {
        let pkts = f.pkts_toserver + f.pkts_toclient;
        if pkts >= MIN_PACKETS && (f.bytes_toserver + f.bytes_toclient) / pkts >= N + 50 {
            assert!(expect[&f.id].1.is_some(), "{f:?}");
        }
    }

    for tcp in [false, true] {
        let app = App::parse(&app_text(dir.path(), tcp, N), "long.toml").unwrap();
        let r = microboxes::run(&app, RunOptions::new(&input)).unwrap();
        assert!(r.ok(), "{}", r.to_text());
        assert_eq!(r.packets_out, r.packets_in);
        let stats = counters(&r, "stats");
        assert_eq!(stats["long_flows"], flagged.len() as u64, "tcp={tcp}");

        // log_all logs every packet; log_long the flags, then the flagged flows' later
        // packets, then their ends.
        let all = read_log(&dir.path().join("all.jsonl"));
        let long = read_log(&dir.path().join("long.jsonl"));
        assert_eq!(all.len() as u64, r.packets_in, "tcp={tcp}");
        assert!(all.iter().all(|l| l.event.starts_with("PKT") && l.len.is_some() && l.src_port.is_some()));
        let flags: BTreeMap<u64, (u64, u64)> = long
            .iter()
            .filter(|l| l.event == "EVENT/LONG_FLOW")
            .map(|l| {
                assert!(l.len.is_none() && l.src_ip.is_none(), "{l:?}");
                (l.flow_id, (l.seq, l.aux))
            })
            .collect();
        assert_eq!(flags.len(), long.iter().filter(|l| l.event == "EVENT/LONG_FLOW").count(), "one flag per flow");
        assert_eq!(flags, flagged, "tcp={tcp}: flags at the expected packet, with the average");

        let expected_pkts: Vec<&LogRecord> =
            all.iter().filter(|l| flagged.get(&l.flow_id).is_some_and(|(seq, _)| l.seq > *seq)).collect();
        let got_pkts: Vec<&LogRecord> = long.iter().filter(|l| l.event.starts_with("PKT")).collect();
        assert_eq!(got_pkts, expected_pkts, "tcp={tcp}");
        let ends: Vec<&LogRecord> = long.iter().filter(|l| l.event == "FLOW").collect();
        assert_eq!(ends.len(), flagged.len(), "tcp={tcp}: each flagged flow's end");
        assert!(ends.iter().all(|l| flagged.contains_key(&l.flow_id)));
        assert_eq!(long.len(), flags.len() + got_pkts.len() + ends.len());

        let c = counters(&r, "log_long");
        assert_eq!(c["logged"], long.len() as u64);
        // Skipped: every other packet, plus the flows' FLOW start and end events.
        assert_eq!(
            c["logged"] + c["skipped_not_long"],
            r.packets_in + flagged.len() as u64 + 2 * truth.flows.len() as u64,
            "{c:?}"
        );
        assert_eq!(counters(&r, "log_all")["skipped_not_long"], 0);
    }
}

#[test]
fn long_flow_app_is_consistent_across_modes() {
    let dir = tempfile::tempdir().unwrap();
    let (input, _) = gen(dir.path());
    for tcp in [false, true] {
        let app = App::parse(&app_text(dir.path(), tcp, N), "long.toml").unwrap();
        let r = check(&app, &input, &CheckOptions::default()).unwrap();
        assert!(r.consistent(), "tcp={tcp}: {}", r.to_text());
    }
}

#[test]
fn example_app_runs() {
    let dir = tempfile::tempdir().unwrap();
    let (input, truth) = gen(dir.path());
    let path = repo_file("apps/logger_long_flows.toml");
    let mut app = App::parse(&std::fs::read_to_string(&path).unwrap(), "logger_long_flows.toml").unwrap();
    for nf in &mut app.nfs {
        let name = nf.common.name.clone();
        nf.config.set_output(dir.path().join(format!("{name}.jsonl")));
    }
    let r = microboxes::run(&app, RunOptions::new(&input)).unwrap();
    assert!(r.ok(), "{}", r.to_text());
    let expect = expected_flags(&input, &truth, 800);
    let n = expect.values().filter(|e| e.1.is_some()).count() as u64;
    assert!(n > 0);
    assert_eq!(counters(&r, "stats")["long_flows"], n);
    let log = read_log(&dir.path().join("log.jsonl"));
    assert_eq!(log.iter().filter(|l| l.event == "EVENT/LONG_FLOW").count() as u64, n);
}

#[test]
fn options_are_strict_and_long_flow_needs_a_publisher() {
    let bad = App::parse("[[nf]]\nname = \"l\"\nkind = \"logger\"\noutput = \"x\"\nonly_long = true\n", "bad.toml");
    assert!(bad.unwrap_err().to_string().contains("only_long"));
    let bad =
        App::parse("[[nf]]\nname = \"s\"\nkind = \"flow_stats\"\noutput = \"x\"\nlong_flow_avg = 3\n", "bad.toml");
    assert!(bad.is_err());
    // No flow_stats before it: EVENT/LONG_FLOW is unknown.
    let e = App::parse("[[nf]]\nname = \"l\"\nkind = \"logger\"\noutput = \"x\"\nonly_long_flows = true\n", "bad.toml")
        .unwrap_err()
        .to_string();
    assert!(e.contains("only_long_flows needs"), "{e}");
    // A flow_stats that does not publish it: the controller rejects the subscription.
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[[nf]]\nname = \"s\"\nkind = \"flow_stats\"\noutput = {:?}\n\n[[nf]]\nname = \"l\"\nkind = \"logger\"\noutput = {:?}\nonly_long_flows = true\n",
        dir.path().join("f").display().to_string(),
        dir.path().join("l").display().to_string()
    );
    let (input, _) = gen(dir.path());
    let res = App::parse(&text, "nopub.toml")
        .map_err(|e| e.to_string())
        .and_then(|app| microboxes::run(&app, RunOptions::new(&input)).map(|_| ()).map_err(|e| e.to_string()));
    let e = res.unwrap_err();
    assert!(e.contains("LONG_FLOW"), "{e}");
}
