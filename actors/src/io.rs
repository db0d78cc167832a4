//! The ends of the chain: the RX stage that turns captured frames into events, and the TX
//! sink that emits, counts and releases them.
//!
//! **RX.** [`RxStage`] reads a [`PacketSource`], copies each frame into a pool buffer and
//! publishes its primary `FRAME` event (sequence number from 1, capture time, wire length).
//! When the pool is exhausted or the first ring is full it waits (back-pressure: a file
//! source never needs to lose a packet); the frame waits in the stage, counted as a stall.
//! A source that receives straight into the pool (the DPDK port's zero-copy receive:
//! [`PacketSource::receives_in_pool`]) hands RX frames already in pool buffers, and nothing
//! is copied. A frame larger than a pool buffer cannot enter the system: it is counted as dropped by
//! `rx` with the reason `frame larger than pool buffer`, never silently skipped. At the end
//! of the source, on a source error, or when the stop flag is set (Ctrl-C), RX sends the
//! end-of-input marker.
//!
//! **Pacing** (issue 14). RX reads ahead only so far: while [`RxStage::pacing`] packets (by
//! default half its output ring, at least two bursts) are in flight — in pool buffers, not
//! yet freed at TX — and the chain keeps freeing them, it waits instead of filling every
//! ring to the brim. Full rings and thousands of buffers in flight buy a single core nothing
//! but cache misses: each frame was copied into a buffer, and its bytes into the stream
//! store, thousands of packets before the stages after RX touched them again. With the
//! pool's hot reuse ([`runtime::pool`]: the buffer freed last is filled next) the buffers in
//! use stay few and warm. Pacing only waits while buffers come back: when none was freed for
//! [`PACE_STALL_NS`] and [`PACE_STALL_POLLS`] polls of RX (an NF holds many packets, or one
//! on another core was not running for a moment; counting polls too, a thread the OS did not
//! run sees no stall) the limit doubles (at least one burst above what is in flight) and RX
//! reads on — so it never holds back for long a chain that waits for more input: one that
//! holds N packets stalls it about log2(N / limit) times. A raised limit falls back to the
//! configured one once [`PACE_RAISE_FREES`] times the raised limit in buffers have been
//! freed since, or once fewer than the configured limit are in flight: a moment's stall of
//! the chain (a core descheduled for a millisecond) does not leave RX reading ahead to the
//! pool's end for the rest of the run, which is what an earlier version did (every ring full
//! for good after one stall; issue 14). The run summary counts the waits and the raises
//! (`rx waited: ...`). A poll that waits for pacing counts as busy for the executor: the
//! chain is working on what RX read, so the core neither yields nor sleeps for it (a core
//! that yields to another process for a time slice on every pacing wait made light apps on a
//! shared machine several times slower). The order of events, hence every output, is the
//! same either way. Mode b's one-at-a-time gate and sources that
//! receive into the pool themselves (DPDK zero-copy) are not paced.
//!
//! **TX.** [`TxSink`] consumes the last ring. A primary event that no stage dropped is
//! written to the [`PacketSink`] (if any) and counted out; a dropped one is counted under
//! the dropping actor and reason. Every descriptor that holds a packet reference releases it,
//! so when the end marker arrives every buffer is back in the pool. The accounting identity
//! `packets in = packets out + packets dropped` is checked by the engine from these reports.
//!
//! **Live.** [`LiveSource`] reads live interfaces (`AF_PACKET` rings, round robin) and never
//! ends by itself: only the stop flag (Ctrl-C, `--duration`) ends it. [`LiveSink`] sends each
//! emitted frame out of the *other* interface of an inline pair. The ingress interface of a
//! frame is kept beside the pool, in an [`Ingress`] table indexed by pool buffer (RX writes
//! it before publishing, TX reads it when the frame leaves): only RX allocates buffers and a
//! primary packet keeps its buffer to the end, so descriptors and NFs stay untouched.
//!
//! **Resets.** With [`TxSink::with_rejects`], TX answers each `EVENT/IDS_REJECT` (a
//! `reject` rule's match, published after the dropped packet's own descriptor) with the two
//! TCP resets of [`runtime::ports::Resets`], built from the event's packet and handed to
//! [`PacketSink::inject`]: the one to the packet's receiver leaves by the other interface,
//! the one to its sender by the packet's own ingress interface. A live inline pair sends
//! them (`rst_sent`); a file run writes them to the `-o` capture, if any (`rst_captured`);
//! otherwise they are counted as not sent. A reject event without a packet waits for the
//! flow's next packet at TX and takes its addresses and numbers from it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use runtime::executor::{PollResult, Runnable};
use runtime::pool::{AllocError, PoolAllocator, PoolReleaser, PoolView};
use runtime::ports::{AfPacketRx, AfPacketTx, KernelStats, PacketRecord, PcapReader, PcapWriter, PortError};
use runtime::ring::{Consumer, Producer};
use runtime::trace::{now_ns, Span, SpanKind, TraceBuffer};

use crate::desc::{desc_flags, EventDesc};
use crate::event::builtin;
use crate::stage::{publish, ReportSlot, BURST};

/// Where frames come from.
pub trait PacketSource: Send {
    /// The next frame, `Ok(None)` at the end (or, for a source that has not [`ended`],
    /// when no frame is waiting now).
    ///
    /// [`ended`]: PacketSource::ended
    fn next_packet(&mut self) -> Result<Option<PacketRecord<'_>>, PortError>;
    /// After `Ok(None)`: true if the source is over, false if it may have frames later (a
    /// live interface). Files end.
    fn ended(&self) -> bool {
        true
    }
    /// The port (interface index) the last frame came from; 0 for files.
    fn port(&self) -> u8 {
        0
    }
    /// The kernel's counters of each interface of a live source, with the interface's name
    /// (read once, at the end); empty for a source without them (a capture file).
    fn kernel_stats(&mut self) -> Vec<(String, KernelStats)> {
        Vec::new()
    }
    /// Bytes consumed so far (for progress).
    fn bytes_read(&self) -> u64;
    /// A warning to show at the end (e.g. a truncated capture), if any.
    fn end_note(&self) -> Option<String> {
        None
    }
    /// Frames the kernel dropped before this source could read them (a live port's
    /// `PACKET_STATISTICS`), or `None` when the source has no such counter (a capture file).
    /// Called once per burst: it must be cheap (return a value the source refreshes at its
    /// own pace, never a system call per call). Shown by `--stats-interval` and `--metrics`.
    fn kernel_drops(&self) -> Option<u64> {
        None
    }
    /// True for a source that receives straight into the pool (the DPDK port's zero-copy
    /// receive): RX then calls [`next_in_pool`](PacketSource::next_in_pool) instead of
    /// [`next_packet`](PacketSource::next_packet) and copies nothing. Asked once.
    fn receives_in_pool(&self) -> bool {
        false
    }
    /// The next frame, already in a pool buffer that the source took with
    /// [`PoolAllocator::lend`] and turned into a packet with [`PoolAllocator::adopt`];
    /// `Ok(None)` as for [`next_packet`](PacketSource::next_packet).
    fn next_in_pool(&mut self, _alloc: &mut PoolAllocator) -> Result<Option<InPool>, PortError> {
        Ok(None)
    }
    /// Called once when RX ends: a lending source counts the buffers it still holds
    /// unused ([`PoolAllocator::returned`]), so that the pool balances.
    fn finish_pool(&mut self, _alloc: &mut PoolAllocator) {}
    /// The receive queue the last frame came from (a DPDK port with several queues); 0
    /// otherwise. Noted beside the pool with [`RxStage::with_queues`].
    fn queue(&self) -> u8 {
        0
    }
}

/// A frame a source received straight into the pool ([`PacketSource::next_in_pool`]).
#[derive(Clone, Copy, Debug)]
pub struct InPool {
    /// Its buffer; `None` when the frame was larger than a buffer (counted by RX as
    /// `too_large`, as for a copied frame).
    pub packet: Option<runtime::pool::PacketHandle>,
    /// Capture time.
    pub ts_ns: u64,
    /// Bytes received.
    pub len: u32,
    /// Length on the wire.
    pub orig_len: u32,
}

impl PacketSource for PcapReader {
    fn next_packet(&mut self) -> Result<Option<PacketRecord<'_>>, PortError> {
        PcapReader::next_packet(self)
    }
    fn bytes_read(&self) -> u64 {
        PcapReader::bytes_read(self)
    }
    fn end_note(&self) -> Option<String> {
        self.stats().truncated_tail.then(|| {
            "the capture ends in the middle of a packet record (was the capture cut short?); the partial record was not read".to_string()
        })
    }
}

/// Where emitted frames go.
pub trait PacketSink: Send {
    /// Writes one frame.
    fn write(&mut self, ts_ns: u64, data: &[u8], orig_len: u32) -> Result<(), PortError>;
    /// Writes one frame that entered through `port` (see [`PacketSource::port`]).
    fn write_from(&mut self, port: u8, ts_ns: u64, data: &[u8], orig_len: u32) -> Result<(), PortError> {
        let _ = port;
        self.write(ts_ns, data, orig_len)
    }
    /// Called after every burst TX handled: a batching sink sends what it holds.
    fn flush_burst(&mut self) {}
    /// Flushes; returns frames written.
    fn finish(&mut self) -> Result<u64, PortError>;
    /// A warning to show at the end (e.g. frames the kernel refused to send), if any.
    fn end_note(&self) -> Option<String> {
        None
    }
    /// Sends a frame the platform made itself (a TCP reset) out of port `egress` and records
    /// it in the capture, if any; says what became of it. The default can do neither.
    fn inject(&mut self, egress: u8, ts_ns: u64, data: &[u8]) -> Result<Injected, PortError> {
        let _ = (egress, ts_ns, data);
        Ok(Injected::NotSent)
    }
}

/// What a sink did with a frame the platform made ([`PacketSink::inject`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Injected {
    /// Queued for sending on a live interface (and written to the capture, if any).
    Sent,
    /// Only written to the output capture (an offline or passive run with `-o`).
    Captured,
    /// Neither: no interface can send and there is no capture.
    NotSent,
}

/// The ingress port of every pool buffer in use (see the module docs).
#[derive(Debug)]
pub struct Ingress(Box<[AtomicU8]>);

impl Ingress {
    /// A table for a pool of `buffers` buffers.
    pub fn new(buffers: u32) -> Arc<Ingress> {
        Arc::new(Ingress((0..buffers).map(|_| AtomicU8::new(0)).collect()))
    }

    fn set(&self, buffer: u32, port: u8) {
        if let Some(p) = self.0.get(buffer as usize) {
            p.store(port, Ordering::Relaxed);
        }
    }

    /// The byte noted for `buffer` (0 if never noted or out of range): the port its frame
    /// came in by, or (DPDK) the RX queue.
    pub fn get(&self, buffer: u32) -> u8 {
        self.0.get(buffer as usize).map_or(0, |p| p.load(Ordering::Relaxed))
    }
}

/// Frames from live interfaces, port `i` being `ports[i]` (see the module docs).
pub struct LiveSource {
    ports: Vec<AfPacketRx>,
    next: usize,
    last: u8,
    /// Kernel ring drops of every port, as last read (live statistics read this; refreshed
    /// at most every [`KERNEL_STATS_EVERY`], never per frame: the read is a syscall).
    kernel_drops: u64,
    refreshed: std::time::Instant,
    /// Calls since the clock was last looked at (it is looked at once per 1024 calls).
    calls: u32,
}

/// How often a [`LiveSource`] reads the kernel's ring counters while running.
pub const KERNEL_STATS_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

impl LiveSource {
    /// A source over `ports` (at most 255).
    pub fn new(ports: Vec<AfPacketRx>) -> LiveSource {
        LiveSource { ports, next: 0, last: 0, kernel_drops: 0, refreshed: std::time::Instant::now(), calls: 0 }
    }

    fn refresh_kernel_drops(&mut self) {
        // Not even a clock read per frame: the busy path only counts.
        self.calls = self.calls.wrapping_add(1);
        if !self.calls.is_multiple_of(1024) {
            return;
        }
        if self.refreshed.elapsed() >= KERNEL_STATS_EVERY {
            self.refreshed = std::time::Instant::now();
            // Each port accumulates what it read (the kernel resets its counters on a read).
            self.kernel_drops = self.ports.iter_mut().filter_map(|p| p.stats().ok()).map(|s| s.drops).sum();
        }
    }
}

impl PacketSource for LiveSource {
    fn next_packet(&mut self) -> Result<Option<PacketRecord<'_>>, PortError> {
        self.refresh_kernel_drops();
        let n = self.ports.len();
        for _ in 0..n {
            let i = self.next;
            self.next = (i + 1) % n;
            if self.ports[i].ready() {
                self.last = i as u8;
                return self.ports[i].next_frame();
            }
        }
        Ok(None)
    }
    fn bytes_read(&self) -> u64 {
        0
    }
    fn ended(&self) -> bool {
        false
    }
    fn port(&self) -> u8 {
        self.last
    }
    fn end_note(&self) -> Option<String> {
        None
    }
    fn kernel_drops(&self) -> Option<u64> {
        Some(self.kernel_drops)
    }
    fn kernel_stats(&mut self) -> Vec<(String, KernelStats)> {
        // A socket that cannot say (it was open a moment ago) reports what it read before.
        self.ports
            .iter_mut()
            .map(|p| {
                let s = p.stats().unwrap_or_else(|_| p.last_stats());
                (p.iface().to_string(), s)
            })
            .collect()
    }
}

/// Sends each frame out of the other interface of an inline pair: a frame from port 0 leaves
/// through port 1 and vice versa; optionally also writes it to a capture (`-o`).
pub struct LiveSink {
    ports: Vec<AfPacketTx>,
    capture: Option<PcapWriter>,
}

impl LiveSink {
    /// A sink over an inline pair (`ports` holds the transmitters of port 0 and port 1).
    pub fn new(ports: Vec<AfPacketTx>, capture: Option<PcapWriter>) -> LiveSink {
        LiveSink { ports, capture }
    }
}

impl PacketSink for LiveSink {
    fn write(&mut self, ts_ns: u64, data: &[u8], orig_len: u32) -> Result<(), PortError> {
        self.write_from(0, ts_ns, data, orig_len)
    }
    fn write_from(&mut self, port: u8, ts_ns: u64, data: &[u8], orig_len: u32) -> Result<(), PortError> {
        if let Some(out) = self.ports.get_mut(usize::from(port ^ 1)) {
            out.queue(data);
        }
        match &mut self.capture {
            Some(w) => w.write(ts_ns, data, orig_len),
            None => Ok(()),
        }
    }
    fn flush_burst(&mut self) {
        for p in &mut self.ports {
            p.flush();
        }
    }
    fn inject(&mut self, egress: u8, ts_ns: u64, data: &[u8]) -> Result<Injected, PortError> {
        let Some(out) = self.ports.get_mut(usize::from(egress)) else { return Ok(Injected::NotSent) };
        out.queue(data);
        if let Some(w) = &mut self.capture {
            w.write(ts_ns, data, data.len() as u32)?;
        }
        Ok(Injected::Sent)
    }
    fn finish(&mut self) -> Result<u64, PortError> {
        self.flush_burst();
        let sent = self.ports.iter().map(AfPacketTx::sent).sum();
        match self.capture.take() {
            Some(w) => w.finish().map(|_| sent),
            None => Ok(sent),
        }
    }
    fn end_note(&self) -> Option<String> {
        let failed: Vec<String> = self
            .ports
            .iter()
            .filter(|p| p.failed() > 0)
            .map(|p| {
                let why = p.last_error().map_or_else(String::new, |e| format!(" (last: {e})"));
                format!("{} frame(s) the kernel refused to send on `{}`{why}", p.failed(), p.iface())
            })
            .collect();
        (!failed.is_empty()).then(|| failed.join("; "))
    }
}

impl PacketSink for Option<PcapWriter> {
    fn write(&mut self, ts_ns: u64, data: &[u8], orig_len: u32) -> Result<(), PortError> {
        match self {
            Some(w) => w.write(ts_ns, data, orig_len),
            None => Ok(()),
        }
    }
    fn finish(&mut self) -> Result<u64, PortError> {
        match self.take() {
            Some(w) => w.finish(),
            None => Ok(0),
        }
    }
    fn inject(&mut self, _egress: u8, ts_ns: u64, data: &[u8]) -> Result<Injected, PortError> {
        match self {
            Some(w) => w.write(ts_ns, data, data.len() as u32).map(|()| Injected::Captured),
            None => Ok(Injected::NotSent),
        }
    }
}

/// What RX did.
#[derive(Clone, Debug, Default)]
pub struct RxReport {
    /// Frames read from the source.
    pub packets_in: u64,
    /// Their captured bytes.
    pub bytes_in: u64,
    /// Frames that did not fit a pool buffer (counted as dropped by `rx`).
    pub too_large: u64,
    /// Polls that waited for a free buffer.
    pub pool_stalls: u64,
    /// Polls that waited for room in the first ring.
    pub ring_stalls: u64,
    /// Polls that waited because enough packets were in flight (pacing, module docs).
    pub paced: u64,
    /// Times pacing raised its limit because no buffer came back for [`PACE_STALL_NS`]
    /// (module docs).
    pub pace_raised: u64,
    /// The source failed (the run stops reading there and reports it).
    pub error: Option<String>,
    /// A warning from the source.
    pub note: Option<String>,
    /// A live source's kernel counters (ring drops) per interface, read at the end; empty for
    /// a capture file.
    pub kernel: Vec<(String, KernelStats)>,
    /// Stopped by the stop flag before the end of the source.
    pub interrupted: bool,
    /// True once RX sent the end marker.
    pub finished: bool,
    /// Recorded spans (with `--trace`).
    pub trace: Vec<Span>,
    /// Spans that did not fit.
    pub trace_dropped: u64,
}

/// Live counters of RX, for a progress bar and live statistics (relaxed atomics, stored once
/// per burst).
#[derive(Debug, Default)]
pub struct RxProgress {
    /// Source bytes consumed.
    pub bytes: AtomicU64,
    /// Frames read.
    pub packets: AtomicU64,
    /// Frames that did not fit a pool buffer (dropped by `rx`).
    pub too_large: AtomicU64,
    /// The source's kernel drops ([`PacketSource::kernel_drops`]); meaningful only when
    /// [`RxProgress::kernel_drops_known`] is set.
    pub kernel_drops: AtomicU64,
    /// The source counts kernel drops.
    pub kernel_drops_known: AtomicBool,
}

impl RxProgress {
    /// The source's kernel drops so far, `None` when it does not count them.
    pub fn kernel_drops(&self) -> Option<u64> {
        self.kernel_drops_known.load(Ordering::Relaxed).then(|| self.kernel_drops.load(Ordering::Relaxed))
    }
}

/// The contract of RX, the first actor of every chain: it publishes the frames it reads.
/// The engine links the chain from it and the app loader checks links against it.
pub fn rx_contract() -> crate::Contract {
    crate::Contract {
        name: "rx".into(),
        kind: "rx".into(),
        publications: vec![crate::Publication { port: "frames".into(), event: crate::builtin::FRAME }],
        ..Default::default()
    }
}

/// The RX stage (see the module docs).
pub struct RxStage {
    source: Box<dyn PacketSource>,
    alloc: PoolAllocator,
    output: Producer<EventDesc>,
    stop: Arc<AtomicBool>,
    /// A frame read but not yet in a buffer (pool exhausted): its time, bytes, wire length.
    waiting: Option<(u64, Vec<u8>, u32)>,
    /// The port the waiting frame came from.
    waiting_port: u8,
    /// Where each buffer's ingress port is noted (live inline runs).
    ingress: Option<Arc<Ingress>>,
    /// Where each buffer's receive queue is noted (DPDK ports whose queues pick the shard).
    queues: Option<Arc<Ingress>>,
    /// The source receives straight into the pool.
    in_pool: bool,
    batch: Vec<EventDesc>,
    seq: u64,
    last_ts: u64,
    done_reading: bool,
    finished: bool,
    report: RxReport,
    progress: Arc<RxProgress>,
    slot: ReportSlot<RxReport>,
    trace: Option<(u16, TraceBuffer)>,
    /// When the current frame's work began (tracing).
    poll_start: u64,
    /// Mode b: admit a frame only when nothing is in flight.
    gate: Option<Arc<AtomicI64>>,
    /// Live reconfiguration: stamps requested reloads with the next packet's number.
    boundary: Option<Arc<crate::boundary::Boundary>>,
    /// Pacing (module docs): the packets in flight above which RX waits; 0: off.
    pace_base: u64,
    /// The limit in force: `pace_base`, or more after the chain stalled with that many in
    /// flight (module docs).
    pace_limit: u64,
    /// The releaser's `freed` count when the limit was last raised.
    pace_raised_at: u64,
    /// The releaser's `freed` count when RX last saw buffers come back, when (0: not
    /// waiting), and the polls RX waited since.
    pace_freed: u64,
    pace_since: u64,
    pace_polls: u32,
    /// The last poll waited for pacing: the chain is busy with what RX read, so the poll
    /// counts as busy (the core neither yields nor sleeps for it; module docs).
    pacing_now: bool,
}

/// Pacing stops waiting (doubles its limit and reads on) when no buffer came back for this
/// long (1 ms) *and* [`PACE_STALL_POLLS`] polls of RX (a thread that was not scheduled saw
/// no stall of the chain).
pub const PACE_STALL_NS: u64 = 1_000_000;
/// A raised pacing limit falls back to the configured one once this many times the raised
/// limit in buffers have been freed since (or once fewer than the configured limit are in
/// flight).
pub const PACE_RAISE_FREES: u64 = 16;
/// See [`PACE_STALL_NS`].
pub const PACE_STALL_POLLS: u32 = 64;

impl RxStage {
    /// An RX stage reading `source` into `alloc`'s pool and publishing into `output`.
    pub fn new(
        source: Box<dyn PacketSource>,
        alloc: PoolAllocator,
        output: Producer<EventDesc>,
        stop: Arc<AtomicBool>,
    ) -> (RxStage, ReportSlot<RxReport>, Arc<RxProgress>) {
        let slot: ReportSlot<RxReport> = Arc::default();
        let progress = Arc::new(RxProgress::default());
        let in_pool = source.receives_in_pool();
        let pace_limit = (output.capacity() / 2).max(2 * BURST) as u64;
        let rx = RxStage {
            pace_base: pace_limit,
            pace_limit,
            pace_raised_at: 0,
            pace_freed: 0,
            pace_since: 0,
            pace_polls: 0,
            pacing_now: false,
            in_pool,
            queues: None,
            source,
            alloc,
            output,
            stop,
            waiting: None,
            waiting_port: 0,
            ingress: None,
            batch: Vec::with_capacity(BURST),
            seq: 0,
            last_ts: 0,
            done_reading: false,
            finished: false,
            report: RxReport::default(),
            progress: progress.clone(),
            slot: slot.clone(),
            trace: None,
            poll_start: 0,
            gate: None,
            boundary: None,
        };
        (rx, slot, progress)
    }

    /// Sets the pacing limit (module docs): RX waits while this many packets are in flight
    /// and the chain keeps freeing buffers; 0 turns pacing off.
    pub fn pacing(mut self, in_flight: u64) -> RxStage {
        self.pace_base = in_flight;
        self.pace_limit = in_flight;
        self
    }

    /// Whether RX should wait now instead of reading (pacing, module docs).
    fn pace(&mut self) -> bool {
        if self.pace_base == 0 || self.gate.is_some() || self.in_pool {
            return false;
        }
        // The releaser's counter, read once: it moves under us (TX, an NF process).
        let freed = self.alloc.freed();
        let in_use = self.alloc.allocated().saturating_sub(freed);
        if self.pace_limit > self.pace_base
            && (in_use < self.pace_base
                || freed.wrapping_sub(self.pace_raised_at) >= PACE_RAISE_FREES * self.pace_limit)
        {
            self.pace_limit = self.pace_base;
        }
        if in_use < self.pace_limit {
            self.pace_since = 0;
            return false;
        }
        let now = now_ns();
        if freed != self.pace_freed || self.pace_since == 0 {
            // Buffers came back since we last looked (or this is the first look): the
            // chain is moving, wait for it.
            self.pace_freed = freed;
            self.pace_since = now.max(1);
            self.pace_polls = 0;
            self.report.paced += 1;
            return true;
        }
        self.pace_polls = self.pace_polls.saturating_add(1);
        if self.pace_polls >= PACE_STALL_POLLS && now.saturating_sub(self.pace_since) >= PACE_STALL_NS {
            // The chain holds this many without freeing any: let it have more (the limit
            // doubles), for a while (`PACE_RAISE_FREES`).
            self.pace_limit = self.pace_limit.saturating_mul(2).max(in_use + BURST as u64);
            self.pace_raised_at = freed;
            self.pace_since = 0;
            self.report.pace_raised += 1;
            return false;
        }
        self.report.paced += 1;
        true
    }

    /// Mode b: one packet at a time. A frame is admitted only when `in_flight` (every
    /// descriptor in the chain: +1 when admitted or published, -1 when it leaves at TX) is 0.
    pub fn with_gate(mut self, in_flight: Arc<AtomicI64>) -> RxStage {
        self.gate = Some(in_flight);
        self
    }

    /// Stamps the reloads requested at `boundary` with the number of the next packet, before
    /// it is published ([`crate::boundary`]).
    pub fn with_boundary(mut self, boundary: Arc<crate::boundary::Boundary>) -> RxStage {
        self.boundary = Some(boundary);
        self
    }

    /// Notes every frame's ingress port in `ingress` (see the module docs).
    pub fn with_ingress(mut self, ingress: Arc<Ingress>) -> RxStage {
        self.ingress = Some(ingress);
        self
    }

    /// Notes every frame's receive queue ([`PacketSource::queue`]) in `queues`, indexed by
    /// pool buffer (read by mode d's shard splitter when the queues pick the shard).
    pub fn with_queues(mut self, queues: Arc<Ingress>) -> RxStage {
        self.queues = Some(queues);
        self
    }

    /// Notes the ingress port (and receive queue) of the frame just admitted (the batch's
    /// last descriptor).
    fn note_ingress(&self, port: u8) {
        let Some(h) = self.batch.last().and_then(|d| d.packet) else { return };
        if let Some(t) = &self.ingress {
            t.set(h.index(), port);
        }
        if let Some(q) = &self.queues {
            q.set(h.index(), self.source.queue());
        }
    }

    /// One frame from a source that receives into the pool; false when none is waiting.
    fn read_in_pool(&mut self) -> bool {
        let f = match self.source.next_in_pool(&mut self.alloc) {
            Ok(Some(f)) => f,
            Ok(None) => {
                self.done_reading = self.source.ended();
                return false;
            }
            Err(e) => {
                self.report.error = Some(e.to_string());
                self.done_reading = true;
                return false;
            }
        };
        if let Some(b) = &self.boundary {
            b.stamp(self.seq + 1);
        }
        self.report.packets_in += 1;
        self.report.bytes_in += u64::from(f.len);
        self.progress.packets.store(self.report.packets_in, Ordering::Relaxed);
        self.last_ts = f.ts_ns;
        self.seq += 1;
        match f.packet {
            Some(h) => {
                let mut d = EventDesc::new(builtin::FRAME, 0, self.seq, f.ts_ns);
                d.packet = Some(h);
                d.flags = desc_flags::PRIMARY;
                d.meta.wire_len = f.orig_len.max(f.len);
                self.batch.push(d);
                self.note_ingress(self.source.port());
                if let Some(g) = &self.gate {
                    g.fetch_add(1, Ordering::AcqRel);
                }
            }
            None => self.report.too_large += 1,
        }
        true
    }

    /// Records a span for every frame read (at most `capacity`).
    pub fn with_trace(mut self, core: u16, capacity: usize) -> RxStage {
        self.trace = Some((core, TraceBuffer::new(capacity)));
        self
    }

    fn read_burst(&mut self) {
        // Set again below only if this call waits for pacing (a wait for a pool buffer is
        // not one: the core may yield or sleep for that).
        self.pacing_now = false;
        if self.trace.is_some() {
            self.poll_start = now_ns();
        }
        if let Some(b) = &self.boundary {
            b.stamp(self.seq + 1);
        }
        if let Some((ts, data, len)) = self.waiting.take() {
            let before = self.batch.len();
            if !admit(&mut self.alloc, &mut self.batch, &mut self.seq, &mut self.report, ts, &data, len) {
                self.waiting = Some((ts, data, len));
                self.report.pool_stalls += 1;
                return;
            }
            if self.batch.len() > before {
                self.note_ingress(self.waiting_port);
            }
            if let (Some(g), true) = (&self.gate, self.batch.len() > before) {
                g.fetch_add(1, Ordering::AcqRel);
            }
        }
        let limit = if self.gate.is_some() { 1 } else { BURST };
        self.pacing_now = self.pace();
        if self.pacing_now {
            return;
        }
        if let Some(g) = &self.gate {
            if g.load(Ordering::Acquire) > 0 {
                return;
            }
        }
        while self.batch.len() < limit && !self.done_reading {
            if self.stop.load(Ordering::Relaxed) {
                self.report.interrupted = true;
                self.done_reading = true;
                break;
            }
            if self.in_pool {
                if !self.read_in_pool() {
                    break;
                }
                continue;
            }
            let rec = match self.source.next_packet() {
                Ok(Some(r)) => r,
                Ok(None) => {
                    self.done_reading = self.source.ended();
                    break;
                }
                Err(e) => {
                    self.report.error = Some(e.to_string());
                    self.done_reading = true;
                    break;
                }
            };
            if let Some(b) = &self.boundary {
                b.stamp(self.seq + 1);
            }
            self.report.packets_in += 1;
            self.report.bytes_in += rec.data.len() as u64;
            // Per packet (a relaxed store): a source that blocks in the middle of a burst (a
            // pipe, a quiet interface) still shows every packet it has read.
            self.progress.packets.store(self.report.packets_in, Ordering::Relaxed);
            self.last_ts = rec.ts_ns;
            // The frame is copied once, from the source's buffer into the pool.
            let before = self.batch.len();
            if !admit(
                &mut self.alloc,
                &mut self.batch,
                &mut self.seq,
                &mut self.report,
                rec.ts_ns,
                rec.data,
                rec.orig_len,
            ) {
                self.waiting = Some((rec.ts_ns, rec.data.to_vec(), rec.orig_len));
                self.waiting_port = self.source.port();
                self.report.pool_stalls += 1;
                break;
            }
            if self.batch.len() > before {
                self.note_ingress(self.source.port());
            }
            if let (Some(g), true) = (&self.gate, self.batch.len() > before) {
                g.fetch_add(1, Ordering::AcqRel);
            }
            if let Some((core, buf)) = self.trace.as_mut() {
                let t = now_ns();
                buf.record(Span {
                    actor: 0,
                    core: *core,
                    kind: SpanKind::Rx,
                    seq: self.seq,
                    flow: u64::MAX,
                    event_type: builtin::FRAME.raw(),
                    publisher: 0,
                    start_ns: self.poll_start.min(t),
                    end_ns: t,
                    snapshot_seq: 0,
                });
                self.poll_start = t;
            }
        }
        self.progress.bytes.store(self.source.bytes_read(), Ordering::Relaxed);
        self.progress.packets.store(self.report.packets_in, Ordering::Relaxed);
        self.progress.too_large.store(self.report.too_large, Ordering::Relaxed);
        if let Some(k) = self.source.kernel_drops() {
            self.progress.kernel_drops.store(k, Ordering::Relaxed);
            self.progress.kernel_drops_known.store(true, Ordering::Relaxed);
        }
    }
}

/// Puts one frame into a pool buffer and its primary `FRAME` event into the batch. Returns
/// false when the pool is exhausted (the caller keeps the frame and retries).
fn admit(
    alloc: &mut PoolAllocator,
    batch: &mut Vec<EventDesc>,
    seq: &mut u64,
    report: &mut RxReport,
    ts_ns: u64,
    data: &[u8],
    orig_len: u32,
) -> bool {
    match alloc.alloc(data) {
        Ok(h) => {
            *seq += 1;
            let mut d = EventDesc::new(builtin::FRAME, 0, *seq, ts_ns);
            d.packet = Some(h);
            d.flags = desc_flags::PRIMARY;
            d.meta.wire_len = orig_len.max(data.len() as u32);
            batch.push(d);
            true
        }
        Err(AllocError::TooLarge { .. }) => {
            *seq += 1;
            report.too_large += 1;
            true
        }
        Err(_) => false,
    }
}

impl Runnable for RxStage {
    fn name(&self) -> &str {
        "rx"
    }

    fn poll(&mut self) -> PollResult {
        if self.finished {
            return PollResult::Finished;
        }
        if self.batch.is_empty() {
            self.read_burst();
        }
        let n = self.output.push_burst(&self.batch);
        self.batch.drain(..n);
        if !self.batch.is_empty() {
            self.report.ring_stalls += 1;
            return PollResult::from_work(n);
        }
        if self.done_reading && self.waiting.is_none() {
            if self.output.push(EventDesc::end_of_input(self.seq + 1, self.last_ts)).is_err() {
                self.report.ring_stalls += 1;
                return PollResult::Idle;
            }
            self.finished = true;
            self.report.finished = true;
            self.source.finish_pool(&mut self.alloc);
            self.report.note = self.source.end_note();
            self.report.kernel = self.source.kernel_stats();
            if let Some((_, buf)) = self.trace.as_mut() {
                (self.report.trace, self.report.trace_dropped) = buf.take();
            }
            publish(&self.slot, &self.report);
            return PollResult::Finished;
        }
        if n == 0 && self.pacing_now {
            // Waiting for the chain, not for input: stay on the CPU (at most until the
            // stall rule raises the limit, about 1 ms).
            return PollResult::Busy(0);
        }
        PollResult::from_work(n)
    }
}

/// What TX did.
#[derive(Clone, Debug, Default)]
pub struct TxReport {
    /// Primary events emitted (packets out).
    pub packets_out: u64,
    /// Their bytes.
    pub bytes_out: u64,
    /// Dropped packets by (actor index, reason index).
    pub packet_drops: BTreeMap<(u16, u16), u64>,
    /// Dropped non-packet events by (actor index, reason index).
    pub event_drops: BTreeMap<(u16, u16), u64>,
    /// Events that reached the end of the chain (all types).
    pub events_in: u64,
    /// Packet references released.
    pub released: u64,
    /// Frames written to the output file.
    pub written: u64,
    /// Writing failed (later frames were counted but not written).
    pub error: Option<String>,
    /// A warning from the sink (e.g. frames a live interface refused).
    pub note: Option<String>,
    /// True once the end marker arrived.
    pub finished: bool,
    /// Recorded spans (with `--trace`).
    pub trace: Vec<Span>,
    /// Spans that did not fit.
    pub trace_dropped: u64,
    /// With recording on: every packet in the order it left, `(seq, flow_start, dropped by
    /// (actor, reason))`.
    pub emitted: Vec<Fate>,
    /// What became of the TCP resets `reject` matches asked for (see [`TxSink::with_rejects`]).
    pub resets: ResetReport,
    /// Packet references released at the end because a dead NF process held them
    /// ([`TxSink::with_sweep`]).
    pub reclaimed: u64,
}

/// The TCP resets TX made for `reject` matches (`EVENT/IDS_REJECT`, two per match).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResetReport {
    /// Reject events that reached TX.
    pub requests: u64,
    /// Resets queued for sending on a live interface (`rst_sent`).
    pub sent: u64,
    /// Resets only written to the `-o` capture (offline or passive runs).
    pub captured: u64,
    /// Resets neither sent nor written (no interface can send, no capture; or the frame was
    /// not TCP/IP, or no packet of the flow came after a match without one).
    pub not_sent: u64,
    /// Why the last ones were not sent.
    pub why_not: Option<String>,
}

/// A packet's fate at the end of the chain: `(seq, flow_start, dropped by (actor, reason))`.
pub type Fate = (u64, u64, Option<(u16, u16)>);

impl TxReport {
    /// Total dropped packets.
    pub fn packets_dropped(&self) -> u64 {
        self.packet_drops.values().sum()
    }
}

/// Live counters of TX, readable while the run goes on: packets and bytes out (stored once
/// per burst) and dropped packets by (actor, reason) (one relaxed add per drop, into a table
/// sized from the plan when the chain is wired; no allocation).
#[derive(Debug, Default)]
pub struct TxLive {
    /// Primary events emitted so far.
    pub packets_out: AtomicU64,
    /// Their bytes.
    pub bytes_out: AtomicU64,
    /// Dropped packets, one counter per (actor, reason) at `offsets[actor] + reason`.
    drops: Box<[AtomicU64]>,
    /// Where each actor's reasons start in `drops` (one more entry than actors).
    offsets: Vec<usize>,
    /// Drops whose (actor, reason) is outside the table (none when it is sized from the plan).
    other_drops: AtomicU64,
}

impl TxLive {
    /// Counters for a chain whose actor `i` has `reasons_per_actor[i]` drop reasons.
    pub fn new(reasons_per_actor: &[usize]) -> TxLive {
        let mut offsets = vec![0];
        for n in reasons_per_actor {
            offsets.push(offsets[offsets.len() - 1] + n);
        }
        let drops = (0..offsets[offsets.len() - 1]).map(|_| AtomicU64::new(0)).collect();
        TxLive { drops, offsets, ..TxLive::default() }
    }

    fn count_drop(&self, actor: u16, reason: u16) {
        let (a, r) = (usize::from(actor), usize::from(reason));
        let slot = match (self.offsets.get(a), self.offsets.get(a + 1)) {
            (Some(start), Some(end)) if start + r < *end => self.drops.get(start + r),
            _ => None,
        };
        slot.unwrap_or(&self.other_drops).fetch_add(1, Ordering::Relaxed);
    }

    /// Dropped packets so far by (actor, reason), only those with drops.
    pub fn drops(&self) -> Vec<((u16, u16), u64)> {
        let mut out = Vec::new();
        for a in 0..self.offsets.len().saturating_sub(1) {
            for i in self.offsets[a]..self.offsets[a + 1] {
                let n = self.drops[i].load(Ordering::Relaxed);
                if n > 0 {
                    out.push(((a as u16, (i - self.offsets[a]) as u16), n));
                }
            }
        }
        out
    }

    /// Dropped packets whose (actor, reason) the table does not have.
    pub fn other_drops(&self) -> u64 {
        self.other_drops.load(Ordering::Relaxed)
    }
}

/// The TX sink (see the module docs).
pub struct TxSink {
    input: Consumer<EventDesc>,
    release: PoolReleaser,
    pool: PoolView,
    sink: Box<dyn PacketSink>,
    inbuf: Vec<EventDesc>,
    report: TxReport,
    slot: ReportSlot<TxReport>,
    finished: bool,
    completed: Arc<AtomicU64>,
    trace: Option<(u16, u16, TraceBuffer)>,
    record: bool,
    in_flight: Option<Arc<AtomicI64>>,
    live: Arc<TxLive>,
    ingress: Option<Arc<Ingress>>,
    /// `EVENT/IDS_REJECT`, when an NF can publish it.
    reject: Option<crate::event::EventType>,
    /// Flows (`flow_start`) whose reject event had no packet: their next packet's frame
    /// gives the resets' addresses and numbers (at most [`PENDING_RESETS`]).
    pending_resets: Vec<u64>,
    /// Set when an NF process died: at the end, release what it held ([`TxSink::with_sweep`]).
    sweep: Option<Arc<AtomicBool>>,
    /// The splicer's feedback path and frames ([`crate::splice::Loopback`]).
    loopback: Option<Arc<crate::splice::Loopback>>,
    loop_frames: Vec<(u8, Vec<u8>)>,
}

/// Flows that wait for a packet to build their resets from (beyond, counted as not sent).
pub const PENDING_RESETS: usize = 1024;

impl TxSink {
    /// A sink consuming `input`, releasing into `release`, writing to `sink`.
    pub fn new(
        input: Consumer<EventDesc>,
        release: PoolReleaser,
        pool: PoolView,
        sink: Box<dyn PacketSink>,
    ) -> (TxSink, ReportSlot<TxReport>) {
        let slot: ReportSlot<TxReport> = Arc::new(Mutex::new(TxReport::default()));
        let tx = TxSink {
            input,
            release,
            pool,
            sink,
            inbuf: Vec::with_capacity(BURST),
            report: TxReport::default(),
            slot: slot.clone(),
            finished: false,
            completed: Arc::default(),
            trace: None,
            record: false,
            in_flight: None,
            live: Arc::default(),
            ingress: None,
            reject: None,
            pending_resets: Vec::new(),
            sweep: None,
            loopback: None,
            loop_frames: Vec::new(),
        };
        (tx, slot)
    }

    /// Records every packet's fate in order ([`TxReport::emitted`]), for the checker.
    pub fn with_record(mut self) -> TxSink {
        self.record = true;
        self
    }

    /// Keeps `live` up to date while the run goes on (live statistics).
    pub fn with_live(mut self, live: Arc<TxLive>) -> TxSink {
        self.live = live;
        self
    }

    /// Hands each frame's ingress port (noted by RX in `ingress`) to the sink.
    pub fn with_ingress(mut self, ingress: Arc<Ingress>) -> TxSink {
        self.ingress = Some(ingress);
        self
    }

    /// Answers every `reject` event (of type `reject`, `EVENT/IDS_REJECT`) with two TCP
    /// resets built from its packet ([`runtime::ports::Resets`]): the forward one leaves by
    /// the interface the packet would have left by, the backward one by the interface it came
    /// in by ([`PacketSink::inject`]). A reject event without a packet (a match on bytes no
    /// packet event brought) waits for the flow's next packet at TX (which the NF drops).
    pub fn with_rejects(mut self, reject: crate::event::EventType) -> TxSink {
        self.reject = Some(reject);
        self
    }

    /// When `sweep` is set by the time the end marker arrives (an NF process died holding
    /// packet references that no descriptor carries any more), releases every reference still
    /// held in the pool: at that point every other actor has finished and passed everything
    /// on, so whatever is still referenced was held by the dead process. Counted in
    /// [`TxReport::reclaimed`].
    pub fn with_sweep(mut self, sweep: Arc<AtomicBool>) -> TxSink {
        self.sweep = Some(sweep);
        self
    }

    /// Hands every undropped `FLOW_DEST` to `loopback` (the feedback path to the splicer)
    /// and sends the frames the splicer queued there, after every burst
    /// ([`crate::splice`]).
    pub fn with_loopback(mut self, loopback: Arc<crate::splice::Loopback>) -> TxSink {
        self.loopback = Some(loopback);
        self
    }

    /// Sends the frames queued in the loopback; returns how many.
    fn send_loopback(&mut self) -> usize {
        let Some(l) = self.loopback.clone() else { return 0 };
        l.take_frames(&mut self.loop_frames);
        let n = self.loop_frames.len();
        let ts = now_ns();
        for (egress, frame) in self.loop_frames.drain(..) {
            match self.sink.inject(egress, ts, &frame) {
                Ok(Injected::Sent | Injected::Captured) => l.frames_sent.fetch_add(1, Ordering::Relaxed),
                _ => l.frames_not_sent.fetch_add(1, Ordering::Relaxed),
            };
        }
        if n > 0 {
            self.sink.flush_burst();
        }
        n
    }

    /// Counts every descriptor that leaves the chain off `in_flight` (mode b's gate).
    pub fn with_in_flight(mut self, in_flight: Arc<AtomicI64>) -> TxSink {
        self.in_flight = Some(in_flight);
        self
    }

    /// Records a span for every packet emitted or dropped (at most `capacity`); `actor` is
    /// TX's index in the trace (the number of actors in the plan).
    pub fn with_trace(mut self, actor: u16, core: u16, capacity: usize) -> TxSink {
        self.trace = Some((actor, core, TraceBuffer::new(capacity)));
        self
    }

    /// Reports progress into `completed` (shared with a µStack) instead of its own counter.
    pub fn set_completed(&mut self, completed: Arc<AtomicU64>) {
        self.completed = completed;
    }

    /// The highest sequence number seen at the end of the chain. Events leave in order, so
    /// every event with a *smaller* sequence number has left: a µStack can free what only
    /// those events could see (the TCP monitor's stream chunks). Events with this very
    /// number may still be on their way.
    pub fn completed(&self) -> Arc<AtomicU64> {
        self.completed.clone()
    }

    /// Builds the two resets from the frame in `h` and hands them to the sink.
    fn reset(&mut self, h: runtime::pool::PacketHandle, ts_ns: u64) {
        let ingress = self.ingress.as_ref().map_or(0, |t| t.get(h.index()));
        let r = &mut self.report.resets;
        match runtime::ports::Resets::for_frame(self.pool.data(h)) {
            Ok(rst) => {
                for (egress, frame) in [(ingress ^ 1, &rst.forward), (ingress, &rst.backward)] {
                    match self.sink.inject(egress, ts_ns, frame) {
                        Ok(Injected::Sent) => r.sent += 1,
                        Ok(Injected::Captured) => r.captured += 1,
                        Ok(Injected::NotSent) => {
                            r.not_sent += 1;
                            r.why_not = Some("no interface can send them and there is no -o capture".into());
                        }
                        Err(e) => {
                            r.not_sent += 1;
                            r.why_not = Some(e.to_string());
                        }
                    }
                }
            }
            Err(e) => {
                r.not_sent += 2;
                r.why_not = Some(format!("the matching frame: {e}"));
            }
        }
    }

    /// A reject event: resets now (from its packet) or at the flow's next packet.
    fn reject(&mut self, ev: &EventDesc) {
        self.report.resets.requests += 1;
        match ev.packet {
            Some(h) => self.reset(h, ev.ts_ns),
            None if self.pending_resets.len() < PENDING_RESETS => self.pending_resets.push(ev.flow_start),
            None => {
                self.report.resets.not_sent += 2;
                self.report.resets.why_not = Some(format!("more than {PENDING_RESETS} flows waited for a packet"));
            }
        }
    }

    fn consume(&mut self, ev: &EventDesc) {
        if ev.is_skip() {
            return;
        }
        self.report.events_in += 1;
        if let (Some(l), true) = (&self.loopback, builtin::FLOW_DEST.covers(ev.event_type) && !ev.is_dropped()) {
            l.feed(*ev);
        }
        if self.reject.is_some_and(|t| t == ev.event_type) && !ev.is_dropped() {
            self.reject(ev);
        } else if let (Some(h), false) = (ev.packet, self.pending_resets.is_empty()) {
            if ev.is_primary() {
                if let Some(i) = self.pending_resets.iter().position(|f| *f == ev.flow_start && *f != 0) {
                    self.pending_resets.swap_remove(i);
                    self.reset(h, ev.ts_ns);
                }
            }
        }
        if self.record && ev.is_primary() {
            let by = ev.is_dropped().then_some((ev.dropped_by, ev.drop_reason));
            self.report.emitted.push((ev.seq, ev.flow_start, by));
        }
        let Some(h) = ev.packet else {
            if ev.is_dropped() {
                *self.report.event_drops.entry((ev.dropped_by, ev.drop_reason)).or_default() += 1;
            }
            return;
        };
        if ev.is_primary() {
            if ev.is_dropped() {
                *self.report.packet_drops.entry((ev.dropped_by, ev.drop_reason)).or_default() += 1;
                self.live.count_drop(ev.dropped_by, ev.drop_reason);
            } else {
                let data = self.pool.data(h);
                self.report.packets_out += 1;
                self.report.bytes_out += data.len() as u64;
                if self.report.error.is_none() {
                    let port = self.ingress.as_ref().map_or(0, |t| t.get(h.index()));
                    match self.sink.write_from(port, ev.ts_ns, data, ev.meta.wire_len) {
                        Ok(()) => self.report.written += 1,
                        Err(e) => self.report.error = Some(e.to_string()),
                    }
                }
            }
        } else if ev.is_dropped() {
            *self.report.event_drops.entry((ev.dropped_by, ev.drop_reason)).or_default() += 1;
        }
        self.release.release(h);
        self.report.released += 1;
    }
}

impl Runnable for TxSink {
    fn name(&self) -> &str {
        "tx"
    }

    fn poll(&mut self) -> PollResult {
        if self.finished {
            return PollResult::Finished;
        }
        self.inbuf.clear();
        let mut inbuf = std::mem::take(&mut self.inbuf);
        let n = self.input.pop_burst(&mut inbuf, BURST);
        let mut end = false;
        let mut done = 0;
        for ev in &inbuf {
            if ev.is_end() {
                end = true;
                done = ev.seq;
                break;
            }
            done = done.max(ev.seq);
            let start = if self.trace.is_some() { now_ns() } else { 0 };
            self.consume(ev);
            if let (Some((actor, core, buf)), true) = (self.trace.as_mut(), ev.is_primary()) {
                buf.record(Span {
                    actor: *actor,
                    core: *core,
                    kind: SpanKind::Tx,
                    seq: ev.seq,
                    flow: ev.flow.map_or(u64::MAX, |f| f.id64()),
                    event_type: ev.event_type.raw(),
                    publisher: ev.publisher,
                    start_ns: start,
                    end_ns: now_ns(),
                    snapshot_seq: 0,
                });
            }
        }
        self.inbuf = inbuf;
        let looped = self.send_loopback();
        if n > 0 {
            self.live.packets_out.store(self.report.packets_out, Ordering::Relaxed);
            self.live.bytes_out.store(self.report.bytes_out, Ordering::Relaxed);
            self.sink.flush_burst();
        }
        if done > 0 {
            self.completed.fetch_max(done, Ordering::Release);
        }
        if let Some(f) = &self.in_flight {
            let left = (n - usize::from(end)) as i64;
            if left > 0 {
                f.fetch_sub(left, Ordering::AcqRel);
            }
        }
        if end {
            if self.sweep.as_ref().is_some_and(|s| s.load(Ordering::SeqCst)) {
                for i in 0..self.pool.count() {
                    let h = runtime::pool::PacketHandle::from_index(i);
                    while self.pool.refcount(h) > 0 {
                        self.release.release(h);
                        self.report.reclaimed += 1;
                    }
                }
            }
            if !self.pending_resets.is_empty() {
                self.report.resets.not_sent += 2 * self.pending_resets.len() as u64;
                self.report.resets.why_not = Some("no packet of the flow came after the match".into());
                self.pending_resets.clear();
            }
            if let Err(e) = self.sink.finish() {
                self.report.error.get_or_insert(e.to_string());
            }
            self.report.note = self.sink.end_note();
            self.report.finished = true;
            self.finished = true;
            if let Some((_, _, buf)) = self.trace.as_mut() {
                (self.report.trace, self.report.trace_dropped) = buf.take();
            }
            publish(&self.slot, &self.report);
            return PollResult::Finished;
        }
        PollResult::from_work(n + looped)
    }
}

#[cfg(test)]
mod tests {
    use super::TxLive;

    #[test]
    fn tx_live_counts_drops_by_actor_and_reason_and_keeps_strays_apart() {
        let live = TxLive::new(&[0, 2, 1]);
        live.count_drop(1, 1);
        live.count_drop(1, 1);
        live.count_drop(2, 0);
        live.count_drop(0, 0); // actor 0 has no reasons
        live.count_drop(7, 0); // no such actor
        assert_eq!(live.drops(), vec![((1, 1), 2), ((2, 0), 1)]);
        assert_eq!(live.other_drops(), 2);
        assert_eq!(TxLive::default().drops(), vec![]);
    }
}
