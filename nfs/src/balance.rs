//! What the two load balancers ([`http_lb`](crate::http_lb),
//! [`memcached_lb`](crate::memcached_lb)) share: backend lists, a ketama-like consistent
//! hash ring, health from the splicer's [`Board`], and the per-flow bookkeeping of a policy
//! NF (read the held request on each `FLOW_REQ`, answer one `FLOW_DEST` per flow; [`dest_event`]
//! also serves [`proxy_select`](crate::proxy_select)).

use std::collections::HashMap;
use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

use actors::desc::{EventDesc, FlowRef};
use actors::event::builtin;
use actors::splice::{Board, FlowDest, FlowReq};
use actors::{Chunk, Context};
use sha2::{Digest, Sha256};

/// Points per backend on the ring (ketama uses 160 per server, 40 MD5s × 4).
pub const POINTS: u32 = 160;

fn h32(data: &[u8]) -> u32 {
    let d = Sha256::digest(data);
    u32::from_be_bytes([d[0], d[1], d[2], d[3]])
}

/// A consistent hash ring over backends (ketama-like: [`POINTS`] points per backend, the
/// first 4 bytes of SHA-256 of `"ADDRESS:PORT-i"`; a key goes to the first point at or after
/// the first 4 bytes of its SHA-256, wrapping). Removing a backend moves only its keys.
#[derive(Clone, Debug)]
pub struct Ring {
    points: Vec<(u32, usize)>,
    backends: Vec<SocketAddrV4>,
}

impl Ring {
    /// The ring of `backends`.
    pub fn new(backends: &[SocketAddrV4]) -> Ring {
        let mut points: Vec<(u32, usize)> = backends
            .iter()
            .enumerate()
            .flat_map(|(i, b)| (0..POINTS).map(move |p| (h32(format!("{b}-{p}").as_bytes()), i)))
            .collect();
        points.sort_unstable();
        Ring { points, backends: backends.to_vec() }
    }

    /// Every backend, in ring order from `key`'s point (each once): the first is the key's.
    pub fn order(&self, key: &[u8]) -> Vec<SocketAddrV4> {
        let mut out = Vec::new();
        if self.points.is_empty() {
            return out;
        }
        let h = h32(key);
        let start = self.points.partition_point(|(p, _)| *p < h);
        for k in 0..self.points.len() {
            let (_, i) = self.points[(start + k) % self.points.len()];
            let b = self.backends[i];
            if !out.contains(&b) {
                out.push(b);
                if out.len() == self.backends.len() {
                    break;
                }
            }
        }
        out
    }

    /// The backend of `key`.
    pub fn pick(&self, key: &[u8]) -> Option<SocketAddrV4> {
        self.order(key).first().copied()
    }
}

/// Parses `"ADDRESS:PORT"` backends, naming the bad ones.
pub fn parse_backends(list: &[String], key: &str) -> Result<Vec<SocketAddrV4>, String> {
    if list.is_empty() {
        return Err(format!("key `{key}`: name at least one backend"));
    }
    list.iter().map(|s| s.parse().map_err(|_| format!("key `{key}`: `{s}` is not an IPv4 ADDRESS:PORT"))).collect()
}

/// Moves backends that failed within `down` (per the splicer's [`Board`]) to the end,
/// keeping the order otherwise: they are tried only when the others fail too.
pub fn healthy_first(order: Vec<SocketAddrV4>, down: Duration, now: Instant) -> Vec<SocketAddrV4> {
    let board = Board::global();
    let is_down =
        |b: &SocketAddrV4| board.get(*b).last_failure.is_some_and(|t| now.saturating_duration_since(t) < down);
    let (mut up, dn): (Vec<_>, Vec<_>) = order.into_iter().partition(|b| !is_down(b));
    up.extend(dn);
    up
}

/// Flows remembered as decided at most (older ones are forgotten first).
pub const DECIDED: usize = 65_536;

/// The `FLOW_DEST` answering the `FLOW_REQ` `ev` of `flow`, its payload still to be written.
pub fn dest_event(ev: &EventDesc, flow: FlowRef, cx: &Context<'_>) -> EventDesc {
    let mut d = EventDesc::new(builtin::FLOW_DEST, cx.me(), ev.seq, ev.ts_ns);
    d.flow = Some(flow);
    d.flow_start = ev.flow_start;
    d
}

/// A policy NF's per-flow bookkeeping: which flows got their `FLOW_DEST` (so the several
/// `FLOW_REQ`s of one flow in flight count once), and how many times each backend was
/// chosen.
#[derive(Debug, Default)]
pub struct Decisions {
    decided: HashMap<FlowRef, Instant>,
    /// Times each backend was chosen first.
    pub chosen: HashMap<SocketAddrV4, u64>,
    /// Flows reset: no backend.
    pub resets: u64,
    /// `FLOW_REQ`s whose bytes could not be read.
    pub read_errors: u64,
    /// `FLOW_REQ`s that waited for more bytes.
    pub waited: u64,
}

impl Decisions {
    /// The held request of a `FLOW_REQ` for a flow not yet decided.
    pub fn request(&mut self, ev: &EventDesc, cx: &Context<'_>) -> Option<(FlowRef, Vec<u8>)> {
        let flow = ev.flow?;
        if ev.event_type != builtin::FLOW_REQ || self.decided.contains_key(&flow) {
            return None;
        }
        let held = FlowReq::read(ev).held;
        let mut bytes = Vec::with_capacity(held as usize);
        let read = cx.read_stream(flow, true, 0, held, &mut |c| {
            if let Chunk::Data(d) = c {
                bytes.extend_from_slice(d);
            }
        });
        if read.is_err() {
            self.read_errors += 1;
            return None;
        }
        Some((flow, bytes))
    }

    /// Publishes the `FLOW_DEST` of `flow` (the first of `order` is the choice).
    pub fn decide(&mut self, ev: &EventDesc, flow: FlowRef, order: &[SocketAddrV4], cx: &mut Context<'_>) {
        let now = Instant::now();
        if self.decided.len() >= DECIDED {
            let cutoff = now.checked_sub(Duration::from_secs(60)).unwrap_or(now);
            self.decided.retain(|_, t| *t > cutoff);
            if self.decided.len() >= DECIDED {
                self.decided.clear();
            }
        }
        self.decided.insert(flow, now);
        let dest = FlowDest::connect(order);
        match order.first() {
            Some(b) => *self.chosen.entry(*b).or_default() += 1,
            None => self.resets += 1,
        }
        let mut d = dest_event(ev, flow, cx);
        dest.write(&mut d);
        cx.publish(d);
    }

    /// Counters for the summary: `backend ADDRESS:PORT` per backend, and the rest.
    pub fn counters(&self) -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = self.chosen.iter().map(|(b, n)| (format!("backend {b}"), *n)).collect();
        v.sort();
        v.push(("flows_decided".into(), self.chosen.values().sum()));
        v.push(("no_backend_resets".into(), self.resets));
        v.push(("read_errors".into(), self.read_errors));
        v.push(("waited_for_more_bytes".into(), self.waited));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_moves_only_the_removed_backends_keys() {
        let all: Vec<SocketAddrV4> = (1..=3).map(|i| format!("10.0.0.{i}:11211").parse().unwrap()).collect();
        let ring = Ring::new(&all);
        let fewer = Ring::new(&all[..2]);
        let mut per = HashMap::new();
        for k in 0..3000 {
            let key = format!("key{k}");
            let a = ring.pick(key.as_bytes()).unwrap();
            *per.entry(a).or_insert(0) += 1;
            if a != all[2] {
                assert_eq!(fewer.pick(key.as_bytes()), Some(a), "{key} moved");
            }
            assert_eq!(ring.order(key.as_bytes()).len(), 3);
        }
        for b in &all {
            assert!(per[b] > 600, "{per:?}");
        }
    }
}
