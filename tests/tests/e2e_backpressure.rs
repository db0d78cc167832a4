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
