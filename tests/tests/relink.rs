//! Offline relinks (`--reload-at N:FILE` whose file adds or removes NFs,
//! docs/reconfiguration.md): an NF added at packet N sees each flow from the flow's next
//! event — its flow records count exactly the flow's packets numbered N or more; an NF
//! removed at N finishes there and its per-flow state is dropped — its records count exactly
//! the packets before N; no packet is lost or duplicated; the same in modes a–d and by
//! `mbox check`. Live, a topology change is refused (tests/tests/live_reload.rs, ctl.rs).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use microboxes::check::{check, CheckOptions};
use microboxes::reconfig::ScheduledReload;
use microboxes::{App, Mode, RunOptions};
use runtime::ports::gen::GenConfig;
use tests::gen_pcap;

const MODES: [Mode; 4] = [Mode::A, Mode::B, Mode::C, Mode::D];

fn nf(name: &str, kind: &str, extra: &str) -> String {
    format!("\n[[nf]]\nname = \"{name}\"\nkind = \"{kind}\"\n{extra}")
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// Runs `app` with `reloads`, NF outputs (relative) under `out`; returns the report and
/// each output file's lines by file name.
fn run(
    app: &Path,
    input: &Path,
    mode: Mode,
    reloads: &[(u64, &Path)],
    out: &Path,
) -> (microboxes::report::RunReport, BTreeMap<String, Vec<String>>) {
    std::fs::create_dir_all(out).unwrap();
    let mut a = App::load(app).unwrap();
    microboxes::engine::resolve_outputs(&mut a, out);
    let mut o = RunOptions::new(input);
    o.mode = mode;
    o.observe = true;
    o.output_dir = Some(out.to_path_buf());
    o.reloads = reloads.iter().map(|(at, f)| ScheduledReload { at: *at, file: f.to_path_buf() }).collect();
    let report = microboxes::run(&a, o).unwrap();
    assert!(report.ok(), "{:?}", report.errors);
    let mut files = BTreeMap::new();
    for e in std::fs::read_dir(out).unwrap() {
        let p = e.unwrap().path();
        let mut lines: Vec<String> = std::fs::read_to_string(&p).unwrap().lines().map(str::to_string).collect();
        lines.sort();
        files.insert(p.file_name().unwrap().to_string_lossy().to_string(), lines);
    }
    (report, files)
}

/// Packets of each flow (flow records' `pkts_toserver + pkts_toclient`), by flow id.
fn packets_by_flow(lines: &[String]) -> BTreeMap<u64, u64> {
    lines
        .iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let f = &v["flow"];
            (
                v["flow_id"].as_u64().unwrap(),
                f["pkts_toserver"].as_u64().unwrap() + f["pkts_toclient"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// `stats` runs from the start and is removed at packet N; `late` is added at N. Each
/// flow's packets before N are in `stats`' records, those from N on in `late`'s, and the
/// two add up to the flow's packets; every packet is emitted once.
#[test]
fn an_nf_added_at_n_sees_flows_from_n_and_one_removed_at_n_keeps_nothing_after() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let input = d.join("t.pcap");
    gen_pcap(&input, &GenConfig { flows: 150, seed: 9, udp_fraction: 0.2, concurrency: 12, ..GenConfig::default() });
    let fw = nf("fw", "firewall", "default = \"allow\"\n");
    let a = write(d, "a.toml", &format!("{fw}{}", nf("stats", "flow_stats", "output = \"stats.jsonl\"\n")));
    let b = write(d, "b.toml", &format!("{fw}{}", nf("late", "flow_stats", "output = \"late.jsonl\"\n")));
    // The packets of each flow, by number: from a run without reloads.
    let (plain, _) = run(&a, &input, Mode::C, &[], &d.join("plain"));
    let packets = plain.packets_in;
    let n = packets / 2;
    let mut per_flow: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for e in plain.emitted.iter().filter(|e| e.flow != 0) {
        per_flow.entry(e.flow).or_default().push(e.seq);
    }
    let count = |pred: &dyn Fn(u64) -> bool| -> BTreeMap<u64, u64> {
        per_flow
            .iter()
            .map(|(f, seqs)| (*f, seqs.iter().filter(|s| pred(**s)).count() as u64))
            .filter(|(_, c)| *c > 0)
            .collect()
    };
    let (before, after) = (count(&|s| s < n), count(&|s| s >= n));
    assert!(before.keys().any(|f| after.contains_key(f)), "some flows cross packet {n}");
    let mut reference = None;
    for mode in MODES {
        let (r, files) = run(&a, &input, mode, &[(n, &b)], &d.join(format!("m{mode}")));
        assert_eq!(
            packets_by_flow(&files["stats.jsonl"]),
            before,
            "mode {mode}: the removed NF counted packets before {n} only"
        );
        assert_eq!(
            packets_by_flow(&files["late.jsonl"]),
            after,
            "mode {mode}: the added NF counted packets from {n} on only"
        );
        // Every packet once, in order within its flow; the pool balances.
        let mut seqs: Vec<u64> = r.emitted.iter().map(|e| e.seq).collect();
        seqs.sort_unstable();
        assert_eq!(seqs, (1..=packets).collect::<Vec<_>>(), "mode {mode}: a packet lost or duplicated");
        assert!(r.pool_balanced && r.packets_dropped == 0, "mode {mode}");
        let c = &r.reconfigurations[0].changes;
        assert!(c.iter().any(|l| l.starts_with("nf `late` (flow_stats) added")), "{c:?}");
        assert!(c.iter().any(|l| l.starts_with("nf `stats` (flow_stats) removed")), "{c:?}");
        let stats = r.actors.iter().find(|x| x.name == "stats").unwrap();
        assert_eq!(stats.counters.get("removed_at_packet"), Some(&n), "{:?}", stats.counters);
        let late = r.actors.iter().find(|x| x.name == "late").unwrap();
        assert_eq!(late.counters.get("added_at_packet"), Some(&n), "{:?}", late.counters);
        match &reference {
            None => reference = Some(files),
            Some(want) => assert_eq!(&files, want, "mode {mode}: outputs differ from mode a"),
        }
    }
    // `mbox check` runs the relink in every mode and agrees (observations and packets).
    let opts = CheckOptions { reloads: vec![ScheduledReload { at: n, file: b.clone() }], ..CheckOptions::default() };
    let report = check(&App::load(&a).unwrap(), &input, &opts).unwrap();
    assert!(report.consistent(), "{}", report.to_text());
}

/// An IDS added at packet N in front of an existing one, then the first NF removed: NFs
/// that publish event types may come and go (types keep their numbers); a second relink
/// comes after the first; what cannot be done is refused with every reason.
#[test]
fn relinks_chain_and_what_cannot_be_relinked_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let input = d.join("t.pcap");
    gen_pcap(&input, &GenConfig { flows: 60, seed: 3, attacks: 6, concurrency: 6, ..GenConfig::default() });
    std::fs::copy(tests::repo_file("apps/ids.rules"), d.join("ids.rules")).unwrap();
    let tcp = "[stack.tcp]\n";
    let dpi = nf("dpi", "dpi", "output = \"dpi.jsonl\"\n");
    let ids = nf("ids", "signature_match", "rules = \"ids.rules\"\noutput = \"alerts.jsonl\"\n");
    let hash = nf("hash", "flow_stats", "output = \"late.jsonl\"\n");
    let a = write(d, "a.toml", &format!("{tcp}{dpi}{ids}"));
    let b = write(d, "b.toml", &format!("{tcp}{dpi}{hash}{ids}"));
    let c = write(d, "c.toml", &format!("{tcp}{hash}{ids}"));
    let (plain, pf) = run(&a, &input, Mode::C, &[], &d.join("plain"));
    let packets = plain.packets_in;
    let (n1, n2) = (packets / 3, 2 * packets / 3);
    let mut reference = None;
    for mode in MODES {
        let (r, files) = run(&a, &input, mode, &[(n1, &b), (n2, &c)], &d.join(format!("m{mode}")));
        assert_eq!(r.emitted.len() as u64, packets, "mode {mode}");
        assert_eq!(files["alerts.jsonl"], pf["alerts.jsonl"], "mode {mode}: the IDS kept running throughout");
        assert!(r.actors.iter().find(|x| x.name == "dpi").unwrap().counters.get("removed_at_packet") == Some(&n2));
        match &reference {
            None => reference = Some(files),
            Some(want) => assert_eq!(&files, want, "mode {mode}"),
        }
    }
    let refuse = |reloads: Vec<ScheduledReload>| {
        let mut o = RunOptions::new(&input);
        o.reloads = reloads;
        o.output_dir = Some(d.join("refused"));
        let mut app = App::load(&a).unwrap();
        microboxes::engine::resolve_outputs(&mut app, &d.join("refused"));
        microboxes::run(&app, o).map(|_| ()).unwrap_err().to_string()
    };
    let at = |n: u64, f: &Path| ScheduledReload { at: n, file: f.to_path_buf() };
    // Replaced under its name; reordered; relinks out of order; a removed name reused.
    let replaced =
        write(d, "replaced.toml", &format!("{tcp}{}{ids}", nf("dpi", "flow_stats", "output = \"x.jsonl\"\n")));
    let e = refuse(vec![at(10, &replaced)]);
    assert!(e.contains("replaced by an NF of kind `flow_stats`: give the new NF another name"), "{e}");
    let reordered = write(d, "reordered.toml", &format!("{tcp}{ids}{dpi}"));
    let e = refuse(vec![at(10, &reordered)]);
    assert!(e.contains("reordering is not supported"), "{e}");
    let e = refuse(vec![at(n2, &b), at(n1, &c)]);
    assert!(e.contains("relinks must come in packet order"), "{e}");
    let e = refuse(vec![at(n1, &c), at(n2, &a)]);
    assert!(e.contains("nf `dpi`: an NF of that name was removed earlier"), "{e}");
}
