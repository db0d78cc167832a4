//! The parser on broken input: every `Malformed` variant from a hand-cut or hand-corrupted
//! frame, every truncation of valid frames, and random bytes. It must never panic.

use etherparse::{IpHeaders, IpNumber, Ipv4Header, Ipv6Header, LinuxSllPacketType, PacketBuilder, VlanId};
use proptest::prelude::*;
use runtime::ports::LinkType;
use stacks::parse::{parse, Malformed, Parsed};
use std::collections::HashSet;

const MAC_A: [u8; 6] = [2, 0, 0, 0, 0, 1];
const MAC_B: [u8; 6] = [2, 0, 0, 0, 0, 2];
const V4_A: [u8; 4] = [192, 168, 0, 1];
const V4_B: [u8; 4] = [192, 168, 0, 2];
const V6_A: [u8; 16] = [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const V6_B: [u8; 16] = [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
const LINKS: [LinkType; 3] = [LinkType::Ethernet, LinkType::RawIp, LinkType::LinuxSll];

fn build(b: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut v = Vec::new();
    b(&mut v);
    v
}

fn check_invariants(p: &Parsed, frame: &[u8]) {
    assert!(p.l3_offset <= p.l4_offset, "{p:?}");
    assert!(p.l4_offset <= p.payload_offset, "{p:?}");
    assert!(usize::from(p.payload_offset) + usize::from(p.payload_len) <= frame.len(), "{p:?}");
}

fn eth_v4_tcp() -> Vec<u8> {
    build(|v| PacketBuilder::ethernet2(MAC_A, MAC_B).ipv4(V4_A, V4_B, 64).tcp(1, 2, 3, 4).write(v, b"hello").unwrap())
}
fn eth_v4_udp() -> Vec<u8> {
    build(|v| PacketBuilder::ethernet2(MAC_A, MAC_B).ipv4(V4_A, V4_B, 64).udp(1, 2).write(v, b"hello").unwrap())
}
fn eth_v4_icmp() -> Vec<u8> {
    build(|v| {
        PacketBuilder::ethernet2(MAC_A, MAC_B)
            .ipv4(V4_A, V4_B, 64)
            .icmpv4_echo_request(1, 2)
            .write(v, b"hello")
            .unwrap()
    })
}
fn eth_v6_tcp() -> Vec<u8> {
    build(|v| PacketBuilder::ethernet2(MAC_A, MAC_B).ipv6(V6_A, V6_B, 64).tcp(1, 2, 3, 4).write(v, b"hello").unwrap())
}
fn eth_v6_ext_udp() -> Vec<u8> {
    let exts = etherparse::Ipv6Extensions {
        hop_by_hop_options: Some(etherparse::Ipv6RawExtHeader::new_raw(IpNumber(0), &[1, 4, 0, 0, 0, 0]).unwrap()),
        ..Default::default()
    };
    let h = Ipv6Header { hop_limit: 1, source: V6_A, destination: V6_B, ..Default::default() };
    build(|v| PacketBuilder::ethernet2(MAC_A, MAC_B).ip(IpHeaders::Ipv6(h, exts)).udp(1, 2).write(v, b"hello").unwrap())
}
fn qinq_v4_udp() -> Vec<u8> {
    build(|v| {
        PacketBuilder::ethernet2(MAC_A, MAC_B)
            .double_vlan(VlanId::try_new(1).unwrap(), VlanId::try_new(2).unwrap())
            .ipv4(V4_A, V4_B, 64)
            .udp(1, 2)
            .write(v, b"hello")
            .unwrap()
    })
}
fn sll_v6_icmp() -> Vec<u8> {
    build(|v| {
        PacketBuilder::linux_sll(LinuxSllPacketType::HOST, 6, [0; 8])
            .ipv6(V6_A, V6_B, 64)
            .icmpv6_echo_reply(1, 2)
            .write(v, b"hello")
            .unwrap()
    })
}
fn raw_v4_opts_tcp() -> Vec<u8> {
    let mut h = Ipv4Header::new(0, 64, IpNumber::TCP, V4_A, V4_B).unwrap();
    h.options = [1u8, 1, 1, 0].into();
    build(|v| PacketBuilder::ip(IpHeaders::Ipv4(h, Default::default())).tcp(1, 2, 3, 4).write(v, b"hello").unwrap())
}

fn valid_frames() -> Vec<(LinkType, Vec<u8>)> {
    vec![
        (LinkType::Ethernet, eth_v4_tcp()),
        (LinkType::Ethernet, eth_v4_udp()),
        (LinkType::Ethernet, eth_v4_icmp()),
        (LinkType::Ethernet, eth_v6_tcp()),
        (LinkType::Ethernet, eth_v6_ext_udp()),
        (LinkType::Ethernet, qinq_v4_udp()),
        (LinkType::LinuxSll, sll_v6_icmp()),
        (LinkType::RawIp, raw_v4_opts_tcp()),
    ]
}

fn set16(f: &mut [u8], at: usize, v: u16) {
    f[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

/// An IPv6 frame whose payload starts with `n` destination-options headers (8 bytes each) and
/// ends with 8 bytes of UDP.
fn ipv6_with_dest_opts(n: usize) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&MAC_B);
    f.extend_from_slice(&MAC_A);
    f.extend_from_slice(&0x86ddu16.to_be_bytes());
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&((n * 8 + 8) as u16).to_be_bytes());
    f.push(if n == 0 { 17 } else { 60 });
    f.push(64);
    f.extend_from_slice(&V6_A);
    f.extend_from_slice(&V6_B);
    for i in 0..n {
        f.extend_from_slice(&[if i + 1 == n { 17 } else { 60 }, 0, 1, 4, 0, 0, 0, 0]);
    }
    f.extend_from_slice(&[0, 1, 0, 2, 0, 8, 0, 0]);
    f
}

/// (description, link, frame, expected error) for every variant.
fn broken_frames() -> Vec<(&'static str, LinkType, Vec<u8>, Malformed)> {
    let mut cases = Vec::new();
    let mut add = |what, link, frame, err| cases.push((what, link, frame, err));

    for link in LINKS {
        add("empty", link, vec![], Malformed::EmptyFrame);
    }
    add("13-byte ethernet", LinkType::Ethernet, eth_v4_tcp()[..13].to_vec(), Malformed::TruncatedEthernet);
    add("15-byte sll", LinkType::LinuxSll, sll_v6_icmp()[..15].to_vec(), Malformed::TruncatedSll);
    add("cut in the outer vlan tag", LinkType::Ethernet, qinq_v4_udp()[..16].to_vec(), Malformed::TruncatedVlan);
    add("cut in the inner vlan tag", LinkType::Ethernet, qinq_v4_udp()[..21].to_vec(), Malformed::TruncatedVlan);
    {
        let mut f = qinq_v4_udp();
        // Make the inner tag's type a third VLAN tag.
        set16(&mut f, 20, 0x8100);
        add("three vlan tags", LinkType::Ethernet, f, Malformed::TooManyVlanTags);
    }
    {
        let mut f = eth_v4_tcp()[14..].to_vec();
        f[0] = 0x55;
        add("raw ip version 5", LinkType::RawIp, f, Malformed::RawIpBadVersion);
    }
    add("raw ip version 0 (single byte)", LinkType::RawIp, vec![0x00], Malformed::RawIpBadVersion);

    // IPv4
    add("cut in the ipv4 header", LinkType::Ethernet, eth_v4_tcp()[..14 + 19].to_vec(), Malformed::TruncatedIpv4);
    add("cut in the ipv4 options", LinkType::RawIp, raw_v4_opts_tcp()[..22].to_vec(), Malformed::TruncatedIpv4);
    {
        let mut f = eth_v4_tcp();
        f[14] = 0x65;
        add("ipv4 ethertype, version 6", LinkType::Ethernet, f, Malformed::Ipv4BadVersion);
    }
    {
        let mut f = eth_v4_tcp();
        f[14] = 0x44;
        add("ipv4 ihl 4", LinkType::Ethernet, f, Malformed::Ipv4BadHeaderLength);
    }
    {
        let mut f = eth_v4_tcp();
        set16(&mut f, 16, 19);
        add("ipv4 total length 19", LinkType::Ethernet, f, Malformed::Ipv4TotalLengthTooShort);
    }
    {
        let mut f = raw_v4_opts_tcp();
        set16(&mut f, 2, 22);
        add("ipv4 total length below ihl", LinkType::RawIp, f, Malformed::Ipv4TotalLengthTooShort);
    }

    // IPv6
    add("cut in the ipv6 header", LinkType::Ethernet, eth_v6_tcp()[..14 + 39].to_vec(), Malformed::TruncatedIpv6);
    {
        let mut f = eth_v6_tcp();
        f[14] = 0x40;
        add("ipv6 ethertype, version 4", LinkType::Ethernet, f, Malformed::Ipv6BadVersion);
    }
    add("9 extension headers", LinkType::Ethernet, ipv6_with_dest_opts(9), Malformed::Ipv6ExtensionChainTooLong);
    add(
        "cut in an extension header",
        LinkType::Ethernet,
        eth_v6_ext_udp()[..14 + 40 + 5].to_vec(),
        Malformed::TruncatedIpv6Extension,
    );
    {
        let mut f = eth_v6_ext_udp();
        // Hop-by-hop length of 2 units (24 bytes): past the 21-byte payload.
        f[14 + 41] = 2;
        add("extension header past the ip payload", LinkType::Ethernet, f, Malformed::TruncatedIpv6Extension);
    }
    {
        let mut f = eth_v6_ext_udp();
        set16(&mut f, 18, 4);
        f.truncate(14 + 40 + 4);
        add("payload length ends inside an extension", LinkType::Ethernet, f, Malformed::TruncatedIpv6Extension);
    }

    // TCP
    add("cut in the tcp header", LinkType::Ethernet, eth_v4_tcp()[..14 + 20 + 19].to_vec(), Malformed::TruncatedTcp);
    {
        let mut f = eth_v4_tcp();
        set16(&mut f, 16, 20 + 10);
        add("ip length ends inside the tcp header", LinkType::Ethernet, f, Malformed::TruncatedTcp);
    }
    {
        let mut f = eth_v6_tcp();
        f[14 + 40 + 12] = 0x40;
        add("tcp data offset 4", LinkType::Ethernet, f, Malformed::TcpBadDataOffset);
    }
    {
        let mut f = eth_v4_tcp();
        f[14 + 20 + 12] = 0xf0;
        add("tcp data offset 15 past the ip payload", LinkType::Ethernet, f, Malformed::TcpBadDataOffset);
    }
    {
        let mut f = eth_v4_tcp();
        f[14 + 20 + 12] = 0x60;
        set16(&mut f, 16, 20 + 24);
        f.truncate(14 + 20 + 22);
        add("tcp options cut by the capture", LinkType::Ethernet, f, Malformed::TruncatedTcp);
    }

    // UDP
    add("cut in the udp header", LinkType::Ethernet, eth_v4_udp()[..14 + 20 + 7].to_vec(), Malformed::TruncatedUdp);
    {
        let mut f = eth_v4_udp();
        set16(&mut f, 16, 20 + 4);
        add("ip length ends inside the udp header", LinkType::Ethernet, f, Malformed::TruncatedUdp);
    }
    {
        let mut f = eth_v4_udp();
        set16(&mut f, 14 + 20 + 4, 7);
        add("udp length 7", LinkType::Ethernet, f, Malformed::UdpBadLength);
    }
    {
        let mut f = qinq_v4_udp();
        set16(&mut f, 22 + 20 + 4, 14);
        add("udp length past the ip payload", LinkType::Ethernet, f, Malformed::UdpBadLength);
    }

    // ICMP
    add("cut in the icmp header", LinkType::Ethernet, eth_v4_icmp()[..14 + 20 + 7].to_vec(), Malformed::TruncatedIcmp);
    add(
        "cut in the icmpv6 header",
        LinkType::LinuxSll,
        sll_v6_icmp()[..16 + 40 + 4].to_vec(),
        Malformed::TruncatedIcmp,
    );
    cases
}

#[test]
fn every_malformed_variant_from_a_crafted_frame() {
    let mut seen = HashSet::new();
    for (what, link, frame, want) in broken_frames() {
        let got = parse(link, &frame);
        assert_eq!(got.map(|_| ()), Err(want), "{what}");
        seen.insert(want);
    }
    for m in Malformed::ALL {
        assert!(seen.contains(m), "no crafted frame gives {m:?}");
    }
}

#[test]
fn malformed_names_are_stable_snake_case_and_unique() {
    let names: HashSet<_> = Malformed::ALL.iter().map(|m| m.as_str()).collect();
    assert_eq!(names.len(), Malformed::ALL.len());
    for m in Malformed::ALL {
        let s = m.as_str();
        assert!(s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'), "{s}");
        let text = m.to_string();
        assert!(!text.is_empty() && text != s, "{m:?}");
    }
    assert_eq!(Malformed::TruncatedTcp.as_str(), "truncated_tcp");
    assert_eq!(Malformed::EmptyFrame.as_str(), "empty_frame");
}

#[test]
fn a_valid_frame_cut_at_every_length_gives_ok_or_error() {
    for (link, frame) in valid_frames() {
        let full = parse(link, &frame).expect("valid frame");
        check_invariants(&full, &frame);
        assert!(!full.payload_clipped);
        let headers_end = usize::from(full.payload_offset);
        for cut in 0..frame.len() {
            let part = &frame[..cut];
            match parse(link, part) {
                Ok(p) => {
                    check_invariants(&p, part);
                    // All headers present: only the payload may be short.
                    assert!(cut >= headers_end, "{link:?} cut {cut}: {p:?}");
                    assert!(p.payload_clipped, "{link:?} cut {cut}");
                    assert_eq!(p.payload_offset, full.payload_offset);
                    assert_eq!(usize::from(p.payload_offset) + usize::from(p.payload_len), cut);
                }
                Err(e) => assert!(cut < headers_end, "{link:?} cut {cut}: {e}"),
            }
        }
    }
}

#[test]
fn every_single_byte_corruption_of_valid_frames_is_handled() {
    for (link, frame) in valid_frames() {
        for i in 0..frame.len() {
            for v in [0x00, 0x01, 0x0f, 0x45, 0x60, 0x7f, 0x80, 0xf0, 0xff] {
                let mut f = frame.clone();
                f[i] = v;
                if let Ok(p) = parse(link, &f) {
                    check_invariants(&p, &f);
                }
            }
        }
    }
}

#[test]
fn extension_chain_of_eight_is_accepted() {
    let p = parse(LinkType::Ethernet, &ipv6_with_dest_opts(8)).unwrap();
    assert_eq!(p.ip.unwrap().proto, 17);
    assert_eq!(p.l4_offset, 14 + 40 + 64);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_bytes_never_panic(link in 0u8..3, bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let link = LINKS[usize::from(link)];
        if let Ok(p) = parse(link, &bytes) {
            check_invariants(&p, &bytes);
        }
    }

    #[test]
    fn random_ip_like_bytes_never_panic(
        link in 0u8..3,
        v6 in any::<bool>(),
        proto in prop::sample::select(vec![0u8, 1, 6, 17, 43, 44, 50, 51, 58, 59, 60]),
        tail in proptest::collection::vec(any::<u8>(), 0..160),
    ) {
        // Plausible headers up to the protocol field, random after: reaches the deep paths.
        let link = LINKS[usize::from(link)];
        let mut f = match link {
            LinkType::Ethernet => { let mut f = vec![0; 12]; f.extend_from_slice(if v6 { &[0x86, 0xdd] } else { &[0x08, 0x00] }); f }
            LinkType::LinuxSll => { let mut f = vec![0; 14]; f.extend_from_slice(if v6 { &[0x86, 0xdd] } else { &[0x08, 0x00] }); f }
            LinkType::RawIp => vec![],
        };
        let len = tail.len() as u16;
        if v6 {
            f.extend_from_slice(&[0x60, 0, 0, 0]);
            f.extend_from_slice(&len.to_be_bytes());
            f.push(proto);
            f.push(64);
            f.extend_from_slice(&[0; 32]);
        } else {
            f.extend_from_slice(&[0x45, 0]);
            f.extend_from_slice(&(len + 20).to_be_bytes());
            f.extend_from_slice(&[0, 0, 0, 0, 64, proto, 0, 0]);
            f.extend_from_slice(&[0; 8]);
        }
        f.extend_from_slice(&tail);
        if let Ok(p) = parse(link, &f) {
            check_invariants(&p, &f);
        }
    }
}
