//! The parser on well-formed packets built with etherparse: every supported encapsulation,
//! IP options and extension headers, fragments, padding and snap-length clipping.

use etherparse::{
    IpAuthHeader, IpFragOffset, IpHeaders, IpNumber, Ipv4Header, Ipv6Extensions, Ipv6FragmentHeader, Ipv6Header,
    Ipv6RawExtHeader, Ipv6RoutingExtensions, LinuxSllPacketType, PacketBuilder, VlanId,
};
use runtime::ports::LinkType;
use stacks::parse::{parse, tcp_flags, Parsed, Transport};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

const MAC_A: [u8; 6] = [2, 0, 0, 0, 0, 1];
const MAC_B: [u8; 6] = [2, 0, 0, 0, 0, 2];
const V4_A: [u8; 4] = [10, 0, 0, 1];
const V4_B: [u8; 4] = [10, 0, 0, 2];
const V6_A: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const V6_B: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

fn ok(link: LinkType, frame: &[u8]) -> Parsed {
    let p = parse(link, frame).unwrap_or_else(|e| panic!("{link:?} frame rejected: {e}"));
    check_invariants(&p, frame);
    p
}

fn check_invariants(p: &Parsed, frame: &[u8]) {
    assert!(p.l3_offset <= p.l4_offset, "{p:?}");
    assert!(p.l4_offset <= p.payload_offset, "{p:?}");
    assert!(usize::from(p.payload_offset) + usize::from(p.payload_len) <= frame.len(), "{p:?}");
}

fn v4(a: [u8; 4]) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(a))
}

fn v6(a: [u8; 16]) -> IpAddr {
    IpAddr::V6(Ipv6Addr::from(a))
}

fn build(b: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut v = Vec::new();
    b(&mut v);
    v
}

#[test]
fn ipv4_tcp_over_ethernet() {
    let payload = b"GET / HTTP/1.1\r\n\r\n";
    let frame = build(|v| {
        PacketBuilder::ethernet2(MAC_A, MAC_B)
            .ipv4(V4_A, V4_B, 64)
            .tcp(40000, 80, 1000, 65535)
            .syn()
            .ack(7)
            .write(v, payload)
            .unwrap()
    });
    let p = ok(LinkType::Ethernet, &frame);
    assert_eq!(p.vlan, None);
    assert_eq!(p.ethertype, 0x0800);
    assert_eq!(p.l3_offset, 14);
    assert_eq!(p.l4_offset, 34);
    let ip = p.ip.unwrap();
    assert_eq!((ip.version, ip.src, ip.dst, ip.proto, ip.ttl), (4, v4(V4_A), v4(V4_B), 6, 64));
    assert_eq!(ip.fragment, None);
    let Transport::Tcp(t) = p.transport else { panic!("{p:?}") };
    assert_eq!((t.src_port, t.dst_port, t.seq, t.ack, t.window), (40000, 80, 1000, 7, 65535));
    assert_eq!(t.flags, tcp_flags::SYN | tcp_flags::ACK);
    assert_eq!(t.header_len, 20);
    assert_eq!(p.payload_offset, 54);
    assert_eq!(p.payload(&frame), payload);
    assert!(!p.payload_clipped);
    assert_eq!(p.tcp_flags(), Some(tcp_flags::SYN | tcp_flags::ACK));
}

#[test]
fn tcp_options_are_skipped() {
    use etherparse::TcpOptionElement::*;
    let frame = build(|v| {
        PacketBuilder::ethernet2(MAC_A, MAC_B)
            .ipv4(V4_A, V4_B, 64)
            .tcp(1, 2, 3, 4)
            .options(&[MaximumSegmentSize(1460), Noop, WindowScale(7), SelectiveAcknowledgementPermitted])
            .unwrap()
            .write(v, b"xyz")
            .unwrap()
    });
    let p = ok(LinkType::Ethernet, &frame);
    let Transport::Tcp(t) = p.transport else { panic!() };
    assert!(t.header_len > 20);
    assert_eq!(p.payload_offset, 34 + u16::from(t.header_len));
    assert_eq!(p.payload(&frame), b"xyz");
}

#[test]
fn ipv4_udp() {
    let frame =
        build(|v| PacketBuilder::ethernet2(MAC_A, MAC_B).ipv4(V4_A, V4_B, 3).udp(5353, 53).write(v, b"query").unwrap());
    let p = ok(LinkType::Ethernet, &frame);
    assert_eq!(p.ip.unwrap().proto, 17);
    let Transport::Udp(u) = p.transport else { panic!() };
    assert_eq!((u.src_port, u.dst_port, u.length), (5353, 53, 13));
    assert_eq!(p.payload(&frame), b"query");
}

#[test]
fn ipv4_icmp_echo_and_other() {
    let req = build(|v| {
        PacketBuilder::ethernet2(MAC_A, MAC_B)
            .ipv4(V4_A, V4_B, 64)
            .icmpv4_echo_request(0x1234, 1)
            .write(v, b"ping")
            .unwrap()
    });
    let p = ok(LinkType::Ethernet, &req);
    assert_eq!(p.transport, Transport::Icmp { v6: false, kind: 8, code: 0, ident: 0x1234 });
    assert_eq!(p.payload(&req), b"ping");

    let rep = build(|v| {
        PacketBuilder::ethernet2(MAC_B, MAC_A)
            .ipv4(V4_B, V4_A, 64)
            .icmpv4_echo_reply(0x1234, 1)
            .write(v, b"ping")
            .unwrap()
    });
    assert_eq!(ok(LinkType::Ethernet, &rep).transport, Transport::Icmp { v6: false, kind: 0, code: 0, ident: 0x1234 });

    // Destination unreachable / port unreachable: no identifier.
    let unreach = build(|v| {
        PacketBuilder::ethernet2(MAC_B, MAC_A)
            .ipv4(V4_B, V4_A, 64)
            .icmpv4_raw(3, 3, [0xab, 0xcd, 0, 0])
            .write(v, &[0; 28])
            .unwrap()
    });
    assert_eq!(ok(LinkType::Ethernet, &unreach).transport, Transport::Icmp { v6: false, kind: 3, code: 3, ident: 0 });
}

#[test]
fn ipv6_tcp_udp_icmpv6() {
    let tcp = build(|v| {
        PacketBuilder::ethernet2(MAC_A, MAC_B)
            .ipv6(V6_A, V6_B, 33)
            .tcp(443, 50000, 9, 100)
            .fin()
            .ack(1)
            .write(v, b"bye")
            .unwrap()
    });
    let p = ok(LinkType::Ethernet, &tcp);
    assert_eq!(p.ethertype, 0x86dd);
    assert_eq!(p.l4_offset, 54);
    let ip = p.ip.unwrap();
    assert_eq!((ip.version, ip.src, ip.dst, ip.proto, ip.ttl), (6, v6(V6_A), v6(V6_B), 6, 33));
    let Transport::Tcp(t) = p.transport else { panic!() };
    assert_eq!(t.flags, tcp_flags::FIN | tcp_flags::ACK);
    assert_eq!(p.payload(&tcp), b"bye");

    let udp = build(|v| PacketBuilder::ethernet2(MAC_A, MAC_B).ipv6(V6_A, V6_B, 1).udp(1, 2).write(v, b"").unwrap());
    let p = ok(LinkType::Ethernet, &udp);
    assert_eq!(p.transport, Transport::Udp(stacks::parse::UdpHeader { src_port: 1, dst_port: 2, length: 8 }));
    assert_eq!(p.payload_len, 0);

    let icmp = build(|v| {
        PacketBuilder::ethernet2(MAC_A, MAC_B).ipv6(V6_A, V6_B, 1).icmpv6_echo_request(77, 1).write(v, b"hi").unwrap()
    });
    let p = ok(LinkType::Ethernet, &icmp);
    assert_eq!(p.ip.unwrap().proto, 58);
    assert_eq!(p.transport, Transport::Icmp { v6: true, kind: 128, code: 0, ident: 77 });
}

#[test]
fn single_and_double_vlan() {
    let single = build(|v| {
        PacketBuilder::ethernet2(MAC_A, MAC_B)
            .single_vlan(VlanId::try_new(100).unwrap())
            .ipv4(V4_A, V4_B, 64)
            .udp(1, 2)
            .write(v, b"x")
            .unwrap()
    });
    let p = ok(LinkType::Ethernet, &single);
    assert_eq!((p.vlan, p.ethertype, p.l3_offset), (Some(100), 0x0800, 18));
    assert!(matches!(p.transport, Transport::Udp(_)));

    let double = build(|v| {
        PacketBuilder::ethernet2(MAC_A, MAC_B)
            .double_vlan(VlanId::try_new(200).unwrap(), VlanId::try_new(300).unwrap())
            .ipv6(V6_A, V6_B, 64)
            .tcp(1, 2, 3, 4)
            .write(v, b"x")
            .unwrap()
    });
    assert_eq!(u16::from_be_bytes([double[12], double[13]]), 0x88a8);
    let p = ok(LinkType::Ethernet, &double);
    assert_eq!((p.vlan, p.ethertype, p.l3_offset), (Some(200), 0x86dd, 22));
    assert!(matches!(p.transport, Transport::Tcp(_)));
    assert_eq!(p.payload(&double), b"x");

    // Two 802.1Q tags (0x8100 outside) are accepted too.
    let mut q_in_q = double.clone();
    q_in_q[12..14].copy_from_slice(&0x8100u16.to_be_bytes());
    assert_eq!(ok(LinkType::Ethernet, &q_in_q).vlan, Some(200));
}

#[test]
fn linux_sll() {
    let frame = build(|v| {
        PacketBuilder::linux_sll(LinuxSllPacketType::OUTGOING, 6, [1, 2, 3, 4, 5, 6, 0, 0])
            .ipv4(V4_A, V4_B, 64)
            .tcp(1234, 22, 5, 6)
            .write(v, b"ssh")
            .unwrap()
    });
    let p = ok(LinkType::LinuxSll, &frame);
    assert_eq!((p.ethertype, p.l3_offset, p.l4_offset, p.payload_offset), (0x0800, 16, 36, 56));
    assert_eq!(p.payload(&frame), b"ssh");

    let frame6 = build(|v| {
        PacketBuilder::linux_sll(LinuxSllPacketType::HOST, 6, [0; 8])
            .ipv6(V6_A, V6_B, 64)
            .udp(1, 2)
            .write(v, b"q")
            .unwrap()
    });
    let p = ok(LinkType::LinuxSll, &frame6);
    assert_eq!((p.ethertype, p.l3_offset), (0x86dd, 16));
}

#[test]
fn raw_ip() {
    let f4 = build(|v| PacketBuilder::ipv4(V4_A, V4_B, 64).udp(9, 10).write(v, b"raw").unwrap());
    let p = ok(LinkType::RawIp, &f4);
    assert_eq!((p.ethertype, p.l3_offset, p.l4_offset, p.vlan), (0x0800, 0, 20, None));
    assert_eq!(p.payload(&f4), b"raw");

    let f6 = build(|v| PacketBuilder::ipv6(V6_A, V6_B, 64).tcp(9, 10, 0, 0).write(v, b"raw6").unwrap());
    let p = ok(LinkType::RawIp, &f6);
    assert_eq!((p.ethertype, p.l3_offset, p.l4_offset), (0x86dd, 0, 40));
    assert_eq!(p.payload(&f6), b"raw6");
}

#[test]
fn ipv4_options_are_skipped() {
    let mut h = Ipv4Header::new(0, 64, IpNumber::TCP, V4_A, V4_B).unwrap();
    // Record-route-ish bytes: NOP NOP NOP END, 8 bytes of options in all.
    h.options = [1u8, 1, 1, 0, 0, 0, 0, 0].into();
    let frame = build(|v| {
        PacketBuilder::ethernet2(MAC_A, MAC_B)
            .ip(IpHeaders::Ipv4(h, Default::default()))
            .tcp(1, 2, 3, 4)
            .write(v, b"opt")
            .unwrap()
    });
    let p = ok(LinkType::Ethernet, &frame);
    assert_eq!(p.l4_offset, 14 + 28);
    assert!(matches!(p.transport, Transport::Tcp(t) if t.src_port == 1 && t.dst_port == 2));
    assert_eq!(p.payload(&frame), b"opt");
}

fn ipv6_header() -> Ipv6Header {
    Ipv6Header { hop_limit: 64, source: V6_A, destination: V6_B, ..Default::default() }
}

#[test]
fn ipv6_extension_headers_are_walked() {
    let exts = Ipv6Extensions {
        hop_by_hop_options: Some(Ipv6RawExtHeader::new_raw(IpNumber(0), &[1, 4, 0, 0, 0, 0]).unwrap()),
        destination_options: Some(
            Ipv6RawExtHeader::new_raw(IpNumber(0), &[1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).unwrap(),
        ),
        routing: Some(Ipv6RoutingExtensions {
            routing: Ipv6RawExtHeader::new_raw(IpNumber(0), &[0, 0, 0, 0, 0, 0]).unwrap(),
            final_destination_options: None,
        }),
        fragment: None,
        auth: Some(IpAuthHeader::new(IpNumber(0), 0x1000, 1, &[0xaa; 12]).unwrap()),
    };
    let ext_len = exts.header_len();
    assert_eq!(ext_len, 8 + 16 + 8 + 24);
    let frame = build(|v| {
        PacketBuilder::ethernet2(MAC_A, MAC_B)
            .ip(IpHeaders::Ipv6(ipv6_header(), exts))
            .udp(7, 8)
            .write(v, b"ext")
            .unwrap()
    });
    let p = ok(LinkType::Ethernet, &frame);
    let ip = p.ip.unwrap();
    assert_eq!(ip.proto, 17);
    assert_eq!(ip.fragment, None);
    assert_eq!(usize::from(p.l4_offset), 14 + 40 + ext_len);
    assert!(matches!(p.transport, Transport::Udp(u) if u.src_port == 7));
    assert_eq!(p.payload(&frame), b"ext");
}

#[test]
fn ipv6_esp_and_no_next_header_are_other() {
    for proto in [50u8, 59] {
        let frame = build(|v| {
            PacketBuilder::ethernet2(MAC_A, MAC_B)
                .ip(IpHeaders::Ipv6(ipv6_header(), Default::default()))
                .write(v, IpNumber(proto), &[0x11; 24])
                .unwrap()
        });
        let p = ok(LinkType::Ethernet, &frame);
        assert_eq!(p.ip.unwrap().proto, proto);
        assert_eq!(p.transport, Transport::Other);
        assert_eq!((p.l4_offset, p.payload_offset, p.payload_len), (54, 54, 24));
    }
}

#[test]
fn other_ip_protocol() {
    // GRE over IPv4 and SCTP over IPv6: not decoded, not an error.
    let gre = build(|v| {
        PacketBuilder::ethernet2(MAC_A, MAC_B)
            .ip(IpHeaders::Ipv4(Ipv4Header::new(0, 64, IpNumber(47), V4_A, V4_B).unwrap(), Default::default()))
            .write(v, IpNumber(47), &[0; 12])
            .unwrap()
    });
    let p = ok(LinkType::Ethernet, &gre);
    assert_eq!((p.ip.unwrap().proto, p.transport, p.payload_len), (47, Transport::Other, 12));
    // ICMPv6's number inside IPv4 is not ICMP.
    let odd = build(|v| {
        PacketBuilder::ethernet2(MAC_A, MAC_B)
            .ip(IpHeaders::Ipv4(Ipv4Header::new(0, 64, IpNumber(58), V4_A, V4_B).unwrap(), Default::default()))
            .write(v, IpNumber(58), &[0; 2])
            .unwrap()
    });
    assert_eq!(ok(LinkType::Ethernet, &odd).transport, Transport::Other);
}

fn ipv4_fragment(offset_units: u16, more: bool, payload: &[u8], udp: bool) -> Vec<u8> {
    let mut h = Ipv4Header::new(0, 64, IpNumber::UDP, V4_A, V4_B).unwrap();
    h.identification = 0xbeef;
    h.more_fragments = more;
    h.fragment_offset = IpFragOffset::try_new(offset_units).unwrap();
    build(|v| {
        let b = PacketBuilder::ethernet2(MAC_A, MAC_B).ip(IpHeaders::Ipv4(h, Default::default()));
        if udp {
            b.udp(1000, 2000).write(v, payload).unwrap()
        } else {
            b.write(v, IpNumber::UDP, payload).unwrap()
        }
    })
}

#[test]
fn ipv4_first_fragment_is_parsed_through_l4() {
    let mut frame = ipv4_fragment(0, true, &[7; 32], true);
    // The UDP length covers the whole datagram (say 1000 bytes), more than this fragment.
    frame[34 + 4..34 + 6].copy_from_slice(&1000u16.to_be_bytes());
    let p = ok(LinkType::Ethernet, &frame);
    let f = p.ip.unwrap().fragment.unwrap();
    assert_eq!((f.offset, f.more, f.id), (0, true, 0xbeef));
    assert!(matches!(p.transport, Transport::Udp(u) if u.length == 1000 && u.dst_port == 2000));
    assert_eq!(p.payload(&frame), &[7; 32]);
}

#[test]
fn ipv4_later_fragment_has_no_transport() {
    for more in [true, false] {
        let frame = ipv4_fragment(185, more, &[9; 40], false);
        let p = ok(LinkType::Ethernet, &frame);
        let f = p.ip.unwrap().fragment.unwrap();
        assert_eq!((f.offset, f.more), (185 * 8, more));
        assert_eq!(p.transport, Transport::None);
        assert_eq!((p.l4_offset, p.payload_offset), (34, 34));
        assert_eq!(p.payload(&frame), &[9; 40]);
    }
}

#[test]
fn tiny_first_fragment_has_no_transport() {
    // A first fragment holding 8 bytes of a TCP header.
    let mut h = Ipv4Header::new(0, 64, IpNumber::TCP, V4_A, V4_B).unwrap();
    h.more_fragments = true;
    let frame = build(|v| {
        PacketBuilder::ethernet2(MAC_A, MAC_B)
            .ip(IpHeaders::Ipv4(h, Default::default()))
            .write(v, IpNumber::TCP, &[0; 8])
            .unwrap()
    });
    let p = ok(LinkType::Ethernet, &frame);
    assert_eq!(p.transport, Transport::None);
    assert_eq!(p.payload_len, 8);
}

fn ipv6_fragment(offset_units: u16, more: bool, udp: bool) -> Vec<u8> {
    let exts = Ipv6Extensions {
        fragment: Some(Ipv6FragmentHeader::new(
            IpNumber(0),
            IpFragOffset::try_new(offset_units).unwrap(),
            more,
            0xdead_beef,
        )),
        ..Default::default()
    };
    let mut frame = build(|v| {
        let b = PacketBuilder::ethernet2(MAC_A, MAC_B).ip(IpHeaders::Ipv6(ipv6_header(), exts));
        if udp {
            b.udp(53, 5353).write(v, &[1; 16]).unwrap()
        } else {
            b.write(v, IpNumber::UDP, &[1; 16]).unwrap()
        }
    });
    // etherparse 0.16 misplaces the low offset bits and the M flag of the IPv6 fragment header;
    // write the RFC 8200 layout (offset << 3 | M) ourselves.
    let word = (offset_units << 3) | u16::from(more);
    frame[14 + 40 + 2..14 + 40 + 4].copy_from_slice(&word.to_be_bytes());
    frame
}

#[test]
fn ipv6_fragments() {
    let first = ipv6_fragment(0, true, true);
    let p = ok(LinkType::Ethernet, &first);
    let ip = p.ip.unwrap();
    assert_eq!(ip.proto, 17);
    assert_eq!(ip.fragment, Some(stacks::parse::Fragment { offset: 0, more: true, id: 0xdead_beef }));
    assert_eq!(p.l4_offset, 14 + 48);
    assert!(matches!(p.transport, Transport::Udp(u) if u.src_port == 53));

    let later = ipv6_fragment(3, false, false);
    let p = ok(LinkType::Ethernet, &later);
    let ip = p.ip.unwrap();
    assert_eq!(ip.proto, 17);
    assert_eq!(ip.fragment, Some(stacks::parse::Fragment { offset: 24, more: false, id: 0xdead_beef }));
    assert_eq!(p.transport, Transport::None);
    assert_eq!(p.payload(&later), &[1; 16]);
}

#[test]
fn ethernet_padding_is_ignored() {
    let mut frame =
        build(|v| PacketBuilder::ethernet2(MAC_A, MAC_B).ipv4(V4_A, V4_B, 64).udp(1, 2).write(v, b"ab").unwrap());
    assert_eq!(frame.len(), 44);
    frame.resize(60, 0xee);
    let p = ok(LinkType::Ethernet, &frame);
    assert_eq!(p.payload(&frame), b"ab");
    assert!(!p.payload_clipped);

    let mut tcp =
        build(|v| PacketBuilder::ethernet2(MAC_A, MAC_B).ipv4(V4_A, V4_B, 64).tcp(1, 2, 0, 0).write(v, b"").unwrap());
    tcp.resize(60, 0xee);
    let p = ok(LinkType::Ethernet, &tcp);
    assert_eq!((p.payload_offset, p.payload_len), (54, 0));
}

#[test]
fn snaplen_clipped_payload() {
    let payload = [0x42u8; 1000];
    let full = build(|v| {
        PacketBuilder::ethernet2(MAC_A, MAC_B).ipv4(V4_A, V4_B, 64).tcp(1, 2, 0, 0).write(v, &payload).unwrap()
    });
    let frame = &full[..96];
    let p = ok(LinkType::Ethernet, frame);
    assert!(p.payload_clipped);
    assert!(matches!(p.transport, Transport::Tcp(_)));
    assert_eq!((p.payload_offset, p.payload_len), (54, 42));

    let full6 =
        build(|v| PacketBuilder::ethernet2(MAC_A, MAC_B).ipv6(V6_A, V6_B, 64).udp(1, 2).write(v, &payload).unwrap());
    let p = ok(LinkType::Ethernet, &full6[..70]);
    assert!(p.payload_clipped);
    assert_eq!((p.payload_offset, p.payload_len), (62, 8));
}

#[test]
fn arp_is_not_ip_and_not_an_error() {
    let mut frame = Vec::new();
    frame.extend_from_slice(&[0xff; 6]);
    frame.extend_from_slice(&MAC_A);
    frame.extend_from_slice(&0x0806u16.to_be_bytes());
    frame.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    frame.extend_from_slice(&[0; 20]);
    let p = ok(LinkType::Ethernet, &frame);
    assert_eq!(p.ethertype, 0x0806);
    assert_eq!(p.ip, None);
    assert_eq!(p.transport, Transport::None);
    assert_eq!((p.l3_offset, p.l4_offset, p.payload_offset, p.payload_len), (14, 14, 14, 28));
    assert!(!p.payload_clipped);

    // An Ethernet header and nothing else; an 802.3 length field instead of an EtherType.
    assert_eq!(ok(LinkType::Ethernet, &frame[..14]).payload_len, 0);
    let mut llc = frame.clone();
    llc[12..14].copy_from_slice(&46u16.to_be_bytes());
    assert_eq!(ok(LinkType::Ethernet, &llc).ethertype, 46);
}

#[test]
fn frames_longer_than_64k_are_viewed_through_65535_bytes() {
    let payload = vec![1u8; 65535 - 28];
    let mut frame =
        build(|v| PacketBuilder::ethernet2(MAC_A, MAC_B).ipv4(V4_A, V4_B, 64).udp(1, 2).write(v, &payload).unwrap());
    frame.extend_from_slice(&[0; 5000]);
    let p = ok(LinkType::Ethernet, &frame);
    assert!(p.payload_clipped);
    assert_eq!(usize::from(p.payload_offset) + usize::from(p.payload_len), 65535);
}
