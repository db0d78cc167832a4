//! The consistency checker: the example apps are consistent in modes b and c (and d) with
//! mode a, on generated traffic and real captures, with actors on 2 cores and on 1 — and
//! the checker can fail: an NF that decides by the live stack instead of its snapshot is
//! caught, with the divergence reported at the packet where it happened.

use std::sync::Arc;

use actors::desc::EventDesc;
use actors::event::builtin;
use actors::{Actor, Context, Contract, Publication, Subscription, Verdict};
use microboxes::app::NfEntry;
use microboxes::check::{check, CheckOptions};
use microboxes::{App, Mode};
use nfs::{CustomNf, NfCommon, NfConfig};
use runtime::ports::gen::GenConfig;
use tests::*;

fn app_with_outputs(rel: &str, dir: &std::path::Path) -> App {
    let text = std::fs::read_to_string(repo_file(rel)).unwrap();
    let text = text
        .replace("output = \"flows.jsonl\"", &format!("output = {:?}", dir.join("flows.jsonl").display().to_string()))
        .replace(
            "output = \"streams.jsonl\"",
            &format!("output = {:?}", dir.join("streams.jsonl").display().to_string()),
        );
    App::parse(&text, rel).unwrap()
}

fn assert_consistent(app: &App, input: &std::path::Path, single_core: bool) {
    let opts = CheckOptions { modes: vec![Mode::B, Mode::C, Mode::D], single_core, ..CheckOptions::default() };
    let r = check(app, input, &opts).unwrap();
    assert!(r.consistent(), "{}", r.to_text());
    for (m, c) in &r.modes {
        let c = c.as_ref().unwrap();
        assert!(c.observations > 0 && c.packets > 0, "mode {m} compared nothing: {c:?}");
    }
}

#[test]
fn example_apps_are_consistent_on_generated_traffic() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("t.pcap");
    gen_pcap(&input, &GenConfig { flows: 150, seed: 17, ..GenConfig::default() });
    for rel in ["apps/firewall_stats.toml", "apps/tcp_streams.toml"] {
        let app = app_with_outputs(rel, dir.path());
        assert_consistent(&app, &input, false);
        assert_consistent(&app, &input, true);
    }
}

#[test]
fn the_tcp_app_is_consistent_on_real_captures() {
    let dir = tempfile::tempdir().unwrap();
    let app = app_with_outputs("apps/tcp_streams.toml", dir.path());
    for cap in ["loss_reorder_dup.pcap", "clean_keepalive.pcap"] {
        assert_consistent(&app, &repo_file(&format!("tests/fixtures/captures/{cap}")), false);
    }
}

/// A faulty NF: on every DATA_RDY it publishes the *live* frontier of the stream — where
/// the stack is now — instead of the one in its event's snapshot.
struct PeeksAtTheLiveStack {
    c: Contract,
    ty: actors::EventType,
}

impl Actor for PeeksAtTheLiveStack {
    fn contract(&self) -> &Contract {
        &self.c
    }
    fn handle(&mut self, ev: &mut EventDesc, cx: &mut Context<'_>) -> Verdict {
        std::thread::sleep(std::time::Duration::from_micros(50));
        let live = ev.flow.and_then(|f| cx.live_frontier(f, ev.to_server())).unwrap_or(0);
        let mut out = EventDesc::new(self.ty, 0, ev.seq, ev.ts_ns);
        out.aux = live;
        out.flow_start = ev.flow_start;
        cx.publish(out);
        Verdict::Continue
    }
}

#[test]
fn an_nf_reading_the_live_stack_is_caught_at_the_right_packet() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("t.pcap");
    gen_pcap(
        &input,
        &GenConfig { flows: 60, seed: 3, udp_fraction: 0.0, response_size: (20_000, 60_000), ..GenConfig::default() },
    );
    let mut app = App::parse("[runtime]\nring_capacity = 4096\n[stack.tcp]\n", "fault.toml").unwrap();
    let ty = app.registry.register("EVENT/PEEK").unwrap();
    let make = move |common: &NfCommon| -> Box<dyn Actor> {
        Box::new(PeeksAtTheLiveStack {
            c: Contract {
                name: common.name.clone(),
                kind: "peek".into(),
                subscriptions: vec![Subscription::new("data", builtin::DATA_RDY)],
                publications: vec![Publication { port: "out".into(), event: ty }],
                ..Default::default()
            },
            ty,
        })
    };
    app.nfs.push(NfEntry {
        kind: "peek".into(),
        common: NfCommon::named("peek"),
        config: NfConfig::Custom(CustomNf { make: Arc::new(make) }),
    });
    let r = check(&app, &input, &CheckOptions { modes: vec![Mode::C], ..CheckOptions::default() }).unwrap();
    assert!(!r.consistent(), "the checker must catch the fault:\n{}", r.to_text());
    let d = r.modes[0].1.as_ref().unwrap_err();
    assert_eq!(d.mode, Mode::C);
    assert!(d.what.contains("`peek`"), "{d}");
    // The reported packet is the one of the first event where the live frontier and the
    // event's own differ: the expected line publishes the snapshot's frontier.
    let seq = d.seq.expect("a packet number");
    assert!(d.expected.starts_with(&format!("{seq} DATA_RDY")), "{d}");
    assert!(d.actual.starts_with(&format!("{seq} DATA_RDY")), "{d}");
    let fr = |line: &str| line.split(' ').find_map(|w| w.strip_prefix("fr=")).unwrap().to_string();
    let published =
        |line: &str| line.split("pub[EVENT/PEEK aux=").nth(1).unwrap().split(' ').next().unwrap().to_string();
    let frontiers = fr(&d.expected);
    assert!(
        frontiers.split(',').any(|f| f == published(&d.expected)),
        "in mode a the live frontier is the event's: {d}"
    );
    assert_ne!(published(&d.expected), published(&d.actual), "{d}");
    eprintln!("{d}");
}

#[test]
fn a_merger_that_does_not_wait_for_every_answer_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("t.pcap");
    let truth = gen_pcap(&input, &GenConfig { flows: 80, seed: 9, ..GenConfig::default() });
    let flows = dir.path().join("flows.jsonl");
    let app = App::parse(
        &format!(
            "parallel = [[\"stats\", \"fw\"]]\n[[nf]]\nname = \"stats\"\nkind = \"flow_stats\"\noutput = {:?}\n[[nf]]\nname = \"fw\"\nkind = \"firewall\"\nrules = [{{ action = \"drop\", proto = \"udp\" }}]\n",
            flows.display().to_string()
        ),
        "group.toml",
    )
    .unwrap();
    // Correct: consistent in mode d with the group in parallel.
    let ok = check(&app, &input, &CheckOptions { modes: vec![Mode::D], ..CheckOptions::default() }).unwrap();
    assert!(ok.consistent(), "{}", ok.to_text());
    // Faulty merger: the firewall's drops are lost, first at the first UDP packet.
    let bad = check(
        &app,
        &input,
        &CheckOptions {
            modes: vec![Mode::D],
            fault: Some(microboxes::engine::Fault::EagerMerger),
            ..CheckOptions::default()
        },
    )
    .unwrap();
    assert!(!bad.consistent());
    let d = bad.modes[0].1.as_ref().unwrap_err();
    assert_eq!(d.what, "emitted packets", "{d}");
    let first_udp = tests::read_all(&input)
        .iter()
        .position(|(_, f)| {
            let p = stacks::parse::parse(runtime::ports::LinkType::Ethernet, f).unwrap();
            matches!(p.transport, stacks::parse::Transport::Udp(_))
        })
        .unwrap() as u64
        + 1;
    assert!(truth.flows.iter().any(|f| f.proto == "udp"));
    assert_eq!(d.seq, Some(first_udp), "{d}");
    assert!(d.expected.contains("dropped by fw"), "{d}");
    assert!(d.actual.contains("emitted"), "{d}");
}

/// Counts a flow's packets and unsubscribes from the flow's packets after the third — then
/// publishes nothing more for it. Each mode must stop delivering at the same event.
struct ThreeAndDone {
    c: Contract,
    ty: actors::EventType,
    seen: std::collections::HashMap<u64, u32>,
}

impl Actor for ThreeAndDone {
    fn contract(&self) -> &Contract {
        &self.c
    }
    fn handle(&mut self, ev: &mut EventDesc, cx: &mut Context<'_>) -> Verdict {
        let n = self.seen.entry(ev.flow_start).or_default();
        *n += 1;
        assert!(*n <= 3, "a packet of flow {} delivered after the unsubscription", ev.flow_start);
        let mut out = EventDesc::new(self.ty, 0, ev.seq, ev.ts_ns);
        out.aux = u64::from(*n);
        out.flow_start = ev.flow_start;
        cx.publish(out);
        if *n == 3 {
            cx.unsubscribe_flow(ev, builtin::PKT);
        }
        Verdict::Continue
    }
}

#[test]
fn dynamic_per_flow_unsubscription_is_consistent_in_every_mode() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("t.pcap");
    gen_pcap(&input, &GenConfig { flows: 60, seed: 8, ..GenConfig::default() });
    let mut app = App::parse("[stack.tcp]\n", "dyn.toml").unwrap();
    let ty = app.registry.register("EVENT/COUNTED").unwrap();
    let make = move |common: &NfCommon| -> Box<dyn Actor> {
        Box::new(ThreeAndDone {
            c: Contract {
                name: common.name.clone(),
                kind: "three".into(),
                subscriptions: vec![Subscription::new("pkt", builtin::PKT)],
                publications: vec![Publication { port: "out".into(), event: ty }],
                ..Default::default()
            },
            ty,
            seen: Default::default(),
        })
    };
    app.nfs.push(NfEntry {
        kind: "three".into(),
        common: NfCommon::named("three"),
        config: NfConfig::Custom(CustomNf { make: Arc::new(make) }),
    });
    let r = check(&app, &input, &CheckOptions::default()).unwrap();
    assert!(r.consistent(), "{}", r.to_text());
    let mut opts = microboxes::RunOptions::new(&input);
    opts.mode = Mode::C;
    let report = microboxes::run(&app, opts).unwrap();
    let three = report.actors.iter().find(|a| a.name == "three").unwrap();
    assert!(
        three.counters.get("not_delivered_by_flow_subscription").copied().unwrap_or(0) > 1000,
        "{:?}",
        three.counters
    );
}
