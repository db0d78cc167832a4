//! Word_Rewriter: replaces words in TCP bytestreams as they cross the middlebox, without
//! terminating the connections — the example NF of bytestream modification
//! (docs/modification.md).
//!
//! ```toml
//! [stack.tcp.modify]          # the TCP monitor forwards connections itself, rewritten
//!
//! [[nf]]
//! name = "rewrite"
//! kind = "word_rewriter"
//! replace = { "foo" = "barbaz" }
//! ```
//!
//! It reads each direction's new bytes at `DATA_RDY` and asks the monitor, through
//! [`Context::modify_stream`], to replace every match (leftmost-longest, non-overlapping,
//! as `sed 's/foo/barbaz/g'` does for one word). **Matches split across segments**: the NF
//! works on the reassembled stream and keeps the last `longest word − 1` bytes it cannot
//! judge yet; it tells the monitor to hold them back (`HoldFrom`) until the next bytes
//! arrive, so a word straddling two segments is still replaced. The monitor forwards held
//! bytes unchanged after its `hold_timeout_ms` (a word completed later is then counted in
//! `changes_refused`). A gap (bytes never seen) ends any partial match. The `to_server` key
//! (common to every NF) limits it to one direction.
//!
//! **Only some hosts** (`only_hosts = ["example.test"]`): the NF reads the first HTTP
//! request of each connection (client → server, up to 8 KiB of headers) and rewrites only
//! connections whose `Host` header (port stripped, case-insensitive) is in the list. With
//! `[stack.tcp.modify] upgrade = "on_request"` it upgrades exactly those from the cheap path
//! ([`Context::upgrade_flow`]); it rewrites a direction from where the monitor put it on the
//! modification path ([`Context::modifiable_from`]) — the request that named the host, and
//! whatever left before the upgrade was taken, pass unchanged (docs/modification.md
//! "Per-flow upgrade"). Other connections are never touched.

use std::collections::BTreeMap;

use aho_corasick::{AhoCorasick, MatchKind};
use rustc_hash::FxHashMap;
use serde::Deserialize;

use actors::desc::{EventDesc, FlowRef};
use actors::event::builtin;
use actors::modify::StreamChange;
use actors::{Actor, Chunk, Context, Contract, Subscription, Verdict};

use crate::common::NfCommon;
use crate::http_lb::Request;
use crate::{Kind, NfOptions};

/// The kind's name in the app file.
pub const NAME: &str = "word_rewriter";

/// The kind, for [`KINDS`](crate::KINDS).
pub const KIND: Kind<WordRewriterConfig> = Kind::new();

/// Longest word accepted (the bytes held back per direction are at most one less).
pub const MAX_WORD: usize = 1024;

/// Word_Rewriter options.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WordRewriterConfig {
    /// Word → replacement (an empty replacement removes the word).
    pub replace: BTreeMap<String, String>,
    /// Rewrite only connections whose first HTTP request names one of these hosts (and
    /// upgrade them from the cheap path); empty (the default): every connection.
    #[serde(default)]
    pub only_hosts: Vec<String>,
}

impl NfOptions for WordRewriterConfig {
    const NAME: &'static str = NAME;

    fn check(&mut self, common: &NfCommon, _registry: &mut actors::EventRegistry) -> Result<(), Vec<String>> {
        let mut errs = Vec::new();
        if self.replace.is_empty() {
            errs.push(common.error(NAME, "`replace` names no word"));
        }
        for h in &self.only_hosts {
            if h.is_empty() || h.bytes().any(|b| b.is_ascii_whitespace() || b == b':') {
                errs.push(common.error(NAME, format!("`only_hosts`: {h:?} is not a host name")));
            }
        }
        for w in self.replace.keys() {
            if w.is_empty() || w.len() > MAX_WORD {
                errs.push(common.error(NAME, format!("`replace`: word {w:?} must have 1 to {MAX_WORD} bytes")));
            }
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(errs)
        }
    }

    fn build(&self, common: &NfCommon) -> Result<Box<dyn Actor>, String> {
        Ok(Box::new(WordRewriter::new(common, self)?))
    }
}

/// One direction's scan state: bytes not judged yet, from stream offset `base`.
#[derive(Default)]
struct Carry {
    base: u64,
    bytes: Vec<u8>,
}

/// Largest request head read to find the `Host` header.
pub const MAX_REQUEST_HEAD: usize = 8192;

/// A connection's standing under `only_hosts`.
enum HostState {
    /// Reading the first request's head (bytes so far).
    Reading(Vec<u8>),
    /// Its host is listed: rewritten (upgraded).
    Wanted,
    /// Not listed (or no request head found): never touched.
    Ignored,
}

/// The Word_Rewriter NF (see the module docs).
pub struct WordRewriter {
    contract: Contract,
    ac: AhoCorasick,
    with: Vec<Vec<u8>>,
    longest: usize,
    /// By flow and direction (flow ids come from the flow table: an unkeyed hash is safe).
    carry: FxHashMap<(FlowRef, bool), Carry>,
    matches: u64,
    /// Matches that began in an earlier `DATA_RDY` than the one that completed them.
    split: u64,
    refused: u64,
    read_errors: u64,
    /// `only_hosts`, lower-case (empty: every connection).
    only_hosts: Vec<String>,
    hosts: FxHashMap<FlowRef, HostState>,
    flows_wanted: u64,
    flows_ignored: u64,
    upgrades_refused: u64,
}

impl WordRewriter {
    /// A rewriter with `cfg`'s words.
    pub fn new(common: &NfCommon, cfg: &WordRewriterConfig) -> Result<WordRewriter, String> {
        let words: Vec<&String> = cfg.replace.keys().collect();
        let ac = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(&words)
            .map_err(|e| common.error(NAME, e))?;
        let mut subscriptions = common.main_port("data", &[builtin::DATA_RDY]);
        subscriptions.push(Subscription::new("end", builtin::FLOW_TCP_TERMINATE));
        let mut contract = common.contract(NAME, subscriptions, vec![]);
        contract.modifies.packets = true;
        Ok(WordRewriter {
            contract,
            ac,
            with: cfg.replace.values().map(|v| v.as_bytes().to_vec()).collect(),
            longest: words.iter().map(|w| w.len()).max().unwrap_or(1),
            carry: FxHashMap::default(),
            matches: 0,
            split: 0,
            refused: 0,
            read_errors: 0,
            only_hosts: cfg.only_hosts.iter().map(|h| h.to_ascii_lowercase()).collect(),
            hosts: FxHashMap::default(),
            flows_wanted: 0,
            flows_ignored: 0,
            upgrades_refused: 0,
        })
    }

    /// Under `only_hosts`: where this event's bytes may be rewritten from, or `None` when the
    /// connection is not one to rewrite (or not on the modification path yet).
    fn host_gate(&mut self, ev: &EventDesc, cx: &Context<'_>, flow: FlowRef) -> Option<u64> {
        let state = self.hosts.entry(flow).or_insert_with(|| HostState::Reading(Vec::new()));
        if let (HostState::Reading(head), true) = (&mut *state, ev.to_server()) {
            let mut gap = false;
            let res = cx.data_ready(ev, &mut |ch| match ch {
                Chunk::Data(d) => {
                    let room = MAX_REQUEST_HEAD.saturating_sub(head.len());
                    head.extend_from_slice(&d[..d.len().min(room)]);
                }
                Chunk::Gap(_) => gap = true,
            });
            let end = head.windows(4).position(|w| w == b"\r\n\r\n");
            let decided = match end {
                Some(e) => Some(Request::parse(&head[..e + 4]).host().is_some_and(|h| self.only_hosts.contains(&h))),
                None if gap || res.is_err() || head.len() >= MAX_REQUEST_HEAD => Some(false),
                None => None,
            };
            match decided {
                Some(true) => match cx.upgrade_flow(ev) {
                    Ok(()) => {
                        self.flows_wanted += 1;
                        *state = HostState::Wanted;
                    }
                    Err(_) => {
                        self.upgrades_refused += 1;
                        *state = HostState::Ignored;
                    }
                },
                Some(false) => {
                    self.flows_ignored += 1;
                    *state = HostState::Ignored;
                }
                None => {}
            }
        }
        match state {
            HostState::Wanted => cx.modifiable_from(ev),
            _ => None,
        }
    }

    /// Scans `c.bytes` (from `c.base`): every match that no later byte can change is asked
    /// for; the rest stays in `c`. Returns the stream offset from which bytes are held.
    fn scan(&mut self, ev: &EventDesc, cx: &Context<'_>, c: &mut Carry) -> u64 {
        let safe = c.bytes.len().saturating_sub(self.longest - 1);
        let mut keep_from = safe;
        for m in self.ac.find_iter(&c.bytes) {
            if m.start() >= safe {
                keep_from = m.start();
                break;
            }
            let change = StreamChange::Replace {
                at: c.base + m.start() as u64,
                len: m.len() as u64,
                with: self.with[m.pattern().as_usize()].clone(),
            };
            if c.base + (m.start() as u64) < ev.aux {
                self.split += 1;
            }
            match cx.modify_stream(ev, change) {
                Ok(()) => self.matches += 1,
                Err(_) => self.refused += 1,
            }
            keep_from = keep_from.max(m.end());
        }
        c.bytes.drain(..keep_from);
        c.base += keep_from as u64;
        c.base
    }
}

impl Actor for WordRewriter {
    fn contract(&self) -> &Contract {
        &self.contract
    }

    fn handle(&mut self, ev: &mut EventDesc, cx: &mut Context<'_>) -> Verdict {
        let Some(flow) = ev.flow else { return Verdict::Continue };
        if ev.event_type == builtin::FLOW_TCP_TERMINATE {
            self.carry.remove(&(flow, true));
            self.carry.remove(&(flow, false));
            self.hosts.remove(&flow);
            return Verdict::Continue;
        }
        if ev.event_type != builtin::DATA_RDY {
            return Verdict::Continue;
        }
        let frontier = ev.snap.frontier[usize::from(!ev.to_server())];
        // Where this event's bytes may be rewritten from (before: they left unchanged).
        let start = if self.only_hosts.is_empty() {
            ev.aux
        } else {
            match self.host_gate(ev, cx, flow) {
                Some(from) if from < frontier => from.max(ev.aux),
                _ => return Verdict::Continue,
            }
        };
        let key = (flow, ev.to_server());
        let mut c = self.carry.remove(&key).unwrap_or(Carry { base: start, bytes: Vec::new() });
        if c.base + c.bytes.len() as u64 != start {
            // Bytes were skipped (a read error earlier, or an upgrade): start again here.
            c = Carry { base: start, bytes: Vec::new() };
        }
        // Runs of bytes, split where a gap (bytes never seen) lies: no match spans one.
        let mut runs: Vec<(u64, Vec<u8>)> = vec![(start, Vec::new())];
        let mut at = start;
        let res = cx.read_stream(flow, ev.to_server(), start, frontier, &mut |ch| {
            match ch {
                Chunk::Data(d) => runs.last_mut().expect("one run at least").1.extend_from_slice(d),
                Chunk::Gap(n) => runs.push((at + n, Vec::new())),
            }
            at += ch.len();
        });
        if res.is_err() {
            self.read_errors += 1;
            return Verdict::Continue;
        }
        for (i, (from, bytes)) in runs.into_iter().enumerate() {
            if i > 0 {
                self.scan(ev, cx, &mut c);
                c = Carry { base: from, bytes: Vec::new() };
            }
            c.bytes.extend_from_slice(&bytes);
        }
        let hold = self.scan(ev, cx, &mut c);
        if cx.modify_stream(ev, StreamChange::HoldFrom { from: hold, seen: ev.snap.frontier[usize::from(!ev.to_server())] }).is_err() {
            self.refused += 1;
        }
        self.carry.insert(key, c);
        Verdict::Continue
    }

    fn counters(&self) -> Vec<(String, u64)> {
        vec![
            ("words_replaced".into(), self.matches),
            ("words_split_across_events".into(), self.split),
            ("changes_refused".into(), self.refused),
            ("stream_read_errors".into(), self.read_errors),
            ("flows_host_matched".into(), self.flows_wanted),
            ("flows_host_ignored".into(), self.flows_ignored),
            ("upgrades_refused".into(), self.upgrades_refused),
        ]
    }
}

#[cfg(test)]
mod tests {
    use crate::http_lb::Request;

    fn host_of(head: &[u8]) -> Option<String> {
        Request::parse(head).host()
    }

    #[test]
    fn the_host_header_is_found_port_stripped_case_folded() {
        let h = b"GET / HTTP/1.1\r\nUser-Agent: x\r\nhOsT:  Example.TEST:8088 \r\n\r\n";
        assert_eq!(host_of(h).as_deref(), Some("example.test"));
        assert_eq!(host_of(b"GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n").as_deref(), Some("::1"));
        assert_eq!(host_of(b"GET / HTTP/1.0\r\nAccept: */*\r\n\r\n"), None);
        // A request line that says "Host:" is not a header.
        assert_eq!(host_of(b"Host: a\r\nX: y\r\n\r\n"), None);
    }
}
