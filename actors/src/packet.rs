//! Read access to the headers of the packet an event is about.
//!
//! The L2/3 µStack parses each frame once and stores the offsets in the descriptor's
//! [`PacketMeta`]. [`PacketView`] turns those offsets back into addresses and ports with a
//! few bounds-checked reads — no second parse. Every accessor returns `None` rather than
//! panicking when the bytes are not there (a malformed frame forwarded by policy).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::desc::{meta_flags, PacketMeta};

/// Addresses and ports of a packet, read through its [`PacketMeta`].
#[derive(Clone, Copy, Debug)]
pub struct PacketView<'a> {
    bytes: &'a [u8],
    meta: &'a PacketMeta,
}

impl<'a> PacketView<'a> {
    /// A view over a frame and the offsets the L2/3 stack found in it.
    pub fn new(bytes: &'a [u8], meta: &'a PacketMeta) -> PacketView<'a> {
        PacketView { bytes, meta }
    }

    /// The whole frame.
    pub fn frame(&self) -> &'a [u8] {
        self.bytes
    }

    /// The transport payload (captured bytes only).
    pub fn payload(&self) -> &'a [u8] {
        let start = usize::from(self.meta.payload_offset);
        let end = start + usize::from(self.meta.payload_len);
        self.bytes.get(start..end).unwrap_or(&[])
    }

    fn field(&self, at: usize, len: usize) -> Option<&'a [u8]> {
        self.bytes.get(at..at.checked_add(len)?)
    }

    /// Source IP address.
    pub fn src_ip(&self) -> Option<IpAddr> {
        self.ip(12, 8)
    }

    /// Destination IP address.
    pub fn dst_ip(&self) -> Option<IpAddr> {
        self.ip(16, 24)
    }

    fn ip(&self, v4_at: usize, v6_at: usize) -> Option<IpAddr> {
        let l3 = usize::from(self.meta.l3_offset);
        match self.meta.ip_version {
            4 => {
                let b: [u8; 4] = self.field(l3 + v4_at, 4)?.try_into().ok()?;
                Some(IpAddr::V4(Ipv4Addr::from(b)))
            }
            6 => {
                let b: [u8; 16] = self.field(l3 + v6_at, 16)?.try_into().ok()?;
                Some(IpAddr::V6(Ipv6Addr::from(b)))
            }
            _ => None,
        }
    }

    fn port(&self, at: usize) -> Option<u16> {
        if self.meta.flags & meta_flags::HAS_PORTS == 0 {
            return None;
        }
        if matches!(self.meta.proto, 1 | 58) {
            // ICMP echo: the identifier stands for both ports (L2/3 flow key policy).
            let b = self.field(usize::from(self.meta.l4_offset) + 4, 2)?;
            return Some(u16::from_be_bytes([b[0], b[1]]));
        }
        let b = self.field(usize::from(self.meta.l4_offset) + at, 2)?;
        Some(u16::from_be_bytes([b[0], b[1]]))
    }

    /// Source port (TCP/UDP; ICMP echo ident).
    pub fn src_port(&self) -> Option<u16> {
        self.port(0)
    }

    /// Destination port (TCP/UDP; ICMP echo ident).
    pub fn dst_port(&self) -> Option<u16> {
        self.port(2)
    }

    /// IP protocol number, 0 for non-IP frames.
    pub fn proto(&self) -> u8 {
        self.meta.proto
    }
}
