//! Broken app files give a non-zero exit and a message naming the item.

use runtime::ports::gen::GenConfig;
use tests::*;

fn run_app(app_text: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("t.pcap");
    gen_pcap(&input, &GenConfig { flows: 3, seed: 1, ..GenConfig::default() });
    let app = dir.path().join("app.toml");
    let flows = dir.path().join("flows.jsonl");
    std::fs::write(&app, app_text.replace("FLOWS", &flows.display().to_string())).unwrap();
    let o = mbox(dir.path(), &["run", app.to_str().unwrap(), "--input", input.to_str().unwrap()]);
    (o.status.success(), text(&o))
}

#[test]
fn subscription_without_a_publisher_is_named() {
    let (ok, t) =
        run_app("[[nf]]\nname = \"stats\"\nkind = \"flow_stats\"\noutput = \"FLOWS\"\nsubscribe = [\"FLOW/TCP\"]\n");
    assert!(!ok, "{t}");
    // Only the TCP monitor publishes it: the message says which table to add.
    assert!(
        t.contains("nf `stats` (flow_stats) reads `FLOW/TCP`, which only the `tcp` µStack publishes: add `[stack.tcp]` to the app file"),
        "{t}"
    );
}

#[test]
fn unknown_event_type_is_named() {
    let (ok, t) = run_app("[[nf]]\nname = \"fw\"\nkind = \"firewall\"\nsubscribe = [\"PKT/SCTP\"]\n");
    assert!(!ok, "{t}");
    assert!(t.contains("nf `fw`: key `subscribe`: unknown event type `PKT/SCTP`"), "{t}");
}

#[test]
fn unknown_keys_are_named_all_at_once() {
    let (ok, t) = run_app(
        "colour = 1\n[runtime]\nrings = 3\n[stack.l23]\nmax_flow = 3\n[[nf]]\nname = \"fw\"\nkind = \"firewall\"\ndefualt = \"drop\"\n[[nf]]\nname = \"x\"\nkind = \"teleporter\"\n",
    );
    assert!(!ok, "{t}");
    for item in ["key `colour`", "`rings`", "`max_flow`", "`defualt`", "unknown kind `teleporter`"] {
        assert!(t.contains(item), "missing {item} in:\n{t}");
    }
}

#[test]
fn a_from_naming_a_non_publisher_is_refused() {
    let (ok, t) = run_app("[[nf]]\nname = \"fw\"\nkind = \"firewall\"\nfrom = \"stats\"\n[[nf]]\nname = \"stats\"\nkind = \"flow_stats\"\noutput = \"FLOWS\"\n");
    assert!(!ok, "{t}");
    assert!(t.contains("actor `fw` port `in` subscribes to `PKT`, but `stats` does not publish `PKT`"), "{t}");
}

#[test]
fn a_toml_syntax_error_names_the_line() {
    let (ok, t) = run_app("[[nf]\nname = 1\n");
    assert!(!ok, "{t}");
    assert!(t.contains("line 1"), "{t}");
}

#[test]
fn a_missing_input_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let app = example_app(dir.path());
    let o = mbox(dir.path(), &["run", app.to_str().unwrap(), "--input", "/nonexistent/x.pcap"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("/nonexistent/x.pcap"), "{}", text(&o));
}

#[test]
fn a_direction_filter_keeps_one_direction() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("t.pcap");
    gen_pcap(&input, &GenConfig { flows: 30, seed: 2, ..GenConfig::default() });
    let flows = dir.path().join("flows.jsonl");
    let app = microboxes::App::parse(
        &format!(
            "[[nf]]\nname = \"up\"\nkind = \"flow_stats\"\noutput = {:?}\ndirection = \"to_server\"\n",
            flows.display().to_string()
        ),
        "dir.toml",
    )
    .unwrap();
    let r = microboxes::run(&app, microboxes::RunOptions::new(&input)).unwrap();
    assert!(r.ok(), "{}", r.to_text());
    let recs: Vec<serde_json::Value> =
        std::fs::read_to_string(&flows).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(recs.len(), 30);
    assert!(recs.iter().all(|r| r["flow"]["pkts_toclient"] == 0 && r["flow"]["pkts_toserver"].as_u64().unwrap() > 0));
    let (ok, t) = run_app("[[nf]]\nname = \"fw\"\nkind = \"firewall\"\ndirection = \"up\"\n");
    assert!(!ok && t.contains("key `direction`"), "{t}");
}

#[test]
fn a_rewriting_monitor_is_refused_in_modes_a_and_d() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("t.pcap");
    gen_pcap(&input, &GenConfig { flows: 3, seed: 1, ..GenConfig::default() });
    let app = repo_file("apps/rewrite.toml");
    for mode in ["a", "d"] {
        let o = mbox(dir.path(), &["run", app.to_str().unwrap(), "--input", input.to_str().unwrap(), "--mode", mode]);
        let t = text(&o);
        assert!(!o.status.success(), "mode {mode}: {t}");
        assert!(t.contains("[stack.tcp.modify]") && t.contains(&format!("not mode {mode}")), "mode {mode}: {t}");
    }
    let o = mbox(dir.path(), &["run", app.to_str().unwrap(), "--input", input.to_str().unwrap(), "--mode", "c"]);
    assert!(o.status.success(), "mode c: {}", text(&o));
}

/// The split proxy µStack and its NFs (docs/proxy.md): an NF that runs inside the proxy
/// needs `[stack.proxy]` and takes no event-selecting keys; the table's own errors are
/// collected; the proxy does not share the loopback with the splicer.
#[test]
fn proxy_nfs_and_the_proxy_table_are_checked() {
    let (ok, t) = run_app("[[nf]]\nname = \"c\"\nkind = \"cache\"\nfilter = { dst_port = 80 }\n");
    assert!(!ok, "{t}");
    assert!(
        t.contains("nf `c` (cache) runs inside the split proxy µStack: add `[stack.proxy]` to the app file"),
        "{t}"
    );
    assert!(t.contains("nf `c` (cache): key `filter` does not apply to an NF inside the split proxy"), "{t}");

    let (ok, t) = run_app(
        "[stack.proxy]\nservices = [\"10.0.0.1:80\", \"10.0.0.2:81\", \"nowhere\"]\nsource = \"10.0.0.1\"\nmac = \"zz\"\nrx_buffer = 10\n",
    );
    assert!(!ok, "{t}");
    for want in [
        "key `stack.proxy.services`: `nowhere` is not an IPv4 ADDRESS:PORT",
        "key `stack.proxy.services`: all services share one port",
        "key `stack.proxy.origin`: virtual services need an origin",
        "key `stack.proxy.source`: must differ from every service address",
        "key `stack.proxy.mac`: `zz` is not a MAC address",
        "key `stack.proxy.rx_buffer`: must be 1024 to",
    ] {
        assert!(t.contains(want), "missing `{want}` in:\n{t}");
    }
    let (ok, t) = run_app("[stack.proxy]\nsource = \"10.0.0.9\"\n");
    assert!(!ok && t.contains("give `services = [\"ADDRESS:PORT\"]` or `intercept_port = PORT`"), "{t}");
    let (ok, t) = run_app(
        "[stack.proxy]\nintercept_port = 80\nsource = \"10.0.0.9\"\n[stack.splicer]\nservices = [\"10.0.0.1:80\"]\nsource = \"10.0.0.2\"\n",
    );
    assert!(
        !ok && t.contains("[stack.proxy] cannot run beside another µStack that sends frames ([stack.splicer])"),
        "{t}"
    );
    let (ok, t) = run_app("[stack.proxy]\nintercept_port = 80\nsource = \"10.0.0.9\"\n[[nf]]\nname = \"c\"\nkind = \"cache\"\nmax_object = 0\n");
    assert!(!ok && t.contains("nf `c` (cache): key `max_object`: must be 1 to `max_bytes`"), "{t}");
}

/// apps/proxy.toml and apps/cache.toml: refused in modes a and d (the proxy owns its
/// connections and sends frames), and run offline in mode c (frames that are not the
/// proxy's pass unchanged).
#[test]
fn the_proxy_apps_run_in_modes_b_and_c_only() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("t.pcap");
    gen_pcap(&input, &GenConfig { flows: 3, seed: 1, ..GenConfig::default() });
    for app in ["apps/proxy.toml", "apps/cache.toml"] {
        let app = repo_file(app);
        for mode in ["a", "d"] {
            let o =
                mbox(dir.path(), &["run", app.to_str().unwrap(), "--input", input.to_str().unwrap(), "--mode", mode]);
            let t = text(&o);
            assert!(!o.status.success(), "{app:?} mode {mode}: {t}");
            assert!(t.contains("[stack.proxy]") && t.contains(&format!("not mode {mode}")), "mode {mode}: {t}");
        }
        let o = mbox(dir.path(), &["run", app.to_str().unwrap(), "--input", input.to_str().unwrap(), "--mode", "c"]);
        let t = text(&o);
        assert!(o.status.success(), "{app:?} mode c: {t}");
        assert!(t.contains("proxy"), "{t}");
    }
}

/// The proxy's per-flow upgrade (docs/proxy.md "Per-flow upgrade to the proxy"): it needs
/// transparent interception, and a policy NF that answers the proxy's `FLOW_REQ`s; with
/// `proxy_select` the app runs, and a bad `hosts` list is named.
#[test]
fn the_proxy_upgrade_needs_intercept_port_and_a_policy_nf() {
    let (ok, t) = run_app(
        "[stack.proxy]\nservices = [\"10.0.0.1:80\"]\norigin = \"10.0.0.3:80\"\nsource = \"10.0.0.9\"\nupgrade = \"on_request\"\n",
    );
    assert!(!ok && t.contains("key `stack.proxy.upgrade`: `upgrade = \"on_request\"` needs `intercept_port`"), "{t}");
    let (ok, t) = run_app("[stack.proxy]\nintercept_port = 80\nsource = \"10.0.0.9\"\nupgrade = \"on_request\"\n");
    assert!(!ok && t.contains("publishes `FLOW_REQ`, but no policy NF takes it") && t.contains("proxy_select"), "{t}");
    let select = "[[nf]]\nname = \"select\"\nkind = \"proxy_select\"\n";
    let (ok, t) = run_app(&format!(
        "[stack.proxy]\nintercept_port = 80\nsource = \"10.0.0.9\"\nupgrade = \"on_request\"\n{select}hosts = [\"web\"]\n"
    ));
    assert!(!ok && t.contains("nf `select` (proxy_select): key `hosts`: `web` is not an IPv4 address"), "{t}");
    let (ok, t) = run_app(&format!(
        "[stack.proxy]\nintercept_port = 80\nsource = \"10.0.0.9\"\nupgrade = \"on_request\"\n{select}hosts = [\"10.0.0.2\"]\n"
    ));
    assert!(ok, "{t}");
}
