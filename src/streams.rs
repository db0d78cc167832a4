//! `mbox streams`: every TCP connection of a capture, reassembled.
//!
//! Drives the same pieces the TCP monitor actor uses — the L2/3 parser and flow table, then
//! the [`TcpTracker`] (twin state machines and bytestreams) — directly, in one thread, and
//! reports for each connection: client (initiator) and server endpoints, packets and payload
//! bytes each way, the length and SHA-256 of each direction's reassembled bytestream, how it
//! ended, retransmissions, out-of-order segments, conflicting overlaps and gaps. `--dump`
//! writes each direction's bytes to a file.
//!
//! **Gaps** (holes skipped at a connection's end: bytes never received) cost O(1): the hash
//! and the dump cover the received bytes only, `stream_bytes` counts the gap bytes too, and
//! `gap_bytes` says how many there were (`GAP n B` in the text line). A stream without gaps
//! hashes as tshark's "follow tcp" does.
//!
//! **Connections at once** are bounded like `mbox run`'s: the flow table holds at most
//! `max_flows` (default 100 000, `mbox streams --max-flows N`); beyond that the least
//! recently seen connection is evicted — ended early, reported with end `evicted`, counted in
//! [`StreamsReport::evicted`] and explained by [`StreamsReport::eviction_note`].
//! [`streams_each`] hands each record over as its connection ends, so memory does not grow
//! with the number of connections.
//!
//! Bytes are consumed as they become ready (`DataReady` events) and released once they are
//! `keep_behind` behind the frontier (kept that long so that retransmissions are compared
//! with them, [`TcpConfig`]), so memory stays bounded by the reassembly limits and that
//! window, not by the size of the streams.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use runtime::ports::PcapReader;
use rustc_hash::FxHashMap;
use serde::Serialize;
use sha2::{Digest, Sha256};
use stacks::flow::FlowKey;
use stacks::flow_table::{Direction, EndedFlow, FlowId, FlowTable, FlowTableConfig};
use stacks::parse::{parse, Transport};
use stacks::reassembly::Slices;
use stacks::tcp::{Segment, TcpConfig, TcpEvent, TcpState, TcpTracker};

/// One direction of a connection.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct DirectionRecord {
    /// Segments sent this way.
    pub packets: u64,
    /// Payload bytes on the wire this way (retransmissions included).
    pub payload_bytes: u64,
    /// Length of the reassembled bytestream (gap bytes included).
    pub stream_bytes: u64,
    /// SHA-256 of the reassembled bytestream's received bytes (gaps skipped), hex.
    pub sha256: String,
    /// Retransmitted segments.
    pub retransmissions: u64,
    /// Segments that arrived beyond the frontier.
    pub out_of_order: u64,
    /// Bytes of retransmissions that differed from the bytes already held.
    pub overlap_conflict_bytes: u64,
    /// Bytes never seen (holes skipped at the end).
    pub gap_bytes: u64,
    /// Segments refused by a reassembly limit.
    pub refused_segments: u64,
    /// Final inferred state of the sending endpoint.
    pub sender_state: TcpState,
}

/// One connection.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct ConnectionRecord {
    /// Order of the connection's first packet in the capture, from 0 (as tshark's
    /// `tcp.stream`).
    pub index: u64,
    /// Initiator.
    pub client: SocketAddr,
    /// Responder.
    pub server: SocketAddr,
    /// Client → server.
    pub to_server: DirectionRecord,
    /// Server → client.
    pub to_client: DirectionRecord,
    /// `fin`, `rst`, `timeout`, `evicted` or `shutdown` (still open at the end of input).
    pub end: String,
    /// Picked up without its handshake.
    pub midstream: bool,
    /// First packet time, ns.
    pub first_ts_ns: u64,
    /// Last packet time, ns.
    pub last_ts_ns: u64,
}

/// What `mbox streams` found.
#[derive(Clone, Debug, Serialize)]
pub struct StreamsReport {
    /// Connections, by `index`.
    pub connections: Vec<ConnectionRecord>,
    /// Frames read.
    pub packets: u64,
    /// Frames that are not TCP (ignored).
    pub non_tcp: u64,
    /// Frames the parser rejected, by reason.
    pub malformed: HashMap<String, u64>,
    /// Peak reassembly memory, bytes.
    pub memory_high_water: usize,
    /// A warning from the capture reader.
    pub warning: Option<String>,
    /// TCP connections seen (records handed over; `connections.len()` with [`streams`]).
    pub connections_seen: u64,
    /// The connection limit in force (the flow table's `max_flows`).
    pub max_flows: usize,
    /// Connections ended early because the table was full (the least recently seen one
    /// goes; its record says `end: "evicted"`, and a later packet of it starts a new one).
    pub evicted: u64,
}

impl StreamsReport {
    /// The line that explains evictions, when there were some.
    pub fn eviction_note(&self) -> Option<String> {
        (self.evicted > 0).then(|| {
            format!(
                "evicted {} connections (limit {}; --max-flows): each was ended early and reported with end `evicted`",
                self.evicted, self.max_flows
            )
        })
    }
}

struct Acc {
    index: u64,
    client: SocketAddr,
    server: SocketAddr,
    hash: [Sha256; 2],
    dump: [Option<BufWriter<File>>; 2],
    first_ts: u64,
    last_ts: u64,
}

/// Options of `mbox streams`.
#[derive(Clone, Debug, Default)]
pub struct StreamsOptions {
    /// Write each direction's bytes to `DIR/<index>-client.bin` / `DIR/<index>-server.bin`.
    pub dump: Option<PathBuf>,
    /// Flow table settings.
    pub flows: FlowTableConfig,
    /// Reassembly settings.
    pub tcp: TcpConfig,
}

/// Why `mbox streams` failed.
#[derive(Debug, thiserror::Error)]
pub enum StreamsError {
    /// Reading the capture.
    #[error("{0}")]
    Input(#[from] runtime::ports::PortError),
    /// Writing a dump file.
    #[error("writing {path}: {source}")]
    Dump {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

struct Run<'a> {
    opts: StreamsOptions,
    table: FlowTable,
    tcp: TcpTracker,
    accs: FxHashMap<FlowId, Acc>,
    next_index: u64,
    /// Where each connection's record goes as it ends.
    sink: &'a mut dyn FnMut(ConnectionRecord) -> Result<(), StreamsError>,
    events: Vec<TcpEvent>,
}

fn dir_i(d: Direction) -> usize {
    match d {
        Direction::ToServer => 0,
        Direction::ToClient => 1,
    }
}

impl Run<'_> {
    fn handle_events(&mut self, flow: FlowId) -> Result<(), StreamsError> {
        let events = std::mem::take(&mut self.events);
        for ev in &events {
            if let TcpEvent::DataReady { dir, from, to } = *ev {
                let (Some(conn), Some(acc)) = (self.tcp.get(flow), self.accs.get_mut(&flow)) else { continue };
                let stream = conn.stream(dir).expect("data ready on a started stream");
                consume(acc, dir, stream.read(from, to).expect("ready bytes are held"), &self.opts)?;
                self.tcp.release(flow, dir, to);
            }
        }
        self.events = events;
        self.events.clear();
        Ok(())
    }

    fn ended(&mut self, ended: Vec<EndedFlow>) -> Result<(), StreamsError> {
        for e in ended {
            let Some(conn) = self.tcp.end(e.info.id, e.reason, &mut self.events) else { continue };
            // The final DataReady events refer to the stream inside `conn`, which left the
            // tracker: read them from there.
            let events = std::mem::take(&mut self.events);
            let acc = self.accs.remove(&e.info.id);
            if let Some(mut acc) = acc {
                for ev in &events {
                    if let TcpEvent::DataReady { dir, from, to } = *ev {
                        let stream = conn.stream(dir).expect("data ready on a started stream");
                        consume(&mut acc, dir, stream.read(from, to).expect("ready bytes are held"), &self.opts)?;
                    }
                }
                let reason = match e.reason {
                    stacks::flow_table::EndReason::IdleTimeout => "timeout",
                    stacks::flow_table::EndReason::Fin => "fin",
                    stacks::flow_table::EndReason::Rst => "rst",
                    stacks::flow_table::EndReason::Evicted => "evicted",
                    stacks::flow_table::EndReason::Shutdown => "shutdown",
                };
                let dir_rec = |d: Direction, acc: &mut Acc| {
                    let i = dir_i(d);
                    let h = &conn.halves()[i];
                    let st = conn.stream(d).map(|s| s.stats()).unwrap_or_default();
                    DirectionRecord {
                        packets: h.packets,
                        payload_bytes: h.payload_bytes,
                        stream_bytes: conn.frontier(d),
                        sha256: hex(&std::mem::take(&mut acc.hash[i]).finalize()),
                        retransmissions: h.retransmissions,
                        out_of_order: h.out_of_order,
                        overlap_conflict_bytes: st.overlap_conflicts,
                        gap_bytes: st.gap_bytes,
                        refused_segments: st.refused_segments,
                        sender_state: h.state,
                    }
                };
                let to_server = dir_rec(Direction::ToServer, &mut acc);
                let to_client = dir_rec(Direction::ToClient, &mut acc);
                for (i, w) in acc.dump.iter_mut().enumerate() {
                    if let Some(w) = w.as_mut() {
                        let d = if i == 0 { Direction::ToServer } else { Direction::ToClient };
                        w.flush().map_err(|err| StreamsError::Dump {
                            path: dump_path(&self.opts, acc.index, d),
                            source: err,
                        })?;
                    }
                }
                (self.sink)(ConnectionRecord {
                    index: acc.index,
                    client: acc.client,
                    server: acc.server,
                    to_server,
                    to_client,
                    end: reason.to_string(),
                    midstream: conn.midstream(),
                    first_ts_ns: acc.first_ts,
                    last_ts_ns: acc.last_ts,
                })?;
            }
            self.tcp.recycle(conn);
        }
        Ok(())
    }
}

/// Hashes (and dumps) the received bytes of a ready range; gaps are skipped, never read as
/// bytes (their length is in the stream's `gap_bytes`).
fn consume(acc: &mut Acc, dir: Direction, slices: Slices<'_>, opts: &StreamsOptions) -> Result<(), StreamsError> {
    let i = dir_i(dir);
    for s in slices.data() {
        acc.hash[i].update(s);
        if let Some(w) = acc.dump[i].as_mut() {
            w.write_all(s).map_err(|e| StreamsError::Dump { path: dump_path(opts, acc.index, dir), source: e })?;
        }
    }
    Ok(())
}

fn dump_path(opts: &StreamsOptions, index: u64, dir: Direction) -> PathBuf {
    let side = if dir == Direction::ToServer { "client" } else { "server" };
    opts.dump.clone().unwrap_or_default().join(format!("{index}-{side}.bin"))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reassembles every TCP connection of the capture at `input`; the report lists them all,
/// by `index` (held in memory: for captures of very many connections, see
/// [`streams_each`]).
pub fn streams(input: &Path, opts: StreamsOptions) -> Result<StreamsReport, StreamsError> {
    let mut all = Vec::new();
    let mut report = streams_each(input, opts, &mut |c| {
        all.push(c);
        Ok(())
    })?;
    all.sort_by_key(|c| c.index);
    report.connections = all;
    Ok(report)
}

/// As [`streams`], but hands each connection's record to `each` as the connection ends (in
/// end order) and keeps none: memory is bounded by the flow table (`opts.flows.max_flows`
/// connections at once, the least recently seen evicted beyond it, counted) and the
/// reassembly limits, whatever the number of connections. The report's `connections` is
/// empty.
pub fn streams_each(
    input: &Path,
    opts: StreamsOptions,
    each: &mut dyn FnMut(ConnectionRecord) -> Result<(), StreamsError>,
) -> Result<StreamsReport, StreamsError> {
    let mut reader = PcapReader::open(input)?;
    let link = reader.link_type();
    if let Some(d) = &opts.dump {
        std::fs::create_dir_all(d).map_err(|e| StreamsError::Dump { path: d.clone(), source: e })?;
    }
    let mut run = Run {
        table: FlowTable::new(opts.flows.clone()),
        tcp: TcpTracker::new(opts.tcp.clone()),
        opts,
        accs: FxHashMap::default(),
        next_index: 0,
        sink: each,
        events: Vec::new(),
    };
    let (mut packets, mut non_tcp) = (0u64, 0u64);
    let mut malformed: HashMap<String, u64> = HashMap::new();
    let mut ended = Vec::new();
    let mut high_water = 0;
    while let Some(rec) = reader.next_packet()? {
        packets += 1;
        let p = match parse(link, rec.data) {
            Ok(p) => p,
            Err(m) => {
                *malformed.entry(m.as_str().to_string()).or_default() += 1;
                continue;
            }
        };
        let Transport::Tcp(tcp) = p.transport else {
            non_tcp += 1;
            continue;
        };
        let Some((key, side)) = FlowKey::from_parsed(&p) else {
            non_tcp += 1;
            continue;
        };
        let obs = run.table.observe(key, side, Some(tcp.flags), rec.ts_ns, &mut ended);
        run.ended(std::mem::take(&mut ended))?;
        if obs.new || !run.accs.contains_key(&obs.id) {
            let (src, dst) = (key.endpoint(side), key.endpoint(side.opposite()));
            let (client, server) = if obs.dir == Direction::ToServer { (src, dst) } else { (dst, src) };
            let index = run.next_index;
            run.next_index += 1;
            let mut dump = [None, None];
            if let Some(d) = &run.opts.dump {
                for (i, side) in ["client", "server"].iter().enumerate() {
                    let path = d.join(format!("{index}-{side}.bin"));
                    let f = File::create(&path).map_err(|e| StreamsError::Dump { path: path.clone(), source: e })?;
                    dump[i] = Some(BufWriter::new(f));
                }
            }
            run.accs.insert(
                obs.id,
                Acc {
                    index,
                    client: SocketAddr::new(client.addr, client.port),
                    server: SocketAddr::new(server.addr, server.port),
                    hash: [Sha256::new(), Sha256::new()],
                    dump,
                    first_ts: rec.ts_ns,
                    last_ts: rec.ts_ns,
                },
            );
        }
        if let Some(acc) = run.accs.get_mut(&obs.id) {
            acc.last_ts = acc.last_ts.max(rec.ts_ns);
        }
        let l4 = usize::from(p.l4_offset);
        let hl = usize::from(tcp.header_len);
        let options = rec.data.get(l4 + 20..l4 + hl).unwrap_or(&[]);
        let payload = p.payload(rec.data);
        let seg = Segment {
            dir: obs.dir,
            seq: tcp.seq,
            ack: tcp.ack,
            flags: tcp.flags,
            window: tcp.window,
            options,
            payload,
        };
        run.tcp.segment(obs.id, &seg, &mut run.events);
        run.handle_events(obs.id)?;
        high_water = high_water.max(run.tcp.budget().high_water);
    }
    let warning = reader
        .stats()
        .truncated_tail
        .then(|| "the capture ends in the middle of a packet record; the partial record was not read".to_string());
    run.table.drain(&mut ended);
    run.ended(ended)?;
    Ok(StreamsReport {
        connections: Vec::new(),
        packets,
        non_tcp,
        malformed,
        memory_high_water: high_water,
        warning,
        connections_seen: run.next_index,
        max_flows: run.opts.flows.max_flows.max(1),
        evicted: run.table.stats().evicted,
    })
}

impl ConnectionRecord {
    /// One human-readable line.
    pub fn line(&self) -> String {
        let d = |r: &DirectionRecord| {
            format!(
                "{} pkts {} B stream {} B sha256 {}{}{}{}",
                r.packets,
                r.payload_bytes,
                r.stream_bytes,
                &r.sha256[..16],
                if r.retransmissions > 0 { format!(" retrans {}", r.retransmissions) } else { String::new() },
                if r.out_of_order > 0 { format!(" ooo {}", r.out_of_order) } else { String::new() },
                if r.gap_bytes > 0 { format!(" GAP {} B", r.gap_bytes) } else { String::new() },
            )
        };
        format!(
            "{:>4} {} -> {}  end {:<8} c>s {}  s>c {}{}",
            self.index,
            self.client,
            self.server,
            self.end,
            d(&self.to_server),
            d(&self.to_client),
            if self.to_server.overlap_conflict_bytes + self.to_client.overlap_conflict_bytes > 0 {
                format!(
                    "  conflicting overlaps {} B",
                    self.to_server.overlap_conflict_bytes + self.to_client.overlap_conflict_bytes
                )
            } else {
                String::new()
            }
        )
    }
}
