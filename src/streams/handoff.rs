//! `mbox streams` on two threads: the reading side hands its bytes over to the hashing thread.
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

use super::*;

/// Bytes per [`Batch`] before it is sent (one ready range more at most: a segment, or a
/// chunk of out-of-order data).
pub(super) const BATCH_BYTES: usize = 256 << 10;
/// Items per [`Batch`] before it is sent.
pub(super) const BATCH_ITEMS: usize = 4096;
/// Batches queued between the threads; the reader waits when they are all taken.
pub(super) const BATCHES_QUEUED: usize = 4;

/// What the reader tells the hashing thread, in order. Connections are named by a slot the
/// reader hands out (dense, reused after the connection's `End`).
pub(super) enum Item {
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
pub(super) struct Batch {
    items: Vec<Item>,
    bytes: Vec<u8>,
}

/// Where the reader finds a direction's recent bytes again, to compare retransmissions
/// with: in the capture file (legacy pcap read from a regular file: each in-order range
/// that came straight from a packet is remembered by its file offset, and read back with
/// `pread` only when a retransmission overlaps it), else in a copy ([`Window`]).
#[derive(Default)]
pub(super) struct Behind {
    /// (stream offset, length, where): the shortest suffix of the ranges delivered that
    /// covers `keep_behind` bytes.
    refs: VecDeque<(u64, u32, Src)>,
    refs_bytes: u64,
    copy: Window,
}

/// Where a delivered range's bytes are.
pub(super) enum Src {
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
pub(super) fn reread(input: &Path) -> Option<(File, u64)> {
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
pub(super) struct Handoff {
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
pub(super) struct Slot {
    id: u32,
    local: bool,
}

/// The hashing thread hung up (it failed; its error is the one reported).
pub(super) struct HungUp;

impl Handoff {
    pub(super) fn new(tx: SyncSender<Batch>, back: Receiver<Batch>, opts: StreamsOptions, input: &Path) -> Handoff {
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

    pub(super) fn flush(&mut self) -> Result<(), HungUp> {
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
pub(super) struct Window {
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
pub(super) fn hash_batches(
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
}
