//! Differential test: the hand parser against etherparse's `SlicedPacket` (slow, but a
//! well-tested oracle) on random well-formed packets in every encapsulation.

use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TransportSlice};
use proptest::prelude::*;
use runtime::ports::LinkType;
use stacks::parse::{parse, Transport};
use std::net::IpAddr;

#[derive(Clone, Debug)]
struct Spec {
    link: u8,
    vlans: u8,
    v6: bool,
    l4: u8,
    a4: [u8; 4],
    b4: [u8; 4],
    a6: [u8; 16],
    b6: [u8; 16],
    sport: u16,
    dport: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    ttl: u8,
    payload: Vec<u8>,
    padding: usize,
}

fn arb_spec() -> impl Strategy<Value = Spec> {
    (
        (0u8..3, 0u8..3, any::<bool>(), 0u8..3),
        (any::<[u8; 4]>(), any::<[u8; 4]>(), any::<[u8; 16]>(), any::<[u8; 16]>()),
        (any::<u16>(), any::<u16>(), any::<u32>(), any::<u32>(), any::<u8>(), any::<u8>()),
        (proptest::collection::vec(any::<u8>(), 0..80), 0usize..24),
    )
        .prop_map(
            |((link, vlans, v6, l4), (a4, b4, a6, b6), (sport, dport, seq, ack, flags, ttl), (payload, padding))| {
                Spec { link, vlans, v6, l4, a4, b4, a6, b6, sport, dport, seq, ack, flags, ttl, payload, padding }
            },
        )
}

/// The bare IP packet.
fn ip_packet(s: &Spec) -> Vec<u8> {
    let mut v = Vec::new();
    macro_rules! finish {
        ($b:expr) => {
            match s.l4 {
                0 => $b.tcp(s.sport, s.dport, s.seq, 1000).ack(s.ack).write(&mut v, &s.payload).unwrap(),
                1 => $b.udp(s.sport, s.dport).write(&mut v, &s.payload).unwrap(),
                _ if s.v6 => $b.icmpv6_echo_request(s.sport, s.dport).write(&mut v, &s.payload).unwrap(),
                _ => $b.icmpv4_echo_request(s.sport, s.dport).write(&mut v, &s.payload).unwrap(),
            }
        };
    }
    if s.v6 {
        finish!(PacketBuilder::ipv6(s.a6, s.b6, s.ttl));
    } else {
        finish!(PacketBuilder::ipv4(s.a4, s.b4, s.ttl));
    }
    if s.l4 == 0 {
        // Any flag combination (no checksum is verified by either parser).
        let l4 = if s.v6 { 40 } else { 20 };
        v[l4 + 13] = s.flags;
    }
    v
}

fn frame(s: &Spec, ip: &[u8]) -> (LinkType, Vec<u8>, usize) {
    let et: [u8; 2] = if s.v6 { [0x86, 0xdd] } else { [0x08, 0x00] };
    let mut f = Vec::new();
    let link = match s.link {
        0 => {
            f.extend_from_slice(&[2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2]);
            let tags: &[[u8; 2]] = match s.vlans {
                0 => &[],
                1 => &[[0x81, 0x00]],
                _ => &[[0x88, 0xa8], [0x81, 0x00]],
            };
            // [TPID][TCI] per tag, then the EtherType; outer VLAN id 0x100, inner 0x101.
            for (i, t) in tags.iter().enumerate() {
                f.extend_from_slice(t);
                f.extend_from_slice(&(0x0100u16 + i as u16).to_be_bytes());
            }
            f.extend_from_slice(&et);
            LinkType::Ethernet
        }
        1 => LinkType::RawIp,
        _ => {
            f.extend_from_slice(&[0, 0, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0]);
            f.extend_from_slice(&et);
            LinkType::LinuxSll
        }
    };
    let l3 = f.len();
    f.extend_from_slice(ip);
    if link == LinkType::Ethernet {
        f.resize(f.len() + s.padding, 0xee);
    }
    (link, f, l3)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn agrees_with_etherparse(s in arb_spec()) {
        let ip = ip_packet(&s);
        let (link, f, l3) = frame(&s, &ip);
        let p = parse(link, &f).expect("well-formed packet");
        prop_assert_eq!(usize::from(p.l3_offset), l3);
        prop_assert!(!p.payload_clipped);
        if link == LinkType::Ethernet {
            prop_assert_eq!(p.vlan, (s.vlans > 0).then_some(0x0100));
        }

        let oracle = SlicedPacket::from_ip(&ip).expect("etherparse reads it");
        let ours = p.ip.unwrap();
        match oracle.net.as_ref().unwrap() {
            NetSlice::Ipv4(v4) => {
                let h = v4.header();
                prop_assert_eq!(ours.version, 4);
                prop_assert_eq!(ours.src, IpAddr::V4(h.source_addr()));
                prop_assert_eq!(ours.dst, IpAddr::V4(h.destination_addr()));
                prop_assert_eq!(ours.proto, h.protocol().0);
                prop_assert_eq!(ours.ttl, h.ttl());
            }
            NetSlice::Ipv6(v6) => {
                let h = v6.header();
                prop_assert_eq!(ours.version, 6);
                prop_assert_eq!(ours.src, IpAddr::V6(h.source_addr()));
                prop_assert_eq!(ours.dst, IpAddr::V6(h.destination_addr()));
                prop_assert_eq!(ours.proto, h.next_header().0);
                prop_assert_eq!(ours.ttl, h.hop_limit());
            }
        }
        let payload = p.payload(&f);
        match (oracle.transport.as_ref().unwrap(), p.transport) {
            (TransportSlice::Tcp(t), Transport::Tcp(o)) => {
                prop_assert_eq!((o.src_port, o.dst_port, o.seq, o.ack), (t.source_port(), t.destination_port(), t.sequence_number(), t.acknowledgment_number()));
                prop_assert_eq!(o.flags, s.flags);
                prop_assert_eq!(o.window, t.window_size());
                prop_assert_eq!(usize::from(o.header_len), t.header_len());
                prop_assert_eq!(payload, t.payload());
            }
            (TransportSlice::Udp(u), Transport::Udp(o)) => {
                prop_assert_eq!((o.src_port, o.dst_port, o.length), (u.source_port(), u.destination_port(), u.length()));
                prop_assert_eq!(payload, u.payload());
            }
            (TransportSlice::Icmpv4(i), Transport::Icmp { v6: false, kind, code, ident }) => {
                prop_assert_eq!((kind, code, ident), (i.type_u8(), i.code_u8(), s.sport));
                prop_assert_eq!(payload, i.payload());
            }
            (TransportSlice::Icmpv6(i), Transport::Icmp { v6: true, kind, code, ident }) => {
                prop_assert_eq!((kind, code, ident), (i.type_u8(), i.code_u8(), s.sport));
                prop_assert_eq!(payload, i.payload());
            }
            (theirs, ours) => prop_assert!(false, "etherparse {:?} vs ours {:?}", theirs, ours),
        }
    }
}
