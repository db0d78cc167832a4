//! The stream chunk store: reassembled TCP bytestreams in shared memory, written by one TCP
//! monitor and read without locks by any number of readers, in any process.
//!
//! ```
//! use runtime::streams::{self, Piece, StoreConfig};
//!
//! let (mut w, store) = streams::heap(StoreConfig { chunk_size: 8, chunks: 4 }).unwrap();
//! let key = streams::key(7, 1);
//! let rec = w.open(key).unwrap();
//! w.set_present(rec, 0);
//! assert!(w.append(rec, 0, 0, b"hello, world"));
//! w.publish(rec, 0, 12);
//! let mut got = Vec::new();
//! store.read(key, 0, 2, 12, &mut |p| if let Piece::Data(d) = p { got.extend_from_slice(d) }).unwrap();
//! assert_eq!(got, b"llo, world");
//! w.release(rec, 0, 8); // the first chunk (offsets 0..8) is freed
//! assert!(store.read(key, 0, 2, 12, &mut |_| {}).is_err());
//! w.close(rec);
//! assert_eq!(w.stats().chunks_in_use, 0);
//! ```
//!
//! # Layout
//!
//! One block (`streams.<name>` in the run's [`Region`], or a heap allocation for a monitor
//! whose readers all live in its own process) viewed as an array of `AtomicU64` words — every
//! field is an atomic word, so no access is a data race, whatever another process does:
//!
//! * a header: magic, version, chunk size, chunk count, record count, bucket count, the two
//!   free lists' positions, counters;
//! * three **free lists** (full-size chunks, records, small chunks), stacks of indices that
//!   belong to the single writer, so they need no synchronisation of their own: last freed,
//!   first reused, which keeps the chunks in use few and warm. They start empty, every index
//!   *fresh*: when a list is empty the writer takes the next never-used index (a header
//!   counter), so a new store writes none of its list words and touches no page of them;
//! * **buckets**: per hash of a connection key, the first record of a chain (index + 1);
//! * **records**, one per connection: a version, the key (flow index and generation), the
//!   next record of its bucket, and per direction: first and last chunk (two 32-bit links
//!   in one word), base (first byte still readable), frontier (contiguous bytes published;
//!   its top bit: whether the stream exists), and the offset from which bytes could not be
//!   stored (pool exhausted) — 11 words;
//! * **chunk headers**: a version, the owner (record, its version, direction), the stream
//!   offset of the chunk's first byte, its length (bytes filled), next and previous chunk
//!   (two links in one word) — 5 words. A link word is stored whole, with release, by the
//!   single writer (a load of its own last store, one half changed), so a reader's acquire
//!   load of it orders exactly as the separate words did;
//! * **chunk data**: `chunks × chunk_size` bytes (rounded up to words), then, when
//!   `chunk_size` is larger than [`SMALL_CHUNK`] (64), `2 × chunks` **small chunks** of 64
//!   bytes (chunk indices `chunks..3 × chunks`; headers like the others). A direction that
//!   holds no chunk (its first bytes, or the first after it released all it held) starts in
//!   a small chunk, its next ones are full-size: a connection that sent a few bytes pins 64
//!   bytes of data, not a whole chunk (issue 14). No small chunk free: a full-size one.
//!   A chunk's size is a function of its index and of the header's geometry only, which
//!   never change while the store exists.
//!
//! Everything is an index or a stream offset, never an address, so any process can map it
//! anywhere. Chunks are *packed*: a chunk holds contiguous bytes `[offset, offset + len)`; a
//! new chunk starts when the last one is full or when the stream skips a gap (a hole the
//! monitor will never fill: readers get [`Piece::Gap`] for the bytes between two chunks).
//!
//! # Who writes what
//!
//! Only the [`StoreWriter`] (one per store, not `Clone`; the TCP monitor, or the TCP
//! splicer for its own store of held request bytes) writes. It
//! * appends bytes at a direction's end ([`StoreWriter::append`]) — bytes below a chunk's
//!   `len` never change while the chunk is held (**append-only**);
//! * then publishes the new frontier ([`StoreWriter::publish`]) with a release store; the
//!   events that announce those bytes are pushed into the rings after that, so a reader that
//!   took such an event from a ring (acquire) sees the bytes and the frontier;
//! * frees chunks only when the base passes their end ([`StoreWriter::release`]) — the TCP
//!   monitor moves the base only for bytes that every event able to read them has left the
//!   chain (**reclamation by TX progress**) — and whole records in [`StoreWriter::close`].
//!
//! # Why readers need no lock (the memory-ordering argument)
//!
//! A reader holding an event may read `[old frontier, frontier)` of that event, and the TCP
//! monitor keeps those bytes until the event has left the chain: by the two rules above
//! they are immutable while the reader may read them. So a correct reader never races with
//! a write of the bytes it copies.
//!
//! A reader that asks for bytes that are *no longer* held (a stale range) must get an error,
//! never another stream's bytes. Records and chunks are therefore **seqlocks**: their
//! version is odd while they are in use and is bumped (to even) when they are freed, with a
//! release fence *before* anything of the next use is written; a new use writes its fields
//! and then bumps the version to odd with a release store. A reader loads the version
//! (acquire), checks it is odd and that the owner/key is the one it wants, copies, issues an
//! acquire fence and loads the version again: if any word it copied was written by a later
//! use, the fence pairing makes the second load see the bumped version, and the read fails
//! with "not held" — the bytes it copied are thrown away, never handed to the caller. Each
//! piece of a chunk is validated before it is given to the caller's function.
//!
//! Small chunks change none of this: a reader derives a chunk's size and data position from
//! its index and the geometry (computed from the header on attach, identical to the
//! writer's), never from anything the writer changes, clamps the `len` it reads to that size,
//! and validates a small chunk exactly like a full-size one (version, owner, version again).
//! So a reader never reads outside the chunk it validated, whatever it raced with. The free
//! lists and their fresh counters are read and written by the writer alone (readers see them
//! only in [`StreamStore::stats`], as counters).
//!
//! Bucket chains are walked the same way: a record's `next` is trusted only if the record's
//! version did not change around the read, and a record whose key no longer hashes to the
//! bucket (reused for another connection) restarts the walk. Walks are bounded (a reader can
//! never loop forever, even on a corrupt block); past the bound the connection is reported
//! as not found.
//!
//! # When the pool runs out
//!
//! No allocation ever panics. A connection with no free record is not stored (counted in
//! `records_exhausted`; readers get "no connection"). A direction that needs a chunk when none
//! is free is marked **broken** from that offset (counted in `chunks_exhausted`): nothing more
//! of it is stored, and reads that reach past that offset fail — never bytes of something
//! else, never zeros. The TCP monitor caps its reassembly memory at the pool's size, so a
//! segment is normally refused (as the memory limit refuses one) before the pool runs out;
//! only gaps, which may start a chunk early, can need more chunks than that.

use std::sync::atomic::{fence, AtomicU64, Ordering};
use std::sync::Arc;

use crate::shm::{Region, ShmError};

const MAGIC: u64 = u64::from_le_bytes(*b"MBOXSTR1");
const VERSION: u64 = 4;
/// Bytes of a *small* chunk: a direction that holds no chunk starts in one of these (when
/// the store's `chunk_size` is larger), so a connection that sent a few bytes pins 64 bytes
/// of data, not a whole chunk.
pub const SMALL_CHUNK: u32 = 64;
/// Largest chunk size accepted (the reassembler's own limit).
pub const MAX_CHUNK_SIZE: u32 = 1 << 20;
/// Most chunks (and records) a store may hold.
pub const MAX_CHUNKS: u32 = 1 << 28;
/// Bytes a reader copies and validates at a time: the largest [`Piece::Data`] it yields.
pub const READ_PIECE: usize = 4096;
/// How many times a reader restarts a walk that raced with the writer before giving up.
const MAX_RESTARTS: u32 = 64;
const NONE: u64 = 0;
const NOT_BROKEN: u64 = u64::MAX;

// Header words.
const H_MAGIC: usize = 0;
const H_VERSION: usize = 1;
const H_CHUNK_SIZE: usize = 2;
const H_CHUNKS: usize = 3;
const H_BUCKETS: usize = 4;
const H_CFRESH: usize = 5;
const H_CFREE_TAIL: usize = 6;
const H_RFRESH: usize = 7;
const H_RFREE_TAIL: usize = 8;
const H_CHUNKS_EXHAUSTED: usize = 9;
const H_RECORDS_EXHAUSTED: usize = 10;
const H_HIGH_WATER: usize = 11;
const H_SFRESH: usize = 12;
const H_SFREE_TAIL: usize = 13;
const HEADER_WORDS: usize = 16;

// Record words.
const R_VERSION: usize = 0;
const R_KEY: usize = 1;
const R_NEXT: usize = 2;
const R_DIR: usize = 3;
/// A direction's first and last chunk links, in one word ([`lo`]: head, [`hi`]: tail).
const D_ENDS: usize = 0;
const D_BASE: usize = 1;
const D_FRONTIER: usize = 2;
const D_BROKEN: usize = 3;
const DIR_WORDS: usize = 4;
/// In a direction's frontier word: the direction has a stream (set once, by
/// [`StoreWriter::set_present`]); the frontier is the other 63 bits.
const PRESENT: u64 = 1 << 63;
const RECORD_WORDS: usize = R_DIR + 2 * DIR_WORDS;

// Chunk header words.
const C_VERSION: usize = 0;
const C_OWNER: usize = 1;
const C_OFFSET: usize = 2;
const C_LEN: usize = 3;
/// The next and previous chunk links, in one word ([`lo`]: next, [`hi`]: previous).
const C_LINKS: usize = 4;
const CHUNK_WORDS: usize = C_LINKS + 1;

/// The low half of a word holding two links (a link is a chunk index + 1, below 2^30).
fn lo(v: u64) -> u64 {
    v & 0xffff_ffff
}

/// The high half of a word holding two links.
fn hi(v: u64) -> u64 {
    v >> 32
}

/// Stores `link` into the low (`high` false) or high half of a two-link word that only the
/// writer stores (a load and a store make no lost update), with `order`.
fn set_link(word: &AtomicU64, high: bool, link: u64, order: Ordering) {
    let old = word.load(Ordering::Relaxed);
    let new = if high { lo(old) | (link << 32) } else { (old & !0xffff_ffff) | link };
    word.store(new, order);
}

/// Size of a store: chunk size and count (as many connection records as chunks).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreConfig {
    /// Bytes per chunk, `1..=MAX_CHUNK_SIZE`.
    pub chunk_size: u32,
    /// Chunks, `1..=MAX_CHUNKS`; the store also holds this many connection records.
    pub chunks: u32,
}

/// Errors of creating or attaching a store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A size out of range.
    #[error("stream store `{name}`: {reason}")]
    BadConfig {
        /// Store name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// The region refused the block.
    #[error("stream store `{name}`: {source}")]
    Region {
        /// Store name.
        name: String,
        /// The region's error.
        #[source]
        source: ShmError,
    },
    /// The block is not a stream store of this version or size.
    #[error("stream store `{name}` cannot be attached: {reason}")]
    NotAStore {
        /// Store name.
        name: String,
        /// What did not match.
        reason: String,
    },
}

/// Why a read failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StoreReadError {
    /// No record of that connection (never stored, closed, or the record pool ran out).
    #[error("no such connection in the stream store")]
    NoConnection,
    /// The range is not held (released, beyond the frontier, past a broken point, or
    /// released while being read). `base` and `frontier` as read.
    #[error("bytes not held (held: {base}..{frontier})")]
    NotHeld {
        /// First byte readable.
        base: u64,
        /// Frontier.
        frontier: u64,
    },
}

/// A piece of a stream read: bytes received, or a gap of never-received bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Piece<'a> {
    /// Bytes, in order (validated before they are handed out).
    Data(&'a [u8]),
    /// This many bytes never received.
    Gap(u64),
}

/// Counters of a store.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Chunks in the pool.
    pub chunks: u64,
    /// Chunks held now.
    pub chunks_in_use: u64,
    /// The most chunks held at once.
    pub chunks_high_water: u64,
    /// Times a direction needed a chunk and none was free (it is broken from there).
    pub chunks_exhausted: u64,
    /// Connections not stored because no record was free.
    pub records_exhausted: u64,
}

/// A connection's key: flow index and generation.
pub fn key(index: u32, generation: u32) -> u64 {
    (u64::from(index) << 32) | u64::from(generation)
}

/// A record held by the writer (an index into the records).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RecordId(u32);

enum Backing {
    Region { _region: Arc<Region>, words: &'static [AtomicU64] },
    Heap(Box<[AtomicU64]>),
}

/// Word offsets of a store's parts.
#[derive(Clone, Copy, Debug)]
struct Geometry {
    chunk_size: u64,
    /// Full-size chunks (and records).
    chunks: usize,
    /// Small chunks ([`SMALL_CHUNK`] bytes; none when `chunk_size` is not larger), indices
    /// `chunks..chunks + small`.
    small: usize,
    /// `chunks + small`: the chunk indices.
    all: usize,
    buckets: usize,
    cfree: usize,
    rfree: usize,
    sfree: usize,
    bucket_at: usize,
    records_at: usize,
    chunk_hdr_at: usize,
    data_at: usize,
    small_data_at: usize,
    stride: usize,
    small_stride: usize,
    total: usize,
}

impl Geometry {
    fn of(cfg: StoreConfig) -> Option<Geometry> {
        if cfg.chunk_size == 0 || cfg.chunk_size > MAX_CHUNK_SIZE || cfg.chunks == 0 || cfg.chunks > MAX_CHUNKS {
            return None;
        }
        let chunks = cfg.chunks as usize;
        // Two small chunks per record: one first chunk per direction.
        let small = if cfg.chunk_size > SMALL_CHUNK { chunks.checked_mul(2)? } else { 0 };
        let all = chunks.checked_add(small)?;
        let buckets = chunks.next_power_of_two();
        let stride = (cfg.chunk_size as usize).div_ceil(8);
        let small_stride = SMALL_CHUNK as usize / 8;
        let cfree = HEADER_WORDS;
        let rfree = cfree + chunks;
        let sfree = rfree + chunks;
        let bucket_at = sfree.checked_add(small)?;
        let records_at = bucket_at.checked_add(buckets)?;
        let chunk_hdr_at = records_at.checked_add(chunks.checked_mul(RECORD_WORDS)?)?;
        let data_at = chunk_hdr_at.checked_add(all.checked_mul(CHUNK_WORDS)?)?;
        let small_data_at = data_at.checked_add(chunks.checked_mul(stride)?)?;
        let total = small_data_at.checked_add(small.checked_mul(small_stride)?)?;
        total.checked_mul(8)?;
        Some(Geometry {
            chunk_size: u64::from(cfg.chunk_size),
            chunks,
            small,
            all,
            buckets,
            cfree,
            rfree,
            sfree,
            bucket_at,
            records_at,
            chunk_hdr_at,
            data_at,
            small_data_at,
            stride,
            small_stride,
            total,
        })
    }

    /// Bytes chunk `c` holds: fixed by its index.
    fn cap(&self, c: usize) -> u64 {
        if c < self.chunks {
            self.chunk_size
        } else {
            u64::from(SMALL_CHUNK)
        }
    }
}

/// Bytes of region a store of `cfg` needs (0 when `cfg` is out of range).
pub fn block_size(cfg: StoreConfig) -> usize {
    Geometry::of(cfg).map_or(0, |g| g.total * 8)
}

fn block_name(name: &str) -> String {
    format!("streams.{name}")
}

/// A stream store: the read side (`Send + Sync`, shared by every reader) — see the
/// [module docs](self).
pub struct StreamStore {
    name: String,
    g: Geometry,
    backing: Backing,
}

impl std::fmt::Debug for StreamStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamStore").field("name", &self.name).field("geometry", &self.g).finish()
    }
}

/// The single writer of a store (the TCP monitor). Not `Clone`.
#[derive(Debug)]
pub struct StoreWriter {
    store: Arc<StreamStore>,
}

/// Creates the store `name` in `region`: its writer and its read side.
pub fn create(
    region: &Arc<Region>,
    name: &str,
    cfg: StoreConfig,
) -> Result<(StoreWriter, Arc<StreamStore>), StoreError> {
    let g = geometry(name, cfg)?;
    let offset = region
        .reserve(&block_name(name), g.total * 8, 64)
        .map_err(|source| StoreError::Region { name: name.to_string(), source })?;
    // SAFETY: `reserve` returned a fresh, zero-filled block of `g.total * 8` bytes inside the
    // mapping, 64-byte aligned (so aligned for AtomicU64, which has u64's size and layout).
    // The region stays mapped as long as the `Arc<Region>` kept beside the slice in the
    // backing, and the slice never leaves the store. Every process accesses these words only
    // as `AtomicU64`s (this module), so sharing them across threads and processes is sound.
    let words = unsafe { std::slice::from_raw_parts(region.base().add(offset).cast::<AtomicU64>(), g.total) };
    Ok(init(name, g, Backing::Region { _region: region.clone(), words }))
}

/// A store in this process's heap (for a monitor whose readers are all in its process).
pub fn heap(cfg: StoreConfig) -> Result<(StoreWriter, Arc<StreamStore>), StoreError> {
    let g = geometry("heap", cfg)?;
    // Zeroed lazily by the allocator (pages are touched only when used).
    let zeroed: Box<[u64]> = vec![0u64; g.total].into_boxed_slice();
    // SAFETY: `AtomicU64` has the same size, alignment and bit validity as `u64`, so a boxed
    // slice of one is a boxed slice of the other; the box is uniquely owned here.
    let words: Box<[AtomicU64]> = unsafe { Box::from_raw(Box::into_raw(zeroed) as *mut [AtomicU64]) };
    Ok(init("heap", g, Backing::Heap(words)))
}

fn geometry(name: &str, cfg: StoreConfig) -> Result<Geometry, StoreError> {
    Geometry::of(cfg).ok_or_else(|| StoreError::BadConfig {
        name: name.to_string(),
        reason: format!(
            "chunk_size {} must be in 1..={MAX_CHUNK_SIZE} and chunks {} in 1..={MAX_CHUNKS}",
            cfg.chunk_size, cfg.chunks
        ),
    })
}

fn init(name: &str, g: Geometry, backing: Backing) -> (StoreWriter, Arc<StreamStore>) {
    let s = Arc::new(StreamStore { name: name.to_string(), g, backing });
    let w = s.words();
    // The free lists start empty and every index *fresh* (never used): taking a fresh index
    // touches no list word, so an idle store's pages stay untouched.
    w[H_VERSION].store(VERSION, Ordering::Relaxed);
    w[H_CHUNK_SIZE].store(g.chunk_size, Ordering::Relaxed);
    w[H_CHUNKS].store(g.chunks as u64, Ordering::Relaxed);
    w[H_BUCKETS].store(g.buckets as u64, Ordering::Relaxed);
    w[H_MAGIC].store(MAGIC, Ordering::Release);
    (StoreWriter { store: s.clone() }, s)
}

/// Attaches the read side of the existing store `name` in `region` (e.g. from an NF process).
/// Checks magic, version and that the block's size matches the geometry its header declares.
pub fn attach(region: &Arc<Region>, name: &str) -> Result<Arc<StreamStore>, StoreError> {
    let (offset, size) =
        region.lookup(&block_name(name)).map_err(|source| StoreError::Region { name: name.to_string(), source })?;
    let not = |reason: String| StoreError::NotAStore { name: name.to_string(), reason };
    if size < HEADER_WORDS * 8 || offset % 8 != 0 {
        return Err(not(format!("block of {size} bytes at offset {offset} cannot hold a header")));
    }
    // SAFETY: `lookup` returned a published block `[offset, offset + size)` inside the
    // mapping, 8-aligned (checked), kept mapped by the `Arc<Region>` stored beside the slice;
    // its words are only ever accessed as `AtomicU64`s (see `create`).
    let words: &'static [AtomicU64] =
        unsafe { std::slice::from_raw_parts(region.base().add(offset).cast::<AtomicU64>(), size / 8) };
    let magic = words[H_MAGIC].load(Ordering::Acquire);
    if magic != MAGIC {
        return Err(not(format!("magic {magic:#x}, expected {MAGIC:#x}")));
    }
    let version = words[H_VERSION].load(Ordering::Relaxed);
    if version != VERSION {
        return Err(not(format!("version {version}, this mbox reads version {VERSION}")));
    }
    let cfg = StoreConfig {
        chunk_size: u32::try_from(words[H_CHUNK_SIZE].load(Ordering::Relaxed)).unwrap_or(0),
        chunks: u32::try_from(words[H_CHUNKS].load(Ordering::Relaxed)).unwrap_or(0),
    };
    let g = Geometry::of(cfg).ok_or_else(|| not(format!("header declares an invalid size {cfg:?}")))?;
    if g.total * 8 != size || words[H_BUCKETS].load(Ordering::Relaxed) != g.buckets as u64 {
        return Err(not(format!("header declares {cfg:?} ({} bytes) but the block has {size}", g.total * 8)));
    }
    Ok(Arc::new(StreamStore { name: name.to_string(), g, backing: Backing::Region { _region: region.clone(), words } }))
}

fn bucket_of(key: u64, buckets: usize) -> usize {
    // Fibonacci hashing; `buckets` is a power of two.
    (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize & (buckets - 1)
}

fn owner(rec: usize, version: u64, dir: usize) -> u64 {
    ((version & 0xFFFF_FFFF) << 32) | ((rec as u64) << 1) | dir as u64
}

impl StreamStore {
    fn words(&self) -> &[AtomicU64] {
        match &self.backing {
            Backing::Region { words, .. } => words,
            Backing::Heap(w) => w,
        }
    }

    fn w(&self, i: usize) -> &AtomicU64 {
        // Indices come from the geometry and from indices checked against it: in range.
        &self.words()[i]
    }

    fn rec(&self, r: usize, field: usize) -> &AtomicU64 {
        self.w(self.g.records_at + r * RECORD_WORDS + field)
    }

    fn dir(&self, r: usize, dir: usize, field: usize) -> &AtomicU64 {
        self.rec(r, R_DIR + dir * DIR_WORDS + field)
    }

    fn chunk(&self, c: usize, field: usize) -> &AtomicU64 {
        self.w(self.g.chunk_hdr_at + c * CHUNK_WORDS + field)
    }

    /// The chunk index in a link word (index + 1), if valid.
    fn link(&self, v: u64) -> Option<usize> {
        let i = usize::try_from(v.checked_sub(1)?).ok()?;
        (i < self.g.all).then_some(i)
    }

    /// The record index in a link word (index + 1), if valid.
    fn rec_link(&self, v: u64) -> Option<usize> {
        let i = usize::try_from(v.checked_sub(1)?).ok()?;
        (i < self.g.chunks).then_some(i)
    }

    /// The store's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Bytes per chunk.
    pub fn chunk_size(&self) -> u64 {
        self.g.chunk_size
    }

    /// Counters.
    pub fn stats(&self) -> StoreStats {
        let in_use = |fresh: usize, tail: usize| {
            self.w(fresh).load(Ordering::Relaxed).saturating_sub(self.w(tail).load(Ordering::Relaxed))
        };
        StoreStats {
            chunks: self.g.chunks as u64,
            chunks_in_use: in_use(H_CFRESH, H_CFREE_TAIL) + in_use(H_SFRESH, H_SFREE_TAIL),
            chunks_high_water: self.w(H_HIGH_WATER).load(Ordering::Relaxed),
            chunks_exhausted: self.w(H_CHUNKS_EXHAUSTED).load(Ordering::Relaxed),
            records_exhausted: self.w(H_RECORDS_EXHAUSTED).load(Ordering::Relaxed),
        }
    }

    /// Finds the record of `key`: (index, version). Bounded; `None` if not found.
    fn find(&self, key: u64) -> Option<(usize, u64)> {
        let b = bucket_of(key, self.g.buckets);
        'restart: for _ in 0..MAX_RESTARTS {
            let mut link = self.w(self.g.bucket_at + b).load(Ordering::Acquire);
            for _ in 0..=self.g.chunks {
                let r = self.rec_link(link)?;
                let v1 = self.rec(r, R_VERSION).load(Ordering::Acquire);
                let k = self.rec(r, R_KEY).load(Ordering::Relaxed);
                let next = self.rec(r, R_NEXT).load(Ordering::Relaxed);
                fence(Ordering::Acquire);
                let v2 = self.rec(r, R_VERSION).load(Ordering::Relaxed);
                if v1 != v2 || v1 & 1 == 0 || bucket_of(k, self.g.buckets) != b {
                    // Freed or reused while we looked: its `next` may lead elsewhere.
                    continue 'restart;
                }
                if k == key {
                    return Some((r, v1));
                }
                link = next;
            }
            return None;
        }
        None
    }

    /// The published frontier of direction `dir` (0: to the server) of `key`'s connection.
    pub fn frontier(&self, key: u64, dir: usize) -> Option<u64> {
        let (r, v) = self.find(key)?;
        let f = self.dir(r, dir & 1, D_FRONTIER).load(Ordering::Acquire) & !PRESENT;
        fence(Ordering::Acquire);
        (self.rec(r, R_VERSION).load(Ordering::Relaxed) == v).then_some(f)
    }

    /// Calls `f` with `[from, to)` of direction `dir` (0: to the server) of `key`'s
    /// connection, in order: validated bytes (at most [`READ_PIECE`] at a time) and gaps.
    /// Fails — after possibly some pieces — if any byte is not held, never handing out a byte
    /// of anything else.
    pub fn read(
        &self,
        key: u64,
        dir: usize,
        from: u64,
        to: u64,
        f: &mut dyn FnMut(Piece<'_>),
    ) -> Result<(), StoreReadError> {
        let dir = dir & 1;
        let (r, v) = self.find(key).ok_or(StoreReadError::NoConnection)?;
        let base = self.dir(r, dir, D_BASE).load(Ordering::Acquire);
        let frontier = self.dir(r, dir, D_FRONTIER).load(Ordering::Acquire);
        let (present, frontier) = (frontier & PRESENT != 0, frontier & !PRESENT);
        let broken = self.dir(r, dir, D_BROKEN).load(Ordering::Acquire);
        let tail = hi(self.dir(r, dir, D_ENDS).load(Ordering::Acquire));
        fence(Ordering::Acquire);
        if self.rec(r, R_VERSION).load(Ordering::Relaxed) != v {
            return Err(StoreReadError::NoConnection);
        }
        if !present {
            return if from == to { Ok(()) } else { Err(StoreReadError::NotHeld { base: 0, frontier: 0 }) };
        }
        let not_held = StoreReadError::NotHeld { base, frontier };
        if from > to || from < base || to > frontier || (to > broken && to > from) {
            return Err(not_held);
        }
        if from == to {
            return Ok(());
        }
        let me = owner(r, v, dir);
        // Back from the last chunk to the one where `from` lies (or the first after it).
        let mut c = self.link(tail).ok_or(not_held)?;
        for _ in 0..self.g.all {
            let h = self.header(c, me).ok_or(not_held)?;
            if h.offset <= from {
                break;
            }
            match self.link(h.prev) {
                Some(p) => c = p,
                None => break,
            }
        }
        // The walk may have ended at the first chunk *held* because the chunks before it were
        // just freed (a concurrent release): the base, published before any chunk is freed,
        // tells that apart from a gap at the stream's start. The fence in `header` made the
        // writer's base store visible if we saw any effect of that release.
        if from < self.dir(r, dir, D_BASE).load(Ordering::Acquire) {
            return Err(self.not_held_now(r, dir));
        }
        let mut buf = [0u8; READ_PIECE];
        let mut p = from;
        let mut steps = 0usize;
        while p < to {
            steps += 1;
            if steps > self.g.all.saturating_mul(2).saturating_add(to.div_ceil(READ_PIECE as u64) as usize) {
                return Err(not_held);
            }
            let h = self.header(c, me).ok_or(not_held)?;
            if p < h.offset {
                // A gap, or the chunk that held `p` was freed (and this one reused further
                // on) while we walked: the base, published before any chunk is freed and made
                // visible by `header`'s fence, tells them apart (as for the walk back above).
                if p < self.dir(r, dir, D_BASE).load(Ordering::Acquire) {
                    return Err(self.not_held_now(r, dir));
                }
                let stop = h.offset.min(to);
                f(Piece::Gap(stop - p));
                p = stop;
                continue;
            }
            let end = h.offset + h.len;
            if p < end {
                let stop = end.min(to).min(p + READ_PIECE as u64);
                let n = (stop - p) as usize;
                self.copy_out(c, p - h.offset, &mut buf[..n]);
                fence(Ordering::Acquire);
                if self.chunk(c, C_VERSION).load(Ordering::Relaxed) != h.version {
                    return Err(self.not_held_now(r, dir));
                }
                f(Piece::Data(&buf[..n]));
                p = stop;
                continue;
            }
            c = self.link(h.next).ok_or(not_held)?;
        }
        Ok(())
    }

    /// Error for a range released while it was being read: base and frontier re-read.
    fn not_held_now(&self, r: usize, dir: usize) -> StoreReadError {
        StoreReadError::NotHeld {
            base: self.dir(r, dir, D_BASE).load(Ordering::Acquire),
            frontier: self.dir(r, dir, D_FRONTIER).load(Ordering::Acquire) & !PRESENT,
        }
    }

    /// A chunk's header if it is in use by `owner`, read consistently.
    fn header(&self, c: usize, owner: u64) -> Option<ChunkHeader> {
        let version = self.chunk(c, C_VERSION).load(Ordering::Acquire);
        let links = self.chunk(c, C_LINKS).load(Ordering::Acquire);
        let h = ChunkHeader {
            version,
            owner: self.chunk(c, C_OWNER).load(Ordering::Relaxed),
            offset: self.chunk(c, C_OFFSET).load(Ordering::Relaxed),
            len: self.chunk(c, C_LEN).load(Ordering::Acquire).min(self.g.cap(c)),
            next: lo(links),
            prev: hi(links),
        };
        fence(Ordering::Acquire);
        let ok = version & 1 == 1 && h.owner == owner && self.chunk(c, C_VERSION).load(Ordering::Relaxed) == version;
        ok.then_some(h)
    }

    /// The data words of chunk `c` (`c` checked by the caller against the geometry).
    fn data_words(&self, c: usize) -> &[AtomicU64] {
        let g = &self.g;
        let (base, stride) = if c < g.chunks {
            (g.data_at + c * g.stride, g.stride)
        } else {
            (g.small_data_at + (c - g.chunks) * g.small_stride, g.small_stride)
        };
        &self.words()[base..base + stride]
    }

    /// Copies bytes `[at, at + out.len())` of chunk `c` (word by word, atomically: one slice
    /// of the chunk's words, iterated, so the loop has no per-word index checks).
    fn copy_out(&self, c: usize, at: u64, out: &mut [u8]) {
        let at = at as usize;
        let first = at / 8;
        let within = at % 8;
        let words = &self.data_words(c)[first..];
        let mut words = words.iter();
        let mut out = out;
        // A partial first word.
        if within != 0 && !out.is_empty() {
            let Some(w) = words.next() else { return };
            let word = w.load(Ordering::Relaxed).to_le_bytes();
            let n = (8 - within).min(out.len());
            let (head, rest) = out.split_at_mut(n);
            head.copy_from_slice(&word[within..within + n]);
            out = rest;
        }
        // Whole words, then a partial last word.
        let mut dst = out.chunks_exact_mut(8);
        for (d, w) in (&mut dst).zip(&mut words) {
            d.copy_from_slice(&w.load(Ordering::Relaxed).to_le_bytes());
        }
        let rest = dst.into_remainder();
        if !rest.is_empty() {
            if let Some(w) = words.next() {
                let n = rest.len();
                rest.copy_from_slice(&w.load(Ordering::Relaxed).to_le_bytes()[..n]);
            }
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct ChunkHeader {
    version: u64,
    owner: u64,
    offset: u64,
    len: u64,
    next: u64,
    prev: u64,
}

impl StoreWriter {
    /// The read side.
    pub fn store(&self) -> &Arc<StreamStore> {
        &self.store
    }

    /// Counters.
    pub fn stats(&self) -> StoreStats {
        self.store.stats()
    }

    /// Takes the index freed last (the free list is a stack of indices: the most recently
    /// freed chunk — still in cache, its pages already touched — is reused first, so a run
    /// touches only as many chunks as it holds at once); when none is free, the next *fresh*
    /// index (`first + fresh`, never used; `count` of them in all). Writer-only words.
    fn pop_free(&mut self, at: usize, tail: usize, fresh: usize, first: usize, count: usize) -> Option<usize> {
        let s = &self.store;
        let t = s.w(tail).load(Ordering::Relaxed);
        if t > 0 {
            let t = t - 1;
            let i = s.w(at + t as usize).load(Ordering::Relaxed) as usize;
            s.w(tail).store(t, Ordering::Relaxed);
            return Some(i);
        }
        let f = s.w(fresh).load(Ordering::Relaxed);
        if f as usize >= count {
            return None;
        }
        s.w(fresh).store(f + 1, Ordering::Relaxed);
        Some(first + f as usize)
    }

    /// Returns index `i` to the stack at `at` (at most as many entries as indices were taken
    /// fresh: never past the stack's room).
    fn push_free(&mut self, at: usize, tail: usize, i: usize) {
        let s = &self.store;
        let t = s.w(tail).load(Ordering::Relaxed);
        s.w(at + t as usize).store(i as u64, Ordering::Relaxed);
        s.w(tail).store(t + 1, Ordering::Relaxed);
    }

    /// A free chunk for a direction whose last chunk is `tail`: a small one first when the
    /// direction holds none (full-size if no small one is free), else a full-size one.
    fn take_chunk(&mut self, tail: Option<usize>) -> Option<usize> {
        let g = self.store.g;
        if tail.is_none() && g.small > 0 {
            if let Some(c) = self.pop_free(g.sfree, H_SFREE_TAIL, H_SFRESH, g.chunks, g.small) {
                return Some(c);
            }
        }
        self.pop_free(g.cfree, H_CFREE_TAIL, H_CFRESH, 0, g.chunks)
    }

    /// The record of connection `key`, if it has one (through the store's bucket index,
    /// which only this writer changes: no race).
    pub fn record_of(&self, key: u64) -> Option<RecordId> {
        self.store.find(key).map(|(r, _)| RecordId(r as u32))
    }

    /// A new record for connection `key` (both directions absent, empty); `None` (counted)
    /// when no record is free.
    pub fn open(&mut self, key: u64) -> Option<RecordId> {
        let g = self.store.g;
        let Some(r) = self.pop_free(g.rfree, H_RFREE_TAIL, H_RFRESH, 0, g.chunks) else {
            self.store.w(H_RECORDS_EXHAUSTED).fetch_add(1, Ordering::Relaxed);
            return None;
        };
        let s = &self.store;
        // The version is even (free): readers reject the record while we fill it.
        s.rec(r, R_KEY).store(key, Ordering::Relaxed);
        for d in 0..2 {
            for (f, v) in [(D_ENDS, NONE), (D_BASE, 0), (D_FRONTIER, 0), (D_BROKEN, NOT_BROKEN)] {
                s.dir(r, d, f).store(v, Ordering::Relaxed);
            }
        }
        let b = g.bucket_at + bucket_of(key, g.buckets);
        s.rec(r, R_NEXT).store(s.w(b).load(Ordering::Relaxed), Ordering::Relaxed);
        let v = s.rec(r, R_VERSION).load(Ordering::Relaxed);
        // Publish: fields, then the odd version (release), then the bucket head (release).
        s.rec(r, R_VERSION).store(v | 1, Ordering::Release);
        s.w(b).store(r as u64 + 1, Ordering::Release);
        Some(RecordId(r as u32))
    }

    /// Direction `dir` of the connection now has a stream (reads of it may succeed).
    pub fn set_present(&mut self, rec: RecordId, dir: usize) {
        // Only this writer stores the word: a load and a store make no lost update.
        let w = self.store.dir(rec.0 as usize, dir & 1, D_FRONTIER);
        w.store(w.load(Ordering::Relaxed) | PRESENT, Ordering::Release);
    }

    /// Appends `data` at stream offset `at` of direction `dir`: `at` at or beyond the
    /// direction's end (beyond it: the bytes between are a gap). Returns false when the pool
    /// ran out (the direction is broken from there on; counted) or the direction was broken.
    /// Bytes become visible to readers with [`publish`](Self::publish).
    pub fn append(&mut self, rec: RecordId, dir: usize, at: u64, data: &[u8]) -> bool {
        let (r, dir) = (rec.0 as usize, dir & 1);
        let g = self.store.g;
        if self.store.dir(r, dir, D_BROKEN).load(Ordering::Relaxed) != NOT_BROKEN {
            return false;
        }
        let v = self.store.rec(r, R_VERSION).load(Ordering::Relaxed);
        let me = owner(r, v, dir);
        let mut at = at;
        let mut rest = data;
        while !rest.is_empty() {
            let s = &self.store;
            let tail = s.link(hi(s.dir(r, dir, D_ENDS).load(Ordering::Relaxed)));
            let room = tail.and_then(|c| {
                let off = s.chunk(c, C_OFFSET).load(Ordering::Relaxed);
                let len = s.chunk(c, C_LEN).load(Ordering::Relaxed);
                (off + len == at && len < g.cap(c)).then_some((c, len))
            });
            let (c, len) = match room {
                Some(x) => x,
                None => {
                    let Some(c) = self.take_chunk(tail) else {
                        let s = &self.store;
                        s.w(H_CHUNKS_EXHAUSTED).fetch_add(1, Ordering::Relaxed);
                        s.dir(r, dir, D_BROKEN).store(at, Ordering::Release);
                        return false;
                    };
                    let s = &self.store;
                    let prev = tail.map_or(NONE, |t| t as u64 + 1);
                    for (f, val) in [(C_OWNER, me), (C_OFFSET, at), (C_LEN, 0), (C_LINKS, prev << 32)] {
                        s.chunk(c, f).store(val, Ordering::Relaxed);
                    }
                    let cv = s.chunk(c, C_VERSION).load(Ordering::Relaxed);
                    s.chunk(c, C_VERSION).store(cv | 1, Ordering::Release);
                    let link = c as u64 + 1;
                    match tail {
                        Some(t) => {
                            set_link(s.chunk(t, C_LINKS), false, link, Ordering::Release);
                            set_link(s.dir(r, dir, D_ENDS), true, link, Ordering::Release);
                        }
                        None => s.dir(r, dir, D_ENDS).store(link | (link << 32), Ordering::Release),
                    }
                    let in_use = s.stats().chunks_in_use;
                    s.w(H_HIGH_WATER).fetch_max(in_use, Ordering::Relaxed);
                    (c, 0)
                }
            };
            let n = rest.len().min((g.cap(c) - len) as usize);
            self.copy_in(c, len as usize, &rest[..n]);
            // Release: the bytes before the length that covers them.
            self.store.chunk(c, C_LEN).store(len + n as u64, Ordering::Release);
            rest = &rest[n..];
            at += n as u64;
        }
        true
    }

    /// Writes `bytes` at byte `at` of chunk `c`, whose bytes from `at` on are unused (the
    /// bytes before `at` in the first word are kept: readers may be reading them). One slice
    /// of the chunk's words, iterated: no per-word index checks.
    fn copy_in(&mut self, c: usize, at: usize, bytes: &[u8]) {
        let first = at / 8;
        let within = at % 8;
        let words = &self.store.data_words(c)[first..];
        let mut words = words.iter();
        let mut bytes = bytes;
        // A partial first word: keep the bytes already there.
        if within != 0 && !bytes.is_empty() {
            let Some(w) = words.next() else { return };
            let mut word = w.load(Ordering::Relaxed).to_le_bytes();
            let n = (8 - within).min(bytes.len());
            word[within..within + n].copy_from_slice(&bytes[..n]);
            w.store(u64::from_le_bytes(word), Ordering::Relaxed);
            bytes = &bytes[n..];
        }
        // Whole words, then a partial last word (the bytes after it are unused).
        let mut src = bytes.chunks_exact(8);
        for (s, w) in (&mut src).zip(&mut words) {
            let mut word = [0u8; 8];
            word.copy_from_slice(s);
            w.store(u64::from_le_bytes(word), Ordering::Relaxed);
        }
        let rest = src.remainder();
        if !rest.is_empty() {
            if let Some(w) = words.next() {
                let mut word = [0u8; 8];
                word[..rest.len()].copy_from_slice(rest);
                w.store(u64::from_le_bytes(word), Ordering::Relaxed);
            }
        }
    }

    /// Makes `[.., frontier)` of direction `dir` readable (release: after the bytes).
    pub fn publish(&mut self, rec: RecordId, dir: usize, frontier: u64) {
        let w = self.store.dir(rec.0 as usize, dir & 1, D_FRONTIER);
        let present = w.load(Ordering::Relaxed) & PRESENT;
        w.store((frontier & !PRESENT) | present, Ordering::Release);
    }

    /// The published frontier of a direction.
    pub fn frontier(&self, rec: RecordId, dir: usize) -> u64 {
        self.store.dir(rec.0 as usize, dir & 1, D_FRONTIER).load(Ordering::Relaxed) & !PRESENT
    }

    /// Moves the base of direction `dir` up to `base` (never down) and frees every chunk
    /// that lies wholly below it.
    pub fn release(&mut self, rec: RecordId, dir: usize, base: u64) {
        let (r, dir) = (rec.0 as usize, dir & 1);
        let s = &self.store;
        if base <= s.dir(r, dir, D_BASE).load(Ordering::Relaxed) {
            return;
        }
        s.dir(r, dir, D_BASE).store(base, Ordering::Release);
        for _ in 0..s.g.all {
            let s = &self.store;
            let Some(c) = s.link(lo(s.dir(r, dir, D_ENDS).load(Ordering::Relaxed))) else { break };
            let end = s.chunk(c, C_OFFSET).load(Ordering::Relaxed) + s.chunk(c, C_LEN).load(Ordering::Relaxed);
            if end > base {
                break;
            }
            let next = lo(s.chunk(c, C_LINKS).load(Ordering::Relaxed));
            if next == NONE {
                // Head and tail both none, in one store.
                s.dir(r, dir, D_ENDS).store(NONE, Ordering::Release);
            } else {
                set_link(s.dir(r, dir, D_ENDS), false, next, Ordering::Release);
                if let Some(n) = s.link(next) {
                    set_link(s.chunk(n, C_LINKS), true, NONE, Ordering::Release);
                }
            }
            self.free_chunk(c);
        }
    }

    fn free_chunk(&mut self, c: usize) {
        let s = &self.store;
        let v = s.chunk(c, C_VERSION).load(Ordering::Relaxed);
        if v & 1 == 0 {
            return; // already free: never put an index on the free list twice
        }
        s.chunk(c, C_VERSION).store(v + 1, Ordering::Relaxed);
        // Everything written to this chunk from now on (its next use) comes after this fence:
        // a reader that copies any of it sees the new version on its second load.
        fence(Ordering::Release);
        let g = s.g;
        if c < g.chunks {
            self.push_free(g.cfree, H_CFREE_TAIL, c);
        } else {
            self.push_free(g.sfree, H_SFREE_TAIL, c);
        }
    }

    /// Frees a record and all its chunks (the connection's last events have left).
    pub fn close(&mut self, rec: RecordId) {
        let r = rec.0 as usize;
        let g = self.store.g;
        let v = self.store.rec(r, R_VERSION).load(Ordering::Relaxed);
        if v & 1 == 0 {
            return;
        }
        // Unlink from its bucket chain.
        let key = self.store.rec(r, R_KEY).load(Ordering::Relaxed);
        let b = g.bucket_at + bucket_of(key, g.buckets);
        let next = self.store.rec(r, R_NEXT).load(Ordering::Relaxed);
        let mut link = self.store.w(b).load(Ordering::Relaxed);
        if link == r as u64 + 1 {
            self.store.w(b).store(next, Ordering::Release);
        } else {
            for _ in 0..g.chunks {
                let Some(p) = usize::try_from(link.wrapping_sub(1)).ok().filter(|&p| p < g.chunks) else { break };
                let pn = self.store.rec(p, R_NEXT).load(Ordering::Relaxed);
                if pn == r as u64 + 1 {
                    self.store.rec(p, R_NEXT).store(next, Ordering::Release);
                    break;
                }
                link = pn;
            }
        }
        for d in 0..2 {
            for _ in 0..g.all {
                let s = &self.store;
                let Some(c) = s.link(lo(s.dir(r, d, D_ENDS).load(Ordering::Relaxed))) else { break };
                let n = lo(s.chunk(c, C_LINKS).load(Ordering::Relaxed));
                set_link(s.dir(r, d, D_ENDS), false, n, Ordering::Relaxed);
                self.free_chunk(c);
            }
            self.store.dir(r, d, D_ENDS).store(NONE, Ordering::Relaxed);
        }
        let s = &self.store;
        s.rec(r, R_VERSION).store(v + 1, Ordering::Relaxed);
        fence(Ordering::Release);
        self.push_free(g.rfree, H_RFREE_TAIL, r);
    }
}

#[cfg(test)]
mod tests;
