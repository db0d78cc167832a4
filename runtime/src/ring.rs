//! Bounded single-producer/single-consumer rings that live in the shared [`Region`].
//!
//! A ring carries small `Copy` descriptors between two actors, in the same process or in two
//! processes that map the same region. It is the only way actors talk on the data path.
//!
//! ```
//! # use runtime::{shm::Region, ring};
//! let region = Region::create(&format!("doc-ring-{}", std::process::id()), 1 << 20).unwrap();
//! let (mut tx, mut rx) = ring::create::<u64>(&region, "demo", 8).unwrap();
//! assert_eq!(tx.push_burst(&[1, 2, 3]), 3);
//! let mut out = Vec::new();
//! assert_eq!(rx.pop_burst(&mut out, 32), 3);
//! assert_eq!(out, [1, 2, 3]);
//! ```
//!
//! # Contract
//!
//! * SPSC is enforced by types: [`Producer`] and [`Consumer`] are not `Clone`, and `push` /
//!   `pop` take `&mut self`. Across processes it is enforced by a **claim** per side in the
//!   header (the pid of the holder): [`attach_producer`] / [`attach_consumer`] fail while a
//!   live process holds that side, and take over a side whose holder has died. Dropping a
//!   handle releases its claim, so "create here, drop one side, attach it in a child" works.
//! * A full ring never loses an item silently: [`Producer::push`] hands the value back,
//!   [`Producer::push_burst`] returns how many it took, and both count the event
//!   (`full_events`) and the refused items (`refused_items`) in shared counters.
//! * The ring block is named `ring.<name>` in the region; its header records magic, version,
//!   capacity, element size and alignment, and a type tag (a hash of
//!   `std::any::type_name::<T>()`, with the name itself kept for error messages). Attaching
//!   with another `T` is an error that names both types.
//! * `T` must be plain data to be shared across processes: integers, indices, offsets — no
//!   references or pointers (they would mean nothing in another address space). The type
//!   system cannot say this for `T: Copy + Send + 'static`, so it is the caller's duty.
//!
//! # Invariants
//!
//! * `head` (written only by the consumer) and `tail` (written only by the producer) are
//!   free-running 64-bit counters; `0 <= tail - head <= capacity`; slot of index `i` is
//!   `i & (capacity - 1)`. They never wrap in practice (2^64 items).
//! * The producer writes slots `[tail, tail + k)` and then publishes them with a Release store
//!   of `tail`; the consumer reads them after an Acquire load of `tail`, and frees them with a
//!   Release store of `head`, which the producer Acquire-loads before reusing the slots.
//! * Each handle caches the other side's index and reloads it only when the cached value says
//!   there is not enough room (producer) or not enough items (consumer), so a burst touches the
//!   other side's cache line at most once.
//! * `enqueued` and `dequeued` in [`RingStats`] are `tail` and `head` themselves.
//!   `high_water` is the largest occupancy the producer has seen, measured against its cached
//!   view of `head`: an upper bound of the true peak, never above `capacity`, and equal to
//!   `capacity` once the ring has been full.

use std::marker::PhantomData;
use std::mem::{align_of, size_of};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use crossbeam_utils::CachePadded;

use crate::shm::{Region, ShmError};

const MAGIC: u64 = u64::from_le_bytes(*b"MBOXRNG1");
const VERSION: u32 = 1;
const TYPE_NAME_MAX: usize = 96;

/// Counters only the producer writes, on their own cache line.
#[repr(C)]
struct ProducerCounters {
    full_events: AtomicU64,
    refused_items: AtomicU64,
    high_water: AtomicU64,
}

/// The ring header at the start of the `ring.<name>` block. Offsets only, no pointers.
#[repr(C)]
struct RingHeader {
    magic: AtomicU64,
    version: u32,
    type_name_len: u32,
    capacity: u64,
    elem_size: u64,
    elem_align: u64,
    type_tag: u64,
    /// Offset of slot 0 from the start of the block.
    slots_offset: u64,
    /// Pid of the process holding the producer side (0: free).
    producer_claim: AtomicU32,
    /// Pid of the process holding the consumer side (0: free).
    consumer_claim: AtomicU32,
    type_name: [u8; TYPE_NAME_MAX],
    /// Next index to read; written only by the consumer.
    head: CachePadded<AtomicU64>,
    /// Next index to write; written only by the producer.
    tail: CachePadded<AtomicU64>,
    prod: CachePadded<ProducerCounters>,
}

/// Counters of one ring, readable by any process that maps the region.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct RingStats {
    /// Ring name (without the `ring.` block prefix).
    pub name: String,
    /// Number of slots.
    pub capacity: u64,
    /// Items ever enqueued.
    pub enqueued: u64,
    /// Items ever dequeued.
    pub dequeued: u64,
    /// Pushes (single or burst) that could not place every item.
    pub full_events: u64,
    /// Items refused because the ring was full.
    pub refused_items: u64,
    /// Highest occupancy seen by the producer (see the module invariants).
    pub high_water: u64,
}

impl RingStats {
    /// Items in the ring when the counters were read.
    pub fn occupancy(&self) -> u64 {
        self.enqueued.saturating_sub(self.dequeued)
    }
}

/// Errors of [`create`], [`attach_producer`], [`attach_consumer`] and [`peek_stats`].
#[derive(Debug, thiserror::Error)]
pub enum RingError {
    /// Reserving or finding the block failed.
    #[error("ring `{name}`: {source}")]
    Region {
        /// Ring name.
        name: String,
        /// The region's error.
        #[source]
        source: ShmError,
    },
    /// The capacity is zero, not a power of two, or too large.
    #[error("ring `{name}`: capacity {capacity} is invalid: {reason}")]
    BadCapacity {
        /// Ring name.
        name: String,
        /// Requested capacity.
        capacity: usize,
        /// Why.
        reason: String,
    },
    /// The block is not an initialized ring of this version, or its header is inconsistent.
    #[error("ring `{name}`: not a valid ring: {reason}")]
    NotARing {
        /// Ring name.
        name: String,
        /// What did not match.
        reason: String,
    },
    /// The ring holds another element type.
    #[error("ring `{name}` holds `{found}` ({found_size} bytes, align {found_align}), not `{wanted}` ({wanted_size} bytes, align {wanted_align})")]
    TypeMismatch {
        /// Ring name.
        name: String,
        /// Type recorded in the ring.
        found: String,
        /// Its size.
        found_size: u64,
        /// Its alignment.
        found_align: u64,
        /// Type asked for.
        wanted: String,
        /// Its size.
        wanted_size: u64,
        /// Its alignment.
        wanted_align: u64,
    },
    /// A live process already holds this side of the ring.
    #[error("ring `{name}`: the {side} side is already held by process {pid}")]
    Held {
        /// Ring name.
        name: String,
        /// `"producer"` or `"consumer"`.
        side: &'static str,
        /// Pid of the holder.
        pid: u32,
    },
}

fn block_name(name: &str) -> String {
    format!("ring.{name}")
}

/// FNV-1a over the type name, mixed with size and alignment.
fn type_tag<T>() -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in std::any::type_name::<T>().bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^ ((size_of::<T>() as u64) << 32) ^ (align_of::<T>() as u64)
}

fn slots_offset<T>() -> usize {
    size_of::<RingHeader>().next_multiple_of(align_of::<T>())
}

/// The pieces both handles need; the claim is released on drop.
struct Shared<T> {
    region: Arc<Region>,
    hdr: NonNull<RingHeader>,
    slots: NonNull<T>,
    capacity: u64,
    mask: u64,
    name: String,
    /// Pid we stored in our side's claim.
    claim: u32,
    is_producer: bool,
    _t: PhantomData<T>,
}

impl<T> Shared<T> {
    fn hdr(&self) -> &RingHeader {
        // SAFETY: `hdr` points into the region block `ring.<name>`, checked to be large
        // enough when the handle was made; `region` keeps the mapping alive. The non-atomic
        // fields are written only before the magic is published and never again.
        unsafe { self.hdr.as_ref() }
    }

    fn stats(&self) -> RingStats {
        stats_of(self.hdr(), &self.name)
    }
}

impl<T> Drop for Shared<T> {
    fn drop(&mut self) {
        let claim = if self.is_producer { &self.hdr().producer_claim } else { &self.hdr().consumer_claim };
        let _ = claim.compare_exchange(self.claim, 0, Ordering::AcqRel, Ordering::Relaxed);
    }
}

fn stats_of(h: &RingHeader, name: &str) -> RingStats {
    RingStats {
        name: name.to_string(),
        capacity: h.capacity,
        enqueued: h.tail.load(Ordering::Acquire),
        dequeued: h.head.load(Ordering::Acquire),
        full_events: h.prod.full_events.load(Ordering::Relaxed),
        refused_items: h.prod.refused_items.load(Ordering::Relaxed),
        high_water: h.prod.high_water.load(Ordering::Relaxed),
    }
}

/// The producing end of a ring. Not `Clone`: there is exactly one per ring.
pub struct Producer<T> {
    shared: Shared<T>,
    /// Our `tail` (we are its only writer).
    tail: u64,
    /// Last `head` we loaded.
    cached_head: u64,
    /// Mirror of the shared `high_water`.
    high_water: u64,
}

/// The consuming end of a ring. Not `Clone`: there is exactly one per ring.
pub struct Consumer<T> {
    shared: Shared<T>,
    /// Our `head` (we are its only writer).
    head: u64,
    /// Last `tail` we loaded.
    cached_tail: u64,
}

// SAFETY: a handle owns its side of the ring exclusively (not Clone, claims, &mut methods);
// moving it to another thread moves that exclusive right. The values of type T that cross
// threads through the ring require T: Send.
unsafe impl<T: Send> Send for Producer<T> {}
// SAFETY: as for Producer.
unsafe impl<T: Send> Send for Consumer<T> {}

impl<T> std::fmt::Debug for Producer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer").field("stats", &self.stats()).finish()
    }
}

impl<T> std::fmt::Debug for Consumer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer").field("stats", &self.stats()).finish()
    }
}

fn pid_alive(pid: u32) -> bool {
    let Ok(p) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: kill with signal 0 sends nothing; it only checks that the process exists.
    let rc = unsafe { libc::kill(p, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Claims one side for this process; takes it over if its holder has died.
fn claim(slot: &AtomicU32, name: &str, side: &'static str) -> Result<u32, RingError> {
    let me = std::process::id();
    let mut expected = 0;
    for _ in 0..4 {
        match slot.compare_exchange(expected, me, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return Ok(me),
            Err(holder) if holder != me && !pid_alive(holder) => expected = holder,
            Err(holder) => return Err(RingError::Held { name: name.to_string(), side, pid: holder }),
        }
    }
    Err(RingError::Held { name: name.to_string(), side, pid: slot.load(Ordering::Acquire) })
}

/// Creates the ring `name` with `capacity` slots (a power of two) in `region`, and returns
/// both of its ends.
pub fn create<T: Copy + Send + 'static>(
    region: &Arc<Region>,
    name: &str,
    capacity: usize,
) -> Result<(Producer<T>, Consumer<T>), RingError> {
    let bad = |reason: &str| RingError::BadCapacity { name: name.to_string(), capacity, reason: reason.to_string() };
    if capacity == 0 {
        return Err(bad("a ring needs at least one slot"));
    }
    if !capacity.is_power_of_two() {
        return Err(bad(&format!("it must be a power of two (e.g. {})", capacity.next_power_of_two())));
    }
    let bytes = capacity
        .checked_mul(size_of::<T>())
        .and_then(|b| b.checked_add(slots_offset::<T>()))
        .ok_or_else(|| bad("the ring would not fit in memory"))?;
    let align = align_of::<RingHeader>().max(align_of::<T>());
    let offset = region
        .reserve(&block_name(name), bytes, align)
        .map_err(|source| RingError::Region { name: name.to_string(), source })?;
    // SAFETY: `reserve` returned a fresh, zero-filled, suitably aligned block of `bytes`
    // bytes inside the mapping, which starts with room for a RingHeader.
    let hdr = unsafe { region.base().add(offset) }.cast::<RingHeader>();
    let tname = std::any::type_name::<T>().as_bytes();
    let tlen = tname.len().min(TYPE_NAME_MAX);
    // SAFETY: the block is ours alone until the magic is published below (attachers check it
    // first); the writes stay inside the header; the zero-filled memory is a valid RingHeader
    // (atomics and integers) so taking `&mut` fields is fine.
    unsafe {
        let h = &mut *hdr;
        h.version = VERSION;
        h.type_name_len = tlen as u32;
        h.capacity = capacity as u64;
        h.elem_size = size_of::<T>() as u64;
        h.elem_align = align_of::<T>() as u64;
        h.type_tag = type_tag::<T>();
        h.slots_offset = slots_offset::<T>() as u64;
        h.producer_claim = AtomicU32::new(std::process::id());
        h.consumer_claim = AtomicU32::new(std::process::id());
        h.type_name[..tlen].copy_from_slice(&tname[..tlen]);
        h.magic.store(MAGIC, Ordering::Release);
    }
    let me = std::process::id();
    let producer =
        Producer { shared: shared::<T>(region, name, hdr, me, true), tail: 0, cached_head: 0, high_water: 0 };
    let consumer = Consumer { shared: shared::<T>(region, name, hdr, me, false), head: 0, cached_tail: 0 };
    Ok((producer, consumer))
}

fn shared<T>(region: &Arc<Region>, name: &str, hdr: *mut RingHeader, claim: u32, is_producer: bool) -> Shared<T> {
    // SAFETY: `hdr` points to a checked ring header (created or validated by the caller), so
    // it is non-null, and `slots_offset` was checked to stay inside the block.
    let (hdr, slots) = unsafe {
        let slots = hdr.cast::<u8>().add((*hdr).slots_offset as usize).cast::<T>();
        (NonNull::new_unchecked(hdr), NonNull::new_unchecked(slots))
    };
    // SAFETY: as above, the header is valid for reads.
    let capacity = unsafe { hdr.as_ref() }.capacity;
    Shared {
        region: Arc::clone(region),
        hdr,
        slots,
        capacity,
        mask: capacity - 1,
        name: name.to_string(),
        claim,
        is_producer,
        _t: PhantomData,
    }
}

/// Finds and validates the ring header of `name` without checking the element type.
fn find(region: &Arc<Region>, name: &str) -> Result<*mut RingHeader, RingError> {
    let (offset, size) =
        region.lookup(&block_name(name)).map_err(|source| RingError::Region { name: name.to_string(), source })?;
    let not = |reason: String| RingError::NotARing { name: name.to_string(), reason };
    if size < size_of::<RingHeader>() {
        return Err(not(format!("block is {size} bytes, smaller than a ring header")));
    }
    if offset & (align_of::<RingHeader>() - 1) != 0 {
        return Err(not(format!("block offset {offset} is misaligned")));
    }
    // SAFETY: lookup returned a block inside the mapping; it is large enough and aligned for
    // a RingHeader (checked above).
    let hdr = unsafe { region.base().add(offset) }.cast::<RingHeader>();
    // SAFETY: as above; every bit pattern is a valid RingHeader (integers and atomics).
    let h = unsafe { &*hdr };
    let magic = h.magic.load(Ordering::Acquire);
    if magic != MAGIC {
        return Err(not(format!("magic {magic:#x}, expected {MAGIC:#x} (not initialized yet?)")));
    }
    if h.version != VERSION {
        return Err(not(format!("version {}, expected {VERSION}", h.version)));
    }
    if h.capacity == 0 || !h.capacity.is_power_of_two() {
        return Err(not(format!("capacity {} is not a power of two", h.capacity)));
    }
    let end = h.capacity.checked_mul(h.elem_size).and_then(|b| b.checked_add(h.slots_offset));
    if h.slots_offset < size_of::<RingHeader>() as u64 || !matches!(end, Some(e) if e <= size as u64) {
        return Err(not(format!(
            "{} slots of {} bytes at offset {} do not fit in the {size}-byte block",
            h.capacity, h.elem_size, h.slots_offset
        )));
    }
    Ok(hdr)
}

fn check_type<T>(h: &RingHeader, name: &str) -> Result<(), RingError> {
    if h.type_tag == type_tag::<T>()
        && h.elem_size == size_of::<T>() as u64
        && h.elem_align == align_of::<T>() as u64
        && h.slots_offset & (align_of::<T>() as u64 - 1) == 0
    {
        return Ok(());
    }
    let len = (h.type_name_len as usize).min(TYPE_NAME_MAX);
    Err(RingError::TypeMismatch {
        name: name.to_string(),
        found: String::from_utf8_lossy(&h.type_name[..len]).into_owned(),
        found_size: h.elem_size,
        found_align: h.elem_align,
        wanted: std::any::type_name::<T>().to_string(),
        wanted_size: size_of::<T>() as u64,
        wanted_align: align_of::<T>() as u64,
    })
}

/// Attaches to the producer side of the existing ring `name` (e.g. from another process).
///
/// Fails if the ring does not exist, holds another element type, or its producer side is held
/// by a live process.
pub fn attach_producer<T: Copy + Send + 'static>(region: &Arc<Region>, name: &str) -> Result<Producer<T>, RingError> {
    let hdr = find(region, name)?;
    // SAFETY: `find` validated the header.
    let h = unsafe { &*hdr };
    check_type::<T>(h, name)?;
    let me = claim(&h.producer_claim, name, "producer")?;
    let tail = h.tail.load(Ordering::Acquire);
    let cached_head = h.head.load(Ordering::Acquire);
    let high_water = h.prod.high_water.load(Ordering::Relaxed);
    Ok(Producer { shared: shared::<T>(region, name, hdr, me, true), tail, cached_head, high_water })
}

/// Attaches to the consumer side of the existing ring `name` (e.g. from another process).
///
/// Fails if the ring does not exist, holds another element type, or its consumer side is held
/// by a live process.
pub fn attach_consumer<T: Copy + Send + 'static>(region: &Arc<Region>, name: &str) -> Result<Consumer<T>, RingError> {
    let hdr = find(region, name)?;
    // SAFETY: `find` validated the header.
    let h = unsafe { &*hdr };
    check_type::<T>(h, name)?;
    let me = claim(&h.consumer_claim, name, "consumer")?;
    let head = h.head.load(Ordering::Acquire);
    let cached_tail = h.tail.load(Ordering::Acquire);
    Ok(Consumer { shared: shared::<T>(region, name, hdr, me, false), head, cached_tail })
}

/// Reads the counters of ring `name` without attaching to it (for monitors).
pub fn peek_stats(region: &Arc<Region>, name: &str) -> Result<RingStats, RingError> {
    let hdr = find(region, name)?;
    // SAFETY: `find` validated the header.
    Ok(stats_of(unsafe { &*hdr }, name))
}

impl<T: Copy> Producer<T> {
    /// Enqueues `value`, or hands it back if the ring is full (counted as a full event).
    #[inline]
    pub fn push(&mut self, value: T) -> Result<(), T> {
        if self.push_burst(std::slice::from_ref(&value)) == 1 {
            Ok(())
        } else {
            Err(value)
        }
    }

    /// Enqueues as many items as fit from the front of `items`; returns how many.
    ///
    /// If not all fit, counts one `full_event` and the refused items. An empty slice is a
    /// no-op.
    #[inline]
    pub fn push_burst(&mut self, items: &[T]) -> usize {
        let n = items.len() as u64;
        if n == 0 {
            return 0;
        }
        let cap = self.shared.capacity;
        let mut free = cap - self.tail.wrapping_sub(self.cached_head);
        if free < n {
            self.cached_head = self.shared.hdr().head.load(Ordering::Acquire);
            free = cap - self.tail.wrapping_sub(self.cached_head);
        }
        let k = n.min(free);
        if k > 0 {
            let start = (self.tail & self.shared.mask) as usize;
            let k = k as usize;
            let first = k.min(cap as usize - start);
            let slots = self.shared.slots.as_ptr();
            // SAFETY: slots [tail, tail + k) are free (k <= capacity - (tail - head) with a
            // head we loaded with Acquire, so the consumer is done reading them), they are
            // inside the slot array (start + first <= capacity, k - first <= start), and
            // `items` does not overlap shared memory we own exclusively here.
            unsafe {
                std::ptr::copy_nonoverlapping(items.as_ptr(), slots.add(start), first);
                std::ptr::copy_nonoverlapping(items.as_ptr().add(first), slots, k - first);
            }
            self.tail += k as u64;
            self.shared.hdr().tail.store(self.tail, Ordering::Release);
            // A core thread asleep for want of work wakes now, not at the end of its sleep.
            crate::doorbell::ring();
            let occupancy = self.tail.wrapping_sub(self.cached_head);
            if occupancy > self.high_water {
                self.high_water = occupancy;
                self.shared.hdr().prod.high_water.store(occupancy, Ordering::Relaxed);
            }
        }
        if k < n {
            let c = &self.shared.hdr().prod;
            // Only the producer writes these counters: load + store, no read-modify-write.
            c.full_events.store(c.full_events.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
            c.refused_items.store(c.refused_items.load(Ordering::Relaxed) + (n - k), Ordering::Relaxed);
        }
        k as usize
    }
}

impl<T: Copy> Producer<T> {
    /// The items pushed at positions `[from, tail)`, as far as the ring still holds them
    /// (the last `capacity` pushed): slots are only ever written by the producer, so this
    /// is what the ring's previous producer (a process that died) last wrote.
    pub fn recent(&self, from: u64) -> Vec<T> {
        let from = from.max(self.tail.saturating_sub(self.shared.capacity));
        let slots = self.shared.slots.as_ptr();
        (from..self.tail)
            .map(|i| {
                // SAFETY: `i & mask < capacity`, inside the slot array; the slot was written by
                // a producer (positions below tail) and only a producer — us, the only one now —
                // writes slots; the consumer only reads them. T: Copy.
                unsafe { slots.add((i & self.shared.mask) as usize).read() }
            })
            .collect()
    }
}

impl<T> Producer<T> {
    /// Items pushed into this ring so far (its `tail`).
    pub fn position(&self) -> u64 {
        self.tail
    }

    /// Slots free right now (reloads the consumer's index).
    pub fn free_slots(&mut self) -> usize {
        self.cached_head = self.shared.hdr().head.load(Ordering::Acquire);
        (self.shared.capacity - self.tail.wrapping_sub(self.cached_head)) as usize
    }

    /// Number of slots.
    pub fn capacity(&self) -> usize {
        self.shared.capacity as usize
    }

    /// Ring name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The ring's shared counters.
    pub fn stats(&self) -> RingStats {
        self.shared.stats()
    }

    /// The region this ring lives in.
    pub fn region(&self) -> &Arc<Region> {
        &self.shared.region
    }
}

impl<T: Copy> Consumer<T> {
    /// Dequeues the oldest item, if any.
    #[inline]
    pub fn pop(&mut self) -> Option<T> {
        if self.cached_tail == self.head {
            self.cached_tail = self.shared.hdr().tail.load(Ordering::Acquire);
            if self.cached_tail == self.head {
                return None;
            }
        }
        let idx = (self.head & self.shared.mask) as usize;
        // SAFETY: head < tail (loaded with Acquire), so the slot was written and published by
        // the producer, which will not touch it until we advance head; idx < capacity.
        let v = unsafe { self.shared.slots.as_ptr().add(idx).read() };
        self.head += 1;
        self.shared.hdr().head.store(self.head, Ordering::Release);
        Some(v)
    }

    /// Appends up to `max` items to `out`, oldest first; returns how many.
    #[inline]
    pub fn pop_burst(&mut self, out: &mut Vec<T>, max: usize) -> usize {
        let k = self.peek_burst(out, max);
        self.commit(k);
        k
    }

    /// As [`pop_burst`](Self::pop_burst) but without taking the items: they stay in the
    /// ring (the producer cannot reuse their slots) until [`commit`](Self::commit). A
    /// consumer that must record what it takes before it takes it (an NF process's custody)
    /// peeks, records, then commits.
    #[inline]
    pub fn peek_burst(&mut self, out: &mut Vec<T>, max: usize) -> usize {
        let max = max as u64;
        let mut avail = self.cached_tail.wrapping_sub(self.head);
        if avail < max {
            self.cached_tail = self.shared.hdr().tail.load(Ordering::Acquire);
            avail = self.cached_tail.wrapping_sub(self.head);
        }
        let k = max.min(avail) as usize;
        if k == 0 {
            return 0;
        }
        let cap = self.shared.capacity as usize;
        let start = (self.head & self.shared.mask) as usize;
        let first = k.min(cap - start);
        let slots = self.shared.slots.as_ptr();
        // SAFETY: slots [head, head + k) were published by the producer (k <= tail - head with
        // tail loaded Acquire) and stay untouched until we store a head past them; both pieces
        // lie inside the slot array; T: Copy, so reading them through shared slices is a copy.
        unsafe {
            out.extend_from_slice(std::slice::from_raw_parts(slots.add(start), first));
            out.extend_from_slice(std::slice::from_raw_parts(slots, k - first));
        }
        k
    }

    /// Takes the first `k` items (at most those waiting, as last seen): frees their slots.
    #[inline]
    pub fn commit(&mut self, k: usize) {
        let k = (k as u64).min(self.cached_tail.wrapping_sub(self.head));
        if k == 0 {
            return;
        }
        self.head += k;
        self.shared.hdr().head.store(self.head, Ordering::Release);
    }

    /// Items taken from this ring so far (its `head`).
    pub fn position(&self) -> u64 {
        self.head
    }
}

impl<T> Consumer<T> {
    /// Items waiting right now (reloads the producer's index).
    pub fn len(&mut self) -> usize {
        self.cached_tail = self.shared.hdr().tail.load(Ordering::Acquire);
        self.cached_tail.wrapping_sub(self.head) as usize
    }

    /// Whether no item is waiting right now.
    pub fn is_empty(&mut self) -> bool {
        self.len() == 0
    }

    /// Number of slots.
    pub fn capacity(&self) -> usize {
        self.shared.capacity as usize
    }

    /// Ring name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The ring's shared counters.
    pub fn stats(&self) -> RingStats {
        self.shared.stats()
    }

    /// The region this ring lives in.
    pub fn region(&self) -> &Arc<Region> {
        &self.shared.region
    }
}
