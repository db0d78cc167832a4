//! Stream_Hash: the SHA-256 and length of both bytestreams of every TCP connection, read
//! through the TCP monitor's `DATA_RDY` events — one JSON line per connection when it ends.
//!
//! ```toml
//! [stack.tcp]                # needs the TCP monitor
//!
//! [[nf]]
//! name = "hash"
//! kind = "stream_hash"
//! output = "streams.jsonl"
//! ```
//!
//! Each line: `{"flow_id", "client", "server", "bytes_toserver", "bytes_toclient",
//! "sha256_toserver", "sha256_toclient", "end"}` (`end` as in flow records). It is the
//! network-function twin of `mbox streams`: the same numbers, computed by an NF that runs
//! behind the stack on its own core, reading each event's bytes `[aux, frontier)` — which is
//! what makes it a test of snapshots and the frontier as much as a tool.
//!
//! **Gaps** (holes the TCP monitor skipped at the connection's end, see
//! [`actors::Chunk::Gap`]): the stream's length `bytes_*` counts them, the SHA-256 covers the
//! bytes received only (a gap is skipped, never hashed as zeros), and `gap_bytes_toserver` /
//! `gap_bytes_toclient` (present only when not 0) say how many bytes were never received. A
//! stream without gaps hashes exactly as before, and as `mbox streams` and tshark do.

use rustc_hash::FxHashMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use actors::desc::{EventDesc, FlowEvent, FlowRef};
use actors::event::builtin;
use actors::matcher::Tuple;
use actors::{Actor, ActorError, Chunk, Context, Contract, Subscription, Verdict};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::common::NfCommon;
use crate::output::{self, JsonLines};
use crate::{Kind, NfOptions};

/// The kind's name in the app file.
pub const NAME: &str = "stream_hash";

/// The kind, for [`KINDS`](crate::KINDS).
pub const KIND: Kind<StreamHashConfig> = Kind::new();

/// Stream_Hash options.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamHashConfig {
    /// Where the JSON lines go.
    pub output: PathBuf,
}

impl NfOptions for StreamHashConfig {
    const NAME: &'static str = NAME;

    crate::output_field!();

    fn build(&self, common: &NfCommon) -> Result<Box<dyn Actor>, String> {
        Ok(Box::new(StreamHash::new(common, self.output.clone())?))
    }
}

/// One line of the output.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct StreamRecord {
    /// The number of the connection's first packet in the input.
    pub flow_id: u64,
    /// Initiator, when a packet of the connection was seen.
    pub client: Option<SocketAddr>,
    /// Responder.
    pub server: Option<SocketAddr>,
    /// Client → server stream length (gap bytes included).
    pub bytes_toserver: u64,
    /// Server → client stream length (gap bytes included).
    pub bytes_toclient: u64,
    /// SHA-256 of the client → server stream's received bytes, hex.
    pub sha256_toserver: String,
    /// SHA-256 of the server → client stream's received bytes, hex.
    pub sha256_toclient: String,
    /// How the connection ended.
    pub end: String,
    /// Client → server bytes never received (gaps; the field is left out when 0).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub gap_bytes_toserver: u64,
    /// Server → client bytes never received.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub gap_bytes_toclient: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Default)]
struct Acc {
    flow_start: u64,
    client: Option<SocketAddr>,
    server: Option<SocketAddr>,
    hash: [Sha256; 2],
    bytes: [u64; 2],
    gap_bytes: [u64; 2],
}

/// The Stream_Hash NF (see the module docs).
pub struct StreamHash {
    contract: Contract,
    out: JsonLines,
    /// Keyed by the flow table's slot and generation, not by packet contents: a fast
    /// unkeyed hash is safe.
    conns: FxHashMap<FlowRef, Acc>,
    read_errors: u64,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl StreamHash {
    /// A Stream_Hash writing to `path`.
    pub fn new(common: &NfCommon, path: PathBuf) -> Result<StreamHash, String> {
        let out = JsonLines::create(&common.name, NAME, &path)?;
        let mut subscriptions = common.main_port("data", &[builtin::DATA_RDY]);
        subscriptions.push(Subscription::new("syn", builtin::PKT_TCP_SYN));
        subscriptions.push(Subscription::new("end", builtin::FLOW_TCP_TERMINATE));
        let contract = common.contract(NAME, subscriptions, vec![]);
        Ok(StreamHash { contract, out, conns: FxHashMap::default(), read_errors: 0 })
    }

    fn emit(&mut self, _flow: FlowRef, acc: Acc, end: &str) {
        let [h0, h1] = acc.hash;
        let rec = StreamRecord {
            flow_id: acc.flow_start,
            client: acc.client,
            server: acc.server,
            bytes_toserver: acc.bytes[0],
            bytes_toclient: acc.bytes[1],
            sha256_toserver: hex(&h0.finalize()),
            sha256_toclient: hex(&h1.finalize()),
            end: end.to_string(),
            gap_bytes_toserver: acc.gap_bytes[0],
            gap_bytes_toclient: acc.gap_bytes[1],
        };
        self.out.write(&rec);
    }
}

impl Actor for StreamHash {
    fn contract(&self) -> &Contract {
        &self.contract
    }

    fn handle(&mut self, ev: &mut EventDesc, cx: &mut Context<'_>) -> Verdict {
        let Some(flow) = ev.flow else { return Verdict::Continue };
        if ev.event_type == builtin::FLOW_TCP_TERMINATE {
            let acc = self.conns.remove(&flow).unwrap_or_default();
            let end = match FlowEvent::decode(ev.aux) {
                Some(FlowEvent::End(r)) => r.as_str(),
                _ => "?",
            };
            self.emit(flow, acc, end);
            return Verdict::Continue;
        }
        let acc = self.conns.entry(flow).or_default();
        acc.flow_start = ev.flow_start;
        if ev.event_type == builtin::DATA_RDY {
            let i = usize::from(!ev.to_server());
            let (hash, bytes, gaps) = (&mut acc.hash[i], &mut acc.bytes[i], &mut acc.gap_bytes[i]);
            if cx
                .data_ready(ev, &mut |c| {
                    *bytes += c.len();
                    match c {
                        Chunk::Data(s) => hash.update(s),
                        Chunk::Gap(n) => *gaps += n,
                    }
                })
                .is_err()
            {
                self.read_errors += 1;
            }
        } else if acc.client.is_none() {
            if let Some(view) = cx.view(ev) {
                let t = Tuple::of(&view);
                let t = if ev.to_server() { t } else { t.reversed() };
                if let (Some(c), Some(cp), Some(s), Some(sp)) = (t.src, t.src_port, t.dst, t.dst_port) {
                    acc.client = Some(SocketAddr::new(c, cp));
                    acc.server = Some(SocketAddr::new(s, sp));
                }
            }
        }
        Verdict::Continue
    }

    fn finish(&mut self, _cx: &mut Context<'_>) -> Result<(), ActorError> {
        let mut rest: Vec<_> = self.conns.drain().collect();
        rest.sort_by_key(|(f, _)| *f);
        for (f, acc) in rest {
            self.emit(f, acc, "shutdown");
        }
        output::finish(&self.contract.name, Some(&mut self.out), self.read_errors)
    }

    fn counters(&self) -> Vec<(String, u64)> {
        vec![("records_written".into(), self.out.lines()), ("stream_read_errors".into(), self.read_errors)]
    }
}
