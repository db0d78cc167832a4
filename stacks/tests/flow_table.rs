//! The flow table: directions, timeouts per class, TCP close and linger, RST, eviction, port
//! reuse, timestamps going backwards, and random sequences against its invariants.

use proptest::prelude::*;
use stacks::flow::{Endpoint, FlowKey, Side};
use stacks::flow_table::{Direction, EndReason, EndedFlow, FlowTable, FlowTableConfig};
use stacks::parse::tcp_flags::{ACK, FIN, RST, SYN};
use std::net::{IpAddr, Ipv4Addr};

const MS: u64 = 1_000_000;
const SEC: u64 = 1_000 * MS;

fn ep(last: u8, port: u16) -> Endpoint {
    Endpoint { addr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, last)), port }
}

/// Key of client 10.0.0.`c`:`port` → server 10.0.0.200:80, and the client's side.
fn tcp(c: u8, port: u16) -> (FlowKey, Side) {
    FlowKey::new(6, ep(c, port), ep(200, 80))
}

fn cfg() -> FlowTableConfig {
    FlowTableConfig {
        max_flows: 100,
        tcp_idle_ms: 300_000,
        udp_idle_ms: 60_000,
        other_idle_ms: 30_000,
        closed_linger_ms: 2_000,
    }
}

fn reasons(ended: &[EndedFlow]) -> Vec<EndReason> {
    ended.iter().map(|e| e.reason).collect()
}

#[test]
fn config_defaults_and_strict_keys() {
    let d = FlowTableConfig::default();
    assert_eq!(
        (d.max_flows, d.tcp_idle_ms, d.udp_idle_ms, d.other_idle_ms, d.closed_linger_ms),
        (100_000, 300_000, 60_000, 30_000, 2_000)
    );
    let partial: FlowTableConfig = serde_json::from_str(r#"{"max_flows": 5}"#).unwrap();
    assert_eq!(partial, FlowTableConfig { max_flows: 5, ..FlowTableConfig::default() });
    assert!(serde_json::from_str::<FlowTableConfig>(r#"{"max_flow": 5}"#).is_err());
    assert_eq!(serde_json::to_value(EndReason::IdleTimeout).unwrap(), "idle_timeout");
}

#[test]
fn direction_is_relative_to_the_initiator() {
    let mut t = FlowTable::new(cfg());
    let mut ended = vec![];
    let (k, client) = tcp(1, 1000);
    let server = client.opposite();
    // The server side (which may be Lo or Hi) speaks first here: it is the initiator.
    let o1 = t.observe(k, server, Some(SYN), 1, &mut ended);
    assert!(o1.new);
    assert_eq!(o1.dir, Direction::ToServer);
    let o2 = t.observe(k, client, Some(SYN | ACK), 2, &mut ended);
    assert_eq!((o2.id, o2.dir, o2.new), (o1.id, Direction::ToClient, false));
    let o3 = t.observe(k, server, Some(ACK), 3, &mut ended);
    assert_eq!(o3.dir, Direction::ToServer);
    let info = t.get(o1.id).unwrap();
    assert_eq!((info.initiator, info.first_ts_ns, info.last_ts_ns, info.packets, info.key), (server, 1, 3, 3, k));
    assert!(ended.is_empty());
    assert_eq!(t.len(), 1);
}

#[test]
fn idle_timeout_per_class() {
    let classes = [(6u8, 300_000u64), (17, 60_000), (1, 30_000), (47, 30_000)];
    for (proto, idle_ms) in classes {
        let mut t = FlowTable::new(cfg());
        let mut ended = vec![];
        let (k, s) = FlowKey::new(proto, ep(1, 5), ep(2, 6));
        let o = t.observe(k, s, None, 10 * SEC, &mut ended);
        // A packet just before the deadline keeps the flow alive and pushes the deadline.
        t.expire(10 * SEC + idle_ms * MS - 1, &mut ended);
        assert!(ended.is_empty(), "proto {proto}");
        t.observe(k, s.opposite(), None, 10 * SEC + idle_ms * MS - 1, &mut ended);
        t.expire(10 * SEC + 2 * idle_ms * MS - 2, &mut ended);
        assert!(ended.is_empty(), "proto {proto}");
        t.expire(10 * SEC + 2 * idle_ms * MS - 1, &mut ended);
        assert_eq!(reasons(&ended), vec![EndReason::IdleTimeout], "proto {proto}");
        assert_eq!(ended[0].info.id, o.id);
        assert_eq!(ended[0].info.packets, 2);
        assert!(t.get(o.id).is_none());
        assert!(t.is_empty());
        assert_eq!(t.stats().ended_idle, 1);
    }
}

#[test]
fn expired_flows_end_before_the_new_packets_flow_in_time_order() {
    let mut t = FlowTable::new(cfg());
    let mut ended = vec![];
    let (tk, ts) = tcp(1, 1);
    let (uk, us) = FlowKey::new(17, ep(1, 53), ep(2, 53));
    let (ok, os) = FlowKey::new(1, ep(1, 7), ep(2, 7));
    t.observe(tk, ts, Some(SYN), 0, &mut ended); // deadline 300 s
    t.observe(uk, us, None, 0, &mut ended); // deadline 60 s
    t.observe(ok, os, None, 10 * SEC, &mut ended); // deadline 40 s
    let (nk, ns) = tcp(9, 9);
    let o = t.observe(nk, ns, Some(SYN), 1000 * SEC, &mut ended);
    assert!(o.new);
    let keys: Vec<_> = ended.iter().map(|e| e.info.key).collect();
    assert_eq!(keys, vec![ok, uk, tk]);
    assert_eq!(t.len(), 1);
}

#[test]
fn fin_from_both_sides_then_linger() {
    let mut t = FlowTable::new(cfg());
    let mut ended = vec![];
    let (k, c) = tcp(1, 1000);
    let s = c.opposite();
    let id = t.observe(k, c, Some(SYN), 0, &mut ended).id;
    t.observe(k, s, Some(SYN | ACK), MS, &mut ended);
    t.observe(k, c, Some(ACK), 2 * MS, &mut ended);
    // FIN from one side only: no linger, the idle timeout still applies.
    t.observe(k, c, Some(FIN | ACK), 10 * MS, &mut ended);
    t.expire(10 * MS + 2_000 * MS, &mut ended);
    assert!(ended.is_empty());
    // FIN from the other side: linger starts now (t = 20 s).
    t.observe(k, s, Some(FIN | ACK), 20 * SEC, &mut ended);
    // The last ACK during the linger stays in the flow and does not extend it.
    let last = t.observe(k, c, Some(ACK), 21 * SEC, &mut ended);
    assert_eq!((last.id, last.new, last.dir), (id, false, Direction::ToServer));
    t.expire(22 * SEC - 1, &mut ended);
    assert!(ended.is_empty());
    t.expire(22 * SEC, &mut ended);
    assert_eq!(reasons(&ended), vec![EndReason::Fin]);
    assert_eq!(ended[0].info.packets, 6);
    assert_eq!(ended[0].info.last_ts_ns, 21 * SEC);
    assert_eq!(t.stats().ended_fin, 1);
}

#[test]
fn rst_lingers_then_ends_with_rst() {
    let mut t = FlowTable::new(cfg());
    let mut ended = vec![];
    let (k, c) = tcp(1, 1000);
    t.observe(k, c, Some(SYN), 0, &mut ended);
    t.observe(k, c.opposite(), Some(RST | ACK), 5 * MS, &mut ended);
    let o = t.observe(k, c, Some(ACK), 6 * MS, &mut ended);
    assert!(!o.new);
    t.expire(5 * MS + 2_000 * MS, &mut ended);
    assert_eq!(reasons(&ended), vec![EndReason::Rst]);
    let st = t.stats();
    assert_eq!((st.ended_rst, st.active, st.created), (1, 0, 1));
}

#[test]
fn rst_after_fins_keeps_the_fin_linger() {
    let mut t = FlowTable::new(cfg());
    let mut ended = vec![];
    let (k, c) = tcp(1, 1000);
    t.observe(k, c, Some(FIN), 0, &mut ended);
    t.observe(k, c.opposite(), Some(FIN | ACK), SEC, &mut ended);
    t.observe(k, c, Some(RST), SEC + 500 * MS, &mut ended);
    t.expire(3 * SEC, &mut ended);
    assert_eq!(reasons(&ended), vec![EndReason::Fin]);
}

#[test]
fn capacity_evicts_the_least_recently_seen() {
    let mut c = cfg();
    c.max_flows = 3;
    let mut t = FlowTable::new(c);
    let mut ended = vec![];
    let a = tcp(1, 1);
    let b = FlowKey::new(17, ep(2, 2), ep(3, 3));
    let cc = tcp(3, 3);
    let ida = t.observe(a.0, a.1, Some(SYN), 1, &mut ended).id;
    let idb = t.observe(b.0, b.1, None, 2, &mut ended).id;
    t.observe(cc.0, cc.1, Some(SYN), 3, &mut ended);
    // Touch a: b is now the least recently seen.
    t.observe(a.0, a.1.opposite(), Some(SYN | ACK), 4, &mut ended);
    let d = tcp(4, 4);
    let od = t.observe(d.0, d.1, Some(SYN), 5, &mut ended);
    assert!(od.new);
    assert_eq!(reasons(&ended), vec![EndReason::Evicted]);
    assert_eq!(ended[0].info.id, idb);
    assert!(t.get(idb).is_none());
    assert!(t.get(ida).is_some());
    assert_eq!(t.len(), 3);
    // The evicted slot is reused with a new generation: the old id stays stale.
    assert_eq!(od.id.index, idb.index);
    assert_ne!(od.id.generation, idb.generation);
    let st = t.stats();
    assert_eq!((st.evicted, st.max_active, st.active, st.created), (1, 3, 3, 4));
}

#[test]
fn zero_capacity_acts_as_one() {
    let mut c = cfg();
    c.max_flows = 0;
    let mut t = FlowTable::new(c);
    let mut ended = vec![];
    let a = tcp(1, 1);
    let b = tcp(2, 2);
    t.observe(a.0, a.1, None, 0, &mut ended);
    t.observe(b.0, b.1, None, 1, &mut ended);
    assert_eq!(t.len(), 1);
    assert_eq!(reasons(&ended), vec![EndReason::Evicted]);
}

#[test]
fn port_reuse_after_close_starts_a_new_flow() {
    for closing in [&[FIN][..], &[FIN, FIN][..], &[RST][..]] {
        let mut t = FlowTable::new(cfg());
        let mut ended = vec![];
        let (k, c) = tcp(1, 1000);
        let old = t.observe(k, c, Some(SYN), 0, &mut ended).id;
        let mut side = c.opposite();
        for f in closing {
            t.observe(k, side, Some(*f | ACK), MS, &mut ended);
            side = side.opposite();
        }
        // The old server now opens a connection on the same tuple.
        let o = t.observe(k, c.opposite(), Some(SYN), 2 * MS, &mut ended);
        assert!(o.new, "{closing:?}");
        assert_ne!(o.id, old);
        assert_eq!(o.dir, Direction::ToServer);
        assert_eq!(t.get(o.id).unwrap().initiator, c.opposite());
        let want = if closing[0] == RST { EndReason::Rst } else { EndReason::Fin };
        assert_eq!(reasons(&ended), vec![want]);
        assert_eq!(ended[0].info.id, old);
        assert_eq!(t.stats().port_reuse, 1);
        assert_eq!(t.len(), 1);
    }
}

#[test]
fn syn_retransmission_on_an_open_flow_is_the_same_flow() {
    let mut t = FlowTable::new(cfg());
    let mut ended = vec![];
    let (k, c) = tcp(1, 1000);
    let a = t.observe(k, c, Some(SYN), 0, &mut ended);
    let b = t.observe(k, c, Some(SYN), SEC, &mut ended);
    assert_eq!((a.id, b.new), (b.id, false));
    // SYN+ACK on a closing flow is not a reuse either.
    t.observe(k, c, Some(FIN), 2 * SEC, &mut ended);
    let d = t.observe(k, c.opposite(), Some(SYN | ACK), 3 * SEC, &mut ended);
    assert_eq!((d.id, d.new), (a.id, false));
    assert_eq!(t.stats().port_reuse, 0);
}

#[test]
fn time_going_backwards_never_underflows() {
    let mut t = FlowTable::new(cfg());
    let mut ended = vec![];
    let (k, c) = tcp(1, 1000);
    let id = t.observe(k, c, Some(SYN), 100 * SEC, &mut ended).id;
    let o = t.observe(k, c.opposite(), Some(SYN | ACK), 99 * SEC, &mut ended);
    assert_eq!((o.id, o.new), (id, false));
    let info = t.get(id).unwrap();
    assert_eq!((info.first_ts_ns, info.last_ts_ns, info.packets), (100 * SEC, 100 * SEC, 2));
    // A new flow stamped in the past, and expiry asked for an earlier time: nothing breaks.
    let (k2, s2) = tcp(2, 2);
    let id2 = t.observe(k2, s2, None, 0, &mut ended).id;
    assert_eq!(t.get(id2).unwrap().first_ts_ns, 0);
    t.expire(0, &mut ended);
    assert!(ended.is_empty());
    assert_eq!(t.clock_ns(), 100 * SEC);
    // Deadlines count from the table's clock (100 s), not from the stale stamp.
    t.expire(100 * SEC + 300 * SEC - 1, &mut ended);
    assert!(ended.is_empty());
    t.expire(u64::MAX, &mut ended);
    assert_eq!(reasons(&ended), vec![EndReason::IdleTimeout, EndReason::IdleTimeout]);
    // Timestamps near u64::MAX saturate.
    let id3 = t.observe(k, c, None, u64::MAX, &mut ended).id;
    assert!(t.get(id3).is_some());
}

#[test]
fn drain_ends_everything_oldest_first() {
    let mut t = FlowTable::new(cfg());
    let mut ended = vec![];
    let keys: Vec<_> = (1..=5).map(|i| tcp(i, u16::from(i))).collect();
    for (i, (k, s)) in keys.iter().enumerate() {
        t.observe(*k, *s, None, i as u64, &mut ended);
    }
    // Touch in reverse: drain order is by creation, not recency.
    for (k, s) in keys.iter().rev() {
        t.observe(*k, *s, None, 10, &mut ended);
    }
    t.drain(&mut ended);
    assert_eq!(ended.iter().map(|e| e.info.key).collect::<Vec<_>>(), keys.iter().map(|k| k.0).collect::<Vec<_>>());
    assert!(ended.iter().all(|e| e.reason == EndReason::Shutdown));
    assert!(t.is_empty());
    let st = t.stats();
    assert_eq!((st.ended_shutdown, st.created, st.active), (5, 5, 0));
}

#[test]
fn drain_in_steps_ends_the_same_flows_in_the_same_order() {
    let keys: Vec<_> = (1..=7).map(|i| tcp(i, 2000 + u16::from(i))).collect();
    let fill = |t: &mut FlowTable, ended: &mut Vec<_>| {
        for (i, (k, s)) in keys.iter().enumerate() {
            t.observe(*k, *s, None, i as u64, ended);
        }
        for (k, s) in keys.iter().rev() {
            t.observe(*k, *s, None, 10, ended);
        }
    };
    let (mut whole, mut stepped) = (FlowTable::new(cfg()), FlowTable::new(cfg()));
    let (mut a, mut b) = (vec![], vec![]);
    fill(&mut whole, &mut a);
    fill(&mut stepped, &mut b);
    whole.drain(&mut a);
    let mut steps = vec![];
    loop {
        let n = stepped.drain_some(&mut b, 3);
        if n == 0 {
            break;
        }
        steps.push(n);
    }
    assert_eq!(steps, vec![3, 3, 1]);
    let ids = |v: &[EndedFlow]| v.iter().map(|e| (e.info.key, e.reason)).collect::<Vec<_>>();
    assert_eq!(ids(&a), ids(&b));
    assert_eq!(b.len(), 7);
    assert!(stepped.is_empty());
    // A flow created between two steps is ended by a later pass.
    let mut c = vec![];
    fill(&mut stepped, &mut c);
    assert_eq!(stepped.drain_some(&mut c, 2), 2);
    let (late, ls) = tcp(9, 3000);
    stepped.observe(late, ls, None, 20, &mut c);
    while stepped.drain_some(&mut c, 2) > 0 {}
    assert_eq!(c.len(), 8);
    assert_eq!(c.last().map(|e| e.info.key), Some(late));
    assert!(stepped.is_empty());
}

#[derive(Clone, Debug)]
enum Op {
    Packet { flow: u8, from_hi: bool, flags: u8, dt: u64 },
    Expire { dt: u64 },
    Back { dt: u64 },
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0u8..24, any::<bool>(), prop::sample::select(vec![0u8, SYN, SYN | ACK, ACK, FIN | ACK, RST, RST | ACK]), 0u64..3_000)
            .prop_map(|(flow, from_hi, flags, dt)| Op::Packet { flow, from_hi, flags, dt }),
        1 => (0u64..100_000).prop_map(|dt| Op::Expire { dt }),
        1 => (0u64..500).prop_map(|dt| Op::Back { dt }),
    ]
}

fn flow_key(i: u8) -> FlowKey {
    let proto = match i % 3 {
        0 => 6,
        1 => 17,
        _ => 1,
    };
    FlowKey::new(proto, ep(i, u16::from(i)), ep(200, 80)).0
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn random_sequences_keep_the_invariants(max_flows in 1usize..12, ops in proptest::collection::vec(arb_op(), 1..300)) {
        let c = FlowTableConfig { max_flows, tcp_idle_ms: 30_000, udp_idle_ms: 10_000, other_idle_ms: 5_000, closed_linger_ms: 1_000 };
        let mut t = FlowTable::new(c);
        let mut now_ms = 0u64;
        let mut all_ended = 0u64;
        let mut live = std::collections::HashMap::new();
        for op in ops {
            let mut ended = vec![];
            match op {
                Op::Packet { flow, from_hi, flags, dt } => {
                    now_ms += dt;
                    let key = flow_key(flow);
                    let side = if from_hi { Side::Hi } else { Side::Lo };
                    let flags = (key.proto == 6).then_some(flags);
                    let o = t.observe(key, side, flags, now_ms * MS, &mut ended);
                    for e in &ended {
                        prop_assert!(t.get(e.info.id).is_none());
                        live.remove(&e.info.key);
                    }
                    let info = t.get(o.id).expect("observed flow is live");
                    prop_assert_eq!(info.key, key);
                    if o.new {
                        prop_assert_eq!(o.dir, Direction::ToServer);
                        prop_assert_eq!(info.packets, 1);
                        live.insert(key, o.id);
                    } else {
                        prop_assert_eq!(live.get(&key), Some(&o.id));
                    }
                }
                Op::Expire { dt } => {
                    now_ms += dt;
                    t.expire(now_ms * MS, &mut ended);
                    for e in &ended {
                        live.remove(&e.info.key);
                    }
                }
                Op::Back { dt } => now_ms = now_ms.saturating_sub(dt),
            }
            // Each flow ends once.
            let ids: std::collections::HashSet<_> = ended.iter().map(|e| e.info.id).collect();
            prop_assert_eq!(ids.len(), ended.len());
            all_ended += ended.len() as u64;
            let st = t.stats();
            prop_assert!(t.len() <= max_flows);
            prop_assert_eq!(st.active as usize, t.len());
            prop_assert_eq!(live.len(), t.len());
            prop_assert_eq!(st.created, st.ended_idle + st.ended_fin + st.ended_rst + st.evicted + st.ended_shutdown + st.active);
            prop_assert_eq!(all_ended, st.created - st.active);
            prop_assert!(st.max_active as usize <= max_flows);
        }
        let mut ended = vec![];
        t.drain(&mut ended);
        prop_assert!(t.is_empty());
        let st = t.stats();
        prop_assert_eq!(st.created, st.ended_idle + st.ended_fin + st.ended_rst + st.evicted + st.ended_shutdown);
    }
}

#[test]
fn drain_keeps_the_close_reason_of_lingering_flows() {
    let mut t = FlowTable::new(cfg());
    let mut ended = vec![];
    let (fin_flow, c1) = tcp(1, 1000);
    let (rst_flow, c2) = tcp(2, 1001);
    let (open_flow, c3) = tcp(3, 1002);
    t.observe(fin_flow, c1, Some(SYN), 0, &mut ended);
    t.observe(rst_flow, c2, Some(SYN), 1, &mut ended);
    t.observe(open_flow, c3, Some(SYN), 2, &mut ended);
    t.observe(fin_flow, c1, Some(FIN | ACK), 3, &mut ended);
    t.observe(fin_flow, c1.opposite(), Some(FIN | ACK), 4, &mut ended);
    t.observe(rst_flow, c2.opposite(), Some(RST), 5, &mut ended);
    // The input ends while the closed flows linger.
    t.drain(&mut ended);
    assert_eq!(reasons(&ended), vec![EndReason::Fin, EndReason::Rst, EndReason::Shutdown]);
    let st = t.stats();
    assert_eq!((st.ended_fin, st.ended_rst, st.ended_shutdown), (1, 1, 1));
}
