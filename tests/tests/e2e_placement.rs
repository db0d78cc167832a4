//! Core maps: actors really run pinned where the map says; impossible maps fail clearly.

use std::path::Path;

use microboxes::{App, RunOptions};
use runtime::coremap::CoreMap;
use runtime::ports::gen::GenConfig;
use tests::*;

#[test]
fn threads_run_with_the_mapped_affinity() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("t.pcap");
    gen_pcap(&input, &GenConfig { flows: 50, seed: 3, ..GenConfig::default() });
    let allowed = runtime::sys::allowed_cpus().unwrap();
    let (a, b) = (allowed[0], *allowed.get(1).unwrap_or(&allowed[0]));
    if a == b {
        eprintln!("only one CPU allowed: checking placement on core {a} alone");
    }
    let map = format!("[cores]\nrx = {a}\nl23 = {a}\ntx = {a}\nfw = {b}\nstats = {b}\n");
    let app = App::load(&example_app(dir.path())).unwrap();
    let mut opts = RunOptions::new(&input);
    opts.core_map = Some(CoreMap::parse(&map, "test-map.toml").unwrap());
    let report = microboxes::run(&app, opts).unwrap();
    assert!(report.ok(), "{}", report.to_text());
    for c in &report.cores {
        assert_eq!(c.affinity, vec![c.core], "thread on core {} reports affinity {:?}", c.core, c.affinity);
    }
    let core_of = |name: &str| report.cores.iter().find(|c| c.actors.iter().any(|x| x == name)).map(|c| c.core);
    assert_eq!(core_of("rx"), Some(a));
    assert_eq!(core_of("fw"), Some(b));
    assert_eq!(core_of("stats"), Some(b));
    assert_eq!(report.actors.iter().find(|x| x.name == "fw").unwrap().core, Some(b));
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

#[test]
fn a_map_naming_core_64_fails_naming_the_entry() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("t.pcap");
    gen_pcap(&input, &GenConfig { flows: 5, seed: 3, ..GenConfig::default() });
    let app = example_app(dir.path());
    let map = write(dir.path(), "map.toml", "[cores]\nrx = 0\nl23 = 0\ntx = 0\nfw = 64\nstats = 0\n");
    let prefix = format!("core64-{}", std::process::id());
    let o = mbox(
        dir.path(),
        &["run", app.to_str().unwrap(), "--input", input.to_str().unwrap(), "--core-map", &map, "--prefix", &prefix],
    );
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    assert!(t.contains("`fw = 64`"), "{t}");
    assert!(t.contains("core 64 is not available"), "{t}");
    let avail = runtime::sys::format_cpu_list(&runtime::sys::allowed_cpus().unwrap());
    assert!(t.contains(&format!("available cores: {avail}")), "{t}");
    // Nothing left behind in shared memory.
    let leftovers = std::fs::read_dir("/dev/shm")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(&format!("mbox.{prefix}.")))
        .count();
    assert_eq!(leftovers, 0);
}

#[test]
fn unknown_and_missing_actors_in_a_map_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("t.pcap");
    gen_pcap(&input, &GenConfig { flows: 5, seed: 3, ..GenConfig::default() });
    let app = example_app(dir.path());
    let map = write(dir.path(), "map.toml", "[cores]\nrx = 0\nl23 = 0\ntx = 0\nfirewall = 0\n");
    let o = mbox(dir.path(), &["run", app.to_str().unwrap(), "--input", input.to_str().unwrap(), "--core-map", &map]);
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    assert!(t.contains("unknown actor `firewall`"), "{t}");
    assert!(t.contains("actor `fw` is not placed"), "{t}");
    assert!(t.contains("actor `stats` is not placed"), "{t}");
}
