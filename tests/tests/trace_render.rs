//! The trace viewer: SVG and HTML timelines from a real traced run, checked as XML, in
//! headless Chromium when it is installed, and through the `mbox` command line.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use microboxes::trace::export::{render_spans, RenderSpan};
use microboxes::trace::render::{packet_colour, render_html, render_svg, render_svg_with, RenderOptions};
use microboxes::{App, RunOptions};
use runtime::ports::gen::GenConfig;
use tests::*;

fn traced_spans(dir: &Path, flows: usize, tag: &str) -> Vec<RenderSpan> {
    let input = dir.join("t.pcap");
    gen_pcap(&input, &GenConfig { flows, seed: 11, ..GenConfig::default() });
    let app = App::load(&example_app(dir)).expect("example app");
    let mut opts = RunOptions::new(&input);
    opts.prefix = Some(format!("trender-{tag}-{}", std::process::id()));
    opts.trace = Some(1_000_000);
    let report = microboxes::run(&app, opts).expect("run");
    assert!(report.ok(), "{}", report.to_text());
    render_spans(report.trace.as_ref().expect("trace"))
}

/// A small XML well-formedness check: tags balance, attributes are quoted, entities are
/// known. Returns the element names in document order.
fn check_xml(doc: &str) -> Vec<String> {
    let mut stack: Vec<String> = Vec::new();
    let mut names = Vec::new();
    let mut rest = doc;
    let mut guard = 0usize;
    while let Some(lt) = rest.find('<') {
        guard += 1;
        assert!(guard < 10_000_000, "runaway parse");
        check_text(&rest[..lt]);
        rest = &rest[lt..];
        if let Some(r) = rest.strip_prefix("<?") {
            rest = &r[r.find("?>").expect("unterminated <?") + 2..];
            continue;
        }
        if let Some(r) = rest.strip_prefix("<!--") {
            rest = &r[r.find("-->").expect("unterminated comment") + 3..];
            continue;
        }
        let gt = rest.find('>').expect("unterminated tag");
        let tag = &rest[1..gt];
        rest = &rest[gt + 1..];
        if let Some(name) = tag.strip_prefix('/') {
            let open = stack.pop().unwrap_or_else(|| panic!("</{name}> closes nothing"));
            assert_eq!(open, name.trim(), "mismatched close tag");
            continue;
        }
        let self_closing = tag.ends_with('/');
        let body = tag.trim_end_matches('/');
        let name = body.split_whitespace().next().expect("tag name").to_string();
        assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == ':'), "bad tag name {name:?}");
        check_attrs(&body[name.len()..]);
        names.push(name.clone());
        if !self_closing {
            stack.push(name);
        }
    }
    check_text(rest);
    assert!(stack.is_empty(), "unclosed: {stack:?}");
    names
}

fn check_text(t: &str) {
    assert!(!t.contains('>') || t.trim().is_empty() || !t.contains('<'), "stray markup in {t:?}");
    let mut r = t;
    while let Some(i) = r.find('&') {
        let semi = r[i..].find(';').unwrap_or_else(|| panic!("bare & in {t:?}"));
        let ent = &r[i + 1..i + semi];
        assert!(["amp", "lt", "gt", "quot", "#39"].contains(&ent), "unknown entity &{ent};");
        r = &r[i + semi + 1..];
    }
}

fn check_attrs(mut a: &str) {
    for _ in 0..1000 {
        a = a.trim_start();
        if a.is_empty() {
            return;
        }
        let eq = a.find('=').unwrap_or_else(|| panic!("attribute without value: {a:?}"));
        let name = a[..eq].trim();
        assert!(!name.is_empty() && !name.contains(char::is_whitespace), "bad attribute name {name:?}");
        let v = &a[eq + 1..];
        assert!(v.starts_with('"'), "unquoted attribute {name}");
        let end = v[1..].find('"').expect("unterminated attribute value") + 1;
        check_text(&v[1..end]);
        assert!(!v[1..end].contains('<'), "< in attribute {name}");
        a = &v[end + 1..];
    }
    panic!("too many attributes");
}

fn cores_of(spans: &[RenderSpan]) -> std::collections::BTreeSet<u64> {
    spans.iter().map(|s| s.core).collect()
}

#[test]
fn svg_is_well_formed_with_one_row_per_core() {
    let dir = tempfile::tempdir().unwrap();
    let spans = traced_spans(dir.path(), 20, "svg");
    let svg = render_svg(&spans, "fw & stats <test>");
    let names = check_xml(&svg);
    assert_eq!(names.first().map(String::as_str), Some("svg"));
    let cores = cores_of(&spans);
    assert!(cores.len() >= 2, "the default placement uses two cores: {cores:?}");
    assert_eq!(svg.matches(r#"<g class="row""#).count(), cores.len());
    for c in &cores {
        assert!(svg.contains(&format!(">core {c}</text>")), "label of core {c}");
    }
    // Every slice drawn, with its hover title; colours by packet; a µs axis; the escaped title.
    assert_eq!(svg.matches("<rect class=\"s ").count(), spans.len());
    assert_eq!(svg.matches("<title>").count(), spans.len());
    assert!(svg.contains(packet_colour(Some(1))));
    assert!(svg.contains(" µs</text>"));
    assert!(svg.contains("fw &amp; stats &lt;test&gt;"));
    assert!(svg.contains(&format!("drew {n} of {n} slices", n = spans.len())));
    assert!(!svg.contains("http://") || svg.matches("http://").count() == 1, "only the SVG namespace");
}

#[test]
fn palette_is_stable_by_packet() {
    assert_eq!(packet_colour(Some(1)), packet_colour(Some(13)));
    assert_ne!(packet_colour(Some(1)), packet_colour(Some(2)));
    assert_eq!(packet_colour(Some(1)), "#8dd3c7");
}

#[test]
fn large_traces_are_capped() {
    let spans: Vec<RenderSpan> = (0..500u64)
        .map(|i| RenderSpan {
            core: i % 3,
            actor: "fw".into(),
            actor_kind: "firewall".into(),
            kind: "handle".into(),
            seq: Some(i + 1),
            flow: None,
            event: "PKT".into(),
            publisher: "l23".into(),
            start_us: i as f64,
            dur_us: 0.5,
        })
        .collect();
    let svg = render_svg_with(&spans, "cap", &RenderOptions { max_slices: 100, ..RenderOptions::default() });
    check_xml(&svg);
    // More slices than the cap: each actor's utilisation instead of the earliest slices.
    assert_eq!(svg.matches("<rect class=\"s handle").count(), 0);
    assert!(svg.matches("<rect class=\"s util").count() > 0);
    assert!(svg.contains("utilisation view: 500 slices selected of 500"), "{svg}");
    // Labels appear inside slices wide enough for them.
    let few = render_svg(&spans[..3], "few");
    assert!(few.contains(">fw #1</text>"), "{few}");
    // Nothing recorded: still a valid page and image.
    check_xml(&render_svg(&[], "empty"));
    assert!(render_html(&[], "empty").contains("no spans recorded"));
}

#[test]
fn html_is_self_contained() {
    let dir = tempfile::tempdir().unwrap();
    let spans = traced_spans(dir.path(), 10, "html");
    let html = render_html(&spans, "run");
    assert!(html.starts_with("<!DOCTYPE html>"));
    for banned in ["<script src", "<link", "@import", "url(http", "https://"] {
        assert!(!html.contains(banned), "external resource: {banned}");
    }
    let start = html.find("<svg").unwrap();
    let end = html.find("</svg>").unwrap() + "</svg>".len();
    check_xml(&html[start..end]);
    assert_eq!(html.matches(r#"<g class="row""#).count(), cores_of(&spans).len());
    assert!(html.contains(r#"id="reset""#) && html.contains(r#"id="t0""#) && html.contains(r#"id="t1""#));
    assert!(html.contains("data-s=\"") && html.contains("data-d=\""));
}

/// Runs `cmd` for at most `limit`, killing it (by its own handle) past that. Returns
/// (finished in time, stdout, stderr).
fn run_bounded(mut cmd: Command, limit: Duration) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let (out, err) = (dir.path().join("out"), dir.path().join("err"));
    let mut child = cmd
        .stdout(Stdio::from(std::fs::File::create(&out).unwrap()))
        .stderr(Stdio::from(std::fs::File::create(&err).unwrap()))
        .spawn()
        .expect("spawn");
    let start = Instant::now();
    let mut done = false;
    while start.elapsed() < limit {
        if child.try_wait().expect("wait").is_some() {
            done = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if !done {
        let _ = child.kill();
    }
    let _ = child.wait();
    let read = |p: &PathBuf| String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned();
    (done, read(&out), read(&err))
}

fn chromium(profile: &Path) -> Command {
    let mut c = Command::new("/usr/bin/chromium");
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1400,900",
    ])
    .arg(format!("--user-data-dir={}", profile.display()));
    c
}

#[test]
fn html_loads_in_headless_chromium() {
    if !Path::new("/usr/bin/chromium").exists() {
        tests::skip("trace_render::html_loads_in_headless_chromium", "/usr/bin/chromium is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let spans = traced_spans(dir.path(), 20, "chromium");
    let page = dir.path().join("trace.html");
    std::fs::write(&page, render_html(&spans, "headless check")).unwrap();
    let url = format!("file://{}", page.canonicalize().unwrap().display());

    // The DOM after the script ran: it marks the SVG ready, and the rows are there.
    let profile = tempfile::tempdir().unwrap();
    let mut c = chromium(profile.path());
    c.args(["--enable-logging=stderr", "--v=0", "--dump-dom"]).arg(&url);
    let (done, dom, log) = run_bounded(c, Duration::from_secs(90));
    assert!(done, "chromium --dump-dom timed out");
    assert!(!log.contains("Uncaught") && !dom.contains("Uncaught"), "JavaScript error:\n{log}");
    assert!(dom.contains(r#"data-ready="1""#), "the page's script did not finish:\n{log}");
    assert_eq!(dom.matches(r#"class="row""#).count(), cores_of(&spans).len());
    assert!(dom.contains("class=\"tick\""), "axis ticks drawn by the script");

    // A screenshot, zoomed on the first 25 µs so labels show (kept for people to look at).
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("trace_render_screenshot.png");
    let _ = std::fs::remove_file(&shot);
    let profile = tempfile::tempdir().unwrap();
    let mut c = chromium(profile.path());
    c.arg(format!("--screenshot={}", shot.display())).arg(format!("{url}#0-25"));
    let (done, _, log) = run_bounded(c, Duration::from_secs(90));
    assert!(done, "chromium --screenshot timed out");
    let png = std::fs::read(&shot).unwrap_or_else(|e| panic!("no screenshot ({e}):\n{log}"));
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let width = u32::from_be_bytes(png[16..20].try_into().unwrap());
    assert_eq!(width, 1400);
    assert!(png.len() > 8_000, "a nearly blank screenshot ({} bytes)", png.len());
    eprintln!("screenshot: {}", shot.display());
}

#[test]
fn mbox_run_trace_and_render() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("t.pcap");
    gen_pcap(&input, &GenConfig { flows: 10, seed: 5, ..GenConfig::default() });
    let app = example_app(dir.path());
    let o = mbox(
        dir.path(),
        &[
            "run",
            app.to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
            "--trace",
            "t.json",
            "--trace-limit",
            "100000",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("spans to t.json"), "{}", text(&o));
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("t.json")).unwrap()).unwrap();
    assert!(v["traceEvents"].as_array().unwrap().len() > 100);

    for out in ["t.html", "t.svg"] {
        let o = mbox(dir.path(), &["trace", "render", "t.json", "-o", out]);
        assert!(o.status.success(), "{}", text(&o));
        assert!(text(&o).contains("drew"), "{}", text(&o));
        let body = std::fs::read_to_string(dir.path().join(out)).unwrap();
        assert!(body.contains(r#"<g class="row""#));
    }
    let o = mbox(dir.path(), &["trace", "render", "t.json", "-o", "t.png"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("*.html or *.svg"), "{}", text(&o));
    let o = mbox(dir.path(), &["trace", "render", "missing.json", "-o", "t.svg"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("missing.json"), "{}", text(&o));
    // --trace-limit needs --trace.
    let o = mbox(dir.path(), &["run", app.to_str().unwrap(), "--input", input.to_str().unwrap(), "--trace-limit", "5"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}
