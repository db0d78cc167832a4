//! NF supervision of thread NFs: an NF that panics at packet N, under each `on_failure`
//! policy, in every mode. The run ends (with `stop`: a clear error naming the NF, the packet
//! and the message; otherwise normally), every input packet is accounted for (in = out +
//! dropped), the pool balances, and the failure is reported with the events it lost.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use actors::desc::EventDesc;
use actors::event::builtin;
use actors::supervise::{OnFailure, NF_FAILED};
use actors::{Actor, Context, Contract, Publication, Subscription, Verdict};
use microboxes::app::NfEntry;
use microboxes::{run, App, Mode, RunError, RunOptions};
use nfs::{CustomNf, NfCommon, NfConfig};
use runtime::ports::gen::GenConfig;
use tests::*;

/// The packet the faulty NF panics at.
const PANIC_AT: u64 = 200;

/// Publishes an event about every packet (holding the packet), and panics at packet
/// [`PANIC_AT`] right after publishing one — so the lost event holds a packet reference
/// that must be released. Counts how many instances were built.
struct Faulty {
    c: Contract,
    ty: actors::EventType,
}

impl Actor for Faulty {
    fn contract(&self) -> &Contract {
        &self.c
    }
    fn handle(&mut self, ev: &mut EventDesc, cx: &mut Context<'_>) -> Verdict {
        let mut note = *ev;
        note.event_type = self.ty;
        cx.publish(note);
        if ev.seq == PANIC_AT {
            panic!("injected fault at packet {}", ev.seq);
        }
        Verdict::Continue
    }
}

fn app(policy: OnFailure, built: Arc<AtomicU64>) -> App {
    let mut app = App::parse("[runtime]\nring_capacity = 64\npool_buffers = 256\n[stack.tcp]\n", "sup.toml").unwrap();
    let ty = app.registry.register("EVENT/NOTE").unwrap();
    let make = move |common: &NfCommon| -> Box<dyn Actor> {
        built.fetch_add(1, Ordering::SeqCst);
        Box::new(Faulty {
            c: Contract {
                name: common.name.clone(),
                kind: "faulty".into(),
                subscriptions: vec![Subscription::new("in", builtin::PKT)],
                publications: vec![Publication { port: "out".into(), event: ty }],
                ..Default::default()
            },
            ty,
        })
    };
    app.nfs.push(NfEntry {
        kind: "faulty".into(),
        common: NfCommon { on_failure: policy, ..NfCommon::named("faulty") },
        config: NfConfig::Custom(CustomNf { make: Arc::new(make) }),
    });
    app
}

fn input(dir: &std::path::Path) -> std::path::PathBuf {
    let p = dir.join("t.pcap");
    gen_pcap(&p, &GenConfig { flows: 60, seed: 5, ..GenConfig::default() });
    p
}

#[test]
fn a_panicking_thread_nf_is_contained_by_bypass_drop_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let input = input(dir.path());
    for mode in [Mode::A, Mode::B, Mode::C, Mode::D] {
        for policy in [OnFailure::Bypass, OnFailure::Drop, OnFailure::Restart] {
            let built = Arc::new(AtomicU64::new(0));
            let app = app(policy, built.clone());
            let r = run(&app, RunOptions { mode, ..RunOptions::new(&input) }).unwrap();
            let what = format!("mode {mode}, on_failure = {policy}");
            assert!(r.ok(), "{what}: {:?}", r.errors);
            assert!(r.packets_in > PANIC_AT, "{what}: the capture is too small");
            assert_eq!(r.packets_in, r.packets_out + r.packets_dropped, "{what}");
            assert!(r.pool_balanced, "{what}: {:?}", r.pool);
            assert_eq!(r.failures.len(), 1, "{what}: {:?}", r.failures);
            let f = &r.failures[0];
            assert_eq!((f.nf.as_str(), f.what.as_str(), f.policy), ("faulty", "panic", policy), "{what}");
            assert!(f.message.contains("injected fault at packet 200"), "{what}: {}", f.message);
            assert_eq!(f.seq, Some(PANIC_AT), "{what}");
            // The packet being handled and the note published for it (in mode a the note
            // dies inside the NF's private chain, which holds what its NF publishes until
            // the NF returns: only the packet reaches the stage).
            let lost = if mode == Mode::A { 1 } else { 2 };
            assert_eq!((f.events_lost, f.packets_lost), (lost, 1), "{what}");
            let nf = r.actors.iter().find(|a| a.name == "faulty").unwrap();
            assert_eq!(nf.events_lost_in_failure, lost, "{what}");
            let failed = |d: &&microboxes::report::DropLine| d.actor == "faulty" && d.reason == NF_FAILED;
            let dropped = r.dropped.iter().find(failed).map_or(0, |d| d.packets);
            let note_drops = r.event_drops.iter().find(failed).map_or(0, |d| d.packets);
            assert_eq!(note_drops, lost - 1, "{what}: the lost note is counted: {:?}", r.event_drops);
            let pkt_events = r.packets_in; // every frame here is a parsed packet
            match policy {
                OnFailure::Drop => {
                    // Every packet from the failure on is dropped by the policy.
                    assert_eq!(dropped, pkt_events - PANIC_AT + 1, "{what}: {:?}", r.dropped);
                    assert_eq!(nf.counters.get("dropped_after_failure"), Some(&(pkt_events - PANIC_AT)), "{what}");
                    assert_eq!(built.load(Ordering::SeqCst), 1, "{what}");
                }
                OnFailure::Bypass => {
                    assert_eq!(dropped, 1, "{what}: only the packet lost in the failure");
                    assert_eq!(nf.counters.get("bypassed_after_failure"), Some(&(pkt_events - PANIC_AT)), "{what}");
                    assert_eq!(r.packets_out, r.packets_in - 1, "{what}");
                }
                OnFailure::Restart => {
                    assert_eq!(dropped, 1, "{what}: only the packet lost in the failure");
                    assert_eq!(nf.counters.get("restarts"), Some(&1), "{what}");
                    // The fresh instance handled every later packet.
                    assert!(nf.handled_total > PANIC_AT, "{what}: {nf:?}");
                    assert!(built.load(Ordering::SeqCst) >= 2, "{what}");
                }
                OnFailure::Stop => unreachable!(),
            }
            let summary = r.summary();
            if let Some(line) = summary.lines().find(|l| l.contains("NF failure")) {
                eprintln!("{what}:\n{line}");
            }
            assert!(
                summary.contains("NF failure: `faulty` panicked: injected fault at packet 200")
                    && summary.contains(&format!("on_failure = {policy}")),
                "{what}: {summary}"
            );
        }
    }
}

#[test]
fn a_panicking_thread_nf_with_stop_ends_the_run_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let input = input(dir.path());
    for mode in [Mode::A, Mode::C, Mode::D] {
        let app = app(OnFailure::Stop, Arc::default());
        let started = std::time::Instant::now();
        let e = match run(&app, RunOptions { mode, ..RunOptions::new(&input) }) {
            Err(e) => e,
            Ok(r) => panic!("mode {mode}: the run must fail: {}", r.to_text()),
        };
        assert!(matches!(e, RunError::Exec(_)), "mode {mode}: {e:?}");
        let msg = e.to_string();
        assert!(
            msg.contains("NF `faulty` failed at packet 200: injected fault at packet 200")
                && msg.contains("on_failure = \"stop\""),
            "mode {mode}: {msg}"
        );
        eprintln!("mode {mode}: {msg} ({:.2} s)", started.elapsed().as_secs_f64());
    }
}

#[test]
fn on_failure_is_read_from_the_app_file_and_a_bad_value_is_a_clear_error() {
    let nf = |extra: &str| {
        format!("[stack.tcp]\n[[nf]]\nname = \"s\"\nkind = \"flow_stats\"\noutput = \"/dev/null\"\n{extra}")
    };
    let app = App::parse(&nf(""), "a.toml").unwrap();
    assert_eq!(app.nfs[0].common.on_failure, OnFailure::Stop);
    for p in ["stop", "bypass", "drop", "restart"] {
        let app = App::parse(&nf(&format!("on_failure = \"{p}\"\n")), "a.toml").unwrap();
        assert_eq!(app.nfs[0].common.on_failure.as_str(), p);
    }
    let e = App::parse(&nf("on_failure = \"ignore\"\n"), "a.toml").unwrap_err().to_string();
    assert!(
        e.contains("a.toml: nf `s`: key `on_failure`: `ignore` is not \"stop\", \"bypass\", \"drop\" or \"restart\""),
        "{e}"
    );
}
