//! NFs that read TCP bytestreams, each in its own OS process, read them from the stream store
//! in the run's shared memory and give exactly the outputs of the in-thread run: the IDS app
//! (`dpi` and `signature_match`, `--nf-process dpi --nf-process ids`) on generated traffic with
//! attacks and on every real capture in tests/fixtures, in modes c and d; and `stream_hash`
//! beside a parallel group member. A process attaching to a region of another layout is
//! refused.

use std::path::Path;

use runtime::ports::gen::GenConfig;
use runtime::shm::Region;
use tests::*;

/// Runs `mbox run apps/ids.toml` in a fresh directory `dir/name`; returns (alerts, dpi).
fn run_ids(dir: &Path, name: &str, input: &Path, extra: &[&str]) -> (String, String) {
    let d = dir.join(name);
    std::fs::create_dir_all(&d).unwrap();
    let app = repo_file("apps/ids.toml");
    let mut args = vec!["run", app.to_str().unwrap(), "--input", input.to_str().unwrap()];
    args.extend_from_slice(extra);
    let o = mbox(&d, &args);
    assert!(o.status.success(), "{name}: {}", text(&o));
    if extra.contains(&"--nf-process") {
        assert!(text(&o).contains("ran in its own process"), "{}", text(&o));
    }
    let read = |f: &str| std::fs::read_to_string(d.join(f)).unwrap_or_else(|e| panic!("{name}: {f}: {e}"));
    (read("alerts.jsonl"), read("dpi.jsonl"))
}

#[test]
fn ids_nfs_in_their_own_processes_give_the_in_thread_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let generated = dir.path().join("gen.pcap");
    gen_pcap(&generated, &GenConfig { flows: 300, seed: 3, attacks: 8, ..GenConfig::default() });
    let mut inputs = vec![generated];
    let captures = repo_file("tests/fixtures/captures");
    let mut real: Vec<_> = std::fs::read_dir(&captures)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "pcap"))
        .collect();
    real.sort();
    assert!(real.len() >= 5, "the real captures are in {}", captures.display());
    inputs.extend(real);
    let procs = ["--nf-process", "dpi", "--nf-process", "ids"];
    let mut alerts = 0;
    for (i, input) in inputs.iter().enumerate() {
        let threads = run_ids(dir.path(), &format!("t{i}"), input, &[]);
        let c = run_ids(dir.path(), &format!("c{i}"), input, &procs);
        assert_eq!(c, threads, "mode c with NF processes differs on {}", input.display());
        let mut d_args = vec!["--mode", "d"];
        d_args.extend_from_slice(&procs);
        let d = run_ids(dir.path(), &format!("d{i}"), input, &d_args);
        assert_eq!(d, threads, "mode d with NF processes differs on {}", input.display());
        alerts += threads.0.lines().count();
    }
    assert!(alerts >= 8, "the inputs raise alerts ({alerts}), so the comparison means something");
}

#[test]
fn a_stream_reading_group_member_in_its_own_process() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("t.pcap");
    gen_pcap(&input, &GenConfig { flows: 200, seed: 9, ..GenConfig::default() });
    let app = dir.path().join("app.toml");
    std::fs::write(
        &app,
        "parallel = [[\"hash\", \"stats\"]]\n[stack.tcp]\n[[nf]]\nname = \"hash\"\nkind = \"stream_hash\"\noutput = \"streams.jsonl\"\n[[nf]]\nname = \"stats\"\nkind = \"flow_stats\"\noutput = \"flows.jsonl\"\n",
    )
    .unwrap();
    let run = |name: &str, extra: &[&str]| {
        let d = dir.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        let mut args = vec!["run", app.to_str().unwrap(), "--input", input.to_str().unwrap()];
        args.extend_from_slice(extra);
        let o = mbox(&d, &args);
        assert!(o.status.success(), "{name}: {}", text(&o));
        std::fs::read_to_string(d.join("streams.jsonl")).unwrap()
    };
    // Flow ids differ between the modes (mode d's shards number flows in their own ranges):
    // each mode is compared with itself in threads.
    let same = |a: &str, b: &str, what: &str| {
        assert!(
            a == b,
            "{what}: {} vs {} lines, first difference: {:?}",
            a.lines().count(),
            b.lines().count(),
            a.lines().zip(b.lines()).find(|(x, y)| x != y)
        );
    };
    let threads = run("t", &[]);
    assert!(threads.lines().count() >= 100);
    same(&run("c", &["--nf-process", "hash"]), &threads, "mode c, hash in its own process");
    let threads_d = run("td", &["--mode", "d"]);
    same(
        &run("d", &["--mode", "d", "--nf-process", "hash"]),
        &threads_d,
        "mode d, group member hash in its own process",
    );
}

#[test]
fn an_nf_process_refuses_a_region_of_another_layout() {
    let dir = tempfile::tempdir().unwrap();
    // A live region (this process created it) recording some other layout.
    let region = Region::create_with_layout(&format!("lay{}", std::process::id()), 1 << 20, 0x1234).unwrap();
    let app = repo_file("apps/ids.toml");
    let o = mbox(
        dir.path(),
        &["nf", "dpi", "--app", app.to_str().unwrap(), "--attach", region.prefix(), "--input-ring", "link2"]
            .into_iter()
            .chain(["--output-ring", "link3"])
            .collect::<Vec<_>>(),
    );
    assert!(!o.status.success());
    let t = text(&o);
    assert!(t.contains("was made for another layout") && t.contains("0x0000000000001234"), "{t}");
}
