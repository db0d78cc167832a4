//! One direction of a TCP bytestream, reassembled the way a passive middlebox sees it.
//!
//! Pure logic: no I/O, no TCP state. The TCP monitor feeds every segment's payload to
//! [`ByteStream::insert`] with its sequence number, raises `DATA_RDY` when the
//! [frontier](ByteStream::frontier) moved, lets events read `stream[..frontier_at_event]`
//! with [`ByteStream::read`] (no copy), and calls [`ByteStream::release_until`] with the
//! low-water mark of the frontiers still held by live events.
//!
//! ```
//! use stacks::reassembly::{Budget, ByteStream, ReassemblyConfig};
//!
//! let mut budget = Budget::default(); // limit 0: unlimited
//! let mut s = ByteStream::new(1000, &ReassemblyConfig::default());
//! let ins = s.insert(1005, b"world", &mut budget); // out of order: waits beside the stream
//! assert!(ins.out_of_order);
//! assert_eq!((s.frontier(), s.ooo_bytes()), (0, 5));
//! let ins = s.insert(1000, b"hello", &mut budget); // fills the hole: both become readable
//! assert_eq!(ins.advanced, 10);
//! let bytes: Vec<u8> = s.read(0, s.frontier()).unwrap().to_vec(); // received bytes (gaps: `Chunk::Gap`)
//! assert_eq!(bytes, b"helloworld");
//! assert_eq!(s.frontier_seq(), 1010);
//! s.clear(&mut budget);
//! assert_eq!(budget.used, 0);
//! ```
//!
//! # The story of a byte
//!
//! Offsets count bytes from the stream's first byte (offset 0 has sequence number
//! `first_seq`, for a connection the SYN's sequence number + 1). A segment's offset is found
//! from its sequence number *relative to the frontier's*, as a signed 32-bit distance, so
//! sequence numbers may wrap any number of times: a segment up to 2 GiB behind the frontier is
//! old data, one up to 2 GiB ahead is future data. Bytes that would lie before offset 0 are
//! trimmed (counted in [`Insert::old`]).
//!
//! All bytes live in chunks of `chunk_size` bytes (`Box<[u8]>`), chunk `i` holding offsets
//! `[i * chunk_size, (i + 1) * chunk_size)`. A chunk is allocated when its first byte
//! arrives and never moves or changes size afterwards. Chunks that hold at least one byte
//! below the frontier sit in order in a `VecDeque`; chunks that lie wholly beyond the
//! frontier (out-of-order data) sit in a `BTreeMap` beside it, and a separate map of
//! non-overlapping, non-adjacent ranges says which bytes of them are really held. When a
//! segment fills the hole at the frontier, the frontier jumps over every out-of-order range
//! that is now contiguous, in that one `insert`, and the chunks move (the boxes, not the
//! bytes) from the side map into the deque: out-of-order data is never copied again.
//!
//! # Streams with a sink
//!
//! A stream made with [`ByteStream::new_with_sink`] keeps no in-order bytes: whatever becomes
//! contiguous is appended, in offset order, to the [`InOrderSink`] passed to
//! [`ByteStream::insert_into`] / [`ByteStream::finish_into`] — straight from the segment,
//! or from the out-of-order chunks when a hole fills (their chunks are then freed) — and
//! overlaps below the frontier are compared with the sink's bytes
//! ([`InOrderSink::differing`]). The TCP monitor uses this to keep each contiguous byte only
//! in its shared stream store (copied once). Everything else — limits, policies, counters,
//! the frontier, gaps — is the same as for a stream that keeps its bytes (a property test
//! runs both side by side); the budget charges such a stream for the chunks its
//! `[base, frontier)` spans outside skipped gaps (what the sink holds for it) plus its
//! out-of-order chunks, where the chunk the frontier lies in may be counted on both sides
//! (one chunk more than a stream that keeps its bytes, at most).
//!
//! # Invariants
//!
//! * **The frontier** is the length of the contiguous prefix received: it never moves
//!   backwards and never passes a hole — except in [`ByteStream::finish`], which skips holes
//!   that will never be filled (the connection ended): the skipped ranges are counted as gaps,
//!   listed by [`ByteStream::gaps`], and read as [`Chunk::Gap`]s — their length only, never
//!   zero bytes, so a hole of any size costs O(1) to skip.
//! * **Nothing below the frontier ever changes**: those bytes may already have been seen by
//!   network functions. A reader's [`read`](ByteStream::read) slices point into chunks that
//!   never move.
//! * Every out-of-order range starts strictly beyond the frontier; ranges never overlap or
//!   touch (touching ranges are merged).
//! * [`ByteStream::memory`] is exactly `chunk_size` × the number of chunks held, and this
//!   stream's share of [`Budget::used`] is always exactly that.
//! * `stats().bytes == frontier()`.
//!
//! # Policies
//!
//! * **Overlaps below the frontier** are compared with what is held and never rewritten,
//!   whatever the [`OverlapPolicy`]: identical bytes count as [`Insert::duplicate`], different
//!   ones as [`Insert::conflicting`] (and in [`StreamStats::overlap_conflicts`]). Bytes below
//!   the [base](ByteStream::base) (released) or inside a skipped gap cannot be compared: they
//!   count as [`Insert::old`].
//! * **Overlaps in the out-of-order area** are compared too; with [`OverlapPolicy::First`]
//!   the held bytes stay, with [`OverlapPolicy::Last`] the new ones replace them. A segment
//!   that partly overlaps held data contributes its new parts either way.
//! * **Limits.** A segment is refused whole — nothing of it is taken or compared, it is
//!   counted in `refused_segments` / `refused_bytes` and its reason returned in
//!   [`Insert::refused`] — when it starts more than `max_ahead` bytes beyond the frontier
//!   ([`Refused::TooFarAhead`]), when it would stay out of order and raise the number of
//!   out-of-order ranges above `max_ooo_segments` ([`Refused::OooSegmentsLimit`]) or the
//!   out-of-order data above `max_ooo_bytes` ([`Refused::OooBytesLimit`]), or when the chunks
//!   it needs would push the [`Budget`] over its limit ([`Refused::Memory`]). Out-of-order
//!   *memory* is bounded too: since data is kept in whole chunks, the chunks held beyond the
//!   frontier may not exceed `max_ooo_bytes` rounded up to a whole chunk, plus one chunk (a
//!   dense out-of-order range of `max_ooo_bytes` always fits; sparse tiny segments are refused
//!   with `OooBytesLimit` sooner). A segment that starts at or before the frontier is never
//!   refused for out-of-order limits (it only shrinks the out-of-order area).
//! * **Depth.** With `depth: Some(d)`, bytes at offsets `>= d` are ignored: counted in
//!   `refused_bytes`, `depth_reached` set, [`Refused::Depth`] returned (the bytes below `d`
//!   of the same segment are still taken, unless another limit refuses them).
//! * **Memory.** Every chunk allocated is charged to the shared [`Budget`] (`used`,
//!   `high_water`); an insert that would push `used` over a non-zero `limit` is refused with
//!   [`Refused::Memory`] (its bytes counted in `Budget::refused_bytes` too). Memory comes back
//!   in [`ByteStream::release_until`] and [`ByteStream::clear`]; a stream has no `Drop`
//!   accounting, so call `clear` before dropping it. One stream's memory is bounded by what
//!   the caller has not released plus the out-of-order bound above: no input makes it grow
//!   otherwise.
//! * **Zero-length data** is a no-op (not even counted as a segment).
//! * Nothing panics, whatever the input.

pub use actors::contract::Chunk;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::ops::Range;
use std::sync::Arc;

/// Default size of a chunk in bytes.
pub const DEFAULT_CHUNK: usize = 4096;

/// Largest accepted `chunk_size`; larger values are clamped to it by [`ByteStream::new`].
pub const MAX_CHUNK: usize = 1 << 20;

/// Which bytes win when retransmitted data overlaps out-of-order data already held and
/// differs. Below the frontier the held bytes always win (they may have been seen already).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OverlapPolicy {
    /// The bytes held first stay (Suricata's and most BSD stacks' behaviour).
    #[default]
    First,
    /// The newest bytes replace the held ones.
    Last,
}

/// Limits and policies of one direction's reassembly.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReassemblyConfig {
    /// Bytes of out-of-order data held per direction (default 1 MiB).
    pub max_ooo_bytes: usize,
    /// Separate out-of-order ranges held per direction (default 1024).
    pub max_ooo_segments: usize,
    /// A segment starting more than this many bytes beyond the frontier is refused
    /// (default 64 MiB).
    pub max_ahead: u64,
    /// Reassemble at most this many bytes of the stream; `None` (default) is unlimited.
    pub depth: Option<u64>,
    /// Who wins an overlap in the out-of-order area (default [`OverlapPolicy::First`]).
    pub overlap: OverlapPolicy,
    /// Size of a chunk in bytes (default [`DEFAULT_CHUNK`]; 1..=[`MAX_CHUNK`]).
    pub chunk_size: usize,
}

impl Default for ReassemblyConfig {
    fn default() -> Self {
        ReassemblyConfig {
            max_ooo_bytes: 1 << 20,
            max_ooo_segments: 1024,
            max_ahead: 64 << 20,
            depth: None,
            overlap: OverlapPolicy::First,
            chunk_size: DEFAULT_CHUNK,
        }
    }
}

/// A [`ReassemblyConfig`] value out of range.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// `chunk_size` must be in `1..=MAX_CHUNK`.
    #[error("reassembly chunk_size {0} is not in 1..={MAX_CHUNK}")]
    ChunkSize(usize),
}

impl ReassemblyConfig {
    /// Checks the values a loader should reject ([`ByteStream::new`] clamps them instead).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.chunk_size == 0 || self.chunk_size > MAX_CHUNK {
            return Err(ConfigError::ChunkSize(self.chunk_size));
        }
        Ok(())
    }
}

/// Memory accounting shared by all the streams of one TCP monitor (passed by `&mut`).
///
/// It also keeps the chunks its streams gave back (up to [`SPARE_BYTES`]) and hands them
/// out again: a monitor's streams free and take chunks all the time, and a recycled chunk
/// costs neither an allocation, nor zeroing, nor fresh pages. Spare chunks are not held by
/// any stream, so they are not in `used`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Budget {
    /// Bytes that may be held in all; 0 is unlimited.
    pub limit: usize,
    /// Bytes held now (chunk capacity of every stream charged to this budget).
    pub used: usize,
    /// The largest `used` seen.
    pub high_water: usize,
    /// Bytes of segments refused because the limit would have been passed.
    pub refused_bytes: u64,
    #[serde(skip)]
    spare: SpareChunks,
}

/// At most this many bytes of freed chunks are kept for reuse by one [`Budget`] (at least
/// one chunk, whatever its size).
pub const SPARE_BYTES: usize = 1 << 20;

/// Freed chunks kept for reuse (their old bytes are never read: a stream reads only bytes
/// it wrote).
#[derive(Clone, Default)]
struct SpareChunks(Vec<Box<[u8]>>);

impl std::fmt::Debug for SpareChunks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} spare chunks", self.0.len())
    }
}

impl Budget {
    /// An empty budget with the given limit (0: unlimited).
    pub fn with_limit(limit: usize) -> Budget {
        Budget { limit, ..Budget::default() }
    }

    /// Freed chunks kept for reuse now.
    pub fn spare_chunks(&self) -> usize {
        self.spare.0.len()
    }

    /// A chunk of `size` bytes: a spare one of that size if any, else a new one.
    fn take_chunk(&mut self, size: usize) -> Box<[u8]> {
        match self.spare.0.pop() {
            Some(c) if c.len() == size => c,
            _ => vec![0; size].into_boxed_slice(),
        }
    }

    /// Takes back a chunk a stream no longer holds (kept while under [`SPARE_BYTES`]).
    fn recycle(&mut self, chunk: Box<[u8]>) {
        let keep = SPARE_BYTES / chunk.len().max(1);
        if self.spare.0.len() < keep.max(1) {
            self.spare.0.push(chunk);
        }
    }

    fn would_exceed(&self, more: usize) -> bool {
        self.limit != 0 && self.used.saturating_add(more) > self.limit
    }

    pub(crate) fn charge(&mut self, bytes: usize) {
        self.used = self.used.saturating_add(bytes);
        self.high_water = self.high_water.max(self.used);
    }

    pub(crate) fn give_back(&mut self, bytes: usize) {
        self.used = self.used.saturating_sub(bytes);
    }
}

/// What one [`ByteStream::insert`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Insert {
    /// How far the frontier moved (this segment's bytes plus out-of-order data it joined).
    pub advanced: u64,
    /// New bytes put in the out-of-order area.
    pub new_ooo: u64,
    /// Bytes already held and identical.
    pub duplicate: u64,
    /// Bytes already held and different.
    pub conflicting: u64,
    /// Why (part of) the segment was refused, if it was.
    pub refused: Option<Refused>,
    /// The segment started beyond the frontier.
    pub out_of_order: bool,
    /// Bytes below the base (released), inside a skipped gap, or before offset 0: not
    /// comparable, ignored.
    pub old: u64,
}

/// Why a segment (or its part beyond `depth`) was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// It would have raised the out-of-order bytes (or their chunks) over `max_ooo_bytes`.
    OooBytesLimit,
    /// It would have raised the out-of-order ranges over `max_ooo_segments`.
    OooSegmentsLimit,
    /// It started more than `max_ahead` beyond the frontier.
    TooFarAhead,
    /// Bytes beyond `depth` (only those) were ignored.
    Depth,
    /// The shared [`Budget`] would have passed its limit.
    Memory,
}

/// Refused inserts by [`Refused`] reason: one counter per limit, so that an operator sees
/// which limit was hit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RefusedCounts {
    /// [`Refused::Memory`]: the shared budget (`memory_limit`) was exhausted.
    pub memory: u64,
    /// [`Refused::OooBytesLimit`]: `max_ooo_bytes`.
    pub ooo_bytes: u64,
    /// [`Refused::OooSegmentsLimit`]: `max_ooo_segments`.
    pub ooo_segments: u64,
    /// [`Refused::TooFarAhead`]: `max_ahead`.
    pub ahead: u64,
    /// [`Refused::Depth`]: `depth`.
    pub depth: u64,
}

impl RefusedCounts {
    /// Counts one insert refused for `why`.
    pub fn count(&mut self, why: Refused) {
        *match why {
            Refused::Memory => &mut self.memory,
            Refused::OooBytesLimit => &mut self.ooo_bytes,
            Refused::OooSegmentsLimit => &mut self.ooo_segments,
            Refused::TooFarAhead => &mut self.ahead,
            Refused::Depth => &mut self.depth,
        } += 1;
    }

    /// Adds what `after` counted beyond `before`.
    pub fn add_delta(&mut self, before: &RefusedCounts, after: &RefusedCounts) {
        self.memory += after.memory - before.memory;
        self.ooo_bytes += after.ooo_bytes - before.ooo_bytes;
        self.ooo_segments += after.ooo_segments - before.ooo_segments;
        self.ahead += after.ahead - before.ahead;
        self.depth += after.depth - before.depth;
    }

    /// `(counter name, value)` pairs for stats: `refused_memory`, `refused_ooo_bytes`, ...
    pub fn named(&self) -> [(&'static str, u64); 5] {
        [
            ("refused_memory", self.memory),
            ("refused_ooo_bytes", self.ooo_bytes),
            ("refused_ooo_segments", self.ooo_segments),
            ("refused_ahead", self.ahead),
            ("refused_depth", self.depth),
        ]
    }
}

/// What [`ByteStream::finish`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Finish {
    /// Out-of-order bytes delivered (the frontier moved over them).
    pub delivered: u64,
    /// Holes skipped.
    pub gaps: u64,
    /// Bytes in the holes skipped.
    pub gap_bytes: u64,
}

/// Counters of one stream.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StreamStats {
    /// Bytes reassembled: always equal to the frontier.
    pub bytes: u64,
    /// Non-empty segments inserted.
    pub segments: u64,
    /// Segments that started beyond the frontier (refused or not).
    pub ooo_segments: u64,
    /// Bytes received again: duplicates, conflicts and old bytes.
    pub retransmitted_bytes: u64,
    /// Bytes received again with different content.
    pub overlap_conflicts: u64,
    /// Holes skipped by `finish`.
    pub gaps: u64,
    /// Bytes in those holes.
    pub gap_bytes: u64,
    /// Inserts with a [`Refused`] reason.
    pub refused_segments: u64,
    /// The same inserts, by reason.
    pub refused: RefusedCounts,
    /// Bytes refused (including bytes beyond `depth`).
    pub refused_bytes: u64,
    /// Some byte lay at or beyond `depth`.
    pub depth_reached: bool,
    /// Out-of-order bytes thrown away by [`ByteStream::clear`].
    pub cleared_ooo_bytes: u64,
}

/// Why [`ByteStream::read`] refused a range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// The range starts below the base: those bytes were released.
    #[error("read from offset {from} but bytes below {base} were released")]
    Released { from: u64, base: u64 },
    /// The range ends beyond the frontier: those bytes are not contiguous yet.
    #[error("read up to offset {to} beyond the frontier {frontier}")]
    BeyondFrontier { to: u64, frontier: u64 },
    /// `from > to`.
    #[error("read range {from}..{to} is reversed")]
    Reversed { from: u64, to: u64 },
    /// The stream hands its in-order bytes to an [`InOrderSink`]: read them there.
    #[error("the stream's in-order bytes are kept by its sink (the stream store), not by the reassembler")]
    InSink,
}

/// Where a stream created with [`ByteStream::new_with_sink`] puts its in-order bytes: the
/// TCP monitor's stream store, so that each contiguous byte is copied once, straight from
/// the packet (or from the out-of-order area when a hole fills) into the memory readers read.
pub trait InOrderSink {
    /// Appends `bytes` at stream offset `at`: at the end of what was appended before, or
    /// beyond it (the bytes between are a skipped gap). Appends come in offset order.
    fn append(&mut self, at: u64, bytes: &[u8]);
    /// How many bytes of `new` differ from those held at `at..` (all below the frontier and
    /// at or above the base), or `None` if the sink cannot tell (they count as old).
    fn differing(&self, at: u64, new: &[u8]) -> Option<u64>;
}

/// The sink of a stream that keeps its own bytes: never called.
struct NoSink;

impl InOrderSink for NoSink {
    fn append(&mut self, _at: u64, _bytes: &[u8]) {}
    fn differing(&self, _at: u64, _new: &[u8]) -> Option<u64> {
        None
    }
}

/// A range of a stream as [`Chunk`]s, in order, without copying: slices over the chunks
/// for bytes received, one [`Chunk::Gap`] per skipped hole (or part of one) in the range —
/// O(1) per gap whatever its length: gap bytes are never materialised.
#[derive(Clone, Debug)]
pub struct Slices<'a> {
    chunks: &'a VecDeque<(u64, Box<[u8]>)>,
    gaps: &'a VecDeque<Range<u64>>,
    chunk_size: u64,
    /// Index in `chunks` of the first chunk whose index is >= the chunk of `at`.
    pos: usize,
    /// Index in `gaps` of the first gap ending after `at`.
    gpos: usize,
    at: u64,
    end: u64,
}

impl<'a> Slices<'a> {
    /// Bytes not yet yielded (gap bytes included).
    pub fn remaining(&self) -> u64 {
        self.end - self.at
    }

    /// The received bytes only, gaps skipped.
    pub fn data(self) -> impl Iterator<Item = &'a [u8]> {
        self.filter_map(|c| match c {
            Chunk::Data(d) => Some(d),
            Chunk::Gap(_) => None,
        })
    }

    /// Copies the received bytes into one vector, gaps skipped (for tests and slow paths).
    pub fn to_vec(self) -> Vec<u8> {
        let mut v = Vec::with_capacity(usize::try_from(self.remaining()).unwrap_or(0).min(1 << 20));
        for s in self.data() {
            v.extend_from_slice(s);
        }
        v
    }

    /// Moves to `at`, after a gap (the chunk position follows).
    fn skip_to(&mut self, at: u64) {
        self.at = at;
        let idx = at / self.chunk_size;
        self.pos = self.chunks.partition_point(|(i, _)| *i < idx);
    }
}

impl<'a> Iterator for Slices<'a> {
    type Item = Chunk<'a>;

    fn next(&mut self) -> Option<Chunk<'a>> {
        if self.at >= self.end {
            return None;
        }
        while self.gaps.get(self.gpos).is_some_and(|g| g.end <= self.at) {
            self.gpos += 1;
        }
        let gap = self.gaps.get(self.gpos);
        if let Some(g) = gap.filter(|g| g.start <= self.at) {
            let stop = g.end.min(self.end);
            let n = stop - self.at;
            self.skip_to(stop);
            return Some(Chunk::Gap(n));
        }
        let idx = self.at / self.chunk_size;
        let within = self.at % self.chunk_size;
        let stop = (idx + 1).saturating_mul(self.chunk_size).min(self.end).min(gap.map_or(u64::MAX, |g| g.start));
        match self.chunks.get(self.pos) {
            Some((i, chunk)) if *i == idx => {
                let lo = usize::try_from(within).ok()?;
                let hi = usize::try_from(stop - idx * self.chunk_size).ok()?;
                let s = chunk.get(lo..hi)?;
                self.at = stop;
                if self.at == (idx + 1) * self.chunk_size {
                    self.pos += 1;
                }
                Some(Chunk::Data(s))
            }
            // Below the frontier every byte outside a gap is held: not reached. Defensive:
            // what is not held reads as a gap up to the next chunk, never as zeros.
            next => {
                let held = next.map_or(self.end, |(i, _)| i.saturating_mul(self.chunk_size));
                let stop = held.min(self.end).min(gap.map_or(u64::MAX, |g| g.start)).max(self.at + 1);
                let n = stop - self.at;
                self.skip_to(stop);
                Some(Chunk::Gap(n))
            }
        }
    }
}

/// What a [`ByteStream`] holds besides its counters and offsets.
#[derive(Debug, Default)]
struct Held {
    /// Chunks holding at least one byte below the frontier, by increasing index (sparse only
    /// where `finish` skipped whole chunks).
    chunks: VecDeque<(u64, Box<[u8]>)>,
    /// Chunks wholly beyond the frontier, by index.
    ooo_chunks: BTreeMap<u64, Box<[u8]>>,
    /// Out-of-order ranges held: start → end, non-overlapping, non-adjacent, start > frontier.
    ooo: BTreeMap<u64, u64>,
    ooo_bytes: u64,
    /// Ranges skipped by `finish` that end above the base.
    gaps: VecDeque<Range<u64>>,
    /// The stream's counters but `bytes` (the frontier) and `segments` (kept in the
    /// stream): here, as they stay zero on most streams (8 bytes less per stream).
    stats: StreamStats,
}

impl Held {
    fn is_empty(&self) -> bool {
        self.chunks.is_empty()
            && self.ooo_chunks.is_empty()
            && self.ooo.is_empty()
            && self.ooo_bytes == 0
            && self.gaps.is_empty()
            && self.stats == NO_STATS
    }
}

/// What an absent [`LazyHeld`] reads as.
static NOTHING_HELD: Held = Held {
    chunks: VecDeque::new(),
    ooo_chunks: BTreeMap::new(),
    ooo: BTreeMap::new(),
    ooo_bytes: 0,
    gaps: VecDeque::new(),
    stats: NO_STATS,
};

/// A [`Held`] boxed on first mutable use; read through [`Deref`](std::ops::Deref) as empty
/// while absent. [`ByteStream::recharge`] drops it once it is empty again.
#[derive(Debug, Default)]
struct LazyHeld(Option<Box<Held>>);

impl std::ops::Deref for LazyHeld {
    type Target = Held;
    fn deref(&self) -> &Held {
        self.0.as_deref().unwrap_or(&NOTHING_HELD)
    }
}

impl std::ops::DerefMut for LazyHeld {
    fn deref_mut(&mut self) -> &mut Held {
        self.0.get_or_insert_with(Box::default)
    }
}

/// One direction of a TCP bytestream: contiguous data from the base to the frontier,
/// out-of-order data beside it. See the [module documentation](self).
#[derive(Debug)]
pub struct ByteStream {
    first_seq: u32,
    /// Shared by every stream of a tracker ([`new_shared`](Self::new_shared)): one copy per
    /// monitor, not one per direction of every connection.
    cfg: Arc<ReassemblyConfig>,
    /// Chunks, out-of-order ranges, gaps and the rarer counters: allocated when first
    /// needed, dropped when empty (and the counters zero) again, so that a stream whose
    /// bytes all went to its sink in order (most streams of the TCP monitor) carries one
    /// word for them, not 250 bytes.
    held: LazyHeld,
    base: u64,
    frontier: u64,
    /// Bytes charged to the budget: `(chunks.len() + ooo_chunks.len()) * chunk_size`, or
    /// for a stream with a sink, its out-of-order chunks plus the chunks `[base, frontier)`
    /// spans (what the sink holds for it).
    charged: usize,
    /// In-order bytes go to an [`InOrderSink`] (`chunks` stays empty; `ooo_chunks` may hold
    /// the chunk the frontier lies in, whose bytes below the frontier are then stale).
    sink: bool,
    /// Non-empty segments inserted (`StreamStats::segments`).
    segments: u64,
}

/// All-zero counters: what a stream's absent [`Held`] reads as.
const NO_STATS: StreamStats = StreamStats {
    bytes: 0,
    segments: 0,
    ooo_segments: 0,
    retransmitted_bytes: 0,
    overlap_conflicts: 0,
    gaps: 0,
    gap_bytes: 0,
    refused_segments: 0,
    refused: RefusedCounts { memory: 0, ooo_bytes: 0, ooo_segments: 0, ahead: 0, depth: 0 },
    refused_bytes: 0,
    depth_reached: false,
    cleared_ooo_bytes: 0,
};

impl ByteStream {
    /// A stream whose byte at offset 0 has sequence number `first_seq` (for a connection: the
    /// SYN's sequence number + 1). A `chunk_size` out of `1..=MAX_CHUNK` is clamped into it.
    pub fn new(first_seq: u32, cfg: &ReassemblyConfig) -> ByteStream {
        ByteStream::new_shared(first_seq, &Arc::new(cfg.clone()))
    }

    /// Like [`new`](Self::new), sharing `cfg` (not copying it) when its `chunk_size` is in
    /// range: the TCP tracker's streams all point at its one configuration.
    pub fn new_shared(first_seq: u32, cfg: &Arc<ReassemblyConfig>) -> ByteStream {
        let cfg = if (1..=MAX_CHUNK).contains(&cfg.chunk_size) {
            cfg.clone()
        } else {
            Arc::new(ReassemblyConfig { chunk_size: cfg.chunk_size.clamp(1, MAX_CHUNK), ..(**cfg).clone() })
        };
        ByteStream {
            first_seq,
            cfg,
            held: LazyHeld::default(),
            base: 0,
            frontier: 0,
            charged: 0,
            sink: false,
            segments: 0,
        }
    }

    /// Like [`new`](Self::new), but in-order bytes are handed to the [`InOrderSink`] given
    /// to [`insert_into`](Self::insert_into) and [`finish_into`](Self::finish_into) instead of
    /// being kept: [`read`](Self::read) answers [`ReadError::InSink`]. Limits, policies,
    /// counters and the frontier are those of a stream that keeps its bytes; overlaps below
    /// the frontier are compared through [`InOrderSink::differing`].
    pub fn new_with_sink(first_seq: u32, cfg: &ReassemblyConfig) -> ByteStream {
        ByteStream { sink: true, ..ByteStream::new(first_seq, cfg) }
    }

    /// [`new_with_sink`](Self::new_with_sink) sharing `cfg` as [`new_shared`](Self::new_shared) does.
    pub fn new_shared_with_sink(first_seq: u32, cfg: &Arc<ReassemblyConfig>) -> ByteStream {
        ByteStream { sink: true, ..ByteStream::new_shared(first_seq, cfg) }
    }

    /// In-order bytes go to a sink (see [`new_with_sink`](Self::new_with_sink)).
    pub fn has_sink(&self) -> bool {
        self.sink
    }

    /// The chunk size (read from the shared configuration rather than kept beside it: 8
    /// bytes less per stream, issue 14).
    #[inline]
    fn cs(&self) -> u64 {
        self.cfg.chunk_size as u64
    }

    /// The configuration in force (with `chunk_size` clamped).
    pub fn config(&self) -> &ReassemblyConfig {
        &self.cfg
    }

    /// Contiguous bytes available from offset 0.
    pub fn frontier(&self) -> u64 {
        self.frontier
    }

    /// First offset still readable (bytes below it were released).
    pub fn base(&self) -> u64 {
        self.base
    }

    /// Sequence number of the frontier.
    pub fn frontier_seq(&self) -> u32 {
        // Truncation is the point: sequence numbers are offsets modulo 2^32.
        self.first_seq.wrapping_add(self.frontier as u32)
    }

    /// Sequence number of offset 0.
    pub fn first_seq(&self) -> u32 {
        self.first_seq
    }

    /// Counters (a copy: most are kept boxed, and `bytes` is the frontier).
    pub fn stats(&self) -> StreamStats {
        StreamStats { bytes: self.frontier, segments: self.segments, ..self.held.stats.clone() }
    }

    /// Bytes of out-of-order data held.
    pub fn ooo_bytes(&self) -> usize {
        usize::try_from(self.held.ooo_bytes).unwrap_or(usize::MAX)
    }

    /// Separate out-of-order ranges held.
    pub fn ooo_ranges(&self) -> usize {
        self.held.ooo.len()
    }

    /// Bytes of memory held: chunks (in order and out of order), `chunk_size` each.
    pub fn memory(&self) -> usize {
        self.charged
    }

    /// Ranges skipped by [`finish`](Self::finish) that end above the base (they read as
    /// [`Chunk::Gap`]s).
    pub fn gaps(&self) -> impl Iterator<Item = Range<u64>> + '_ {
        self.held.gaps.iter().cloned()
    }

    /// The range `[from, to)` as [`Chunk`]s: slices over the chunks, without copying, and
    /// the skipped gaps by length.
    pub fn read(&self, from: u64, to: u64) -> Result<Slices<'_>, ReadError> {
        if self.sink {
            return Err(ReadError::InSink);
        }
        if from > to {
            return Err(ReadError::Reversed { from, to });
        }
        if from < self.base {
            return Err(ReadError::Released { from, base: self.base });
        }
        if to > self.frontier {
            return Err(ReadError::BeyondFrontier { to, frontier: self.frontier });
        }
        let idx = from / self.cs();
        let pos = self.held.chunks.partition_point(|(i, _)| *i < idx);
        let gpos = self.held.gaps.partition_point(|g| g.end <= from);
        Ok(Slices {
            chunks: &self.held.chunks,
            gaps: &self.held.gaps,
            chunk_size: self.cs(),
            pos,
            gpos,
            at: from,
            end: to,
        })
    }

    /// Adds a segment's payload starting at sequence number `seq`. See the module
    /// documentation for the policies.
    pub fn insert(&mut self, seq: u32, data: &[u8], budget: &mut Budget) -> Insert {
        self.insert_into(seq, data, budget, &mut NoSink)
    }

    /// [`insert`](Self::insert) for a stream with a sink: the bytes that become contiguous
    /// are appended to `sink` (for a stream without one, `sink` is never called).
    pub fn insert_into(&mut self, seq: u32, data: &[u8], budget: &mut Budget, sink: &mut dyn InOrderSink) -> Insert {
        let mut out = Insert::default();
        if data.is_empty() {
            return out;
        }
        self.segments += 1;
        self.insert_inner(seq, data, budget, sink, &mut out);
        if let Some(why) = out.refused {
            self.held.stats.refused_segments += 1;
            self.held.stats.refused.count(why);
        }
        let again = out.old + out.duplicate + out.conflicting;
        if again > 0 {
            self.held.stats.retransmitted_bytes += again;
            self.held.stats.overlap_conflicts += out.conflicting;
        }
        out
    }

    fn insert_inner(
        &mut self,
        seq: u32,
        data: &[u8],
        budget: &mut Budget,
        sink: &mut dyn InOrderSink,
        out: &mut Insert,
    ) {
        // Offset of the segment: a signed 32-bit distance from the frontier.
        let rel = i128::from(seq.wrapping_sub(self.frontier_seq()) as i32);
        let start = i128::from(self.frontier) + rel;
        let mut data = data;
        let start = if start < 0 {
            let cut = usize::try_from(-start).unwrap_or(usize::MAX).min(data.len());
            out.old += cut as u64;
            data = &data[cut..];
            0u64
        } else {
            u64::try_from(start).unwrap_or(u64::MAX)
        };
        if data.is_empty() {
            return;
        }
        if let Some(depth) = self.cfg.depth {
            let keep = depth.saturating_sub(start).min(data.len() as u64) as usize;
            if keep < data.len() {
                let cut = (data.len() - keep) as u64;
                self.held.stats.depth_reached = true;
                self.held.stats.refused_bytes += cut;
                out.refused = Some(Refused::Depth);
                data = &data[..keep];
            }
            if data.is_empty() {
                return;
            }
        }
        let len = data.len() as u64;
        let end = start.saturating_add(len);
        let len = end - start; // only differs from data.len() at absurd offsets
        let data = &data[..usize::try_from(len).unwrap_or(data.len())];
        if start > self.frontier {
            out.out_of_order = true;
            self.held.stats.ooo_segments += 1;
            if start - self.frontier > self.cfg.max_ahead {
                self.refuse(out, Refused::TooFarAhead, len);
                return;
            }
        }

        // Plan the part at or beyond the frontier: which held ranges it overlaps or touches,
        // how many bytes are new, which chunks must be allocated.
        let a = start.max(self.frontier);
        let mut plan = None;
        if a < end {
            let touching: Vec<(u64, u64)> = self
                .held
                .ooo
                .range(..=end)
                .rev()
                .take_while(|(_, &e)| e >= a)
                .map(|(&s, &e)| (s, e))
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            let covered: u64 = touching.iter().map(|&(s, e)| e.min(end).saturating_sub(s.max(a))).sum();
            let new_bytes = (end - a) - covered;
            let merged = Range {
                start: touching.first().map_or(a, |r| r.0.min(a)),
                end: touching.last().map_or(end, |r| r.1.max(end)),
            };
            let lo_idx = a / self.cs();
            let hi_idx = (end - 1) / self.cs();
            let frontier_chunk_held = self.held.chunks.back().map(|(i, _)| *i);
            let mut new_chunks = 0u64;
            let mut new_ooo_chunks = 0u64;
            if new_bytes > 0 && self.sink {
                // With a sink, a segment reaching the frontier only grows the span the sink
                // holds; one beyond it takes out-of-order chunks for every chunk it spans
                // that is not held there.
                if a == self.frontier {
                    let span_after = (merged.end - 1) / self.cs() - self.base.min(merged.end - 1) / self.cs() + 1;
                    new_chunks = span_after.saturating_sub(self.in_order_span() as u64);
                } else {
                    let held_ooo = self.held.ooo_chunks.range(lo_idx..=hi_idx).count() as u64;
                    new_chunks = (hi_idx - lo_idx + 1).saturating_sub(held_ooo);
                    new_ooo_chunks = new_chunks;
                }
            } else if new_bytes > 0 {
                // Chunks spanned by [a, end) that are not held all receive a new byte.
                let held_ooo = self.held.ooo_chunks.range(lo_idx..=hi_idx).count() as u64;
                let held_front = u64::from(frontier_chunk_held.is_some_and(|i| (lo_idx..=hi_idx).contains(&i)));
                new_chunks = (hi_idx - lo_idx + 1) - held_ooo - held_front;
                // A missing chunk below the frontier can only be the frontier's own chunk
                // (after `clear`); every other one goes to the out-of-order side.
                let front_missing =
                    u64::from(lo_idx * self.cs() < self.frontier && frontier_chunk_held != Some(lo_idx));
                new_ooo_chunks = new_chunks - front_missing;
            }
            if a > self.frontier {
                if self.held.ooo.len() + 1 - touching.len() > self.cfg.max_ooo_segments {
                    self.refuse(out, Refused::OooSegmentsLimit, len);
                    return;
                }
                let ooo_chunks_after = self.held.ooo_chunks.len() as u64 + new_ooo_chunks;
                if self.held.ooo_bytes + new_bytes > self.cfg.max_ooo_bytes as u64
                    || ooo_chunks_after > self.ooo_chunk_limit()
                {
                    self.refuse(out, Refused::OooBytesLimit, len);
                    return;
                }
            }
            let more = usize::try_from(new_chunks.saturating_mul(self.cs())).unwrap_or(usize::MAX);
            if budget.would_exceed(more) {
                budget.refused_bytes += len;
                self.refuse(out, Refused::Memory, len);
                return;
            }
            plan = Some((touching, new_bytes, merged));
        }

        // Commit. First the part below the frontier: compare, never rewrite.
        let below_base = end.min(self.base).saturating_sub(start);
        out.old += below_base;
        let lo = start.max(self.base);
        let hi = end.min(self.frontier);
        if lo < hi {
            self.compare_in_order(lo, hi, &data[(lo - start) as usize..(hi - start) as usize], &*sink, out);
        }
        let Some((touching, new_bytes, merged)) = plan else {
            return;
        };
        if self.sink && merged.start == self.frontier {
            self.commit_to_sink(start, data, &touching, merged, sink, budget, out);
            return;
        }
        // Then the part at or beyond the frontier, range by range.
        let last = self.cfg.overlap == OverlapPolicy::Last;
        let mut at = a;
        for &(s, e) in touching.iter().chain(std::iter::once(&(end, end))) {
            let s = s.clamp(a, end);
            let e = e.clamp(a, end);
            if at < s {
                self.write(at, &data[(at - start) as usize..(s - start) as usize], budget);
            }
            if s < e {
                let new = &data[(s - start) as usize..(e - start) as usize];
                let (dup, diff) = self.compare_held(s, new);
                out.duplicate += dup;
                out.conflicting += diff;
                if last && diff > 0 {
                    self.write(s, new, budget);
                }
            }
            at = at.max(e);
        }
        for &(s, _) in &touching {
            self.held.ooo.remove(&s);
        }
        let touched_len: u64 = touching.iter().map(|&(s, e)| e - s).sum();
        if touched_len > 0 {
            self.held.ooo_bytes -= touched_len;
        }
        if merged.start == self.frontier {
            let old = self.frontier;
            self.advance_to(merged.end);
            out.advanced = self.frontier - old;
        } else {
            self.held.ooo.insert(merged.start, merged.end);
            self.held.ooo_bytes += merged.end - merged.start;
            out.new_ooo = new_bytes;
        }
        self.recharge(budget);
    }

    fn refuse(&mut self, out: &mut Insert, why: Refused, bytes: u64) {
        out.refused = Some(why);
        self.held.stats.refused_bytes += bytes;
    }

    /// Chunks that may sit beyond the frontier: `max_ooo_bytes` rounded up to a chunk, plus
    /// one.
    fn ooo_chunk_limit(&self) -> u64 {
        (self.cfg.max_ooo_bytes as u64).div_ceil(self.cs()) + 1
    }

    /// The chunk holding offset `off`, if allocated.
    fn chunk(&self, idx: u64) -> Option<&[u8]> {
        if let Some(c) = self.held.ooo_chunks.get(&idx) {
            return Some(c);
        }
        let pos = self.held.chunks.partition_point(|(i, _)| *i < idx);
        match self.held.chunks.get(pos) {
            Some((i, c)) if *i == idx => Some(c),
            _ => None,
        }
    }

    /// Compares `new` with the held in-order bytes at `[lo, lo + new.len())`, all in
    /// `[base, frontier)`; bytes in skipped gaps count as old.
    fn compare_in_order(&self, lo: u64, hi: u64, new: &[u8], sink: &dyn InOrderSink, out: &mut Insert) {
        let held = |at: u64, bytes: &[u8], out: &mut Insert| {
            if !self.sink {
                let (d, c) = self.compare_held(at, bytes);
                out.duplicate += d;
                out.conflicting += c;
                return;
            }
            match sink.differing(at, bytes) {
                Some(c) => {
                    out.duplicate += bytes.len() as u64 - c;
                    out.conflicting += c;
                }
                None => out.old += bytes.len() as u64,
            }
        };
        let mut at = lo;
        for g in &self.held.gaps {
            if g.end <= at || at >= hi {
                continue;
            }
            if g.start >= hi {
                break;
            }
            if at < g.start {
                held(at, &new[(at - lo) as usize..(g.start - lo) as usize], out);
            }
            let ge = g.end.min(hi);
            out.old += ge - at.max(g.start);
            at = ge;
        }
        if at < hi {
            held(at, &new[(at - lo) as usize..], out);
        }
    }

    /// Compares `new` with held bytes at `off..` (all of them held): (identical, different).
    fn compare_held(&self, off: u64, new: &[u8]) -> (u64, u64) {
        let mut diff = 0u64;
        let mut at = off;
        let mut rest = new;
        while !rest.is_empty() {
            let idx = at / self.cs();
            let within = (at % self.cs()) as usize;
            let n = rest.len().min(self.cs() as usize - within);
            let (now, later) = rest.split_at(n);
            match self.chunk(idx).and_then(|c| c.get(within..within + n)) {
                Some(held) => diff += held.iter().zip(now).filter(|(x, y)| x != y).count() as u64,
                None => diff += n as u64, // unreachable by the invariants; never panic
            }
            at += n as u64;
            rest = later;
        }
        (new.len() as u64 - diff, diff)
    }

    /// Writes `bytes` at `off..` (all at or beyond the frontier), taking chunks from the
    /// budget's spares or allocating them.
    fn write(&mut self, off: u64, bytes: &[u8], budget: &mut Budget) {
        let cs = self.cs() as usize;
        let mut at = off;
        let mut rest = bytes;
        while !rest.is_empty() {
            let idx = at / self.cs();
            let within = (at % self.cs()) as usize;
            let n = rest.len().min(cs - within);
            let (now, later) = rest.split_at(n);
            let chunk = if !self.sink && idx * self.cs() < self.frontier {
                if self.held.chunks.back().map(|(i, _)| *i) != Some(idx) {
                    self.held.chunks.push_back((idx, budget.take_chunk(cs)));
                }
                self.held.chunks.back_mut().map(|(_, c)| c)
            } else {
                Some(self.held.ooo_chunks.entry(idx).or_insert_with(|| budget.take_chunk(cs)))
            };
            if let Some(dst) = chunk.and_then(|c| c.get_mut(within..within + n)) {
                dst.copy_from_slice(now);
            }
            at += n as u64;
            rest = later;
        }
    }

    /// Moves the frontier to `to` and the chunks it now reaches into the in-order deque.
    fn advance_to(&mut self, to: u64) {
        self.frontier = to;
        let cs = self.cs();
        while let Some(entry) = self.held.0.as_mut().and_then(|h| h.ooo_chunks.first_entry()) {
            if entry.key().saturating_mul(cs) >= to {
                break;
            }
            let (idx, chunk) = entry.remove_entry();
            self.held.chunks.push_back((idx, chunk));
        }
    }

    /// Chunks `[base, frontier)` spans, less those wholly inside a skipped gap (what the
    /// sink holds for a stream with one: it stores no gap bytes).
    fn in_order_span(&self) -> usize {
        if self.frontier <= self.base {
            return 0;
        }
        let span = (self.frontier - 1) / self.cs() - self.base / self.cs() + 1;
        let in_gaps: u64 = self
            .held
            .gaps
            .iter()
            .map(|g| (g.end.min(self.frontier) / self.cs()).saturating_sub(g.start.max(self.base).div_ceil(self.cs())))
            .sum();
        usize::try_from(span.saturating_sub(in_gaps)).unwrap_or(usize::MAX)
    }

    /// For a stream with a sink, a segment reaching the frontier: appends, in order, every
    /// byte from the frontier to the end of the contiguous range it makes (`merged`) — its
    /// own bytes where nothing was held, the held out-of-order bytes where it overlaps them
    /// (compared; the new ones win under [`OverlapPolicy::Last`]) and beyond its end — then
    /// moves the frontier and frees the out-of-order chunks wholly below it.
    #[allow(clippy::too_many_arguments)]
    fn commit_to_sink(
        &mut self,
        start: u64,
        data: &[u8],
        touching: &[(u64, u64)],
        merged: Range<u64>,
        sink: &mut dyn InOrderSink,
        budget: &mut Budget,
        out: &mut Insert,
    ) {
        let a = self.frontier;
        let end = start + data.len() as u64;
        let last = self.cfg.overlap == OverlapPolicy::Last;
        let mut at = a;
        for &(s, e) in touching.iter().chain(std::iter::once(&(end, end))) {
            let s = s.clamp(a, end);
            let e = e.clamp(a, end);
            if at < s {
                sink.append(at, &data[(at - start) as usize..(s - start) as usize]);
            }
            if s < e {
                let new = &data[(s - start) as usize..(e - start) as usize];
                let (dup, diff) = self.compare_held(s, new);
                out.duplicate += dup;
                out.conflicting += diff;
                if last && diff > 0 {
                    sink.append(s, new);
                } else {
                    self.emit_held(s, e, sink);
                }
            }
            at = at.max(e);
        }
        if merged.end > at {
            self.emit_held(at, merged.end, sink);
        }
        for &(s, _) in touching {
            self.held.ooo.remove(&s);
        }
        if !touching.is_empty() {
            self.held.ooo_bytes -= touching.iter().map(|&(s, e)| e - s).sum::<u64>();
        }
        out.advanced = merged.end - self.frontier;
        self.frontier = merged.end;
        self.drop_ooo_chunks_below(self.frontier, budget);
        self.recharge(budget);
    }

    /// Appends held out-of-order bytes `[from, to)` to the sink.
    fn emit_held(&self, from: u64, to: u64, sink: &mut dyn InOrderSink) {
        let mut at = from;
        while at < to {
            let idx = at / self.cs();
            let within = (at % self.cs()) as usize;
            let stop = ((idx + 1) * self.cs()).min(to);
            let n = (stop - at) as usize;
            // Held by the invariants; defensively, a missing chunk is skipped (a gap in the
            // sink), never zeros.
            if let Some(bytes) = self.held.ooo_chunks.get(&idx).and_then(|c| c.get(within..within + n)) {
                sink.append(at, bytes);
            }
            at = stop;
        }
    }

    /// Frees the out-of-order chunks that lie wholly below `to` (a stream with a sink).
    fn drop_ooo_chunks_below(&mut self, to: u64, budget: &mut Budget) {
        let cs = self.cs();
        while let Some(entry) = self.held.0.as_mut().and_then(|h| h.ooo_chunks.first_entry()) {
            if (entry.key() + 1).saturating_mul(cs) > to {
                break;
            }
            budget.recycle(entry.remove());
        }
    }

    /// Brings the budget in line with the chunks held.
    fn recharge(&mut self, budget: &mut Budget) {
        let held = if self.sink { self.in_order_span() } else { self.held.chunks.len() };
        let now = (held + self.held.ooo_chunks.len()).saturating_mul(self.cs() as usize);
        if now > self.charged {
            budget.charge(now - self.charged);
        } else {
            budget.give_back(self.charged - now);
        }
        self.charged = now;
        if self.held.0.as_ref().is_some_and(|h| h.is_empty()) {
            self.held.0 = None;
        }
    }

    /// Frees every chunk that lies entirely below `offset` (clamped to the frontier); the base
    /// becomes `offset` (it never moves backwards).
    pub fn release_until(&mut self, offset: u64, budget: &mut Budget) {
        self.base = self.base.max(offset.min(self.frontier));
        while let Some((idx, _)) = self.held.chunks.front() {
            if (idx + 1).saturating_mul(self.cs()) > self.base {
                break;
            }
            if let Some((_, chunk)) = self.held.chunks.pop_front() {
                budget.recycle(chunk);
            }
        }
        while self.held.gaps.front().is_some_and(|g| g.end <= self.base) {
            self.held.gaps.pop_front();
        }
        self.recharge(budget);
    }

    /// Releases everything: the base moves to the frontier, every chunk is freed and the
    /// out-of-order data is thrown away (counted in `cleared_ooo_bytes`). Afterwards this
    /// stream's share of the budget is 0. The stream stays usable.
    pub fn clear(&mut self, budget: &mut Budget) {
        self.base = self.frontier;
        if let Some(held) = self.held.0.take() {
            let Held { chunks, ooo_chunks, ooo_bytes, mut stats, .. } = *held;
            for (_, chunk) in chunks {
                budget.recycle(chunk);
            }
            for (_, chunk) in ooo_chunks {
                budget.recycle(chunk);
            }
            stats.cleared_ooo_bytes += ooo_bytes;
            // The counters stay (the held box goes again in `recharge` if they are zero).
            self.held.stats = stats;
        }
        self.recharge(budget);
    }

    /// End of the connection: the holes before out-of-order data will never be filled. They
    /// are skipped (counted as gaps, listed by [`gaps`](Self::gaps), read as [`Chunk::Gap`]) and the
    /// out-of-order data beyond them is delivered in order. Allocates nothing: the budget does
    /// not change.
    pub fn finish(&mut self, budget: &mut Budget) -> Finish {
        self.finish_into(budget, &mut NoSink)
    }

    /// [`finish`](Self::finish) for a stream with a sink: the out-of-order bytes delivered
    /// are appended to `sink` (each after its gap).
    pub fn finish_into(&mut self, budget: &mut Budget, sink: &mut dyn InOrderSink) -> Finish {
        let mut f = Finish::default();
        while let Some((s, e)) = self.held.0.as_mut().and_then(|h| h.ooo.pop_first()) {
            if s > self.frontier {
                f.gaps += 1;
                f.gap_bytes += s - self.frontier;
                self.held.gaps.push_back(self.frontier..s);
            }
            f.delivered += e - s;
            if self.sink {
                self.emit_held(s, e, sink);
                self.frontier = e;
            } else {
                self.advance_to(e);
            }
        }
        if let Some(held) = self.held.0.as_mut() {
            if self.sink {
                while let Some((_, chunk)) = held.ooo_chunks.pop_first() {
                    budget.recycle(chunk);
                }
            }
            held.ooo_bytes = 0;
        }
        if f.gaps > 0 {
            self.held.stats.gaps += f.gaps;
            self.held.stats.gap_bytes += f.gap_bytes;
        }
        self.recharge(budget);
        f
    }
}
