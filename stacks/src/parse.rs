//! L2/L3/L4 header parser for the L2/3 µStack: one pass over a captured frame, no copies,
//! no allocation, never a panic.
//!
//! # Contract
//!
//! [`parse`] takes the link type of the capture and the captured bytes of one frame and returns
//! either a [`Parsed`] summary (small, `Copy`: offsets into the frame plus the decoded header
//! fields the stacks need) or the first reason, as a [`Malformed`], why the frame cannot be
//! read. The bytes are never copied: payloads are described by offsets into `frame`.
//!
//! ```
//! use runtime::ports::LinkType;
//! use stacks::parse::{parse, Malformed, Transport};
//!
//! // A raw IPv4/UDP datagram from 10.0.0.1:5353 to 10.0.0.2:53 carrying "hi".
//! let frame = [
//!     0x45, 0, 0, 30, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2, // IPv4
//!     0x14, 0xe9, 0, 53, 0, 10, 0, 0, // UDP
//!     b'h', b'i',
//! ];
//! let p = parse(LinkType::RawIp, &frame).unwrap();
//! assert!(matches!(p.transport, Transport::Udp(u) if u.dst_port == 53));
//! assert_eq!(p.payload(&frame), b"hi");
//! // Cut inside the UDP header: an error with a stable name for the stats.
//! let err = parse(LinkType::RawIp, &frame[..24]).unwrap_err();
//! assert_eq!(err, Malformed::TruncatedUdp);
//! assert_eq!(err.as_str(), "truncated_udp");
//! ```
//!
//! # Invariants of an `Ok(Parsed)`
//!
//! * `l3_offset <= l4_offset <= payload_offset` and
//!   `payload_offset as usize + payload_len as usize <= frame.len()` (every offset points
//!   inside the captured bytes; a payload slice `frame[payload_offset..][..payload_len]` is
//!   always valid).
//! * Every header that was decoded lies entirely within the captured bytes *and* within the
//!   length the IP header declares. A header cut short by either gives a `Truncated*` error,
//!   never a partial decode.
//! * Offsets are `u16`: the parser looks at the first 65 535 captured bytes at most. Anything
//!   after that is treated like bytes lost to the snap length (`payload_clipped`).
//!
//! # Policies
//!
//! * **L2.** Ethernet II with up to two stacked VLAN tags (802.1Q `0x8100`, 802.1ad `0x88a8`,
//!   and the pre-standard QinQ `0x9100`); a third tag is [`Malformed::TooManyVlanTags`].
//!   [`Parsed::vlan`] is the outermost VLAN id. An EtherType below `0x0600` is an 802.3 length
//!   field: such frames are reported as non-IP with that value as `ethertype`. Linux cooked
//!   capture (SLL, 16-byte header): `ethertype` is its protocol field; VLAN tags that follow
//!   it are walked like Ethernet's. Raw IP: the version nibble picks `0x0800` or `0x86dd`;
//!   any other nibble is [`Malformed::RawIpBadVersion`].
//! * **Non-IP frames** (ARP, LLDP, ...) are not an error: `ip` is `None`, `transport` is
//!   [`Transport::None`], `l4_offset == payload_offset == l3_offset` and the payload is the rest
//!   of the frame.
//! * **Ethernet padding** (short frames padded to 60 bytes) is ignored: everything after L3 is
//!   bounded by the length the IP header declares, never by the frame length alone.
//! * **Snap length.** When the IP header declares more bytes than were captured and all the
//!   headers are present, `payload_clipped` is `true` and `payload_len` counts only captured
//!   bytes. This is not an error. Headers cut short are.
//! * **Checksums are not verified** (IPv4 header, TCP, UDP, ICMP). A passive middlebox sees what
//!   the wire carries and must account for it; checksum offload also makes locally captured
//!   checksums meaningless. Stacks that terminate connections verify their own.
//! * **IPv4 options** are skipped (bounded by IHL); a header length below 20 bytes is
//!   [`Malformed::Ipv4BadHeaderLength`]; a total length below the header length is
//!   [`Malformed::Ipv4TotalLengthTooShort`].
//! * **IPv6 extension headers**: hop-by-hop (0), routing (43), fragment (44), destination
//!   options (60) and AH (51) are walked, at most [`MAX_IPV6_EXTENSIONS`] of them
//!   ([`Malformed::Ipv6ExtensionChainTooLong`] beyond). ESP (50), No Next Header (59) and any
//!   other protocol stop the walk with [`Transport::Other`]. `IpHeader::proto` is the final
//!   next-header value. A payload length of 0 with a hop-by-hop header (a jumbogram) is bounded
//!   by the captured bytes.
//! * **Fragments** (IPv4 MF/offset, IPv6 fragment header): `IpHeader::fragment` is set. The
//!   first fragment (offset 0) is parsed through L4 when this fragment holds the whole L4
//!   header; if it does not (a "tiny fragment"), or for any later fragment, `transport` is
//!   [`Transport::None`] and the payload is the fragment's data. In a fragment, the UDP length
//!   covers the whole datagram, so it is only checked to be >= 8.
//! * **TCP**: a data offset below 5 words, or one that runs past the IP payload, is
//!   [`Malformed::TcpBadDataOffset`]; one that runs past the captured bytes is
//!   [`Malformed::TruncatedTcp`]. Options are not decoded (they lie between
//!   `l4_offset + 20` and `payload_offset`).
//! * **UDP**: a length below 8, or above the IP payload (unfragmented datagrams), is
//!   [`Malformed::UdpBadLength`]. The payload is bounded by the UDP length too.
//! * **ICMP / ICMPv6**: the 8-byte header must be present; `ident` is the echo identifier for
//!   echo request/reply (v4 types 8/0, v6 types 128/129), 0 otherwise.

use runtime::ports::LinkType;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The most IPv6 extension headers walked before [`Malformed::Ipv6ExtensionChainTooLong`].
pub const MAX_IPV6_EXTENSIONS: usize = 8;

/// EtherType values this parser knows.
pub mod ethertype {
    /// IPv4.
    pub const IPV4: u16 = 0x0800;
    /// IPv6.
    pub const IPV6: u16 = 0x86dd;
    /// ARP.
    pub const ARP: u16 = 0x0806;
    /// 802.1Q VLAN tag.
    pub const VLAN: u16 = 0x8100;
    /// 802.1ad service VLAN tag (QinQ outer tag).
    pub const QINQ: u16 = 0x88a8;
    /// Pre-standard QinQ outer tag.
    pub const QINQ_OLD: u16 = 0x9100;
}

/// IP protocol numbers this parser knows.
pub mod ip_proto {
    /// IPv6 hop-by-hop options.
    pub const HOPOPT: u8 = 0;
    /// ICMP.
    pub const ICMP: u8 = 1;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
    /// IPv6 routing header.
    pub const IPV6_ROUTE: u8 = 43;
    /// IPv6 fragment header.
    pub const IPV6_FRAG: u8 = 44;
    /// Encapsulating security payload.
    pub const ESP: u8 = 50;
    /// Authentication header.
    pub const AH: u8 = 51;
    /// ICMPv6.
    pub const ICMPV6: u8 = 58;
    /// IPv6 no next header.
    pub const IPV6_NONXT: u8 = 59;
    /// IPv6 destination options.
    pub const IPV6_OPTS: u8 = 60;
}

/// TCP flag bits, as in [`TcpHeader::flags`].
pub mod tcp_flags {
    /// No more data from sender.
    pub const FIN: u8 = 0x01;
    /// Synchronize sequence numbers.
    pub const SYN: u8 = 0x02;
    /// Reset the connection.
    pub const RST: u8 = 0x04;
    /// Push.
    pub const PSH: u8 = 0x08;
    /// Acknowledgment field is significant.
    pub const ACK: u8 = 0x10;
    /// Urgent pointer field is significant.
    pub const URG: u8 = 0x20;
    /// ECN echo.
    pub const ECE: u8 = 0x40;
    /// Congestion window reduced.
    pub const CWR: u8 = 0x80;
}

/// What [`parse`] found in a frame. Offsets index the captured frame.
#[derive(Clone, Copy, Debug)]
pub struct Parsed {
    /// Outermost VLAN id (802.1Q or 802.1ad; up to 2 stacked tags).
    pub vlan: Option<u16>,
    /// EtherType after the VLAN tags (Linux SLL: its protocol field; raw IP: by version).
    pub ethertype: u16,
    /// Start of the L3 header.
    pub l3_offset: u16,
    /// The IP header; `None` for non-IP frames (not an error).
    pub ip: Option<IpHeader>,
    /// End of the IP headers, IPv4 options and IPv6 extension headers included.
    pub l4_offset: u16,
    /// The decoded transport header.
    pub transport: Transport,
    /// Start of the transport payload (after the L4 header, TCP options included).
    pub payload_offset: u16,
    /// Payload bytes present in the frame: bounded by the IP (and UDP) length and by the
    /// captured bytes.
    pub payload_len: u16,
    /// The IP header declares more bytes than were captured (snap length). Not an error.
    pub payload_clipped: bool,
}

impl Parsed {
    /// The payload bytes of `frame` (the frame this was parsed from). Empty, never a panic,
    /// if given another frame that is too short.
    pub fn payload<'a>(&self, frame: &'a [u8]) -> &'a [u8] {
        let start = usize::from(self.payload_offset);
        let end = start + usize::from(self.payload_len);
        frame.get(start..end).unwrap_or(&[])
    }

    /// TCP flags, if this is a TCP packet.
    pub fn tcp_flags(&self) -> Option<u8> {
        match self.transport {
            Transport::Tcp(t) => Some(t.flags),
            _ => None,
        }
    }
}

/// The decoded IPv4 or IPv6 header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpHeader {
    /// 4 or 6.
    pub version: u8,
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// IPv4 protocol; for IPv6 the final next-header value after the extension headers.
    pub proto: u8,
    /// IPv4 TTL or IPv6 hop limit.
    pub ttl: u8,
    /// Set when the packet is a fragment (MF set or offset non-zero).
    pub fragment: Option<Fragment>,
}

/// Fragmentation fields of a fragment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fragment {
    /// Offset of this fragment's data in the original datagram, in bytes.
    pub offset: u16,
    /// More fragments follow.
    pub more: bool,
    /// Identification (16 bits for IPv4, 32 for IPv6).
    pub id: u32,
}

/// The transport header, as far as it was decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// TCP.
    Tcp(TcpHeader),
    /// UDP.
    Udp(UdpHeader),
    /// ICMP (`v6: false`) or ICMPv6 (`v6: true`).
    Icmp {
        /// ICMPv6.
        v6: bool,
        /// Type.
        kind: u8,
        /// Code.
        code: u8,
        /// Echo identifier for echo request/reply, 0 otherwise.
        ident: u16,
    },
    /// An IP protocol this parser does not decode (ESP, GRE, SCTP, No Next Header...).
    Other,
    /// No transport header: non-IP frame, non-first fragment, or a first fragment too short to
    /// hold its L4 header.
    None,
}

/// The fixed fields of a TCP header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpHeader {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgment number.
    pub ack: u32,
    /// Flags, see [`tcp_flags`].
    pub flags: u8,
    /// Window (unscaled).
    pub window: u16,
    /// Header length in bytes, options included (20..=60).
    pub header_len: u8,
}

/// The UDP header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UdpHeader {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Length field (header included).
    pub length: u16,
}

/// Why a frame could not be parsed. Every variant has a stable snake_case name for stats
/// ([`Malformed::as_str`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Malformed {
    /// The frame has no bytes.
    EmptyFrame,
    /// Shorter than an Ethernet header (14 bytes).
    TruncatedEthernet,
    /// A VLAN tag is cut short.
    TruncatedVlan,
    /// More than two stacked VLAN tags.
    TooManyVlanTags,
    /// Shorter than a Linux SLL header (16 bytes).
    TruncatedSll,
    /// Raw IP whose version nibble is neither 4 nor 6.
    RawIpBadVersion,
    /// The IPv4 header is cut short (fixed part or options).
    TruncatedIpv4,
    /// EtherType IPv4 but the version nibble is not 4.
    Ipv4BadVersion,
    /// IHL below 5 words.
    Ipv4BadHeaderLength,
    /// Total length below the header length.
    Ipv4TotalLengthTooShort,
    /// The IPv6 fixed header is cut short.
    TruncatedIpv6,
    /// EtherType IPv6 but the version nibble is not 6.
    Ipv6BadVersion,
    /// More than [`MAX_IPV6_EXTENSIONS`] extension headers.
    Ipv6ExtensionChainTooLong,
    /// An IPv6 extension header is cut short.
    TruncatedIpv6Extension,
    /// The TCP header is cut short.
    TruncatedTcp,
    /// TCP data offset below 5 words or past the IP payload.
    TcpBadDataOffset,
    /// The UDP header is cut short.
    TruncatedUdp,
    /// UDP length below 8 or above the IP payload.
    UdpBadLength,
    /// The ICMP header (8 bytes) is cut short.
    TruncatedIcmp,
}

impl Malformed {
    /// Every variant, in declaration order.
    pub const ALL: &'static [Malformed] = &[
        Malformed::EmptyFrame,
        Malformed::TruncatedEthernet,
        Malformed::TruncatedVlan,
        Malformed::TooManyVlanTags,
        Malformed::TruncatedSll,
        Malformed::RawIpBadVersion,
        Malformed::TruncatedIpv4,
        Malformed::Ipv4BadVersion,
        Malformed::Ipv4BadHeaderLength,
        Malformed::Ipv4TotalLengthTooShort,
        Malformed::TruncatedIpv6,
        Malformed::Ipv6BadVersion,
        Malformed::Ipv6ExtensionChainTooLong,
        Malformed::TruncatedIpv6Extension,
        Malformed::TruncatedTcp,
        Malformed::TcpBadDataOffset,
        Malformed::TruncatedUdp,
        Malformed::UdpBadLength,
        Malformed::TruncatedIcmp,
    ];

    /// Stable snake_case name, for stats counters.
    pub fn as_str(self) -> &'static str {
        match self {
            Malformed::EmptyFrame => "empty_frame",
            Malformed::TruncatedEthernet => "truncated_ethernet",
            Malformed::TruncatedVlan => "truncated_vlan",
            Malformed::TooManyVlanTags => "too_many_vlan_tags",
            Malformed::TruncatedSll => "truncated_sll",
            Malformed::RawIpBadVersion => "raw_ip_bad_version",
            Malformed::TruncatedIpv4 => "truncated_ipv4",
            Malformed::Ipv4BadVersion => "ipv4_bad_version",
            Malformed::Ipv4BadHeaderLength => "ipv4_bad_header_length",
            Malformed::Ipv4TotalLengthTooShort => "ipv4_total_length_too_short",
            Malformed::TruncatedIpv6 => "truncated_ipv6",
            Malformed::Ipv6BadVersion => "ipv6_bad_version",
            Malformed::Ipv6ExtensionChainTooLong => "ipv6_extension_chain_too_long",
            Malformed::TruncatedIpv6Extension => "truncated_ipv6_extension",
            Malformed::TruncatedTcp => "truncated_tcp",
            Malformed::TcpBadDataOffset => "tcp_bad_data_offset",
            Malformed::TruncatedUdp => "truncated_udp",
            Malformed::UdpBadLength => "udp_bad_length",
            Malformed::TruncatedIcmp => "truncated_icmp",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Malformed::EmptyFrame => "empty frame",
            Malformed::TruncatedEthernet => "frame shorter than an Ethernet header",
            Malformed::TruncatedVlan => "VLAN tag cut short",
            Malformed::TooManyVlanTags => "more than two stacked VLAN tags",
            Malformed::TruncatedSll => "frame shorter than a Linux cooked (SLL) header",
            Malformed::RawIpBadVersion => "raw IP packet with an IP version other than 4 or 6",
            Malformed::TruncatedIpv4 => "IPv4 header cut short",
            Malformed::Ipv4BadVersion => "IPv4 EtherType but IP version is not 4",
            Malformed::Ipv4BadHeaderLength => "IPv4 header length below 20 bytes",
            Malformed::Ipv4TotalLengthTooShort => "IPv4 total length below its header length",
            Malformed::TruncatedIpv6 => "IPv6 header cut short",
            Malformed::Ipv6BadVersion => "IPv6 EtherType but IP version is not 6",
            Malformed::Ipv6ExtensionChainTooLong => "too many IPv6 extension headers",
            Malformed::TruncatedIpv6Extension => "IPv6 extension header cut short",
            Malformed::TruncatedTcp => "TCP header cut short",
            Malformed::TcpBadDataOffset => "TCP data offset below 20 bytes or past the IP payload",
            Malformed::TruncatedUdp => "UDP header cut short",
            Malformed::UdpBadLength => "UDP length below 8 or above the IP payload",
            Malformed::TruncatedIcmp => "ICMP header cut short",
        }
    }
}

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.describe())
    }
}

impl std::error::Error for Malformed {}

/// Header sizes and field offsets.
mod field {
    pub const ETH_LEN: usize = 14;
    pub const ETH_TYPE: usize = 12;
    pub const VLAN_LEN: usize = 4;
    pub const SLL_LEN: usize = 16;
    pub const SLL_PROTO: usize = 14;
    pub const IPV4_MIN: usize = 20;
    pub const IPV6_LEN: usize = 40;
    pub const TCP_MIN: usize = 20;
    pub const UDP_LEN: usize = 8;
    pub const ICMP_LEN: usize = 8;
    pub const IPV6_FRAG_LEN: usize = 8;
    pub const MAX_VLAN_TAGS: usize = 2;
}

/// `N` bytes of `buf` at `at`, as an array (so that every later index is checked at compile
/// time), or `None` if they are not all there.
#[inline]
fn take<const N: usize>(buf: &[u8], at: usize) -> Option<&[u8; N]> {
    let end = at.checked_add(N)?;
    buf.get(at..end)?.try_into().ok()
}

#[inline]
fn be16(b: [u8; 2]) -> u16 {
    u16::from_be_bytes(b)
}

/// An offset already bounded by the 65 535-byte view (see the module doc).
#[inline]
fn off16(x: usize) -> u16 {
    u16::try_from(x).unwrap_or(u16::MAX)
}

/// Parses the L2, L3 and L4 headers of one captured frame. See the module doc for the policies.
pub fn parse(link: LinkType, frame: &[u8]) -> Result<Parsed, Malformed> {
    if frame.is_empty() {
        return Err(Malformed::EmptyFrame);
    }
    // The view: offsets are u16, so look at 65 535 bytes at most.
    let frame = frame.get(..usize::from(u16::MAX)).unwrap_or(frame);

    let (mut ethertype, mut off) = match link {
        LinkType::Ethernet => {
            let h: &[u8; field::ETH_LEN] = take(frame, 0).ok_or(Malformed::TruncatedEthernet)?;
            (be16([h[field::ETH_TYPE], h[field::ETH_TYPE + 1]]), field::ETH_LEN)
        }
        LinkType::LinuxSll => {
            let h: &[u8; field::SLL_LEN] = take(frame, 0).ok_or(Malformed::TruncatedSll)?;
            (be16([h[field::SLL_PROTO], h[field::SLL_PROTO + 1]]), field::SLL_LEN)
        }
        LinkType::RawIp => {
            let ty = match frame.first().map(|b| b >> 4) {
                Some(4) => ethertype::IPV4,
                Some(6) => ethertype::IPV6,
                _ => return Err(Malformed::RawIpBadVersion),
            };
            (ty, 0)
        }
    };

    let mut vlan = None;
    if link != LinkType::RawIp {
        let mut tags = 0;
        while matches!(ethertype, ethertype::VLAN | ethertype::QINQ | ethertype::QINQ_OLD) {
            if tags == field::MAX_VLAN_TAGS {
                return Err(Malformed::TooManyVlanTags);
            }
            let t: &[u8; field::VLAN_LEN] = take(frame, off).ok_or(Malformed::TruncatedVlan)?;
            if vlan.is_none() {
                vlan = Some(be16([t[0], t[1]]) & 0x0fff);
            }
            ethertype = be16([t[2], t[3]]);
            off += field::VLAN_LEN;
            tags += 1;
        }
    }

    let l3 = off;
    let l3_ip = match ethertype {
        ethertype::IPV4 => parse_ipv4(frame, l3)?,
        ethertype::IPV6 => parse_ipv6(frame, l3)?,
        _ => {
            let rest = frame.len() - l3.min(frame.len());
            return Ok(Parsed {
                vlan,
                ethertype,
                l3_offset: off16(l3),
                ip: None,
                l4_offset: off16(l3),
                transport: Transport::None,
                payload_offset: off16(l3),
                payload_len: off16(rest),
                payload_clipped: false,
            });
        }
    };
    let L3 { header, l4, end, declared_end, first_fragment_l4 } = l3_ip;
    let clipped = declared_end > frame.len();

    let (transport, payload_offset, payload_end) = if !first_fragment_l4 {
        (Transport::None, l4, end)
    } else {
        let fragmented = header.fragment.is_some();
        match parse_l4(frame, header.proto, header.version, l4, end, declared_end, fragmented)? {
            Some(x) => x,
            // A first fragment too short to hold its L4 header.
            None => (Transport::None, l4, end),
        }
    };

    Ok(Parsed {
        vlan,
        ethertype,
        l3_offset: off16(l3),
        ip: Some(header),
        l4_offset: off16(l4),
        transport,
        payload_offset: off16(payload_offset),
        payload_len: off16(payload_end.saturating_sub(payload_offset)),
        payload_clipped: clipped,
    })
}

/// Result of the L3 step.
struct L3 {
    header: IpHeader,
    /// End of the IP headers.
    l4: usize,
    /// End of the IP datagram within the captured bytes: min(declared end, frame length).
    end: usize,
    /// End of the IP datagram as declared by its header.
    declared_end: usize,
    /// Whether the L4 header may follow (not a later fragment, not ESP/No Next Header...).
    first_fragment_l4: bool,
}

fn parse_ipv4(frame: &[u8], l3: usize) -> Result<L3, Malformed> {
    let h: &[u8; field::IPV4_MIN] = take(frame, l3).ok_or(Malformed::TruncatedIpv4)?;
    if h[0] >> 4 != 4 {
        return Err(Malformed::Ipv4BadVersion);
    }
    let ihl = usize::from(h[0] & 0x0f) * 4;
    if ihl < field::IPV4_MIN {
        return Err(Malformed::Ipv4BadHeaderLength);
    }
    let total = usize::from(be16([h[2], h[3]]));
    if total < ihl {
        return Err(Malformed::Ipv4TotalLengthTooShort);
    }
    let l4 = l3 + ihl;
    if l4 > frame.len() {
        return Err(Malformed::TruncatedIpv4);
    }
    let declared_end = l3 + total;
    let end = declared_end.min(frame.len());

    let id = u32::from(be16([h[4], h[5]]));
    let frag_word = be16([h[6], h[7]]);
    let more = frag_word & 0x2000 != 0;
    let offset = (frag_word & 0x1fff) << 3; // 13 bits * 8 fits in u16
    let fragment = (more || offset != 0).then_some(Fragment { offset, more, id });

    let src = IpAddr::V4(Ipv4Addr::new(h[12], h[13], h[14], h[15]));
    let dst = IpAddr::V4(Ipv4Addr::new(h[16], h[17], h[18], h[19]));
    Ok(L3 {
        header: IpHeader { version: 4, src, dst, proto: h[9], ttl: h[8], fragment },
        l4,
        end,
        declared_end,
        first_fragment_l4: offset == 0,
    })
}

fn parse_ipv6(frame: &[u8], l3: usize) -> Result<L3, Malformed> {
    let h: &[u8; field::IPV6_LEN] = take(frame, l3).ok_or(Malformed::TruncatedIpv6)?;
    if h[0] >> 4 != 6 {
        return Err(Malformed::Ipv6BadVersion);
    }
    let payload_len = usize::from(be16([h[4], h[5]]));
    let mut next = h[6];
    let hop_limit = h[7];
    let mut src = [0u8; 16];
    src.copy_from_slice(&h[8..24]);
    let mut dst = [0u8; 16];
    dst.copy_from_slice(&h[24..40]);

    let fixed_end = l3 + field::IPV6_LEN;
    let declared_end = if payload_len == 0 && next == ip_proto::HOPOPT {
        // Jumbogram: the real length is in a hop-by-hop option; bound by the capture.
        frame.len().max(fixed_end)
    } else {
        fixed_end + payload_len
    };
    let end = declared_end.min(frame.len());

    let mut off = fixed_end;
    let mut fragment = None;
    let mut l4_follows = true;
    let mut walked = 0;
    // ESP, No Next Header and upper-layer protocols end the walk.
    while matches!(
        next,
        ip_proto::HOPOPT | ip_proto::IPV6_ROUTE | ip_proto::IPV6_FRAG | ip_proto::IPV6_OPTS | ip_proto::AH
    ) {
        if walked == MAX_IPV6_EXTENSIONS {
            return Err(Malformed::Ipv6ExtensionChainTooLong);
        }
        walked += 1;
        let bounded = frame.get(..end).unwrap_or(frame);
        let e: &[u8; 2] = take(bounded, off).ok_or(Malformed::TruncatedIpv6Extension)?;
        let len = match next {
            ip_proto::IPV6_FRAG => field::IPV6_FRAG_LEN,
            ip_proto::AH => (usize::from(e[1]) + 2) * 4,
            _ => (usize::from(e[1]) + 1) * 8,
        };
        if off + len > end {
            return Err(Malformed::TruncatedIpv6Extension);
        }
        if next == ip_proto::IPV6_FRAG {
            let f: &[u8; field::IPV6_FRAG_LEN] = take(bounded, off).ok_or(Malformed::TruncatedIpv6Extension)?;
            let word = be16([f[2], f[3]]);
            let offset = word & 0xfff8; // 13-bit offset in 8-byte units, already shifted by 3
            let more = word & 1 != 0;
            let id = u32::from_be_bytes([f[4], f[5], f[6], f[7]]);
            fragment = Some(Fragment { offset, more, id });
            next = e[0];
            off += len;
            if offset != 0 {
                l4_follows = false;
                break;
            }
            continue;
        }
        next = e[0];
        off += len;
    }

    Ok(L3 {
        header: IpHeader {
            version: 6,
            src: IpAddr::V6(Ipv6Addr::from(src)),
            dst: IpAddr::V6(Ipv6Addr::from(dst)),
            proto: next,
            ttl: hop_limit,
            fragment,
        },
        l4: off,
        end,
        declared_end,
        first_fragment_l4: l4_follows,
    })
}

/// Decodes the L4 header at `l4`. `end` is the end of the IP datagram within the captured
/// bytes, `declared_end` the end its header declares. Returns the transport, the payload
/// offset and the payload end; `Ok(None)` when this is a fragment too short to hold the L4
/// header.
fn parse_l4(
    frame: &[u8],
    proto: u8,
    version: u8,
    l4: usize,
    end: usize,
    declared_end: usize,
    fragmented: bool,
) -> Result<Option<(Transport, usize, usize)>, Malformed> {
    // A header that does not fit the declared datagram: in a fragment it is simply in a later
    // fragment (tiny fragment); otherwise the datagram is truncated.
    let fits_declared = |len: usize| l4 + len <= declared_end;
    let captured = frame.get(..end).unwrap_or(frame);
    let is_icmp = (proto == ip_proto::ICMP && version == 4) || (proto == ip_proto::ICMPV6 && version == 6);
    match proto {
        ip_proto::TCP => {
            if !fits_declared(field::TCP_MIN) {
                return if fragmented { Ok(None) } else { Err(Malformed::TruncatedTcp) };
            }
            let t: &[u8; field::TCP_MIN] = take(captured, l4).ok_or(Malformed::TruncatedTcp)?;
            let header_len = usize::from(t[12] >> 4) * 4;
            if header_len < field::TCP_MIN {
                return Err(Malformed::TcpBadDataOffset);
            }
            if !fits_declared(header_len) {
                return if fragmented { Ok(None) } else { Err(Malformed::TcpBadDataOffset) };
            }
            if l4 + header_len > end {
                return Err(Malformed::TruncatedTcp);
            }
            let tcp = TcpHeader {
                src_port: be16([t[0], t[1]]),
                dst_port: be16([t[2], t[3]]),
                seq: u32::from_be_bytes([t[4], t[5], t[6], t[7]]),
                ack: u32::from_be_bytes([t[8], t[9], t[10], t[11]]),
                flags: t[13],
                window: be16([t[14], t[15]]),
                header_len: header_len as u8, // <= 60
            };
            Ok(Some((Transport::Tcp(tcp), l4 + header_len, end)))
        }
        ip_proto::UDP => {
            if !fits_declared(field::UDP_LEN) {
                return if fragmented { Ok(None) } else { Err(Malformed::TruncatedUdp) };
            }
            let u: &[u8; field::UDP_LEN] = take(captured, l4).ok_or(Malformed::TruncatedUdp)?;
            let length = be16([u[4], u[5]]);
            let len = usize::from(length);
            if len < field::UDP_LEN {
                return Err(Malformed::UdpBadLength);
            }
            let payload_end = if fragmented {
                end
            } else {
                if l4 + len > declared_end {
                    return Err(Malformed::UdpBadLength);
                }
                (l4 + len).min(end)
            };
            let udp = UdpHeader { src_port: be16([u[0], u[1]]), dst_port: be16([u[2], u[3]]), length };
            Ok(Some((Transport::Udp(udp), l4 + field::UDP_LEN, payload_end)))
        }
        _ if is_icmp => {
            if !fits_declared(field::ICMP_LEN) {
                return if fragmented { Ok(None) } else { Err(Malformed::TruncatedIcmp) };
            }
            let i: &[u8; field::ICMP_LEN] = take(captured, l4).ok_or(Malformed::TruncatedIcmp)?;
            let v6 = version == 6;
            let kind = i[0];
            let echo = if v6 { kind == 128 || kind == 129 } else { kind == 8 || kind == 0 };
            let ident = if echo { be16([i[4], i[5]]) } else { 0 };
            Ok(Some((Transport::Icmp { v6, kind, code: i[1], ident }, l4 + field::ICMP_LEN, end)))
        }
        _ => Ok(Some((Transport::Other, l4, end))),
    }
}
