//! Traces of long runs: `--window`/`--packets` select what `mbox trace render` draws and what
//! `mbox run --trace-window/--trace-packets` writes; more slices than the cap are drawn as
//! per-actor utilisation; the `--trace-limit` hint shows only when spans were dropped.

use microboxes::trace::render::{render_html_with, RenderOptions, RenderSpan, Selection};
use runtime::ports::gen::GenConfig;
use serde_json::{json, Value};
use tests::{example_app, gen_pcap, mbox, text};

/// `n` packets through rx (core 0) and fw (core 1), 10 µs apart, 4 µs each.
fn spans(n: u64) -> Vec<RenderSpan> {
    (0..n)
        .flat_map(|i| {
            ["rx", "fw"].into_iter().enumerate().map(move |(k, actor)| RenderSpan {
                core: k as u64,
                actor: actor.into(),
                actor_kind: actor.into(),
                kind: "handle".into(),
                seq: Some(i + 1),
                flow: None,
                event: "PKT".into(),
                publisher: "rx".into(),
                start_us: i as f64 * 10.0 + k as f64 * 5.0,
                dur_us: 4.0,
            })
        })
        .collect()
}

/// (start, label) of every drawn slice of a rendered page.
fn drawn(html: &str) -> Vec<(f64, String)> {
    html.split("<rect class=\"s handle\"")
        .skip(1)
        .map(|r| {
            let attr = |k: &str| r.split(&format!("{k}=\"")).nth(1).unwrap().split('"').next().unwrap().to_string();
            (attr("data-s").parse().unwrap(), attr("data-l"))
        })
        .collect()
}

#[test]
fn a_window_draws_only_its_slices_of_a_large_trace() {
    let all = spans(30_000); // 60k slices, over the default cap
    let sel = Selection { window_us: Some((100_000.0, 101_000.0)), packets: None };
    let html = render_html_with(&all, "w", &RenderOptions { selection: sel, ..RenderOptions::default() });
    let d = drawn(&html);
    assert_eq!(d.len(), 200, "100 packets x 2 actors");
    assert!(d.iter().all(|(s, _)| (100_000.0..101_000.0).contains(s)), "{d:?}");
    assert!(html.contains("drew 200 of 60000 slices (200 selected: window 100..101 ms)"));
    // A packet range.
    let sel = Selection { window_us: None, packets: Some((7, 9)) };
    let html = render_html_with(&all, "p", &RenderOptions { selection: sel, ..RenderOptions::default() });
    let labels: Vec<String> = drawn(&html).into_iter().map(|d| d.1).collect();
    assert_eq!(labels, ["rx #7", "fw #7", "rx #8", "fw #8", "rx #9", "fw #9"]);
}

#[test]
fn too_many_slices_draw_each_actors_utilisation() {
    let all = spans(30_000);
    let html = render_html_with(&all, "u", &RenderOptions::default());
    assert!(drawn(&html).is_empty(), "no single slices");
    assert!(html.contains("utilisation view: 60000 slices selected of 60000"), "the page says so");
    assert!(html.contains("choose a window (--window FROM..TO, ms)"));
    assert!(html.contains(r#"data-actor="rx""#) && html.contains(r#"data-actor="fw""#), "one row per actor");
    // Each actor is busy 4 µs of every 10: 40 %.
    let bars = html.matches("<rect class=\"s util\"").count();
    assert!(bars >= 2 * 290, "{bars} bars");
    assert!(html.contains("busy 40.0 %"), "busy fraction in the hover text");
    // Under the cap, the same trace is drawn slice by slice.
    let few = render_html_with(&all[..1000], "f", &RenderOptions::default());
    assert_eq!(drawn(&few).len(), 1000);
    assert!(!few.contains("utilisation view"));
}

#[test]
fn mbox_trace_render_window_and_packets() {
    let dir = tempfile::tempdir().unwrap();
    let events: Vec<Value> = spans(5_000)
        .iter()
        .map(|s| json!({"ph": "X", "name": s.label(), "tid": s.core, "ts": s.start_us, "dur": s.dur_us, "args": {"actor": s.actor, "packet": s.seq}}))
        .collect();
    std::fs::write(dir.path().join("t.json"), json!({ "traceEvents": events }).to_string()).unwrap();
    let o = mbox(dir.path(), &["trace", "render", "t.json", "-o", "w.html", "--window", "1..2"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("drew 200 of 10000 spans (200 selected: window 1..2 ms)"), "{}", text(&o));
    let d = drawn(&std::fs::read_to_string(dir.path().join("w.html")).unwrap());
    assert!(d.iter().all(|(s, _)| (1000.0..2000.0).contains(s)));
    let o = mbox(dir.path(), &["trace", "render", "t.json", "-o", "p.svg", "--packets", "10..19", "--max-slices", "5"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("utilisation"), "{}", text(&o));
    let o = mbox(dir.path(), &["trace", "render", "t.json", "-o", "x.html", "--window", "5..1"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("FROM is after TO"), "{}", text(&o));
}

/// A trace file and its complete (`ph: "X"`) events.
fn complete_events(p: &std::path::Path) -> (Value, Vec<Value>) {
    let v: Value = serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
    let x = v["traceEvents"].as_array().unwrap().iter().filter(|e| e["ph"] == "X").cloned().collect();
    (v, x)
}

#[test]
fn run_trace_selection_and_the_limit_hint() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("t.pcap");
    gen_pcap(&input, &GenConfig { flows: 10, seed: 5, ..GenConfig::default() });
    let app = example_app(dir.path());
    let run = |extra: &[&str]| {
        let mut args = vec!["run", app.to_str().unwrap(), "--input", input.to_str().unwrap()];
        args.extend_from_slice(extra);
        mbox(dir.path(), &args)
    };
    // Nothing dropped: no hint.
    let o = run(&["--trace", "all.json"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("spans to all.json"), "{}", text(&o));
    assert!(!text(&o).contains("--trace-limit"), "{}", text(&o));
    // Dropped: the hint, with the count.
    let o = run(&["--trace", "few.json", "--trace-limit", "3"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("dropped at the limit of 3 per actor: raise --trace-limit"), "{}", text(&o));
    // Packets 5..7 only.
    let o = run(&["--trace", "p.json", "--trace-packets", "5..7"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("recorded (packets 5..7)"), "{}", text(&o));
    let (v, spans) = complete_events(&dir.path().join("p.json"));
    let packets: Vec<u64> = spans.iter().map(|e| e["args"]["packet"].as_u64().unwrap()).collect();
    assert!(!packets.is_empty() && packets.iter().all(|p| (5..=7).contains(p)), "{packets:?}");
    assert_eq!(v["metadata"]["selection"], "packets 5..7");
    // A window: every span starts in it.
    let o = run(&["--trace", "w.json", "--trace-window", "..0.5"]);
    assert!(o.status.success(), "{}", text(&o));
    let ts: Vec<f64> =
        complete_events(&dir.path().join("w.json")).1.iter().map(|e| e["ts"].as_f64().unwrap()).collect();
    assert!(!ts.is_empty() && ts.iter().all(|t| *t < 500.0), "{ts:?}");
}
