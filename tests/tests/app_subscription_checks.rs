//! Subscriptions under which an NF can never receive what it needs are refused at load, and
//! ones that cannot work fully are warned about — each message naming the NF and the keys
//! (issue 19: an `after_dpi` matcher that silently inspected nothing).

use microboxes::App;

fn rules() -> String {
    tests::repo_file("apps/ids.rules").display().to_string()
}

fn app(stack: bool, dpi: &str, ids: &str) -> Result<App, Vec<String>> {
    let text = format!(
        "{}[[nf]]\nname = \"dpi\"\nkind = \"dpi\"\n{dpi}\n[[nf]]\nname = \"ids\"\nkind = \"signature_match\"\nrules = {:?}\noutput = \"alerts.jsonl\"\n{ids}\n",
        if stack { "[stack.tcp]\n" } else { "" },
        rules()
    );
    App::parse(&text, "a.toml").map_err(|e| e.0)
}

#[test]
fn a_gate_that_can_never_open_is_refused() {
    let errs = app(true, "on = \"packets\"\nfilter = { proto = \"udp\" }", "on = \"packets\"\nafter_dpi = \"http\"")
        .unwrap_err();
    assert!(
        errs.iter().any(|e| e.starts_with("a.toml: nf `ids` (signature_match): key `after_dpi = \"http\"`")
            && e.contains("nf `dpi` (dpi) key `filter`")
            && e.contains("inspect nothing")),
        "{errs:?}"
    );
    let errs =
        app(true, "on = \"packets\"\nsubscribe = [\"PKT/UDP\"]", "on = \"packets\"\nafter_dpi = \"tls\"").unwrap_err();
    assert!(errs.iter().any(|e| e.contains("nf `dpi` (dpi) key `subscribe`") && e.contains("`tls`")), "{errs:?}");
    // The same DPI is fine for a UDP protocol.
    let ok =
        app(true, "on = \"packets\"\nfilter = { proto = \"udp\" }", "on = \"packets\"\nafter_dpi = \"dns\"").unwrap();
    assert!(ok.warnings.is_empty(), "{:?}", ok.warnings);
}

#[test]
fn a_filter_on_packetless_events_is_refused() {
    let errs = app(true, "", "filter = { dst_port = 80 }").unwrap_err();
    assert!(
        errs.iter().any(|e| e.contains("actor `ids` port `data` subscribes to `DATA_RDY` with a `filter`")
            && e.contains("receive nothing")),
        "{errs:?}"
    );
    // On packet events a filter is what it always was.
    let ok = app(true, "", "on = \"packets\"\nfilter = { dst_port = 80 }").unwrap();
    assert!(ok.warnings.is_empty(), "{:?}", ok.warnings);
}

#[test]
fn gates_that_open_late_or_never_alert_are_warned_about() {
    let w = app(false, "on = \"packets\"", "on = \"packets\"\nafter_dpi = \"http\"").unwrap().warnings;
    assert!(
        w.iter().any(|w| w.contains("nf `ids`") && w.contains("no `[stack.tcp]`") && w.contains("nf `dpi`")),
        "{w:?}"
    );
    let w = app(true, "", "after_dpi = \"dns\"").unwrap().warnings;
    assert!(w.iter().any(|w| w.contains("nf `ids`") && w.contains("`on = \"stream\"`") && w.contains("UDP")), "{w:?}");
    // A rule set with no rule for the protocol's transport.
    let dir = tempfile::tempdir().unwrap();
    let udp_only = dir.path().join("udp.rules");
    std::fs::write(&udp_only, "alert udp any any -> any 53 (msg:\"dns\"; content:\"bad\"; sid:1;)\n").unwrap();
    let text = format!(
        "[stack.tcp]\n[[nf]]\nname = \"dpi\"\nkind = \"dpi\"\n[[nf]]\nname = \"ids\"\nkind = \"signature_match\"\nrules = {:?}\noutput = \"a.jsonl\"\nafter_dpi = \"http\"\n",
        udp_only.display().to_string()
    );
    let w = App::parse(&text, "a.toml").unwrap().warnings;
    assert!(w.iter().any(|w| w.contains("no rule in") && w.contains("applies to tcp")), "{w:?}");
    // The paper's configuration 4 (setup 3 + after_dpi) loads without a word.
    let keys = "on = \"packets\"\nside = \"server\"\ndirection = \"to_server\"";
    let ok = app(true, keys, &format!("{keys}\nafter_dpi = \"http\"\nstop_after_alert = true")).unwrap();
    assert!(ok.warnings.is_empty(), "{:?}", ok.warnings);
}

/// `mbox run` and `mbox check` print the warnings; `-q` silences them.
#[test]
fn the_cli_prints_warnings() {
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("w.toml");
    std::fs::write(
        &app,
        format!(
            "[[nf]]\nname = \"dpi\"\nkind = \"dpi\"\non = \"packets\"\n[[nf]]\nname = \"ids\"\nkind = \"signature_match\"\non = \"packets\"\nrules = {:?}\noutput = \"alerts.jsonl\"\nafter_dpi = \"http\"\n",
            rules()
        ),
    )
    .unwrap();
    let input = tests::repo_file("tests/fixtures/captures/ids_http_attacks.pcap");
    let run = |quiet: bool| {
        let mut c = std::process::Command::new(tests::mbox_bin());
        c.arg("run").arg(&app).arg("--input").arg(&input).arg("--output-dir").arg(dir.path());
        if quiet {
            c.arg("-q");
        }
        let out = c.output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let loud = run(false);
    assert!(loud.contains("mbox: warning: ") && loud.contains("nf `ids`"), "{loud}");
    assert!(!run(true).contains("warning"), "-q prints only errors");
}
