//! `mbox ctl PREFIX status|stats|reload|graph` against a running `mbox run` fed through a
//! pipe, and SIGHUP (docs/reconfiguration.md). The pipe is fed in parts, so the run waits
//! for input at known packet numbers: a reload asked for there applies from exactly the next
//! packet, and the run's alerts must equal an offline run with `--reload-at` at the packet
//! numbers the run reported. A refused reload changes nothing. Socket hygiene: mode 0600,
//! gone after the run, a stale one named as such and replaced by the next run.

use std::io::Write;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use runtime::ports::gen::GenConfig;
use tests::*;

fn ids_app(dir: &Path, name: &str, rules_file: &str) -> PathBuf {
    let app = dir.join(name);
    std::fs::write(
        &app,
        format!("[stack.tcp]\n\n[[nf]]\nname = \"ids\"\nkind = \"signature_match\"\nrules = \"{rules_file}\"\noutput = \"alerts.jsonl\"\n"),
    )
    .unwrap();
    app
}

fn ctl(dir: &Path, prefix: &str, req: &str) -> (Output, serde_json::Value) {
    let o = mbox(dir, &["ctl", prefix, req, "--json"]);
    let v = serde_json::from_slice(&o.stdout).unwrap_or(serde_json::Value::Null);
    (o, v)
}

/// Polls `status` until `pred` holds (20 s at most).
fn wait_status(
    dir: &Path,
    prefix: &str,
    child: &mut Child,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(child.try_wait().unwrap().is_none(), "mbox ended early");
        let (_, v) = ctl(dir, prefix, "status");
        if pred(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "status never reached the wanted state; last: {v}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn ctl_reload_and_sighup_apply_from_the_next_packet_and_equal_an_offline_reload() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let input = d.join("all.pcap");
    gen_pcap(&input, &GenConfig { flows: 120, seed: 4, attacks: 8, concurrency: 8, ..GenConfig::default() });
    let bytes = std::fs::read(&input).unwrap();
    // Where each record starts (the pcap header is 24 bytes, a record's header 16).
    let mut starts = vec![24usize];
    while *starts.last().unwrap() < bytes.len() {
        let p = *starts.last().unwrap();
        let caplen = u32::from_le_bytes(bytes[p + 8..p + 12].try_into().unwrap()) as usize;
        starts.push(p + 16 + caplen);
    }
    let n = starts.len() - 1;
    let (k1, k2) = (n / 3, 2 * n / 3);
    let rules_a = std::fs::read_to_string(repo_file("apps/ids.rules")).unwrap();
    std::fs::write(d.join("a.rules"), &rules_a).unwrap();
    std::fs::write(
        d.join("b.rules"),
        rules_a + "alert tcp any any -> any any (msg:\"GET\"; content:\"GET /\"; flow:to_server; sid:9;)\n",
    )
    .unwrap();
    std::fs::write(d.join("bad.rules"), "alert tcp any any -> any any (msg:\"x\"; frob; sid:1;)\nalert tcp any any -> any any (msg:\"y\"; content:\"y\"; nope:2; sid:2;)\n").unwrap();
    let app = ids_app(d, "ids.toml", "a.rules");
    let fifo = d.join("in.pcap");
    assert!(Command::new("mkfifo").args(["-m", "600"]).arg(&fifo).status().unwrap().success(), "mkfifo");
    let prefix = format!("ctl{}", std::process::id());
    let mut child = Command::new(mbox_bin())
        .args(["run", "ids.toml", "--input", "in.pcap", "--prefix", &prefix, "--no-progress", "--stats-json", "s.json"])
        .current_dir(d)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The feeder writes the capture's bytes in parts (whole frames), each when told.
    let (go, parts) = mpsc::channel::<std::ops::Range<usize>>();
    let feeder_path = fifo.clone();
    let feeder = std::thread::spawn(move || {
        let mut f = std::fs::OpenOptions::new().write(true).open(&feeder_path).unwrap();
        while let Ok(range) = parts.recv_timeout(Duration::from_secs(30)) {
            f.write_all(&bytes[range]).unwrap();
            f.flush().unwrap();
        }
    });
    go.send(0..starts[k1]).unwrap();
    let v = wait_status(d, &prefix, &mut child, |v| v["packets_in"].as_u64() == Some(k1 as u64));
    assert_eq!((v["generation"].as_u64(), v["prefix"].as_str()), (Some(1), Some(prefix.as_str())), "{v}");
    let sock = PathBuf::from(format!("/dev/shm/mbox.{prefix}.ctl"));
    let meta = std::fs::symlink_metadata(&sock).unwrap();
    assert!(meta.file_type().is_socket() && meta.permissions().mode() & 0o777 == 0o600, "{meta:?}");

    // stats and graph.
    let (_, v) = ctl(d, &prefix, "stats");
    assert!(v["ok"].as_bool().unwrap() && v["rings"].as_array().is_some_and(|r| !r.is_empty()), "{v}");
    let g = mbox(d, &["ctl", &prefix, "graph"]);
    assert!(String::from_utf8_lossy(&g.stdout).contains("tcp --DATA_RDY--> ids.data"), "{}", text(&g));
    let g = mbox(d, &["ctl", &prefix, "graph", "--dot"]);
    assert!(String::from_utf8_lossy(&g.stdout).starts_with("digraph mbox {"), "{}", text(&g));

    // A reload with errors changes nothing and names every one.
    ids_app(d, "ids.toml", "bad.rules");
    let (o, v) = ctl(d, &prefix, "reload");
    assert!(!o.status.success() && v["ok"] == false, "{}", text(&o));
    let errs = v["errors"].to_string();
    assert!(errs.contains("frob") && errs.contains("nope"), "{v}");
    // A good one: rules B from the next packet, k1 + 1.
    ids_app(d, "ids.toml", "b.rules");
    let (o, v) = ctl(d, &prefix, "reload");
    assert!(o.status.success() && v["generation"] == 2, "{}", text(&o));
    go.send(starts[k1]..starts[k2]).unwrap();
    wait_status(d, &prefix, &mut child, |v| v["packets_in"].as_u64() == Some(k2 as u64));
    // SIGHUP: back to rules A from packet k2 + 1.
    ids_app(d, "ids.toml", "a.rules");
    assert!(Command::new("kill").args(["-HUP", &child.id().to_string()]).status().unwrap().success());
    wait_status(d, &prefix, &mut child, |v| v["generation"].as_u64() == Some(3));
    go.send(starts[k2]..starts[n]).unwrap();
    drop(go);
    feeder.join().unwrap();
    let status = wait_bounded(&mut child, Duration::from_secs(30)).expect("mbox ends");
    let out = child.wait_with_output().unwrap();
    let t = text(&out);
    assert!(status.success(), "{t}");
    assert!(!sock.exists(), "the control socket is removed at the end");
    assert!(t.contains("reload (ctl, ") && t.contains("refused, nothing changed"), "{t}");
    assert!(t.contains("reload (SIGHUP, ") && t.contains("SIGHUP: reload of"), "{t}");

    // The reloads as the stats JSON lists them: the packets they applied from.
    let s: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(d.join("s.json")).unwrap()).unwrap();
    let r = s["reconfigurations"].as_array().unwrap().clone();
    let got: Vec<(bool, Option<u64>)> =
        r.iter().map(|r| (r["accepted"].as_bool().unwrap(), r["from_packet"].as_u64())).collect();
    assert_eq!(got, [(false, None), (true, Some(k1 as u64 + 1)), (true, Some(k2 as u64 + 1))], "{r:?}");
    let live = sorted_lines(&d.join("alerts.jsonl"));

    // The same reloads offline, at those packets: the same alerts.
    let off = d.join("off");
    std::fs::create_dir_all(&off).unwrap();
    let app_a = ids_app(d, "a.toml", "a.rules");
    let app_b = ids_app(d, "b.toml", "b.rules");
    let ra = format!("{}:{}", k1 + 1, app_b.display());
    let rb = format!("{}:{}", k2 + 1, app_a.display());
    let o = mbox(
        &off,
        &["run", app_a.to_str().unwrap(), "-i", input.to_str().unwrap(), "--reload-at", &ra, "--reload-at", &rb, "-q"],
    );
    assert!(o.status.success(), "{}", text(&o));
    let offline = sorted_lines(&off.join("alerts.jsonl"));
    assert_eq!(live, offline);
    assert!(live.iter().any(|l| l.contains("\"signature_id\":9")), "rules B alerted");
    let _ = app;
}

fn sorted_lines(p: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_to_string(p).unwrap().lines().map(str::to_string).collect();
    v.sort();
    v
}

#[test]
fn ctl_names_missing_and_stale_sockets_and_a_run_replaces_a_stale_one() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = format!("ctlstale{}", std::process::id());
    let o = mbox(dir.path(), &["ctl", &prefix, "status"]);
    assert!(!o.status.success() && text(&o).contains("no such socket: no run with prefix"), "{}", text(&o));
    // A socket nobody listens on (its run was killed).
    let path = PathBuf::from(format!("/dev/shm/mbox.{prefix}.ctl"));
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let o = mbox(dir.path(), &["ctl", &prefix, "status"]);
    assert!(!o.status.success() && text(&o).contains("stale control socket"), "{}", text(&o));
    // A run with that prefix replaces it, and removes it at the end.
    let input = dir.path().join("t.pcap");
    gen_pcap(&input, &GenConfig { flows: 5, seed: 1, ..GenConfig::default() });
    let app = example_app(dir.path());
    let o = mbox(dir.path(), &["run", app.to_str().unwrap(), "-i", input.to_str().unwrap(), "--prefix", &prefix, "-q"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(!path.exists());
    // A file that is not a socket is refused by the client.
    std::fs::write(&path, "x").unwrap();
    let o = mbox(dir.path(), &["ctl", &prefix, "status"]);
    assert!(!o.status.success() && text(&o).contains("not a socket"), "{}", text(&o));
    std::fs::remove_file(&path).unwrap();
}

/// A run fed through a pipe in parts: `mbox run APP --input in.pcap --prefix PREFIX` in
/// `d`, the capture's record offsets, and a sender of byte ranges to feed.
struct Piped {
    child: Child,
    go: mpsc::Sender<std::ops::Range<usize>>,
    feeder: std::thread::JoinHandle<()>,
    starts: Vec<usize>,
}

fn piped(d: &Path, app: &str, prefix: &str, input: &Path) -> Piped {
    piped_with(d, app, prefix, input, &[])
}

fn piped_with(d: &Path, app: &str, prefix: &str, input: &Path, args: &[&str]) -> Piped {
    let bytes = std::fs::read(input).unwrap();
    let mut starts = vec![24usize];
    while *starts.last().unwrap() < bytes.len() {
        let p = *starts.last().unwrap();
        starts.push(p + 16 + u32::from_le_bytes(bytes[p + 8..p + 12].try_into().unwrap()) as usize);
    }
    let fifo = d.join("in.pcap");
    assert!(Command::new("mkfifo").args(["-m", "600"]).arg(&fifo).status().unwrap().success(), "mkfifo");
    let child = Command::new(mbox_bin())
        .args(["run", app, "--input", "in.pcap", "--prefix", prefix, "--no-progress", "--stats-json", "s.json"])
        .args(args)
        .current_dir(d)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (go, parts) = mpsc::channel::<std::ops::Range<usize>>();
    let feeder = std::thread::spawn(move || {
        let mut f = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
        while let Ok(range) = parts.recv_timeout(Duration::from_secs(30)) {
            f.write_all(&bytes[range]).unwrap();
            f.flush().unwrap();
        }
    });
    Piped { child, go, feeder, starts }
}

/// `mbox ctl reload` with a file that removes an NF and adds another: the removed one
/// retires and the added one starts at the next packet, and the outputs equal an offline
/// relink (`--reload-at`) at the packet the run reported. A replacement under the same name
/// is refused and changes nothing.
#[test]
fn ctl_removes_and_adds_nfs_at_the_next_packet_as_an_offline_relink() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let input = d.join("all.pcap");
    gen_pcap(&input, &GenConfig { flows: 80, seed: 6, concurrency: 8, ..GenConfig::default() });
    let nf = |name: &str| format!("\n[[nf]]\nname = \"{name}\"\nkind = \"flow_stats\"\noutput = \"{name}.jsonl\"\n");
    std::fs::write(d.join("both.toml"), nf("keep") + &nf("gone")).unwrap();
    std::fs::write(d.join("next.toml"), nf("first") + &nf("keep") + &nf("new")).unwrap();
    std::fs::copy(d.join("both.toml"), d.join("app.toml")).unwrap();
    let prefix = format!("ctlrm{}", std::process::id());
    let mut p = piped(d, "app.toml", &prefix, &input);
    let n = p.starts.len() - 1;
    let k = n / 2;
    p.go.send(0..p.starts[k]).unwrap();
    wait_status(d, &prefix, &mut p.child, |v| v["packets_in"].as_u64() == Some(k as u64));
    // Replacing an NF under its name is refused, and says what to do.
    std::fs::write(
        d.join("app.toml"),
        nf("keep") + "\n[[nf]]\nname = \"gone\"\nkind = \"firewall\"\ndefault = \"allow\"\n",
    )
    .unwrap();
    let (o, v) = ctl(d, &prefix, "reload");
    assert!(!o.status.success(), "{v}");
    assert!(v["error"].as_str().unwrap().contains("give the new NF another name"), "{v}");
    std::fs::copy(d.join("next.toml"), d.join("app.toml")).unwrap();
    let (o, v) = ctl(d, &prefix, "reload");
    assert!(o.status.success(), "{v}");
    let changes = v["changes"].to_string();
    assert!(changes.contains("nf `gone` (flow_stats) removed"), "{v}");
    assert!(changes.contains("nf `new` (flow_stats) added"), "{v}");
    assert!(changes.contains("nf `first` (flow_stats) added"), "{v}");
    p.go.send(p.starts[k]..p.starts[n]).unwrap();
    drop(p.go);
    p.feeder.join().unwrap();
    let status = wait_bounded(&mut p.child, Duration::from_secs(30)).expect("mbox ends");
    let t = text(&p.child.wait_with_output().unwrap());
    assert!(status.success(), "{t}");
    let s: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(d.join("s.json")).unwrap()).unwrap();
    let accepted: Vec<_> = s["reconfigurations"].as_array().unwrap().iter().filter(|r| r["accepted"] == true).collect();
    assert_eq!(accepted.len(), 1, "{s}");
    let from = accepted[0]["from_packet"].as_u64().unwrap();
    assert_eq!(from, k as u64 + 1);
    let actor = |name: &str| s["actors"].as_array().unwrap().iter().find(|a| a["name"] == name).cloned().unwrap();
    assert_eq!(actor("gone")["counters"]["removed_at_packet"].as_u64(), Some(from), "{}", actor("gone"));
    assert_eq!(actor("new")["counters"]["added_at_packet"].as_u64(), Some(from), "{}", actor("new"));
    assert!(actor("new")["handled_total"].as_u64().unwrap() > 0, "{}", actor("new"));
    let off = d.join("off");
    std::fs::create_dir_all(&off).unwrap();
    let both = d.join("both.toml");
    let reload = format!("{from}:{}", d.join("next.toml").display());
    let o = mbox(&off, &["run", both.to_str().unwrap(), "-i", input.to_str().unwrap(), "--reload-at", &reload, "-q"]);
    assert!(o.status.success(), "{}", text(&o));
    for f in ["keep.jsonl", "gone.jsonl", "new.jsonl", "first.jsonl"] {
        assert_eq!(sorted_lines(&d.join(f)), sorted_lines(&off.join(f)), "{f}: live and offline differ");
    }
    let pkts = |f: &str| -> u64 {
        sorted_lines(&d.join(f))
            .iter()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                v["flow"]["pkts_toserver"].as_u64().unwrap() + v["flow"]["pkts_toclient"].as_u64().unwrap()
            })
            .sum()
    };
    assert_eq!(pkts("keep.jsonl"), n as u64, "every packet of a flow counted by the NF kept");
    assert!(pkts("gone.jsonl") <= k as u64, "the removed NF counted only packets before {from}");
    // The NFs added counted exactly the packets from `from` on (every packet is TCP or UDP
    // of a flow here), and both together with `gone` every packet.
    assert_eq!(pkts("new.jsonl"), (n - k) as u64, "the added NF counted the packets from {from} on");
    assert_eq!(pkts("first.jsonl"), (n - k) as u64);
    assert_eq!(pkts("gone.jsonl") + pkts("new.jsonl"), n as u64);
}

/// Adding an NF live is refused in mode a (every NF has a private stack there), and the run
/// goes on unchanged.
#[test]
fn ctl_refuses_to_add_an_nf_in_mode_a() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let nf = |name: &str| format!("\n[[nf]]\nname = \"{name}\"\nkind = \"flow_stats\"\noutput = \"{name}.jsonl\"\n");
    std::fs::write(d.join("app.toml"), nf("keep")).unwrap();
    let input = d.join("all.pcap");
    gen_pcap(&input, &GenConfig { flows: 10, seed: 2, ..GenConfig::default() });
    let prefix = format!("ctla{}", std::process::id());
    let fifo = d.join("in.pcap");
    assert!(Command::new("mkfifo").args(["-m", "600"]).arg(&fifo).status().unwrap().success(), "mkfifo");
    let mut child = Command::new(mbox_bin())
        .args(["run", "app.toml", "--input", "in.pcap", "--prefix", &prefix, "--mode", "a", "--no-progress"])
        .current_dir(d)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let bytes = std::fs::read(&input).unwrap();
    let mut f = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
    f.write_all(&bytes[..24]).unwrap();
    f.flush().unwrap();
    wait_status(d, &prefix, &mut child, |v| v["ok"] == true);
    std::fs::write(d.join("app.toml"), nf("keep") + &nf("new")).unwrap();
    let (o, v) = ctl(d, &prefix, "reload");
    assert!(!o.status.success(), "{v}");
    assert!(v["error"].as_str().unwrap().contains("mode a"), "{v}");
    f.write_all(&bytes[24..]).unwrap();
    drop(f);
    let status = wait_bounded(&mut child, Duration::from_secs(30)).expect("mbox ends");
    let t = text(&child.wait_with_output().unwrap());
    assert!(status.success(), "{t}");
    assert!(!d.join("new.jsonl").exists(), "nothing was added");
}

/// In modes b, c and d: a `signature_match` (it reads the TCP streams) added live after a
/// kept NF, then removed by a second reload: its alerts equal an offline run with the same
/// two relinks at the packets the run reported.
#[test]
fn ctl_adds_then_removes_a_stream_reading_nf_in_every_shared_stack_mode() {
    for mode in ["b", "c", "d"] {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let input = d.join("all.pcap");
        gen_pcap(&input, &GenConfig { flows: 150, seed: 9, attacks: 12, concurrency: 8, ..GenConfig::default() });
        std::fs::copy(repo_file("apps/ids.rules"), d.join("ids.rules")).unwrap();
        let stats = "[stack.tcp]\n\n[[nf]]\nname = \"keep\"\nkind = \"flow_stats\"\noutput = \"keep.jsonl\"\n";
        let ids =
            "\n[[nf]]\nname = \"ids\"\nkind = \"signature_match\"\nrules = \"ids.rules\"\noutput = \"alerts.jsonl\"\n";
        std::fs::write(d.join("one.toml"), stats).unwrap();
        std::fs::write(d.join("two.toml"), format!("{stats}{ids}")).unwrap();
        std::fs::copy(d.join("one.toml"), d.join("app.toml")).unwrap();
        let prefix = format!("ctladd{mode}{}", std::process::id());
        let mut p = piped_with(d, "app.toml", &prefix, &input, &["--mode", mode]);
        let n = p.starts.len() - 1;
        let (k1, k2) = (n / 4, 3 * n / 4);
        p.go.send(0..p.starts[k1]).unwrap();
        wait_status(d, &prefix, &mut p.child, |v| v["packets_in"].as_u64() == Some(k1 as u64));
        std::fs::copy(d.join("two.toml"), d.join("app.toml")).unwrap();
        let (o, v) = ctl(d, &prefix, "reload");
        assert!(o.status.success(), "mode {mode}: {v}");
        p.go.send(p.starts[k1]..p.starts[k2]).unwrap();
        wait_status(d, &prefix, &mut p.child, |v| v["packets_in"].as_u64() == Some(k2 as u64));
        std::fs::copy(d.join("one.toml"), d.join("app.toml")).unwrap();
        let (o, v) = ctl(d, &prefix, "reload");
        assert!(o.status.success(), "mode {mode}: {v}");
        assert!(v["changes"].to_string().contains("nf `ids` (signature_match) removed"), "{v}");
        p.go.send(p.starts[k2]..p.starts[n]).unwrap();
        drop(p.go);
        p.feeder.join().unwrap();
        let status = wait_bounded(&mut p.child, Duration::from_secs(30)).expect("mbox ends");
        let t = text(&p.child.wait_with_output().unwrap());
        assert!(status.success(), "mode {mode}: {t}");
        let s: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(d.join("s.json")).unwrap()).unwrap();
        let froms: Vec<u64> =
            s["reconfigurations"].as_array().unwrap().iter().map(|r| r["from_packet"].as_u64().unwrap()).collect();
        assert_eq!(froms, vec![k1 as u64 + 1, k2 as u64 + 1], "mode {mode}: {s}");
        let live = sorted_lines(&d.join("alerts.jsonl"));
        assert!(!live.is_empty(), "mode {mode}: the added NF alerted");
        let off = d.join("off");
        std::fs::create_dir_all(&off).unwrap();
        std::fs::copy(d.join("ids.rules"), off.join("ids.rules")).unwrap();
        let r1 = format!("{}:{}", froms[0], d.join("two.toml").display());
        let r2 = format!("{}:{}", froms[1], d.join("one.toml").display());
        let one = d.join("one.toml");
        let args =
            ["run", one.to_str().unwrap(), "-i", input.to_str().unwrap(), "--reload-at", &r1, "--reload-at", &r2];
        let o = mbox(&off, &[&args[..], &["-q", "--mode", mode]].concat());
        assert!(o.status.success(), "{}", text(&o));
        assert_eq!(live, sorted_lines(&off.join("alerts.jsonl")), "mode {mode}: live and offline alerts differ");
        assert_eq!(sorted_lines(&d.join("keep.jsonl")), sorted_lines(&off.join("keep.jsonl")), "mode {mode}");
    }
}

/// A live addition that cannot be made changes nothing and says why: an NF whose output
/// cannot be created, and one that would run next to an NF in its own process.
#[test]
fn ctl_refuses_additions_it_cannot_make_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let input = d.join("all.pcap");
    gen_pcap(&input, &GenConfig { flows: 20, seed: 3, ..GenConfig::default() });
    let nf =
        |name: &str, out: &str| format!("\n[[nf]]\nname = \"{name}\"\nkind = \"flow_stats\"\noutput = \"{out}\"\n");
    std::fs::write(d.join("app.toml"), nf("keep", "keep.jsonl")).unwrap();
    let prefix = format!("ctlno{}", std::process::id());
    let mut p = piped_with(d, "app.toml", &prefix, &input, &["--nf-process", "keep"]);
    let n = p.starts.len() - 1;
    p.go.send(0..p.starts[n / 2]).unwrap();
    wait_status(d, &prefix, &mut p.child, |v| v["packets_in"].as_u64() == Some((n / 2) as u64));
    std::fs::write(d.join("app.toml"), nf("keep", "keep.jsonl") + &nf("new", "no/such/dir/new.jsonl")).unwrap();
    let (o, v) = ctl(d, &prefix, "reload");
    assert!(!o.status.success(), "{v}");
    assert!(v["error"].as_str().unwrap().contains("no/such/dir/new.jsonl"), "{v}");
    std::fs::write(d.join("app.toml"), nf("keep", "keep.jsonl") + &nf("new", "new.jsonl")).unwrap();
    let (o, v) = ctl(d, &prefix, "reload");
    assert!(!o.status.success(), "{v}");
    assert!(v["error"].as_str().unwrap().contains("runs in its own process"), "{v}");
    let (_, v) = ctl(d, &prefix, "status");
    assert_eq!(v["generation"].as_u64(), Some(1), "nothing changed: {v}");
    p.go.send(p.starts[n / 2]..p.starts[n]).unwrap();
    drop(p.go);
    p.feeder.join().unwrap();
    let status = wait_bounded(&mut p.child, Duration::from_secs(30)).expect("mbox ends");
    let t = text(&p.child.wait_with_output().unwrap());
    assert!(status.success(), "{t}");
    assert!(!d.join("new.jsonl").exists(), "nothing was added: {t}");
}
