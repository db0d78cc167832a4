//! A run that fails never destroys or half-writes an output: existing files are
//! byte-identical afterwards and no temporary file is left beside them; a run that succeeds
//! replaces them whole.

use runtime::ports::gen::GenConfig;
use tests::*;

/// The directory's file names, sorted.
fn listing(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

#[test]
fn failing_runs_leave_existing_outputs_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let input = d.join("t.pcap");
    gen_pcap(&input, &GenConfig { flows: 20, seed: 4, ..GenConfig::default() });
    let app = example_app(d);
    let flows = d.join("flows.jsonl");
    let out = d.join("o.pcap");
    std::fs::write(&flows, "precious flows\n").unwrap();
    std::fs::write(&out, "precious capture").unwrap();
    let bad_map = d.join("bad_map.toml");
    std::fs::write(&bad_map, "[cores]\nnobody = 0\n").unwrap();
    let link_error = d.join("link_error.toml");
    let app_text = std::fs::read_to_string(&app).unwrap();
    std::fs::write(&link_error, app_text.replace("name = \"stats\"", "name = \"stats\"\nfrom = \"nobody\"")).unwrap();
    assert!(std::fs::read_to_string(&link_error).unwrap().contains("from = \"nobody\""));
    let before = listing(d);
    let (a, i, o) = (app.to_str().unwrap(), input.to_str().unwrap(), out.to_str().unwrap());
    let runs: [(&str, Vec<&str>); 3] = [
        ("a bad core map", vec!["run", a, "--input", i, "-o", o, "--core-map", bad_map.to_str().unwrap()]),
        ("an output that cannot be created", vec!["run", a, "--input", i, "-o", "/nonexistent/o.pcap"]),
        ("a link error", vec!["run", link_error.to_str().unwrap(), "--input", i, "-o", o]),
    ];
    for (what, args) in runs {
        let r = mbox(d, &args);
        assert!(!r.status.success(), "{what}: the run should fail:\n{}", text(&r));
        assert_eq!(std::fs::read_to_string(&flows).unwrap(), "precious flows\n", "{what}: flows.jsonl changed");
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "precious capture", "{what}: o.pcap changed");
        assert_eq!(listing(d), before, "{what}: files were added or removed");
    }
    // A run that succeeds replaces both, whole.
    let r = mbox(d, &["run", a, "--input", i, "-o", o]);
    assert!(r.status.success(), "{}", text(&r));
    assert!(std::fs::read_to_string(&flows).unwrap().starts_with('{'));
    assert_eq!(&std::fs::read(&out).unwrap()[..4], &0xa1b2_3c4du32.to_le_bytes());
    assert_eq!(listing(d), before, "no temporary file is left");
}
