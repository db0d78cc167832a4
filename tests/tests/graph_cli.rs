//! `mbox graph APP`: the linked publish/subscribe graph of an app file, as text and DOT,
//! without running anything or writing any output file.

use std::process::Command;

fn graph(dir: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(tests::mbox_bin()).arg("graph").args(args).current_dir(dir).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn the_ids_app_graph_names_every_link() {
    let dir = tempfile::tempdir().unwrap();
    let app = tests::repo_file("apps/fig7c/4-dynamic.toml");
    let app = app.to_str().unwrap();
    let (ok, text, err) = graph(dir.path(), &[app]);
    assert!(ok, "{err}");
    for line in [
        "actors, in chain order: rx (rx, port) -> l23 (l23, stack) -> tcp (tcp_monitor, stack) -> dpi (dpi, nf) -> ids (signature_match, nf)",
        "rx --FRAME--> l23.frames  [consumes]",
        "tcp --PKT/TCP--> ids.in  [side = \"server\", direction = \"to_server\"]",
        "dpi --EVENT/DPI_DETECT--> ids.dpi",
    ] {
        assert!(text.lines().any(|l| l == line), "missing `{line}` in:\n{text}");
    }
    // The detection is DPI's own event: no `side` on its link.
    assert!(!text.lines().any(|l| l.starts_with("dpi --EVENT/DPI_DETECT") && l.contains("side")), "{text}");
    let (ok, dot, _) = graph(dir.path(), &[app, "--dot"]);
    assert!(ok && dot.starts_with("digraph mbox {") && dot.trim_end().ends_with('}'), "{dot}");
    let edges = text.lines().filter(|l| l.contains("--> ")).count();
    assert_eq!(dot.matches(" -> ").count(), edges, "one DOT edge per link:\n{dot}");
    assert!(dot.contains("\"tcp\" [shape=box"), "µStacks are boxes:\n{dot}");
    // Nothing was written: the NFs' outputs are not created by a graph.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn a_broken_app_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[[nf]]\nname = \"x\"\nkind = \"stream_hash\"\noutput = \"h.jsonl\"\n").unwrap();
    let (ok, out, err) = graph(dir.path(), &[bad.to_str().unwrap()]);
    assert!(!ok && out.is_empty(), "{out}");
    assert!(err.contains("add `[stack.tcp]`"), "{err}");
}

/// The split proxy's NFs are no actors of the chain: the graph shows them inside it.
#[test]
fn the_cache_app_graph_shows_the_nf_inside_the_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let app = tests::repo_file("apps/cache.toml");
    let app = app.to_str().unwrap();
    let (ok, text, err) = graph(dir.path(), &[app]);
    assert!(ok, "{err}");
    for line in [
        "actors, in chain order: rx (rx, port) -> l23 (l23, stack) -> proxy (proxy, stack)",
        "l23 --PKT--> proxy.frames  [consumes]",
        "inside proxy, on its bytestreams, in order: cache (cache)",
    ] {
        assert!(text.lines().any(|l| l == line), "missing `{line}` in:\n{text}");
    }
    let (ok, dot, _) = graph(dir.path(), &[app, "--dot"]);
    assert!(ok && dot.contains("\"proxy\" -> \"cache\" [style=dashed"), "{dot}");
    let (ok, text, err) = graph(dir.path(), &[tests::repo_file("apps/proxy.toml").to_str().unwrap()]);
    assert!(ok && !text.contains("inside proxy"), "no NF: the proxy passes bytes\n{text}{err}");
}
