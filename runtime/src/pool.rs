//! The packet buffer pool: fixed-size buffers in the shared [`Region`], named by index.
//!
//! A packet enters the system by being copied once into a pool buffer; from then on actors
//! pass its [`PacketHandle`] (a 4-byte index) inside ring descriptors, never the bytes.
//!
//! ```
//! # use runtime::{shm::Region, pool};
//! let region = Region::create(&format!("doc-pool-{}", std::process::id()), 1 << 20).unwrap();
//! let (mut alloc, mut release, view) = pool::create(&region, "pkts", 16, 256).unwrap();
//! let h = alloc.alloc(b"hello").unwrap();
//! assert_eq!(view.data(h), b"hello");
//! assert!(release.release(h));
//! assert!(view.stats().balanced());
//! ```
//!
//! # Contract
//!
//! * Three handles with three roles. [`PoolAllocator`] (one, not `Clone`) takes buffers from
//!   the free list and fills them; [`PoolReleaser`] (one, not `Clone`) drops references and
//!   returns buffers whose count reaches zero; [`PoolView`] (`Clone + Send + Sync`, also
//!   obtainable in another process with [`attach`]) reads bytes and adjusts reference counts.
//! * The free list is an SPSC [`ring`] of `u32` indices named `pool.<name>.free`:
//!   the releaser is its producer, the allocator its consumer. It starts full of every index.
//! * **Hot reuse**: the allocator moves every index the ring holds onto a private stack
//!   before it takes one, and takes the top: the buffer freed *last*, whose lines are most
//!   likely still in cache, not the one freed longest ago (a ring alone cycles through every
//!   buffer of the pool, so with 4096 buffers each frame was copied into memory untouched
//!   for 4096 packets — issue 14). Buffers the run never needs at once stay at the bottom,
//!   untouched. The stack is the allocator's own (no other process sees it); a buffer on it
//!   is free exactly as one in the ring is.
//! * Lending: a source that receives straight into pool buffers (the DPDK port's zero-copy
//!   receive) takes free buffers with [`PoolAllocator::lend`] (counted `lent`), lets its
//!   device write them, and turns each filled one into a packet with
//!   [`PoolAllocator::adopt`] (counted `adopted` and `allocated`); a packet is released as
//!   any other, back onto the free list, from where the source lends it again. Buffers still
//!   lent at the end are counted with [`PoolAllocator::returned`]. The free list (the ring
//!   and the allocator's stack) stays the only place a buffer is free, and the allocator its
//!   only consumer.
//! * Every failure is counted: `exhausted` (no free buffer), `too_large` (data longer than a
//!   buffer), `bad_release` (releasing a buffer whose count is already 0 — ignored, so a
//!   double release can never put a buffer on the free list twice).
//! * The pool **balances** at the end of a run ([`PoolStats::balanced`]): every allocated
//!   buffer was freed and none is in use, and every lent buffer was adopted or returned.
//! * Holding a handle is what makes reading its buffer meaningful: [`PoolView::data`] and
//!   [`PoolView::retain`] are only valid while the caller holds a reference (it received the
//!   handle through a ring, or retained it). The pool cannot check this ownership (handles are
//!   plain indices that cross processes); reading a buffer after giving up its last reference
//!   may see it being refilled. Indices are bounds-checked; lengths are clamped to the buffer
//!   size, so no accessor ever reads outside the pool.
//!
//! # Invariants
//!
//! * Layout of the block `pool.<name>`: a header (offsets only), then `count` metadata entries
//!   (`refcount: AtomicU32`, `len: AtomicU32`), then `count` buffers of `stride` bytes
//!   (`buf_size` rounded up to 64, each buffer cache-line aligned).
//! * A buffer's index is either free — in the ring or on the allocator's stack, exactly once
//!   (refcount 0) — or held (refcount ≥ 1), never both. The allocator writes length and bytes before the handle leaves it; the ring that
//!   carries the handle (Release/Acquire) makes them visible to the receiver.
//! * Counters are each written by a single side (allocator: `allocated`, `exhausted`,
//!   `too_large`; releaser: `freed`, `bad_release`), on separate cache lines.

use std::num::NonZeroU32;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use crossbeam_utils::CachePadded;

use crate::ring::{self, Consumer, Producer, RingError};
use crate::shm::{Region, ShmError};

const MAGIC: u64 = u64::from_le_bytes(*b"MBOXPOL1");
const VERSION: u32 = 1;
const BUF_ALIGN: usize = 64;

/// A reference to one pool buffer: its index plus one, so `Option<PacketHandle>` is 4 bytes.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PacketHandle(NonZeroU32);

impl PacketHandle {
    /// The buffer index, `0..count`.
    #[inline]
    pub fn index(self) -> u32 {
        self.0.get() - 1
    }

    /// The handle of buffer `i`.
    ///
    /// # Panics
    ///
    /// If `i == u32::MAX` (no pool has that many buffers).
    #[inline]
    pub fn from_index(i: u32) -> PacketHandle {
        match i.checked_add(1).and_then(NonZeroU32::new) {
            Some(n) => PacketHandle(n),
            None => panic!("packet index {i} is out of range"),
        }
    }
}

#[repr(C)]
struct AllocCounters {
    allocated: AtomicU64,
    exhausted: AtomicU64,
    too_large: AtomicU64,
    lent: AtomicU64,
    adopted: AtomicU64,
    returned: AtomicU64,
}

#[repr(C)]
struct ReleaseCounters {
    freed: AtomicU64,
    bad_release: AtomicU64,
}

#[repr(C)]
struct PoolHeader {
    magic: AtomicU64,
    version: u32,
    buf_size: u32,
    count: u32,
    _pad: u32,
    stride: u64,
    /// Offsets from the start of the block.
    meta_offset: u64,
    data_offset: u64,
    alloc: CachePadded<AllocCounters>,
    release: CachePadded<ReleaseCounters>,
}

#[repr(C)]
struct BufMeta {
    refcount: AtomicU32,
    len: AtomicU32,
}

/// Counters of one pool.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct PoolStats {
    /// Number of buffers.
    pub buffers: u64,
    /// Bytes per buffer.
    pub buf_size: u64,
    /// Successful allocations.
    pub allocated: u64,
    /// Buffers returned to the free list.
    pub freed: u64,
    /// `allocated - freed`.
    pub in_use: u64,
    /// Allocations refused because no buffer was free.
    pub exhausted: u64,
    /// Allocations refused because the data was larger than a buffer.
    pub too_large: u64,
    /// Releases of a buffer whose count was already 0 (ignored).
    pub bad_release: u64,
    /// Buffers taken off the free list for a device to receive into
    /// ([`PoolAllocator::lend`]; the DPDK port's zero-copy receive). Absent when 0.
    #[serde(skip_serializing_if = "is_zero")]
    pub lent: u64,
    /// Of the lent buffers, those that came back holding a frame ([`PoolAllocator::adopt`]);
    /// each is also counted in `allocated`.
    #[serde(skip_serializing_if = "is_zero")]
    pub adopted: u64,
    /// Of the lent buffers, those the device still had, unused, when the run ended
    /// ([`PoolAllocator::returned`]).
    #[serde(skip_serializing_if = "is_zero")]
    pub returned: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

impl PoolStats {
    /// Every allocated buffer was freed and none is in use; every lent buffer came back,
    /// with a frame or unused at the end.
    pub fn balanced(&self) -> bool {
        self.allocated == self.freed && self.in_use == 0 && self.lent == self.adopted + self.returned
    }
}

/// Errors of [`create`] and [`attach`].
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// Reserving or finding the pool block failed.
    #[error("pool `{name}`: {source}")]
    Region {
        /// Pool name.
        name: String,
        /// The region's error.
        #[source]
        source: ShmError,
    },
    /// Creating the free-list ring failed.
    #[error("pool `{name}`: free list: {source}")]
    FreeList {
        /// Pool name.
        name: String,
        /// The ring's error.
        #[source]
        source: Box<RingError>,
    },
    /// Count or buffer size out of range.
    #[error("pool `{name}`: {reason}")]
    BadConfig {
        /// Pool name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// The block is not an initialized pool of this version.
    #[error("pool `{name}`: not a valid pool: {reason}")]
    NotAPool {
        /// Pool name.
        name: String,
        /// What did not match.
        reason: String,
    },
}

/// Why [`PoolAllocator::alloc`] refused (each is counted in [`PoolStats`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    /// No buffer is free.
    #[error("packet pool exhausted")]
    Exhausted,
    /// The data does not fit in a buffer.
    #[error("packet of {len} bytes does not fit in a {buf_size}-byte buffer")]
    TooLarge {
        /// Length asked for.
        len: usize,
        /// Buffer size.
        buf_size: u32,
    },
}

/// Read access to a pool, from any thread or process. Cheap to clone.
#[derive(Clone)]
pub struct PoolView {
    region: Arc<Region>,
    hdr: NonNull<PoolHeader>,
    meta: NonNull<BufMeta>,
    data: NonNull<u8>,
    count: u32,
    buf_size: u32,
    stride: usize,
    name: Arc<str>,
}

// SAFETY: the view's pointers target the shared mapping (kept alive by `region`); through a
// shared view only atomics are modified, and buffer bytes are read under the contract in the
// module docs (the reader holds a reference, so no one writes the buffer).
unsafe impl Send for PoolView {}
// SAFETY: as for Send: every method takes &self and touches only atomics or held buffers.
unsafe impl Sync for PoolView {}

impl std::fmt::Debug for PoolView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolView").field("name", &self.name).field("stats", &self.stats()).finish()
    }
}

/// Takes buffers from the free list and fills them. Exactly one per pool.
#[derive(Debug)]
pub struct PoolAllocator {
    view: PoolView,
    free: Consumer<u32>,
    /// Free indices taken off the ring, most recently freed on top (hot reuse, see the
    /// module docs).
    hot: Vec<u32>,
}

/// Drops references and returns buffers to the free list. Exactly one per pool.
#[derive(Debug)]
pub struct PoolReleaser {
    view: PoolView,
    free: Producer<u32>,
}

fn block_name(name: &str) -> String {
    format!("pool.{name}")
}

fn free_name(name: &str) -> String {
    format!("pool.{name}.free")
}

fn bump(c: &AtomicU64, by: u64) {
    // Single writer per counter (see the module invariants): no read-modify-write needed.
    c.store(c.load(Ordering::Relaxed) + by, Ordering::Relaxed);
}

struct Layout {
    stride: usize,
    meta_offset: usize,
    data_offset: usize,
    total: usize,
}

fn layout(count: u32, buf_size: u32) -> Option<Layout> {
    let stride = (buf_size as usize).checked_next_multiple_of(BUF_ALIGN)?.max(BUF_ALIGN);
    let meta_offset = std::mem::size_of::<PoolHeader>();
    let meta_end = meta_offset.checked_add((count as usize).checked_mul(std::mem::size_of::<BufMeta>())?)?;
    let data_offset = meta_end.checked_next_multiple_of(BUF_ALIGN)?;
    let total = data_offset.checked_add((count as usize).checked_mul(stride)?)?;
    Some(Layout { stride, meta_offset, data_offset, total })
}

/// Creates the pool `name` of `count` buffers of `buf_size` bytes in `region`.
///
/// Reserves the blocks `pool.<name>` and `ring.pool.<name>.free` (its free list, of capacity
/// `count` rounded up to a power of two) and fills the free list with every index.
pub fn create(
    region: &Arc<Region>,
    name: &str,
    count: u32,
    buf_size: u32,
) -> Result<(PoolAllocator, PoolReleaser, PoolView), PoolError> {
    let bad = |reason: String| PoolError::BadConfig { name: name.to_string(), reason };
    if count == 0 || count > (1 << 31) {
        return Err(bad(format!("buffer count {count} must be in 1..=2^31")));
    }
    if buf_size == 0 {
        return Err(bad("buffer size must be at least 1 byte".to_string()));
    }
    let l = layout(count, buf_size).ok_or_else(|| bad("pool size overflows".to_string()))?;
    let offset = region
        .reserve(&block_name(name), l.total, BUF_ALIGN.max(std::mem::align_of::<PoolHeader>()))
        .map_err(|source| PoolError::Region { name: name.to_string(), source })?;
    let (mut tx, rx) = ring::create::<u32>(region, &free_name(name), (count as usize).next_power_of_two())
        .map_err(|source| PoolError::FreeList { name: name.to_string(), source: Box::new(source) })?;
    // SAFETY: `reserve` returned a fresh, zero-filled block of `l.total` bytes inside the
    // mapping, aligned for PoolHeader; nobody else knows it until the magic is published.
    unsafe {
        let h = &mut *region.base().add(offset).cast::<PoolHeader>();
        h.version = VERSION;
        h.buf_size = buf_size;
        h.count = count;
        h.stride = l.stride as u64;
        h.meta_offset = l.meta_offset as u64;
        h.data_offset = l.data_offset as u64;
        h.magic.store(MAGIC, Ordering::Release);
    }
    let mut chunk = Vec::with_capacity(256);
    let mut next = 0u32;
    while next < count {
        chunk.clear();
        chunk.extend(next..count.min(next.saturating_add(256)));
        let pushed = tx.push_burst(&chunk);
        debug_assert_eq!(pushed, chunk.len(), "free list sized for every buffer");
        next += chunk.len() as u32;
    }
    let view = view_at(region, name, offset, l.total)?;
    let hot = Vec::with_capacity(count as usize);
    Ok((PoolAllocator { view: view.clone(), free: rx, hot }, PoolReleaser { view: view.clone(), free: tx }, view))
}

/// Attaches a read view to the existing pool `name` (e.g. from another process).
pub fn attach(region: &Arc<Region>, name: &str) -> Result<PoolView, PoolError> {
    let (offset, size) =
        region.lookup(&block_name(name)).map_err(|source| PoolError::Region { name: name.to_string(), source })?;
    view_at(region, name, offset, size)
}

fn view_at(region: &Arc<Region>, name: &str, offset: usize, size: usize) -> Result<PoolView, PoolError> {
    let not = |reason: String| PoolError::NotAPool { name: name.to_string(), reason };
    if size < std::mem::size_of::<PoolHeader>() || offset & (std::mem::align_of::<PoolHeader>() - 1) != 0 {
        return Err(not(format!("block of {size} bytes at offset {offset} cannot hold a pool header")));
    }
    // SAFETY: the block lies inside the mapping, is large enough and aligned for a PoolHeader
    // (checked above); every bit pattern is a valid PoolHeader (integers and atomics).
    let base = unsafe { region.base().add(offset) };
    // SAFETY: as above.
    let h = unsafe { &*base.cast::<PoolHeader>() };
    let magic = h.magic.load(Ordering::Acquire);
    if magic != MAGIC {
        return Err(not(format!("magic {magic:#x}, expected {MAGIC:#x}")));
    }
    if h.version != VERSION {
        return Err(not(format!("version {}, expected {VERSION}", h.version)));
    }
    let l = layout(h.count, h.buf_size).ok_or_else(|| not("size overflows".to_string()))?;
    if l.total > size
        || h.stride != l.stride as u64
        || h.meta_offset != l.meta_offset as u64
        || h.data_offset != l.data_offset as u64
    {
        return Err(not(format!(
            "header ({} buffers of {} bytes) does not match the {size}-byte block",
            h.count, h.buf_size
        )));
    }
    // SAFETY: the offsets were recomputed from count and buf_size and checked to fit in the
    // block, so both pointers stay inside it (and are non-null, being inside a mapping).
    let (meta, data) = unsafe {
        (
            NonNull::new_unchecked(base.add(l.meta_offset).cast::<BufMeta>()),
            NonNull::new_unchecked(base.add(l.data_offset)),
        )
    };
    Ok(PoolView {
        region: Arc::clone(region),
        // SAFETY: `base` is inside a mapping, hence non-null.
        hdr: unsafe { NonNull::new_unchecked(base.cast::<PoolHeader>()) },
        meta,
        data,
        count: h.count,
        buf_size: h.buf_size,
        stride: l.stride,
        name: Arc::from(name),
    })
}

impl PoolView {
    fn hdr(&self) -> &PoolHeader {
        // SAFETY: validated in `view_at`; `region` keeps the mapping alive; the non-atomic
        // fields never change after the magic is published.
        unsafe { self.hdr.as_ref() }
    }

    /// Metadata of buffer `h`.
    ///
    /// # Panics
    ///
    /// If the handle's index is not below `count` (a handle from another pool).
    #[inline]
    fn meta(&self, h: PacketHandle) -> &BufMeta {
        let i = h.index();
        assert!(i < self.count, "packet handle {i} out of range for pool `{}` of {} buffers", self.name, self.count);
        // SAFETY: i < count, so the entry is inside the metadata array; BufMeta is atomics.
        unsafe { &*self.meta.as_ptr().add(i as usize) }
    }

    #[inline]
    fn buf_ptr(&self, h: PacketHandle) -> *mut u8 {
        // The index was bounds-checked by `meta`, which every caller calls first.
        // SAFETY: index < count, so the buffer lies inside the data area of the block.
        unsafe { self.data.as_ptr().add(h.index() as usize * self.stride) }
    }

    /// The bytes stored in buffer `h`: exactly its length.
    ///
    /// Valid while the caller holds a reference to `h` (see the module contract).
    ///
    /// # Panics
    ///
    /// If `h` is out of range for this pool.
    #[inline]
    pub fn data(&self, h: PacketHandle) -> &[u8] {
        let len = (self.meta(h).len.load(Ordering::Acquire)).min(self.buf_size) as usize;
        // SAFETY: the buffer is inside the block and `len <= buf_size <= stride`; the caller
        // holds a reference, so the allocator does not write it while the slice lives.
        unsafe { std::slice::from_raw_parts(self.buf_ptr(h), len) }
    }

    /// Adds a reference to `h` (e.g. before handing it to a second consumer).
    ///
    /// Only valid while the caller holds a reference itself.
    ///
    /// # Panics
    ///
    /// If `h` is out of range for this pool.
    #[inline]
    pub fn retain(&self, h: PacketHandle) {
        self.meta(h).refcount.fetch_add(1, Ordering::Relaxed);
    }

    /// Current reference count of `h` (0 means free).
    ///
    /// # Panics
    ///
    /// If `h` is out of range for this pool.
    pub fn refcount(&self, h: PacketHandle) -> u32 {
        self.meta(h).refcount.load(Ordering::Acquire)
    }

    /// The pool's counters.
    pub fn stats(&self) -> PoolStats {
        let h = self.hdr();
        let allocated = h.alloc.allocated.load(Ordering::Relaxed);
        let freed = h.release.freed.load(Ordering::Relaxed);
        PoolStats {
            buffers: u64::from(self.count),
            buf_size: u64::from(self.buf_size),
            allocated,
            freed,
            in_use: allocated.saturating_sub(freed),
            exhausted: h.alloc.exhausted.load(Ordering::Relaxed),
            too_large: h.alloc.too_large.load(Ordering::Relaxed),
            bad_release: h.release.bad_release.load(Ordering::Relaxed),
            lent: h.alloc.lent.load(Ordering::Relaxed),
            adopted: h.alloc.adopted.load(Ordering::Relaxed),
            returned: h.alloc.returned.load(Ordering::Relaxed),
        }
    }

    /// The address of buffer `index` (for a device that receives into lent buffers); `None`
    /// when out of range.
    pub fn buffer_addr(&self, index: u32) -> Option<*mut u8> {
        // SAFETY: index < count: the buffer lies inside the data area of the block.
        (index < self.count).then(|| unsafe { self.data.as_ptr().add(index as usize * self.stride) })
    }

    /// The buffer that `addr` (a device's write address) starts, if it is exactly the start
    /// of one of this pool's buffers.
    pub fn index_of(&self, addr: *const u8) -> Option<u32> {
        let off = (addr as usize).checked_sub(self.data.as_ptr() as usize)?;
        let i = off / self.stride;
        (off % self.stride == 0 && i < self.count as usize).then_some(i as u32)
    }

    /// Bytes from one buffer's start to the next (`buf_size` rounded up to 64).
    pub fn stride(&self) -> usize {
        self.stride
    }

    /// Bytes per buffer.
    pub fn buf_size(&self) -> u32 {
        self.buf_size
    }

    /// Number of buffers.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Pool name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The region the pool lives in.
    pub fn region(&self) -> &Arc<Region> {
        &self.region
    }
}

/// The free buffer to use next: every index the ring `free` holds moves onto the stack
/// `hot` (oldest first), then the top — the buffer freed last — comes off it.
#[inline]
fn take_free(free: &mut Consumer<u32>, hot: &mut Vec<u32>) -> Option<u32> {
    free.pop_burst(hot, usize::MAX);
    hot.pop()
}

impl PoolAllocator {
    /// Copies `data` into a free buffer and returns its handle, with refcount 1.
    ///
    /// Errors (each counted): [`AllocError::TooLarge`], [`AllocError::Exhausted`].
    #[inline]
    pub fn alloc(&mut self, data: &[u8]) -> Result<PacketHandle, AllocError> {
        self.alloc_with(data.len(), |buf| buf.copy_from_slice(data))
    }

    /// Takes a free buffer, lets `fill` write its first `len` bytes, and returns its handle
    /// with refcount 1 (for sources that can write straight into the buffer).
    ///
    /// Errors (each counted): [`AllocError::TooLarge`], [`AllocError::Exhausted`].
    #[inline]
    pub fn alloc_with(&mut self, len: usize, fill: impl FnOnce(&mut [u8])) -> Result<PacketHandle, AllocError> {
        let v = &self.view;
        let hdr = v.hdr();
        if len > v.buf_size as usize {
            bump(&hdr.alloc.too_large, 1);
            return Err(AllocError::TooLarge { len, buf_size: v.buf_size });
        }
        let Some(index) = take_free(&mut self.free, &mut self.hot) else {
            bump(&hdr.alloc.exhausted, 1);
            return Err(AllocError::Exhausted);
        };
        let h = PacketHandle::from_index(index);
        let meta = v.meta(h);
        // SAFETY: the index came off the free list, so no one holds the buffer: we have
        // exclusive access to its `stride >= len` bytes until the handle leaves us.
        let buf = unsafe { std::slice::from_raw_parts_mut(v.buf_ptr(h), len) };
        fill(buf);
        meta.len.store(len as u32, Ordering::Relaxed);
        meta.refcount.store(1, Ordering::Release);
        bump(&hdr.alloc.allocated, 1);
        Ok(h)
    }

    /// Lending (a source that receives straight into pool buffers, such as the DPDK port's
    /// zero-copy receive): takes up to `max` free buffers off the free list (hottest first),
    /// appends their indices to `out` and returns how many. Each is counted `lent` and must end either
    /// [`adopt`](Self::adopt)ed (holding a frame) or [`returned`](Self::returned) (unused at
    /// the end) for the pool to balance.
    pub fn lend(&mut self, max: usize, out: &mut Vec<u32>) -> usize {
        let mut n = 0;
        while n < max {
            let Some(i) = take_free(&mut self.free, &mut self.hot) else { break };
            out.push(i);
            n += 1;
        }
        bump(&self.view.hdr().alloc.lent, n as u64);
        n
    }

    /// A lent buffer that now holds a frame of `len` bytes (written by the device, or
    /// by [`fill_lent`](Self::fill_lent)) becomes a packet: its handle, with refcount 1,
    /// counted in `allocated` and `adopted`.
    ///
    /// Errors: [`AllocError::TooLarge`] when `len` exceeds the buffer (counted; the buffer
    /// stays lent).
    ///
    /// # Panics
    ///
    /// If `index` is out of range.
    pub fn adopt(&mut self, index: u32, len: usize) -> Result<PacketHandle, AllocError> {
        let v = &self.view;
        let hdr = v.hdr();
        if len > v.buf_size as usize {
            bump(&hdr.alloc.too_large, 1);
            return Err(AllocError::TooLarge { len, buf_size: v.buf_size });
        }
        let h = PacketHandle::from_index(index);
        let meta = v.meta(h);
        meta.len.store(len as u32, Ordering::Relaxed);
        meta.refcount.store(1, Ordering::Release);
        bump(&hdr.alloc.allocated, 1);
        bump(&hdr.alloc.adopted, 1);
        Ok(h)
    }

    /// Copies `data` into the lent buffer `index`, then [`adopt`](Self::adopt)s it.
    ///
    /// # Safety
    ///
    /// `index` must be a buffer this allocator lent and nobody else (no device) writes.
    pub unsafe fn fill_lent(&mut self, index: u32, data: &[u8]) -> Result<PacketHandle, AllocError> {
        if data.len() > self.view.buf_size as usize {
            return self.adopt(index, data.len());
        }
        let h = PacketHandle::from_index(index);
        let _ = self.view.meta(h); // bounds check
                                   // SAFETY: in range (above), len <= buf_size; exclusive per the caller's contract.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.view.buf_ptr(h), data.len()) };
        self.adopt(index, data.len())
    }

    /// Counts `n` lent buffers that came back unused at the end of the run (they do not
    /// go back on the free list: the run is over).
    pub fn returned(&mut self, n: u64) {
        bump(&self.view.hdr().alloc.returned, n);
    }

    /// Buffers free right now.
    pub fn available(&mut self) -> usize {
        self.free.len() + self.hot.len()
    }

    /// Buffers allocated and not yet freed (packets in flight), as this allocator sees the
    /// releaser's counter now.
    pub fn in_use(&self) -> u64 {
        self.allocated().saturating_sub(self.freed())
    }

    /// Buffers allocated so far (this allocator's own counter).
    pub fn allocated(&self) -> u64 {
        self.view.hdr().alloc.allocated.load(Ordering::Relaxed)
    }

    /// Buffers freed so far (by whoever releases them: TX, an NF process).
    pub fn freed(&self) -> u64 {
        self.view.hdr().release.freed.load(Ordering::Acquire)
    }

    /// The pool's read view.
    pub fn view(&self) -> &PoolView {
        &self.view
    }
}

impl PoolReleaser {
    /// Drops one reference to `h`; when none is left the buffer returns to the free list and
    /// this returns `true`.
    ///
    /// Releasing a buffer whose count is already 0 is counted as `bad_release` and does
    /// nothing, so a double release never frees a buffer twice.
    ///
    /// # Panics
    ///
    /// If `h` is out of range for this pool.
    #[inline]
    pub fn release(&mut self, h: PacketHandle) -> bool {
        let hdr = self.view.hdr();
        let rc = &self.view.meta(h).refcount;
        let mut cur = rc.load(Ordering::Relaxed);
        loop {
            if cur == 0 {
                bump(&hdr.release.bad_release, 1);
                return false;
            }
            match rc.compare_exchange_weak(cur, cur - 1, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => break,
                Err(actual) => cur = actual,
            }
        }
        if cur != 1 {
            return false;
        }
        if self.free.push(h.index()).is_err() {
            // Only possible if the invariants were broken elsewhere (a retain after the last
            // release); count it rather than lose track silently.
            bump(&hdr.release.bad_release, 1);
            return false;
        }
        bump(&hdr.release.freed, 1);
        true
    }

    /// The pool's read view.
    pub fn view(&self) -> &PoolView {
        &self.view
    }
}
