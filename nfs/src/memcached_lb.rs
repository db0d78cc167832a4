//! Memcached_LB: the memcached load balancer, a policy NF for the TCP splicer
//! (docs/splicer.md).
//!
//! ```toml
//! [[nf]]
//! name = "cache"
//! kind = "memcached_lb"
//! filter = { dst_port = 11211 }
//! backends = ["10.0.0.11:11211", "10.0.0.12:11211", "10.0.0.13:11211"]
//! ```
//!
//! Text protocol: it waits for the first command line (`\r\n`, or `max_line_bytes`), takes
//! its key (the second word of `get`, `gets`, `set`, `add`, `replace`, `append`, `prepend`,
//! `cas`, `delete`, `incr`, `decr`, `touch`, `gat`, `gats`) and sends the connection to the
//! backend of that key on a ketama-like consistent hash ring ([`Ring`]): every client and
//! this NF agree on where a key lives, and removing a backend moves only its keys. A command
//! without a key (`stats`, `version`) goes to the backends in turn.
//!
//! **A connection stays on that backend**: the splicer splices whole TCP connections, so
//! later commands with other keys go to the same server. A client with many keys should
//! open one connection per key (or per backend, hashing as [`Ring`] does), or use a
//! client-side consistent hash directly.

use std::time::{Duration, Instant};

use actors::desc::EventDesc;
use actors::{Actor, Context, Contract, Verdict};
use serde::Deserialize;

use crate::balance::{healthy_first, parse_backends, Decisions, Ring};
use crate::common::NfCommon;
use crate::{Kind, NfOptions};

/// The kind's name in the app file.
pub const NAME: &str = "memcached_lb";

/// The kind, for [`KINDS`](crate::KINDS).
pub const KIND: Kind<MemcachedLbConfig> = Kind::new();

/// Memcached_LB options.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemcachedLbConfig {
    /// `"ADDRESS:PORT"` each.
    pub backends: Vec<String>,
    /// Bytes after which it decides without a complete first line.
    #[serde(default = "default_max_line")]
    pub max_line_bytes: u64,
    /// How long a backend that failed is put last.
    #[serde(default = "default_down")]
    pub down_ms: u64,
}

fn default_max_line() -> u64 {
    2048
}
fn default_down() -> u64 {
    10_000
}

impl NfOptions for MemcachedLbConfig {
    const NAME: &'static str = NAME;

    fn check(&mut self, common: &NfCommon, _registry: &mut actors::EventRegistry) -> Result<(), Vec<String>> {
        parse_backends(&self.backends, "backends").map(|_| ()).map_err(|e| vec![common.error(NAME, e)])
    }

    fn build(&self, common: &NfCommon) -> Result<Box<dyn Actor>, String> {
        let backends = parse_backends(&self.backends, "backends").map_err(|e| common.error(NAME, e))?;
        let contract = common.flow_dest_contract(NAME);
        Ok(Box::new(MemcachedLb {
            contract,
            ring: Ring::new(&backends),
            backends,
            max_line: self.max_line_bytes,
            down: Duration::from_millis(self.down_ms),
            next: 0,
            decisions: Decisions::default(),
            keyless: 0,
        }))
    }
}

const KEYED: &[&str] =
    &["get", "gets", "set", "add", "replace", "append", "prepend", "cas", "delete", "incr", "decr", "touch", "gat", "gats"];

/// The key of a memcached text command line (`gat`/`gats` take the key after the
/// expiration time); `None` for commands without one.
pub fn command_key(line: &[u8]) -> Option<&[u8]> {
    let mut words = line.split(|b| *b == b' ').filter(|w| !w.is_empty());
    let cmd = words.next()?;
    let cmd = std::str::from_utf8(cmd).ok()?;
    if !KEYED.contains(&cmd) {
        return None;
    }
    if cmd.starts_with("gat") {
        words.next()?;
    }
    words.next()
}

/// The Memcached_LB NF (see the module docs).
pub struct MemcachedLb {
    contract: Contract,
    ring: Ring,
    backends: Vec<std::net::SocketAddrV4>,
    max_line: u64,
    down: Duration,
    next: usize,
    decisions: Decisions,
    keyless: u64,
}

impl Actor for MemcachedLb {
    fn contract(&self) -> &Contract {
        &self.contract
    }

    fn handle(&mut self, ev: &mut EventDesc, cx: &mut Context<'_>) -> Verdict {
        let Some((flow, bytes)) = self.decisions.request(ev, cx) else { return Verdict::Continue };
        let end = bytes.windows(2).position(|w| w == b"\r\n");
        if end.is_none() && (bytes.len() as u64) < self.max_line {
            self.decisions.waited += 1;
            return Verdict::Continue;
        }
        let line = &bytes[..end.unwrap_or(bytes.len())];
        let order = match command_key(line) {
            Some(k) => self.ring.order(k),
            None => {
                self.keyless += 1;
                let n = self.backends.len();
                self.next = self.next.wrapping_add(1);
                (0..n).map(|i| self.backends[(self.next + i) % n]).collect()
            }
        };
        let order = healthy_first(order, self.down, Instant::now());
        self.decisions.decide(ev, flow, &order, cx);
        Verdict::Continue
    }

    fn counters(&self) -> Vec<(String, u64)> {
        let mut v = self.decisions.counters();
        v.push(("commands_without_key".into(), self.keyless));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_of_commands() {
        assert_eq!(command_key(b"get foo"), Some(&b"foo"[..]));
        assert_eq!(command_key(b"set k1 0 0 5"), Some(&b"k1"[..]));
        assert_eq!(command_key(b"gat 100 k2"), Some(&b"k2"[..]));
        assert_eq!(command_key(b"stats"), None);
        assert_eq!(command_key(b"get"), None);
        assert_eq!(command_key(b"\xff x"), None);
    }
}
