//! The flow key: a direction-independent 5-tuple and its symmetric hash.
//!
//! # Contract
//!
//! * [`FlowKey`] is canonical: its two endpoints are sorted (`lo <= hi`, by address then port,
//!   with every IPv4 address before every IPv6 address), so both directions of a connection
//!   give the same key. [`Side`] says which endpoint sent a given packet.
//! * [`FlowKey::from_parsed`] keys IP packets: TCP and UDP by their ports, ICMP echo
//!   request/reply by the echo identifier (as both ports, so a request and its reply share a
//!   key), every other protocol and other ICMP messages with ports 0.
//! * **Non-first fragments are not tracked as flows**: they carry no ports, so
//!   `from_parsed` returns `None` for them (and for a first fragment too short to hold its L4
//!   header, and for non-IP frames). Callers count them separately; reassembly is out of the
//!   L2/3 stack's scope.
//! * [`FlowKey::symmetric_hash`] is a pure function of the canonical key: equal for both
//!   directions, deterministic across runs, processes and machines (no `RandomState`, no
//!   per-process seed), and well mixed in all 32 bits, so `hash % n` shards flows evenly
//!   across `n` stack instances.

use crate::parse::{Parsed, Transport};
use std::net::IpAddr;

/// One end of a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Endpoint {
    /// IP address.
    pub addr: IpAddr,
    /// Port (TCP/UDP), echo identifier (ICMP echo), or 0.
    pub port: u16,
}

/// Canonical (direction-independent) 5-tuple: `lo <= hi`. Both directions of a connection give
/// the same key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// IP protocol (IPv6: the final next header).
    pub proto: u8,
    /// The smaller endpoint.
    pub lo: Endpoint,
    /// The larger endpoint.
    pub hi: Endpoint,
}

/// Which endpoint of a [`FlowKey`] sent a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The sender is `key.lo`.
    Lo,
    /// The sender is `key.hi`.
    Hi,
}

impl Side {
    /// The other side.
    pub fn opposite(self) -> Side {
        match self {
            Side::Lo => Side::Hi,
            Side::Hi => Side::Lo,
        }
    }
}

impl FlowKey {
    /// The canonical key of a packet from `src` to `dst`, and the side of the sender. When both
    /// endpoints are equal the sender is `Side::Lo`.
    pub fn new(proto: u8, src: Endpoint, dst: Endpoint) -> (FlowKey, Side) {
        if src <= dst {
            (FlowKey { proto, lo: src, hi: dst }, Side::Lo)
        } else {
            (FlowKey { proto, lo: dst, hi: src }, Side::Hi)
        }
    }

    /// From a parsed packet with an IP header: ports for TCP/UDP; for ICMP echo the identifier
    /// as both ports; 0 otherwise. `None` when there is no IP header, or no transport header
    /// (non-first fragments, which are not tracked as flows).
    pub fn from_parsed(p: &Parsed) -> Option<(FlowKey, Side)> {
        let ip = p.ip.as_ref()?;
        let (sport, dport) = match p.transport {
            Transport::Tcp(t) => (t.src_port, t.dst_port),
            Transport::Udp(u) => (u.src_port, u.dst_port),
            Transport::Icmp { ident, .. } => (ident, ident),
            Transport::Other => (0, 0),
            Transport::None => return None,
        };
        Some(FlowKey::new(ip.proto, Endpoint { addr: ip.src, port: sport }, Endpoint { addr: ip.dst, port: dport }))
    }

    /// The endpoint on `side`.
    pub fn endpoint(&self, side: Side) -> Endpoint {
        match side {
            Side::Lo => self.lo,
            Side::Hi => self.hi,
        }
    }

    /// Same value for both directions (the key is canonical); well mixed; deterministic across
    /// runs and processes. Used to shard flows across stack instances.
    ///
    /// The canonical key is folded into 64-bit words (addresses, ports, protocol and the
    /// address family, so `10.0.0.1` and `::ffff:10.0.0.1` differ), each word combined with a
    /// multiply-rotate step, and the result finished with the MurmurHash3 64-bit finalizer.
    pub fn symmetric_hash(&self) -> u32 {
        let mut h = Mixer(0x243f_6a88_85a3_08d3 ^ u64::from(self.proto));
        h.endpoint(&self.lo);
        h.endpoint(&self.hi);
        let x = h.finish();
        (x ^ (x >> 32)) as u32
    }
}

/// A small fixed-seed word hasher (FxHash-style combine, fmix64 finish).
struct Mixer(u64);

impl Mixer {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;

    fn word(&mut self, w: u64) {
        self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(Self::K);
    }

    fn endpoint(&mut self, e: &Endpoint) {
        match e.addr {
            IpAddr::V4(a) => self.word((4u64 << 48) | (u64::from(e.port) << 32) | u64::from(u32::from(a))),
            IpAddr::V6(a) => {
                let v = u128::from(a);
                self.word((6u64 << 48) | u64::from(e.port));
                self.word((v >> 64) as u64);
                self.word(v as u64);
            }
        }
    }

    fn finish(&self) -> u64 {
        let mut x = self.0;
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^= x >> 33;
        x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        x ^= x >> 33;
        x
    }
}
