//! Tiny rings and a tiny pool: the run waits (counted back-pressure) and loses nothing.

use microboxes::{App, RunOptions};
use runtime::ports::gen::GenConfig;
use tests::*;

#[test]
fn tiny_rings_and_pool_apply_backpressure_and_balance() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("t.pcap");
    let truth = gen_pcap(&input, &GenConfig { flows: 100, seed: 11, ..GenConfig::default() });
    let flows = dir.path().join("flows.jsonl");
    let app_text = format!(
        "[runtime]\npool_buffers = 8\nring_capacity = 2\n[[nf]]\nname = \"fw\"\nkind = \"firewall\"\n[[nf]]\nname = \"stats\"\nkind = \"flow_stats\"\noutput = {:?}\n",
        flows.display().to_string()
    );
    let app = App::parse(&app_text, "tiny.toml").unwrap();
    let out = dir.path().join("o.pcap");
    let mut opts = RunOptions::new(&input);
    opts.output = Some(out.clone());
    let r = microboxes::run(&app, opts).unwrap();
    assert!(r.ok(), "{}", r.to_text());
    assert_eq!(r.packets_in, truth.packets);
    assert_eq!(r.packets_out, truth.packets, "nothing is dropped by back-pressure");
    assert_eq!(read_all(&out).len() as u64, truth.packets);
    assert!(r.pool_balanced);
    assert_eq!(r.pool.buffers, 8);
    let full: u64 = r.rings.iter().map(|x| x.stats.full_events).sum();
    assert!(full > 0, "a 2-slot ring must fill up: {:?}", r.rings);
    assert!(r.rings.iter().all(|x| x.stats.capacity == 2));
    assert!(r.rx_pool_stalls + r.rx_ring_stalls > 0, "rx must have waited");
    // Same records as with roomy rings.
    let lines = std::fs::read_to_string(&flows).unwrap().lines().count();
    assert_eq!(lines, truth.flows.len());
}

/// Every mode finishes with a two-buffer pool and two-slot rings: no stage may hold a packet
/// while waiting for a later one (sharded stacks' merger, parallel groups' merger).
#[test]
fn every_mode_finishes_with_two_buffers() {
    use microboxes::Mode;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("t.pcap");
    let truth = gen_pcap(&input, &GenConfig { flows: 40, seed: 12, ..GenConfig::default() });
    let text = format!(
        "[runtime]\npool_buffers = 2\nring_capacity = 2\n[stack.tcp]\n[[nf]]\nname = \"hash\"\nkind = \"stream_hash\"\noutput = {:?}\n[[nf]]\nname = \"stats\"\nkind = \"flow_stats\"\noutput = {:?}\n",
        dir.path().join("h.jsonl").display().to_string(),
        dir.path().join("f.jsonl").display().to_string()
    );
    let app = App::parse(&text, "two.toml").unwrap();
    for mode in [Mode::A, Mode::B, Mode::C, Mode::D] {
        let (tx, rx) = std::sync::mpsc::channel();
        let (app, input) = (app.clone(), input.clone());
        std::thread::spawn(move || {
            let mut opts = RunOptions::new(&input);
            opts.mode = mode;
            let _ = tx.send(microboxes::run(&app, opts).map(|r| (r.ok(), r.packets_out, r.pool_balanced, r.to_text())));
        });
        let (ok, out, balanced, text) = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("mode {mode} did not finish within 60 s with two buffers (deadlock)"))
            .unwrap();
        assert!(ok, "mode {mode}: {text}");
        assert_eq!(out, truth.packets, "mode {mode}");
        assert!(balanced, "mode {mode}");
    }
}
