//! `mbox streams`: every TCP connection of a capture, reassembled.
//!
//! Drives the same pieces the TCP monitor actor uses — the L2/3 parser and flow table, then
//! the [`TcpTracker`] (twin state machines and bytestreams) — directly, and reports for each connection: client (initiator) and server endpoints, packets and payload
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
//!
//! # Two threads (the default)
//!
//! By default ([`StreamsOptions::single_thread`] false) the reading side and the hashing
//! run on two threads, joined as [`handoff`] describes.
//!
//! With `single_thread` (`--threads 1`) everything runs on the calling thread and the hash
//! reads the reassembler's chunks, as before.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::net::SocketAddr;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, Sender, SyncSender};

use runtime::ports::PcapReader;
use rustc_hash::FxHashMap;
use serde::Serialize;
use sha2::{Digest, Sha256};
use stacks::flow::FlowKey;
use stacks::flow_table::{Direction, EndedFlow, FlowId, FlowTable, FlowTableConfig};
use stacks::parse::{parse, Transport};
use stacks::tcp::{Segment, StreamSinks, TcpConfig, TcpEvent, TcpState, TcpTracker};

mod handoff;
use handoff::*;

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

/// Options of `mbox streams`.
#[derive(Clone, Debug, Default)]
pub struct StreamsOptions {
    /// Write each direction's bytes to `DIR/<index>-client.bin` / `DIR/<index>-server.bin`.
    pub dump: Option<PathBuf>,
    /// Flow table settings.
    pub flows: FlowTableConfig,
    /// Reassembly settings.
    pub tcp: TcpConfig,
    /// Everything on the calling thread (`mbox streams --threads 1`). The default
    /// (`false`) reads and reassembles on a thread of its own while the calling thread
    /// hashes, dumps and hands the records over (see the [module docs](self)).
    pub single_thread: bool,
    /// With two threads, also hash every n-th connection (by index) on the reading thread,
    /// whatever the load (for tests: that path is otherwise taken only while the hashing
    /// thread is behind).
    #[doc(hidden)]
    pub reader_hashes_every: Option<u64>,
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
    /// The reader thread could not be started.
    #[error("starting the reader thread: {0}")]
    Thread(std::io::Error),
    /// The reader thread panicked (a bug: reported rather than propagated), or the hashing
    /// side stopped early (its own error is the one returned).
    #[error("the reader thread failed")]
    Reader,
}

fn dir_i(d: Direction) -> usize {
    match d {
        Direction::ToServer => 0,
        Direction::ToClient => 1,
    }
}

fn dump_path(opts: &StreamsOptions, index: u64, dir: usize) -> PathBuf {
    let side = if dir == 0 { "client" } else { "server" };
    opts.dump.clone().unwrap_or_default().join(format!("{index}-{side}.bin"))
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    s
}

/// What becomes of one connection's bytes: SHA-256 per direction, and the dump files.
struct Hashers {
    index: u64,
    hash: [Sha256; 2],
    dump: [Option<BufWriter<File>>; 2],
}

impl Hashers {
    fn open(index: u64, opts: &StreamsOptions) -> Result<Hashers, StreamsError> {
        let mut dump = [None, None];
        if opts.dump.is_some() {
            for (i, d) in dump.iter_mut().enumerate() {
                let path = dump_path(opts, index, i);
                let f = File::create(&path).map_err(|e| StreamsError::Dump { path: path.clone(), source: e })?;
                *d = Some(BufWriter::new(f));
            }
        }
        Ok(Hashers { index, hash: [Sha256::new(), Sha256::new()], dump })
    }

    fn data(&mut self, dir: usize, bytes: &[u8], opts: &StreamsOptions) -> Result<(), StreamsError> {
        self.hash[dir].update(bytes);
        if let Some(w) = self.dump[dir].as_mut() {
            w.write_all(bytes).map_err(|e| StreamsError::Dump { path: dump_path(opts, self.index, dir), source: e })?;
        }
        Ok(())
    }

    /// Fills in the record's hashes and flushes the dump files.
    fn finish(mut self, rec: &mut ConnectionRecord, opts: &StreamsOptions) -> Result<(), StreamsError> {
        let [h0, h1] = self.hash;
        rec.to_server.sha256 = hex(&h0.finalize());
        rec.to_client.sha256 = hex(&h1.finalize());
        for (i, w) in self.dump.iter_mut().enumerate() {
            if let Some(w) = w.as_mut() {
                w.flush().map_err(|e| StreamsError::Dump { path: dump_path(opts, self.index, i), source: e })?;
            }
        }
        Ok(())
    }
}

/// Where the reader's bytes and records go: hashed on the spot ([`Inline`]) or handed to
/// the hashing thread ([`Handoff`]).
trait Backend {
    /// Per-connection state on the reader's side.
    type Conn;
    fn open(&mut self, index: u64, opts: &StreamsOptions) -> Result<Self::Conn, StreamsError>;
    /// In-order received bytes of direction `dir` (0: to the server).
    fn data(&mut self, c: &mut Self::Conn, dir: usize, bytes: &[u8], opts: &StreamsOptions)
        -> Result<(), StreamsError>;
    /// The connection ended; `rec` lacks its hashes.
    fn end(&mut self, c: Self::Conn, rec: ConnectionRecord, opts: &StreamsOptions) -> Result<(), StreamsError>;
    /// With sinks, the reassembler hands its in-order bytes over straight from the segment
    /// (after [`enter`](Self::enter) named their connection) and keeps none; without, they
    /// are read from its chunks ([`data`](Self::data)).
    fn sinks(&mut self) -> Option<&mut dyn StreamSinks> {
        None
    }
    /// The connection the next sink calls belong to.
    fn enter(&mut self, _c: &Self::Conn) {}
    /// The frame about to be fed, and the file offset of its record.
    fn packet(&mut self, _data: &[u8], _record_off: u64) {}
    /// What a sink call ran into (the hashing thread hung up, or hashing here failed).
    fn take_error(&mut self) -> Option<StreamsError> {
        None
    }
}

/// One thread: hash as the bytes become ready, hand the record over as the connection ends.
struct Inline<'a> {
    sink: &'a mut dyn FnMut(ConnectionRecord) -> Result<(), StreamsError>,
}

impl Backend for Inline<'_> {
    type Conn = Hashers;

    fn open(&mut self, index: u64, opts: &StreamsOptions) -> Result<Hashers, StreamsError> {
        Hashers::open(index, opts)
    }

    fn data(&mut self, c: &mut Hashers, dir: usize, bytes: &[u8], opts: &StreamsOptions) -> Result<(), StreamsError> {
        c.data(dir, bytes, opts)
    }

    fn end(&mut self, c: Hashers, mut rec: ConnectionRecord, opts: &StreamsOptions) -> Result<(), StreamsError> {
        c.finish(&mut rec, opts)?;
        (self.sink)(rec)
    }
}

/// The reader's record of one live connection.
struct Acc<C> {
    index: u64,
    client: SocketAddr,
    server: SocketAddr,
    first_ts: u64,
    last_ts: u64,
    conn: C,
}

/// Reader, parser, flow table and reassembly: everything but the hashing.
struct Run<B: Backend> {
    opts: StreamsOptions,
    table: FlowTable,
    tcp: TcpTracker,
    accs: FxHashMap<FlowId, Acc<B::Conn>>,
    next_index: u64,
    out: B,
    /// The reassembler hands its bytes to `out`'s sinks.
    sinking: bool,
    events: Vec<TcpEvent>,
}

/// What the reader found, besides the records.
struct Counts {
    packets: u64,
    non_tcp: u64,
    malformed: HashMap<String, u64>,
    high_water: usize,
    warning: Option<String>,
}

impl<B: Backend> Run<B> {
    fn new(opts: StreamsOptions, mut out: B) -> Run<B> {
        Run {
            sinking: out.sinks().is_some(),
            table: FlowTable::new(opts.flows.clone()),
            tcp: TcpTracker::new(opts.tcp.clone()),
            opts,
            accs: FxHashMap::default(),
            next_index: 0,
            out,
            events: Vec::new(),
        }
    }

    fn handle_events(&mut self, flow: FlowId) -> Result<(), StreamsError> {
        for k in 0..self.events.len() {
            if let TcpEvent::DataReady { dir, from, to } = self.events[k] {
                if self.sinking {
                    // Handed over by the sink already: only the comparison window moves.
                    self.tcp.release(flow, dir, to);
                    continue;
                }
                let (Some(conn), Some(acc)) = (self.tcp.get(flow), self.accs.get_mut(&flow)) else { continue };
                let stream = conn.stream(dir).expect("data ready on a started stream");
                for s in stream.read(from, to).expect("ready bytes are held").data() {
                    self.out.data(&mut acc.conn, dir_i(dir), s, &self.opts)?;
                }
                self.tcp.release(flow, dir, to);
            }
        }
        self.events.clear();
        Ok(())
    }

    fn ended(&mut self, ended: &mut Vec<EndedFlow>) -> Result<(), StreamsError> {
        for e in ended.drain(..) {
            let acc = self.accs.remove(&e.info.id);
            if let Some(acc) = &acc {
                self.out.enter(&acc.conn);
            }
            let Some(conn) = self.tcp.end_into(e.info.id, e.reason, &mut self.events, self.out.sinks()) else {
                continue;
            };
            if let Some(e) = self.out.take_error() {
                return Err(e);
            }
            if let Some(mut acc) = acc {
                // The final DataReady events refer to the stream inside `conn`, which left the
                // tracker: read them from there (with sinks, they were handed over already).
                for ev in self.events.iter().filter(|_| !self.sinking) {
                    if let TcpEvent::DataReady { dir, from, to } = *ev {
                        let stream = conn.stream(dir).expect("data ready on a started stream");
                        for s in stream.read(from, to).expect("ready bytes are held").data() {
                            self.out.data(&mut acc.conn, dir_i(dir), s, &self.opts)?;
                        }
                    }
                }
                let reason = match e.reason {
                    stacks::flow_table::EndReason::IdleTimeout => "timeout",
                    stacks::flow_table::EndReason::Fin => "fin",
                    stacks::flow_table::EndReason::Rst => "rst",
                    stacks::flow_table::EndReason::Evicted => "evicted",
                    stacks::flow_table::EndReason::Shutdown => "shutdown",
                };
                let dir_rec = |d: Direction| {
                    let h = &conn.halves()[dir_i(d)];
                    let st = conn.stream(d).map(|s| s.stats()).unwrap_or_default();
                    DirectionRecord {
                        packets: h.packets,
                        payload_bytes: h.payload_bytes,
                        stream_bytes: conn.frontier(d),
                        sha256: String::new(),
                        retransmissions: h.retransmissions,
                        out_of_order: h.out_of_order,
                        overlap_conflict_bytes: st.overlap_conflicts,
                        gap_bytes: st.gap_bytes,
                        refused_segments: st.refused_segments,
                        sender_state: h.state,
                    }
                };
                let rec = ConnectionRecord {
                    index: acc.index,
                    client: acc.client,
                    server: acc.server,
                    to_server: dir_rec(Direction::ToServer),
                    to_client: dir_rec(Direction::ToClient),
                    end: reason.to_string(),
                    midstream: conn.midstream(),
                    first_ts_ns: acc.first_ts,
                    last_ts_ns: acc.last_ts,
                };
                self.out.end(acc.conn, rec, &self.opts)?;
            }
            self.events.clear();
            self.tcp.recycle(conn);
        }
        Ok(())
    }

    /// Reads the whole capture.
    fn read_all(&mut self, mut reader: PcapReader) -> Result<Counts, StreamsError> {
        let link = reader.link_type();
        let (mut packets, mut non_tcp) = (0u64, 0u64);
        let mut malformed: HashMap<String, u64> = HashMap::new();
        let mut ended = Vec::new();
        let mut high_water = 0;
        loop {
            let record_off = reader.bytes_read();
            let Some(rec) = reader.next_packet()? else { break };
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
            let obs = self.table.observe(key, side, Some(tcp.flags), rec.ts_ns, &mut ended);
            if !ended.is_empty() {
                self.ended(&mut ended)?;
            }
            let acc = match self.accs.entry(obs.id) {
                std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
                std::collections::hash_map::Entry::Vacant(v) => {
                    let (src, dst) = (key.endpoint(side), key.endpoint(side.opposite()));
                    let (client, server) = if obs.dir == Direction::ToServer { (src, dst) } else { (dst, src) };
                    let index = self.next_index;
                    self.next_index += 1;
                    v.insert(Acc {
                        index,
                        client: SocketAddr::new(client.addr, client.port),
                        server: SocketAddr::new(server.addr, server.port),
                        first_ts: rec.ts_ns,
                        last_ts: rec.ts_ns,
                        conn: self.out.open(index, &self.opts)?,
                    })
                }
            };
            acc.last_ts = acc.last_ts.max(rec.ts_ns);
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
            self.out.enter(&acc.conn);
            self.out.packet(rec.data, record_off);
            self.tcp.segment_into(obs.id, &seg, &mut self.events, self.out.sinks());
            if let Some(e) = self.out.take_error() {
                return Err(e);
            }
            if !self.events.is_empty() {
                self.handle_events(obs.id)?;
            }
            high_water = high_water.max(self.tcp.budget().high_water);
        }
        let warning = reader
            .stats()
            .truncated_tail
            .then(|| "the capture ends in the middle of a packet record; the partial record was not read".to_string());
        self.table.drain(&mut ended);
        self.ended(&mut ended)?;
        Ok(Counts { packets, non_tcp, malformed, high_water, warning })
    }

    fn report(&self, c: Counts) -> StreamsReport {
        StreamsReport {
            connections: Vec::new(),
            packets: c.packets,
            non_tcp: c.non_tcp,
            malformed: c.malformed,
            memory_high_water: c.high_water,
            warning: c.warning,
            connections_seen: self.next_index,
            max_flows: self.opts.flows.max_flows.max(1),
            evicted: self.table.stats().evicted,
        }
    }
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
/// connections at once, the least recently seen evicted beyond it, counted), the
/// reassembly limits and, with two threads, the batches between them, whatever the number
/// of connections. The report's `connections` is empty. `each` is called on the calling
/// thread, in the same order with one thread or two.
pub fn streams_each(
    input: &Path,
    opts: StreamsOptions,
    each: &mut dyn FnMut(ConnectionRecord) -> Result<(), StreamsError>,
) -> Result<StreamsReport, StreamsError> {
    let reader = PcapReader::open(input)?;
    if let Some(d) = &opts.dump {
        std::fs::create_dir_all(d).map_err(|e| StreamsError::Dump { path: d.clone(), source: e })?;
    }
    if opts.single_thread {
        let mut run = Run::new(opts, Inline { sink: each });
        let counts = run.read_all(reader)?;
        return Ok(run.report(counts));
    }
    let (tx, rx) = std::sync::mpsc::sync_channel(BATCHES_QUEUED);
    let (back_tx, back) = std::sync::mpsc::channel();
    let handoff = Handoff::new(tx, back, opts.clone(), input);
    let hash_opts = opts.clone();
    std::thread::scope(|scope| {
        let reading = std::thread::Builder::new()
            .name("streams-read".into())
            .spawn_scoped(scope, move || {
                let mut run = Run::new(opts, handoff);
                let counts = run.read_all(reader);
                // Whatever happened, send what is batched (the records of connections that
                // ended before an error) and hang up, so that the hashing loop ends.
                let flushed = run.out.flush();
                let counts = counts?;
                let report = run.report(counts);
                drop(run);
                flushed.map(|()| report).map_err(|HungUp| StreamsError::Reader)
            })
            .map_err(StreamsError::Thread)?;
        let hashed = hash_batches(rx, back_tx, &hash_opts, each);
        // The hashing loop ended: either the reader hung up (done or failed) or hashing
        // failed, which dropped the receiver so that the reader's next send fails.
        let read = reading.join().map_err(|_| StreamsError::Reader)?;
        hashed?;
        read
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_lowercase_two_digits_per_byte() {
        assert_eq!(hex(&[0, 0x0f, 0xa0, 0xff]), "000fa0ff");
    }
}
