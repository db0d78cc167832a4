//! # cache — an HTTP object cache on the split proxy's End Point API
//!
//! [`CacheNf`] is a [`stacks::proxy::ProxyNf`]: it reads requests on the client leg and
//! answers a `GET` for an object it holds itself ([`Writer::reply`]) without sending it on
//! to the origin; otherwise (a miss) the request goes on through the split proxy, and the
//! origin's answer is stored when it is cacheable:
//!
//! * only a `200` with a `Content-Length` (no chunked bodies), at most
//!   [`CacheConfig::max_object`] bytes, to a `GET` without `Cache-Control: no-store`, and
//!   itself without `no-store` or `private`;
//! * total size bounded by [`CacheConfig::max_bytes`]: least recently used objects go first;
//! * a hit carries an `Age` header (seconds since it was stored).
//!
//! Hostile input: a request or response head is at most [`CacheConfig::max_head`] bytes; a
//! longer one, or one that does not parse, makes the connection's cache state give up
//! (the bytes pass through unchanged from then on) and is counted in [`CacheStats`]. Keys are
//! `Host` + path. Requests are answered in order: while a miss is outstanding on a connection,
//! later requests on it go to the origin too (no reordering of pipelined answers).
//!
//! The parser is a small hand one (request line, status line and the three headers above)
//! rather than a crate: the cache needs only those, with its own bounds on every length.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Instant;

use actors::proxy_nf::{Leg, ProxyNf, Writer};

mod kind;
pub use kind::{CacheOptions, KIND};

/// The kind's name.
pub const NAME: &str = "cache";

/// Limits of the cache.
#[derive(Clone, Debug)]
pub struct CacheConfig {
    /// Total bytes of stored bodies and heads.
    pub max_bytes: usize,
    /// Largest object stored.
    pub max_object: usize,
    /// Largest request or response head (line plus headers).
    pub max_head: usize,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self { max_bytes: 64 << 20, max_object: 8 << 20, max_head: 8 * 1024 }
    }
}

/// Counters of the cache.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub stored: u64,
    pub evicted: u64,
    /// Answers not stored (not 200, no Content-Length, no-store, too big, not a GET).
    pub uncacheable: u64,
    /// Heads longer than `max_head` or that did not parse (connection left alone after).
    pub bad_input: u64,
}

struct Entry {
    head: Vec<u8>,
    body: Vec<u8>,
    stored: Instant,
    tick: u64,
}

/// The object store: size-bounded, LRU.
pub struct Store {
    cfg: CacheConfig,
    map: HashMap<String, Entry>,
    lru: BTreeMap<u64, String>,
    bytes: usize,
    tick: u64,
}

impl Store {
    pub fn new(cfg: CacheConfig) -> Self {
        Self { cfg, map: HashMap::new(), lru: BTreeMap::new(), bytes: 0, tick: 0 }
    }

    /// Bytes held now.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Objects held now.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The full answer for `key` with its `Age`, marking it recently used.
    pub fn get(&mut self, key: &str, now: Instant) -> Option<Vec<u8>> {
        self.answer(key, now, "")
    }

    /// As [`Store::get`], with `extra` header lines (each ending in CRLF) after `Age`.
    fn answer(&mut self, key: &str, now: Instant, extra: &str) -> Option<Vec<u8>> {
        self.tick += 1;
        let e = self.map.get_mut(key)?;
        self.lru.remove(&e.tick);
        e.tick = self.tick;
        self.lru.insert(self.tick, key.to_string());
        let age = now.saturating_duration_since(e.stored).as_secs();
        let mut out = Vec::with_capacity(e.head.len() + e.body.len() + 16);
        out.extend_from_slice(&e.head);
        out.extend_from_slice(format!("Age: {age}\r\n{extra}\r\n").as_bytes());
        out.extend_from_slice(&e.body);
        Some(out)
    }

    /// Stores an answer (`head` = status line and headers, each ending in CRLF, without the
    /// blank line); evicts least recently used objects to make room. Returns evictions.
    pub fn put(&mut self, key: String, head: Vec<u8>, body: Vec<u8>, now: Instant) -> Option<u64> {
        let size = head.len() + body.len() + key.len();
        if size > self.cfg.max_object || size > self.cfg.max_bytes {
            return None;
        }
        if let Some(old) = self.map.remove(&key) {
            self.lru.remove(&old.tick);
            self.bytes -= old.head.len() + old.body.len() + key.len();
        }
        let mut evicted = 0;
        while self.bytes + size > self.cfg.max_bytes {
            let Some((_, k)) = self.lru.pop_first() else { break };
            if let Some(e) = self.map.remove(&k) {
                self.bytes -= e.head.len() + e.body.len() + k.len();
                evicted += 1;
            }
        }
        self.tick += 1;
        self.lru.insert(self.tick, key.clone());
        self.bytes += size;
        self.map.insert(key, Entry { head, body, stored: now, tick: self.tick });
        Some(evicted)
    }
}

/// A parsed head: first line and the headers the cache reads.
#[derive(Debug, Default, PartialEq, Eq)]
struct Head {
    first: Vec<String>,
    host: Option<String>,
    content_length: Option<usize>,
    no_store: bool,
    chunked: bool,
    /// The client expects the connection closed after the answer (HTTP/1.0 without
    /// keep-alive, or `Connection: close`).
    close: bool,
    /// Header lines to keep for a stored answer (all but `Age`, `Connection`, `Keep-Alive`).
    kept: Vec<u8>,
    len: usize,
}

/// Where a head ends (`\r\n\r\n`), if within `max`; Err when longer than `max` without one.
fn head_end(buf: &[u8], max: usize) -> Result<Option<usize>, ()> {
    let look = &buf[..buf.len().min(max)];
    match look.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(i) => Ok(Some(i + 4)),
        None if buf.len() >= max => Err(()),
        None => Ok(None),
    }
}

fn parse_head(raw: &[u8]) -> Option<Head> {
    let text = std::str::from_utf8(raw).ok()?;
    let mut lines = text.split("\r\n");
    let first: Vec<String> = lines.next()?.split(' ').map(str::to_string).collect();
    if first.len() < 2 {
        return None;
    }
    let mut h = Head { first, len: raw.len(), ..Head::default() };
    let mut keep_alive = None;
    for line in lines.filter(|l| !l.is_empty()) {
        let (name, value) = line.split_once(':')?;
        let value = value.trim();
        let lname = name.to_ascii_lowercase();
        match lname.as_str() {
            "host" => h.host = Some(value.to_ascii_lowercase()),
            "content-length" => {
                let n: usize = value.parse().ok()?;
                if h.content_length.is_some_and(|m| m != n) {
                    return None; // conflicting lengths: request smuggling shape
                }
                h.content_length = Some(n);
            }
            "cache-control" => {
                let v = value.to_ascii_lowercase();
                if v.split(',').any(|d| matches!(d.trim(), "no-store" | "private")) {
                    h.no_store = true;
                }
            }
            "transfer-encoding" => h.chunked = true,
            "connection" => keep_alive = Some(!value.eq_ignore_ascii_case("close")),
            _ => {}
        }
        if !matches!(lname.as_str(), "age" | "connection" | "keep-alive") {
            h.kept.extend_from_slice(line.as_bytes());
            h.kept.extend_from_slice(b"\r\n");
        }
    }
    let http10 = h.first.get(2).is_some_and(|v| v == "HTTP/1.0");
    h.close = !keep_alive.unwrap_or(!http10);
    Some(h)
}

/// What an outstanding miss will do with its answer.
enum Pending {
    Store(String),
    Skip,
}

#[derive(Default)]
enum Resp {
    /// Waiting for a response head.
    #[default]
    Head,
    /// In a body: bytes left, and what is collected (None when not stored).
    Body { left: usize, key: Option<String>, head: Vec<u8>, body: Vec<u8> },
}

#[derive(Default)]
struct ConnState {
    req: Vec<u8>,
    resp_buf: Vec<u8>,
    pending: VecDeque<Pending>,
    resp: Resp,
    /// Gave up on this connection (bad input): pass everything.
    off: bool,
}

/// The cache NF.
pub struct CacheNf {
    cfg: CacheConfig,
    store: Store,
    conns: HashMap<usize, ConnState>,
    stats: CacheStats,
}

impl CacheNf {
    pub fn new(cfg: CacheConfig) -> Self {
        Self { store: Store::new(cfg.clone()), cfg, conns: HashMap::new(), stats: CacheStats::default() }
    }

    pub fn stats(&self) -> &CacheStats {
        &self.stats
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Forgets a closed connection's parse state.
    pub fn closed(&mut self, conn: usize) {
        self.conns.remove(&conn);
    }

    fn on_request(&mut self, conn: usize, data: &[u8], out: &mut Writer) {
        let now = Instant::now();
        let st = self.conns.entry(conn).or_default();
        if st.off {
            out.write(data);
            return;
        }
        st.req.extend_from_slice(data);
        loop {
            let end = match head_end(&st.req, self.cfg.max_head) {
                Ok(Some(e)) => e,
                Ok(None) => return,
                Err(()) => {
                    self.stats.bad_input += 1;
                    st.off = true;
                    out.write(&std::mem::take(&mut st.req));
                    return;
                }
            };
            let Some(h) = parse_head(&st.req[..end]) else {
                self.stats.bad_input += 1;
                st.off = true;
                out.write(&std::mem::take(&mut st.req));
                return;
            };
            if h.content_length.unwrap_or(0) > 0 || h.chunked {
                // A request with a body: not ours to follow; pass the rest through.
                st.off = true;
                out.write(&std::mem::take(&mut st.req));
                return;
            }
            let req: Vec<u8> = st.req.drain(..end).collect();
            let is_get = h.first[0] == "GET";
            let key = h.host.as_ref().map(|host| format!("{host}{}", h.first[1]));
            if is_get && !h.no_store && st.pending.is_empty() {
                if let Some(k) = &key {
                    // Say how the connection goes on: the stored head may be HTTP/1.0 (not
                    // persistent by default), and an HTTP/1.0 keep-alive client (`ab -k`)
                    // otherwise waits for a close that never comes.
                    let conn_header = if h.close { "Connection: close\r\n" } else { "Connection: keep-alive\r\n" };
                    if let Some(answer) = self.store.answer(k, now, conn_header) {
                        self.stats.hits += 1;
                        out.reply(&answer);
                        if h.close {
                            out.close();
                            st.off = true;
                            return;
                        }
                        continue;
                    }
                }
            }
            self.stats.misses += 1;
            st.pending.push_back(match key {
                Some(k) if is_get && !h.no_store => Pending::Store(k),
                _ => Pending::Skip,
            });
            out.write(&req);
        }
    }

    fn on_response(&mut self, conn: usize, data: &[u8], out: &mut Writer) {
        out.write(data);
        self.follow_response(conn, data.to_vec(), Instant::now());
    }

    /// Follows the origin's answers (heads and `Content-Length` bodies) and stores the
    /// cacheable ones. Each turn consumes a head or the end of a body, or returns.
    fn follow_response(&mut self, conn: usize, mut data: Vec<u8>, now: Instant) {
        let max_head = self.cfg.max_head;
        let max_object = self.cfg.max_object;
        loop {
            let st = self.conns.entry(conn).or_default();
            if st.off {
                return;
            }
            match &mut st.resp {
                Resp::Head => {
                    st.resp_buf.append(&mut data);
                    let end = match head_end(&st.resp_buf, max_head) {
                        Ok(Some(e)) => e,
                        Ok(None) => return,
                        Err(()) => {
                            self.stats.bad_input += 1;
                            st.off = true;
                            return;
                        }
                    };
                    let h = parse_head(&st.resp_buf[..end]);
                    let pend = st.pending.pop_front();
                    let Some(h) = h.filter(|h| !h.chunked && h.content_length.is_some()) else {
                        // Unknown body length: further answers cannot be followed.
                        self.stats.uncacheable += 1;
                        st.off = true;
                        return;
                    };
                    let len = h.content_length.unwrap_or(0);
                    let key = match pend {
                        Some(Pending::Store(k)) if h.first[1] == "200" && !h.no_store && len + h.len <= max_object => {
                            Some(k)
                        }
                        _ => {
                            self.stats.uncacheable += 1;
                            None
                        }
                    };
                    let mut head = Vec::new();
                    if key.is_some() {
                        head.extend_from_slice(h.first.join(" ").as_bytes());
                        head.extend_from_slice(b"\r\n");
                        head.extend_from_slice(&h.kept);
                    }
                    data = st.resp_buf.split_off(end);
                    st.resp_buf.clear();
                    st.resp = Resp::Body { left: len, key, head, body: Vec::new() };
                }
                Resp::Body { left, key, body, .. } => {
                    let take = (*left).min(data.len());
                    if key.is_some() {
                        body.extend_from_slice(&data[..take]);
                    }
                    *left -= take;
                    data.drain(..take);
                    if *left > 0 {
                        return;
                    }
                    if let Resp::Body { key: Some(k), head, body, .. } = std::mem::take(&mut st.resp) {
                        if let Some(ev) = self.store.put(k, head, body, now) {
                            self.stats.stored += 1;
                            self.stats.evicted += ev;
                        }
                    }
                    if data.is_empty() {
                        return;
                    }
                }
            }
        }
    }
}

impl ProxyNf for CacheNf {
    fn on_data(&mut self, conn: usize, from: Leg, data: &[u8], out: &mut Writer) {
        match from {
            Leg::Client => self.on_request(conn, data, out),
            Leg::Server => self.on_response(conn, data, out),
        }
    }

    fn on_close(&mut self, conn: usize) {
        self.closed(conn);
    }

    fn counters(&self) -> Vec<(String, u64)> {
        let (s, st) = (self.stats(), self.store());
        [
            ("hits", s.hits),
            ("misses", s.misses),
            ("stored", s.stored),
            ("evicted", s.evicted),
            ("uncacheable", s.uncacheable),
            ("bad_input", s.bad_input),
            ("objects", st.len() as u64),
            ("bytes", st.bytes() as u64),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}

#[cfg(test)]
mod tests;
