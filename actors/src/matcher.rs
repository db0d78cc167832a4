//! Flow matches: the address/port/protocol predicate shared by subscription filters and the
//! firewall's rules.
//!
//! A [`FlowMatch`] is written in the app file as a TOML table; every key is optional and an
//! absent key matches anything:
//!
//! ```toml
//! { proto = "udp", src = "198.51.100.0/24", dst = ["203.0.113.5", "2001:db8::/32"], src_port = "1024-65535", dst_port = 53 }
//! ```
//!
//! * `proto`: `"tcp"`, `"udp"`, `"icmp"` (ICMP and ICMPv6) or an IP protocol number.
//! * `src`, `dst`: an address or CIDR, or a list of them (any may match).
//! * `src_port`, `dst_port`: a port, a `"low-high"` range, or a list of either.
//!
//! Unknown keys are errors (the struct denies them), as are malformed CIDRs and ranges.
//! `src`/`dst` are the packet's own source and destination; a stateful user (the firewall)
//! evaluates them on the flow's first packet, so they mean client and server there.

use ipnet::IpNet;
use serde::Deserialize;
use std::net::IpAddr;

use crate::packet::PacketView;

/// A protocol in a match.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    /// TCP (6).
    Tcp,
    /// UDP (17).
    Udp,
    /// ICMP (1) or ICMPv6 (58).
    Icmp,
    /// Any other IP protocol number.
    Number(u8),
}

impl Proto {
    /// Whether IP protocol number `proto` is this one.
    pub fn matches(self, proto: u8) -> bool {
        match self {
            Proto::Tcp => proto == 6,
            Proto::Udp => proto == 17,
            Proto::Icmp => proto == 1 || proto == 58,
            Proto::Number(n) => proto == n,
        }
    }
}

impl<'de> Deserialize<'de> for Proto {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u8),
            S(String),
        }
        let raw = Raw::deserialize(d)
            .map_err(|_: D::Error| serde::de::Error::custom("expected tcp, udp, icmp or a protocol number 0-255"))?;
        match raw {
            Raw::N(n) => Ok(Proto::Number(n)),
            Raw::S(s) => match s.to_ascii_lowercase().as_str() {
                "tcp" => Ok(Proto::Tcp),
                "udp" => Ok(Proto::Udp),
                "icmp" | "icmpv6" => Ok(Proto::Icmp),
                _ => Err(serde::de::Error::custom(format!(
                    "unknown protocol `{s}` (use tcp, udp, icmp or a protocol number)"
                ))),
            },
        }
    }
}

/// One or more networks; a bare address is a /32 or /128.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Networks(pub Vec<IpNet>);

impl Networks {
    fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|n| n.contains(&ip))
    }
}

fn parse_net(s: &str) -> Result<IpNet, String> {
    if let Ok(n) = s.parse::<IpNet>() {
        return Ok(n);
    }
    s.parse::<IpAddr>().map(IpNet::from).map_err(|_| format!("`{s}` is not an address or CIDR"))
}

impl<'de> Deserialize<'de> for Networks {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            One(String),
            Many(Vec<String>),
        }
        let raw = Raw::deserialize(d).map_err(|_: D::Error| {
            serde::de::Error::custom("expected an address or CIDR (\"192.0.2.0/24\"), or a list of them")
        })?;
        let list = match raw {
            Raw::One(s) => vec![s],
            Raw::Many(v) => v,
        };
        if list.is_empty() {
            return Err(serde::de::Error::custom("an empty address list matches nothing"));
        }
        list.iter().map(|s| parse_net(s)).collect::<Result<_, _>>().map(Networks).map_err(serde::de::Error::custom)
    }
}

/// One or more inclusive port ranges.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ports(pub Vec<(u16, u16)>);

impl Ports {
    fn contains(&self, p: u16) -> bool {
        self.0.iter().any(|(lo, hi)| (*lo..=*hi).contains(&p))
    }
}

fn parse_range(s: &str) -> Result<(u16, u16), String> {
    let bad = || format!("`{s}` is not a port or a `low-high` port range");
    match s.split_once('-') {
        Some((a, b)) => {
            let lo: u16 = a.trim().parse().map_err(|_| bad())?;
            let hi: u16 = b.trim().parse().map_err(|_| bad())?;
            if lo > hi {
                return Err(format!("port range `{s}` is empty (low > high)"));
            }
            Ok((lo, hi))
        }
        None => s.trim().parse::<u16>().map(|p| (p, p)).map_err(|_| bad()),
    }
}

impl<'de> Deserialize<'de> for Ports {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum One {
            N(u16),
            S(String),
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            One(One),
            Many(Vec<One>),
        }
        let raw = Raw::deserialize(d).map_err(|_: D::Error| {
            serde::de::Error::custom("expected a port 0-65535, a range \"80-90\", or a list of them")
        })?;
        let list = match raw {
            Raw::One(o) => vec![o],
            Raw::Many(v) => v,
        };
        if list.is_empty() {
            return Err(serde::de::Error::custom("an empty port list matches nothing"));
        }
        list.into_iter()
            .map(|o| match o {
                One::N(p) => Ok((p, p)),
                One::S(s) => parse_range(&s),
            })
            .collect::<Result<_, _>>()
            .map(Ports)
            .map_err(serde::de::Error::custom)
    }
}

/// An address/port/protocol predicate (see the module docs).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowMatch {
    /// Protocol.
    pub proto: Option<Proto>,
    /// Source networks.
    pub src: Option<Networks>,
    /// Destination networks.
    pub dst: Option<Networks>,
    /// Source ports.
    pub src_port: Option<Ports>,
    /// Destination ports.
    pub dst_port: Option<Ports>,
}

/// The fields a [`FlowMatch`] looks at, already extracted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tuple {
    /// IP protocol number.
    pub proto: u8,
    /// Source address.
    pub src: Option<IpAddr>,
    /// Destination address.
    pub dst: Option<IpAddr>,
    /// Source port.
    pub src_port: Option<u16>,
    /// Destination port.
    pub dst_port: Option<u16>,
}

impl Tuple {
    /// Reads the tuple of a packet.
    pub fn of(p: &PacketView<'_>) -> Tuple {
        Tuple { proto: p.proto(), src: p.src_ip(), dst: p.dst_ip(), src_port: p.src_port(), dst_port: p.dst_port() }
    }

    /// The same tuple seen from the other direction.
    pub fn reversed(self) -> Tuple {
        Tuple { proto: self.proto, src: self.dst, dst: self.src, src_port: self.dst_port, dst_port: self.src_port }
    }
}

impl FlowMatch {
    /// True when every present key matches. A key that needs a field the packet lacks
    /// (a port on an ICMP error, an address on a non-IP frame) does not match.
    pub fn matches(&self, t: &Tuple) -> bool {
        fn opt<T, V: Copy>(cond: &Option<T>, v: Option<V>, f: impl Fn(&T, V) -> bool) -> bool {
            match cond {
                None => true,
                Some(c) => v.is_some_and(|v| f(c, v)),
            }
        }
        self.proto.is_none_or(|p| p.matches(t.proto))
            && opt(&self.src, t.src, Networks::contains)
            && opt(&self.dst, t.dst, Networks::contains)
            && opt(&self.src_port, t.src_port, Ports::contains)
            && opt(&self.dst_port, t.dst_port, Ports::contains)
    }

    /// True when no key is set.
    pub fn is_any(&self) -> bool {
        *self == FlowMatch::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(s: &str) -> Result<FlowMatch, toml::de::Error> {
        toml::from_str(s)
    }

    fn t(proto: u8, src: &str, sp: u16, dst: &str, dp: u16) -> Tuple {
        Tuple { proto, src: src.parse().ok(), dst: dst.parse().ok(), src_port: Some(sp), dst_port: Some(dp) }
    }

    #[test]
    fn matches_keys() {
        let f = m("proto = \"udp\"\nsrc = \"198.51.100.0/24\"\ndst_port = [53, \"5353-5355\"]").unwrap();
        assert!(f.matches(&t(17, "198.51.100.9", 1000, "203.0.113.1", 53)));
        assert!(f.matches(&t(17, "198.51.100.9", 1000, "203.0.113.1", 5354)));
        assert!(!f.matches(&t(6, "198.51.100.9", 1000, "203.0.113.1", 53)));
        assert!(!f.matches(&t(17, "192.0.2.9", 1000, "203.0.113.1", 53)));
        assert!(!f.matches(&t(17, "198.51.100.9", 1000, "203.0.113.1", 54)));
        let v6 = m("dst = [\"2001:db8::/32\", \"203.0.113.7\"]").unwrap();
        assert!(v6.matches(&t(6, "2001:db8::1", 1, "2001:db8::2", 2)));
        assert!(v6.matches(&t(6, "1.1.1.1", 1, "203.0.113.7", 2)));
        assert!(!v6.matches(&t(6, "1.1.1.1", 1, "203.0.113.8", 2)));
        assert!(FlowMatch::default().is_any());
    }

    #[test]
    fn bad_input_is_named() {
        let e = m("src = \"300.1.1.1/8\"").unwrap_err().to_string();
        assert!(e.contains("300.1.1.1/8"), "{e}");
        let e = m("dst_port = \"90-80\"").unwrap_err().to_string();
        assert!(e.contains("90-80"), "{e}");
        let e = m("proto = \"sctpx\"").unwrap_err().to_string();
        assert!(e.contains("sctpx"), "{e}");
        let e = m("colour = 1").unwrap_err().to_string();
        assert!(e.contains("colour"), "{e}");
    }
}
