//! TCP resets for an inline IPS's `reject`: from one frame of a TCP connection, the two
//! Ethernet frames that reset both of its ends.
//!
//! Given the frame `P` (A → B, sequence number `S`, acknowledgment `K`, `L` payload bytes)
//! on which a `reject` rule matched, and which the IPS **drops**, [`Resets::for_frame`] builds:
//!
//! * [`Resets::forward`] — to B, the receiver of `P`, leaving through the interface `P`
//!   would have left by: `P`'s own Ethernet addresses (and 802.1Q tags), A → B, the same
//!   ports, `seq = S` (B never saw `P`, so `S` is exactly what B expects next: RFC 5961 makes
//!   a receiver accept a reset only at that number, and answer any other with a challenge
//!   ACK), `ack = K`, flags `RST|ACK`;
//! * [`Resets::backward`] — to A, the sender, leaving through the interface `P` came in by:
//!   Ethernet source and destination swapped, B → A, ports swapped, `seq = K` (what A
//!   acknowledged, i.e. the next byte it expects from B; 0 when `P` carries no ACK, as for a
//!   SYN), `ack = S + L` (+1 for SYN, +1 for FIN), flags `RST|ACK`.
//!
//! IPv4 (TTL 64, DF, header checksum) and IPv6 (hop limit 64; extension headers before
//! TCP are not followed: such a frame is refused) are supported; the TCP checksum covers
//! the pseudo-header. The frames are padded to the Ethernet minimum of 60 bytes (the IP
//! length excludes the padding). A frame that is not Ethernet + IP + TCP, or is cut short,
//! is refused with a [`RstError`], never a panic.
//!
//! The limit, shared with every IPS that resets from one packet: if A sent more after `P`
//! (a pipelined request) or B sent more before the reset reaches A, the numbers are
//! in-window but not exact, and the kernel answers with a challenge ACK instead of closing.

use std::net::IpAddr;

/// Why no resets could be built from a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RstError {
    /// The frame ends before the header named.
    #[error("frame too short for its {0} header")]
    Truncated(&'static str),
    /// Not IPv4 or IPv6 over Ethernet (ethertype given).
    #[error("not an IP frame (ethertype {0:#06x})")]
    NotIp(u16),
    /// IP, but not TCP (or IPv6 with extension headers before TCP).
    #[error("not a TCP segment (IP protocol / next header {0})")]
    NotTcp(u8),
    /// A later IPv4 fragment: no TCP header to answer.
    #[error("an IPv4 fragment after the first")]
    Fragment,
}

/// The two resets of one connection (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resets {
    /// To the receiver of the frame, out of the interface the frame would have left by.
    pub forward: Vec<u8>,
    /// To the sender of the frame, out of the interface the frame came in by.
    pub backward: Vec<u8>,
}

/// The TCP header fields the resets are computed from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Segment {
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    dport: u16,
    seq: u32,
    ack: Option<u32>,
    /// Sequence space `P` occupies: payload bytes, +1 for SYN, +1 for FIN.
    len: u32,
}

const ETH_MIN: usize = 60;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;
const TCP_SYN: u8 = 0x02;
const TCP_FIN: u8 = 0x01;

impl Resets {
    /// The resets answering `frame` (Ethernet, optionally 802.1Q/802.1ad-tagged).
    pub fn for_frame(frame: &[u8]) -> Result<Resets, RstError> {
        let (l2_len, ethertype) = l2(frame)?;
        let (seg, _) = parse_ip_tcp(&frame[l2_len..], ethertype)?;
        let l2_hdr = &frame[..l2_len];
        let forward = build(l2_hdr, false, seg.src, seg.dst, seg.sport, seg.dport, seg.seq, seg.ack.unwrap_or(0));
        let backward = build(
            l2_hdr,
            true,
            seg.dst,
            seg.src,
            seg.dport,
            seg.sport,
            seg.ack.unwrap_or(0),
            seg.seq.wrapping_add(seg.len),
        );
        Ok(Resets { forward, backward })
    }
}

/// The length of the Ethernet header (with its tags) and the ethertype after it.
fn l2(frame: &[u8]) -> Result<(usize, u16), RstError> {
    let be16 = |at: usize| frame.get(at..at + 2).map(|b| u16::from_be_bytes([b[0], b[1]]));
    let mut at = 12;
    let mut ethertype = be16(at).ok_or(RstError::Truncated("Ethernet"))?;
    // At most two tags (802.1ad outer, 802.1Q inner).
    for _ in 0..2 {
        if ethertype != 0x8100 && ethertype != 0x88a8 {
            break;
        }
        at += 4;
        ethertype = be16(at).ok_or(RstError::Truncated("802.1Q"))?;
    }
    Ok((at + 2, ethertype))
}

/// The segment's fields, and the IP header's length.
fn parse_ip_tcp(ip: &[u8], ethertype: u16) -> Result<(Segment, usize), RstError> {
    let (src, dst, ip_len, proto, l4_end) = match ethertype {
        0x0800 => {
            let h = ip.get(..20).ok_or(RstError::Truncated("IPv4"))?;
            let ihl = usize::from(h[0] & 0x0f) * 4;
            if h[0] >> 4 != 4 || ihl < 20 || ip.len() < ihl {
                return Err(RstError::Truncated("IPv4"));
            }
            if u16::from_be_bytes([h[6], h[7]]) & 0x1fff != 0 {
                return Err(RstError::Fragment);
            }
            let total = usize::from(u16::from_be_bytes([h[2], h[3]]));
            let src: [u8; 4] = h[12..16].try_into().map_err(|_| RstError::Truncated("IPv4"))?;
            let dst: [u8; 4] = h[16..20].try_into().map_err(|_| RstError::Truncated("IPv4"))?;
            (IpAddr::from(src), IpAddr::from(dst), ihl, h[9], total.clamp(ihl, ip.len()))
        }
        0x86dd => {
            let h = ip.get(..40).ok_or(RstError::Truncated("IPv6"))?;
            let payload = usize::from(u16::from_be_bytes([h[4], h[5]]));
            let src: [u8; 16] = h[8..24].try_into().map_err(|_| RstError::Truncated("IPv6"))?;
            let dst: [u8; 16] = h[24..40].try_into().map_err(|_| RstError::Truncated("IPv6"))?;
            (IpAddr::from(src), IpAddr::from(dst), 40, h[6], (40 + payload).min(ip.len()))
        }
        other => return Err(RstError::NotIp(other)),
    };
    if proto != 6 {
        return Err(RstError::NotTcp(proto));
    }
    let t = ip.get(ip_len..ip_len + 20).ok_or(RstError::Truncated("TCP"))?;
    let data_off = usize::from(t[12] >> 4) * 4;
    let flags = t[13];
    let payload = l4_end.saturating_sub(ip_len + data_off.max(20)) as u32;
    let seg = Segment {
        src,
        dst,
        sport: u16::from_be_bytes([t[0], t[1]]),
        dport: u16::from_be_bytes([t[2], t[3]]),
        seq: u32::from_be_bytes([t[4], t[5], t[6], t[7]]),
        ack: (flags & TCP_ACK != 0).then(|| u32::from_be_bytes([t[8], t[9], t[10], t[11]])),
        len: payload + u32::from(flags & TCP_SYN != 0) + u32::from(flags & TCP_FIN != 0),
    };
    Ok((seg, ip_len))
}

/// One `RST|ACK` frame: `l2` copied (MAC addresses swapped when `swap`), then IP and TCP.
#[allow(clippy::too_many_arguments)]
fn build(l2: &[u8], swap: bool, src: IpAddr, dst: IpAddr, sport: u16, dport: u16, seq: u32, ack: u32) -> Vec<u8> {
    let mut f = Vec::with_capacity(ETH_MIN.max(l2.len() + 60));
    if swap {
        f.extend_from_slice(&l2[6..12]);
        f.extend_from_slice(&l2[0..6]);
        f.extend_from_slice(&l2[12..]);
    } else {
        f.extend_from_slice(l2);
    }
    let mut tcp = [0u8; 20];
    tcp[0..2].copy_from_slice(&sport.to_be_bytes());
    tcp[2..4].copy_from_slice(&dport.to_be_bytes());
    tcp[4..8].copy_from_slice(&seq.to_be_bytes());
    tcp[8..12].copy_from_slice(&ack.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = TCP_RST | TCP_ACK;
    // Window 0, urgent pointer 0; checksum below.
    let mut pseudo = Checksum::default();
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let mut ip = [0u8; 20];
            ip[0] = 0x45;
            ip[2..4].copy_from_slice(&40u16.to_be_bytes());
            ip[6] = 0x40; // DF
            ip[8] = 64;
            ip[9] = 6;
            ip[12..16].copy_from_slice(&s.octets());
            ip[16..20].copy_from_slice(&d.octets());
            let mut c = Checksum::default();
            c.add(&ip);
            ip[10..12].copy_from_slice(&c.finish().to_be_bytes());
            f.extend_from_slice(&ip);
            pseudo.add(&s.octets());
            pseudo.add(&d.octets());
            pseudo.add(&[0, 6, 0, 20]);
        }
        (s, d) => {
            let (s, d) = (v6(s), v6(d));
            let mut ip = [0u8; 40];
            ip[0] = 0x60;
            ip[4..6].copy_from_slice(&20u16.to_be_bytes());
            ip[6] = 6;
            ip[7] = 64;
            ip[8..24].copy_from_slice(&s);
            ip[24..40].copy_from_slice(&d);
            f.extend_from_slice(&ip);
            pseudo.add(&s);
            pseudo.add(&d);
            pseudo.add(&[0, 0, 0, 20, 0, 0, 0, 6]);
        }
    }
    pseudo.add(&tcp);
    tcp[16..18].copy_from_slice(&pseudo.finish().to_be_bytes());
    f.extend_from_slice(&tcp);
    if f.len() < ETH_MIN {
        f.resize(ETH_MIN, 0);
    }
    f
}

fn v6(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
        IpAddr::V6(a) => a.octets(),
    }
}

/// The Internet checksum (RFC 1071) over 16-bit words; inputs of even length except the last.
#[derive(Default)]
struct Checksum(u32);

impl Checksum {
    fn add(&mut self, bytes: &[u8]) {
        for w in bytes.chunks(2) {
            let hi = u32::from(w[0]) << 8;
            self.0 += hi | w.get(1).map_or(0, |b| u32::from(*b));
        }
    }

    fn finish(mut self) -> u16 {
        while self.0 > 0xffff {
            self.0 = (self.0 & 0xffff) + (self.0 >> 16);
        }
        !(self.0 as u16)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TransportSlice};

    const A: [u8; 6] = [2, 0, 0, 0, 0, 0xa];
    const B: [u8; 6] = [2, 0, 0, 0, 0, 0xb];

    /// A → B data segment: seq 1000, ack 5000, payload "GET /evil".
    fn v4_frame(flags: &str) -> Vec<u8> {
        let mut b = PacketBuilder::ethernet2(A, B).ipv4([10, 0, 0, 1], [10, 0, 0, 2], 63).tcp(40000, 80, 1000, 512);
        if flags.contains('A') {
            b = b.ack(5000);
        }
        if flags.contains('S') {
            b = b.syn();
        }
        if flags.contains('F') {
            b = b.fin();
        }
        if flags.contains('P') {
            b = b.psh();
        }
        let payload: &[u8] = if flags.contains('S') { b"" } else { b"GET /evil" };
        let mut out = Vec::new();
        b.write(&mut out, payload).unwrap();
        out
    }

    struct Parsed {
        eth_src: [u8; 6],
        eth_dst: [u8; 6],
        src: IpAddr,
        dst: IpAddr,
        sport: u16,
        dport: u16,
        seq: u32,
        ack: u32,
        rst: bool,
        ack_flag: bool,
        syn: bool,
        payload: usize,
    }

    /// Parses a reset back with etherparse and checks both checksums.
    fn parse(f: &[u8]) -> Parsed {
        assert!(f.len() >= 60, "padded to the Ethernet minimum: {}", f.len());
        let p = SlicedPacket::from_ethernet(f).expect("etherparse reads the reset");
        let Some(etherparse::LinkSlice::Ethernet2(eth)) = p.link else { panic!("not Ethernet II") };
        let Some(TransportSlice::Tcp(t)) = p.transport else { panic!("not TCP") };
        let (src, dst, cs) = match p.net {
            Some(NetSlice::Ipv4(ip)) => {
                let h = ip.header();
                assert!(h.to_header().calc_header_checksum() == h.header_checksum(), "IPv4 header checksum");
                assert!(h.dont_fragment() && h.ttl() == 64 && h.total_len() == 40);
                let cs = t.to_header().calc_checksum_ipv4(&h.to_header(), t.payload()).unwrap();
                (IpAddr::from(h.source()), IpAddr::from(h.destination()), cs)
            }
            Some(NetSlice::Ipv6(ip)) => {
                let h = ip.header();
                assert!(h.hop_limit() == 64 && h.payload_length() == 20);
                let cs = t.to_header().calc_checksum_ipv6(&h.to_header(), t.payload()).unwrap();
                (IpAddr::from(h.source()), IpAddr::from(h.destination()), cs)
            }
            _ => panic!("not IP"),
        };
        assert_eq!(cs, t.checksum(), "TCP checksum");
        Parsed {
            eth_src: eth.source(),
            eth_dst: eth.destination(),
            src,
            dst,
            sport: t.source_port(),
            dport: t.destination_port(),
            seq: t.sequence_number(),
            ack: t.acknowledgment_number(),
            rst: t.rst(),
            ack_flag: t.ack(),
            syn: t.syn(),
            payload: t.payload().len(),
        }
    }

    #[test]
    fn resets_of_an_ipv4_data_segment_address_both_ends_at_the_expected_numbers() {
        let r = Resets::for_frame(&v4_frame("AP")).unwrap();
        let f = parse(&r.forward);
        assert_eq!((f.eth_src, f.eth_dst), (A, B), "forward keeps the frame's L2 direction");
        assert_eq!((f.src, f.dst), ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap()));
        assert_eq!((f.sport, f.dport, f.seq, f.ack), (40000, 80, 1000, 5000));
        assert!(f.rst && f.ack_flag && !f.syn && f.payload == 0);
        let b = parse(&r.backward);
        assert_eq!((b.eth_src, b.eth_dst), (B, A), "backward swaps the Ethernet addresses");
        assert_eq!((b.src, b.dst), ("10.0.0.2".parse().unwrap(), "10.0.0.1".parse().unwrap()));
        assert_eq!((b.sport, b.dport), (80, 40000));
        assert_eq!((b.seq, b.ack), (5000, 1000 + 9), "seq = what A acked; ack = after A's payload");
        assert!(b.rst && b.ack_flag && b.payload == 0);
    }

    #[test]
    fn syn_and_fin_take_one_sequence_number_and_no_ack_gives_seq_zero() {
        let r = Resets::for_frame(&v4_frame("S")).unwrap();
        let b = parse(&r.backward);
        assert_eq!((b.seq, b.ack), (0, 1001));
        assert_eq!(parse(&r.forward).ack, 0);
        let r = Resets::for_frame(&v4_frame("AF")).unwrap();
        assert_eq!(parse(&r.backward).ack, 1000 + 9 + 1);
    }

    #[test]
    fn sequence_numbers_wrap() {
        let mut out = Vec::new();
        PacketBuilder::ethernet2(A, B)
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 63)
            .tcp(1, 2, u32::MAX - 3, 100)
            .ack(7)
            .write(&mut out, b"0123456789")
            .unwrap();
        let r = Resets::for_frame(&out).unwrap();
        assert_eq!(parse(&r.backward).ack, 6);
        assert_eq!(parse(&r.forward).seq, u32::MAX - 3);
    }

    #[test]
    fn ipv6_resets_have_correct_checksums() {
        let (s, d) = (
            [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
        );
        let mut out = Vec::new();
        PacketBuilder::ethernet2(A, B)
            .ipv6(s, d, 5)
            .tcp(5555, 443, 77, 1000)
            .ack(88)
            .write(&mut out, b"hello")
            .unwrap();
        let r = Resets::for_frame(&out).unwrap();
        let f = parse(&r.forward);
        assert_eq!((f.src, f.dst, f.seq, f.ack), (IpAddr::from(s), IpAddr::from(d), 77, 88));
        let b = parse(&r.backward);
        assert_eq!(
            (b.src, b.dst, b.sport, b.dport, b.seq, b.ack),
            (IpAddr::from(d), IpAddr::from(s), 443, 5555, 88, 82)
        );
    }

    #[test]
    fn vlan_tags_are_kept_and_ethernet_padding_ignored() {
        let mut out = Vec::new();
        PacketBuilder::ethernet2(A, B)
            .single_vlan(etherparse::VlanId::try_new(42).unwrap())
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 63)
            .tcp(40000, 80, 1000, 512)
            .ack(5000)
            .write(&mut out, b"x")
            .unwrap();
        out.resize(out.len() + 7, 0xee); // trailer after the IP packet
        let r = Resets::for_frame(&out).unwrap();
        for f in [&r.forward, &r.backward] {
            let p = SlicedPacket::from_ethernet(f).unwrap();
            let Some(etherparse::VlanSlice::SingleVlan(v)) = p.vlan else { panic!("the tag is lost") };
            assert_eq!(v.vlan_identifier().value(), 42);
        }
        assert_eq!(parse_vlan_ack(&r.backward), 1001, "the trailer is not payload");
    }

    fn parse_vlan_ack(f: &[u8]) -> u32 {
        match SlicedPacket::from_ethernet(f).unwrap().transport {
            Some(TransportSlice::Tcp(t)) => t.acknowledgment_number(),
            _ => panic!("not TCP"),
        }
    }

    #[test]
    fn other_frames_are_refused_without_panic() {
        assert_eq!(Resets::for_frame(&[]), Err(RstError::Truncated("Ethernet")));
        let mut arp = v4_frame("AP");
        arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        assert_eq!(Resets::for_frame(&arp), Err(RstError::NotIp(0x0806)));
        let mut udp = Vec::new();
        PacketBuilder::ethernet2(A, B).ipv4([1, 1, 1, 1], [2, 2, 2, 2], 9).udp(1, 2).write(&mut udp, b"x").unwrap();
        assert_eq!(Resets::for_frame(&udp), Err(RstError::NotTcp(17)));
        let full = v4_frame("AP");
        for cut in 0..54 {
            assert!(Resets::for_frame(&full[..cut]).is_err(), "cut at {cut}");
        }
        // Every prefix and every single-byte corruption: an answer or an error, never a panic.
        for i in 0..full.len() {
            let mut f = full.clone();
            f[i] ^= 0xff;
            let _ = Resets::for_frame(&f);
        }
    }
}
