//! SYN cookies: the splicer answers a SYN without keeping anything, and recognizes the
//! client's ACK by its acknowledgment number.
//!
//! The initial sequence number it sends is the cookie (as in Linux, after D. J. Bernstein):
//!
//! ```text
//!  31      27 26  24 23                      0
//! | t mod 32 | mss  |  MAC(secret, 4-tuple, client ISN, t) |
//! ```
//!
//! `t` counts 64-second periods; a cookie is accepted in its own period and the next (64 to
//! 128 s to complete a handshake). `mss` indexes [`MSS_TABLE`] (the largest entry not above
//! the client's MSS). The MAC is 24 bits of SipHash keyed with the process's random
//! `RandomState` keys, so cookies cannot be forged without the key. Window scale, SACK and
//! timestamps are not encoded: the splicer's SYN-ACK offers none of them (docs/splicer.md).

use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddrV4;

/// The MSS values a cookie can carry.
pub const MSS_TABLE: [u16; 8] = [536, 1200, 1300, 1360, 1400, 1440, 1452, 1460];

const PERIOD_SECS: u64 = 64;

/// The cookie secret.
#[derive(Debug, Default)]
pub struct Cookies {
    key: std::collections::hash_map::RandomState,
}

impl Cookies {
    /// A fresh random secret.
    pub fn new() -> Cookies {
        Cookies::default()
    }

    fn mac(&self, client: SocketAddrV4, server: SocketAddrV4, client_isn: u32, t: u64) -> u32 {
        let mut h = self.key.build_hasher();
        h.write_u32(u32::from(*client.ip()));
        h.write_u16(client.port());
        h.write_u32(u32::from(*server.ip()));
        h.write_u16(server.port());
        h.write_u32(client_isn);
        h.write_u64(t);
        (h.finish() & 0x00ff_ffff) as u32
    }

    /// The cookie for a SYN from `client` (sequence number `client_isn`, MSS option `mss`)
    /// to `server`, at `now_secs` (any monotonic seconds), and the MSS it encodes.
    pub fn make(
        &self,
        client: SocketAddrV4,
        server: SocketAddrV4,
        client_isn: u32,
        mss: u16,
        now_secs: u64,
    ) -> (u32, u16) {
        let t = now_secs / PERIOD_SECS;
        let idx = MSS_TABLE.iter().rposition(|m| *m <= mss).unwrap_or(0);
        let c = ((t as u32 & 31) << 27) | ((idx as u32) << 24) | self.mac(client, server, client_isn, t);
        (c, MSS_TABLE[idx])
    }

    /// Checks the ACK completing a handshake: `ack - 1` must be a cookie made for this
    /// 4-tuple and `seq - 1` within the last two periods. Returns the MSS it encodes.
    pub fn check(&self, client: SocketAddrV4, server: SocketAddrV4, seq: u32, ack: u32, now_secs: u64) -> Option<u16> {
        let c = ack.wrapping_sub(1);
        let now = now_secs / PERIOD_SECS;
        for t in [now, now.wrapping_sub(1)] {
            if (c >> 27) == (t as u32 & 31) && c & 0x00ff_ffff == self.mac(client, server, seq.wrapping_sub(1), t) {
                return Some(MSS_TABLE[((c >> 24) & 7) as usize]);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_validate_only_their_own_handshake() {
        let k = Cookies::new();
        let c: SocketAddrV4 = "10.0.0.1:40000".parse().unwrap();
        let s: SocketAddrV4 = "10.0.0.100:80".parse().unwrap();
        let (cookie, mss) = k.make(c, s, 1000, 1460, 500);
        assert_eq!(mss, 1460);
        assert_eq!(k.check(c, s, 1001, cookie.wrapping_add(1), 500), Some(1460));
        assert_eq!(k.check(c, s, 1001, cookie.wrapping_add(1), 500 + 64), Some(1460), "next period");
        assert_eq!(k.check(c, s, 1001, cookie.wrapping_add(1), 500 + 200), None, "expired");
        assert_eq!(k.check(c, s, 1002, cookie.wrapping_add(1), 500), None, "other client ISN");
        let other: SocketAddrV4 = "10.0.0.1:40001".parse().unwrap();
        assert_eq!(k.check(other, s, 1001, cookie.wrapping_add(1), 500), None, "other port");
        assert_eq!(k.make(c, s, 1, 1000, 0).1, 536);
        assert_eq!(Cookies::new().check(c, s, 1001, cookie.wrapping_add(1), 500), None, "other secret");
    }
}
