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
//! SHA-256 is about a third of the work, so by default ([`StreamsOptions::single_thread`]
//! false; `mbox streams --threads 2`) a thread of its own reads the capture, parses, keeps the
//! flow table and reassembles, while the calling thread hashes, writes the dumps and hands
//! the records to the caller:
//!
//! * **One copy of each byte on the reading side.** The reassembler runs with a sink
//!   ([`TcpTracker::segment_into`]): bytes that arrive in order go straight from the
//!   packet buffer into the current batch (a `Vec<u8>` plus a list of items: connection
//!   opened, `len` bytes of direction `d`, connection ended with its record);
//!   only out-of-order bytes are held (in chunks) until the hole fills.
//! * **Bounded hand-over with back-pressure.** Batches are sent when they hold
//!   `BATCH_BYTES` (256 KiB) or `BATCH_ITEMS` items, over a channel of
//!   `BATCHES_QUEUED` (4); the reader blocks when it is full, and emptied batches come back
//!   to be refilled, so at most `BATCHES_QUEUED + 2` batches exist at once
//!   (each 256 KiB of bytes plus one segment or chunk, and 4096 items of 16 bytes: under 4 MiB
//!   in all with the default chunk size).
//! * **Retransmissions** below the frontier are compared with the bytes already delivered,
//!   as with one thread, on the reading thread: for a legacy pcap read from a regular file
//!   it remembers, per direction, where in the file the last `keep_behind` bytes (64 KiB by
//!   default, [`TcpConfig::keep_behind`]) came from (one entry per range delivered; copies
//!   only of out-of-order bytes that became contiguous) and reads them back with `pread`
//!   when a retransmission overlaps them; otherwise (pcapng, a pipe) it keeps a copy of
//!   those bytes (`Window`, a ring grown as the stream is, as the one-thread reassembler holds
//!   them). The file must not be
//!   rewritten while it is read (appending is fine).
//! * **Balance.** While the hashing thread is behind (every queued batch taken), connections
//!   that open are hashed on the reading thread instead, straight from the packets (no
//!   copy); their records travel through the channel complete, in order.
//! * **Same output, same order.** Items travel in order, so records are handed over in the
//!   order the connections ended, on the calling thread (`each` need not be `Send`), with the
//!   same hashes, counters and dumps as one thread gives (`tests/tests/streams_threads.rs`
//!   compares both on hostile captures). Only [`StreamsReport::memory_high_water`] may
//!   differ: with a sink the reassembler charges each stream for the chunks its
//!   `[base, frontier)` spans, the chunk at the frontier possibly twice (one chunk more per
//!   stream at most).
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

/// Bytes per [`Batch`] before it is sent (one ready range more at most: a segment, or a
/// chunk of out-of-order data).
const BATCH_BYTES: usize = 256 << 10;
/// Items per [`Batch`] before it is sent.
const BATCH_ITEMS: usize = 4096;
/// Batches queued between the threads; the reader waits when they are all taken.
const BATCHES_QUEUED: usize = 4;

/// What the reader tells the hashing thread, in order. Connections are named by a slot the
/// reader hands out (dense, reused after the connection's `End`).
enum Item {
    Open {
        slot: u32,
        index: u64,
    },
    /// The next `len` bytes of the batch are the slot's direction `dir`.
    Data {
        slot: u32,
        dir: u8,
        len: u32,
    },
    End {
        slot: u32,
        rec: Box<ConnectionRecord>,
    },
    /// A connection hashed on the reader's thread ended: its record, complete.
    Done {
        rec: Box<ConnectionRecord>,
    },
}

#[derive(Default)]
struct Batch {
    items: Vec<Item>,
    bytes: Vec<u8>,
}

/// Where the reader finds a direction's recent bytes again, to compare retransmissions
/// with: in the capture file (legacy pcap read from a regular file: each in-order range
/// that came straight from a packet is remembered by its file offset, and read back with
/// `pread` only when a retransmission overlaps it), else in a copy ([`Window`]).
#[derive(Default)]
struct Behind {
    /// (stream offset, length, where): the shortest suffix of the ranges delivered that
    /// covers `keep_behind` bytes.
    refs: VecDeque<(u64, u32, Src)>,
    refs_bytes: u64,
    copy: Window,
}

/// Where a delivered range's bytes are.
enum Src {
    /// At this offset of the capture file.
    File(u64),
    /// Not from the current packet (out-of-order bytes that became contiguous): a copy.
    Owned(Box<[u8]>),
}

impl Behind {
    fn clear(&mut self) {
        self.refs.clear();
        self.refs_bytes = 0;
        self.copy.buf.clear();
        self.copy.end = 0;
        self.copy.start = 0;
    }

    fn push_ref(&mut self, cap: usize, at: u64, bytes: &[u8], file_off: Option<u64>) {
        if cap == 0 || bytes.is_empty() {
            return;
        }
        let src = file_off.map_or_else(|| Src::Owned(bytes.into()), Src::File);
        self.refs.push_back((at, bytes.len() as u32, src));
        self.refs_bytes += bytes.len() as u64;
        while let Some(&(_, len, _)) = self.refs.front() {
            if self.refs_bytes - u64::from(len) < cap as u64 {
                break;
            }
            self.refs.pop_front();
            self.refs_bytes -= u64::from(len);
        }
    }

    /// Bytes of `new` (at offset `at`) that differ from the remembered ones (read back from
    /// `file` through `scratch`); `None` if the file cannot be read back.
    fn differing_refs(&self, at: u64, new: &[u8], file: &File, scratch: &mut Vec<u8>) -> Option<u64> {
        let end = at + new.len() as u64;
        let mut diff = 0u64;
        for (r_at, r_len, src) in &self.refs {
            let (lo, hi) = (at.max(*r_at), end.min(r_at + u64::from(*r_len)));
            if lo >= hi {
                continue;
            }
            let n = (hi - lo) as usize;
            let held: &[u8] = match src {
                Src::File(off) => {
                    scratch.resize(n, 0);
                    file.read_exact_at(scratch, off + (lo - r_at)).ok()?;
                    scratch
                }
                Src::Owned(b) => &b[(lo - r_at) as usize..(hi - r_at) as usize],
            };
            let new = &new[(lo - at) as usize..(hi - at) as usize];
            diff += held.iter().zip(new).filter(|(x, y)| x != y).count() as u64;
        }
        Some(diff)
    }
}

/// The capture file, opened again to read retransmitted-over bytes back, and where each
/// record's frame starts (legacy pcap only: `None` for pcapng or an input that is not a
/// regular file, whose recent bytes are then copied instead).
fn reread(input: &Path) -> Option<(File, u64)> {
    let meta = std::fs::metadata(input).ok()?;
    if !meta.is_file() {
        return None;
    }
    let file = File::open(input).ok()?;
    let mut magic = [0u8; 4];
    file.read_exact_at(&mut magic, 0).ok()?;
    let hdr = match u32::from_le_bytes(magic) {
        0xa1b2_c3d4 | 0xa1b2_3c4d | 0xd4c3_b2a1 | 0x4d3c_b2a1 => 16,
        0xa1b2_cd34 => 24,
        _ => return None,
    };
    Some((file, hdr))
}

/// Two threads: the reader copies each ready range once into the current batch; full
/// batches go to the hashing thread over a bounded channel and come back empty to be reused.
/// When the hashing thread falls behind (every queued batch taken), connections that open
/// then are hashed on the reader's thread instead, straight from the segments (no copy);
/// their records still travel in order, complete. Retransmissions are compared here
/// ([`Behind`]).
struct Handoff {
    batch: Batch,
    tx: SyncSender<Batch>,
    back: Receiver<Batch>,
    /// Empty batches back from the hashing thread.
    spare: Vec<Batch>,
    /// Batches sent and not yet back.
    in_flight: usize,
    free_slots: Vec<u32>,
    next_slot: u32,
    /// The connection being fed ([`Backend::enter`]).
    cur: Slot,
    /// Each slot's recent bytes per direction (reused with the slot).
    behind: Vec<[Behind; 2]>,
    /// Connections hashed on this thread, by slot.
    local: Vec<Option<Hashers>>,
    /// The capture file and its record header length, to read bytes back ([`reread`]).
    file: Option<(File, u64)>,
    /// The current packet's frame: address and length (to tell whether a delivered range
    /// lies in it) and file offset.
    pkt: (usize, usize, Option<u64>),
    scratch: RefCell<Vec<u8>>,
    opts: StreamsOptions,
    cap: usize,
    /// The hashing thread hung up, or hashing here failed.
    error: Option<StreamsError>,
}

/// A connection as the reader names it: its slot, and whether it is hashed on the reader's
/// thread.
#[derive(Clone, Copy, Debug, Default)]
struct Slot {
    id: u32,
    local: bool,
}

/// The hashing thread hung up (it failed; its error is the one reported).
struct HungUp;

impl Handoff {
    fn new(tx: SyncSender<Batch>, back: Receiver<Batch>, opts: StreamsOptions, input: &Path) -> Handoff {
        Handoff {
            batch: Batch::default(),
            tx,
            back,
            spare: Vec::new(),
            in_flight: 0,
            free_slots: Vec::new(),
            next_slot: 0,
            cur: Slot::default(),
            behind: Vec::new(),
            local: Vec::new(),
            file: reread(input),
            pkt: (0, 0, None),
            scratch: RefCell::new(Vec::new()),
            cap: usize::try_from(opts.tcp.keep_behind).unwrap_or(usize::MAX),
            opts,
            error: None,
        }
    }

    fn push(&mut self, item: Item) -> Result<(), StreamsError> {
        self.batch.items.push(item);
        if self.batch.items.len() >= BATCH_ITEMS || self.batch.bytes.len() >= BATCH_BYTES {
            self.flush().map_err(|HungUp| StreamsError::Reader)?;
        }
        Ok(())
    }

    fn fail(&mut self, e: StreamsError) {
        self.error.get_or_insert(e);
    }

    /// Takes back the batches the hashing thread has emptied.
    fn collect(&mut self) {
        while let Ok(b) = self.back.try_recv() {
            self.spare.push(b);
            self.in_flight = self.in_flight.saturating_sub(1);
        }
    }

    fn flush(&mut self) -> Result<(), HungUp> {
        if self.batch.items.is_empty() {
            return Ok(());
        }
        self.collect();
        let next = self.spare.pop().unwrap_or_else(|| Batch {
            items: Vec::with_capacity(BATCH_ITEMS),
            bytes: Vec::with_capacity(BATCH_BYTES + (64 << 10)),
        });
        let full = std::mem::replace(&mut self.batch, next);
        self.in_flight += 1;
        self.tx.send(full).map_err(|_| HungUp)
    }

    /// In-order bytes of direction `d` of the current connection: remembered for
    /// comparisons, then hashed here or put in the batch.
    fn append_dir(&mut self, d: usize, at: u64, bytes: &[u8]) {
        let id = self.cur.id as usize;
        if let Some(b) = self.behind.get_mut(id).map(|b| &mut b[d]) {
            if self.file.is_some() {
                let (p, n, off) = self.pkt;
                let a = bytes.as_ptr() as usize;
                let file_off = off.filter(|_| a >= p && a + bytes.len() <= p + n).map(|o| o + (a - p) as u64);
                b.push_ref(self.cap, at, bytes, file_off);
            } else {
                b.copy.push(self.cap, at, bytes);
            }
        }
        if self.cur.local {
            let Some(h) = self.local.get_mut(id).and_then(Option::as_mut) else { return };
            if let Err(e) = h.data(d, bytes, &self.opts) {
                self.fail(e);
            }
            return;
        }
        // Segments are at most 64 KiB and held ranges one chunk; split anyway.
        for part in bytes.chunks(u32::MAX as usize) {
            self.batch.bytes.extend_from_slice(part);
            if let Err(e) = self.push(Item::Data { slot: self.cur.id, dir: d as u8, len: part.len() as u32 }) {
                self.fail(e);
            }
        }
    }
}

impl Backend for Handoff {
    type Conn = Slot;

    fn open(&mut self, index: u64, _opts: &StreamsOptions) -> Result<Slot, StreamsError> {
        let id = self.free_slots.pop().unwrap_or_else(|| {
            self.next_slot += 1;
            self.next_slot - 1
        });
        let i = id as usize;
        if self.behind.len() <= i {
            self.behind.resize_with(i + 1, Default::default);
            self.local.resize_with(i + 1, || None);
        }
        self.behind[i].iter_mut().for_each(Behind::clear);
        self.collect();
        // Every queued batch taken: the hashing thread is the slower one, so this
        // connection is hashed here.
        let local = self.in_flight >= BATCHES_QUEUED
            || self.opts.reader_hashes_every.is_some_and(|n| n > 0 && index.is_multiple_of(n));
        if local {
            self.local[i] = Some(Hashers::open(index, &self.opts)?);
        } else {
            self.push(Item::Open { slot: id, index })?;
        }
        Ok(Slot { id, local })
    }

    fn data(&mut self, c: &mut Slot, dir: usize, bytes: &[u8], _opts: &StreamsOptions) -> Result<(), StreamsError> {
        // Not reached: the handoff always has sinks (the bytes come through `append`).
        self.enter(c);
        self.append_dir(dir, u64::MAX, bytes);
        self.error.take().map_or(Ok(()), Err)
    }

    fn end(&mut self, c: Slot, mut rec: ConnectionRecord, _opts: &StreamsOptions) -> Result<(), StreamsError> {
        self.enter(&c);
        if c.local {
            if let Some(h) = self.local.get_mut(c.id as usize).and_then(Option::take) {
                h.finish(&mut rec, &self.opts)?;
            }
            self.push(Item::Done { rec: Box::new(rec) })?;
        } else {
            self.push(Item::End { slot: c.id, rec: Box::new(rec) })?;
        }
        if let Some(b) = self.behind.get_mut(c.id as usize) {
            b.iter_mut().for_each(Behind::clear);
        }
        self.free_slots.push(c.id);
        Ok(())
    }

    fn sinks(&mut self) -> Option<&mut dyn StreamSinks> {
        Some(self)
    }

    fn enter(&mut self, c: &Slot) {
        self.cur = *c;
    }

    fn packet(&mut self, data: &[u8], record_off: u64) {
        let off = self.file.as_ref().map(|(_, hdr)| record_off + hdr);
        self.pkt = (data.as_ptr() as usize, data.len(), off);
    }

    fn take_error(&mut self) -> Option<StreamsError> {
        self.error.take()
    }
}

/// The reassembler's in-order bytes, straight from the segment: copied once, into the
/// batch (or hashed on the spot, for a connection hashed here). Retransmissions below the
/// frontier are compared here, with the bytes read back from the capture file (or from a
/// copy of each direction's last `keep_behind` bytes, [`Window`]).
impl StreamSinks for Handoff {
    fn append(&mut self, _flow: FlowId, dir: Direction, at: u64, bytes: &[u8]) {
        self.append_dir(dir_i(dir), at, bytes);
    }

    fn differing(&self, _flow: FlowId, dir: Direction, at: u64, new: &[u8]) -> Option<u64> {
        let b = &self.behind.get(self.cur.id as usize)?[dir_i(dir)];
        match &self.file {
            Some((file, _)) => b.differing_refs(at, new, file, &mut self.scratch.borrow_mut()),
            None => Some(b.copy.differing(self.cap, at, new)),
        }
    }
}

/// The last `cap` bytes of one direction (as far as they were received), to compare
/// retransmissions with: byte `o` lives at `buf[o % cap]` once the stream passed `cap`
/// bytes; before that, `buf` holds `[0, end)` and grows with it.
#[derive(Default)]
struct Window {
    buf: Vec<u8>,
    /// Offset after the last byte.
    end: u64,
    /// First offset held since the last discontinuity (a gap skipped at the end).
    start: u64,
}

impl Window {
    /// `buf` is still the plain prefix `[0, end)`.
    fn is_prefix(&self, cap: usize) -> bool {
        self.start == 0 && self.buf.len() as u64 == self.end && self.end <= cap as u64
    }

    fn push(&mut self, cap: usize, at: u64, bytes: &[u8]) {
        if cap == 0 || bytes.is_empty() {
            return;
        }
        if self.is_prefix(cap) && at == self.end && at + bytes.len() as u64 <= cap as u64 {
            self.buf.extend_from_slice(bytes);
            self.end += bytes.len() as u64;
            return;
        }
        if at != self.end {
            self.start = at;
        }
        self.end = at + bytes.len() as u64;
        if self.buf.len() < cap {
            self.buf.resize(cap, 0);
        }
        let skip = bytes.len().saturating_sub(cap);
        let (mut o, mut rest) = (at + skip as u64, &bytes[skip..]);
        while !rest.is_empty() {
            let pos = (o % cap as u64) as usize;
            let n = (cap - pos).min(rest.len());
            self.buf[pos..pos + n].copy_from_slice(&rest[..n]);
            rest = &rest[n..];
            o += n as u64;
        }
    }

    /// Bytes of `new` (at offset `at`) that differ from those held; bytes not held count
    /// as equal (not reached: the reassembler compares only within `keep_behind`).
    fn differing(&self, cap: usize, at: u64, new: &[u8]) -> u64 {
        if cap == 0 {
            return 0;
        }
        let prefix = self.is_prefix(cap);
        let lo = self.start.max(self.end.saturating_sub(cap as u64));
        let stop = at.saturating_add(new.len() as u64).min(self.end);
        let mut diff = 0u64;
        let mut o = at.max(lo);
        while o < stop {
            let pos = if prefix { o as usize } else { (o % cap as u64) as usize };
            let n = ((stop - o) as usize).min(self.buf.len() - pos);
            if n == 0 {
                break;
            }
            let held = &self.buf[pos..pos + n];
            let off = (o - at) as usize;
            diff += held.iter().zip(&new[off..off + n]).filter(|(x, y)| x != y).count() as u64;
            o += n as u64;
        }
        diff
    }
}

/// The hashing thread's side: hashes and dumps each batch, hands records over in the
/// order the reader ended them, sends the empty batch back.
fn hash_batches(
    rx: Receiver<Batch>,
    back: Sender<Batch>,
    opts: &StreamsOptions,
    sink: &mut dyn FnMut(ConnectionRecord) -> Result<(), StreamsError>,
) -> Result<(), StreamsError> {
    let mut slots: Vec<Option<Hashers>> = Vec::new();
    for mut batch in rx {
        let mut at = 0usize;
        for item in batch.items.drain(..) {
            match item {
                Item::Open { slot, index } => {
                    let slot = slot as usize;
                    if slots.len() <= slot {
                        slots.resize_with(slot + 1, || None);
                    }
                    slots[slot] = Some(Hashers::open(index, opts)?);
                }
                Item::Data { slot, dir, len } => {
                    let bytes = &batch.bytes[at..at + len as usize];
                    at += len as usize;
                    if let Some(h) = slots.get_mut(slot as usize).and_then(Option::as_mut) {
                        h.data(usize::from(dir) & 1, bytes, opts)?;
                    }
                }
                Item::End { slot, mut rec } => {
                    if let Some(h) = slots.get_mut(slot as usize).and_then(Option::take) {
                        h.finish(&mut rec, opts)?;
                    }
                    sink(*rec)?;
                }
                Item::Done { rec } => sink(*rec)?,
            }
        }
        batch.bytes.clear();
        // The reader may be gone (finished): the batch is then dropped.
        let _ = back.send(batch);
    }
    Ok(())
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

    /// The hashing thread's window against the plain model: every byte kept, compared when
    /// it lies within `cap` of the end and after the last discontinuity.
    #[test]
    fn window_compares_as_a_full_copy_would() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut rnd = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for cap in [0usize, 1, 7, 64, 1000] {
            let mut w = Window::default();
            let mut all: Vec<Option<u8>> = Vec::new();
            let mut start = 0u64;
            for _ in 0..400 {
                let end = all.len() as u64;
                if rnd(10) < 7 {
                    // Append, sometimes after a skipped gap.
                    let gap = if rnd(20) == 0 { rnd(50) } else { 0 };
                    let n = 1 + rnd(300) as usize;
                    let bytes: Vec<u8> = (0..n).map(|_| rnd(4) as u8).collect();
                    all.extend(std::iter::repeat_n(None, gap as usize));
                    if gap > 0 {
                        start = end + gap;
                    }
                    all.extend(bytes.iter().map(|&b| Some(b)));
                    w.push(cap, end + gap, &bytes);
                } else if end > 0 {
                    let at = rnd(end);
                    let n = 1 + rnd((end - at).min(400)) as usize;
                    let new: Vec<u8> = (0..n).map(|_| rnd(4) as u8).collect();
                    let lo = start.max(end.saturating_sub(cap as u64));
                    let want = (at..at + n as u64)
                        .filter(|&o| o >= lo && cap > 0)
                        .filter(|&o| all[o as usize].is_some_and(|b| b != new[(o - at) as usize]))
                        .count() as u64;
                    assert_eq!(w.differing(cap, at, &new), want, "cap {cap}, at {at}, n {n}, end {end}");
                }
            }
            assert!(w.buf.len() <= cap.max(1) || cap == 0, "cap {cap}: {}", w.buf.len());
        }
    }

    #[test]
    fn items_stay_small() {
        assert!(std::mem::size_of::<Item>() <= 16, "{}", std::mem::size_of::<Item>());
    }

    #[test]
    fn hex_is_lowercase_two_digits_per_byte() {
        assert_eq!(hex(&[0, 0x0f, 0xa0, 0xff]), "000fa0ff");
    }
}
