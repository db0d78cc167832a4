//! The trace recorder end to end: a traced run of the example app, exported as Chrome Trace
//! Event JSON, checked against the format and against what the run must have done.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use microboxes::trace::export::{chrome_trace, read_chrome_trace, render_spans, write_chrome_trace};
use microboxes::{App, RunOptions, RunReport};
use runtime::ports::gen::GenConfig;
use runtime::trace::{SpanKind, TraceData};
use serde_json::Value;
use tests::*;

/// Runs the example app (firewall + flow_stats) over `flows` generated flows, traced.
fn traced_run(dir: &Path, flows: usize, tag: &str) -> (TraceData, RunReport) {
    let input = dir.join("t.pcap");
    let truth = gen_pcap(&input, &GenConfig { flows, seed: 7, ..GenConfig::default() });
    let app = App::load(&example_app(dir)).expect("example app");
    let mut opts = RunOptions::new(&input);
    opts.output = Some(dir.join("o.pcap"));
    opts.prefix = Some(format!("trace-{tag}-{}", std::process::id()));
    opts.trace = Some(1_000_000);
    let mut report = microboxes::run(&app, opts).expect("run");
    assert!(report.ok(), "{}", report.to_text());
    assert_eq!(report.packets_in, truth.packets);
    let data = report.trace.take().expect("a trace was asked for");
    (data, report)
}

fn events(v: &Value) -> &Vec<Value> {
    v["traceEvents"].as_array().expect("traceEvents array")
}

#[test]
fn chrome_trace_follows_the_trace_event_format() {
    let dir = tempfile::tempdir().unwrap();
    let (data, _) = traced_run(dir.path(), 30, "schema");
    assert_eq!(data.dropped, 0);
    let v = chrome_trace(&data);
    assert_eq!(v["displayTimeUnit"], "ns");
    assert!(v["metadata"].is_object());
    let evs = events(&v);

    let mut x_events = 0;
    let mut thread_names = BTreeMap::new();
    let mut sort_index = BTreeSet::new();
    let mut flow_s: HashMap<u64, &Value> = HashMap::new();
    let mut flow_f: HashMap<u64, &Value> = HashMap::new();
    let mut by_core: BTreeMap<u64, Vec<(f64, f64)>> = BTreeMap::new();
    let mut process_named = false;
    for e in evs {
        let ph = e["ph"].as_str().unwrap_or_else(|| panic!("no ph: {e}"));
        assert!(e["pid"].is_u64(), "pid: {e}");
        assert!(e["tid"].is_u64(), "tid: {e}");
        assert!(e["name"].is_string(), "name: {e}");
        match ph {
            "M" => {
                let args = e["args"].as_object().unwrap_or_else(|| panic!("metadata needs args: {e}"));
                match e["name"].as_str().unwrap() {
                    "process_name" => {
                        assert_eq!(args["name"], "mbox");
                        assert_eq!(e["pid"], 1);
                        process_named = true;
                    }
                    "thread_name" => {
                        let tid = e["tid"].as_u64().unwrap();
                        assert_eq!(args["name"].as_str().unwrap(), format!("core {tid}"));
                        thread_names.insert(tid, ());
                    }
                    "thread_sort_index" | "process_sort_index" => {
                        assert!(args["sort_index"].is_i64(), "{e}");
                        if e["name"] == "thread_sort_index" {
                            sort_index.insert(e["tid"].as_u64().unwrap());
                        }
                    }
                    other => panic!("unexpected metadata event {other}"),
                }
            }
            "X" => {
                x_events += 1;
                let ts = e["ts"].as_f64().unwrap_or_else(|| panic!("ts: {e}"));
                let dur = e["dur"].as_f64().unwrap_or_else(|| panic!("dur: {e}"));
                assert!(ts >= 0.0 && dur >= 0.0, "{e}");
                assert!(["rx", "handle", "tx"].contains(&e["cat"].as_str().unwrap()), "{e}");
                let args = &e["args"];
                for k in ["actor", "kind", "event", "publisher"] {
                    assert!(args[k].is_string(), "args.{k}: {e}");
                }
                assert!(args["packet"].is_u64() && args["snapshot_seq"].is_u64(), "{e}");
                if let Some(f) = args.get("flow") {
                    assert!(f.as_u64().is_some_and(|f| f != u64::MAX), "{e}");
                }
                let name = e["name"].as_str().unwrap();
                assert_eq!(name, format!("{} #{}", args["actor"].as_str().unwrap(), args["packet"]));
                by_core.entry(e["tid"].as_u64().unwrap()).or_default().push((ts, ts + dur));
            }
            "s" | "f" => {
                assert_eq!(e["cat"], "event");
                assert_eq!(e["name"], "publish");
                assert!(e["ts"].as_f64().is_some_and(|t| t >= 0.0), "{e}");
                let id = e["id"].as_u64().unwrap_or_else(|| panic!("flow id: {e}"));
                if ph == "s" {
                    assert!(flow_s.insert(id, e).is_none(), "duplicate flow start {id}");
                } else {
                    assert_eq!(e["bp"], "e");
                    assert!(flow_f.insert(id, e).is_none(), "duplicate flow end {id}");
                }
            }
            other => panic!("unexpected phase {other}: {e}"),
        }
    }
    assert!(process_named);
    assert_eq!(x_events, data.spans.len());
    // One named, sorted track per core that ran something.
    let cores: BTreeSet<u64> = data.spans.iter().map(|s| u64::from(s.core)).collect();
    assert!(
        cores.iter().all(|c| thread_names.contains_key(c) && sort_index.contains(c)),
        "{cores:?} vs {thread_names:?}"
    );
    // Flow arrows come in pairs, at most one per handled span, each from an earlier time.
    assert!(!flow_s.is_empty(), "no flow arrows");
    assert_eq!(flow_s.keys().collect::<BTreeSet<_>>(), flow_f.keys().collect::<BTreeSet<_>>());
    let handled = data.spans.iter().filter(|s| s.kind != SpanKind::Rx).count();
    assert!(flow_f.len() <= handled);
    for (id, s) in &flow_s {
        assert!(s["ts"].as_f64().unwrap() <= flow_f[id]["ts"].as_f64().unwrap(), "arrow {id} goes back in time");
    }
    // One thread per core runs one actor at a time: a core's spans never overlap.
    for (core, mut spans) in by_core {
        spans.sort_by(|a, b| a.0.total_cmp(&b.0));
        for w in spans.windows(2) {
            // ts + dur is rounded: allow a femtosecond.
            assert!(
                w[1].0 >= w[0].1 - 1e-6,
                "core {core}: span at {} µs starts before the previous one ends at {} µs",
                w[1].0,
                w[0].1
            );
        }
    }
    // ... and exactly, in the recorded nanoseconds.
    let mut raw: BTreeMap<u16, Vec<(u64, u64)>> = BTreeMap::new();
    for s in &data.spans {
        raw.entry(s.core).or_default().push((s.start_ns, s.end_ns));
    }
    for (core, mut spans) in raw {
        spans.sort_unstable();
        for w in spans.windows(2) {
            assert!(w[1].0 >= w[0].1, "core {core}: spans {:?} and {:?} overlap", w[0], w[1]);
        }
    }
}

#[test]
fn every_actor_and_every_packet_is_traced() {
    let dir = tempfile::tempdir().unwrap();
    let (data, report) = traced_run(dir.path(), 40, "cover");
    let n = report.packets_in;
    assert!(n > 100, "{n} packets");
    let names: Vec<&str> = data.actors.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names.first(), Some(&"rx"));
    assert_eq!(names.last(), Some(&"tx"));
    for want in ["l23", "fw", "stats"] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    // Keyed by (actor, span kind).
    let mut seqs: HashMap<(&str, String), BTreeSet<u64>> = HashMap::new();
    for s in &data.spans {
        let a = data.actors[usize::from(s.actor)].name.as_str();
        assert_eq!(s.core, data.actors[usize::from(s.actor)].core, "{a} ran on its core");
        assert!(s.end_ns >= s.start_ns);
        seqs.entry((a, format!("{:?}", s.kind))).or_default().insert(s.seq);
    }
    for a in &names {
        assert!(seqs.keys().any(|(x, _)| x == a), "actor {a} has no span");
    }
    let all: BTreeSet<u64> = (1..=n).collect();
    assert_eq!(seqs[&("rx", "Rx".to_string())], all, "an RX span per packet");
    assert_eq!(seqs[&("l23", "Handle".to_string())], all, "l23 handled every packet");
    let tx = &seqs[&("tx", "Tx".to_string())];
    assert!(tx.is_subset(&all));
    let missing = all.difference(tx).count() as u64;
    assert!(
        missing <= report.packets_dropped,
        "{missing} packets without a TX span, {} dropped",
        report.packets_dropped
    );
    assert!(tx.len() as u64 >= report.packets_out);
    // The firewall saw every packet l23 passed on.
    assert!(!seqs[&("fw", "Handle".to_string())].is_empty());
}

#[test]
fn written_trace_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let (data, _) = traced_run(dir.path(), 10, "roundtrip");
    let path = dir.path().join("trace.json");
    write_chrome_trace(&path, &data).unwrap();
    let from_file: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let in_memory: Value = serde_json::from_str(&chrome_trace(&data).to_string()).unwrap();
    assert_eq!(from_file, in_memory, "the streamed file and chrome_trace() agree");

    let back = read_chrome_trace(&path).unwrap();
    let direct = render_spans(&data);
    assert_eq!(back.len(), direct.len());
    for (a, b) in back.iter().zip(&direct) {
        assert_eq!(
            (a.core, &a.actor, &a.actor_kind, &a.kind, a.seq, a.flow, &a.event, &a.publisher),
            (b.core, &b.actor, &b.actor_kind, &b.kind, b.seq, b.flow, &b.event, &b.publisher)
        );
        assert!((a.start_us - b.start_us).abs() < 1e-6 && (a.dur_us - b.dur_us).abs() < 1e-6);
    }
    // Not a trace: a clear error.
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "{\"x\": 1}").unwrap();
    assert!(read_chrome_trace(&bad).unwrap_err().contains("traceEvents"));
}

#[test]
fn trace_limit_counts_what_did_not_fit() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("t.pcap");
    gen_pcap(&input, &GenConfig { flows: 10, seed: 3, ..GenConfig::default() });
    let app = App::load(&example_app(dir.path())).unwrap();
    let mut opts = RunOptions::new(&input);
    opts.prefix = Some(format!("trace-limit-{}", std::process::id()));
    opts.trace = Some(5);
    let report = microboxes::run(&app, opts).unwrap();
    assert!(report.ok(), "{}", report.to_text());
    let data = report.trace.unwrap();
    let mut per_actor: HashMap<u16, usize> = HashMap::new();
    for s in &data.spans {
        *per_actor.entry(s.actor).or_default() += 1;
    }
    assert!(per_actor.values().all(|&c| c <= 5), "{per_actor:?}");
    assert!(data.dropped > 0);
    assert_eq!(chrome_trace(&data)["metadata"]["dropped_spans"], data.dropped);
}

#[test]
fn no_trace_unless_asked() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("t.pcap");
    gen_pcap(&input, &GenConfig { flows: 3, seed: 3, ..GenConfig::default() });
    let app = App::load(&example_app(dir.path())).unwrap();
    let mut opts = RunOptions::new(&input);
    opts.prefix = Some(format!("trace-off-{}", std::process::id()));
    let report = microboxes::run(&app, opts).unwrap();
    assert!(report.trace.is_none());
    // An empty trace still exports.
    let v = chrome_trace(&TraceData::default());
    assert!(events(&v).iter().all(|e| e["ph"] == "M"));
}
