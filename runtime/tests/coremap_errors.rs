//! The core map: parsing, every error message, and the default placement.

use runtime::coremap::{default_placement, CoreMap, CoreMapError, Role};

fn actors() -> Vec<String> {
    ["rx", "l23", "fw", "stats", "tx"].iter().map(|s| s.to_string()).collect()
}

const GOOD: &str = "# actor name = core id\n[cores]\nrx = 0\nl23 = 0\nfw = 1\nstats = 1\ntx = 0\n";

#[test]
fn good_map_places_everyone() {
    let m = CoreMap::parse(GOOD, "apps/map.toml").unwrap();
    let names: Vec<&str> = m.entries().iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(names, ["rx", "l23", "fw", "stats", "tx"], "file order");
    let p = m.place(&actors(), &[0, 1]).unwrap();
    assert_eq!(p.core_of("fw"), Some(1));
    assert_eq!(p.core_of("nobody"), None);
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert_eq!(p.by_core(), vec![(0, s(&["rx", "l23", "tx"])), (1, s(&["fw", "stats"]))]);
}

fn problems(text: &str) -> Vec<String> {
    let m = CoreMap::parse(text, "apps/map.toml").unwrap();
    match m.place(&actors(), &[0, 1]) {
        Err(CoreMapError::Invalid(v)) => v,
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[test]
fn core_not_available() {
    let p = problems("[cores]\nrx = 0\nl23 = 0\nfw = 64\nstats = 1\ntx = 0\n");
    assert_eq!(p, ["apps/map.toml: entry `fw = 64`: core 64 is not available on this machine (available cores: 0-1)"]);
}

#[test]
fn unknown_and_missing_actors_all_reported() {
    let p = problems("[cores]\nrx = 0\nl23 = 0\nfwx = 1\ntx = 0\n");
    assert_eq!(
        p,
        [
            "apps/map.toml: entry `fwx = 1`: unknown actor `fwx` (actors in this app: rx, l23, fw, stats, tx)",
            "apps/map.toml: actor `fw` is not placed",
            "apps/map.toml: actor `stats` is not placed",
        ]
    );
    let e = CoreMap::parse("[cores]\nrx = 0\n", "m.toml").unwrap().place(&actors(), &[0]).unwrap_err();
    assert_eq!(e.to_string().lines().count(), 4, "{e}");
}

#[test]
fn duplicate_key_is_a_parse_error_with_line() {
    let e = CoreMap::parse("[cores]\nrx = 0\nfw = 1\nrx = 1\n", "apps/map.toml").unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, CoreMapError::Parse(_)));
    assert!(msg.starts_with("apps/map.toml: "), "{msg}");
    assert!(msg.contains("duplicate key") && msg.contains("line 4"), "{msg}");
}

#[test]
fn unknown_top_level_key_is_an_error() {
    let e = CoreMap::parse("threads = 2\n[cores]\nrx = 0\n", "apps/map.toml").unwrap_err();
    let msg = e.to_string();
    assert!(msg.starts_with("apps/map.toml: ") && msg.contains("unknown field `threads`"), "{msg}");
    let e = CoreMap::parse("[cores]\nrx = -1\n", "m.toml").unwrap_err();
    assert!(e.to_string().contains("line 2"), "{e}");
    let e = CoreMap::parse("[cores]\nrx = \"zero\"\n", "m.toml").unwrap_err();
    assert!(matches!(e, CoreMapError::Parse(_)), "{e}");
}

#[test]
fn load_reports_missing_file() {
    let e = CoreMap::load(std::path::Path::new("/nonexistent/map.toml")).unwrap_err();
    assert!(matches!(e, CoreMapError::Io { .. }));
    assert!(e.to_string().starts_with("/nonexistent/map.toml: "), "{e}");
}

#[test]
fn default_placement_rules() {
    let app = vec![
        ("rx".to_string(), Role::Io),
        ("l23".to_string(), Role::Stack),
        ("fw".to_string(), Role::Nf),
        ("dpi".to_string(), Role::Nf),
        ("stats".to_string(), Role::Nf),
        ("tx".to_string(), Role::Sink),
    ];
    let p = default_placement(&app, &[2, 5, 7]);
    let cores: Vec<usize> = p.cores.iter().map(|(_, c)| *c).collect();
    // The sink (TX) with the last NF.
    assert_eq!(cores, [2, 2, 5, 7, 5, 5]);
    // No NF: the sink stays with RX and the stacks.
    let bare = [app[0].clone(), app[1].clone(), app[5].clone()];
    let p = default_placement(&bare, &[2, 5, 7]);
    assert!(p.cores.iter().all(|(_, c)| *c == 2), "{p:?}");
    let p = default_placement(&app, &[3]);
    assert!(p.cores.iter().all(|(_, c)| *c == 3));
    assert_eq!(p.by_core().len(), 1);
}

#[test]
fn a_core_map_that_is_not_a_small_regular_file_is_refused() {
    // `/dev/zero` never ends: reading it whole would exhaust memory.
    let e = runtime::coremap::CoreMap::load(std::path::Path::new("/dev/zero")).unwrap_err().to_string();
    assert!(e.contains("/dev/zero") && e.contains("not a regular file"), "{e}");
    let dir = std::env::temp_dir().join(format!("mbox-cm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let big = dir.join("big.toml");
    std::fs::write(&big, vec![b'#'; (runtime::files::MAX_CONFIG_BYTES + 1) as usize]).unwrap();
    let e = runtime::coremap::CoreMap::load(&big).unwrap_err().to_string();
    assert!(e.contains("larger than the limit of 1048576 bytes"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}
