//! An NF of a chain in its own OS process (`mbox nf`, attached to the run's shared memory by
//! name) gives the same output as the same NF in a thread.

use microboxes::{App, RunOptions};
use runtime::ports::gen::GenConfig;
use tests::*;

#[test]
fn an_nf_in_its_own_process_gives_the_same_output() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("t.pcap");
    gen_pcap(&input, &GenConfig { flows: 300, seed: 4, ..GenConfig::default() });
    let app_path = example_app(dir.path());
    let app = App::load(&app_path).unwrap();
    let flows = dir.path().join("flows.jsonl");
    let sorted = || {
        let mut v: Vec<String> = std::fs::read_to_string(&flows).unwrap().lines().map(str::to_string).collect();
        v.sort();
        v
    };

    let in_threads = microboxes::run(&app, RunOptions::new(&input)).unwrap();
    assert!(in_threads.ok(), "{}", in_threads.to_text());
    let expected = sorted();

    let mut opts = RunOptions::new(&input);
    opts.external = vec!["stats".into()];
    opts.nf_exe = Some(mbox_bin());
    let out = dir.path().join("o.pcap");
    opts.output = Some(out.clone());
    let r = microboxes::run(&app, opts).unwrap();
    assert!(r.ok(), "{}", r.to_text());
    assert_eq!(r.nf_processes.len(), 1);
    assert_ne!(r.nf_processes[0].1, std::process::id());
    assert_eq!(sorted(), expected, "flow records from the NF process");
    assert_eq!(r.packets_out, in_threads.packets_out);
    assert_eq!(read_all(&out).len() as u64, r.packets_out);
    let stats = r.actors.iter().find(|a| a.name == "stats").unwrap();
    assert_eq!(stats.handled_total, in_threads.actors.iter().find(|a| a.name == "stats").unwrap().handled_total);
    assert!(r.pool_balanced);
}

#[test]
fn mode_a_and_b_refuse_nf_processes_and_say_why() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("t.pcap");
    gen_pcap(&input, &GenConfig { flows: 3, seed: 4, ..GenConfig::default() });
    let app = App::load(&example_app(dir.path())).unwrap();
    for mode in [microboxes::Mode::A, microboxes::Mode::B] {
        let mut opts = RunOptions::new(&input);
        opts.mode = mode;
        opts.external = vec!["stats".into()];
        opts.nf_exe = Some(mbox_bin());
        let e = microboxes::run(&app, opts).map(|r| r.to_text()).expect_err("refused");
        assert!(e.to_string().contains("only modes c and d support that"), "{e}");
    }
}

#[test]
fn an_unknown_nf_process_name_lists_the_nfs() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("t.pcap");
    gen_pcap(&input, &GenConfig { flows: 3, seed: 4, ..GenConfig::default() });
    let app = example_app(dir.path());
    let o =
        mbox(dir.path(), &["run", app.to_str().unwrap(), "--input", input.to_str().unwrap(), "--nf-process", "nosuch"]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("--nf-process `nosuch`: there is no NF of that name (NFs in this app: fw, stats)"),
        "{}",
        text(&o)
    );
}
