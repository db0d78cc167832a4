//! The canonical flow key and its symmetric hash.

use etherparse::{IpFragOffset, IpHeaders, IpNumber, Ipv4Header, PacketBuilder};
use proptest::prelude::*;
use runtime::ports::LinkType;
use stacks::flow::{Endpoint, FlowKey, Side};
use stacks::parse::parse;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

fn ep(addr: [u8; 4], port: u16) -> Endpoint {
    Endpoint { addr: IpAddr::V4(Ipv4Addr::from(addr)), port }
}

fn key_of(frame: &[u8]) -> Option<(FlowKey, Side)> {
    FlowKey::from_parsed(&parse(LinkType::Ethernet, frame).unwrap())
}

fn build(b: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut v = Vec::new();
    b(&mut v);
    v
}

const M: [u8; 6] = [2, 0, 0, 0, 0, 1];

#[test]
fn both_directions_give_the_same_key() {
    let a = ep([10, 0, 0, 1], 40000);
    let b = ep([10, 0, 0, 2], 80);
    let (k1, s1) = FlowKey::new(6, a, b);
    let (k2, s2) = FlowKey::new(6, b, a);
    assert_eq!(k1, k2);
    assert_ne!(s1, s2);
    assert!(k1.lo <= k1.hi);
    assert_eq!(k1.endpoint(s1), a);
    assert_eq!(k2.endpoint(s2), b);
    assert_eq!(k1.endpoint(s1.opposite()), b);
    assert_eq!(k1.symmetric_hash(), k2.symmetric_hash());
    // Same endpoints both ways: the sender is Lo.
    assert_eq!(FlowKey::new(17, a, a).1, Side::Lo);
}

#[test]
fn from_parsed_tcp_both_directions() {
    let c2s = build(|v| {
        PacketBuilder::ethernet2(M, M)
            .ipv4([10, 0, 0, 9], [10, 0, 0, 1], 64)
            .tcp(5555, 443, 0, 0)
            .syn()
            .write(v, &[])
            .unwrap()
    });
    let s2c = build(|v| {
        PacketBuilder::ethernet2(M, M)
            .ipv4([10, 0, 0, 1], [10, 0, 0, 9], 64)
            .tcp(443, 5555, 0, 0)
            .syn()
            .ack(1)
            .write(v, &[])
            .unwrap()
    });
    let (k1, s1) = key_of(&c2s).unwrap();
    let (k2, s2) = key_of(&s2c).unwrap();
    assert_eq!(k1, k2);
    assert_eq!(k1.proto, 6);
    assert_eq!(s1, s2.opposite());
    assert_eq!(k1.endpoint(s1), ep([10, 0, 0, 9], 5555));
    assert_eq!(k1.lo, ep([10, 0, 0, 1], 443));
}

#[test]
fn from_parsed_udp_ipv6() {
    let a: [u8; 16] = Ipv6Addr::LOCALHOST.octets();
    let mut b = a;
    b[0] = 0x20;
    let f1 = build(|v| PacketBuilder::ethernet2(M, M).ipv6(a, b, 64).udp(1, 2).write(v, b"x").unwrap());
    let f2 = build(|v| PacketBuilder::ethernet2(M, M).ipv6(b, a, 64).udp(2, 1).write(v, b"y").unwrap());
    let (k1, s1) = key_of(&f1).unwrap();
    let (k2, s2) = key_of(&f2).unwrap();
    assert_eq!((k1, k1.proto), (k2, 17));
    assert_ne!(s1, s2);
}

#[test]
fn icmp_echo_request_and_reply_share_a_key() {
    let req = build(|v| {
        PacketBuilder::ethernet2(M, M)
            .ipv4([1, 1, 1, 1], [8, 8, 8, 8], 64)
            .icmpv4_echo_request(99, 1)
            .write(v, &[])
            .unwrap()
    });
    let rep = build(|v| {
        PacketBuilder::ethernet2(M, M)
            .ipv4([8, 8, 8, 8], [1, 1, 1, 1], 64)
            .icmpv4_echo_reply(99, 1)
            .write(v, &[])
            .unwrap()
    });
    let other = build(|v| {
        PacketBuilder::ethernet2(M, M)
            .ipv4([1, 1, 1, 1], [8, 8, 8, 8], 64)
            .icmpv4_echo_request(100, 1)
            .write(v, &[])
            .unwrap()
    });
    let (k1, _) = key_of(&req).unwrap();
    let (k2, _) = key_of(&rep).unwrap();
    let (k3, _) = key_of(&other).unwrap();
    assert_eq!(k1, k2);
    assert_ne!(k1, k3);
    assert_eq!((k1.lo.port, k1.hi.port), (99, 99));
    let unreach = build(|v| {
        PacketBuilder::ethernet2(M, M)
            .ipv4([1, 1, 1, 1], [8, 8, 8, 8], 64)
            .icmpv4_raw(3, 1, [0; 4])
            .write(v, &[])
            .unwrap()
    });
    let (k4, _) = key_of(&unreach).unwrap();
    assert_eq!((k4.lo.port, k4.hi.port, k4.proto), (0, 0, 1));
}

#[test]
fn other_protocols_have_port_zero() {
    let h = Ipv4Header::new(0, 64, IpNumber(47), [1, 2, 3, 4], [5, 6, 7, 8]).unwrap();
    let gre = build(|v| {
        PacketBuilder::ethernet2(M, M)
            .ip(IpHeaders::Ipv4(h, Default::default()))
            .write(v, IpNumber(47), &[0; 4])
            .unwrap()
    });
    let (k, s) = key_of(&gre).unwrap();
    assert_eq!((k.proto, k.lo.port, k.hi.port, s), (47, 0, 0, Side::Lo));
}

#[test]
fn non_ip_and_non_first_fragments_are_not_flows() {
    let mut arp = vec![0xff; 12];
    arp.extend_from_slice(&[0x08, 0x06]);
    arp.extend_from_slice(&[0; 28]);
    assert_eq!(key_of(&arp), None);

    let mut h = Ipv4Header::new(0, 64, IpNumber::UDP, [1, 2, 3, 4], [5, 6, 7, 8]).unwrap();
    h.fragment_offset = IpFragOffset::try_new(10).unwrap();
    let later = build(|v| {
        PacketBuilder::ethernet2(M, M)
            .ip(IpHeaders::Ipv4(h.clone(), Default::default()))
            .write(v, IpNumber::UDP, &[0; 16])
            .unwrap()
    });
    assert_eq!(key_of(&later), None);

    h.fragment_offset = IpFragOffset::try_new(0).unwrap();
    h.more_fragments = true;
    let first = build(|v| {
        PacketBuilder::ethernet2(M, M).ip(IpHeaders::Ipv4(h, Default::default())).udp(7, 8).write(v, &[0; 16]).unwrap()
    });
    let (k, _) = key_of(&first).unwrap();
    assert_eq!((k.lo.port, k.hi.port), (7, 8));
}

#[test]
fn hash_is_pinned_across_runs_and_processes() {
    // A fixed value: if this changes, flows move between shards between versions.
    let (k, _) = FlowKey::new(6, ep([10, 0, 0, 1], 1234), ep([10, 0, 0, 2], 80));
    let h = k.symmetric_hash();
    assert_eq!(h, k.symmetric_hash());
    assert_eq!(h, PINNED_HASH, "symmetric_hash changed: {h:#010x}");
    // The address family matters: 10.0.0.1 and ::ffff:10.0.0.1 are different keys.
    let mapped = |a: [u8; 4], port| Endpoint { addr: IpAddr::V6(Ipv4Addr::from(a).to_ipv6_mapped()), port };
    let (k6, _) = FlowKey::new(6, mapped([10, 0, 0, 1], 1234), mapped([10, 0, 0, 2], 80));
    assert_ne!(k6.symmetric_hash(), h);
}

const PINNED_HASH: u32 = 0x1b33_57e9;

fn arb_addr() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(|a| IpAddr::V4(Ipv4Addr::from(a))),
        any::<[u8; 16]>().prop_map(|a| IpAddr::V6(Ipv6Addr::from(a))),
    ]
}

fn arb_endpoint() -> impl Strategy<Value = Endpoint> {
    (arb_addr(), any::<u16>()).prop_map(|(addr, port)| Endpoint { addr, port })
}

proptest! {
    #[test]
    fn canonical_and_symmetric(proto in any::<u8>(), a in arb_endpoint(), b in arb_endpoint()) {
        let (k1, s1) = FlowKey::new(proto, a, b);
        let (k2, s2) = FlowKey::new(proto, b, a);
        prop_assert_eq!(k1, k2);
        prop_assert!(k1.lo <= k1.hi);
        prop_assert_eq!(k1.endpoint(s1), a);
        prop_assert_eq!(k2.endpoint(s2), b);
        if a != b {
            prop_assert_ne!(s1, s2);
        }
        prop_assert_eq!(k1.symmetric_hash(), k2.symmetric_hash());
    }
}

/// A small deterministic generator (SplitMix64), so the test needs no extra crate.
struct SplitMix(u64);
impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

fn spread(keys: impl Iterator<Item = FlowKey>, buckets: usize) -> (usize, usize, usize) {
    let mut counts = vec![0usize; buckets];
    let mut n = 0;
    for k in keys {
        counts[k.symmetric_hash() as usize % buckets] += 1;
        n += 1;
    }
    (n, *counts.iter().min().unwrap(), *counts.iter().max().unwrap())
}

#[test]
fn hash_distribution_random_keys() {
    let mut r = SplitMix(1);
    let keys: Vec<FlowKey> = (0..10_000)
        .map(|_| {
            let x = r.next();
            let y = r.next();
            FlowKey::new(
                6,
                ep((x as u32).to_be_bytes(), (x >> 32) as u16),
                ep((y as u32).to_be_bytes(), (y >> 32) as u16),
            )
            .0
        })
        .collect();
    for buckets in [16, 7, 64] {
        let (n, min, max) = spread(keys.iter().copied(), buckets);
        let avg = n / buckets;
        assert!(max <= 2 * avg && min >= avg / 2, "{buckets} buckets: min {min} max {max} avg {avg}");
    }
}

#[test]
fn hash_distribution_sequential_client_ports() {
    // The realistic worst case: one client, one server, consecutive source ports.
    let keys = (0..10_000u16).map(|i| FlowKey::new(6, ep([10, 0, 0, 1], 30_000 + i), ep([10, 0, 0, 2], 80)).0);
    let (n, min, max) = spread(keys, 16);
    let avg = n / 16;
    assert!(max <= avg * 5 / 4 && min >= avg * 3 / 4, "min {min} max {max} avg {avg}");
    // And consecutive addresses.
    let keys =
        (0..10_000u32).map(|i| FlowKey::new(17, ep((0x0a00_0000 + i).to_be_bytes(), 53), ep([8, 8, 8, 8], 53)).0);
    let (n, min, max) = spread(keys, 16);
    let avg = n / 16;
    assert!(max <= avg * 5 / 4 && min >= avg * 3 / 4, "min {min} max {max} avg {avg}");
}
