//! The frames the splicer reads and writes: Ethernet + IPv4 + TCP segments and ARP.
//!
//! Hand-written (STYLE.md habit 1 in miniature): the splicer builds a handful of fixed
//! layouts — a TCP segment with at most an MSS option, an ARP request or reply — and
//! rewrites addresses, ports, sequence numbers and checksums of segments it forwards;
//! `etherparse`'s builder allocates per call and is listed for tests only
//! (DEPENDENCIES.md). Every read is bounds-checked: a short or odd frame is `None`, never a
//! panic. IPv4 only (docs/splicer.md). TCP flag bits are the parser's
//! ([`crate::parse::tcp_flags`]), one set for every stack.

use std::net::Ipv4Addr;

use crate::parse::tcp_flags;

/// A MAC address.
pub type Mac = [u8; 6];

const ETH: usize = 14;
const IP: usize = 20;
const TCP: usize = 20;

/// A TCP/IPv4 segment read from a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment<'a> {
    /// Ethernet source.
    pub src_mac: Mac,
    /// IP source.
    pub src: Ipv4Addr,
    /// IP destination.
    pub dst: Ipv4Addr,
    /// TCP source port.
    pub sport: u16,
    /// TCP destination port.
    pub dport: u16,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgment number.
    pub ack: u32,
    /// Flags.
    pub flags: u8,
    /// Window (unscaled: the splicer never negotiates scaling).
    pub window: u16,
    /// The MSS option, if present.
    pub mss: Option<u16>,
    /// Payload.
    pub payload: &'a [u8],
}

fn be16(b: &[u8], i: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(i)?, *b.get(i + 1)?]))
}

fn be32(b: &[u8], i: usize) -> Option<u32> {
    Some(u32::from_be_bytes([*b.get(i)?, *b.get(i + 1)?, *b.get(i + 2)?, *b.get(i + 3)?]))
}

fn mac_at(b: &[u8], i: usize) -> Option<Mac> {
    b.get(i..i + 6)?.try_into().ok()
}

/// Reads an untagged Ethernet/IPv4/TCP frame.
pub fn segment(f: &[u8]) -> Option<Segment<'_>> {
    if be16(f, 12)? != 0x0800 {
        return None;
    }
    let ip = f.get(ETH..)?;
    let ihl = usize::from(ip.first()? & 0x0f) * 4;
    if ip[0] >> 4 != 4 || ihl < IP || *ip.get(9)? != 6 {
        return None;
    }
    let total = usize::from(be16(ip, 2)?).min(ip.len());
    let frag = be16(ip, 6)? & 0x3fff;
    if frag != 0 || total < ihl + TCP {
        return None;
    }
    let tcp = ip.get(ihl..total)?;
    let off = usize::from(tcp[12] >> 4) * 4;
    if off < TCP || off > tcp.len() {
        return None;
    }
    let mut mss = None;
    let mut opts = &tcp[TCP..off];
    while let Some(&kind) = opts.first() {
        match kind {
            0 => break,
            1 => opts = &opts[1..],
            _ => {
                let len = usize::from(*opts.get(1)?);
                if len < 2 || len > opts.len() {
                    break;
                }
                if kind == 2 && len == 4 {
                    mss = be16(opts, 2);
                }
                opts = &opts[len..];
            }
        }
    }
    Some(Segment {
        src_mac: mac_at(f, 6)?,
        src: Ipv4Addr::from(be32(ip, 12)?),
        dst: Ipv4Addr::from(be32(ip, 16)?),
        sport: be16(tcp, 0)?,
        dport: be16(tcp, 2)?,
        seq: be32(tcp, 4)?,
        ack: be32(tcp, 8)?,
        flags: tcp[13],
        window: be16(tcp, 14)?,
        mss,
        payload: &tcp[off..],
    })
}

/// The Internet checksum of `data` with `sum` already accumulated.
fn checksum(mut sum: u32, data: &[u8]) -> u16 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [b] = chunks.remainder() {
        sum += u32::from(*b) << 8;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// What a segment the splicer sends says.
#[derive(Clone, Copy, Debug)]
pub struct Out<'a> {
    /// Ethernet source and destination.
    pub macs: (Mac, Mac),
    /// IP source and destination.
    pub ips: (Ipv4Addr, Ipv4Addr),
    /// Ports: source, destination.
    pub ports: (u16, u16),
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgment number.
    pub ack: u32,
    /// Flags.
    pub flags: u8,
    /// Window.
    pub window: u16,
    /// An MSS option (SYNs).
    pub mss: Option<u16>,
    /// IP identification.
    pub ip_id: u16,
    /// Payload.
    pub payload: &'a [u8],
}

/// Builds an Ethernet/IPv4/TCP frame, checksums filled, padded to 60 bytes.
pub fn build(o: &Out<'_>) -> Vec<u8> {
    let opt = if o.mss.is_some() { 4 } else { 0 };
    let tcp_len = TCP + opt + o.payload.len();
    let total = IP + tcp_len;
    let mut f = Vec::with_capacity((ETH + total).max(60));
    f.extend_from_slice(&o.macs.1);
    f.extend_from_slice(&o.macs.0);
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    // IPv4, DF, TTL 64.
    f.extend_from_slice(&[0x45, 0]);
    f.extend_from_slice(&(total as u16).to_be_bytes());
    f.extend_from_slice(&o.ip_id.to_be_bytes());
    f.extend_from_slice(&[0x40, 0, 64, 6, 0, 0]);
    f.extend_from_slice(&o.ips.0.octets());
    f.extend_from_slice(&o.ips.1.octets());
    f.extend_from_slice(&o.ports.0.to_be_bytes());
    f.extend_from_slice(&o.ports.1.to_be_bytes());
    f.extend_from_slice(&o.seq.to_be_bytes());
    f.extend_from_slice(&o.ack.to_be_bytes());
    f.push((((TCP + opt) / 4) as u8) << 4);
    f.push(o.flags);
    f.extend_from_slice(&o.window.to_be_bytes());
    f.extend_from_slice(&[0, 0, 0, 0]);
    if let Some(m) = o.mss {
        f.extend_from_slice(&[2, 4]);
        f.extend_from_slice(&m.to_be_bytes());
    }
    f.extend_from_slice(o.payload);
    fill_checksums(&mut f);
    if f.len() < 60 {
        f.resize(60, 0);
    }
    f
}

/// Recomputes the IPv4 header and TCP checksums of an untagged frame (IP header of 20
/// bytes or more; the TCP length from the IP total length).
pub fn fill_checksums(f: &mut [u8]) {
    let Some(ihl) = f.get(ETH).map(|b| usize::from(b & 0x0f) * 4) else { return };
    let Some(total) = be16(f, ETH + 2).map(usize::from) else { return };
    if f.len() < ETH + total || total < ihl + TCP {
        return;
    }
    f[ETH + 10..ETH + 12].copy_from_slice(&[0, 0]);
    let c = checksum(0, &f[ETH..ETH + ihl]);
    f[ETH + 10..ETH + 12].copy_from_slice(&c.to_be_bytes());
    let t = ETH + ihl;
    let tcp_len = total - ihl;
    f[t + 16..t + 18].copy_from_slice(&[0, 0]);
    let mut sum = 6u32 + tcp_len as u32;
    for i in (ETH + 12..ETH + 20).step_by(2) {
        sum += u32::from(u16::from_be_bytes([f[i], f[i + 1]]));
    }
    let c = checksum(sum, &f[t..t + tcp_len]);
    f[t + 16..t + 18].copy_from_slice(&c.to_be_bytes());
}

/// A forwarded segment's new header fields (see [`rewrite`]).
#[derive(Clone, Copy, Debug)]
pub struct Rewrite {
    /// Ethernet source and destination.
    pub macs: (Mac, Mac),
    /// IP source and destination.
    pub ips: (Ipv4Addr, Ipv4Addr),
    /// Ports: source, destination.
    pub ports: (u16, u16),
    /// Added to the sequence number.
    pub seq_delta: u32,
    /// Added to the acknowledgment number (when ACK is set).
    pub ack_delta: u32,
}

/// A copy of an Ethernet/IPv4/TCP frame with addresses, ports, seq/ack rewritten and
/// checksums recomputed; trailing padding cut. `None` for a frame [`segment`] rejects.
pub fn rewrite(f: &[u8], r: &Rewrite) -> Option<Vec<u8>> {
    let s = segment(f)?;
    let ihl = usize::from(f[ETH] & 0x0f) * 4;
    let total = usize::from(be16(f, ETH + 2)?);
    let mut out = f.get(..ETH + total)?.to_vec();
    out[0..6].copy_from_slice(&r.macs.1);
    out[6..12].copy_from_slice(&r.macs.0);
    out[ETH + 12..ETH + 16].copy_from_slice(&r.ips.0.octets());
    out[ETH + 16..ETH + 20].copy_from_slice(&r.ips.1.octets());
    let t = ETH + ihl;
    out[t..t + 2].copy_from_slice(&r.ports.0.to_be_bytes());
    out[t + 2..t + 4].copy_from_slice(&r.ports.1.to_be_bytes());
    out[t + 4..t + 8].copy_from_slice(&s.seq.wrapping_add(r.seq_delta).to_be_bytes());
    if s.flags & tcp_flags::ACK != 0 {
        out[t + 8..t + 12].copy_from_slice(&s.ack.wrapping_add(r.ack_delta).to_be_bytes());
    }
    fill_checksums(&mut out);
    if out.len() < 60 {
        out.resize(60, 0);
    }
    Some(out)
}

/// An ARP packet over Ethernet/IPv4.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Arp {
    /// 1 request, 2 reply.
    pub op: u16,
    /// Sender hardware address.
    pub sha: Mac,
    /// Sender protocol address.
    pub spa: Ipv4Addr,
    /// Target protocol address.
    pub tpa: Ipv4Addr,
}

/// Reads an ARP frame.
pub fn arp(f: &[u8]) -> Option<Arp> {
    if be16(f, 12)? != 0x0806 || be16(f, 14)? != 1 || be16(f, 16)? != 0x0800 {
        return None;
    }
    Some(Arp {
        op: be16(f, 20)?,
        sha: mac_at(f, 22)?,
        spa: Ipv4Addr::from(be32(f, 28)?),
        tpa: Ipv4Addr::from(be32(f, 38)?),
    })
}

/// Builds an ARP frame: `op` 1 (request, broadcast) or 2 (reply to `tha`).
pub fn build_arp(op: u16, sha: Mac, spa: Ipv4Addr, tha: Mac, tpa: Ipv4Addr) -> Vec<u8> {
    let mut f = Vec::with_capacity(60);
    let dst = if op == 1 { [0xff; 6] } else { tha };
    f.extend_from_slice(&dst);
    f.extend_from_slice(&sha);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4]);
    f.extend_from_slice(&op.to_be_bytes());
    f.extend_from_slice(&sha);
    f.extend_from_slice(&spa.octets());
    f.extend_from_slice(&if op == 1 { [0; 6] } else { tha });
    f.extend_from_slice(&tpa.octets());
    f.resize(60, 0);
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_segments_parse_back_with_valid_checksums() {
        let o = Out {
            macs: ([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]),
            ips: (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2)),
            ports: (1234, 80),
            seq: 7,
            ack: 9,
            flags: tcp_flags::SYN | tcp_flags::ACK,
            window: 65535,
            mss: Some(1460),
            ip_id: 1,
            payload: b"abc",
        };
        let f = build(&o);
        let s = segment(&f).unwrap();
        assert_eq!((s.sport, s.dport, s.seq, s.ack, s.mss, s.payload), (1234, 80, 7, 9, Some(1460), &b"abc"[..]));
        assert_eq!(s.src_mac, [2, 0, 0, 0, 0, 1]);
        // etherparse agrees on both checksums.
        let p = etherparse::SlicedPacket::from_ethernet(&f).unwrap();
        let Some(etherparse::NetSlice::Ipv4(ip)) = p.net else { panic!() };
        assert_eq!(ip.header().header_checksum(), ip.header().to_header().calc_header_checksum());
        let Some(etherparse::TransportSlice::Tcp(t)) = p.transport else { panic!() };
        let want = t.to_header().calc_checksum_ipv4(&ip.header().to_header(), t.payload()).unwrap();
        assert_eq!(t.checksum(), want);
        let r = Rewrite {
            macs: ([1; 6], [3; 6]),
            ips: (Ipv4Addr::new(1, 1, 1, 1), Ipv4Addr::new(2, 2, 2, 2)),
            ports: (5, 6),
            seq_delta: 10,
            ack_delta: u32::MAX,
        };
        let g = rewrite(&f, &r).unwrap();
        let s = segment(&g).unwrap();
        assert_eq!((s.sport, s.dport, s.seq, s.ack, s.src), (5, 6, 17, 8, Ipv4Addr::new(1, 1, 1, 1)));
        let p = etherparse::SlicedPacket::from_ethernet(&g).unwrap();
        let Some(etherparse::NetSlice::Ipv4(ip)) = p.net else { panic!() };
        let Some(etherparse::TransportSlice::Tcp(t)) = p.transport else { panic!() };
        let want = t.to_header().calc_checksum_ipv4(&ip.header().to_header(), t.payload()).unwrap();
        assert_eq!(t.checksum(), want);
    }

    #[test]
    fn arp_round_trips_and_short_frames_are_none() {
        let f = build_arp(1, [2; 6], Ipv4Addr::new(10, 0, 0, 1), [0; 6], Ipv4Addr::new(10, 0, 0, 2));
        let a = arp(&f).unwrap();
        assert_eq!((a.op, a.spa, a.tpa), (1, Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2)));
        for n in 0..f.len() {
            let _ = segment(&f[..n]);
            let _ = arp(&f[..n.min(30)]);
        }
        assert!(segment(&f).is_none());
    }
}
