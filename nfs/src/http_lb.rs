//! HTTP_LB: the HTTP load balancer, a policy NF for the TCP splicer (docs/splicer.md).
//!
//! ```toml
//! [[nf]]
//! name = "web"
//! kind = "http_lb"
//! filter = { dst_port = 80 }           # which virtual service's FLOW_REQs it answers
//! default_pool = "main"
//! down_ms = 10000                      # a backend that refused is skipped this long
//! max_header_bytes = 8192              # decide with what came if the headers are longer
//! pools = [
//!   { name = "main", backends = ["10.0.0.11:8000", "10.0.0.12:8000"], balance = "round_robin" },
//!   { name = "api", backends = ["10.0.0.13:8000"], balance = "hash_header", key = "X-User" },
//! ]
//! rules = [ { host = "api.example", path_prefix = "/v1/", pool = "api" } ]
//! ```
//!
//! On each `FLOW_REQ` it reads the client bytes the splicer holds. Until the request line
//! and headers are complete (`\r\n\r\n`) it waits for the next `FLOW_REQ` — unless
//! `max_header_bytes` came, then it decides with what it has. The first rule whose `host`
//! (case-insensitive, port ignored) and `path_prefix` both match names the pool; no rule:
//! `default_pool`. A pool balances by
//!
//! * `round_robin` — the next backend in turn;
//! * `least_connections` — the fewest open connections, from the splicer's per-backend
//!   counts ([`actors::splice::Board`]); ties in turn;
//! * `hash_header` / `hash_cookie` — the consistent hash ([`Ring`]) of the header
//!   or cookie named by `key` (absent: round robin).
//!
//! Backends that refused or timed out within `down_ms` go to the end of the list. The
//! `FLOW_DEST` lists up to three backends: the splicer tries the next one if the first
//! refuses (`on_backend_failure = "next"`).
//!
//! **Keep-alive**: the splicer splices a whole TCP connection, so every request of an
//! HTTP/1.1 keep-alive connection goes to the backend chosen by its first request.

use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

use actors::desc::EventDesc;
use actors::{Actor, Context, Contract, Verdict};
use serde::Deserialize;

use crate::balance::{healthy_first, parse_backends, Decisions, Ring};
use crate::common::NfCommon;
use crate::{Kind, NfOptions};

/// The kind's name in the app file.
pub const NAME: &str = "http_lb";

/// The kind, for [`KINDS`](crate::KINDS).
pub const KIND: Kind<HttpLbConfig> = Kind::new();

/// How a pool picks a backend.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    /// In turn.
    #[default]
    RoundRobin,
    /// Fewest open connections.
    LeastConnections,
    /// Consistent hash of a header's value.
    HashHeader,
    /// Consistent hash of a cookie's value.
    HashCookie,
}

/// A pool of backends.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    /// Its name, for rules.
    pub name: String,
    /// `"ADDRESS:PORT"` each.
    pub backends: Vec<String>,
    /// How it balances.
    #[serde(default)]
    pub balance: Balance,
    /// The header or cookie name for the hash balances.
    #[serde(default)]
    pub key: Option<String>,
}

/// A routing rule: both keys that are set must match.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// The Host header (case-insensitive, without port).
    #[serde(default)]
    pub host: Option<String>,
    /// The path's prefix.
    #[serde(default)]
    pub path_prefix: Option<String>,
    /// The pool it selects.
    pub pool: String,
}

/// HTTP_LB options.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpLbConfig {
    /// The pools.
    pub pools: Vec<PoolConfig>,
    /// The rules, first match wins.
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    /// The pool when no rule matches.
    pub default_pool: String,
    /// Request bytes after which it decides without complete headers.
    #[serde(default = "default_max_header")]
    pub max_header_bytes: u64,
    /// How long a backend that failed is put last.
    #[serde(default = "default_down")]
    pub down_ms: u64,
}

fn default_max_header() -> u64 {
    8192
}
fn default_down() -> u64 {
    10_000
}

impl NfOptions for HttpLbConfig {
    const NAME: &'static str = NAME;

    fn check(&mut self, common: &NfCommon, _registry: &mut actors::EventRegistry) -> Result<(), Vec<String>> {
        let mut errs = Vec::new();
        let names: Vec<&str> = self.pools.iter().map(|p| p.name.as_str()).collect();
        for (i, p) in self.pools.iter().enumerate() {
            if let Err(e) = parse_backends(&p.backends, &format!("pools[{i}].backends")) {
                errs.push(common.error(NAME, e));
            }
            let hashed = matches!(p.balance, Balance::HashHeader | Balance::HashCookie);
            if hashed && p.key.is_none() {
                errs.push(common.error(NAME, format!("pool `{}`: balance {:?} needs `key`", p.name, p.balance)));
            }
            if names.iter().filter(|n| **n == p.name).count() > 1 {
                errs.push(common.error(NAME, format!("two pools are named `{}`", p.name)));
            }
        }
        for r in self.rules.iter().map(|r| &r.pool).chain(std::iter::once(&self.default_pool)) {
            if !names.contains(&r.as_str()) {
                errs.push(common.error(NAME, format!("no pool is named `{r}` (pools: {})", names.join(", "))));
            }
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(errs)
        }
    }

    fn build(&self, common: &NfCommon) -> Result<Box<dyn Actor>, String> {
        let pools = self
            .pools
            .iter()
            .map(|p| {
                let backends = parse_backends(&p.backends, "backends").map_err(|e| common.error(NAME, e))?;
                Ok(Pool { name: p.name.clone(), ring: Ring::new(&backends), backends, balance: p.balance, key: p.key.clone(), next: 0 })
            })
            .collect::<Result<Vec<_>, String>>()?;
        let index = |n: &str| pools.iter().position(|p| p.name == n).ok_or_else(|| common.error(NAME, format!("no pool `{n}`")));
        let rules = self
            .rules
            .iter()
            .map(|r| Ok((r.host.as_ref().map(|h| h.to_ascii_lowercase()), r.path_prefix.clone(), index(&r.pool)?)))
            .collect::<Result<Vec<_>, String>>()?;
        let default_pool = index(&self.default_pool)?;
        let contract = common.flow_dest_contract(NAME);
        Ok(Box::new(HttpLb {
            contract,
            pools,
            rules,
            default_pool,
            max_header: self.max_header_bytes,
            down: Duration::from_millis(self.down_ms),
            decisions: Decisions::default(),
            by_rule: vec![0; self.rules.len() + 1],
        }))
    }
}

struct Pool {
    name: String,
    backends: Vec<SocketAddrV4>,
    ring: Ring,
    balance: Balance,
    key: Option<String>,
    next: usize,
}

impl Pool {
    fn rotated(&mut self) -> Vec<SocketAddrV4> {
        let n = self.backends.len();
        let start = self.next % n;
        self.next = self.next.wrapping_add(1);
        (0..n).map(|i| self.backends[(start + i) % n]).collect()
    }

    fn order(&mut self, req: &Request<'_>) -> Vec<SocketAddrV4> {
        match self.balance {
            Balance::RoundRobin => self.rotated(),
            Balance::LeastConnections => {
                let mut v = self.rotated();
                let board = actors::splice::Board::global();
                v.sort_by_key(|b| board.get(*b).active);
                v
            }
            Balance::HashHeader | Balance::HashCookie => {
                let key = self.key.as_deref().unwrap_or("");
                let value = if self.balance == Balance::HashHeader { req.header(key) } else { req.cookie(key) };
                match value {
                    Some(v) => self.ring.order(v.as_bytes()),
                    None => self.rotated(),
                }
            }
        }
    }
}

/// The request line and headers, as far as they came.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Request<'a> {
    /// The path of the request line.
    pub path: &'a str,
    /// Headers (name, value), trimmed.
    pub headers: Vec<(&'a str, &'a str)>,
    /// True when the empty line ending the headers came.
    pub complete: bool,
}

impl<'a> Request<'a> {
    /// Parses what came of a request (an incomplete last line is left out).
    pub fn parse(bytes: &'a [u8]) -> Request<'a> {
        let end = bytes.windows(4).position(|w| w == b"\r\n\r\n");
        let head = &bytes[..end.unwrap_or(bytes.len())];
        let text = match std::str::from_utf8(head) {
            Ok(t) => t,
            Err(e) => std::str::from_utf8(&head[..e.valid_up_to()]).unwrap_or(""),
        };
        let mut lines = text.split("\r\n");
        let path = lines.next().and_then(|l| l.split(' ').nth(1)).unwrap_or("");
        let headers = lines.filter_map(|l| l.split_once(':')).map(|(n, v)| (n.trim(), v.trim())).collect();
        Request { path, headers, complete: end.is_some() }
    }

    /// A header's value (name case-insensitive).
    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| *v)
    }

    /// The Host header, lowercase, without port (an IPv6 literal without its brackets);
    /// `None` without one or when it is empty.
    pub fn host(&self) -> Option<String> {
        let h = self.header("host")?;
        let host = match h.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or(""),
            None => h.split(':').next().unwrap_or(""),
        };
        (!host.is_empty()).then(|| host.to_ascii_lowercase())
    }

    /// A cookie's value.
    pub fn cookie(&self, name: &str) -> Option<&'a str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("cookie"))
            .flat_map(|(_, v)| v.split(';'))
            .filter_map(|c| c.trim().split_once('='))
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v)
    }
}

/// The HTTP_LB NF (see the module docs).
pub struct HttpLb {
    contract: Contract,
    pools: Vec<Pool>,
    rules: Vec<(Option<String>, Option<String>, usize)>,
    default_pool: usize,
    max_header: u64,
    down: Duration,
    decisions: Decisions,
    by_rule: Vec<u64>,
}

impl HttpLb {
    /// The pool a request goes to, and the rule (its index; `rules.len()`: the default).
    fn route(&self, req: &Request<'_>) -> (usize, usize) {
        let host = req.host();
        for (i, (h, p, pool)) in self.rules.iter().enumerate() {
            let host_ok = h.as_ref().is_none_or(|h| host.as_deref() == Some(h.as_str()));
            let path_ok = p.as_ref().is_none_or(|p| req.path.starts_with(p.as_str()));
            if host_ok && path_ok {
                return (*pool, i);
            }
        }
        (self.default_pool, self.rules.len())
    }
}

impl Actor for HttpLb {
    fn contract(&self) -> &Contract {
        &self.contract
    }

    fn handle(&mut self, ev: &mut EventDesc, cx: &mut Context<'_>) -> Verdict {
        let Some((flow, bytes)) = self.decisions.request(ev, cx) else { return Verdict::Continue };
        let req = Request::parse(&bytes);
        if !req.complete && (bytes.len() as u64) < self.max_header {
            self.decisions.waited += 1;
            return Verdict::Continue;
        }
        let (pool, rule) = self.route(&req);
        self.by_rule[rule] += 1;
        let order = self.pools[pool].order(&req);
        let order = healthy_first(order, self.down, Instant::now());
        self.decisions.decide(ev, flow, &order, cx);
        Verdict::Continue
    }

    fn counters(&self) -> Vec<(String, u64)> {
        let mut v = self.decisions.counters();
        for (i, n) in self.by_rule.iter().enumerate() {
            let name = if i < self.rules.len() { format!("rule {}", i + 1) } else { "default rule".into() };
            v.push((format!("{name} ({} flows)", self.pools[if i < self.rules.len() { self.rules[i].2 } else { self.default_pool }].name), *n));
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_host_path_headers_and_cookies() {
        let r = Request::parse(b"GET /static/a.css HTTP/1.1\r\nHost: Web.Example:8080\r\nCookie: a=1; sid=xyz\r\nX-User: bob\r\n\r\n");
        assert!(r.complete);
        assert_eq!(r.path, "/static/a.css");
        assert_eq!(r.host().as_deref(), Some("web.example"));
        assert_eq!(r.cookie("sid"), Some("xyz"));
        assert_eq!(r.header("x-user"), Some("bob"));
        let partial = Request::parse(b"GET / HTTP/1.1\r\nHost: a");
        assert!(!partial.complete);
        assert_eq!(Request::parse(b"\xff\xfe").path, "");
    }

    fn pool(balance: Balance, key: Option<&str>) -> Pool {
        let backends: Vec<SocketAddrV4> = (1..=3).map(|i| format!("10.9.0.{i}:80").parse().unwrap()).collect();
        Pool { name: "p".into(), ring: Ring::new(&backends), backends, balance, key: key.map(Into::into), next: 0 }
    }

    #[test]
    fn balances_pick_as_documented() {
        let req = Request::parse(b"GET / HTTP/1.1\r\nX-User: alice\r\nCookie: sid=42\r\n\r\n");
        let mut rr = pool(Balance::RoundRobin, None);
        let firsts: Vec<SocketAddrV4> = (0..6).map(|_| rr.order(&req)[0]).collect();
        assert_eq!(firsts[..3], rr.backends[..]);
        assert_eq!(firsts[3..], rr.backends[..]);
        let mut h = pool(Balance::HashHeader, Some("x-user"));
        let a = h.order(&req);
        assert_eq!(a, h.order(&req), "stable per key");
        assert_eq!(a[0], h.ring.pick(b"alice").unwrap());
        let mut ck = pool(Balance::HashCookie, Some("sid"));
        assert_eq!(ck.order(&req)[0], ck.ring.pick(b"42").unwrap());
        let mut lc = pool(Balance::LeastConnections, None);
        let board = actors::splice::Board::global();
        board.opened(lc.backends[0]);
        board.opened(lc.backends[1]);
        assert_eq!(lc.order(&req)[0], lc.backends[2], "the one without open connections");
        board.closed(lc.backends[0]);
        board.closed(lc.backends[1]);
    }

}
