//! Rule reloads at a packet number (`--reload-at N:FILE`, docs/reconfiguration.md): the
//! outputs equal rules A before packet N and rules B from it on, per flow from its next
//! event, in every execution mode; `mbox check` agrees across modes; a bad reload changes
//! nothing and names every problem; a change of subscriptions is refused, saying what is
//! supported (NFs added and removed: tests/tests/relink.rs).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use microboxes::check::{check, CheckOptions};
use microboxes::reconfig::ScheduledReload;
use microboxes::{App, Mode, RunOptions};
use nfs::signature::AlertRecord;
use runtime::ports::gen::GenConfig;
use stacks::parse::tcp_flags::{ACK, SYN};
use tests::{gen_pcap, repo_file, Capture};

const MODES: [Mode; 4] = [Mode::A, Mode::B, Mode::C, Mode::D];

/// The IDS app with `rules`, written as `name`.toml and `name`.rules in `dir`.
fn ids_app(dir: &Path, name: &str, rules: &str) -> PathBuf {
    std::fs::write(dir.join(format!("{name}.rules")), rules).unwrap();
    let app = dir.join(format!("{name}.toml"));
    std::fs::write(
        &app,
        format!("[stack.tcp]\n\n[[nf]]\nname = \"ids\"\nkind = \"signature_match\"\nrules = \"{name}.rules\"\noutput = \"alerts.jsonl\"\n"),
    )
    .unwrap();
    app
}

struct Ran {
    report: microboxes::report::RunReport,
    /// Output lines of each NF, by NF name.
    lines: BTreeMap<String, Vec<String>>,
}

fn run(app: &Path, input: &Path, mode: Mode, reloads: &[(u64, &Path)], out: &Path) -> Ran {
    let mut app = App::load(app).unwrap();
    std::fs::create_dir_all(out).unwrap();
    let mut files = Vec::new();
    for nf in &mut app.nfs {
        if nf.config.output().is_some() {
            let p = out.join(format!("{}.jsonl", nf.common.name));
            nf.config.set_output(p.clone());
            files.push((nf.common.name.clone(), p));
        }
    }
    let mut o = RunOptions::new(input);
    o.mode = mode;
    o.observe = true;
    o.reloads = reloads.iter().map(|(at, f)| ScheduledReload { at: *at, file: f.to_path_buf() }).collect();
    let report = microboxes::run(&app, o).unwrap();
    assert!(report.ok(), "{:?}", report.errors);
    let lines = files
        .into_iter()
        .map(|(n, p)| (n, std::fs::read_to_string(p).unwrap().lines().map(str::to_string).collect()))
        .collect();
    Ran { report, lines }
}

fn alerts(r: &Ran) -> Vec<AlertRecord> {
    r.lines["ids"].iter().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// (flow, sid) of every alert.
fn flow_sids(a: &[AlertRecord]) -> BTreeSet<(u64, u32)> {
    a.iter().map(|a| (a.flow_id, a.alert.signature_id)).collect()
}

/// Each flow's first and last packet number (flows named by their first packet).
fn flow_spans(r: &Ran) -> BTreeMap<u64, (u64, u64)> {
    let mut m: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    for e in r.report.emitted.iter().filter(|e| e.flow != 0) {
        let s = m.entry(e.flow).or_insert((e.seq, e.seq));
        s.0 = s.0.min(e.seq);
        s.1 = s.1.max(e.seq);
    }
    m
}

/// Generated traffic with the example rules' attacks; rules B drop sid 1000002 and add a
/// rule that fires on every HTTP request. A flow that ended before packet N alerts as under
/// rules A, a flow that began at N or later as under rules B, in every mode; a flow across
/// N alerts only with rules of A or B; and the new rule fired on flows across N too.
#[test]
fn a_reload_at_packet_n_gives_rules_a_before_and_rules_b_after() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("t.pcap");
    let cfg = GenConfig { flows: 120, seed: 11, attacks: 10, concurrency: 8, ..GenConfig::default() };
    gen_pcap(&input, &cfg);
    let rules_a = std::fs::read_to_string(repo_file("apps/ids.rules")).unwrap();
    let rules_b = rules_a.lines().filter(|l| !l.contains("sid:1000002")).collect::<Vec<_>>().join("\n")
        + "\nalert tcp any any -> any any (msg:\"any GET\"; content:\"GET /\"; flow:to_server; sid:9;)\n";
    let app_a = ids_app(dir.path(), "a", &rules_a);
    let app_b = ids_app(dir.path(), "b", &rules_b);
    let only_a = run(&app_a, &input, Mode::C, &[], &dir.path().join("only-a"));
    let only_b = run(&app_b, &input, Mode::C, &[], &dir.path().join("only-b"));
    let spans = flow_spans(&only_a);
    let packets = only_a.report.packets_in;
    let n = packets / 2;
    let (a, b) = (flow_sids(&alerts(&only_a)), flow_sids(&alerts(&only_b)));
    assert!(a.iter().any(|x| x.1 == 1000002) && b.iter().any(|x| x.1 == 9), "both rule sets alert");
    let before: BTreeSet<u64> = spans.iter().filter(|(_, s)| s.1 < n).map(|(f, _)| *f).collect();
    let after: BTreeSet<u64> = spans.iter().filter(|(_, s)| s.0 >= n).map(|(f, _)| *f).collect();
    let across: BTreeSet<u64> = spans.keys().filter(|f| !before.contains(f) && !after.contains(f)).copied().collect();
    assert!(!before.is_empty() && !after.is_empty() && !across.is_empty(), "flows on both sides and across");
    let mut reference = None;
    for mode in MODES {
        let r = run(&app_a, &input, mode, &[(n, &app_b)], &dir.path().join(format!("mode-{mode}")));
        let got = flow_sids(&alerts(&r));
        let of = |set: &BTreeSet<(u64, u32)>, flows: &BTreeSet<u64>| -> BTreeSet<(u64, u32)> {
            set.iter().filter(|x| flows.contains(&x.0)).copied().collect()
        };
        assert_eq!(of(&got, &before), of(&a, &before), "mode {mode}: flows that ended before packet {n}");
        assert_eq!(of(&got, &after), of(&b, &after), "mode {mode}: flows that began at packet {n} or later");
        for x in of(&got, &across) {
            assert!(
                a.contains(&x) || b.contains(&x),
                "mode {mode}: alert {x:?} of a flow across {n}: neither rule set has it"
            );
        }
        assert!(of(&got, &across).iter().any(|x| x.1 == 9), "mode {mode}: the new rule fires on flows across {n}");
        // Nothing lost or duplicated: every packet has one fate.
        assert_eq!(r.report.emitted.len() as u64, packets, "mode {mode}");
        let re = &r.report.reconfigurations;
        assert_eq!(re.len(), 1, "mode {mode}");
        assert!(re[0].accepted && re[0].from_packet == Some(n) && re[0].generation == 2, "{re:?}");
        assert!(re[0].changes.iter().any(|c| c.contains("rules added: sid 9")), "{:?}", re[0].changes);
        assert!(re[0].changes.iter().any(|c| c.contains("rules removed: sid 1000002")), "{:?}", re[0].changes);
        assert!(r.report.summary().contains(&format!("generation 2 from {}, from packet {n}", app_b.display())));
        // The same alerts in every mode.
        let lines: BTreeSet<String> = r.lines["ids"].iter().cloned().collect();
        match &reference {
            None => reference = Some(lines),
            Some(want) => assert_eq!(&lines, want, "mode {mode} against mode a"),
        }
    }
    // The checker runs the reload in every mode and agrees.
    let opts =
        CheckOptions { reloads: vec![ScheduledReload { at: n, file: app_b.clone() }], ..CheckOptions::default() };
    let report = check(&App::load(&app_a).unwrap(), &input, &opts).unwrap();
    assert!(report.consistent(), "{}", report.to_text());
}

const C: [u8; 4] = [192, 0, 2, 1];
const S: [u8; 4] = [203, 0, 113, 1];

/// One connection across the reload, by hand: the new rules apply to the bytes of the
/// flow's events from packet N on — bytes before are not scanned again, a pattern split
/// across the boundary is not found, a rule (by sid) that alerted before does not alert
/// again, and a new rule fires on new bytes.
#[test]
fn a_flow_across_the_reload_sees_the_new_rules_from_its_next_event() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Capture::default();
    let p = 40000;
    c.tcp((C, p), (S, 80), 1000, 0, SYN, b"");
    c.tcp((S, 80), (C, p), 5000, 1001, SYN | ACK, b"");
    c.tcp((C, p), (S, 80), 1001, 5001, ACK, b"");
    let first = b"alpha gamma del"; // packet 4
    c.tcp((C, p), (S, 80), 1001, 5001, ACK, first);
    c.tcp((S, 80), (C, p), 5001, 1001 + first.len() as u32, ACK, b""); // packet 5
    let second = b"ta beta alpha"; // packet 6: the reload applies from here
    c.tcp((C, p), (S, 80), 1001 + first.len() as u32, 5001, ACK, second);
    c.tcp((S, 80), (C, p), 5001, 1001 + (first.len() + second.len()) as u32, ACK, b"");
    let input = dir.path().join("one.pcap");
    c.save(&input);
    let rule = |sid: u32, s: &str| format!("alert tcp any any -> any any (msg:\"{s}\"; content:\"{s}\"; sid:{sid};)\n");
    let app_a = ids_app(dir.path(), "a", &rule(1, "alpha"));
    let rules_b = [rule(1, "alpha"), rule(2, "beta"), rule(3, "gamma"), rule(4, "delta")].concat();
    let app_b = ids_app(dir.path(), "b", &rules_b);
    for mode in MODES {
        let r = run(&app_a, &input, mode, &[(6, &app_b)], &dir.path().join(format!("m{mode}")));
        let sids: Vec<u32> = alerts(&r).iter().map(|a| a.alert.signature_id).collect();
        assert_eq!(
            sids,
            [1, 2],
            "mode {mode}: alpha before (once), beta after; not gamma (scanned before) nor delta (split)"
        );
    }
    // Without the reload, rules B alert on all four.
    let r = run(&app_b, &input, Mode::C, &[], &dir.path().join("b"));
    let mut sids: Vec<u32> = alerts(&r).iter().map(|a| a.alert.signature_id).collect();
    sids.sort();
    assert_eq!(sids, [1, 2, 3, 4]);
}

/// The firewall's rule changes its action at packet N: each packet's fate is the one rules A
/// give it before N and rules B from N on (a stateful flow's decision is made again at its
/// next packet), in every mode.
#[test]
fn a_firewall_reload_changes_each_flows_fate_from_its_next_packet() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("t.pcap");
    gen_pcap(&input, &GenConfig { flows: 150, seed: 5, udp_fraction: 0.5, concurrency: 16, ..GenConfig::default() });
    let fw = |default: &str, action: &str| {
        format!(
            "[[nf]]\nname = \"fw\"\nkind = \"firewall\"\ndefault = \"{default}\"\nrules = [\n  {{ action = \"{action}\", name = \"dns\", proto = \"udp\", dst_port = 53 }},\n]\n\n[[nf]]\nname = \"stats\"\nkind = \"flow_stats\"\noutput = \"flows.jsonl\"\n"
        )
    };
    let (app_a, app_b) = (dir.path().join("a.toml"), dir.path().join("b.toml"));
    std::fs::write(&app_a, fw("allow", "drop")).unwrap();
    std::fs::write(&app_b, fw("drop", "allow")).unwrap();
    let fate =
        |r: &Ran| -> BTreeMap<u64, bool> { r.report.emitted.iter().map(|e| (e.seq, e.dropped.is_some())).collect() };
    let a = fate(&run(&app_a, &input, Mode::C, &[], &dir.path().join("a")));
    let b = fate(&run(&app_b, &input, Mode::C, &[], &dir.path().join("b")));
    let n = a.len() as u64 / 3;
    let want: BTreeMap<u64, bool> = a.keys().map(|s| (*s, if *s < n { a[s] } else { b[s] })).collect();
    assert!(want.values().any(|d| *d) && want.values().any(|d| !*d));
    for mode in MODES {
        let r = run(&app_a, &input, mode, &[(n, &app_b)], &dir.path().join(format!("m{mode}")));
        assert_eq!(fate(&r), want, "mode {mode}");
        let fw = r.report.actors.iter().find(|a| a.name == "fw").unwrap();
        assert_eq!(fw.counters.get("reloads"), Some(&1), "{:?}", fw.counters);
        let c = &r.report.reconfigurations[0].changes;
        assert!(
            c.iter().any(|l| l.contains("default: Allow -> Drop"))
                && c.iter().any(|l| l.contains("rule 1 (rule 1: dns)")),
            "{c:?}"
        );
    }
}

/// A reload file with errors changes nothing: the run refuses to start and names every
/// problem (bad rules, keys that cannot change, drop reasons); a change of an NF's
/// subscriptions is refused with a message that says what is supported.
#[test]
fn a_bad_reload_names_every_problem_and_a_subscription_change_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("t.pcap");
    gen_pcap(&input, &GenConfig { flows: 10, seed: 1, ..GenConfig::default() });
    let app_a = ids_app(dir.path(), "a", "alert tcp any any -> any any (msg:\"x\"; content:\"x\"; sid:1;)\n");
    let try_reload = |file: &Path| {
        let mut o = RunOptions::new(&input);
        o.reloads = vec![ScheduledReload { at: 5, file: file.to_path_buf() }];
        let mut app = App::load(&app_a).unwrap();
        app.nfs[0].config.set_output(dir.path().join("out.jsonl"));
        microboxes::run(&app, o).map(|_| ()).unwrap_err().to_string()
    };
    // Two rule errors in one file: both named.
    let bad = ids_app(dir.path(), "bad", "alert tcp any any -> any any (msg:\"a\"; bogus:1; sid:2;)\nalert tcp any any -> any any (msg:\"b\"; content:\"y\"; sid:3; frob;)\n");
    let e = try_reload(&bad);
    assert!(e.contains("bogus") && e.contains("frob"), "{e}");
    assert!(e.starts_with(&format!("--reload-at 5:{}", bad.display())), "{e}");
    // Keys that cannot change, and a new drop rule: every one named.
    let keys = dir.path().join("keys.toml");
    std::fs::write(dir.path().join("keys.rules"), "drop tcp any any -> any any (msg:\"d\"; content:\"x\"; sid:1;)\n")
        .unwrap();
    std::fs::write(&keys, "[stack.tcp]\n\n[[nf]]\nname = \"ids\"\nkind = \"signature_match\"\nrules = \"keys.rules\"\noutput = \"alerts.jsonl\"\nmax_positions = 7\nstop_after_alert = true\n").unwrap();
    let e = try_reload(&keys);
    for want in
        ["`max_positions` cannot change", "`stop_after_alert` cannot change", "`drop`/`reject` rules would change"]
    {
        assert!(e.contains(want), "missing `{want}` in:\n{e}");
    }
    // A kind that takes no new options.
    let app_h = dir.path().join("h.toml");
    std::fs::write(&app_h, "[stack.tcp]\n\n[[nf]]\nname = \"h\"\nkind = \"stream_hash\"\noutput = \"h.jsonl\"\n")
        .unwrap();
    let app_h2 = dir.path().join("h2.toml");
    std::fs::write(
        &app_h2,
        "[stack.tcp]\n\n[[nf]]\nname = \"h\"\nkind = \"stream_hash\"\noutput = \"h.jsonl\"\nside = \"client\"\n",
    )
    .unwrap();
    let mut o = RunOptions::new(&input);
    o.reloads = vec![ScheduledReload { at: 5, file: app_h2.clone() }];
    let mut app = App::load(&app_h).unwrap();
    app.nfs[0].config.set_output(dir.path().join("h.jsonl"));
    let e = microboxes::run(&app, o).map(|_| ()).unwrap_err().to_string();
    assert!(e.contains("nf `h`: its subscriptions") && e.contains("not supported yet"), "{e}");
    // `--reload-at` syntax errors are clear.
    for (arg, want) in
        [("x:f", "is not a packet number"), ("0:f", "numbered from 1"), ("5", "expected N:FILE"), ("5:", "no app file")]
    {
        let e = arg.parse::<ScheduledReload>().unwrap_err();
        assert!(e.contains(want), "{arg}: {e}");
    }
}

/// The command line: `mbox run --reload-at` logs the reload in the summary and the stats
/// JSON; `mbox check --reload-at` agrees across modes.
#[test]
fn the_command_line_reports_the_reload() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("t.pcap");
    gen_pcap(&input, &GenConfig { flows: 40, seed: 2, attacks: 4, ..GenConfig::default() });
    let rules = std::fs::read_to_string(repo_file("apps/ids.rules")).unwrap();
    let app_a = ids_app(dir.path(), "a", &rules);
    let app_b =
        ids_app(dir.path(), "b", &(rules + "alert tcp any any -> any any (msg:\"g\"; content:\"GET\"; sid:9;)\n"));
    let reload = format!("100:{}", app_b.display());
    let o = tests::mbox(
        dir.path(),
        &[
            "run",
            app_a.to_str().unwrap(),
            "-i",
            input.to_str().unwrap(),
            "--reload-at",
            &reload,
            "--stats-json",
            "s.json",
            "--no-progress",
            "--trace",
            "t.json",
        ],
    );
    let t = tests::text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("reload (--reload-at, ") && t.contains("from packet 100: nf `ids`: rules: "), "{t}");
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("s.json")).unwrap()).unwrap();
    let r = &s["reconfigurations"][0];
    assert_eq!(
        (r["generation"].as_u64(), r["from_packet"].as_u64(), r["accepted"].as_bool()),
        (Some(2), Some(100), Some(true)),
        "{r}"
    );
    // The trace marks the reload where RX read packet 100.
    let tr: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("t.json")).unwrap()).unwrap();
    let marks: Vec<&serde_json::Value> =
        tr["traceEvents"].as_array().unwrap().iter().filter(|e| e["ph"] == "i").collect();
    assert_eq!(marks.len(), 1, "{marks:?}");
    assert_eq!(
        (marks[0]["name"].as_str(), marks[0]["args"]["packet"].as_u64()),
        (Some("reload: generation 2 (--reload-at)"), Some(100))
    );
    let o = tests::mbox(
        dir.path(),
        &["check", app_a.to_str().unwrap(), "-i", input.to_str().unwrap(), "--reload-at", &reload, "-q"],
    );
    assert!(o.status.success(), "{}", tests::text(&o));
}
